//! One connection: decoding, the handshake state machine, and concurrent request handling.

use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::methods::{self, Reply};
use super::session::Session;
use super::{OutMessage, Outbox, Server};
use crate::protocol::RpcError;
use crate::protocol::envelope::{self, Incoming, error_response, response};
use crate::protocol::handshake::{InitializeParams, InitializeResult, StockadeInfo};

/// One unit a transport received: what a connection reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message's bytes (one line or one WebSocket message).
    Message(Vec<u8>),
    /// A message exceeded the size limit and was discarded whole.
    TooLarge,
}

/// Which transport a connection uses (decides what happens when it ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// stdin/stdout: EOF ends the session.
    Stdio,
    /// WebSocket: a drop detaches the session for the grace period.
    WebSocket,
}

/// Whether `"jsonrpc": "2.0"` is added to outgoing messages, decided by the first message.
pub type JsonRpcMode = Arc<OnceLock<bool>>;

/// Finishes an outgoing message, adding `"jsonrpc"` when the connection asked for it.
pub fn encode_outgoing(message: OutMessage, mode: &JsonRpcMode) -> String {
    let mut text = message.0;
    if mode.get().copied().unwrap_or(false) && text.starts_with('{') {
        // In place: a large message is not copied into a second buffer.
        let sep = if text.len() > 2 { "," } else { "" };
        text.insert_str(1, &format!("\"jsonrpc\":\"2.0\"{sep}"));
    }
    text
}

/// A response around a result that is already JSON text, reusing its buffer (it was
/// allocated with room for the envelope) so a large result is never copied.
fn raw_response(id: &Value, mut result: String) -> OutMessage {
    let head = format!("{{\"id\":{id},\"result\":");
    result.insert_str(0, &head);
    result.push('}');
    OutMessage(result)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handshake {
    New,
    Initializing,
    Ready,
}

fn handshake_error(state: Handshake, method: &str) -> Option<RpcError> {
    let family = if method.starts_with("fs/") {
        "filesystem"
    } else {
        "exec"
    };
    match state {
        Handshake::New => Some(RpcError::invalid_request(format!(
            "client must call initialize before using {family} methods"
        ))),
        Handshake::Initializing => Some(RpcError::invalid_request(format!(
            "client must send initialized before using {family} methods"
        ))),
        Handshake::Ready => None,
    }
}

/// Serves one connection until its frames end or it breaks the protocol. Returns the
/// session it created (if any), still attached.
pub async fn serve(
    server: Arc<Server>,
    mut frames: mpsc::Receiver<Frame>,
    outbox: Outbox,
    mode: JsonRpcMode,
    kind: ConnKind,
) {
    let mut state = Handshake::New;
    let mut session: Option<Arc<Session>> = None;
    let limit = server.config.max_message_bytes;
    while let Some(frame) = frames.recv().await {
        let bytes = match frame {
            Frame::TooLarge => {
                let e = RpcError::invalid_request(format!(
                    "message exceeds the maximum size of {limit} bytes"
                ));
                let _ = outbox.send(error_response(json!(-1), &e).into()).await;
                continue;
            }
            Frame::Message(b) => b,
        };
        let decoded = match envelope::decode(&bytes) {
            Ok(d) => d,
            Err(e) => {
                let e = RpcError::invalid_request(format!("invalid JSON: {e}"));
                let _ = outbox.send(error_response(json!(-1), &e).into()).await;
                continue;
            }
        };
        let _ = mode.set(decoded.jsonrpc);
        match decoded.message {
            Incoming::Request { id, method, params } => {
                if method == "initialize" {
                    let reply = if state != Handshake::New {
                        Err(RpcError::invalid_request(
                            "initialize may only be sent once per connection",
                        ))
                    } else {
                        initialize(&server, params, &outbox, kind).map(|(s, v)| {
                            session = Some(s);
                            state = Handshake::Initializing;
                            v
                        })
                    };
                    let msg = match reply {
                        Ok(v) => response(id, v),
                        Err(e) => error_response(id, &e),
                    };
                    let _ = outbox.send(msg.into()).await;
                    continue;
                }
                if !methods::is_known(&method) {
                    let e = RpcError::new(
                        crate::protocol::ErrorCode::MethodNotFound,
                        format!("method not found: {method}"),
                    );
                    let _ = outbox.send(error_response(id, &e).into()).await;
                    continue;
                }
                if let Some(e) = handshake_error(state, &method) {
                    let _ = outbox.send(error_response(id, &e).into()).await;
                    continue;
                }
                let Some(session) = session.clone() else {
                    continue;
                };
                let server = server.clone();
                let outbox = outbox.clone();
                tokio::spawn(async move {
                    let Reply {
                        result,
                        after_send,
                        raw_result,
                    } = methods::handle(&server, &session, &method, params).await;
                    let msg = match (raw_result, result) {
                        (Some(raw), _) => raw_response(&id, raw),
                        (None, Ok(v)) => response(id, v).into(),
                        (None, Err(e)) => error_response(id, &e).into(),
                    };
                    let _ = outbox.send(msg).await;
                    if let Some(gate) = after_send {
                        let _ = gate.send(());
                    }
                });
            }
            Incoming::Notification { method } => {
                if method == "initialized" {
                    if state == Handshake::Initializing {
                        state = Handshake::Ready;
                    }
                } else {
                    tracing::warn!(%method, "client sent an unexpected notification; closing");
                    break;
                }
            }
            Incoming::Response => {
                tracing::warn!("client sent a response object; closing");
                break;
            }
            Incoming::Invalid { id, reason } => {
                let e = RpcError::invalid_request(format!("invalid request: {reason}"));
                let _ = outbox
                    .send(error_response(id.unwrap_or(json!(-1)), &e).into())
                    .await;
            }
        }
    }
    if let Some(session) = session {
        match kind {
            ConnKind::Stdio => server.sessions.end(&session).await,
            ConnKind::WebSocket => server
                .sessions
                .detach(&session, server.config.session_grace),
        }
    }
}

fn initialize(
    server: &Arc<Server>,
    params: Value,
    outbox: &Outbox,
    kind: ConnKind,
) -> Result<(Arc<Session>, Value), RpcError> {
    let params: InitializeParams = if params.is_null() {
        InitializeParams::default()
    } else {
        crate::protocol::envelope::parse_params(params)?
    };
    let session = match params.resume_session_id.as_deref() {
        Some(id) if kind == ConnKind::WebSocket => server.sessions.resume(id, outbox.clone())?,
        Some(id) => {
            return Err(RpcError::invalid_request(format!(
                "unknown session id {id}"
            )));
        }
        None => server.sessions.create(outbox.clone())?,
    };
    let result = InitializeResult {
        session_id: session.id.clone(),
        environment_info: server.host.environment.clone(),
        stockade: StockadeInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            sandbox_support: server.host.sandbox_support.clone(),
        },
    };
    let value = serde_json::to_value(result).map_err(|e| RpcError::internal(e.to_string()))?;
    Ok((session, value))
}
