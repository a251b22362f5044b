//! `stockade run`: runs one command through the same typed call as `process/start`
//! ([`crate::process::service::ProcessService::start`]), forwarding stdin, stdout, stderr and
//! the exit status.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::env::{EnvPolicy, Inherit};
use crate::process::ProcessTable;
use crate::process::events::{EventSink, OutputEvent};
use crate::process::service::StartRequest;
use crate::process::spawn::Stream;
use crate::process::table::Process;
use crate::protocol::policy::EnvPolicyFileShape;
use crate::protocol::process::{ClosedParams, ExitedParams, WriteStatus};
use crate::protocol::process::{Denial, DenialKind, DenialSource};
use crate::sandbox::denials::{describe, is_incidental};
use crate::server::Server;

/// A `stockade run` policy file (TOML; unknown keys are an error).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunPolicyFile {
    /// `[env]`: the environment policy, with PROTOCOL.md section 5 fields in snake_case.
    #[serde(default)]
    pub env: Option<EnvPolicyFileShape>,
    /// `[sandbox]`: a `sandboxPolicy` (PROTOCOL.md 6.2).
    #[serde(default)]
    pub sandbox: Option<toml::Value>,
}

/// Parses an `inherit` value.
pub fn parse_inherit(s: &str) -> Result<Inherit, String> {
    match s {
        "all" => Ok(Inherit::All),
        "core" => Ok(Inherit::Core),
        "none" => Ok(Inherit::None),
        other => Err(format!("inherit must be all, core or none, got {other:?}")),
    }
}

