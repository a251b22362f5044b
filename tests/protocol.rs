//! Envelope, handshake, framing and transport-security tests over the real binary.

mod common;

use common::*;
use serde_json::{Value, json};

both_transports!(handshake_order_errors, |t| async move {
    let c = Client::uninitialized(t, &[]).await;
    let e = c
        .call(
            "process/start",
            json!({"processId":"a","argv":["true"],"cwd":"/","env":{},"tty":false}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32600);
    assert_eq!(
        e["message"],
        "client must call initialize before using exec methods"
    );
    let e = c
        .call("fs/readFile", json!({"path":"/etc/hostname"}))
        .await
        .unwrap_err();
    assert_eq!(
        e["message"],
        "client must call initialize before using filesystem methods"
    );
    let r = c.ok("initialize", json!({"clientName":"t"})).await;
    assert!(r["sessionId"].as_str().unwrap().len() == 36);
    assert_eq!(r["environmentInfo"]["platformOs"], "linux");
    assert!(
        r["environmentInfo"]["cwd"]
            .as_str()
            .unwrap()
            .starts_with("file:///")
    );
    assert!(r["stockade"]["sandboxSupport"]["landlockAbi"].is_i64());
    let e = c
        .call("process/read", json!({"processId":"a"}))
        .await
        .unwrap_err();
    assert_eq!(
        e["message"],
        "client must send initialized before using exec methods"
    );
    let e = c
        .call("fs/readFile", json!({"path":"/x"}))
        .await
        .unwrap_err();
    assert_eq!(
        e["message"],
        "client must send initialized before using filesystem methods"
    );
    let e = c
        .call("initialize", json!({"clientName":"t"}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32600);
    assert_eq!(
        e["message"],
        "initialize may only be sent once per connection"
    );
    c.send_raw(r#"{"method":"initialized"}"#);
    let info = c.ok("environment/info", Value::Null).await;
    assert_eq!(info, r["environmentInfo"]);
    let info = c.ok("environment/info", json!({})).await;
    assert_eq!(info["platformOs"], "linux");
    // Unknown methods: -32601, and the connection keeps working.
    let e = c.call("nope/nope", json!({})).await.unwrap_err();
    assert_eq!(e["code"], -32601);
    let e = c.call("fs/watchMissing", json!({})).await.unwrap_err();
    assert_eq!(e["code"], -32601);
    assert_eq!(
        c.ok("environment/info", Value::Null).await["platformOs"],
        "linux"
    );
});

both_transports!(ids_are_echoed_exactly, |t| async move {
    let c = Client::new(t, &[]).await;
    for id in [json!("abc"), json!(42), json!("007"), json!(-5)] {
        let msg = json!({"id": id, "method": "environment/info"});
        c.send_raw(&msg.to_string());
        let r = c.response(&id).await;
        assert_eq!(r["id"], id);
        assert!(
            r.get("jsonrpc").is_none(),
            "no jsonrpc unless the client sent it: {r}"
        );
    }
});

both_transports!(jsonrpc_field_is_mirrored, |t| async move {
    let c = Client::uninitialized(t, &[]).await;
    c.send_raw(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"clientName":"t"}}"#);
    let r = c.response(&json!(1)).await;
    assert_eq!(r["jsonrpc"], "2.0");
    c.send_raw(r#"{"jsonrpc":"2.0","method":"initialized"}"#);
    // Later messages without the field still get it back.
    let r = c.call_raw("nope", json!({})).await;
    assert_eq!(r["jsonrpc"], "2.0");
    let c2 = Client::new(t, &[]).await;
    let r = c2.call_raw("environment/info", Value::Null).await;
    assert!(r.get("jsonrpc").is_none());
});

both_transports!(
    malformed_and_oversized_messages_keep_the_connection,
    |t| async move {
        let c = Client::new(t, &["--max-message-bytes", "1000"]).await;
        c.send_raw("{this is not json");
        let r = c.response(&json!(-1)).await;
        assert_eq!(r["error"]["code"], -32600);
        let big = format!(
            r#"{{"id":99,"method":"environment/info","params":{{"pad":"{}"}}}}"#,
            "x".repeat(5000)
        );
        c.send_raw(&big);
        let r = c.response(&json!(-1)).await;
        assert_eq!(r["error"]["code"], -32600);
        assert!(
            r["error"]["message"].as_str().unwrap().contains("1000"),
            "{r}"
        );
        // The oversized request itself got no reply; the next one works.
        assert_eq!(
            c.ok("environment/info", Value::Null).await["platformOs"],
            "linux"
        );
        assert!(c.unclaimed_responses().iter().all(|r| r["id"] != 99));
        // Valid JSON that is not a request.
        c.send_raw("[1,2,3]");
        assert_eq!(c.response(&json!(-1)).await["error"]["code"], -32600);
        c.send_raw(r#"{"id":"m","method":7}"#);
        assert_eq!(c.response(&json!("m")).await["error"]["code"], -32600);
        // Wrong param types and missing fields name the field.
        let e = c
            .call(
                "process/start",
                json!({"processId":"a","cwd":"/","env":{},"tty":false}),
            )
            .await
            .unwrap_err();
        assert_eq!(e["code"], -32602);
        assert!(e["message"].as_str().unwrap().contains("argv"), "{e}");
        let e = c
            .call(
                "process/start",
                json!({"processId":"a","argv":"ls","cwd":"/","env":{},"tty":false}),
            )
            .await
            .unwrap_err();
        assert_eq!(e["code"], -32602);
        assert!(e["message"].as_str().unwrap().contains("argv"), "{e}");
        let e = c.call("process/read", Value::Null).await.unwrap_err();
        assert_eq!(e["code"], -32602);
        assert_eq!(
            c.ok("environment/info", Value::Null).await["platformOs"],
            "linux"
        );
    }
);

both_transports!(client_notification_closes_connection, |t| async move {
    let c = Client::new(t, &[]).await;
    c.send_raw(r#"{"method":"something/else","params":{}}"#);
    c.wait_disconnected().await;
});

both_transports!(client_response_closes_connection, |t| async move {
    let c = Client::new(t, &[]).await;
    c.send_raw(r#"{"id":5,"result":{}}"#);
    c.wait_disconnected().await;
});

#[tokio::test]
async fn ws_refuses_origin_unless_allowed() {
    let (_server, url) = Client::spawn_ws_server(&["--allow-origin", "https://ok.example"]).await;
    let e = Client::ws_connect(&url, &[("Origin", "https://evil.example")])
        .await
        .err()
        .unwrap();
    assert!(e.contains("403"), "{e}");
    let c = Client::ws_connect(&url, &[("Origin", "https://ok.example")])
        .await
        .unwrap();
    let mut c = c;
    c.initialize().await;
    let c2 = Client::ws_connect(&url, &[]).await;
    assert!(c2.is_ok(), "no Origin header is allowed");
}

#[tokio::test]
async fn ws_bearer_token() {
    let dir = std::env::temp_dir().join(marker("tok"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "s3cret-token\n").unwrap();
    let (_server, url) =
        Client::spawn_ws_server(&["--ws-token-file", file.to_str().unwrap()]).await;
    let e = Client::ws_connect(&url, &[]).await.err().unwrap();
    assert!(e.contains("401"), "{e}");
    let e = Client::ws_connect(&url, &[("Authorization", "Bearer wrong")])
        .await
        .err()
        .unwrap();
    assert!(e.contains("401"), "{e}");
    let e = Client::ws_connect(&url, &[("Authorization", "Bearer s3cret-toke")])
        .await
        .err()
        .unwrap();
    assert!(e.contains("401"), "{e}");
    let mut c = Client::ws_connect(&url, &[("Authorization", "Bearer s3cret-token")])
        .await
        .unwrap();
    c.initialize().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn listen_address_rules() {
    let out = std::process::Command::new(bin())
        .args(["serve", "--listen", "ws://0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ws-token-file"), "{err}");
    let out = std::process::Command::new(bin())
        .args(["serve", "--listen", "ws://localhost:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("IP:PORT"));
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn ws_binary_frames_and_ping_are_accepted() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (_server, url) = Client::spawn_ws_server(&[]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    ws.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
    ws.send(Message::Binary(
        br#"{"id":1,"method":"initialize","params":{"clientName":"b"}}"#
            .to_vec()
            .into(),
    ))
    .await
    .unwrap();
    let mut got_pong = false;
    loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"hi");
                got_pong = true;
            }
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(v["id"], 1);
                assert!(v["result"]["sessionId"].is_string());
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got_pong);
}
