//! Resource limits (PROTOCOL.md section 7) over real children, as root and as uid 65534.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

async fn run_limited(c: &Client, id: &str, argv: &[&str], limits: Value) -> (ProcEvents, Value) {
    let cwd = std::env::temp_dir();
    let r = c
        .start_with(
            id,
            argv,
            json!({"limits": limits, "cwd": cwd.to_str().unwrap()}),
        )
        .await
        .unwrap_or_else(|e| panic!("start {id}: {e}"));
    let ev = c.closed(id).await;
    (ev, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_time_kills_the_tree() {
    let c = Client::new(Transport::Stdio, &[]).await;
    let m = format!("6000{}.5", std::process::id() % 1000);
    let t = Instant::now();
    let (ev, r) = run_limited(
        &c,
        "w",
        &["sh", "-c", &format!("setsid sleep {m} & sleep {m}")],
        json!({"wallTimeMs": 500}),
    )
    .await;
    // Far below the 6000 s the sleeps asked for (no tight timing assertion).
    assert!(t.elapsed() < Duration::from_secs(30));
    let ex = ev.exited.unwrap();
    assert_eq!(ex["timedOut"], true);
    assert_eq!(ex["signal"], "SIGKILL");
    assert_eq!(r["sandbox"]["limits"]["wallTimeMs"]["value"], 500);
    assert!(wait_all_dead(&pids_with_marker(&m)).await.is_empty());
    // A process that finishes in time is not marked.
    let (ev, _) = run_limited(&c, "w2", &["true"], json!({"wallTimeMs": 60000})).await;
    assert_eq!(ev.exited.unwrap()["timedOut"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_time_stops_a_spinner_and_usage_is_plausible() {
    let c = Client::new(Transport::Stdio, &[]).await;
    let (ev, _) = run_limited(
        &c,
        "spin",
        &["sh", "-c", "while :; do :; done"],
        json!({"cpuTimeMs": 500}),
    )
    .await;
    let ex = ev.exited.unwrap();
    assert!(
        matches!(ex["signal"].as_str(), Some("SIGXCPU") | Some("SIGKILL")),
        "{ex}"
    );
    assert!(
        ex["usage"]["userMs"].as_u64().unwrap() + ex["usage"]["sysMs"].as_u64().unwrap() >= 500,
        "{ex}"
    );
    // A 300 ms CPU spin reports at least 200 ms of user time.
    let (ev, _) = run_limited(
        &c,
        "u",
        &[
            "/usr/bin/python3",
            "-c",
            "import time\nt=time.time()\nwhile time.time()-t<0.3: sum(range(10000))",
        ],
        json!({}),
    )
    .await;
    let ex = ev.exited.unwrap();
    assert_eq!(ex["exitCode"], 0);
    assert!(ex["usage"]["userMs"].as_u64().unwrap() >= 200, "{ex}");
    assert!(ex["usage"]["wallMs"].as_u64().unwrap() >= 200, "{ex}");
    assert!(ex["usage"]["maxRssKb"].as_u64().unwrap() > 0, "{ex}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_size_memory_and_open_files() {
    let c = Client::new(Transport::Stdio, &[]).await;
    let dir = std::env::temp_dir().join(marker("fsize"));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big");
    let script = format!("head -c 10G /dev/zero > {}", big.display());
    let (ev, _) = run_limited(
        &c,
        "f",
        &["sh", "-c", &script],
        json!({"maxFileSizeBytes": 1048576}),
    )
    .await;
    assert!(
        String::from_utf8_lossy(&ev.stderr).contains("File too large"),
        "{}",
        String::from_utf8_lossy(&ev.stderr)
    );
    assert_eq!(std::fs::metadata(&big).unwrap().len(), 1048576);
    std::fs::remove_dir_all(&dir).unwrap();
    // 200 MB under a 64 MiB address-space limit: the allocation fails (MemoryError).
    let (ev, _) = run_limited(
        &c,
        "m",
        &["/usr/bin/python3", "-c", "b = bytearray(200 * 1024 * 1024)"],
        json!({"memoryBytes": 67108864}),
    )
    .await;
    assert_eq!(ev.exited.unwrap()["exitCode"], 1);
    assert!(String::from_utf8_lossy(&ev.stderr).contains("MemoryError"));
    let (ev, _) = run_limited(
        &c,
        "n",
        &[
            "/usr/bin/python3",
            "-c",
            "import os\nfds=[os.open('/dev/null', 0) for _ in range(100)]",
        ],
        json!({"maxOpenFiles": 20}),
    )
    .await;
    assert!(String::from_utf8_lossy(&ev.stderr).contains("Too many open files"));
    // Core dumps are off for sandboxed processes.
    let (ev, _) = run_limited(&c, "core", &["sh", "-c", "ulimit -c"], json!({})).await;
    assert_eq!(String::from_utf8_lossy(&ev.stdout).trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_limit_contains_a_fork_loop() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // uid 0 is exempt from RLIMIT_NPROC: fail closed, or run degraded when allowed.
        let c = Client::new(Transport::Stdio, &[]).await;
        let e = c
            .start_with("fb", &["true"], json!({"limits": {"maxProcesses": 50}}))
            .await
            .unwrap_err();
        assert_eq!(e["code"], -32021);
        assert!(
            e["message"].as_str().unwrap().contains("maxProcesses"),
            "{e}"
        );
        let c = Client::new(Transport::Stdio, &["--allow-degraded"]).await;
        let r = c
            .start_with("fb", &["true"], json!({"limits": {"maxProcesses": 50}}))
            .await
            .unwrap();
        assert_eq!(r["sandbox"]["enforcement"], "degraded");
        assert!(
            r["sandbox"]["degradations"]
                .to_string()
                .contains("maxProcesses"),
            "{r}"
        );
        c.closed("fb").await;
        return;
    }
    let c = Client::new(Transport::Stdio, &[]).await;
    let m = format!("7000{}.5", std::process::id() % 1000);
    let script =
        format!("i=0; while [ $i -lt 300 ]; do sleep {m} & i=$((i+1)); done; echo spawned; exit 0");
    let (ev, _) = run_limited(
        &c,
        "fb",
        &["sh", "-c", &script],
        json!({"maxProcesses": 50, "wallTimeMs": 20000}),
    )
    .await;
    let err = String::from_utf8_lossy(&ev.stderr);
    assert!(
        err.contains("fork") || err.contains("Resource temporarily unavailable"),
        "{err}"
    );
    // The tree is gone: nothing of it survives `closed`.
    assert!(wait_all_dead(&pids_with_marker(&m)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_limit_ends_the_process() {
    let c = Client::new(Transport::Stdio, &[]).await;
    let (ev, _) = run_limited(&c, "y", &["yes"], json!({"maxOutputBytes": 1048576})).await;
    let ex = ev.exited.unwrap();
    assert_eq!(ex["outputLimitExceeded"], true);
    assert_eq!(ev.stdout.len(), 1048576, "exactly the limit is delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_and_maxima_from_the_config() {
    let dir = std::env::temp_dir().join(marker("limcfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("server.toml");
    std::fs::write(&cfg, "[limits]\ndefault = { wall_time_ms = 300 }\nmax = { wall_time_ms = 1000, memory_bytes = 1073741824 }\n").unwrap();
    let c = Client::new(Transport::Stdio, &["--config", cfg.to_str().unwrap()]).await;
    let (ev, r) = run_limited(&c, "d", &["sleep", "30"], json!({})).await;
    assert_eq!(ev.exited.unwrap()["timedOut"], true);
    assert_eq!(r["sandbox"]["limits"]["wallTimeMs"]["value"], 300);
    let e = c
        .start_with("x", &["true"], json!({"limits": {"wallTimeMs": 5000}}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32020);
    assert!(e["message"].as_str().unwrap().contains("wallTimeMs"), "{e}");
    let e = c
        .start_with("y", &["true"], json!({"limits": {"memoryBytes": "lots"}}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32602);
    std::fs::remove_dir_all(&dir).unwrap();
}
