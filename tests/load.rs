//! Load and fault tests (bounded in count and time, loopback only).

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_is_back_pressured_and_others_keep_working() {
    let (server, url) = Client::spawn_ws_server(&[]).await;
    let pid = server.id().unwrap();
    // A raw client that sends requests and then never reads.
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    ws.send(Message::text(
        r#"{"id":1,"method":"initialize","params":{"clientName":"stalled"}}"#,
    ))
    .await
    .unwrap();
    ws.send(Message::text(r#"{"method":"initialized"}"#))
        .await
        .unwrap();
    // 1 GB (the odd count marks the process in /proc).
    ws.send(Message::text(r#"{"id":2,"method":"process/start","params":{"processId":"flood","argv":["head","-c","1000000007","/dev/zero"],"cwd":"/tmp","env":{"PATH":"/usr/bin:/bin"},"tty":false}}"#)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The child is back-pressured: alive, and not writing (its pipe is full).
    let flood = pids_with_marker("1000000007");
    assert_eq!(flood.len(), 1, "the flooding child: {flood:?}");
    let written = |pid: i32| -> u64 {
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("wchar: "))
            .unwrap()
            .parse()
            .unwrap()
    };
    let w1 = written(flood[0]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let w2 = written(flood[0]);
    assert_eq!(w1, w2, "the child kept writing while nobody read");
    assert!(w1 < 200_000_000, "{w1} bytes written: no back-pressure");
    let rss = rss_kb(pid);
    assert!(
        rss < 96 * 1024,
        "server RSS {rss} kB while a client does not read"
    );
    // Another connection is served normally meanwhile.
    let mut other = Client::ws_connect(&url, &[]).await.unwrap();
    other.initialize().await;
    let ev = other.run("quick", &["echo", "still here"]).await;
    assert_eq!(ev.stdout, b"still here\n");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss2 = rss_kb(pid);
    assert!(
        rss2 < 96 * 1024,
        "server RSS {rss2} kB after 5 s of a stalled client"
    );
    drop(ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_across_four_connections() {
    let (_server, url) = Client::spawn_ws_server(&[]).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut c = Client::ws_connect(&url, &[]).await.unwrap();
        c.initialize().await;
        clients.push(c);
    }
    let work = clients.iter().enumerate().flat_map(|(ci, c)| {
        (0..50).map(move |i| async move {
            let id = format!("c{ci}-{i}");
            let n = 1000 + i * 37;
            c.start_with(&id, &["head", "-c", &n.to_string(), "/dev/zero"], json!({}))
                .await
                .unwrap();
            let ev = c.closed(&id).await;
            assert_eq!(ev.stdout.len(), n, "{id}: every byte arrives");
            assert_eq!(ev.exited.unwrap()["exitCode"], 0);
        })
    });
    futures_util::future::join_all(work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_in_children() {
    let c = Client::new(Transport::Stdio, &["--close-grace-ms", "300"]).await;
    // A child that forks 500 processes: terminate leaves none alive.
    let m = format!("8000{}.5", std::process::id() % 1000);
    c.start(
        "forker",
        &[
            "sh",
            "-c",
            &format!(
                "i=0; while [ $i -lt 500 ]; do sleep {m} & i=$((i+1)); done; echo forked; wait"
            ),
        ],
    )
    .await;
    c.wait_output("forker", "forked").await;
    let before = pids_with_marker(&m).len();
    assert!(before >= 400, "only {before} children started");
    c.ok("process/terminate", json!({"processId": "forker"}))
        .await;
    c.closed("forker").await;
    assert!(wait_all_dead(&pids_with_marker(&m)).await.is_empty());
    // A child that closes its stdout early and keeps running: exited is reported when it
    // exits, closed follows.
    let ev = c
        .run(
            "early",
            &["sh", "-c", "exec 1>&-; sleep 0.3; echo done >&2"],
        )
        .await;
    assert_eq!(ev.stderr, b"done\n");
    assert_eq!(ev.exited.unwrap()["exitCode"], 0);
    // A child that ignores SIGTERM: terminate (SIGKILL) still ends it.
    c.start(
        "stubborn",
        &[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    )
    .await;
    c.wait_output("stubborn", "ready").await;
    let r = c
        .ok(
            "process/signal",
            json!({"processId": "stubborn", "signal": "terminate"}),
        )
        .await;
    assert_eq!(r["delivered"], true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!c.events("stubborn").closed, "SIGTERM was ignored");
    c.ok("process/terminate", json!({"processId": "stubborn"}))
        .await;
    assert_eq!(c.closed("stubborn").await.exited.unwrap()["exitCode"], 137);
    // The cwd is deleted while the process runs.
    let dir = std::env::temp_dir().join(marker("gone"));
    std::fs::create_dir_all(&dir).unwrap();
    c.start_with(
        "cwd",
        &["sh", "-c", "echo start; sleep 0.5; pwd; echo end"],
        json!({"cwd": dir.to_str().unwrap()}),
    )
    .await
    .unwrap();
    c.wait_output("cwd", "start").await;
    std::fs::remove_dir_all(&dir).unwrap();
    let ev = c.closed("cwd").await;
    assert!(String::from_utf8_lossy(&ev.stdout).contains("end"));
    // The server is still fine.
    let ev = c.run("after", &["echo", "ok"]).await;
    assert_eq!(ev.stdout, b"ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_sequential_and_memory_returns_to_baseline() {
    let c = Client::new(Transport::Stdio, &["--retain-exited-ms", "50"]).await;
    let pid = c.server.as_ref().unwrap().id().unwrap();
    for i in 0..50 {
        c.run(&format!("warm{i}"), &["true"]).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = rss_kb(pid);
    for i in 0..1000 {
        let ev = c.run(&format!("s{i}"), &["echo", "x"]).await;
        assert_eq!(ev.stdout, b"x\n");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kb(pid);
    assert!(
        after <= baseline + 8 * 1024,
        "RSS {baseline} kB -> {after} kB after 1000 processes"
    );
}
