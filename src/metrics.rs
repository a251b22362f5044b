//! Prometheus metrics (`GET /metrics` on the WebSocket listener; issue 20, item 6).
//!
//! Every value is a process-wide atomic, updated where the event happens (a spawn, an exit,
//! an output chunk, a refusal, an fs call) with one relaxed `fetch_add`: no lock, no
//! allocation, nothing on the spawn path but two adds. The scrape reads the atomics and lets
//! `prometheus-client` write the text format (names, `HELP`/`TYPE`, escaping, histogram
//! series), so this module owns the counting and the crate owns the format.
//!
//! Labels are fixed enums, never request data: no command line, path, environment value,
//! process or session id can appear in the output, whatever a client sends.
//!
//! This is a bottom module: it imports only [`crate::protocol`], so every layer may count.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::protocol::ErrorCode;
use crate::protocol::process::DenialKind;

/// The `Content-Type` of the scrape answer (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The sandbox type of a started process: the policy's level (`sandbox` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxType {
    /// `read-only`.
    ReadOnly,
    /// `workspace-write`.
    WorkspaceWrite,
    /// `external-sandbox`.
    ExternalSandbox,
    /// `danger-full-access`.
    DangerFullAccess,
}

impl SandboxType {
    const ALL: [SandboxType; 4] = [
        SandboxType::ReadOnly,
        SandboxType::WorkspaceWrite,
        SandboxType::ExternalSandbox,
        SandboxType::DangerFullAccess,
    ];

    fn label(self) -> &'static str {
        match self {
            SandboxType::ReadOnly => "read-only",
            SandboxType::WorkspaceWrite => "workspace-write",
            SandboxType::ExternalSandbox => "external-sandbox",
            SandboxType::DangerFullAccess => "danger-full-access",
        }
    }
}

/// An output stream (`stream` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// The terminal.
    Pty,
}

impl OutputStream {
    const ALL: [OutputStream; 3] = [
        OutputStream::Stdout,
        OutputStream::Stderr,
        OutputStream::Pty,
    ];

    fn label(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
            OutputStream::Pty => "pty",
        }
    }
}

/// A filesystem method (`method` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsMethod {
    /// `fs/readFile`.
    ReadFile,
    /// `fs/writeFile`.
    WriteFile,
    /// `fs/createDirectory`.
    CreateDirectory,
    /// `fs/getMetadata`.
    GetMetadata,
    /// `fs/readDirectory`.
    ReadDirectory,
    /// `fs/canonicalize`.
    Canonicalize,
    /// `fs/remove`.
    Remove,
    /// `fs/copy`.
    Copy,
}

impl FsMethod {
    const ALL: [FsMethod; 8] = [
        FsMethod::ReadFile,
        FsMethod::WriteFile,
        FsMethod::CreateDirectory,
        FsMethod::GetMetadata,
        FsMethod::ReadDirectory,
        FsMethod::Canonicalize,
        FsMethod::Remove,
        FsMethod::Copy,
    ];

    fn label(self) -> &'static str {
        match self {
            FsMethod::ReadFile => "readFile",
            FsMethod::WriteFile => "writeFile",
            FsMethod::CreateDirectory => "createDirectory",
            FsMethod::GetMetadata => "getMetadata",
            FsMethod::ReadDirectory => "readDirectory",
            FsMethod::Canonicalize => "canonicalize",
            FsMethod::Remove => "remove",
            FsMethod::Copy => "copy",
        }
    }
}

/// How an fs call ended (`result` label), from its JSON-RPC error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsResult {
    /// It succeeded.
    Ok,
    /// -32600: the policy denied the access, or the request was invalid for the target.
    Refused,
    /// -32004: the path does not exist.
    NotFound,
    /// -32602: the params were malformed.
    InvalidParams,
    /// -32020 or -32021: the policy is above the operator's bounds or cannot be enforced.
    PolicyRefused,
    /// Anything else (-32603).
    Error,
}

impl FsResult {
    const ALL: [FsResult; 6] = [
        FsResult::Ok,
        FsResult::Refused,
        FsResult::NotFound,
        FsResult::InvalidParams,
        FsResult::PolicyRefused,
        FsResult::Error,
    ];

    /// The result of a call that failed with JSON-RPC error `code`.
    pub fn from_error_code(code: i64) -> FsResult {
        let is = |c: ErrorCode| c.code() == code;
        if is(ErrorCode::InvalidRequest) {
            FsResult::Refused
        } else if is(ErrorCode::NotFound) {
            FsResult::NotFound
        } else if is(ErrorCode::InvalidParams) {
            FsResult::InvalidParams
        } else if is(ErrorCode::PolicyNotAllowed) || is(ErrorCode::SandboxUnavailable) {
            FsResult::PolicyRefused
        } else {
            FsResult::Error
        }
    }

