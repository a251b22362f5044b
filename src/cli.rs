//! Command-line interface. Every flag's meaning (and security meaning) is documented here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// stockade: a Linux exec supervisor speaking the Codex exec-server protocol.
#[derive(Debug, Parser)]
#[command(name = "stockade", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the JSON-RPC protocol on stdio or WebSocket.
    Serve(Box<ServeArgs>),
    /// Run one command through the same code path, forwarding stdio and the exit status.
    // The serve flags that only bound what clients may ask for mean nothing to `run`, whose
    // caller is the operator: accepted (scripts may pass them) but not shown in its help.
    #[command(
        mut_arg("default_policy", |a| a.hide(true)),
        mut_arg("ceiling", |a| a.hide(true)),
        mut_arg("no_network", |a| a.hide(true))
    )]
    Run(Box<RunArgs>),
    /// Print what this host can enforce (Landlock ABI, seccomp, namespaces, each policy).
    Doctor(DoctorArgs),
    /// Server config helpers: `stockade config example NAME` prints a commented example.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the JSON Schema of the protocol (`schema/stockade-protocol.json`, generated from
    /// the wire types). Hidden: it is for regenerating that file and for tooling.
    #[command(hide = true)]
    Schema,
}

/// `stockade config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a commented example server config (for `serve --config FILE`): `ci-runner`,
    /// `agent-workstation` or `locked-down`.
    Example {
        /// Which example.
        #[arg(value_parser = ["ci-runner", "agent-workstation", "locked-down"])]
        name: String,
    },
}

/// `stockade doctor` flags.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,

    /// Check as if the kernel offered at most this Landlock ABI.
    #[arg(long, value_name = "N")]
    pub landlock_abi: Option<i32>,

    /// The server's config file (its `[sandbox] denial_audit` is checked).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

/// `stockade run` flags. The environment policy starts from `--policy FILE`'s `[env]` (default:
/// inherit all, minus the default `*KEY*`/`*SECRET*`/`*TOKEN*` excludes); the `--env-*` flags
/// override its scalars and extend its lists.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Working directory (default: the current directory).
    #[arg(long)]
    pub cwd: Option<PathBuf>,

    /// Sandbox policy: a type name (`read-only`, `workspace-write`, `external-sandbox`,
    /// `danger-full-access`) or a policy file (TOML) with a `[sandbox]` table (the
    /// `sandboxPolicy` shape of PROTOCOL.md 6.2) and/or an `[env]` table. Default: the server
    /// default (workspace-write, network blocked). `run` is operated by its caller, so every
    /// policy is allowed (the ceiling is danger-full-access).
    #[arg(long, value_name = "FILE|NAME")]
    pub policy: Option<String>,

    /// Make DIR writable too (workspace-write; repeatable).
    #[arg(long, value_name = "DIR")]
    pub writable: Vec<PathBuf>,

    /// Allow network access.
    #[arg(long)]
    pub network: bool,

    /// Kill the command's whole tree after this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub wall_time_ms: Option<u64>,
    /// CPU time limit (RLIMIT_CPU, rounded up to whole seconds).
    #[arg(long, value_name = "MS")]
    pub cpu_time_ms: Option<u64>,
    /// Address-space limit (RLIMIT_AS).
    #[arg(long, value_name = "BYTES")]
    pub memory_bytes: Option<u64>,
    /// Process limit of the user (RLIMIT_NPROC; not enforceable as root).
    #[arg(long, value_name = "N")]
    pub max_processes: Option<u64>,
    /// Largest file the command may write (writes beyond fail with EFBIG).
    #[arg(long, value_name = "BYTES")]
    pub max_file_size_bytes: Option<u64>,
    /// Open file descriptor limit.
    #[arg(long, value_name = "N")]
    pub max_open_files: Option<u64>,
    /// Kill the command's tree once it has written this much output.
    #[arg(long, value_name = "BYTES")]
    pub max_output_bytes: Option<u64>,

    /// No summary line from stockade on stderr after the command (timed out, output limit,
    /// degraded enforcement, sandbox refusals).
    #[arg(long, short)]
    pub quiet: bool,

    /// Write a JSON report to FILE after the command: the sandbox report, limits, usage, exit
    /// and denials.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    #[command(flatten)]
    pub sandbox: SandboxArgs,

    /// Server config file: its `[env] never_inherit` guard applies as for `serve`.
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// Start set: `all` server variables, the `core` names, or `none`.
    #[arg(long, value_name = "all|core|none")]
    pub env_inherit: Option<String>,

    /// Keep the names matching `*KEY*`, `*SECRET*`, `*TOKEN*` (removed by default).
    #[arg(long)]
    pub env_ignore_default_excludes: bool,

    /// Drop variables whose name matches PATTERN (repeatable; `*` and `?`, case-insensitive).
    #[arg(long, value_name = "PATTERN")]
    pub env_exclude: Vec<String>,

    /// Set NAME=VALUE in the child (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub env_set: Vec<String>,

    /// Add back server variables matching PATTERN after the excludes (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub env_include: Vec<String>,

    /// Keep only variables matching PATTERN, after `--env-set` (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub env_include_only: Vec<String>,

    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true)]
    pub command: Vec<String>,
}