impl RunPolicyFile {
    /// Reads and parses a policy file.
    pub fn load(path: &Path) -> Result<RunPolicyFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading policy file {}: {e}", path.display()))?;
        RunPolicyFile::parse(&text).map_err(|e| format!("policy file {}: {e}", path.display()))
    }

    /// Parses policy file text. Unknown keys, in `[env]` and in `[sandbox]` alike, are an error
    /// naming the key, its line and the likely intended key.
    pub fn parse(text: &str) -> Result<RunPolicyFile, String> {
        let file: RunPolicyFile =
            toml::from_str(text).map_err(|e| crate::config::toml_error(text, &e))?;
        if let Some(table) = &file.sandbox {
            let v = serde_json::to_value(table).map_err(|e| e.to_string())?;
            crate::config::validate_sandbox_policy(&v, "sandbox")
                .map_err(|e| crate::config::with_toml_line(text, &e))?;
        }
        Ok(file)
    }

    /// The environment policy of the file (defaults when it has no `[env]`).
    pub fn env_policy(&self) -> Result<EnvPolicy, String> {
        match &self.env {
            Some(shape) => EnvPolicy::from_shape(shape.clone()),
            None => Ok(EnvPolicy::default()),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Working directory (absolute).
    pub cwd: PathBuf,
    /// Environment policy.
    pub env: EnvPolicy,
    /// `sandboxPolicy` (None: the server default).
    pub sandbox_policy: Option<Value>,
    /// Resource limits.
    pub limits: crate::protocol::process::Limits,
}

/// Builds the `sandboxPolicy` of `stockade run` from `--policy`, `--writable` and `--network`.
pub fn run_sandbox_policy(
    file_or_name: Option<Value>,
    writable: &[PathBuf],
    network: bool,
) -> Result<Option<Value>, String> {
    let mut policy = file_or_name;
    if !writable.is_empty() {
        let p = policy.get_or_insert_with(|| json!({"type": "workspace-write"}));
        if p["type"] != "workspace-write" {
            return Err(format!(
                "--writable needs a workspace-write policy, not {}",
                p["type"]
            ));
        }
        let roots = p
            .as_object_mut()
            .ok_or("policy must be a table")?
            .entry("writable_roots")
            .or_insert_with(|| json!([]));
        for w in writable {
            let abs =
                std::path::absolute(w).map_err(|e| format!("--writable {}: {e}", w.display()))?;
            roots
                .as_array_mut()
                .ok_or("writable_roots must be an array")?
                .push(json!(abs.to_string_lossy()));
        }
    }
    if network {
        let p = policy.get_or_insert_with(|| json!({"type": "workspace-write"}));
        p["network_access"] = if p["type"] == "external-sandbox" {
            json!("enabled")
        } else {
            json!(true)
        };
    }
    Ok(policy)
}

/// Exit status used when stockade itself fails before the command runs.
pub const EXIT_STOCKADE_ERROR: i32 = 125;

/// Exit status when `--wall-time-ms` killed the command's tree (as `timeout(1)` answers).
pub const EXIT_TIMED_OUT: i32 = 124;

/// Exit status when `--max-output-bytes` cut the output short and killed the tree: never 0, so
/// a CI job whose log was truncated cannot pass unnoticed.
pub const EXIT_OUTPUT_LIMIT: i32 = 122;

/// What `stockade run` tells besides the command's own output.
#[derive(Debug, Clone, Default)]
pub struct RunReporting {
    /// No summary line on stderr after the command.
    pub quiet: bool,
    /// Write a JSON report (sandbox report, limits, usage, exit, denials) to this file.
    pub report: Option<PathBuf>,
}

/// The exit status of `run` for a `process/exited` notification: the command's own status,
/// unless stockade's timer or output limit ended it.
fn exit_status(exited: &Value) -> i32 {
    if exited["timedOut"] == true {
        EXIT_TIMED_OUT
    } else if exited["outputLimitExceeded"] == true {
        EXIT_OUTPUT_LIMIT
    } else {
        exited["exitCode"].as_i64().unwrap_or(1) as i32
    }
}

/// The one stderr line stockade adds after the command when something happened that the
/// command's own output does not say (None: nothing to say).
fn summary(
    start: &Value,
    exited: &Value,
    limits: &crate::protocol::process::Limits,
) -> Option<String> {
    let mut parts = Vec::new();
    if exited["timedOut"] == true {
        let ms = limits.wall_time_ms.unwrap_or_default();
        parts.push(format!(
            "timed out after {ms} ms (--wall-time-ms): the whole tree was killed (exit status {EXIT_TIMED_OUT})"
        ));
    }
    if exited["outputLimitExceeded"] == true {
        let bytes = limits.max_output_bytes.unwrap_or_default();
        parts.push(format!(
            "output limit of {bytes} bytes reached (--max-output-bytes): output was cut and the tree killed (exit status {EXIT_OUTPUT_LIMIT})"
        ));
    }
    let sandbox = &start["sandbox"];
    if sandbox["enforcement"] == "degraded" {
        let missing: Vec<&str> = sandbox["degradations"]
            .as_array()
            .map(|d| d.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(format!(
            "sandbox degraded, not enforced: {}",
            missing.join("; ")
        ));
    }
    // What the sandbox refused (the C library's own AF_UNIX probes aside: they are in
    // `--report`), whatever the exit status: a command that succeeded may still have been
    // refused something it would have liked.
    let denials: Vec<Denial> = exited
        .get("denials")
        .and_then(|d| serde_json::from_value::<Vec<DenialEntry>>(d.clone()).ok())
        .unwrap_or_default()
        .into_iter()
        .map(DenialEntry::into_denial)
        .filter(|d| !is_incidental(d))
        .collect();
    if !denials.is_empty() {
        const SHOWN: usize = 5;
        let mut listed: Vec<String> = denials.iter().take(SHOWN).map(describe).collect();
        if denials.len() > SHOWN {
            listed.push(format!("{} more in --report", denials.len() - SHOWN));
        }
        // Only where the evidence names a network refusal: a hint about the network next to a
        // refused write would send the user the wrong way.
        let network_refused = denials.iter().any(|d| {
            d.kind == DenialKind::Net
                || (d.kind == DenialKind::Syscall
                    && d.access.first().is_some_and(|a| a == "socket")
                    && d.args
                        .first()
                        .is_some_and(|f| f == "AF_INET" || f == "AF_INET6"))
        });
        let hint = if network_refused && sandbox["network"] == "blocked" {
            " (network is off: use --network)"
        } else {
            ""
        };
        parts.push(format!("sandbox refused: {}{hint}", listed.join("; ")));
    } else if exited["sandboxDenied"] == true {
        parts.push("the sandbox refused an operation the command needed".into());
    }
    (!parts.is_empty()).then(|| format!("stockade: {}", parts.join("; ")))
}

/// A `denials` entry as `process/exited` carries it (only what the summary line needs).
#[derive(Deserialize)]
struct DenialEntry {
    kind: String,
    #[serde(default)]
    access: Vec<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    object: Option<String>,
    #[serde(default)]
    args: Vec<String>,
}

impl DenialEntry {
    fn into_denial(self) -> Denial {
        Denial {
            kind: match self.kind.as_str() {
                "fs" => DenialKind::Fs,
                "net" => DenialKind::Net,
                "signal" => DenialKind::Signal,
                _ => DenialKind::Syscall,
            },
            access: self.access,
            path: self.path,
            object: self.object,
            args: self.args,
            source: DenialSource::Stderr,
            count: 1,
        }
    }
}

/// The `--report` document.
fn report_json(req: &RunRequest, start: &Value, exited: &Value, status: i32) -> Value {
    json!({
        "argv": req.argv,
        "cwd": req.cwd.to_string_lossy(),
        "exitStatus": status,
        "exit": {
            "exitCode": exited["exitCode"],
            "signal": exited.get("signal"),
            "timedOut": exited["timedOut"] == true,
            "outputLimitExceeded": exited["outputLimitExceeded"] == true,
            "sandboxDenied": exited["sandboxDenied"] == true,
        },
        "sandbox": start["sandbox"],
        "usage": exited["usage"],
        "denials": exited.get("denials").cloned().unwrap_or_else(|| json!([])),
        "denialsTotal": exited.get("denialsTotal").cloned().unwrap_or_else(|| json!(0)),
        "denialsComplete": exited["denialsComplete"] == true,
        "denialSources": exited.get("denialSources").cloned().unwrap_or_else(|| json!([])),
    })
}

/// What the pump reports, copied out of its buffers.
enum RunEvent {
    Output(Stream, Vec<u8>),
    Exited(ExitedParams),
    Closed,
}

/// `run`'s event sink: events go to the task that writes stdout and stderr.
#[derive(Clone)]
struct RunSink(mpsc::Sender<RunEvent>);

impl EventSink for RunSink {
    async fn output(&self, event: OutputEvent<'_>) {
        let _ = self
            .0
            .send(RunEvent::Output(event.stream, event.data.to_vec()))
            .await;
    }

    async fn exited(&self, event: ExitedParams) {
        let _ = self.0.send(RunEvent::Exited(event)).await;
    }

    async fn closed(&self, _: ClosedParams) {
        let _ = self.0.send(RunEvent::Closed).await;
    }
}

/// Copies stdin to the process until EOF, then closes its stdin.
fn forward_stdin(process: Arc<Process>) {
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if process.write(&buf[..n], None).await != WriteStatus::Accepted {
                        return;
                    }
                }
            }
        }
        process.close_stdin().await;
    });
}

