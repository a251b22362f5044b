//! Starting a process, typed: [`ProcessService::start`] takes a validated [`StartRequest`]
//! and gives a [`Started`] process (its events go to the caller's [`EventSink`]) or a
//! [`StartError`]. The `process/start` handler and `stockade run` both call it; neither knows
//! the keeper's wire format, and this module knows nothing of JSON-RPC.
//!
//! The steps, in the order their errors can occur (the order is part of the protocol: a
//! request with two faults gets the first one's error): limits, environment, policy, the
//! hard-link census, prepare (bounds and what the host can enforce), argv and cwd, the
//! program, the mount namespace, the cgroup, the process id, the spawn.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::oneshot;

use super::cgroup::{CgroupRoot, ProcessCgroup};
use super::events::EventSink;
use super::pump::{Pump, PumpConfig};
use super::resolve::resolve_program;
use super::spawn::{SpawnError, SpawnNamespace, SpawnSpec, Spawner};
use super::table::{Process, ProcessTable};
use super::zygote::KeeperRequest;
use crate::env::{self, EnvPolicy, ServerEnv};
use crate::protocol::process::{DenialSource, Limits, TerminalSize};
use crate::protocol::sandbox::{Enforcement, LimitReport, SandboxReport};
use crate::protocol::{ErrorCode, RpcError};
use crate::sandbox::child::Stage;
use crate::sandbox::denials::stderr::StderrEvidence;
use crate::sandbox::links::{Findings, LinkCensus};
use crate::sandbox::mountns::{Capture, NamespaceCache, NamespacePlan};
use crate::sandbox::policy::{self, Filesystem, SandboxPolicy};
use crate::sandbox::prepare::{
    self, HostSupport, Prepared, SandboxError, SandboxSettings, SeccompCache,
};

/// The operator's settings that starting a process uses (from the server configuration).
#[derive(Debug, Clone)]
pub struct ProcessSettings {
    /// Default policy, ceiling, bounds and degradation.
    pub sandbox: SandboxSettings,
    /// Limits applied when a request does not set them.
    pub limits_default: Limits,
    /// Largest limits a request may ask for.
    pub limits_max: Limits,
    /// Server variables never inherited by children.
    pub never_inherit: Vec<String>,
    /// Output retained per process for reads.
    pub retain_output_bytes: usize,
    /// How long to wait for output EOF after exit before killing the tree.
    pub close_grace: Duration,
    /// How long a closed process stays readable.
    pub retain_exited: Duration,
}

/// A request to start a process, validated as far as the wire allows (the handler decoded
/// and checked the shapes; the service checks what needs the server's state).
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// Handle, unique within the table.
    pub process_id: String,
    /// Program and arguments (not empty).
    pub argv: Vec<String>,
    /// argv[0] as seen by the program.
    pub arg0: Option<String>,
    /// Working directory (absolute).
    pub cwd: PathBuf,
    /// The exact environment, or an overlay on the built one when `env_policy` is set.
    pub env: BTreeMap<String, String>,
    /// Environment policy (None: exactly `env`).
    pub env_policy: Option<EnvPolicy>,
    /// A section 6.2 `sandboxPolicy` (None and `sandbox` None: the server default).
    pub sandbox_policy: Option<Value>,
    /// A section 6.3 `sandbox`.
    pub sandbox: Option<Value>,
    /// Resource limits (None: the server defaults).
    pub limits: Option<Limits>,
    /// Run on a pseudo-terminal.
    pub tty: bool,
    /// Keep a writable stdin pipe (non-tty only).
    pub pipe_stdin: bool,
    /// Initial terminal size (tty only; default 24x80).
    pub size: Option<TerminalSize>,
    /// Network only through a managed proxy (there is none: network off).
    pub enforce_managed_network: bool,
}