    fn label(self) -> &'static str {
        match self {
            FsResult::Ok => "ok",
            FsResult::Refused => "refused",
            FsResult::NotFound => "not_found",
            FsResult::InvalidParams => "invalid_params",
            FsResult::PolicyRefused => "policy_refused",
            FsResult::Error => "error",
        }
    }
}

const DENIAL_KINDS: [DenialKind; 4] = [
    DenialKind::Fs,
    DenialKind::Net,
    DenialKind::Syscall,
    DenialKind::Signal,
];

fn denial_index(kind: DenialKind) -> usize {
    match kind {
        DenialKind::Fs => 0,
        DenialKind::Net => 1,
        DenialKind::Syscall => 2,
        DenialKind::Signal => 3,
    }
}

fn denial_label(kind: DenialKind) -> &'static str {
    match kind {
        DenialKind::Fs => "fs",
        DenialKind::Net => "net",
        DenialKind::Syscall => "syscall",
        DenialKind::Signal => "signal",
    }
}

/// Upper bounds of the spawn latency buckets, in seconds (from 250 us, a cached sandboxed
/// spawn, to 5 s, a census walking a large tree); `+Inf` follows.
const LATENCY_BOUNDS: [f64; 13] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The counters (one static instance: they count for the whole server process).
struct Counters {
    processes_running: AtomicI64,
    spawns: [AtomicU64; SandboxType::ALL.len()],
    /// Observations per bucket, not cumulative (the last one is `+Inf`).
    latency_buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    latency_sum_nanos: AtomicU64,
    denials: [AtomicU64; DENIAL_KINDS.len()],
    fs_calls: [[AtomicU64; FsResult::ALL.len()]; FsMethod::ALL.len()],
    sessions_created: AtomicU64,
    output_bytes: [AtomicU64; OutputStream::ALL.len()],
}

#[allow(clippy::declare_interior_mutable_const)] // only used to initialise the arrays below
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO_ROW: [AtomicU64; FsResult::ALL.len()] = [ZERO; FsResult::ALL.len()];

static COUNTERS: Counters = Counters {
    processes_running: AtomicI64::new(0),
    spawns: [ZERO; SandboxType::ALL.len()],
    latency_buckets: [ZERO; LATENCY_BOUNDS.len() + 1],
    latency_sum_nanos: AtomicU64::new(0),
    denials: [ZERO; DENIAL_KINDS.len()],
    fs_calls: [ZERO_ROW; FsMethod::ALL.len()],
    sessions_created: AtomicU64::new(0),
    output_bytes: [ZERO; OutputStream::ALL.len()],
};

/// A process was spawned under a policy of type `sandbox`, `latency` after its request was
/// taken up.
pub fn spawned(sandbox: SandboxType, latency: Duration) {
    let c = &COUNTERS;
    c.spawns[sandbox as usize].fetch_add(1, Ordering::Relaxed);
    let seconds = latency.as_secs_f64();
    let bucket = LATENCY_BOUNDS
        .iter()
        .position(|&bound| seconds <= bound)
        .unwrap_or(LATENCY_BOUNDS.len());
    c.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
    c.latency_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
}

/// A supervised process exists (its keeper runs); paired with [`process_finished`].
pub fn process_started() {
    COUNTERS.processes_running.fetch_add(1, Ordering::Relaxed);
}

/// A supervised process's keeper was reaped.
pub fn process_finished() {
    COUNTERS.processes_running.fetch_sub(1, Ordering::Relaxed);
}

/// `times` refusals of `kind` were recorded for a process tree.
pub fn denials(kind: DenialKind, times: u64) {
    COUNTERS.denials[denial_index(kind)].fetch_add(times, Ordering::Relaxed);
}

/// An fs method call ended with `result`.
pub fn fs_call(method: FsMethod, result: FsResult) {
    COUNTERS.fs_calls[method as usize][result as usize].fetch_add(1, Ordering::Relaxed);
}

/// A session was created.
pub fn session_created() {
    COUNTERS.sessions_created.fetch_add(1, Ordering::Relaxed);
}

/// `bytes` of output were read from a process's `stream`.
pub fn output(stream: OutputStream, bytes: usize) {
    COUNTERS.output_bytes[stream as usize].fetch_add(bytes as u64, Ordering::Relaxed);
}

/// What only the server knows at scrape time (read from its tables, not counted).
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Sessions attached to a connection.
    pub sessions_attached: u64,
    /// Sessions waiting for a resume.
    pub sessions_detached: u64,
}

