//! Section 4: processes (`process/*` methods and notifications).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::policy::two_spellings;

/// Initial terminal size for `tty: true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct TerminalSize {
    /// Rows (lines).
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// Params of `process/start`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartParams {
    /// Client-chosen handle, unique within the session.
    pub process_id: String,
    /// Program and arguments; `argv[0]` is looked up in the child's `PATH`.
    pub argv: Vec<String>,
    /// Absolute path or `file://` URI of the working directory.
    pub cwd: String,
    /// The exact environment, or an overlay when `envPolicy` is given.
    pub env: BTreeMap<String, String>,
    /// Environment policy (section 5); kept raw and validated by the env module.
    #[serde(default)]
    #[schemars(with = "Option<super::policy::EnvPolicyShape>")]
    pub env_policy: Option<Value>,
    /// Run on a pseudo-terminal.
    pub tty: bool,
    /// Keep a writable stdin pipe (non-tty only).
    #[serde(default)]
    pub pipe_stdin: bool,
    /// argv[0] as seen by the program.
    #[serde(default)]
    pub arg0: Option<String>,
    /// Section 6.2 policy shape.
    #[serde(default)]
    #[schemars(with = "Option<super::policy::SandboxPolicyShape>")]
    pub sandbox_policy: Option<Value>,
    /// Section 6.3 policy shape.
    #[serde(default)]
    #[schemars(with = "Option<super::policy::SandboxShape>")]
    pub sandbox: Option<Value>,
    /// Initial PTY size.
    #[serde(default)]
    pub size: Option<TerminalSize>,
    /// Resource limits (section 7).
    #[serde(default)]
    pub limits: Option<Limits>,
    /// Sent by current Codex clients: network only through a managed proxy.
    #[serde(default)]
    pub enforce_managed_network: Option<bool>,
}

/// Result of `process/start`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct StartResult {
    /// Echo of the handle.
    pub process_id: String,
    /// `none` or `linuxSeccomp` (any confinement).
    #[schemars(with = "super::schema::SandboxTypeName")]
    pub sandbox_type: &'static str,
    /// The host pid of the program.
    pub pid: i32,
    /// What was enforced (section 6.6).
    pub sandbox: super::sandbox::SandboxReport,
}

/// Params naming just a process.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessRef {
    /// The process handle.
    pub process_id: String,
}

/// Params of `process/read`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadParams {
    /// The process handle.
    pub process_id: String,
    /// Return chunks with `seq > afterSeq`.
    #[serde(default)]
    pub after_seq: Option<u64>,
    /// Byte budget (decoded), except that the first chunk is always returned.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Long-poll time in milliseconds.
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// One retained output chunk in a `process/read` result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ReadChunk {
    /// Sequence number.
    pub seq: u64,
    /// `stdout`, `stderr` or `pty`.
    #[schemars(with = "super::schema::StreamName")]
    pub stream: &'static str,
    /// Base64 of the raw bytes.
    pub chunk: String,
}

/// Result of `process/read`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct ReadResult {
    /// Chunks with `seq > afterSeq`, in order.
    pub chunks: Vec<ReadChunk>,
    /// Where to continue: `afterSeq = nextSeq - 1`.
    pub next_seq: u64,
    /// The main process has exited.
    pub exited: bool,
    /// Its exit code once exited.
    pub exit_code: Option<i32>,
    /// `process/closed` has been sent.
    pub closed: bool,
    /// Always null (reserved by Codex).
    pub failure: Option<String>,
    /// The process failed and the sandbox refused something on the way (section 6.5); false
    /// until it exited.
    pub sandbox_denied: bool,
    /// What the sandbox refused so far (stockade extension, section 6.5).
    #[serde(flatten)]
    pub denials: DenialsReport,
}

