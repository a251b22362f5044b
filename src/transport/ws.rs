//! The WebSocket transport: one JSON message per WebSocket message, with Origin refusal and
//! optional bearer-token authentication checked during the upgrade.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::Frame;
use crate::server::Server;
use crate::server::connection::{self, ConnKind, JsonRpcMode, encode_outgoing};

/// Upgrade checks.
#[derive(Debug, Clone, Default)]
pub struct WsSecurity {
    /// Origins allowed to connect (`--allow-origin`); any other `Origin` header → 403.
    pub allowed_origins: Vec<String>,
    /// Required bearer token (`--ws-token-file`); missing or wrong → 401.
    pub token: Option<String>,
}

/// Compares two byte strings in time independent of their contents (`subtle`'s
/// constant-time equality; only the lengths, which are not secret enough to matter for a
/// random token, can end the comparison early).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

/// Why an upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An `Origin` header that is not allowed (HTTP 403).
    Origin,
    /// A missing or wrong bearer token (HTTP 401).
    Token,
}

impl Refusal {
    fn response(self) -> ErrorResponse {
        let (status, text) = match self {
            Refusal::Origin => (StatusCode::FORBIDDEN, "origin not allowed"),
            Refusal::Token => (StatusCode::UNAUTHORIZED, "missing or invalid bearer token"),
        };
        let mut r = ErrorResponse::new(Some(text.to_string()));
        *r.status_mut() = status;
        r
    }
}

/// Decides whether an upgrade request may proceed.
pub fn check_upgrade(sec: &WsSecurity, req: &Request) -> Result<(), Refusal> {
    if let Some(origin) = req.headers().get("origin") {
        let origin = origin.to_str().unwrap_or("");
        if !sec.allowed_origins.iter().any(|o| o == origin) {
            return Err(Refusal::Origin);
        }
    }
    if let Some(token) = &sec.token {
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
            return Err(Refusal::Token);
        }
    }
    Ok(())
}

/// Accepts connections forever.
pub async fn run(server: Arc<Server>, listener: TcpListener, sec: WsSecurity) {
    let sec = Arc::new(sec);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let server = server.clone();
        let sec = sec.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_socket(server, stream, peer, &sec).await {
                tracing::debug!(%peer, error = %e, "websocket connection ended");
            }
        });
    }
}

/// The request line a health check starts with (kubelet, podman and curl send it at once).
const HEALTH_REQUEST: &[u8] = b"GET /healthz ";

/// The request line a Prometheus scrape starts with (same length as [`HEALTH_REQUEST`]).
const METRICS_REQUEST: &[u8] = b"GET /metrics ";

/// The plain HTTP requests the WebSocket port answers besides the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlainRequest {
    /// `GET /healthz`.
    Health,
    /// `GET /metrics`.
    Metrics,
}

/// Reads the head of a plain HTTP request (bounded in size and time).
async fn read_request_head(stream: &mut TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    let read_all = async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), read_all).await;
    request
}

/// The request head as a `Request` with its headers (for [`check_upgrade`]); `None` when
/// it is not valid HTTP.
fn parse_head(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let target = lines.next()?.split(' ').nth(1)?;
    let mut builder = Request::builder().uri(target);
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        builder = builder.header(name.trim(), value.trim());
    }
    builder.body(()).ok()
}

/// Writes a complete HTTP/1.1 answer and closes the connection.
async fn answer(stream: &mut TcpStream, status: &str, content_type: &str, body: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}