/// A started process.
pub struct Started {
    /// The process (also in the table).
    pub process: Arc<Process>,
    /// Whether any confinement applies.
    pub confined: bool,
    /// What was enforced, with the effective limits.
    pub report: SandboxReport,
    /// Fire once the caller may let events flow (the `process/start` response is queued):
    /// the pump sends nothing before.
    pub gate: oneshot::Sender<()>,
}

/// Why a process was not started. Each kind is one JSON-RPC error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// A field of the request is invalid (-32602); the message names it.
    #[error("{0}")]
    InvalidParams(String),
    /// The process id is in use (-32600).
    #[error("{0}")]
    DuplicateId(String),
    /// A limit is above the operator's maximum (-32020).
    #[error("{0}")]
    LimitNotAllowed(String),
    /// A limit cannot be enforced here and degradation is off (-32021).
    #[error("{0}")]
    LimitUnavailable(String),
    /// The policy is refused or cannot be enforced (see [`SandboxError`]).
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The program could not be started (-32603): cwd, lookup, cgroup, spawn.
    #[error("{0}")]
    Spawn(String),
}

impl From<StartError> for RpcError {
    fn from(e: StartError) -> RpcError {
        match e {
            StartError::InvalidParams(m) => RpcError::invalid_params(m),
            StartError::DuplicateId(m) => RpcError::invalid_request(m),
            StartError::LimitNotAllowed(m) => RpcError::new(ErrorCode::PolicyNotAllowed, m),
            StartError::LimitUnavailable(m) => RpcError::new(ErrorCode::SandboxUnavailable, m),
            StartError::Sandbox(e) => e.into(),
            StartError::Spawn(m) => RpcError::internal(m),
        }
    }
}

/// Everything starting a process needs, shared by all sessions.
pub struct ProcessService {
    settings: ProcessSettings,
    env: ServerEnv,
    spawner: Arc<Spawner>,
    cgroup: Option<Arc<CgroupRoot>>,
    links: Arc<LinkCensus>,
    namespaces: NamespaceCache,
    host: HostSupport,
    seccomp: SeccompCache,
    is_root: bool,
}

/// The metrics label of a policy level.
fn sandbox_type(level: policy::Level) -> crate::metrics::SandboxType {
    use crate::metrics::SandboxType;
    match level {
        policy::Level::ReadOnly => SandboxType::ReadOnly,
        policy::Level::WorkspaceWrite => SandboxType::WorkspaceWrite,
        policy::Level::ExternalSandbox => SandboxType::ExternalSandbox,
        policy::Level::DangerFullAccess => SandboxType::DangerFullAccess,
    }
}

/// `NAME=value` entries, as `execve` takes them.
type EnvEntries = Vec<Vec<u8>>;

/// Which limits the process's cgroup enforces for the whole tree.
#[derive(Debug, Clone, Copy, Default)]
struct TreeLimits {
    memory: bool,
    pids: bool,
}

/// The request's limits resolved against the server's, and what enforces them.
struct EffectiveLimits {
    limits: Limits,
    tree: TreeLimits,
    /// Limits that cannot be enforced here (degradation allowed).
    degradations: Vec<String>,
}

impl ProcessService {
    /// Drops every kept mount namespace (and with them the placeholders only they relied
    /// on): at shutdown, once every process is gone.
    pub fn forget_namespaces(&self) {
        self.namespaces.clear();
    }

