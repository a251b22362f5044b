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
    // A spin until the process has used 300 ms of CPU (by its own clock, so a loaded machine
    // only makes it take longer) reports at least 200 ms of user time.
    let (ev, _) = run_limited(
        &c,
        "u",
        &[
            "/usr/bin/python3",
            "-c",
            "import time\nwhile time.process_time()<0.3: sum(range(10000))",
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

/// A writable cgroup v2 directory for the cgroup tests: `STOCKADE_TEST_CGROUP_ROOT`, else a
/// fresh directory in the host's cgroup v2 mount when this user may create one. `None`: the
/// cgroup path cannot run here (the rlimit tests above cover this host).
fn test_cgroup_root() -> Option<std::path::PathBuf> {
    if let Ok(dir) = std::env::var("STOCKADE_TEST_CGROUP_ROOT") {
        let d = std::path::PathBuf::from(dir).join(marker("cgt"));
        return std::fs::create_dir(&d).ok().map(|_| d);
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mounts.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        right
            .starts_with("cgroup2 ")
            .then(|| left.split(' ').nth(4).map(str::to_string))?
    })?;
    let d = std::path::Path::new(&mount).join(marker("cgt"));
    std::fs::create_dir(&d).ok().map(|_| d)
}

/// With a delegated cgroup v2 directory every process runs in its own group: the group holds
/// the whole tree (also what left the session), usage covers the tree, the tree dies with the
/// process, and the group is removed. Where the memory and pids controllers are enabled, the
/// tree limits are checked too. Skipped (with a message) where no cgroup v2 is writable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_v2_groups_hold_the_whole_tree() {
    let Some(root) = test_cgroup_root() else {
        return allow_skip(
            "cgroup-v2",
            "no writable cgroup v2 directory (the rlimit path is tested instead)",
        );
    };
    let root_s = root.to_str().unwrap().to_string();
    let c = Client::new(Transport::Stdio, &["--cgroup-root", &root_s]).await;
    let m = format!("6000{}.5", std::process::id() % 1000);
    // A grandchild that leaves the session and spins ~0.3 s of CPU, then sleeps.
    let script = format!(
        "grep ^0:: /proc/self/cgroup; (setsid sh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep {m}' >/dev/null 2>&1 &); sleep 1.5; echo end"
    );
    let (ev, r) = run_limited(&c, "cg", &["sh", "-c", &script], json!({})).await;
    let out = String::from_utf8_lossy(&ev.stdout);
    let group = out.lines().next().unwrap_or("").trim_start_matches("0::");
    assert!(
        group.contains("/stockade-"),
        "the process is not in its own group: {out}"
    );
    assert!(out.contains("end"), "{out}");
    let usage = &ev.exited.as_ref().unwrap()["usage"];
    assert!(
        usage["userMs"].as_u64().unwrap() >= 150,
        "the grandchild's CPU time is missing: {usage}"
    );
    assert_eq!(r["sandbox"]["enforcement"], "full", "{r}");
    // The detached grandchild died with the process, and the group is gone.
    assert!(wait_all_dead(&pids_with_marker(&m)).await.is_empty());
    // The group is removed right after the tree is gone: poll against a deadline.
    let groups_left = || -> Vec<_> {
        std::fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut left = groups_left();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = groups_left();
    }
    assert!(left.is_empty(), "groups left behind: {left:?}");

    let enabled = std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
    if enabled.contains("pids") {
        // As root too: the tree, not the user, is counted.
        let script =
            format!("i=0; while [ $i -lt 300 ]; do sleep {m} & i=$((i+1)); done; echo spawned");
        let (ev, r) = run_limited(
            &c,
            "fb",
            &["sh", "-c", &script],
            json!({"maxProcesses": 50, "wallTimeMs": 20000}),
        )
        .await;
        assert_eq!(r["sandbox"]["enforcement"], "full", "{r}");
        let err = String::from_utf8_lossy(&ev.stderr);
        assert!(err.contains("fork") || err.contains("Resource"), "{err}");
        assert!(wait_all_dead(&pids_with_marker(&m)).await.is_empty());
    } else {
        eprintln!("pids controller not enabled in {root_s}: maxProcesses via cgroup not tested");
    }
    if enabled.contains("memory") {
        let (ev, _) = run_limited(
            &c,
            "mem",
            &[
                "/usr/bin/python3",
                "-c",
                "b = bytearray(200 * 1024 * 1024); print('allocated')",
            ],
            json!({"memoryBytes": 64 * 1024 * 1024}),
        )
        .await;
        let exited = ev.exited.unwrap();
        assert!(
            exited["signal"] == "SIGKILL" || exited["exitCode"] != 0,
            "200 MB under a 64 MiB group limit: {exited}"
        );
        assert!(!String::from_utf8_lossy(&ev.stdout).contains("allocated"));
    } else {
        eprintln!("memory controller not enabled in {root_s}: memoryBytes via cgroup not tested");
    }
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = std::fs::remove_dir(&root);
}
