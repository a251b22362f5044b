//! Process lifecycle tests over the real binary, on both transports.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn contiguous(seqs: &[u64]) {
    let expect: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(
        seqs,
        &expect[..],
        "one counter per process, in order, starting at 1"
    );
}

both_transports!(output_exit_and_sequence, |t| async move {
    let c = Client::new(t, &[]).await;
    let r = c
        .start("p", &["sh", "-c", "printf out; printf err >&2; exit 3"])
        .await;
    assert_eq!(r["processId"], "p");
    // No policy in the request: the server default (workspace-write, network blocked).
    assert_eq!(r["sandboxType"], "linuxSeccomp");
    assert!(r["pid"].as_i64().unwrap() > 1);
    assert_eq!(r["sandbox"]["policy"], "workspace-write");
    assert_eq!(r["sandbox"]["enforcement"], "full");
    assert_eq!(r["sandbox"]["network"], "blocked");
    let ev = c.closed("p").await;
    assert_eq!(ev.stdout, b"out");
    assert_eq!(ev.stderr, b"err");
    let ex = ev.exited.unwrap();
    assert_eq!(ex["exitCode"], 3);
    assert_eq!(ex["sandboxDenied"], false);
    assert!(ex.get("signal").is_none());
    contiguous(&ev.seqs);
    // The exit comes before closed, and closed is last.
    assert_eq!(*ev.seqs.last().unwrap(), ex["seq"].as_u64().unwrap() + 1);
});

both_transports!(binary_and_empty_output_are_exact, |t| async move {
    let c = Client::new(t, &[]).await;
    // Every byte value, through printf octal escapes.
    let script: String = (0..=255u32).map(|b| format!("\\{b:03o}")).collect();
    let ev = c
        .run("bin", &["sh", "-c", &format!("printf '{script}'")])
        .await;
    let expect: Vec<u8> = (0..=255u8).collect();
    assert_eq!(ev.stdout, expect);
    let ev = c.run("empty", &["true"]).await;
    assert!(ev.stdout.is_empty() && ev.stderr.is_empty());
    assert_eq!(ev.exited.unwrap()["exitCode"], 0);
    assert_eq!(ev.seqs, vec![1, 2]);
});

both_transports!(fifty_megabytes_arrive_exactly, |t| async move {
    let c = Client::new(t, &[]).await;
    let ev = c.run("big", &["seq", "1", "7000000"]).await;
    let expect: String = (1..=7_000_000u32).map(|i| format!("{i}\n")).collect();
    assert!(expect.len() > 50_000_000);
    assert_eq!(ev.stdout.len(), expect.len());
    assert!(ev.stdout == expect.as_bytes(), "content differs");
    contiguous(&ev.seqs);
});

