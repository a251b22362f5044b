//! Method routing and handlers. Handlers validate params into protocol types, call into the
//! process (and later fs) modules, and map failures to the exact errors of PROTOCOL.md.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::Server;
use super::session::Session;
use crate::env::{self, EnvPolicy};
use crate::fs::FsAnswer;
use crate::paths::parse_wire_path;
use crate::process::pump::{Pump, PumpConfig};
use crate::process::resolve::resolve_program;
use crate::process::spawn::{SpawnError, SpawnNamespace, SpawnSpec};
use crate::process::table::{Lookup, Process};
use crate::process::zygote::KeeperRequest;
use crate::protocol::process::{
    DenialSource, Limits, ProcessRef, ReadParams, ResizeParams, SignalParams, StartParams,
    StartResult, WriteParams, WriteStatus,
};
use crate::protocol::sandbox::{SANDBOX_TYPE_CONFINED, SANDBOX_TYPE_NONE};
use crate::protocol::{ErrorCode, RpcError};
use crate::sandbox::child::Stage;
use crate::sandbox::links::Findings;
use crate::sandbox::mountns::NamespacePlan;
use crate::sandbox::policy::{Filesystem, SandboxPolicy};
use crate::sandbox::{policy, prepare};

/// A handler's outcome, plus an optional gate fired once the response has been queued
/// (`process/start` must not let notifications overtake its response).
pub struct Reply {
    /// The result or error.
    pub result: Result<Value, RpcError>,
    /// Fired after the response was queued.
    pub after_send: Option<oneshot::Sender<()>>,
    /// The result as JSON text, used instead of `result` when set (a large `fs/readFile`
    /// result is built once, directly as text).
    pub raw_result: Option<String>,
}

impl From<Result<Value, RpcError>> for Reply {
    fn from(result: Result<Value, RpcError>) -> Self {
        Reply {
            result,
            after_send: None,
            raw_result: None,
        }
    }
}

const METHODS: &[&str] = &[
    "environment/info",
    "process/start",
    "process/read",
    "process/write",
    "process/closeStdin",
    "process/terminate",
    "process/signal",
    "process/resize",
];

/// True for methods that go through the handshake checks: the methods this server
/// implements, and the `fs/` family (whose handshake errors PROTOCOL.md names; `fs/`
/// methods this server does not implement answer -32601 after the handshake). Others get
/// -32601 at once.
pub fn is_known(method: &str) -> bool {
    METHODS.contains(&method) || method.starts_with("fs/")
}

/// Decodes params, naming the offending field on failure (-32602).
pub fn parse_params<T: DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    if params.is_null() {
        return Err(RpcError::invalid_params(
            "invalid params: expected an object, got null",
        ));
    }
    serde_path_to_error::deserialize(params).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { "" } else { path.as_str() };
        // Unknown keys of strict objects (`limits`) name the key and the likely intended one.
        let msg = crate::protocol::strict::explain_serde_error(path, &e.inner().to_string());
        RpcError::invalid_params(format!("invalid params: {msg}"))
    })
}

/// Routes one request (after the handshake checks).
pub async fn handle(
    server: &Arc<Server>,
    session: &Arc<Session>,
    method: &str,
    params: Value,
) -> Reply {
    match method {
        "environment/info" => {
            Ok(serde_json::to_value(&server.host.environment).unwrap_or(Value::Null)).into()
        }
        "process/start" => start(server, session, params).await,
        "process/read" => read(session, params).await.into(),
        "process/write" => write(session, params).await.into(),
        "process/closeStdin" => close_stdin(session, params).await.into(),
        "process/terminate" => terminate(session, params).into(),
        "process/signal" => signal(session, params).into(),
        "process/resize" => resize(session, params).into(),
        m if m.starts_with("fs/") => match server.fs.handle(m, params).await {
            Some(Ok(FsAnswer::Value(v))) => Ok(v).into(),
            Some(Ok(FsAnswer::Raw(text))) => Reply {
                result: Ok(Value::Null),
                after_send: None,
                raw_result: Some(text),
            },
            Some(Err(e)) => Err(e).into(),
            None => Err(RpcError::new(
                ErrorCode::MethodNotFound,
                format!("method not found: {method}"),
            ))
            .into(),
        },
        _ => Err(RpcError::new(
            ErrorCode::MethodNotFound,
            format!("method not found: {method}"),
        ))
        .into(),
    }
}

