//! Hardening of the supervisor itself (issue 15 items 1, 4; issue 14 item 10): a confined
//! process cannot find the server's credentials and drive it, and the operator's bounds on
//! what a policy may make writable hold whatever path spelling a request uses.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What a confined process does to take over its supervisor: walk up its parents to find the
/// server's command line, read the `--ws-token-file` named there, try to replace or remove the
/// file, and open the server's WebSocket port with whatever token it found.
const ATTACK: &str = r#"
found=""; pid=$$
for i in 1 2 3 4 5 6 7 8 9 10; do
  read -r stat < /proc/$pid/stat || break
  set -- ${stat##*) }
  ppid=$2
  [ -n "$ppid" ] && [ "$ppid" != 0 ] || break
  f=$(tr '\0' '\n' < /proc/$ppid/cmdline 2>/dev/null | sed -n '/^--ws-token-file$/{n;p;q;}')
  if [ -n "$f" ]; then found=$f; break; fi
  pid=$ppid
done
echo "found-file=$found"
if tok=$(cat "$found" 2>/dev/null); then echo "token-read=$tok"; else echo "token-read-failed"; fi
if env_tok=$(tr '\0' '\n' < /proc/$ppid/environ 2>/dev/null); then echo "environ-read"; fi
rm -f "$found" 2>/dev/null && echo "rm-ok"
mv "$found" "$found.moved" 2>/dev/null && echo "mv-ok"
(echo forged > "$found") 2>/dev/null && echo "write-ok"
if { exec 3<>/dev/tcp/127.0.0.1/$PORT; } 2>/dev/null; then
  printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n' "$tok" >&3
  IFS= read -r -t 20 status <&3
  echo "upgrade-status=$status"
else
  echo "connect-failed"
fi
echo attack-done
"#;

fn port_of(url: &str) -> String {
    url.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string()
}

fn line_value<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.strip_prefix(key))
}

