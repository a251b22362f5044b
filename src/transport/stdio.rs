//! The stdio transport: newline-delimited JSON on stdin/stdout.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::Frame;
use super::lines::LineDecoder;
use crate::server::Server;
use crate::server::connection::{self, ConnKind, JsonRpcMode, encode_outgoing};

/// Serves one connection over stdin/stdout; returns when stdin reaches EOF (or the client
/// broke the protocol), after the session's processes were killed.
pub async fn run(server: Arc<Server>) {
    let (frame_tx, frame_rx) = mpsc::channel::<Frame>(16);
    let (out_tx, mut out_rx) = mpsc::channel(server.config.outbox_capacity);
    let mode: JsonRpcMode = Default::default();
    let max = server.config.max_message_bytes;
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut decoder = LineDecoder::new(max);
        let mut buf = vec![0u8; 64 * 1024];
        let mut frames = Vec::new();
        loop {
            let n = match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    decoder.finish(&mut frames);
                    break;
                }
                Ok(n) => n,
            };
            decoder.push(&buf[..n], &mut frames);
            for f in frames.drain(..) {
                if frame_tx.send(f).await.is_err() {
                    return;
                }
            }
        }
        for f in frames.drain(..) {
            let _ = frame_tx.send(f).await;
        }
    });
    let writer_mode = mode.clone();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(msg) = out_rx.recv().await {
            let mut line = encode_outgoing(msg, &writer_mode);
            line.push('\n');
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    connection::serve(server, frame_rx, out_tx, mode, ConnKind::Stdio).await;
    // Let queued responses drain (bounded) before the caller exits.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
}
