//! `sandboxDenied` as Codex clients read it (issue 16.1), and strict parsing of every policy
//! object (issue 15.5). `.ci/run` runs this file as root and again as uid 65534.

mod common;

use common::*;
use serde_json::{Value, json};

/// workspace-write with only the workspace writable (no /tmp, no $TMPDIR).
fn ws_policy() -> Value {
    json!({"type": "workspace-write", "network_access": false,
           "exclude_slash_tmp": true, "exclude_tmpdir_env_var": true})
}

/// Runs `script` under `sh -c` confined to the workspace; returns the `process/exited` params
/// and the `process/read` result after close.
async fn run_confined(
    c: &Client,
    id: &str,
    s: &Scratch,
    script: &str,
    extra: Value,
) -> (Value, Value, ProcEvents) {
    let mut params = json!({"cwd": s.ws().to_str().unwrap(), "sandboxPolicy": ws_policy()});
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    c.start_with(id, &["sh", "-c", script], params)
        .await
        .unwrap();
    let ev = c.closed(id).await;
    let read = c.ok("process/read", json!({"processId": id})).await;
    (ev.exited.clone().unwrap(), read, ev)
}

/// A write the sandbox really refuses, printed by the shell, followed by `exit <code>`.
fn refused_write_then(s: &Scratch, tail: &str) -> String {
    format!("echo x > {}/refused; {tail}", s.outside().display())
}

