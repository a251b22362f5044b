//! Method routing and handlers. Handlers validate params into protocol types, call into the
//! process (and later fs) modules, and map failures to the exact errors of PROTOCOL.md.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::Server;
use super::session::Session;
use crate::env::EnvPolicy;
use crate::fs::FsAnswer;
use crate::paths::parse_wire_path;
use crate::process::service::StartRequest;
use crate::process::table::{Lookup, Process};
use crate::protocol::envelope::parse_params;
use crate::protocol::process::{
    ProcessRef, ReadParams, ResizeParams, SignalParams, StartParams, StartResult, WriteParams,
    WriteStatus,
};
use crate::protocol::sandbox::{SANDBOX_TYPE_CONFINED, SANDBOX_TYPE_NONE};
use crate::protocol::{ErrorCode, RpcError};

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

/// `process/start`: params → [`StartRequest`] → [`ProcessService::start`] → result. The
/// gate opens once the response is queued, so no notification overtakes it.
async fn start(server: &Arc<Server>, session: &Arc<Session>, params: Value) -> Reply {
    let started = match start_request(params) {
        Ok(req) => server
            .processes
            .start(&session.processes, session.sink.clone(), req)
            .await
            .map_err(RpcError::from),
        Err(e) => Err(e),
    };
    match started {
        Ok(started) => {
            let result = StartResult {
                process_id: started.process.id.clone(),
                sandbox_type: if started.confined {
                    SANDBOX_TYPE_CONFINED
                } else {
                    SANDBOX_TYPE_NONE
                },
                pid: started.process.pid,
                sandbox: started.report,
            };
            Reply {
                result: serde_json::to_value(result).map_err(|e| RpcError::internal(e.to_string())),
                after_send: Some(started.gate),
                raw_result: None,
            }
        }
        Err(e) => Err(e).into(),
    }
}

/// Decodes and checks the wire shapes of `process/start` (-32602).
fn start_request(params: Value) -> Result<StartRequest, RpcError> {
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
    Ok(StartRequest {
        process_id: p.process_id,
        argv: p.argv,
        arg0: p.arg0,
        cwd,
        env: p.env,
        env_policy,
        sandbox_policy: p.sandbox_policy,
        sandbox: p.sandbox,
        limits: p.limits,
        tty: p.tty,
        pipe_stdin: p.pipe_stdin,
        size: p.size,
        enforce_managed_network: p.enforce_managed_network == Some(true),
    })
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