/// What a denial refused: a filesystem access, a network destination, a syscall, a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DenialKind {
    /// A filesystem access (`path` names the object).
    Fs,
    /// A network destination (`object` names it).
    Net,
    /// A syscall the filter refuses (`access` names it, `args` the decoded arguments).
    Syscall,
    /// A signal to a process outside the sandbox (`object` names the target).
    Signal,
}

/// Which evidence source saw a denial (section 6.5). Clients must accept values they do not
/// know: new sources are added over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DenialSource {
    /// seccomp user notification: the supervisor answered the refused call itself (exact).
    Seccomp,
    /// A Landlock audit record (exact; root in the initial network namespace only).
    Landlock,
    /// An error text on stderr or the terminal naming a path the policy denies.
    Stderr,
}

/// One deduplicated refusal (stockade extension, section 6.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct Denial {
    /// What kind of operation was refused.
    pub kind: DenialKind,
    /// The refused access: Landlock's right names for `fs` and `net` (`write_file`,
    /// `make_reg`, `connect_tcp`; `read` or `write` when the source cannot tell more), the
    /// syscall's name for `syscall`.
    pub access: Vec<String>,
    /// The file the access was refused on (`fs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The refused object other than a path: a destination (`net`), a target (`signal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// A refused syscall's decoded arguments (`AF_INET`, `SOCK_STREAM`, `mode=04755`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Which source saw it first.
    pub source: DenialSource,
    /// How many times it was seen.
    pub count: u64,
}

/// The denial fields of `process/exited` and the `process/read` result (section 6.5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct DenialsReport {
    /// Distinct refusals in order of first occurrence, at most 32.
    pub denials: Vec<Denial>,
    /// Every refusal seen, duplicates and those beyond the cap included.
    pub denials_total: u64,
    /// False when refusals may be missing: evidence was lost, or the tree may still run.
    pub denials_complete: bool,
    /// The evidence sources that were active for this process.
    pub denial_sources: Vec<DenialSource>,
}

/// Params of `process/write`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteParams {
    /// The process handle.
    pub process_id: String,
    /// Base64 bytes to write to stdin.
    pub chunk: String,
    /// De-duplication key for retried writes.
    #[serde(default)]
    pub write_id: Option<String>,
}

/// Status of `process/write` and `process/closeStdin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WriteStatus {
    /// Written (or already applied for this `writeId`).
    Accepted,
    /// No such process.
    UnknownProcess,
    /// No writable stdin.
    StdinClosed,
    /// The process is still being started.
    Starting,
}

/// Params of `process/signal`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignalParams {
    /// The process handle.
    pub process_id: String,
    /// Signal name.
    pub signal: SignalName,
}

/// The signals a client may send with `process/signal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SignalName {
    /// SIGINT.
    Interrupt,
    /// SIGTERM.
    Terminate,
    /// SIGKILL.
    Kill,
    /// SIGHUP.
    Hangup,
    /// SIGQUIT.
    Quit,
    /// SIGUSR1.
    User1,
    /// SIGUSR2.
    User2,
}

impl SignalName {
    /// The Linux signal number.
    pub fn number(self) -> i32 {
        match self {
            SignalName::Interrupt => libc::SIGINT,
            SignalName::Terminate => libc::SIGTERM,
            SignalName::Kill => libc::SIGKILL,
            SignalName::Hangup => libc::SIGHUP,
            SignalName::Quit => libc::SIGQUIT,
            SignalName::User1 => libc::SIGUSR1,
            SignalName::User2 => libc::SIGUSR2,
        }
    }
}

/// Params of `process/resize`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResizeParams {
    /// The process handle.
    pub process_id: String,
    /// New row count.
    pub rows: u16,
    /// New column count.
    pub cols: u16,
}

/// Resource usage reported on `process/exited`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct Usage {
    /// Wall-clock time from spawn to exit.
    pub wall_ms: u64,
    /// User CPU time.
    pub user_ms: u64,
    /// System CPU time.
    pub sys_ms: u64,
    /// Peak resident set size.
    pub max_rss_kb: u64,
}

