//! What the sandbox refused, exactly (issue 16): the `denials` list, its total, completeness
//! and sources on `process/exited` and `process/read`, from each evidence source this host
//! offers. `.ci/run` runs this file as root and again as uid 65534.

mod common;

use common::*;
use serde_json::{Value, json};

/// workspace-write with only the workspace writable (no /tmp, no $TMPDIR), network off.
fn ws_policy() -> Value {
    json!({"type": "workspace-write", "network_access": false,
           "exclude_slash_tmp": true, "exclude_tmpdir_env_var": true})
}

/// Runs `script` under `sh -c` confined to the workspace; returns the `process/exited`
/// params, the `process/read` result after close and the events.
async fn run_confined(
    c: &Client,
    id: &str,
    s: &Scratch,
    script: &str,
) -> (Value, Value, ProcEvents) {
    c.start_with(
        id,
        &["sh", "-c", script],
        json!({"cwd": s.ws().to_str().unwrap(), "sandboxPolicy": ws_policy()}),
    )
    .await
    .unwrap();
    let ev = c.closed(id).await;
    let read = c.ok("process/read", json!({"processId": id})).await;
    (ev.exited.clone().unwrap(), read, ev)
}

/// The entries of `v["denials"]` of `kind`.
fn of_kind<'a>(v: &'a Value, kind: &str) -> Vec<&'a Value> {
    v["denials"]
        .as_array()
        .unwrap_or_else(|| panic!("no denials list: {v}"))
        .iter()
        .filter(|d| d["kind"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_fields_are_on_exited_and_read() {
    let s = Scratch::new("denfields");
    let c = Client::new(Transport::Stdio, &[]).await;
    let (exited, read, _) = run_confined(&c, "clean", &s, "echo fine > inside").await;
    for v in [&exited, &read] {
        assert_eq!(v["denials"], json!([]), "{v}");
        assert_eq!(v["denialsTotal"], 0, "{v}");
        assert!(v["denialSources"].is_array(), "{v}");
    }
    // After close the tree is gone: the list is final.
    assert_eq!(read["denialsComplete"], true, "{read}");
}

/// A Python one-liner run confined (network off).
fn python(code: &str) -> String {
    format!("python3 -c '{code}'")
}

fn has_source(v: &Value, source: &str) -> bool {
    v["denialSources"]
        .as_array()
        .is_some_and(|s| s.iter().any(|x| x == source))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_under_network_off_is_listed_with_family_and_type() {
    let s = Scratch::new("densock");
    let c = Client::new(Transport::Stdio, &[]).await;
    let code = "import socket\ntry:\n socket.socket(socket.AF_INET, socket.SOCK_STREAM)\nexcept OSError as e:\n print(e.errno)";
    let (exited, read, ev) = run_confined(&c, "sock", &s, &python(code)).await;
    // The program sees exactly what the plain filter answers: EPERM.
    assert_eq!(String::from_utf8_lossy(&ev.stdout), "1\n", "{exited}");
    assert_eq!(exited["exitCode"], 0);
    for v in [&exited, &read] {
        assert!(has_source(v, "seccomp"), "{v}");
        let sock: Vec<_> = of_kind(v, "syscall")
            .into_iter()
            .filter(|d| d["args"] == json!(["AF_INET", "SOCK_STREAM"]))
            .collect();
        assert_eq!(sock.len(), 1, "{v}");
        assert_eq!(sock[0]["access"], json!(["socket"]), "{v}");
        assert_eq!(sock[0]["source"], "seccomp", "{v}");
        assert_eq!(sock[0]["count"], 1, "{v}");
        // A refusal on the way of a command that succeeded: listed, but not sandboxDenied.
        assert_eq!(v["sandboxDenied"], false, "{v}");
    }
    assert_eq!(read["denialsComplete"], true, "{read}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_failing_after_a_refused_syscall_is_sandbox_denied() {
    let s = Scratch::new("densockfail");
    let c = Client::new(Transport::Stdio, &[]).await;
    let code = "import socket\nsocket.socket(socket.AF_INET6, socket.SOCK_DGRAM)";
    let (exited, read, ev) = run_confined(&c, "f", &s, &python(code)).await;
    assert!(
        String::from_utf8_lossy(&ev.stderr).contains("Operation not permitted"),
        "{ev:?}"
    );
    assert_eq!(exited["exitCode"], 1);
    for v in [&exited, &read] {
        assert_eq!(v["sandboxDenied"], true, "{v}");
        assert!(
            of_kind(v, "syscall")
                .iter()
                .any(|d| d["args"] == json!(["AF_INET6", "SOCK_DGRAM"])),
            "{v}"
        );
    }
    // The C library's own AF_UNIX probes (name-service cache) are listed but never make a
    // failing command sandboxDenied.
    let (exited, _, _) = run_confined(&c, "u", &s, &python("import sys; sys.exit(1)")).await;
    assert_eq!(exited["exitCode"], 1);
    assert_eq!(exited["sandboxDenied"], false, "{exited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_refused_calls_keep_the_list_capped_and_the_total_exact() {
    let s = Scratch::new("denflood");
    let c = Client::new(Transport::Stdio, &[]).await;
    // 40 distinct families (numbers no kernel knows: only the filter sees them), 250 each.
    let code = "import socket\nfor i in range(10000):\n try:\n  socket.socket(100 + i % 40, socket.SOCK_STREAM)\n except OSError as e:\n  assert e.errno == 1, e";
    let (exited, read, _) = run_confined(&c, "flood", &s, &python(code)).await;
    assert_eq!(exited["exitCode"], 0, "{exited}");
    for v in [&exited, &read] {
        let list = v["denials"].as_array().unwrap();
        assert_eq!(list.len(), 32, "{v}");
        // Only the C library's AF_UNIX probes come on top of the loop's calls.
        let probes: u64 = list
            .iter()
            .filter(|d| d["args"][0] == "AF_UNIX")
            .map(|d| d["count"].as_u64().unwrap())
            .sum();
        assert_eq!(v["denialsTotal"].as_u64().unwrap(), 10_000 + probes, "{v}");
        for d in list.iter().filter(|d| d["args"][0] != "AF_UNIX") {
            assert_eq!(d["count"], 250, "{d}");
        }
        // Bounded whatever the tree does: 32 entries of bounded size.
        assert!(v["denials"].to_string().len() < 32 * 200, "{v}");
    }
    assert_eq!(read["denialsComplete"], true);
}

/// A server started under an outer seccomp filter that has a listener (as inside a container
/// runtime that supervises with user notification): the kernel allows one listener per
/// filter chain, so the processes get the plain filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_an_outer_seccomp_listener_the_plain_filter_refuses_and_the_source_is_missing() {
    let s = Scratch::new("denebusy");
    let mut cmd = tokio::process::Command::new(bin());
    cmd.arg("serve");
    // SAFETY: between fork and exec only raw syscalls on stack data.
    unsafe {
        cmd.pre_exec(|| {
            let allow = [libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            }];
            let prog = libc::sock_fprog {
                len: 1,
                filter: allow.as_ptr() as *mut _,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            );
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The server keeps the listener open: the outer filter keeps its listener.
            libc::fcntl(fd as i32, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let mut c = Client::stdio_cmd(cmd).await;
    c.initialize().await;
    let code = "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM)";
    let r = c
        .start_with(
            "p",
            &["sh", "-c", &python(code)],
            json!({"cwd": s.ws().to_str().unwrap(), "sandboxPolicy": ws_policy()}),
        )
        .await
        .unwrap();
    let notes = r["sandbox"]["notes"].to_string();
    assert!(notes.contains("no seccomp listener"), "{r}");
    let ev = c.closed("p").await;
    assert!(
        String::from_utf8_lossy(&ev.stderr).contains("Operation not permitted"),
        "{ev:?}"
    );
    let exited = ev.exited.unwrap();
    assert_eq!(exited["exitCode"], 1);
    assert!(!has_source(&exited, "seccomp"), "{exited}");
    assert!(of_kind(&exited, "syscall").is_empty(), "{exited}");
}

/// The `fs` entries of `v` from error texts.
fn fs_paths(v: &Value) -> Vec<(String, String)> {
    of_kind(v, "fs")
        .iter()
        .map(|d| {
            (
                d["access"][0].as_str().unwrap().to_string(),
                d["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_outside_the_roots_is_listed_with_path_and_access() {
    let s = Scratch::new("denout");
    let c = Client::new(Transport::Stdio, &[]).await;
    let out = s.outside();
    let script = format!("echo x > {0}/f; touch {0}/g; exit 0", out.display());
    let (exited, read, _) = run_confined(&c, "w", &s, &script).await;
    assert!(!out.join("f").exists() && !out.join("g").exists());
    assert_eq!(exited["exitCode"], 0);
    for v in [&exited, &read] {
        let got = fs_paths(v);
        for name in ["f", "g"] {
            let want = ("write".to_string(), format!("{}/{name}", out.display()));
            assert!(got.contains(&want), "{want:?} not in {v}");
        }
        assert!(
            of_kind(v, "fs").iter().all(|d| d["source"] == "stderr"),
            "{v}"
        );
        assert!(has_source(v, "stderr"), "{v}");
        // Refused on the way of a command that exited 0: listed, not sandboxDenied.
        assert_eq!(v["sandboxDenied"], false, "{v}");
    }
    // The same refusal making the command fail is sandboxDenied.
    let script = format!("echo x > {}/f || exit 4", out.display());
    let (exited, _, _) = run_confined(&c, "f", &s, &script).await;
    assert_eq!(exited["exitCode"], 4);
    assert_eq!(exited["sandboxDenied"], true, "{exited}");
    assert_eq!(fs_paths(&exited).len(), 1, "{exited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_into_a_protected_git_is_listed() {
    let s = Scratch::new("dengit");
    std::fs::create_dir(s.ws().join(".git")).unwrap();
    std::fs::write(s.ws().join(".git/config"), "[core]\n").unwrap();
    let c = Client::new(Transport::Stdio, &[]).await;
    let (exited, _, ev) = run_confined(&c, "g", &s, "echo x >> .git/config; exit 1").await;
    assert_eq!(
        std::fs::read_to_string(s.ws().join(".git/config")).unwrap(),
        "[core]\n"
    );
    assert!(
        String::from_utf8_lossy(&ev.stderr).contains("Read-only file system"),
        "{ev:?}"
    );
    let want = (
        "write".to_string(),
        format!("{}/.git/config", s.ws().display()),
    );
    assert_eq!(fs_paths(&exited), vec![want], "{exited}");
    assert_eq!(exited["sandboxDenied"], true, "{exited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chmod_refused_by_file_permissions_on_an_allowed_path_is_not_listed() {
    let s = Scratch::new("dendac");
    let c = Client::new(Transport::Stdio, &[]).await;
    // A file the process may write by policy but does not own: chmod needs ownership (a
    // confined root holds no CAP_FOWNER). Root makes one in the workspace; uid 65534 uses
    // /tmp itself (root's), with /tmp a writable root.
    let root = unsafe { libc::geteuid() } == 0;
    let (target, policy) = if root {
        let f = s.ws().join("theirs");
        std::fs::write(&f, "").unwrap();
        std::os::unix::fs::chown(&f, Some(12345), Some(12345)).unwrap();
        (f.to_str().unwrap().to_string(), ws_policy())
    } else {
        (
            "/tmp".to_string(),
            json!({"type": "workspace-write", "network_access": false}),
        )
    };
    c.start_with(
        "dac",
        &["chmod", "700", &target],
        json!({"cwd": s.ws().to_str().unwrap(), "sandboxPolicy": policy}),
    )
    .await
    .unwrap();
    let ev = c.closed("dac").await;
    assert!(
        String::from_utf8_lossy(&ev.stderr).contains("Operation not permitted"),
        "{ev:?}"
    );
    let exited = ev.exited.unwrap();
    assert_eq!(exited["exitCode"], 1);
    assert!(has_source(&exited, "stderr"), "{exited}");
    assert_eq!(fs_paths(&exited), vec![], "{exited}");
    assert_eq!(exited["sandboxDenied"], false, "{exited}");
}
