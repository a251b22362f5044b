//! Issue 20, item 6 (health part): `GET /healthz` on the WebSocket listener answers `ok`
//! without the token (container probes carry none) and says nothing else; everything else on
//! that port still needs the token.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::Client;

/// Sends `request` raw to the server's port and returns the whole answer.
fn raw(url: &str, request: &str) -> String {
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn healthz_answers_ok_without_the_token_and_nothing_else() {
    let token = std::env::temp_dir().join(common::marker("healthtoken"));
    std::fs::write(&token, "s3cret-token-for-health").unwrap();
    let (mut server, url) =
        Client::spawn_ws_server(&["--ws-token-file", token.to_str().unwrap()]).await;
    let answer = raw(&url, "GET /healthz HTTP/1.1\r\nHost: probe\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert_eq!(body, "ok\n", "{answer}");
    assert!(
        !answer.contains("stockade"),
        "the answer names the server: {answer}"
    );
    // Other paths are no health check: without an upgrade and the token they get nothing.
    let other = raw(&url, "GET /status HTTP/1.1\r\nHost: probe\r\n\r\n");
    assert!(!other.contains("200 OK"), "{other}");
    // The WebSocket still needs the token.
    assert!(Client::ws_connect(&url, &[]).await.is_err());
    let bearer = "Bearer s3cret-token-for-health";
    let mut c = Client::ws_connect(&url, &[("Authorization", bearer)])
        .await
        .unwrap();
    c.initialize().await;
    let _ = server.kill().await;
    let _ = std::fs::remove_file(&token);
}