/// Encodes the counters and `snapshot` at scrape time.
#[derive(Debug)]
struct Scrape(Snapshot);

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &COUNTERS;
        let running = ConstGauge::new(c.processes_running.load(Ordering::Relaxed).max(0));
        running.encode(encoder.encode_descriptor(
            "stockade_processes_running",
            "Supervised processes whose tree is not finished yet",
            None,
            MetricType::Gauge,
        )?)?;

        let mut spawns = encoder.encode_descriptor(
            "stockade_spawns",
            "Processes spawned, by the sandbox type (policy level) they run under",
            None,
            MetricType::Counter,
        )?;
        for t in SandboxType::ALL {
            let labels = [("sandbox", t.label())];
            ConstCounter::new(load(&c.spawns[t as usize]))
                .encode(spawns.encode_family(&labels)?)?;
        }

        // Per-bucket counts (the encoder makes them cumulative); the count is their sum, so
        // the series agree even when a spawn lands during the scrape.
        let mut count = 0u64;
        let mut buckets = Vec::with_capacity(LATENCY_BOUNDS.len() + 1);
        for (i, slot) in c.latency_buckets.iter().enumerate() {
            let n = load(slot);
            count += n;
            let bound = LATENCY_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, n));
        }
        let sum = load(&c.latency_sum_nanos) as f64 / 1e9;
        encoder
            .encode_descriptor(
                "stockade_spawn_latency_seconds",
                "Time from taking up a process/start request to the process running",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum, count, &buckets, None,
            )?;

        let mut denials = encoder.encode_descriptor(
            "stockade_denials",
            "Sandbox refusals recorded for process trees, by kind",
            None,
            MetricType::Counter,
        )?;
        for kind in DENIAL_KINDS {
            let labels = [("kind", denial_label(kind))];
            ConstCounter::new(load(&c.denials[denial_index(kind)]))
                .encode(denials.encode_family(&labels)?)?;
        }

        let mut fs = encoder.encode_descriptor(
            "stockade_fs_calls",
            "Filesystem method calls, by method and result",
            None,
            MetricType::Counter,
        )?;
        for method in FsMethod::ALL {
            for result in FsResult::ALL {
                let labels = [("method", method.label()), ("result", result.label())];
                ConstCounter::new(load(&c.fs_calls[method as usize][result as usize]))
                    .encode(fs.encode_family(&labels)?)?;
            }
        }

        let mut sessions = encoder.encode_descriptor(
            "stockade_sessions",
            "Sessions the server holds, attached to a connection or waiting for a resume",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in [
            ("attached", self.0.sessions_attached),
            ("detached", self.0.sessions_detached),
        ] {
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
                .encode(sessions.encode_family(&[("state", state)])?)?;
        }
        ConstCounter::new(load(&c.sessions_created)).encode(encoder.encode_descriptor(
            "stockade_sessions_created",
            "Sessions created since the server started",
            None,
            MetricType::Counter,
        )?)?;

        let mut output = encoder.encode_descriptor(
            "stockade_output_bytes",
            "Output bytes read from supervised processes, by stream",
            None,
            MetricType::Counter,
        )?;
        for stream in OutputStream::ALL {
            let labels = [("stream", stream.label())];
            ConstCounter::new(load(&c.output_bytes[stream as usize]))
                .encode(output.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The whole scrape answer in the Prometheus text format.
pub fn render(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(snapshot)));
    let mut text = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a label above.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        tracing::error!(error = %e, "encoding the metrics failed");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_results_follow_the_error_codes() {
        assert_eq!(FsResult::from_error_code(-32600), FsResult::Refused);
        assert_eq!(FsResult::from_error_code(-32004), FsResult::NotFound);
        assert_eq!(FsResult::from_error_code(-32602), FsResult::InvalidParams);
        assert_eq!(FsResult::from_error_code(-32020), FsResult::PolicyRefused);
        assert_eq!(FsResult::from_error_code(-32021), FsResult::PolicyRefused);
        assert_eq!(FsResult::from_error_code(-32603), FsResult::Error);
    }

    #[test]
    fn render_has_every_family_and_moves() {
        let before = render(Snapshot::default());
        spawned(SandboxType::ReadOnly, Duration::from_millis(3));
        output(OutputStream::Stderr, 5);
        let text = render(Snapshot {
            sessions_attached: 2,
            sessions_detached: 1,
        });
        for family in [
            "# TYPE stockade_processes_running gauge",
            "# TYPE stockade_spawns_total counter",
            "# TYPE stockade_spawn_latency_seconds histogram",
            "# TYPE stockade_denials_total counter",
            "# TYPE stockade_fs_calls_total counter",
            "# TYPE stockade_sessions gauge",
            "# TYPE stockade_output_bytes_total counter",
            "stockade_sessions{state=\"attached\"} 2",
            "stockade_spawn_latency_seconds_bucket{le=\"+Inf\"}",
        ] {
            assert!(text.contains(family), "{family} missing:\n{text}");
        }
        assert_ne!(before, text);
    }
}