/// The verdicts every variant of the attack must end with.
fn assert_attack_failed(out: &str, token: &str) {
    assert!(out.contains("attack-done"), "the attack did not run: {out}");
    assert!(
        !out.contains(token),
        "the confined process saw the token: {out}"
    );
    assert!(out.contains("token-read-failed"), "{out}");
    for verdict in ["rm-ok", "mv-ok", "write-ok"] {
        assert!(
            !out.lines().any(|l| l == verdict),
            "the confined process could {verdict}: {out}"
        );
    }
    let status = line_value(out, "upgrade-status=");
    assert!(
        out.lines().any(|l| l == "connect-failed")
            || status.is_some_and(|s| s.starts_with("HTTP/1.1 401")),
        "the server's port accepted the confined process: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_enabled_process_cannot_take_the_ws_token_and_drive_the_server() {
    let s = Scratch::new("tokfile");
    // Inside the process's own writable root: hidden, and not replaceable either.
    let token_file = s.ws().join("ws-token");
    let token = format!("tok-{}", marker("t"));
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let (child, url) =
        Client::spawn_ws_server(&["--ws-token-file", token_file.to_str().unwrap()]).await;
    let mut c = Client::ws_connect(&url, &[("Authorization", &format!("Bearer {token}"))])
        .await
        .expect("the right token is accepted");
    c.server = Some(child);
    c.initialize().await;
    let ws = s.ws();
    let ev = c
        .run_extra(
            "attack",
            &["bash", "-c", ATTACK],
            json!({
                "cwd": ws,
                "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "PORT": port_of(&url)},
                "sandboxPolicy": {"type": "workspace-write", "network_access": true},
            }),
        )
        .await;
    let out = String::from_utf8_lossy(&ev.stdout).into_owned();
    // The process did find the file the server names: the rest is not vacuous.
    assert_eq!(
        line_value(&out, "found-file="),
        Some(token_file.to_str().unwrap()),
        "{out}\nstderr: {}",
        String::from_utf8_lossy(&ev.stderr)
    );
    assert_attack_failed(&out, &token);
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap(),
        format!("{token}\n"),
        "the token file was changed"
    );
    // A second spawn (possibly joining the first one's namespace) is refused the same way,
    // and so is every filesystem call on the file, under any policy.
    let ev = c
        .run_extra(
            "again",
            &[
                "sh",
                "-c",
                "cat \"$1\" || echo refused",
                "sh",
                token_file.to_str().unwrap(),
            ],
            json!({"cwd": ws, "sandboxPolicy": {"type": "read-only"}}),
        )
        .await;
    let out = String::from_utf8_lossy(&ev.stdout);
    assert!(!out.contains(&token) && out.contains("refused"), "{out}");
    let path = token_file.to_str().unwrap();
    for policy in [
        json!({}),
        json!({"sandboxPolicy": {"type": "read-only"}}),
        json!({"sandboxPolicy": {"type": "workspace-write", "writable_roots": [ws]}}),
        json!({"sandboxCwd": ws}),
    ] {
        let mut params = json!({"path": path});
        for (k, v) in policy.as_object().unwrap() {
            params[k] = v.clone();
        }
        let read = c.call("fs/readFile", params.clone()).await;
        assert!(
            read.is_err(),
            "fs/readFile of the token under {policy}: {read:?}"
        );
        let mut write = params.clone();
        write["dataBase64"] = json!(b64(b"forged"));
        assert!(c.call("fs/writeFile", write).await.is_err(), "{policy}");
        let mut remove = params.clone();
        remove["recursive"] = json!(false);
        assert!(c.call("fs/remove", remove).await.is_err(), "{policy}");
        let mut copy = params.clone();
        copy["sourcePath"] = json!(path);
        copy["destinationPath"] = json!(ws.join("copied").to_str().unwrap());
        copy.as_object_mut().unwrap().remove("path");
        let _ = c.call("fs/copy", copy).await;
        assert!(
            !ws.join("copied").exists() || {
                let copied = std::fs::read_to_string(ws.join("copied")).unwrap_or_default();
                !copied.contains(&token)
            }
        );
    }
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap(),
        format!("{token}\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_directory_does_not_unhide_the_token_for_the_next_spawn() {
    let s = Scratch::new("tokmove");
    std::fs::create_dir_all(s.ws().join("d")).unwrap();
    let token_file = s.ws().join("d/ws-token");
    let token = format!("tok-{}", marker("m"));
    std::fs::write(&token_file, &token).unwrap();
    let (child, url) =
        Client::spawn_ws_server(&["--ws-token-file", token_file.to_str().unwrap()]).await;
    let mut c = Client::ws_connect(&url, &[("Authorization", &format!("Bearer {token}"))])
        .await
        .unwrap();
    c.server = Some(child);
    c.initialize().await;
    let ws = s.ws();
    let ev = c
        .run_extra(
            "mv",
            &[
                "sh",
                "-c",
                "mv d e && mkdir d && echo decoy > d/ws-token && echo moved",
            ],
            json!({"cwd": ws}),
        )
        .await;
    assert!(
        String::from_utf8_lossy(&ev.stdout).contains("moved"),
        "{}",
        String::from_utf8_lossy(&ev.stderr)
    );
    let ev = c
        .run_extra(
            "read",
            &["sh", "-c", "cat e/ws-token; echo; echo end"],
            json!({"cwd": ws}),
        )
        .await;
    let out = String::from_utf8_lossy(&ev.stdout);
    assert!(out.contains("end") && !out.contains(&token), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_is_hidden_even_under_external_sandbox() {
    let s = Scratch::new("cfg");
    let cfg = s.ws().join("server.toml");
    std::fs::write(
        &cfg,
        "# secret-marker-cfg\n[sandbox]\nceiling = \"external-sandbox\"\n",
    )
    .unwrap();
    let c = Client::new(Transport::Stdio, &["--config", cfg.to_str().unwrap()]).await;
    let ws = s.ws();
    for (id, policy) in [
        ("ww", json!({"type": "workspace-write"})),
        ("ro", json!({"type": "read-only"})),
        ("ext", json!({"type": "external-sandbox"})),
    ] {
        let ev = c
            .run_extra(
                id,
                &["sh", "-c", "cat server.toml; echo; echo end"],
                json!({"cwd": ws, "sandboxPolicy": policy}),
            )
            .await;
        let out = String::from_utf8_lossy(&ev.stdout);
        assert!(
            out.contains("end") && !out.contains("secret-marker-cfg"),
            "{policy}: {out}"
        );
        let read = c
            .call(
                "fs/readFile",
                json!({"path": cfg, "sandboxPolicy": policy, "sandboxCwd": ws}),
            )
            .await;
        assert!(
            read.is_err(),
            "fs/readFile of the config under {policy}: {read:?}"
        );
    }
    // danger-full-access confines nothing (and is above this ceiling anyway).
    assert!(
        std::fs::read_to_string(&cfg)
            .unwrap()
            .contains("secret-marker-cfg")
    );
}

async fn spawn_ws_server_with_env(args: &[&str], var: &str, value: &str) -> (Child, String) {
    let mut child = Command::new(bin())
        .arg("serve")
        .arg("--listen")
        .arg("ws://127.0.0.1:0")
        .args(args)
        .env(var, value)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn stockade");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("server printed its URL")
        .unwrap()
        .unwrap_or_else(|| panic!("the server did not start with {args:?}"));
    (child, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_the_environment_reaches_no_child_and_no_proc_environ() {
    let s = Scratch::new("tokenv");
    let token = format!("envtok-{}", marker("e"));
    let (child, url) =
        spawn_ws_server_with_env(&["--ws-token-env", "STK_WS_AUTH"], "STK_WS_AUTH", &token).await;
    let server_pid = child.id().unwrap();
    // The server's own environment as /proc shows it no longer holds the value.
    let environ = std::fs::read(format!("/proc/{server_pid}/environ")).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains(&token),
        "/proc/<server>/environ still holds the token"
    );
    assert!(
        String::from_utf8_lossy(&environ).contains("PATH="),
        "the environment was readable"
    );
    assert!(
        Client::ws_connect(&url, &[]).await.is_err(),
        "no token: 401"
    );
    assert!(
        Client::ws_connect(&url, &[("Authorization", "Bearer wrong")])
            .await
            .is_err()
    );
    let mut c = Client::ws_connect(&url, &[("Authorization", &format!("Bearer {token}"))])
        .await
        .expect("the environment's token is accepted");
    c.server = Some(child);
    c.initialize().await;
    let ev = c
        .run_extra(
            "env",
            &["sh", "-c", "env; echo end"],
            json!({
                "cwd": s.ws(),
                "envPolicy": {"inherit": "all", "ignoreDefaultExcludes": true},
            }),
        )
        .await;
    let out = String::from_utf8_lossy(&ev.stdout);
    assert!(
        out.contains("PATH="),
        "the environment was inherited: {out}"
    );
    assert!(out.contains("end") && !out.contains(&token), "{out}");
    assert!(!out.contains("STK_WS_AUTH"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_env_flag_needs_a_set_variable() {
    let out = std::process::Command::new(bin())
        .args([
            "serve",
            "--listen",
            "ws://127.0.0.1:0",
            "--ws-token-env",
            "STK_UNSET_VAR_X",
        ])
        .env_remove("STK_UNSET_VAR_X")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("STK_UNSET_VAR_X"), "{err}");
}

// ---- 14.10: writable roots that are the whole host ----

fn code(e: &Value) -> i64 {
    e["code"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writable_roots_that_are_the_host_are_refused() {
    let c = Client::new(Transport::Stdio, &[]).await;
    let home = std::env::var("HOME").unwrap();
    let ww = |roots: Vec<&str>| json!({"type": "workspace-write", "writable_roots": roots});
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/", json!({"type": "workspace-write"}), "/"),
        ("/tmp", ww(vec!["/"]), "/"),
        ("/tmp", ww(vec!["/etc"]), "/etc"),
        ("/tmp", ww(vec!["/usr/"]), "/usr"),
        ("/tmp", ww(vec!["/tmp/.."]), "/"),
        ("/tmp", ww(vec!["/lib"]), "/lib"),
        ("/tmp", ww(vec!["/bin"]), "/bin"),
        ("/tmp", ww(vec!["/var"]), "/var"),
        ("/tmp", ww(vec!["/proc/self/root"]), "/proc/self/root"),
        ("/usr", json!({"type": "workspace-write"}), "/usr"),
        // Inside a system tree (found by review: `/proc/sys/kernel` was accepted, and
        // `core_pattern` there is host root for a confined uid 0).
        ("/tmp", ww(vec!["/proc/sys/kernel"]), "/proc/sys/kernel"),
        ("/tmp", ww(vec!["/etc/cron.d"]), "/etc/cron.d"),
        ("/tmp", ww(vec!["/usr/local/bin"]), "/usr/local/bin"),
        ("/tmp", ww(vec!["/sys/fs/cgroup"]), "/sys/fs/cgroup"),
        (
            "/tmp",
            ww(vec!["/lib/x86_64-linux-gnu"]),
            "/lib/x86_64-linux-gnu",
        ),
        ("/tmp", ww(vec!["/var/spool"]), "/var/spool"),
    ];
    // `$HOME` itself, unless it is also the server's `$TMPDIR` (the unprivileged CI pass sets
    // both to one directory): the operator's own temporary root stays usable.
    let mut cases = cases;
    let tmpdir = std::env::var("TMPDIR").ok();
    let same = |a: &str, b: &str| {
        std::fs::canonicalize(a).ok().is_some()
            && std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok()
    };
    if !tmpdir.as_deref().is_some_and(|t| same(t, &home)) {
        cases.push(("/tmp", ww(vec![&home]), &home));
    }
    for (i, (cwd, policy, named)) in cases.iter().enumerate() {
        let e = c
            .start_with(
                &format!("p{i}"),
                &["true"],
                json!({"cwd": cwd, "sandboxPolicy": policy}),
            )
            .await
            .expect_err(&format!("cwd {cwd} with {policy} was accepted"));
        assert_eq!(code(&e), -32020, "{policy}: {e}");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(&format!("writable path {named}")), "{msg}");
        assert!(msg.contains("allow_system_writable_roots"), "{msg}");
        // The filesystem API under the same policy is refused the same way.
        let e = c
            .call(
                "fs/getMetadata",
                json!({"path": "/etc/hostname", "sandboxCwd": cwd, "sandboxPolicy": policy}),
            )
            .await
            .unwrap_err();
        assert_eq!(code(&e), -32020, "fs under {policy}: {e}");
    }
    // The `sandbox` shape: a write entry on the root, or on the cwd `/`.
    let sandbox = json!({"permissions": {"type": "managed", "network": "restricted",
        "file_system": {"type": "restricted", "entries": [
            {"path": {"type": "special", "value": {"kind": "root"}}, "access": "write"}]}}});
    let e = c
        .start_with("s1", &["true"], json!({"sandbox": sandbox}))
        .await
        .unwrap_err();
    assert_eq!(code(&e), -32020, "{e}");
    // A TMPDIR the client chooses is not the operator's: TMPDIR=/etc is refused.
    let e = c
        .start_with(
            "t1",
            &["true"],
            json!({"env": {"PATH": "/usr/bin:/bin", "TMPDIR": "/etc"},
                   "sandboxPolicy": {"type": "workspace-write"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), -32020, "{e}");
    // Ordinary workspaces still work.
    let s = Scratch::new("sysroots");
    let ev = c
        .run_extra(
            "ok",
            &["sh", "-c", "echo hi > f && cat f"],
            json!({"cwd": s.ws()}),
        )
        .await;
    assert_eq!(String::from_utf8_lossy(&ev.stdout), "hi\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_can_allow_system_writable_roots() {
    let c = Client::new(Transport::Stdio, &["--allow-system-writable-roots"]).await;
    let ev = c
        .run_extra("root", &["sh", "-c", "pwd"], json!({"cwd": "/"}))
        .await;
    assert_eq!(String::from_utf8_lossy(&ev.stdout), "/\n");
}

// ---- 15.4: workspace_roots bound what a request may make writable ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_workspace_roots_are_refused() {
    let s = Scratch::new("wsroots");
    let ws = s.ws();
    let outside = s.outside();
    std::os::unix::fs::symlink(&outside, ws.join("escape")).unwrap();
    let cfg = s.root.join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "[sandbox]\nworkspace_roots = [\"{}\"]\nallow_tmp_roots = false\nceiling = \"external-sandbox\"\n",
            ws.display()
        ),
    )
    .unwrap();
    let c = Client::new(Transport::Stdio, &["--config", cfg.to_str().unwrap()]).await;
    let no_tmp = |extra: Value| {
        let mut p = json!({"type": "workspace-write", "exclude_slash_tmp": true,
                           "exclude_tmpdir_env_var": true});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    let escape = ws.join("escape");
    let escape_sub = ws.join("escape/sub");
    let cases: Vec<(&std::path::Path, Value, &std::path::Path)> = vec![
        (&outside, no_tmp(json!({})), &outside),
        (&ws, no_tmp(json!({"writable_roots": [outside]})), &outside),
        (&ws, no_tmp(json!({"writable_roots": [escape]})), &escape),
        (
            &ws,
            no_tmp(json!({"writable_roots": [escape_sub]})),
            &escape_sub,
        ),
        (&escape, no_tmp(json!({})), &escape),
        (
            &ws,
            json!({"type": "workspace-write", "exclude_tmpdir_env_var": true}),
            std::path::Path::new("/tmp"),
        ),
    ];
    for (i, (cwd, policy, named)) in cases.iter().enumerate() {
        let e = c
            .start_with(
                &format!("p{i}"),
                &["true"],
                json!({"cwd": cwd, "sandboxPolicy": policy}),
            )
            .await
            .expect_err(&format!("cwd {} with {policy} was accepted", cwd.display()));
        assert_eq!(code(&e), -32020, "{e}");
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("writable path {}", named.display()))
                && msg.contains("outside this server's workspace roots"),
            "{msg}"
        );
        let e = c
            .call(
                "fs/writeFile",
                json!({"path": ws.join("x"), "dataBase64": b64(b"x"),
                       "sandboxCwd": cwd, "sandboxPolicy": policy}),
            )
            .await
            .unwrap_err();
        assert_eq!(code(&e), -32020, "fs under {policy}: {e}");
    }
    assert!(!ws.join("x").exists());
    // The `sandbox` shape: project roots and write entries outside.
    let uri = |p: &std::path::Path| format!("file://{}", p.display());
    let managed = |entries: Value, roots: Vec<String>| {
        json!({"permissions": {"type": "managed", "network": "restricted",
            "file_system": {"type": "restricted", "entries": entries}},
            "cwd": uri(&ws), "workspaceRoots": roots})
    };
    let project_roots = json!([{"path": {"type": "special", "value": {"kind": "project_roots"}},
                                "access": "write"}]);
    let write_outside = json!([{"path": {"type": "path", "path": outside}, "access": "write"}]);
    for sandbox in [
        managed(project_roots.clone(), vec![uri(&outside)]),
        managed(write_outside, vec![uri(&ws)]),
    ] {
        let e = c
            .start_with("m", &["true"], json!({"cwd": ws, "sandbox": sandbox}))
            .await
            .expect_err(&format!("{sandbox} was accepted"));
        assert_eq!(code(&e), -32020, "{e}");
    }
    // Unrestricted filesystems write everywhere: refused under a path bound.
    let e = c
        .start_with(
            "ext",
            &["true"],
            json!({"cwd": ws, "sandboxPolicy": {"type": "external-sandbox"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), -32020, "{e}");
    // Inside the bound: works, for processes and fs calls.
    let ev = c
        .run_extra(
            "in",
            &["sh", "-c", "mkdir -p sub && echo in > sub/f && cat sub/f"],
            json!({"cwd": ws, "sandboxPolicy": no_tmp(json!({}))}),
        )
        .await;
    assert_eq!(String::from_utf8_lossy(&ev.stdout), "in\n");
    let sandbox = managed(project_roots, vec![uri(&ws)]);
    c.ok(
        "fs/writeFile",
        json!({"path": ws.join("y"), "dataBase64": b64(b"y"), "sandbox": sandbox, "sandboxCwd": ws}),
    )
    .await;
    assert_eq!(std::fs::read(ws.join("y")).unwrap(), b"y");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmp_roots_stay_allowed_unless_the_operator_excludes_them() {
    let s = Scratch::new("wstmp");
    let ws = s.ws();
    let c = Client::new(
        Transport::Stdio,
        &["--workspace-root", ws.to_str().unwrap()],
    )
    .await;
    // The default policy adds /tmp: allowed by default, and so is a root inside /tmp.
    let ev = c
        .run_extra(
            "tmp",
            &["true"],
            json!({"cwd": ws, "sandboxPolicy": {"type": "workspace-write", "writable_roots": ["/tmp"]}}),
        )
        .await;
    assert_eq!(ev.exited.unwrap()["exitCode"], 0);
    // /var/tmp is not /tmp.
    let e = c
        .start_with(
            "vt",
            &["true"],
            json!({"cwd": ws, "sandboxPolicy": {"type": "workspace-write", "writable_roots": ["/var/tmp"]}}),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), -32020, "{e}");
    assert!(e["message"].as_str().unwrap().contains("/var/tmp"), "{e}");
}