    /// A service spawning through `spawner`, with the server's captured environment and what
    /// the host supports.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: ProcessSettings,
        env: ServerEnv,
        spawner: Arc<Spawner>,
        cgroup: Option<Arc<CgroupRoot>>,
        host: HostSupport,
        seccomp: SeccompCache,
        is_root: bool,
        namespaces: NamespaceCache,
    ) -> ProcessService {
        ProcessService {
            settings,
            env,
            spawner,
            cgroup,
            links: Arc::new(LinkCensus::default()),
            namespaces,
            host,
            seccomp,
            is_root,
        }
    }

    /// The server's environment, captured at startup.
    pub fn server_env(&self) -> &ServerEnv {
        &self.env
    }

    /// Starts a process into `table`; its events go to `sink` once [`Started::gate`] fired.
    pub async fn start<S: EventSink>(
        &self,
        table: &Arc<ProcessTable>,
        sink: S,
        req: StartRequest,
    ) -> Result<Started, StartError> {
        let taken_up = Instant::now();
        if req.argv.is_empty() {
            return Err(StartError::InvalidParams("argv must not be empty".into()));
        }
        let mut limits = self.effective_limits(req.limits)?;
        let (child_env, envp) = self.child_env(&req)?;
        let mut sandbox_policy = self.policy(&req, &child_env)?;
        let linked = self.check_links(&mut sandbox_policy).await?;
        let prepared = prepare::prepare(
            &sandbox_policy,
            self.host,
            &self.settings.sandbox,
            &self.seccomp,
            &linked.paths,
            &linked.dirs,
        )?;
        let argv = wire_argv(&req)?;
        let program_name = req.argv[0].clone();
        check_cwd(&program_name, &req.cwd)?;
        let program = resolve_program(
            &program_name,
            child_env.get("PATH").map(String::as_str),
            &req.cwd,
        )
        .map_err(|e| StartError::Spawn(format!("failed to spawn `{program_name}`: {e}")))?;
        let size = req.size.map(|s| (s.rows, s.cols)).unwrap_or((24, 80));
        let (namespace, capture) = self.namespace(&prepared, &linked);
        let mounts = match namespace {
            SpawnNamespace::Join(_) => Vec::new(),
            _ => prepared.all_mounts(),
        };
        let has_notify_socket = !prepared.seccomp.is_empty();
        let has_landlock_domain = prepared.ruleset.is_some() || prepared.port_guard.is_some();
        let mut spec = SpawnSpec {
            request: KeeperRequest {
                program: program.as_os_str().as_bytes().to_vec(),
                argv,
                envp,
                cwd: req.cwd.as_os_str().as_bytes().to_vec(),
                tty: req.tty,
                seccomp: prepared.seccomp,
                has_ruleset: prepared.ruleset.is_some(),
                has_port_guard: prepared.port_guard.is_some(),
                no_new_privs: prepared.no_new_privs,
                drop_caps: prepared.drop_caps,
                no_core: prepared.no_core,
                mounts,
                userns: prepared.userns,
                rlimits: rlimit_entries(&limits.limits, limits.tree),
                ignore_sigxfsz: limits.limits.max_file_size_bytes.is_some(),
                has_cgroup: false,
                namespace: Default::default(),
                has_notify_socket,
            },
            tty: req.tty.then_some(size),
            pipe_stdin: req.pipe_stdin && !req.tty,
            ruleset: prepared.ruleset,
            port_guard: prepared.port_guard,
            cgroup_procs: None,
            namespace,
        };
        let cgroup = self.cgroup(&limits.limits, &mut spec)?;

        if !table.reserve(&req.process_id) {
            return Err(StartError::DuplicateId(format!(
                "process {} already exists",
                req.process_id
            )));
        }
        let started = Instant::now();
        let sent = match self.spawner.hand_over(spec).await {
            Ok(s) => s,
            Err(e) => {
                table.unreserve(&req.process_id);
                return Err(spawn_error(&program_name, &req.cwd, e));
            }
        };
        // While the keeper starts the program (on another CPU): what only the server needs.
        // Error texts naming a path count only when this policy, with these mounts, denies it.
        let stderr_evidence = match &sandbox_policy.filesystem {
            Filesystem::Restricted(entries) if prepared.confined => {
                Some(StderrEvidence::new(entries, &prepared.mounts, &req.cwd))
            }
            _ => None,
        };
        let mut spawned = match sent.finish().await {
            Ok(s) => s,
            Err(e) => {
                table.unreserve(&req.process_id);
                return Err(spawn_error(&program_name, &req.cwd, e));
            }
        };
        if let Some(c) = capture {
            self.namespaces.adopt(
                c,
                std::mem::take(&mut spawned.captured),
                prepared.placeholders.clone(),
            );
        }
        let process = Arc::new(
            Process::new(
                req.process_id.clone(),
                spawned.pid,
                spawned.keeper,
                spawned.pty,
                spawned.stdin,
                self.settings.retain_output_bytes,
                prepared.confined,
            )
            .with_cgroup(cgroup)
            .with_placeholders(prepared.placeholders)
            .with_stderr_evidence(stderr_evidence),
        );
        crate::metrics::spawned(sandbox_type(sandbox_policy.level), taken_up.elapsed());
        let refusal_note = watch_refusals(&process, has_notify_socket, spawned.listener.take());
        if has_landlock_domain {
            super::landlock_audit::watch(&process);
        }
        table.insert(process.clone());
        let (gate_tx, gate_rx) = oneshot::channel();
        let pump = Pump {
            process: process.clone(),
            outputs: spawned.outputs,
            status: spawned.status,
            sink,
            gate: gate_rx,
            table: Arc::downgrade(table),
            config: PumpConfig {
                close_grace: self.settings.close_grace,
                retain_exited: self.settings.retain_exited,
                wall_time: limits.limits.wall_time_ms.map(Duration::from_millis),
                max_output_bytes: limits.limits.max_output_bytes,
            },
            started,
        };
        tokio::spawn(pump.run());
        let mut report = prepared.report;
        report.limits = Some(limits_report(&limits.limits, limits.tree));
        report.notes.extend(refusal_note);
        if !limits.degradations.is_empty() {
            report.degradations.append(&mut limits.degradations);
            report.enforcement = Enforcement::Degraded;
        }
        Ok(Started {
            process,
            confined: prepared.confined,
            report,
            gate: gate_tx,
        })
    }

    /// The request's limits, else the server defaults; above the maximum is refused. A
    /// delegated cgroup v2 directory enforces memory and process counts for the whole tree
    /// when its controllers are enabled; rlimits stand in otherwise.
    fn effective_limits(&self, requested: Option<Limits>) -> Result<EffectiveLimits, StartError> {
        let limits = requested
            .unwrap_or_default()
            .or(self.settings.limits_default);
        limits
            .check_max(&self.settings.limits_max)
            .map_err(StartError::LimitNotAllowed)?;
        let tree = TreeLimits {
            memory: self.cgroup.as_ref().is_some_and(|c| c.memory()),
            pids: self.cgroup.as_ref().is_some_and(|c| c.pids()),
        };
        let mut degradations = Vec::new();
        // The kernel never applies RLIMIT_NPROC to uid 0: as root without a pids cgroup,
        // maxProcesses cannot be enforced.
        if limits.max_processes.is_some() && self.is_root && !tree.pids {
            let what = "maxProcesses: RLIMIT_NPROC does not apply to root and no delegated pids cgroup is available";
            if !self.settings.sandbox.allow_degraded {
                return Err(StartError::LimitUnavailable(format!(
                    "limits cannot be enforced on this host: {what} (start the server with --allow-degraded to run anyway)"
                )));
            }
            degradations.push(what.to_string());
        }
        Ok(EffectiveLimits {
            limits,
            tree,
            degradations,
        })
    }

    /// The child's environment, as a map and as `NAME=value` entries. No policy: exactly
    /// `env`. With one: built from the server's environment, `env` on top.
    fn child_env(
        &self,
        req: &StartRequest,
    ) -> Result<(BTreeMap<String, String>, EnvEntries), StartError> {
        validate_env(&req.env)?;
        if let Some(policy) = &req.env_policy {
            policy
                .check()
                .map_err(|e| StartError::InvalidParams(format!("invalid params: {e}")))?;
        }
        let child_env = match &req.env_policy {
            None => req.env.clone(),
            Some(policy) => env::build(&self.env, policy, &self.settings.never_inherit, &req.env),
        };
        let envp = validate_env(&child_env)?;
        Ok((child_env, envp))
    }

    /// The request's policy (either shape) or the server default, resolved against this
    /// process's cwd and environment, then bounded by the operator's settings.
    fn policy(
        &self,
        req: &StartRequest,
        child_env: &BTreeMap<String, String>,
    ) -> Result<SandboxPolicy, StartError> {
        let requested = policy::from_request(
            req.sandbox_policy.as_ref(),
            req.sandbox.as_ref(),
            &req.cwd,
            child_env,
        )
        .map_err(|e| StartError::InvalidParams(format!("invalid params: {e}")))?;
        let mut sandbox_policy = match requested {
            Some(pol) => pol,
            None => policy::from_sandbox_policy(
                &self.settings.sandbox.default_policy,
                &policy::Context {
                    cwd: &req.cwd,
                    tmpdir: child_env.get("TMPDIR").map(String::as_str),
                },
            )
            .map_err(|e| SandboxError::Internal(format!("server default policy: {e}")))?,
        };
        if req.enforce_managed_network && sandbox_policy.network {
            // No managed proxy here: stricter, never looser.
            sandbox_policy.network = false;
            if !sandbox_policy.hardening {
                sandbox_policy.hardening = true;
            }
            sandbox_policy.notes.push(
                "enforceManagedNetwork: stockade has no managed proxy, so the network is blocked"
                    .into(),
            );
        }
        prepare::bound_policy(&mut sandbox_policy, &self.settings.sandbox, false)?;
        Ok(sandbox_policy)
    }

    /// The hard-link census's findings for the policy's writable roots; fails closed when it
    /// has no settled view of one (unless degradation is allowed).
    async fn check_links(
        &self,
        sandbox_policy: &mut SandboxPolicy,
    ) -> Result<Findings, StartError> {
        let linked = self.outside_links(sandbox_policy).await;
        if !linked.unsettled.is_empty() && !self.settings.sandbox.allow_degraded {
            // No reliable view of these roots: a hard link to an outside file may be anywhere.
            let roots: Vec<String> = linked
                .unsettled
                .iter()
                .map(|r| r.display().to_string())
                .collect();
            return Err(prepare::unenforceable(
                sandbox_policy,
                &[format!(
                    "a settled view of {} for the hard-link census (directories there kept changing while it walked them, without inotify watches; stop what renames them and retry, or start the server with --no-protect-hard-links)",
                    roots.join(", ")
                )],
            )
            .into());
        }
        if !linked.unsettled.is_empty() {
            sandbox_policy.notes.push(
                "the hard-link census could not get a settled view of a writable root (allowed by --allow-degraded): hard links to outside files there may be writable".into(),
            );
        }
        Ok(linked)
    }

    /// Unless hard-link protection is off: every writable name of a file that also has a name
    /// outside the writable roots (see [`crate::sandbox::links`]), to be made read-only.
    /// Landlock alone would let the process write that file through the inside name.
    async fn outside_links(&self, policy: &mut SandboxPolicy) -> Findings {
        if !self.settings.sandbox.protect_hard_links {
            return Findings::default();
        }
        let Filesystem::Restricted(entries) = &policy.filesystem else {
            return Findings::default();
        };
        let found = match self.links.current(entries) {
            Some(found) => found,
            None => {
                let census = self.links.clone();
                let snapshot = entries.clone();
                tokio::task::spawn_blocking(move || census.outside_links(&snapshot))
                    .await
                    .unwrap_or_default()
            }
        };
        if found.walked_again {
            policy.notes.push(
                "the hard-link census cannot watch the writable roots (inotify limit: see `stockade doctor`) and walked them for this process"
                    .into(),
            );
        }
        if !found.dirs.is_empty() {
            policy.notes.push(format!(
                "{} director{} made read-only because the hard-link census cannot see into them (make them readable and searchable by the server's user, or shorten the path): {}",
                found.dirs.len(),
                if found.dirs.len() == 1 { "y" } else { "ies" },
                found.blind.join("; ")
            ));
        }
        if !found.paths.is_empty() {
            policy.notes.push(format!(
                "{} hard-linked file(s) made read-only: they also have a name outside the writable roots",
                found.paths.len()
            ));
        }
        found
    }

    /// The mount namespace: joined when an identical one exists (then no mounts travel),
    /// else built, and captured for reuse when the cache takes it.
    fn namespace(
        &self,
        prepared: &Prepared,
        linked: &Findings,
    ) -> (SpawnNamespace, Option<Capture>) {
        if !prepared.needs_namespace() {
            return (SpawnNamespace::Build, None);
        }
        let carve_outs = prepared.mounts.len().saturating_sub(linked.dirs.len());
        match self.namespaces.plan(
            &prepared.mounts,
            &prepared.link_files,
            prepared.userns,
            carve_outs,
            linked.version,
        ) {
            NamespacePlan::Join(ns) => (SpawnNamespace::Join(ns), None),
            NamespacePlan::Build { capture: Some(c) } => (SpawnNamespace::BuildAndCapture, Some(c)),
            NamespacePlan::Build { capture: None } => (SpawnNamespace::Build, None),
        }
    }

    /// The process's own cgroup, when a cgroup root is delegated; its `cgroup.procs` goes to
    /// the keeper with the request.
    fn cgroup(
        &self,
        limits: &Limits,
        spec: &mut SpawnSpec,
    ) -> Result<Option<ProcessCgroup>, StartError> {
        let Some(root) = &self.cgroup else {
            return Ok(None);
        };
        let group = root
            .create(limits.memory_bytes, limits.max_processes)
            .map_err(|e| StartError::Spawn(format!("creating the process cgroup: {e}")))?;
        spec.cgroup_procs = Some(
            group
                .procs()
                .map_err(|e| StartError::Spawn(format!("opening the process cgroup: {e}")))?,
        );
        spec.request.has_cgroup = true;
        Ok(Some(group))
    }
}

