//! The stdio transport: newline-delimited JSON on stdin/stdout.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::Frame;
use super::lines::LineDecoder;
use crate::fdio::nonblocking_std;
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
        // Like stdout: direct non-blocking reads when stdin is a pipe or socket.
        let direct = nonblocking_std(std::io::stdin());
        let mut stdin = tokio::io::stdin();
        let mut decoder = LineDecoder::new(max);
        let mut buf = vec![0u8; 64 * 1024];
        let mut frames = Vec::new();
        loop {
            let read = match &direct {
                Some(pipe) => pipe.read(&mut buf).await,
                None => stdin.read(&mut buf).await,
            };
            let n = match read {
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
        // Non-blocking writes straight to the pipe when possible (tokio's stdout goes through
        // the blocking pool, one copy and one thread hop per write).
        let direct = nonblocking_std(std::io::stdout());
        if let Some(pipe) = &direct {
            // Output notifications are large when a process streams: a deeper pipe means
            // fewer writes and fewer wakeups of the client (best effort).
            pipe.enlarge(1 << 20);
        }
        let mut stdout = tokio::io::stdout();
        while let Some(msg) = out_rx.recv().await {
            let mut batch = encode_outgoing(msg, &writer_mode);
            batch.push('\n');
            // Coalesce what is already queued into one write.
            while batch.len() < 1 << 20 {
                match out_rx.try_recv() {
                    Ok(m) => {
                        batch.push_str(&encode_outgoing(m, &writer_mode));
                        batch.push('\n');
                    }
                    Err(_) => break,
                }
            }
            let ok = match &direct {
                Some(pipe) => pipe.write_all(batch.as_bytes()).await.is_ok(),
                None => {
                    stdout.write_all(batch.as_bytes()).await.is_ok() && stdout.flush().await.is_ok()
                }
            };
            if !ok {
                break;
            }
        }
    });
    connection::serve(server, frame_rx, out_tx, mode, ConnKind::Stdio).await;
    // Let queued responses drain (bounded) before the caller exits.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
}