/// Answers the plain HTTP requests of the WebSocket port. Returns true when the connection
/// was one (then it is done); anything else, the WebSocket upgrade included, is left
/// untouched in the socket.
///
/// - `GET /healthz`: `200 ok`, without authentication (container probes carry no token) and
///   without any information beyond "the server accepts connections".
/// - `GET /metrics`: the Prometheus text format, under the same checks as the WebSocket
///   upgrade (the bearer token when the server has one, the Origin list): the counters
///   tell how busy the server is and what its processes were refused, which is for its
///   operator, so whoever may not drive the server may not read them either.
async fn answer_plain_request(server: &Server, stream: &mut TcpStream, sec: &WsSecurity) -> bool {
    let mut head = [0u8; HEALTH_REQUEST.len()];
    // One peek: waits for the first bytes, as the handshake would.
    let kind = match stream.peek(&mut head).await {
        Ok(n) if n == head.len() && head == HEALTH_REQUEST => PlainRequest::Health,
        Ok(n) if n == head.len() && head == METRICS_REQUEST => PlainRequest::Metrics,
        _ => return false,
    };
    let request = read_request_head(stream).await;
    match kind {
        PlainRequest::Health => answer(stream, "200 OK", "text/plain", b"ok\n").await,
        PlainRequest::Metrics => match parse_head(&request).map(|r| check_upgrade(sec, &r)) {
            Some(Ok(())) => {
                let text = crate::metrics::render(server.sessions.census());
                answer(
                    stream,
                    "200 OK",
                    crate::metrics::CONTENT_TYPE,
                    text.as_bytes(),
                )
                .await
            }
            Some(Err(Refusal::Token)) => {
                answer(
                    stream,
                    "401 Unauthorized",
                    "text/plain",
                    b"missing or invalid bearer token\n",
                )
                .await
            }
            Some(Err(Refusal::Origin)) => {
                answer(
                    stream,
                    "403 Forbidden",
                    "text/plain",
                    b"origin not allowed\n",
                )
                .await
            }
            None => answer(stream, "400 Bad Request", "text/plain", b"bad request\n").await,
        },
    }
    true
}

async fn serve_socket(
    server: Arc<Server>,
    mut stream: TcpStream,
    peer: SocketAddr,
    sec: &WsSecurity,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let _ = stream.set_nodelay(true);
    if answer_plain_request(&server, &mut stream, sec).await {
        return Ok(());
    }
    let limit = server.config.max_message_bytes;
    // tungstenite buffers a whole message before we can look at it, so it gets a hard cap
    // above the protocol limit: messages between the two are refused with an error and the
    // connection survives; beyond the cap the connection is closed (bounded memory).
    let hard_cap = limit.saturating_mul(2).max(limit.saturating_add(1 << 20));
    let config = WebSocketConfig::default()
        .max_message_size(Some(hard_cap))
        .max_frame_size(Some(hard_cap));
    #[allow(clippy::result_large_err)] // the callback signature is tungstenite's
    let callback = |req: &Request, resp: Response| match check_upgrade(sec, req) {
        Ok(()) => Ok(resp),
        Err(refusal) => Err(refusal.response()),
    };
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await?;
    tracing::debug!(%peer, "websocket connected");
    let (mut sink, mut source) = ws.split();
    let (frame_tx, frame_rx) = mpsc::channel::<Frame>(16);
    let (out_tx, mut out_rx) = mpsc::channel(server.config.outbox_capacity);
    let mode: JsonRpcMode = Default::default();
    let writer_mode = mode.clone();
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let text = encode_outgoing(msg, &writer_mode);
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let reader = tokio::spawn(async move {
        while let Some(msg) = source.next().await {
            let bytes = match msg {
                Ok(Message::Text(t)) => t.as_bytes().to_vec(),
                Ok(Message::Binary(b)) => b.to_vec(),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let frame = if bytes.len() > limit {
                Frame::TooLarge
            } else {
                Frame::Message(bytes)
            };
            if frame_tx.send(frame).await.is_err() {
                break;
            }
        }
    });
    connection::serve(server, frame_rx, out_tx, mode, ConnKind::WebSocket).await;
    reader.abort();
    writer.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().uri("/");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokex"));
        assert!(!constant_time_eq(b"secret-token", b"secret-toke"));
        assert!(!constant_time_eq(b"secret-toke", b"secret-token"));
        assert!(!constant_time_eq(b"", b"x"));
        // Lengths that agree modulo 256 must not compare equal.
        assert!(!constant_time_eq(&[0u8; 256], &[]));
    }

    #[test]
    fn upgrade_needs_the_exact_bearer_token() {
        let sec = WsSecurity {
            allowed_origins: vec![],
            token: Some("s3cret".into()),
        };
        assert_eq!(check_upgrade(&sec, &request(&[])), Err(Refusal::Token));
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic s3cret",
            "s3cret",
            "Bearer ",
        ] {
            assert_eq!(
                check_upgrade(&sec, &request(&[("authorization", wrong)])),
                Err(Refusal::Token),
                "{wrong}"
            );
        }
        assert_eq!(
            check_upgrade(&sec, &request(&[("authorization", "Bearer s3cret")])),
            Ok(())
        );
        assert_eq!(
            check_upgrade(
                &sec,
                &request(&[
                    ("authorization", "Bearer s3cret"),
                    ("origin", "http://evil")
                ])
            ),
            Err(Refusal::Origin)
        );
    }
}