/// The evidence sources watching this process (issue 16): the seccomp listener, when the
/// filter has one. Returns the note to add to the report when it could not be installed.
fn watch_refusals(
    process: &Arc<Process>,
    has_notify_socket: bool,
    listener: Option<std::os::fd::OwnedFd>,
) -> Option<String> {
    if !has_notify_socket {
        return None;
    }
    let watched = match listener {
        Some(listener) => super::refusals::watch(process.clone(), listener).is_ok(),
        None => false,
    };
    if watched {
        process.state().denials.add_source(DenialSource::Seccomp);
        None
    } else {
        Some(
            "the syscalls the seccomp filter refuses are not listed in `denials`: no \
             seccomp listener could be installed (stockade runs under an outer seccomp \
             notifier, or the kernel lacks user notification); the plain filter refuses \
             the same calls"
                .to_string(),
        )
    }
}

/// `NAME=value` entries; a name must be non-empty without `=` or NUL, a value without NUL.
fn validate_env(env: &BTreeMap<String, String>) -> Result<EnvEntries, StartError> {
    env.iter()
        .map(|(k, v)| {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(StartError::InvalidParams(format!(
                    "invalid params: env: invalid variable name `{}`",
                    k.escape_debug()
                )));
            }
            if v.contains('\0') {
                return Err(StartError::InvalidParams(format!(
                    "invalid params: env.{k}: value contains a NUL byte"
                )));
            }
            Ok(format!("{k}={v}").into_bytes())
        })
        .collect()
}