two_spellings! {
    /// `limits` of `process/start` (section 7); all optional. Unknown keys are refused: a
    /// misspelled limit would silently not apply.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct Limits {
        /// Kill the tree after this long (`timedOut: true`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub wall_time_ms: Option<u64>,
        /// CPU time (RLIMIT_CPU, whole seconds rounded up; SIGXCPU then SIGKILL).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub cpu_time_ms: Option<u64>,
        /// Address space (RLIMIT_AS).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub memory_bytes: Option<u64>,
        /// Processes of the user (RLIMIT_NPROC).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_processes: Option<u64>,
        /// Largest file the process may write (RLIMIT_FSIZE; writes fail with EFBIG).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_file_size_bytes: Option<u64>,
        /// Open file descriptors (RLIMIT_NOFILE).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_open_files: Option<u64>,
        /// Kill the tree once this much output was produced (`outputLimitExceeded: true`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_output_bytes: Option<u64>,
    }
    /// The `[limits]` tables (`default`, `max`) of the config file: [`Limits`] in snake_case.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
    file struct LimitsTable;
}

impl Limits {
    /// The fields as `(wire name, value)` pairs.
    pub fn fields(&self) -> [(&'static str, Option<u64>); 7] {
        [
            ("wallTimeMs", self.wall_time_ms),
            ("cpuTimeMs", self.cpu_time_ms),
            ("memoryBytes", self.memory_bytes),
            ("maxProcesses", self.max_processes),
            ("maxFileSizeBytes", self.max_file_size_bytes),
            ("maxOpenFiles", self.max_open_files),
            ("maxOutputBytes", self.max_output_bytes),
        ]
    }

    /// Each field of `self`, or the default's when absent.
    pub fn or(self, default: Limits) -> Limits {
        Limits {
            wall_time_ms: self.wall_time_ms.or(default.wall_time_ms),
            cpu_time_ms: self.cpu_time_ms.or(default.cpu_time_ms),
            memory_bytes: self.memory_bytes.or(default.memory_bytes),
            max_processes: self.max_processes.or(default.max_processes),
            max_file_size_bytes: self.max_file_size_bytes.or(default.max_file_size_bytes),
            max_open_files: self.max_open_files.or(default.max_open_files),
            max_output_bytes: self.max_output_bytes.or(default.max_output_bytes),
        }
    }

    /// The first field above `max`, as an error message (requests above the maximum are
    /// refused, never silently clamped).
    pub fn check_max(&self, max: &Limits) -> Result<(), String> {
        for ((name, v), (_, m)) in self.fields().iter().zip(max.fields().iter()) {
            if let (Some(v), Some(m)) = (v, m)
                && v > m
            {
                return Err(format!(
                    "limits.{name} {v} is above this server's maximum {m}"
                ));
            }
        }
        Ok(())
    }
}

/// Params of the `process/exited` notification: how the main process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct ExitedParams {
    /// The process handle.
    pub process_id: String,
    /// Its place in the process's event order.
    pub seq: u64,
    /// Exit code, or 128+n for a signal death.
    pub exit_code: i32,
    /// Signal name for a signal death (e.g. `SIGKILL`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The process failed and the sandbox refused something on the way (section 6.5).
    pub sandbox_denied: bool,
    /// Resource usage.
    pub usage: Usage,
    /// The refusals seen (section 6.5; stockade extension).
    #[serde(flatten)]
    pub denials: DenialsReport,
    /// stockade killed the tree at `wallTimeMs` (present only when that limit was set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,
    /// stockade killed the tree at `maxOutputBytes` (present only when that limit was set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_limit_exceeded: Option<bool>,
}

/// Params of the `process/closed` notification: all output was delivered; the last event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct ClosedParams {
    /// The process handle.
    pub process_id: String,
    /// Its place in the process's event order.
    pub seq: u64,
}