both_transports!(output_before_reading_is_retained, |t| async move {
    let c = Client::new(t, &[]).await;
    c.start("r", &["sh", "-c", "echo one; echo two >&2"]).await;
    c.closed("r").await;
    let r = c.ok("process/read", json!({"processId": "r"})).await;
    let text: Vec<u8> = r["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|ch| unb64(ch["chunk"].as_str().unwrap()))
        .collect();
    assert_eq!(text.len(), 8);
    assert_eq!(r["exited"], true);
    assert_eq!(r["exitCode"], 0);
    assert_eq!(r["closed"], true);
    assert_eq!(r["failure"], Value::Null);
    assert_eq!(r["sandboxDenied"], false);
    let chunks = r["chunks"].as_array().unwrap();
    let last = chunks.last().unwrap()["seq"].as_u64().unwrap();
    assert_eq!(r["nextSeq"], last + 1);
    // Cursor: nothing after the last chunk; nextSeq is then the next seq to allocate.
    let r2 = c
        .ok("process/read", json!({"processId": "r", "afterSeq": last}))
        .await;
    assert!(r2["chunks"].as_array().unwrap().is_empty());
    assert_eq!(r2["nextSeq"], last + 3, "exited and closed used two seqs");
});

both_transports!(read_max_bytes_and_long_poll, |t| async move {
    let c = Client::new(t, &[]).await;
    c.start(
        "m",
        &[
            "sh",
            "-c",
            "printf aaaa; sleep 0.2; printf bbbb; sleep 0.2; printf cccc",
        ],
    )
    .await;
    c.closed("m").await;
    let r = c
        .ok("process/read", json!({"processId": "m", "maxBytes": 1}))
        .await;
    let chunks = r["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 1, "the first chunk is always returned");
    assert_eq!(unb64(chunks[0]["chunk"].as_str().unwrap()), b"aaaa");
    let r = c
        .ok("process/read", json!({"processId": "m", "maxBytes": 8}))
        .await;
    assert_eq!(r["chunks"].as_array().unwrap().len(), 2);
    let r = c
        .ok(
            "process/read",
            json!({"processId": "m", "afterSeq": 1, "maxBytes": 7}),
        )
        .await;
    assert_eq!(r["chunks"].as_array().unwrap().len(), 1);
    assert_eq!(r["nextSeq"], 3);

    // Long-poll: returns when output arrives, long before waitMs.
    c.start("lp", &["sh", "-c", "sleep 0.3; echo late; sleep 30"])
        .await;
    let r = c
        .ok("process/read", json!({"processId": "lp", "waitMs": 60000}))
        .await;
    assert_eq!(unb64(r["chunks"][0]["chunk"].as_str().unwrap()), b"late\n");
    assert_eq!(r["exited"], false);
    // Long-poll also returns on exit.
    let after = r["nextSeq"].as_u64().unwrap() - 1;
    let reader = c.call(
        "process/read",
        json!({"processId": "lp", "afterSeq": after, "waitMs": 60000}),
    );
    let term = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.ok("process/terminate", json!({"processId": "lp"})).await
    };
    let (r, term) = tokio::join!(reader, term);
    assert_eq!(term["running"], true);
    let r = r.unwrap();
    assert_eq!(r["exited"], true);
    assert_eq!(r["exitCode"], 137);
    // Unknown process.
    let e = c
        .call("process/read", json!({"processId": "nope"}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32600);
    assert_eq!(e["message"], "unknown process id nope");
});

both_transports!(requests_are_concurrent, |t| async move {
    let c = Client::new(t, &[]).await;
    c.start("slow", &["sleep", "30"]).await;
    // A long-poll on one process must not delay other requests.
    let poll = c.call(
        "process/read",
        json!({"processId": "slow", "waitMs": 60000}),
    );
    let other = async {
        let info = c.ok("environment/info", Value::Null).await;
        c.ok("process/terminate", json!({"processId": "slow"}))
            .await;
        info
    };
    let (poll, info) = tokio::join!(poll, other);
    assert_eq!(info["platformOs"], "linux");
    assert_eq!(poll.unwrap()["exited"], true);
});

both_transports!(stdin_write_dedup_and_close, |t| async move {
    let c = Client::new(t, &[]).await;
    c.start_with("cat", &["cat"], json!({"pipeStdin": true}))
        .await
        .unwrap();
    let w = |data: &[u8], id: Option<&str>| {
        let mut p = json!({"processId": "cat", "chunk": b64(data)});
        if let Some(id) = id {
            p["writeId"] = json!(id);
        }
        c.call("process/write", p)
    };
    assert_eq!(
        w(b"hello ", Some("w1")).await.unwrap()["status"],
        "accepted"
    );
    assert_eq!(
        w(b"hello ", Some("w1")).await.unwrap()["status"],
        "accepted"
    );
    assert_eq!(
        w(b"\x00\xffworld", None).await.unwrap()["status"],
        "accepted"
    );
    c.wait_output("cat", "world").await;
    let r = c
        .ok("process/closeStdin", json!({"processId": "cat"}))
        .await;
    assert_eq!(r["status"], "accepted");
    let ev = c.closed("cat").await;
    assert_eq!(ev.stdout, b"hello \x00\xffworld", "writeId w1 applied once");
    assert_eq!(w(b"x", None).await.unwrap()["status"], "stdinClosed");
    // Invalid base64.
    let e = c
        .call("process/write", json!({"processId": "cat", "chunk": "!!"}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32602);
    // Unknown process, and a process without a stdin pipe.
    let r = c
        .ok("process/write", json!({"processId": "zzz", "chunk": ""}))
        .await;
    assert_eq!(r["status"], "unknownProcess");
    c.start("nopipe", &["sleep", "30"]).await;
    let r = c
        .ok(
            "process/write",
            json!({"processId": "nopipe", "chunk": b64(b"x")}),
        )
        .await;
    assert_eq!(r["status"], "stdinClosed");
    let r = c
        .ok("process/closeStdin", json!({"processId": "nopipe"}))
        .await;
    assert_eq!(r["status"], "stdinClosed");
    c.ok("process/terminate", json!({"processId": "nopipe"}))
        .await;
});

both_transports!(tty_mode, |t| async move {
    let c = Client::new(t, &[]).await;
    c.start_with(
        "tty",
        &[
            "sh",
            "-c",
            "test -t 0 && test -t 1 && echo ISATTY; stty size; read line; echo got:$line",
        ],
        json!({"tty": true}),
    )
    .await
    .unwrap();
    c.wait_output("tty", "24 80").await;
    let r = c
        .ok(
            "process/write",
            json!({"processId": "tty", "chunk": b64(b"hello\n")}),
        )
        .await;
    assert_eq!(r["status"], "accepted");
    let ev = c.closed("tty").await;
    let out = String::from_utf8_lossy(&ev.pty);
    assert!(out.contains("ISATTY"), "{out}");
    assert!(out.contains("got:hello"), "{out}");
    assert!(ev.stdout.is_empty() && ev.stderr.is_empty());
    // closeStdin on a tty sends nothing.
    // Initial size and resize (SIGWINCH reaches the foreground group).
    c.start_with(
        "sz",
        &[
            "sh",
            "-c",
            "trap 'stty size' WINCH; stty size; while :; do sleep 0.05; done",
        ],
        json!({"tty": true, "size": {"rows": 40, "cols": 100}}),
    )
    .await
    .unwrap();
    c.wait_output("sz", "40 100").await;
    c.ok(
        "process/resize",
        json!({"processId": "sz", "rows": 30, "cols": 90}),
    )
    .await;
    c.wait_output("sz", "30 90").await;
    let r = c.ok("process/closeStdin", json!({"processId": "sz"})).await;
    assert_eq!(r["status"], "stdinClosed");
    // A tty child is a session leader with a controlling terminal.
    let pid = c
        .start_with("sess", &["sleep", "30"], json!({"tty": true}))
        .await
        .unwrap()["pid"]
        .as_i64()
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(fields[3], pid.to_string(), "session id is the pid");
    assert_ne!(fields[4], "0", "has a controlling terminal");
    c.ok("process/terminate", json!({"processId": "sz"})).await;
    c.ok("process/terminate", json!({"processId": "sess"}))
        .await;
    // Resize of a non-tty process.
    c.start("plain", &["sleep", "30"]).await;
    let e = c
        .call(
            "process/resize",
            json!({"processId": "plain", "rows": 1, "cols": 1}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32602);
    c.ok("process/terminate", json!({"processId": "plain"}))
        .await;
});

both_transports!(terminate_kills_the_whole_tree, |t| async move {
    let c = Client::new(t, &[]).await;
    let n = std::process::id() % 1000;
    let (a, b, d) = (
        format!("1000{n}.11"),
        format!("1000{n}.22"),
        format!("1000{n}.33"),
    );
    let script = format!("setsid sleep {a} & (setsid sleep {b} &); sleep {d} & echo started; wait");
    c.start("tree", &["sh", "-c", &script]).await;
    c.wait_output("tree", "started").await;
    let mut pids = Vec::new();
    // Polled against a deadline: on a loaded machine a `setsid` child may take a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for m in [&a, &b, &d] {
        while std::time::Instant::now() < deadline {
            let found = pids_with_marker(m);
            if !found.is_empty() {
                pids.extend(found);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(pids.len(), 3, "all three sleeps started");
    let r = c
        .ok("process/terminate", json!({"processId": "tree"}))
        .await;
    assert_eq!(r["running"], true);
    let ev = c.closed("tree").await;
    let ex = ev.exited.unwrap();
    assert_eq!(ex["exitCode"], 137);
    assert_eq!(ex["signal"], "SIGKILL");
    assert!(
        wait_all_dead(&pids).await.is_empty(),
        "no process of the tree survives"
    );
    // Terminating again: not running.
    let r = c
        .ok("process/terminate", json!({"processId": "tree"}))
        .await;
    assert_eq!(r["running"], false);
});

both_transports!(signals_and_signal_deaths, |t| async move {
    let c = Client::new(t, &[]).await;
    c.start(
        "trap",
        &[
            "sh",
            "-c",
            "trap 'echo INT; exit 7' INT; echo ready; while :; do sleep 0.05; done",
        ],
    )
    .await;
    c.wait_output("trap", "ready").await;
    let r = c
        .ok(
            "process/signal",
            json!({"processId": "trap", "signal": "interrupt"}),
        )
        .await;
    assert_eq!(r["delivered"], true);
    let ev = c.closed("trap").await;
    assert_eq!(ev.exited.unwrap()["exitCode"], 7);
    assert!(String::from_utf8_lossy(&ev.stdout).contains("INT"));
    let ev = c.run("self", &["sh", "-c", "kill -TERM $$"]).await;
    let ex = ev.exited.unwrap();
    assert_eq!(ex["exitCode"], 128 + 15);
    assert_eq!(ex["signal"], "SIGTERM");
    let e = c
        .call(
            "process/signal",
            json!({"processId": "trap", "signal": "bogus"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32602);
    let e = c
        .call(
            "process/signal",
            json!({"processId": "none", "signal": "kill"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32600);
});

both_transports!(close_grace_kills_pipe_holders, |t| async move {
    let c = Client::new(t, &["--close-grace-ms", "300"]).await;
    let m = format!("2000{}.5", std::process::id() % 1000);
    c.start("bg", &["sh", "-c", &format!("sleep {m} & echo main-done")])
        .await;
    let ev = c.closed("bg").await;
    assert_eq!(ev.exited.unwrap()["exitCode"], 0);
    assert!(wait_all_dead(&pids_with_marker(&m)).await.is_empty());
    // A daemon that closed its output does not outlive the process either.
    let m2 = format!("3000{}.5", std::process::id() % 1000);
    c.start(
        "daemon",
        &[
            "sh",
            "-c",
            &format!("setsid sleep {m2} </dev/null >/dev/null 2>&1 & echo x"),
        ],
    )
    .await;
    c.closed("daemon").await;
    assert!(wait_all_dead(&pids_with_marker(&m2)).await.is_empty());
});

both_transports!(retention_and_id_reuse, |t| async move {
    let c = Client::new(
        t,
        &[
            "--retain-exited-ms",
            "200",
            "--retain-output-bytes",
            "100000",
        ],
    )
    .await;
    c.start("big", &["sh", "-c", "head -c 1000000 /dev/zero"])
        .await;
    c.closed("big").await;
    let r = c.ok("process/read", json!({"processId": "big"})).await;
    let total: usize = r["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ch| unb64(ch["chunk"].as_str().unwrap()).len())
        .sum();
    assert!(total <= 100_000 + 65536, "retained {total}");
    assert!(
        r["chunks"][0]["seq"].as_u64().unwrap() > 1,
        "oldest chunks were dropped"
    );
    let e = c.start_with("big", &["true"], json!({})).await.unwrap_err();
    assert_eq!(e["code"], -32600);
    assert_eq!(e["message"], "process big already exists");
    // The closed process is forgotten once its retention ends: poll against a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let e = loop {
        match c.call("process/read", json!({"processId": "big"})).await {
            Err(e) => break e,
            Ok(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Ok(r) => panic!("process big is still retained: {r}"),
        }
    };
    assert_eq!(e["message"], "unknown process id big");
    c.start("big", &["true"]).await;
    c.closed("big").await;
});

both_transports!(spawn_errors, |t| async move {
    let c = Client::new(t, &[]).await;
    let e = c.start_with("e1", &[], json!({})).await.unwrap_err();
    assert_eq!(e["code"], -32602);
    assert_eq!(e["message"], "argv must not be empty");
    let e = c
        .start_with("e2", &["definitely-not-a-program"], json!({}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32603);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("No such file or directory"),
        "{e}"
    );
    let e = c
        .start_with("e3", &["true"], json!({"cwd": "/nonexistent/dir"}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32603);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("No such file or directory"),
        "{e}"
    );
    let e = c
        .start_with("e4", &["true"], json!({"cwd": "relative/dir"}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32602);
    let dir = std::env::temp_dir().join(marker("noexec"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("data.txt");
    std::fs::write(&file, "not a program").unwrap();
    let e = c
        .start_with("e5", &[file.to_str().unwrap()], json!({}))
        .await
        .unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(e["code"], -32603);
    assert!(
        e["message"].as_str().unwrap().contains("Permission denied"),
        "{e}"
    );
    let e = c
        .start_with("e6", &["true"], json!({"env": {"A=B": "x"}}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32602);
    let e = c
        .start_with("e7", &["true"], json!({"env": 5}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32602);
    assert!(e["message"].as_str().unwrap().contains("env"), "{e}");
    // No id stays reserved after a failed start.
    c.start("e2", &["true"]).await;
    c.closed("e2").await;
    // Policies: both shapes are accepted, both at once is invalid, above the ceiling is -32020.
    let r = c
        .start_with(
            "s1",
            &["true"],
            json!({"sandboxPolicy": {"type": "read-only"}}),
        )
        .await
        .unwrap();
    assert_eq!(r["sandbox"]["policy"], "read-only");
    assert_eq!(r["sandboxType"], "linuxSeccomp");
    let r = c
        .start_with(
            "s2",
            &["true"],
            json!({"sandbox": {"permissions": {"type": "managed", "network": "restricted", "file_system": {"type": "restricted", "entries": [{"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"}]}}}}),
        )
        .await
        .unwrap();
    assert_eq!(r["sandbox"]["policy"], "managed");
    let e = c.start_with("s3", &["true"], json!({"sandboxPolicy": {"type": "danger-full-access"}, "sandbox": {"permissions": {"type": "disabled"}}})).await.unwrap_err();
    assert_eq!(e["code"], -32602);
    let e = c
        .start_with(
            "s4",
            &["true"],
            json!({"sandboxPolicy": {"type": "danger-full-access"}, "metadata": {"x": 1}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32020);
    assert!(
        e["message"].as_str().unwrap().contains("workspace-write"),
        "{e}"
    );
    let e = c
        .start_with(
            "s5",
            &["true"],
            json!({"sandboxPolicy": {"type": "nonsense"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32602);
});

both_transports!(clean_child, |t| async move {
    let c = Client::new(t, &[]).await;
    // Exactly the given environment; PATH lookup falls back to /bin:/usr/bin without PATH.
    let ev = c
        .run_env("env", &["env"], json!({"A": "1", "B": "two words"}))
        .await;
    let mut lines: Vec<String> = String::from_utf8(ev.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    assert_eq!(lines, vec!["A=1", "B=two words"]);
    // file:// cwd, arg0. Read-only: a cwd inside /usr cannot be a writable root.
    let read_only = json!({"type": "read-only"});
    let ev = c
        .run_extra(
            "cwd",
            &["cat", "/proc/self/cmdline"],
            json!({"cwd": "file:///usr/share", "arg0": "fancy-name", "sandboxPolicy": read_only}),
        )
        .await;
    assert_eq!(ev.stdout, b"fancy-name\0/proc/self/cmdline\0");
    let ev = c
        .run_extra(
            "pwd",
            &["pwd"],
            json!({"cwd": "file:///usr/share", "sandboxPolicy": read_only}),
        )
        .await;
    assert_eq!(ev.stdout, b"/usr/share\n");
    // Only fds 0-2, own process group.
    let pid = c.start("fds", &["sleep", "30"]).await["pid"]
        .as_i64()
        .unwrap();
    // `sleep` briefly opens locale files while starting up; a leaked fd would stay.
    let mut fds = Vec::new();
    for _ in 0..40 {
        fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        fds.sort();
        if fds == ["0", "1", "2"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fds, vec!["0", "1", "2"]);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(fields[2], pid.to_string(), "own process group");
    let stdin = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
    assert_eq!(stdin.to_str().unwrap(), "/dev/null");
    let sigs = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ign = sigs.lines().find(|l| l.starts_with("SigIgn:")).unwrap();
    let blk = sigs.lines().find(|l| l.starts_with("SigBlk:")).unwrap();
    assert!(
        ign.ends_with("0000000000000000"),
        "no ignored signals: {ign}"
    );
    assert!(
        blk.ends_with("0000000000000000"),
        "no blocked signals: {blk}"
    );
    c.ok("process/terminate", json!({"processId": "fds"})).await;
});

both_transports!(duplicate_concurrent_starts, |t| async move {
    let c = Client::new(t, &[]).await;
    let a = c.start_with("dup", &["sleep", "30"], json!({}));
    let b = c.start_with("dup", &["sleep", "30"], json!({}));
    let (a, b) = tokio::join!(a, b);
    assert!(a.is_ok() != b.is_ok(), "exactly one succeeds: {a:?} {b:?}");
    let e = a.err().or(b.err()).unwrap();
    assert_eq!(e["message"], "process dup already exists");
    c.ok("process/terminate", json!({"processId": "dup"})).await;
    c.closed("dup").await;
});

both_transports!(two_hundred_concurrent_processes, |t| async move {
    let c = Client::new(t, &[]).await;
    let starts = (0..200).map(|i| {
        let id = format!("c{i}");
        let c = &c;
        async move {
            c.start_with(&id, &["sh", "-c", &format!("echo {i}")], json!({}))
                .await
                .unwrap();
        }
    });
    futures_util::future::join_all(starts).await;
    for i in 0..200 {
        let ev = c.closed(&format!("c{i}")).await;
        assert_eq!(ev.stdout, format!("{i}\n").as_bytes());
        assert_eq!(ev.exited.unwrap()["exitCode"], 0);
    }
});

impl_run_helpers!();

// A small request travels inside the spawn datagram, a large one (here 210 KiB of argv and
// 100 KiB of environment) in a memfd: both must reach the program byte for byte.
both_transports!(small_and_large_requests_reach_the_program, |t| async move {
    let c = Client::new(t, &[]).await;
    let ev = c.run("small", &["printf", "%s", "a-b"]).await;
    assert_eq!(ev.stdout, b"a-b");
    // One argument may not exceed 128 KiB (MAX_ARG_STRLEN): three of 70 KiB.
    let big_arg = "x".repeat(70 * 1024);
    let big_env = "y".repeat(100 * 1024);
    c.start_with(
        "large",
        &[
            "sh",
            "-c",
            "printf '%s %s' \"$((${#1} + ${#2} + ${#3}))\" \"${#BIG}\"",
            "sh",
            &big_arg,
            &big_arg,
            &big_arg,
        ],
        json!({"env": {"PATH": "/usr/bin:/bin", "BIG": big_env}}),
    )
    .await
    .unwrap();
    let ev = c.closed("large").await;
    assert_eq!(
        String::from_utf8_lossy(&ev.stdout),
        format!("{} {}", 3 * 70 * 1024, 100 * 1024)
    );
});