/// argv as the program sees it (`arg0` replaces `argv[0]`); no NUL bytes.
fn wire_argv(req: &StartRequest) -> Result<Vec<Vec<u8>>, StartError> {
    if req.argv.iter().any(|a| a.contains('\0')) {
        return Err(StartError::InvalidParams(
            "invalid params: argv: contains a NUL byte".into(),
        ));
    }
    let mut argv: Vec<Vec<u8>> = req.argv.iter().map(|a| a.as_bytes().to_vec()).collect();
    if let Some(arg0) = &req.arg0 {
        if arg0.contains('\0') {
            return Err(StartError::InvalidParams(
                "invalid params: arg0: contains a NUL byte".into(),
            ));
        }
        argv[0] = arg0.as_bytes().to_vec();
    }
    Ok(argv)
}

/// The cwd must be a directory (checked here for a clear error; the child's chdir decides).
fn check_cwd(program_name: &str, cwd: &Path) -> Result<(), StartError> {
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StartError::Spawn(format!(
            "failed to spawn `{program_name}`: cwd {} is not a directory",
            cwd.display()
        ))),
        Err(e) => Err(StartError::Spawn(format!(
            "failed to spawn `{program_name}`: cwd {}: {e}",
            cwd.display()
        ))),
    }
}

fn spawn_error(program: &str, cwd: &Path, e: SpawnError) -> StartError {
    StartError::Spawn(match e {
        SpawnError::Child {
            kind: Stage::Chdir,
            source,
            ..
        } => format!(
            "failed to spawn `{program}`: cannot enter cwd {}: {source}",
            cwd.display()
        ),
        SpawnError::Child {
            kind: Stage::Exec,
            source,
            ..
        } => format!("failed to spawn `{program}`: {source}"),
        other => format!("failed to spawn `{program}`: {other}"),
    })
}