fn assert_refused_text(ev: &ProcEvents) {
    let err = String::from_utf8_lossy(&ev.stderr);
    assert!(
        err.contains("Permission denied") || err.contains("Read-only file system"),
        "the refused write was not reported by the shell: {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_in_a_command_that_succeeds_is_not_sandbox_denied() {
    let s = Scratch::new("denok");
    let c = Client::new(Transport::Stdio, &[]).await;
    let (exited, read, ev) =
        run_confined(&c, "ok", &s, &refused_write_then(&s, "exit 0"), json!({})).await;
    assert_refused_text(&ev);
    assert!(!s.outside().join("refused").exists());
    assert_eq!(exited["exitCode"], 0);
    assert_eq!(exited["sandboxDenied"], false, "{exited}");
    assert_eq!(read["sandboxDenied"], false, "{read}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_in_a_command_that_fails_is_sandbox_denied() {
    let s = Scratch::new("denfail");
    let c = Client::new(Transport::Stdio, &[]).await;
    let (exited, read, ev) =
        run_confined(&c, "f", &s, &refused_write_then(&s, "exit 1"), json!({})).await;
    assert_refused_text(&ev);
    assert_eq!(exited["exitCode"], 1);
    assert_eq!(exited["sandboxDenied"], true, "{exited}");
    assert_eq!(read["sandboxDenied"], true, "{read}");
    assert_eq!(read["exited"], true);
    // A signal death is a failure too.
    let (exited, read, _) = run_confined(
        &c,
        "k",
        &s,
        &refused_write_then(&s, "kill -KILL $$"),
        json!({}),
    )
    .await;
    assert_eq!(exited["signal"], "SIGKILL", "{exited}");
    assert_eq!(exited["sandboxDenied"], true, "{exited}");
    assert_eq!(read["sandboxDenied"], true, "{read}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_in_a_command_that_timed_out_is_not_sandbox_denied() {
    let s = Scratch::new("dentime");
    let c = Client::new(Transport::Stdio, &[]).await;
    // The refusal is printed before the sleep; the wall-time limit then kills the tree.
    let (exited, read, ev) = run_confined(
        &c,
        "t",
        &s,
        &refused_write_then(&s, "exec sleep 60"),
        json!({"limits": {"wallTimeMs": 1000}}),
    )
    .await;
    assert_refused_text(&ev);
    assert_eq!(exited["timedOut"], true, "{exited}");
    assert_eq!(exited["sandboxDenied"], false, "{exited}");
    assert_eq!(read["sandboxDenied"], false, "{read}");
    // Same for the output limit.
    let (exited, read, _) = run_confined(
        &c,
        "o",
        &s,
        &refused_write_then(&s, "exec yes"),
        json!({"limits": {"maxOutputBytes": 100000}}),
    )
    .await;
    assert_eq!(exited["outputLimitExceeded"], true, "{exited}");
    assert_eq!(exited["sandboxDenied"], false, "{exited}");
    assert_eq!(read["sandboxDenied"], false, "{read}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfined_failure_is_never_sandbox_denied() {
    let s = Scratch::new("denfree");
    let c = Client::new(Transport::Stdio, &["--ceiling", "danger-full-access"]).await;
    let script = "echo 'sh: 1: cannot create /x: Permission denied' >&2; exit 1";
    c.start_with(
        "u",
        &["sh", "-c", script],
        json!({"cwd": s.ws().to_str().unwrap(), "sandboxPolicy": {"type": "danger-full-access"}}),
    )
    .await
    .unwrap();
    let ev = c.closed("u").await;
    let exited = ev.exited.unwrap();
    assert_eq!(exited["exitCode"], 1);
    assert_eq!(exited["sandboxDenied"], false, "{exited}");
    let read = c.ok("process/read", json!({"processId": "u"})).await;
    assert_eq!(read["sandboxDenied"], false, "{read}");
}

/// A `process/start` object exactly as the Codex CLI 0.169 sent it (`codex exec -s <mode>` with
/// `CODEX_EXEC_SERVER_URL`, captured on the wire; `tests/fixtures/README.md`), with `@WS@` for
/// its workspace and `argv[2]` (the `bash -lc` script) replaced.
fn codex_cli_start(mode: &str, ws: &std::path::Path, script: &str) -> Value {
    // Compiled in: uid 65534 cannot read the checkout in the unprivileged CI pass.
    let text = match mode {
        "workspace-write" => include_str!("fixtures/codex-0.169-start-workspace-write.json"),
        "read-only" => include_str!("fixtures/codex-0.169-start-read-only.json"),
        "danger-full-access" => include_str!("fixtures/codex-0.169-start-danger-full-access.json"),
        other => panic!("no fixture for {other}"),
    };
    let mut v: Value = serde_json::from_str(&text.replace("@WS@", ws.to_str().unwrap())).unwrap();
    assert_eq!(v["argv"][1], "-lc");
    v["argv"][2] = json!(script);
    v
}

/// A stdio server whose own `HOME` is `home` (the captured request inherits the environment).
async fn server_with_home(home: &std::path::Path) -> Client {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.arg("serve").env("HOME", home);
    let mut c = Client::stdio_cmd(cmd).await;
    c.initialize().await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_cli_login_shell_with_incidental_refusal_is_not_sandbox_denied() {
    let s = Scratch::new("dencodex");
    // A login shell's profile that writes a cache where the policy refuses it: here the
    // workspace's `.git`, which the Codex profile protects (read, `missing_path_behavior:
    // skip`). A real sandbox refusal for root and uid 65534 alike (both own the directory).
    std::fs::create_dir(s.ws().join(".git")).unwrap();
    let home = s.outside();
    std::fs::write(
        home.join(".bash_profile"),
        "echo status > \"$PWD/.git/prompt-cache\"\n",
    )
    .unwrap();
    let c = server_with_home(&home).await;
    let start = codex_cli_start("workspace-write", &s.ws(), "echo result");
    let id = start["processId"].as_str().unwrap().to_string();
    let r = c.call("process/start", start).await.unwrap();
    assert_eq!(r["sandboxType"], "linuxSeccomp");
    let ev = c.closed(&id).await;
    assert_refused_text(&ev);
    assert!(!s.ws().join(".git/prompt-cache").exists());
    assert_eq!(String::from_utf8_lossy(&ev.stdout), "result\n");
    let exited = ev.exited.unwrap();
    assert_eq!(exited["exitCode"], 0);
    assert_eq!(exited["sandboxDenied"], false, "{exited}");
    let read = c.ok("process/read", json!({"processId": id})).await;
    assert_eq!(read["sandboxDenied"], false, "{read}");
    // The same command failing after the refusal is reported as denied.
    let c = server_with_home(&home).await;
    let start = codex_cli_start("workspace-write", &s.ws(), "echo result; exit 3");
    let id = start["processId"].as_str().unwrap().to_string();
    c.call("process/start", start).await.unwrap();
    let exited = c.closed(&id).await.exited.unwrap();
    assert_eq!(exited["exitCode"], 3);
    assert_eq!(exited["sandboxDenied"], true, "{exited}");
}

/// Starts `argv` with `extra` params; returns the error object of the refused start.
async fn refused(c: &Client, id: &str, s: &Scratch, extra: Value) -> Value {
    let mut params = json!({"cwd": s.ws().to_str().unwrap()});
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    let e = c
        .start_with(id, &["true"], params)
        .await
        .expect_err("a misspelled policy key must be refused");
    // Nothing was started.
    let r = c.call("process/read", json!({"processId": id})).await;
    assert!(r.is_err(), "{id} exists after a refused start: {r:?}");
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misspelled_policy_keys_are_refused_naming_them() {
    let s = Scratch::new("strictkeys");
    let ws = s.ws().to_str().unwrap().to_string();
    let c = Client::new(Transport::Stdio, &[]).await;
    let mut codex = codex_cli_start("workspace-write", &s.ws(), "true");
    codex["sandbox"]["permissions"]["file_system"]["entries"][4]["missing_path_behaviour"] =
        json!("skip");
    let mut codex_top = codex_cli_start("workspace-write", &s.ws(), "true");
    codex_top["sandbox"]["workspaceRoot"] = codex_top["sandbox"]["workspaceRoots"].clone();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"sandboxPolicy": {"type": "workspace-write", "writeable_roots": [ws]}}),
            "sandboxPolicy.writeable_roots: unknown field (did you mean writable_roots?)",
        ),
        (
            json!({"sandboxPolicy": {"type": "read-only", "netwrok_access": false}}),
            "sandboxPolicy.netwrok_access: unknown field (did you mean network_access?)",
        ),
        (
            json!({"sandboxPolicy": {"type": "workspace-write",
                   "read_only_access": {"type": "restricted", "readable_root": []}}}),
            "sandboxPolicy.read_only_access.readable_root: unknown field (did you mean readable_roots?)",
        ),
        (
            json!({"sandbox": codex["sandbox"].clone()}),
            "sandbox.permissions.file_system.entries[4].missing_path_behaviour: unknown field (did you mean missing_path_behavior?)",
        ),
        (
            json!({"sandbox": codex_top["sandbox"].clone()}),
            "sandbox.workspaceRoot: unknown field (did you mean workspaceRoots?)",
        ),
        (
            json!({"envPolicy": {"inherit": "core", "includeonly": ["PATH"]}}),
            "envPolicy.includeonly: unknown field (did you mean includeOnly?)",
        ),
        (
            json!({"limits": {"wallTimeMS": 1000}}),
            "limits.wallTimeMS: unknown field (did you mean wallTimeMs?)",
        ),
    ];
    for (i, (extra, want)) in cases.into_iter().enumerate() {
        let e = refused(&c, &format!("k{i}"), &s, extra).await;
        assert_eq!(e["code"], -32602, "{e}");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(want), "case {i}: {msg}");
    }
    // The same objects on a filesystem call.
    let e = c
        .call(
            "fs/readFile",
            json!({"path": s.ws().join("x").to_str().unwrap(),
                   "sandboxPolicy": {"type": "read-only", "netwrok_access": false}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32602, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("sandboxPolicy.netwrok_access: unknown field (did you mean network_access?)"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_cli_objects_are_accepted_as_sent() {
    let s = Scratch::new("strictcodex");
    let c = Client::new(Transport::Stdio, &["--ceiling", "danger-full-access"]).await;
    for mode in ["workspace-write", "read-only", "danger-full-access"] {
        let start = codex_cli_start(mode, &s.ws(), "echo result");
        let id = start["processId"].as_str().unwrap().to_string();
        let r = c.call("process/start", start).await;
        let r = r.unwrap_or_else(|e| panic!("{mode}: the Codex CLI's object was refused: {e}"));
        // `danger-full-access` comes as `"sandbox": null`: no policy, so the server's default.
        assert_eq!(r["sandboxType"], "linuxSeccomp", "{mode}");
        let ev = c.closed(&id).await;
        assert_eq!(String::from_utf8_lossy(&ev.stdout), "result\n", "{mode}");
        assert_eq!(ev.exited.unwrap()["exitCode"], 0, "{mode}");
    }
    // The same `sandbox` object on a filesystem call, as Codex sends it there.
    std::fs::write(s.ws().join("f"), "data").unwrap();
    let start = codex_cli_start("workspace-write", &s.ws(), "true");
    let r = c
        .ok(
            "fs/readFile",
            json!({"path": format!("file://{}/f", s.ws().display()), "sandbox": start["sandbox"]}),
        )
        .await;
    assert_eq!(unb64(r["dataBase64"].as_str().unwrap()), b"data");
}

/// `stockade <args>` with a clean environment; returns (exit code, stderr).
fn stockade(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(bin())
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn policy_files_name_the_key_and_its_line() {
    let s = Scratch::new("strictfiles");
    let file = |name: &str, text: &str| {
        let p = s.root.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let policy = file(
        "policy.toml",
        "# run policy\n[env]\ninherit = \"core\"\n\n[sandbox]\ntype = \"workspace-write\"\nwriteable_roots = [\"/tmp\"]\n",
    );
    let (code, err) = stockade(&["run", "--policy", &policy, "--", "true"]);
    assert_eq!(code, Some(125), "{err}");
    assert!(
        err.contains(
            "line 7: sandbox.writeable_roots: unknown field (did you mean writable_roots?)"
        ),
        "{err}"
    );
    let policy = file(
        "env.toml",
        "[env]\ninherit = \"core\"\ninclude_onyl = [\"PATH\"]\n",
    );
    let (code, err) = stockade(&["run", "--policy", &policy, "--", "true"]);
    assert_eq!(code, Some(125), "{err}");
    assert!(
        err.contains("line 3, column 1: include_onyl: unknown field (did you mean include_only?)"),
        "{err}"
    );
    let config = file(
        "server.toml",
        "[sandbox]\nceiling = \"workspace-write\"\ndefault_policy = { type = \"read-only\", netwrok_access = true }\n",
    );
    let (code, err) = stockade(&["run", "--config", &config, "--", "true"]);
    assert_eq!(code, Some(125), "{err}");
    assert!(
        err.contains("line 3: sandbox.default_policy.netwrok_access: unknown field (did you mean network_access?)"),
        "{err}"
    );
    // The server refuses to start with it.
    let (code, err) = stockade(&["serve", "--config", &config]);
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains("sandbox.default_policy.netwrok_access"),
        "{err}"
    );
    // A correct policy file runs.
    let policy = file(
        "good.toml",
        "[env]\ninherit = \"core\"\n\n[sandbox]\ntype = \"workspace-write\"\nwritable_roots = []\nnetwork_access = false\n",
    );
    let (code, err) = stockade(&[
        "run",
        "--policy",
        &policy,
        "--cwd",
        s.ws().to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(code, Some(0), "{err}");
}