fn live(session: &Session, id: &str) -> Result<Arc<Process>, RpcError> {
    match session.processes.get(id) {
        Lookup::Live(p) => Ok(p),
        _ => Err(RpcError::invalid_request(format!(
            "unknown process id {id}"
        ))),
    }
}

fn validate_env(env: &BTreeMap<String, String>) -> Result<Vec<Vec<u8>>, RpcError> {
    env.iter()
        .map(|(k, v)| {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(RpcError::invalid_params(format!(
                    "invalid params: env: invalid variable name `{}`",
                    k.escape_debug()
                )));
            }
            if v.contains('\0') {
                return Err(RpcError::invalid_params(format!(
                    "invalid params: env.{k}: value contains a NUL byte"
                )));
            }
            Ok(format!("{k}={v}").into_bytes())
        })
        .collect()
}

fn spawn_error(program: &str, cwd: &std::path::Path, e: SpawnError) -> RpcError {
    match e {
        SpawnError::Child {
            kind: Stage::Chdir,
            source,
            ..
        } => RpcError::internal(format!(
            "failed to spawn `{program}`: cannot enter cwd {}: {source}",
            cwd.display()
        )),
        SpawnError::Child {
            kind: Stage::Exec,
            source,
            ..
        } => RpcError::internal(format!("failed to spawn `{program}`: {source}")),
        other => RpcError::internal(format!("failed to spawn `{program}`: {other}")),
    }
}

async fn start(server: &Arc<Server>, session: &Arc<Session>, params: Value) -> Reply {
    match start_inner(server, session, params).await {
        Ok((v, gate)) => Reply {
            result: Ok(v),
            after_send: Some(gate),
            raw_result: None,
        },
        Err(e) => Reply {
            result: Err(e),
            after_send: None,
            raw_result: None,
        },
    }
}