/// The rlimits a request's limits become (resource number, value), encoded for the keeper.
fn rlimit_entries(l: &Limits, tree: TreeLimits) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut push = |resource: libc::__rlimit_resource_t, value: Option<u64>| {
        if let Some(v) = value {
            let mut e = resource.to_le_bytes().to_vec();
            e.extend_from_slice(&v.to_le_bytes());
            out.push(e);
        }
    };
    // RLIMIT_CPU counts whole seconds: round up, at least one.
    push(
        libc::RLIMIT_CPU,
        l.cpu_time_ms.map(|ms| ms.div_ceil(1000).max(1)),
    );
    push(libc::RLIMIT_AS, l.memory_bytes.filter(|_| !tree.memory));
    push(libc::RLIMIT_NPROC, l.max_processes.filter(|_| !tree.pids));
    push(libc::RLIMIT_FSIZE, l.max_file_size_bytes);
    push(libc::RLIMIT_NOFILE, l.max_open_files);
    out
}

/// The `limits` part of the SandboxReport: each effective limit and how it is enforced.
fn limits_report(l: &Limits, tree: TreeLimits) -> BTreeMap<&'static str, LimitReport> {
    let mechanism = |name: &str| match name {
        "memoryBytes" if tree.memory => "cgroup v2 memory.max (the whole tree; swap off)",
        "maxProcesses" if tree.pids => "cgroup v2 pids.max (the whole tree)",
        "wallTimeMs" => "timer, then the tree is killed",
        "cpuTimeMs" => "RLIMIT_CPU (whole seconds, rounded up; SIGXCPU then SIGKILL)",
        "memoryBytes" => "RLIMIT_AS (virtual memory per process; allocations fail)",
        "maxProcesses" => "RLIMIT_NPROC (counts every process of the user, not only this tree)",
        "maxFileSizeBytes" => "RLIMIT_FSIZE (writes fail with EFBIG)",
        "maxOpenFiles" => "RLIMIT_NOFILE",
        _ => "output counter, then the tree is killed",
    };
    l.fields()
        .into_iter()
        .filter_map(|(name, v)| {
            v.map(|value| {
                (
                    name,
                    LimitReport {
                        value,
                        mechanism: mechanism(name),
                    },
                )
            })
        })
        .collect()
}