/// Runs the command; returns the exit status to exit with (128+n for a signal death, or one of
/// the `EXIT_*` statuses).
pub async fn run(server: Arc<Server>, req: RunRequest, reporting: RunReporting) -> i32 {
    let (tx, mut rx) = mpsc::channel(server.config.outbox_capacity);
    let table = Arc::new(ProcessTable::default());
    let request = StartRequest {
        process_id: "run".into(),
        argv: req.argv.clone(),
        cwd: req.cwd.clone(),
        env_policy: Some(req.env.clone()),
        sandbox_policy: req.sandbox_policy.clone(),
        limits: Some(req.limits),
        pipe_stdin: true,
        ..StartRequest::default()
    };
    let started = match server.processes.start(&table, RunSink(tx), request).await {
        Ok(started) => started,
        Err(e) => {
            eprintln!("stockade: {e}");
            return EXIT_STOCKADE_ERROR;
        }
    };
    let start = json!({ "sandbox": started.report });
    let _ = started.gate.send(());
    forward_stdin(started.process.clone());
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut exited = None;
    while let Some(event) = rx.recv().await {
        match event {
            RunEvent::Output(stream, data) => {
                let _ = if stream == Stream::Stderr {
                    stderr.write_all(&data).await
                } else {
                    stdout.write_all(&data).await
                };
            }
            RunEvent::Exited(e) => exited = Some(e),
            RunEvent::Closed => break,
        }
    }
    let _ = stdout.flush().await;
    let _ = stderr.flush().await;
    // What is left of the tree dies with the process's life; wait (bounded) for its keeper.
    started.process.kill_tree();
    started.process.wait_finished(Duration::from_secs(5)).await;
    let Some(exited) = exited else {
        eprintln!("stockade: the process ended without an exit record");
        return EXIT_STOCKADE_ERROR;
    };
    // The summary and the report read the exit event as its wire JSON (the `--report`
    // document is that JSON).
    let exited = serde_json::to_value(exited).unwrap_or_default();
    let status = exit_status(&exited);
    if !reporting.quiet
        && let Some(line) = summary(&start, &exited, &req.limits)
    {
        eprintln!("{line}");
    }
    if let Some(path) = &reporting.report {
        let doc = report_json(&req, &start, &exited, status);
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("stockade: writing --report {}: {e}", path.display());
            return EXIT_STOCKADE_ERROR;
        }
    }
    status
}