/// `stockade serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// `stdio` (default) or `ws://IP:PORT`. With `ws://`, the bound URL is printed on stdout.
    /// Hostnames are refused; port 0 picks a free port.
    #[arg(long, default_value = "stdio")]
    pub listen: String,

    /// Largest accepted incoming message in bytes; larger ones are discarded and answered
    /// with an error (id -1, -32600) without closing the connection.
    #[arg(long, default_value_t = crate::config::DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// File holding the bearer token every WebSocket upgrade must present
    /// (`Authorization: Bearer <token>`); the content is trimmed. Without it, anyone who can
    /// reach the port can run commands as this user.
    /// The file is hidden from every confined process and filesystem call.
    #[arg(long, conflicts_with = "ws_token_env")]
    pub ws_token_file: Option<PathBuf>,

    /// Like `--ws-token-file`, but the token is the value of the environment variable VAR,
    /// read at startup and then removed from the server's environment (so no child, whatever
    /// its `envPolicy`, and no `/proc/<pid>/environ` reader sees it) and no file holds it.
    #[arg(long, value_name = "VAR")]
    pub ws_token_env: Option<String>,

    /// Allow WebSocket upgrades carrying this `Origin` header (repeatable). By default every
    /// request with an Origin is refused (403) so that web pages cannot drive the executor.
    #[arg(long)]
    pub allow_origin: Vec<String>,

    /// Allow binding a non-loopback address without `--ws-token-file`. Anyone on the network
    /// could then run commands: only for isolated networks.
    #[arg(long)]
    pub insecure_no_auth: bool,

    /// How long a dropped WebSocket session (and its processes) is kept for resumption.
    #[arg(long, default_value_t = 30_000)]
    pub session_grace_ms: u64,

    /// After a process exits, how long to wait for its output to reach EOF before killing
    /// the descendants that hold it open.
    #[arg(long, default_value_t = 2_000)]
    pub close_grace_ms: u64,

    /// Output bytes retained per process for `process/read` (older chunks are dropped).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub retain_output_bytes: usize,

    /// How long a closed process stays readable before its id is freed.
    #[arg(long, default_value_t = 30_000)]
    pub retain_exited_ms: u64,

    /// Server config file (TOML; unknown keys are an error). Commented examples: `stockade
    /// config example ci-runner|agent-workstation|locked-down`.
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// A cgroup v2 directory delegated to stockade (writable, e.g. from systemd's
    /// `Delegate=yes`): every process then runs in its own group there, so `memoryBytes` and
    /// `maxProcesses` bound its whole tree (when the memory and pids controllers can be
    /// enabled), `process/terminate` uses `cgroup.kill`, and usage covers the tree.
    /// Overrides `[limits] cgroup_root`.
    #[arg(long, value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,

    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Sandbox settings shared by `serve` and `run` (they override the config file).
#[derive(Debug, Args, Clone, Default)]
pub struct SandboxArgs {
    /// Policy for requests that carry none: a `sandboxPolicy` JSON object or a type name.
    /// Built-in: workspace-write with the network restricted.
    #[arg(long, value_name = "JSON|TYPE")]
    pub default_policy: Option<String>,

    /// Most permissive policy a client may ask for: read-only < workspace-write <
    /// external-sandbox < danger-full-access (built-in: workspace-write). Requests above it
    /// fail with -32020.
    #[arg(long, value_name = "TYPE")]
    pub ceiling: Option<String>,

    /// Refuse every request for network access (-32020).
    #[arg(long)]
    pub no_network: bool,

    /// Run processes whose policy this host cannot fully enforce, with the missing parts
    /// listed in the report's `degradations`. Without it such requests fail with -32021.
    #[arg(long)]
    pub allow_degraded: bool,

    /// Use at most this Landlock ABI (to check what older kernels would enforce).
    #[arg(long, value_name = "N")]
    pub landlock_abi: Option<i32>,

    /// Let processes write files that also have a hard link outside the writable roots.
    /// Security meaning: Landlock grants rights on whatever a writable path reaches, so a
    /// process can then change a file outside its writable roots through a hard link that
    /// already existed inside them (it cannot make new ones). By default such names are
    /// read-only for processes, which costs a walk of each writable root on first use and an
    /// inotify watch per directory.
    #[arg(long)]
    pub no_protect_hard_links: bool,

    /// Bound every path a request makes writable (cwd of workspace-write, writable_roots,
    /// project roots, write entries) to this directory (repeatable; adds to
    /// `[sandbox] workspace_roots`). Paths are resolved, symlinks followed; outside: -32020.
    /// `/tmp` and the server's `$TMPDIR` stay allowed unless `allow_tmp_roots = false`.
    #[arg(long, value_name = "DIR")]
    pub workspace_root: Vec<PathBuf>,

    /// Allow writable roots that are the host itself: `/`, `/etc`, `/usr`, `/bin`, `/sbin`,
    /// `/lib*`, `/boot`, `/dev`, `/proc`, `/sys`, `/var`, `/root` or `$HOME` (refused with
    /// -32020 by default, as such a policy confines nothing that matters).
    #[arg(long)]
    pub allow_system_writable_roots: bool,
}

impl SandboxArgs {
    /// Applies the flags over `settings`.
    pub fn apply(
        &self,
        settings: &mut crate::sandbox::prepare::SandboxSettings,
    ) -> Result<(), String> {
        if let Some(p) = &self.default_policy {
            settings.default_policy = crate::config::parse_default_policy_flag(p)?;
        }
        if let Some(c) = &self.ceiling {
            settings.ceiling = crate::sandbox::policy::Level::parse(c)
                .ok_or_else(|| format!("--ceiling: unknown policy type {c:?}"))?;
        }
        if self.no_network {
            settings.allow_network = false;
        }
        if self.allow_degraded {
            settings.allow_degraded = true;
        }
        if let Some(a) = self.landlock_abi {
            settings.landlock_abi_cap = Some(a);
        }
        if self.no_protect_hard_links {
            settings.protect_hard_links = false;
        }
        for root in &self.workspace_root {
            settings
                .workspace_roots
                .push(crate::config::workspace_root(root, "--workspace-root")?);
        }
        if self.allow_system_writable_roots {
            settings.allow_system_writable_roots = true;
        }
        Ok(())
    }
}