/// Unless hard-link protection is off: every writable name of a file that also has a name
/// outside the writable roots (see [`crate::sandbox::links`]), to be made read-only. Landlock
/// alone would let the process write that file through the inside name.
async fn outside_links(server: &Arc<Server>, policy: &mut SandboxPolicy) -> Findings {
    if !server.config.sandbox.protect_hard_links {
        return Findings::default();
    }
    let Filesystem::Restricted(entries) = &policy.filesystem else {
        return Findings::default();
    };
    let found = match server.links.current(entries) {
        Some(found) => found,
        None => {
            let census = server.links.clone();
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

async fn start_inner(
    server: &Arc<Server>,
    session: &Arc<Session>,
    params: Value,
) -> Result<(Value, oneshot::Sender<()>), RpcError> {
    let p: StartParams = parse_params(params)?;
    if p.argv.is_empty() {
        return Err(RpcError::invalid_params("argv must not be empty"));
    }
    let (cwd, _) = parse_wire_path(&p.cwd)
        .map_err(|e| RpcError::invalid_params(format!("invalid params: cwd: {e}")))?;
    let env_policy = match p.env_policy.as_ref().filter(|v| !v.is_null()) {
        Some(v) => Some(
            EnvPolicy::from_json(v)
                .map_err(|e| RpcError::invalid_params(format!("invalid params: {e}")))?,
        ),
        None => None,
    };
    // Limits: the request's, else the server defaults; above the maximum is refused.
    let limits = p
        .limits
        .unwrap_or_default()
        .or(server.config.limits_default);
    limits
        .check_max(&server.config.limits_max)
        .map_err(|e| RpcError::new(ErrorCode::PolicyNotAllowed, e))?;
    // The kernel never applies RLIMIT_NPROC to uid 0, and this host has no delegated pids
    // cgroup: as root, maxProcesses cannot be enforced.
    // A delegated cgroup v2 directory enforces memory and process counts for the whole tree
    // when its controllers are enabled; rlimits stand in otherwise.
    let tree = TreeLimits {
        memory: server.cgroup.as_ref().is_some_and(|c| c.memory()),
        pids: server.cgroup.as_ref().is_some_and(|c| c.pids()),
    };
    let mut limit_degradations = Vec::new();
    if limits.max_processes.is_some() && server.is_root && !tree.pids {
        let what = "maxProcesses: RLIMIT_NPROC does not apply to root and no delegated pids cgroup is available";
        if !server.config.sandbox.allow_degraded {
            return Err(RpcError::new(
                ErrorCode::SandboxUnavailable,
                format!(
                    "limits cannot be enforced on this host: {what} (start the server with --allow-degraded to run anyway)"
                ),
            ));
        }
        limit_degradations.push(what.to_string());
    }
    validate_env(&p.env)?;
    // No policy: exactly `env`. With one: built from the server's environment, `env` on top.
    let child_env = match &env_policy {
        None => p.env.clone(),
        Some(policy) => env::build(&server.env, policy, &server.config.never_inherit, &p.env),
    };
    let envp = validate_env(&child_env)?;

    // Sandbox: the request's policy (either shape) or the server default, resolved against
    // this process's cwd and environment; then the ceiling, then what the host can enforce.
    let requested = policy::from_request(
        p.sandbox_policy.as_ref(),
        p.sandbox.as_ref(),
        &cwd,
        &child_env,
    )
    .map_err(|e| RpcError::invalid_params(format!("invalid params: {e}")))?;
    let mut sandbox_policy = match requested {
        Some(pol) => pol,
        None => policy::from_sandbox_policy(
            &server.config.sandbox.default_policy,
            &policy::Context {
                cwd: &cwd,
                tmpdir: child_env.get("TMPDIR").map(String::as_str),
            },
        )
        .map_err(|e| RpcError::internal(format!("server default policy: {e}")))?,
    };
    if p.enforce_managed_network == Some(true) && sandbox_policy.network {
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
    prepare::bound_policy(&mut sandbox_policy, &server.config.sandbox, false)?;
    let linked = outside_links(server, &mut sandbox_policy).await;
    if !linked.unsettled.is_empty() && !server.config.sandbox.allow_degraded {
        // No reliable view of these roots: a hard link to an outside file may be anywhere.
        let roots: Vec<String> = linked
            .unsettled
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        return Err(prepare::unenforceable(
            &sandbox_policy,
            &[format!(
                "a settled view of {} for the hard-link census (directories there kept changing while it walked them, without inotify watches; stop what renames them and retry, or start the server with --no-protect-hard-links)",
                roots.join(", ")
            )],
        ));
    }
    if !linked.unsettled.is_empty() {
        sandbox_policy.notes.push(
            "the hard-link census could not get a settled view of a writable root (allowed by --allow-degraded): hard links to outside files there may be writable".into(),
        );
    }
    let prepared = prepare::prepare(
        &sandbox_policy,
        server.host_support,
        &server.config.sandbox,
        &server.seccomp,
        server.is_root,
        &linked.paths,
        &linked.dirs,
    )?;
    if p.argv.iter().any(|a| a.contains('\0')) {
        return Err(RpcError::invalid_params(
            "invalid params: argv: contains a NUL byte",
        ));
    }
    let mut argv: Vec<Vec<u8>> = p.argv.iter().map(|a| a.as_bytes().to_vec()).collect();
    if let Some(arg0) = &p.arg0 {
        if arg0.contains('\0') {
            return Err(RpcError::invalid_params(
                "invalid params: arg0: contains a NUL byte",
            ));
        }
        argv[0] = arg0.as_bytes().to_vec();
    }
    let program_name = p.argv[0].clone();
    match std::fs::metadata(&cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(RpcError::internal(format!(
                "failed to spawn `{program_name}`: cwd {} is not a directory",
                cwd.display()
            )));
        }
        Err(e) => {
            return Err(RpcError::internal(format!(
                "failed to spawn `{program_name}`: cwd {}: {e}",
                cwd.display()
            )));
        }
    }
    let program = resolve_program(
        &program_name,
        child_env.get("PATH").map(String::as_str),
        &cwd,
    )
    .map_err(|e| RpcError::internal(format!("failed to spawn `{program_name}`: {e}")))?;
    let size = p.size.map(|s| (s.rows, s.cols)).unwrap_or((24, 80));
    // The mount namespace: joined when an identical one exists (then no mounts travel).
    let mut capture = None;
    let mut namespace = SpawnNamespace::Build;
    if !prepared.mounts.is_empty() {
        let carve_outs = prepared
            .mounts
            .len()
            .saturating_sub(linked.paths.len() + linked.dirs.len());
        match server.namespaces.plan(
            &prepared.mounts,
            prepared.userns,
            carve_outs,
            linked.version,
        ) {
            NamespacePlan::Join(ns) => namespace = SpawnNamespace::Join(ns),
            NamespacePlan::Build { capture: Some(c) } => {
                namespace = SpawnNamespace::BuildAndCapture;
                capture = Some(c);
            }
            NamespacePlan::Build { capture: None } => {}
        }
    }
    let mounts = match namespace {
        SpawnNamespace::Join(_) => Vec::new(),
        _ => prepared.mounts,
    };
    let has_notify_socket = !prepared.seccomp.is_empty();
    let mut spec = SpawnSpec {
        request: KeeperRequest {
            program: program.as_os_str().as_bytes().to_vec(),
            argv,
            envp,
            cwd: cwd.as_os_str().as_bytes().to_vec(),
            tty: p.tty,
            seccomp: prepared.seccomp,
            has_ruleset: prepared.ruleset.is_some(),
            has_port_guard: prepared.port_guard.is_some(),
            no_new_privs: prepared.no_new_privs,
            drop_caps: prepared.drop_caps,
            no_core: prepared.no_core,
            mounts,
            userns: prepared.userns,
            rlimits: rlimit_entries(&limits, tree),
            ignore_sigxfsz: limits.max_file_size_bytes.is_some(),
            has_cgroup: false,
            namespace: Default::default(),
            has_notify_socket,
        },
        tty: p.tty.then_some(size),
        pipe_stdin: p.pipe_stdin && !p.tty,
        ruleset: prepared.ruleset,
        port_guard: prepared.port_guard,
        cgroup_procs: None,
        namespace,
    };
    let cgroup = match &server.cgroup {
        Some(root) => {
            let group = root
                .create(limits.memory_bytes, limits.max_processes)
                .map_err(|e| RpcError::internal(format!("creating the process cgroup: {e}")))?;
            spec.cgroup_procs = Some(
                group
                    .procs()
                    .map_err(|e| RpcError::internal(format!("opening the process cgroup: {e}")))?,
            );
            spec.request.has_cgroup = true;
            Some(group)
        }
        None => None,
    };

    if !session.processes.reserve(&p.process_id) {
        return Err(RpcError::invalid_request(format!(
            "process {} already exists",
            p.process_id
        )));
    }
    let started = Instant::now();
    let mut spawned = match server.spawner.spawn(spec).await {
        Ok(s) => s,
        Err(e) => {
            session.processes.unreserve(&p.process_id);
            return Err(spawn_error(&program_name, &cwd, e));
        }
    };
    if let Some(c) = capture {
        server
            .namespaces
            .adopt(c, std::mem::take(&mut spawned.captured));
    }
    let process = Arc::new(
        Process::new(
            p.process_id.clone(),
            spawned.pid,
            spawned.keeper,
            spawned.pty,
            spawned.stdin,
            server.config.retain_output_bytes,
            prepared.confined,
        )
        .with_cgroup(cgroup),
    );
    // The evidence sources watching this process (issue 16).
    let mut refusal_note = None;
    if has_notify_socket {
        let watched = match spawned.listener {
            Some(listener) => crate::process::refusals::watch(process.clone(), listener).is_ok(),
            None => false,
        };
        if watched {
            process.state().denials.add_source(DenialSource::Seccomp);
        } else {
            refusal_note = Some(
                "the syscalls the seccomp filter refuses are not listed in `denials`: no \
                 seccomp listener could be installed (stockade runs under an outer seccomp \
                 notifier, or the kernel lacks user notification); the plain filter refuses \
                 the same calls"
                    .to_string(),
            );
        }
    }
    session.processes.insert(process.clone());
    let (gate_tx, gate_rx) = oneshot::channel();
    let pump = Pump {
        process: process.clone(),
        outputs: spawned.outputs,
        status: spawned.status,
        sink: session.sink.clone(),
        gate: gate_rx,
        table: Arc::downgrade(&session.processes),
        config: PumpConfig {
            close_grace: server.config.close_grace,
            retain_exited: server.config.retain_exited,
            wall_time: limits.wall_time_ms.map(Duration::from_millis),
            max_output_bytes: limits.max_output_bytes,
        },
        started,
    };
    tokio::spawn(pump.run());
    let mut report = prepared.report;
    report["limits"] = limits_report(&limits, tree);
    if let (Some(note), Some(notes)) = (refusal_note, report["notes"].as_array_mut()) {
        notes.push(Value::String(note));
    }
    if !limit_degradations.is_empty() {
        if let Some(d) = report["degradations"].as_array_mut() {
            d.extend(limit_degradations.into_iter().map(Value::String));
        }
        report["enforcement"] = json!("degraded");
    }
    let result = StartResult {
        process_id: p.process_id,
        sandbox_type: if prepared.confined {
            SANDBOX_TYPE_CONFINED
        } else {
            SANDBOX_TYPE_NONE
        },
        pid: spawned.pid,
        sandbox: report,
    };
    let value = serde_json::to_value(result).map_err(|e| RpcError::internal(e.to_string()))?;
    Ok((value, gate_tx))
}

/// Which limits the process's cgroup enforces for the whole tree.
#[derive(Debug, Clone, Copy, Default)]
struct TreeLimits {
    memory: bool,
    pids: bool,
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
fn limits_report(l: &Limits, tree: TreeLimits) -> Value {
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
    let mut m = serde_json::Map::new();
    for (name, v) in l.fields() {
        if let Some(v) = v {
            m.insert(
                name.to_string(),
                json!({"value": v, "mechanism": mechanism(name)}),
            );
        }
    }
    Value::Object(m)
}

/// Upper bound on `waitMs` (keeps deadline arithmetic far from overflow).
const MAX_WAIT: Duration = Duration::from_secs(3600);

async fn read(session: &Session, params: Value) -> Result<Value, RpcError> {
    let p: ReadParams = parse_params(params)?;
    let wait = Duration::from_millis(p.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    let after = p.after_seq.unwrap_or(0);
    let result = match session.processes.get(&p.process_id) {
        Lookup::Unknown => {
            return Err(RpcError::invalid_request(format!(
                "unknown process id {}",
                p.process_id
            )));
        }
        Lookup::Starting => json!({"chunks": [], "nextSeq": 1, "exited": false, "exitCode": null,
            "closed": false, "failure": null, "sandboxDenied": false}),
        Lookup::Live(proc_) => {
            let r = proc_.read(after, p.max_bytes, wait).await;
            serde_json::to_value(r).map_err(|e| RpcError::internal(e.to_string()))?
        }
    };
    Ok(result)
}

fn status(s: WriteStatus) -> Value {
    json!({ "status": s })
}

async fn write(session: &Session, params: Value) -> Result<Value, RpcError> {
    let p: WriteParams = parse_params(params)?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(p.chunk.as_bytes())
        .map_err(|e| {
            RpcError::invalid_params(format!("invalid params: chunk: invalid base64: {e}"))
        })?;
    Ok(match session.processes.get(&p.process_id) {
        Lookup::Unknown => status(WriteStatus::UnknownProcess),
        Lookup::Starting => status(WriteStatus::Starting),
        Lookup::Live(proc_) => status(proc_.write(&data, p.write_id.as_deref()).await),
    })
}

async fn close_stdin(session: &Session, params: Value) -> Result<Value, RpcError> {
    let p: ProcessRef = parse_params(params)?;
    Ok(match session.processes.get(&p.process_id) {
        Lookup::Unknown => status(WriteStatus::UnknownProcess),
        Lookup::Starting => status(WriteStatus::Starting),
        Lookup::Live(proc_) => status(proc_.close_stdin().await),
    })
}

fn terminate(session: &Session, params: Value) -> Result<Value, RpcError> {
    let p: ProcessRef = parse_params(params)?;
    let running = match session.processes.get(&p.process_id) {
        Lookup::Live(proc_) => proc_.terminate(),
        _ => false,
    };
    Ok(json!({ "running": running }))
}

fn signal(session: &Session, params: Value) -> Result<Value, RpcError> {
    let p: SignalParams = parse_params(params)?;
    let proc_ = live(session, &p.process_id)?;
    Ok(json!({ "delivered": proc_.signal(p.signal.number()) }))
}

fn resize(session: &Session, params: Value) -> Result<Value, RpcError> {
    let p: ResizeParams = parse_params(params)?;
    let proc_ = live(session, &p.process_id)?;
    match proc_.resize(p.rows, p.cols) {
        None => Err(RpcError::invalid_params(format!(
            "process {} has no terminal (started without tty)",
            p.process_id
        ))),
        Some(Err(e)) => Err(RpcError::internal(format!("resize failed: {e}"))),
        Some(Ok(())) => Ok(json!({})),
    }
}
