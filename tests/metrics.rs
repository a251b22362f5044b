//! Issue 20, item 6 (metrics part): `GET /metrics` on the WebSocket listener answers the
//! Prometheus text format behind the same bearer token as the WebSocket; after a few processes
//! (sandboxed and not, one with refusals) and fs calls the counters moved by exactly what
//! happened, and nothing a client sent (argv, environment values, paths) appears in it.
//! `.ci/run` runs this file as root and again as uid 65534.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const TOKEN: &str = "metrics-token-Zq81";

/// Sends a GET for `path` to the server's port with `headers`; returns the whole answer.
fn get(url: &str, path: &str, headers: &[&str]) -> String {
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: probe\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// An authorized scrape: the body, after checking status and content type.
fn scrape(url: &str) -> String {
    let answer = get(
        url,
        "/metrics",
        &[&format!("Authorization: Bearer {TOKEN}")],
    );
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.contains("Content-Type: text/plain; version=0.0.4"),
        "{answer}"
    );
    answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// The value of one series (`name{labels}` exactly as printed); panics when it is missing.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// How much `series` grew from `before` to `after`.
fn delta(before: &str, after: &str, series: &str) -> f64 {
    value(after, series) - value(before, series)
}

/// Scrapes until `series` has `want` (the pump finishes a process after its last event).
fn wait_for_value(url: &str, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(url);
        if value(&text, series) == want {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never became {want}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_token() {
    let token = std::env::temp_dir().join(marker("metricstoken"));
    std::fs::write(&token, TOKEN).unwrap();
    let (mut server, url) =
        Client::spawn_ws_server(&["--ws-token-file", token.to_str().unwrap()]).await;
    for headers in [
        &[][..],
        &["Authorization: Bearer wrong-token"][..],
        &["Authorization: Basic metrics-token-Zq81"][..],
    ] {
        let answer = get(&url, "/metrics", headers);
        assert!(answer.starts_with("HTTP/1.1 401 "), "{headers:?}: {answer}");
        assert!(!answer.contains("stockade_"), "{answer}");
    }
    // A browser page on another origin is refused even with the token.
    let answer = get(
        &url,
        "/metrics",
        &[
            &format!("Authorization: Bearer {TOKEN}"),
            "Origin: http://evil.example",
        ],
    );
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
    assert!(scrape(&url).contains("# TYPE stockade_spawns_total counter"));
    // The health check stays open.
    assert!(get(&url, "/healthz", &[]).starts_with("HTTP/1.1 200 OK\r\n"));
    let _ = server.kill().await;
    let _ = std::fs::remove_file(&token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_and_carry_nothing_a_client_sent() {
    let token = std::env::temp_dir().join(marker("metricstoken"));
    std::fs::write(&token, TOKEN).unwrap();
    let (mut server, url) = Client::spawn_ws_server(&[
        "--ws-token-file",
        token.to_str().unwrap(),
        "--ceiling",
        "danger-full-access",
    ])
    .await;
    // Distinctive strings in every place a client can put data.
    let argv_marker = marker("ArgvMarkQ");
    let env_marker = marker("EnvMarkQ");
    let path_marker = marker("PathMarkQ");
    let s = Scratch::new(&path_marker);
    let before = scrape(&url);
    assert_eq!(value(&before, "stockade_processes_running"), 0.0);

    let bearer = format!("Bearer {TOKEN}");
    let mut c = Client::ws_connect(&url, &[("Authorization", &bearer)])
        .await
        .unwrap();
    c.initialize().await;
    let cwd = s.ws();
    let cwd = cwd.to_str().unwrap();
    let env = json!({"PATH": "/usr/bin:/bin", "SECRETISH": env_marker, "HOME": cwd});

    // Unsandboxed, with output on stdout carrying the markers.
    let full = c
        .run_extra(
            "full",
            &[
                "sh",
                "-c",
                "echo \"$1 $SECRETISH $PWD\"",
                "sh",
                &argv_marker,
            ],
            json!({"cwd": cwd, "env": env, "sandboxPolicy": {"type": "danger-full-access"}}),
        )
        .await;
    let printed = String::from_utf8_lossy(&full.stdout).into_owned();
    assert!(printed.contains(&argv_marker) && printed.contains(&env_marker));

    // Sandboxed, refused twice: a write outside its roots (a path with the marker, named on
    // stderr) and an IPv4 socket with the network off.
    let outside = s.outside().join(format!("{argv_marker}.txt"));
    let script = format!(
        "echo x > {}; python3 -c 'import socket\ntry:\n socket.socket(socket.AF_INET)\nexcept OSError:\n pass'; echo {argv_marker}; exit 0",
        outside.display()
    );
    let policy = json!({"type": "workspace-write", "network_access": false,
                        "exclude_slash_tmp": true, "exclude_tmpdir_env_var": true});
    let confined = c
        .run_extra(
            "confined",
            &["sh", "-c", &script],
            json!({"cwd": cwd, "env": env, "sandboxPolicy": policy}),
        )
        .await;
    let exited = confined.exited.clone().unwrap();
    let kinds: Vec<&str> = exited["denials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"fs") && kinds.contains(&"syscall"),
        "{exited}"
    );
    assert!(!outside.exists());

    // fs calls: one that works, one the policy refuses.
    let written = s.ws().join(format!("{path_marker}.txt"));
    c.ok(
        "fs/writeFile",
        json!({"path": written.to_str().unwrap(), "dataBase64": b64(env_marker.as_bytes()),
               "sandboxPolicy": policy,
               "sandboxCwd": cwd}),
    )
    .await;
    let refused = c
        .call(
            "fs/writeFile",
            json!({"path": outside.to_str().unwrap(), "dataBase64": b64(b"x"),
                   "sandboxPolicy": policy,
                   "sandboxCwd": cwd}),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");

    // A process still running counts as running.
    c.start_with(
        "cat",
        &["cat"],
        json!({"cwd": cwd, "env": env, "pipeStdin": true,
               "sandboxPolicy": {"type": "read-only"}}),
    )
    .await
    .unwrap();
    let during = scrape(&url);
    assert_eq!(
        value(&during, "stockade_processes_running"),
        1.0,
        "{during}"
    );
    c.ok("process/closeStdin", json!({"processId": "cat"}))
        .await;
    c.closed("cat").await;
    let after = wait_for_value(&url, "stockade_processes_running", 0.0);

    let spawns = |t: &str| {
        delta(
            &before,
            &after,
            &format!("stockade_spawns_total{{sandbox=\"{t}\"}}"),
        )
    };
    assert_eq!(spawns("danger-full-access"), 1.0, "{after}");
    assert_eq!(spawns("workspace-write"), 1.0, "{after}");
    assert_eq!(spawns("read-only"), 1.0, "{after}");
    assert_eq!(spawns("external-sandbox"), 0.0, "{after}");
    assert_eq!(
        delta(&before, &after, "stockade_spawn_latency_seconds_count"),
        3.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "stockade_spawn_latency_seconds_bucket{le=\"+Inf\"}"
        ),
        3.0
    );
    assert!(delta(&before, &after, "stockade_spawn_latency_seconds_sum") > 0.0);
    assert!(delta(&before, &after, "stockade_denials_total{kind=\"fs\"}") >= 1.0);
    assert!(delta(&before, &after, "stockade_denials_total{kind=\"syscall\"}") >= 1.0);
    assert_eq!(
        delta(&before, &after, "stockade_denials_total{kind=\"signal\"}"),
        0.0
    );
    let fs = |m: &str, r: &str| {
        delta(
            &before,
            &after,
            &format!("stockade_fs_calls_total{{method=\"{m}\",result=\"{r}\"}}"),
        )
    };
    assert_eq!(fs("writeFile", "ok"), 1.0, "{after}");
    assert_eq!(fs("writeFile", "refused"), 1.0, "{after}");
    assert_eq!(fs("readFile", "ok"), 0.0, "{after}");
    // stdout of both finished processes: the unsandboxed line and the marker echo.
    let stdout_bytes = (full.stdout.len() + confined.stdout.len()) as f64;
    assert_eq!(
        delta(
            &before,
            &after,
            "stockade_output_bytes_total{stream=\"stdout\"}"
        ),
        stdout_bytes,
        "{after}"
    );
    assert!(
        delta(
            &before,
            &after,
            "stockade_output_bytes_total{stream=\"stderr\"}"
        ) > 0.0
    );
    assert_eq!(value(&after, "stockade_sessions{state=\"attached\"}"), 1.0);
    assert_eq!(
        delta(&before, &after, "stockade_sessions_created_total"),
        1.0
    );

    // Nothing the client sent is in any scrape.
    for text in [&before, &during, &after] {
        for secret in [
            argv_marker.as_str(),
            env_marker.as_str(),
            path_marker.as_str(),
            "ArgvMarkQ",
            "EnvMarkQ",
            "PathMarkQ",
            TOKEN,
            cwd,
            "python3",
        ] {
            assert!(!text.contains(secret), "{secret} appears in:\n{text}");
        }
    }
    let _ = server.kill().await;
    let _ = std::fs::remove_file(&token);
}
