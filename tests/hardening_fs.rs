//! Issue 15, items 2 and 3: the filesystem API is no way around the sandbox.
//!
//! - fs calls never see the server's own process: `/proc/self`, `/proc/thread-self`, the
//!   server's pid and thread ids, the zygote and the keepers are refused under every
//!   confining policy, however the path reaches them (symlinks, `/dev/fd`, `..`, `.`,
//!   `sandboxCwd: /proc`); `/proc/<pid>` of a confined process of the same client answers as
//!   it does for a process under the same policy.
//! - fs workers hold exactly a process's privileges: under a root server they hold no
//!   capability (DAC applies), and neither `fs/writeFile` nor `fs/copy` re-applies setuid or
//!   setgid bits.
//!
//! `.ci/run` runs this file as root and again as uid 65534.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use common::*;
use serde_json::{Value, json};

const PY: &str = "/usr/bin/python3";

fn is_root() -> bool {
    nix_uid() == 0
}

fn nix_uid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// A server whose environment holds a secret (as an operator's token would be), with the
/// given extra arguments. It allows writable roots like `/proc` and `/dev`: the policies that
/// make `/proc` writable are the strongest attacks here.
async fn server_with_secret(secret: &str, args: &[&str]) -> Client {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.arg("serve")
        .arg("--allow-system-writable-roots")
        .args(args)
        .env("HARDENING_FS_SECRET", secret);
    let mut c = Client::stdio_cmd(cmd).await;
    c.initialize().await;
    c
}

fn server_pid(c: &Client) -> u32 {
    c.server.as_ref().unwrap().id().unwrap()
}

/// `(pid, ppid)` of every process.
fn all_parents() -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        out.push((pid, ppid));
    }
    out
}

/// The server's zygote and its keepers (idle ones included): the children and
/// grandchildren of the server.
fn zygote_and_keepers(server: u32) -> (u32, Vec<u32>) {
    let parents = all_parents();
    let zygotes: Vec<u32> = parents
        .iter()
        .filter(|(_, pp)| *pp == server)
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(zygotes.len(), 1, "one zygote: {zygotes:?}");
    let keepers: Vec<u32> = parents
        .iter()
        .filter(|(_, pp)| *pp == zygotes[0])
        .map(|(p, _)| *p)
        .collect();
    assert!(!keepers.is_empty(), "the zygote keeps idle keepers");
    (zygotes[0], keepers)
}

fn threads(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().parse().unwrap())
        .collect()
}

/// The confining policy shapes, each as the params of an fs call.
fn confining_policies(ws: &Path) -> Vec<(&'static str, Value)> {
    let ws_s = ws.to_str().unwrap();
    vec![
        (
            "read-only",
            json!({"sandboxPolicy": {"type": "read-only"}, "sandboxCwd": ws_s}),
        ),
        (
            "workspace-write",
            json!({"sandboxPolicy": {"type": "workspace-write"}, "sandboxCwd": ws_s}),
        ),
        (
            "workspace-write with sandboxCwd /proc",
            json!({"sandboxPolicy": {"type": "workspace-write"}, "sandboxCwd": "/proc"}),
        ),
        (
            "workspace-write with /proc writable",
            json!({"sandboxPolicy": {"type": "workspace-write", "writable_roots": ["/proc", "/dev"]},
                   "sandboxCwd": ws_s}),
        ),
        (
            "external-sandbox",
            json!({"sandboxPolicy": {"type": "external-sandbox"}, "sandboxCwd": ws_s}),
        ),
        (
            "managed profile, / readable, /proc writable",
            json!({"sandbox": {"permissions": {"type": "managed", "network": "restricted",
                "file_system": {"type": "restricted", "entries": [
                    {"path": {"type": "path", "path": "/"}, "access": "read"},
                    {"path": {"type": "path", "path": "/proc"}, "access": "write"},
                    {"path": {"type": "path", "path": ws_s}, "access": "write"}]}},
                "cwd": format!("file://{ws_s}")}}),
        ),
    ]
}

fn with(policy: &Value, params: Value) -> Value {
    let mut p = params;
    for (k, v) in policy.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

/// The answer must be a refusal (-32600) and carry nothing of the server's environment.
fn assert_refused(what: &str, r: &Result<Value, Value>, secret: &str) {
    let text = match r {
        Ok(v) => v.to_string(),
        Err(e) => e.to_string(),
    };
    assert!(!text.contains(secret), "{what}: the server's secret leaked");
    // Base64 of the secret at any alignment would also be a leak: decode what came back.
    if let Ok(v) = r
        && let Some(d) = v["dataBase64"].as_str()
    {
        assert!(
            !String::from_utf8_lossy(&unb64(d)).contains(secret),
            "{what}: the server's secret leaked"
        );
    }
    let e = r
        .as_ref()
        .expect_err(&format!("{what}: must be refused, got {text}"));
    assert_eq!(e["code"], -32600, "{what}: {e}");
}

/// `fs/copy` of such a path is refused, except that a source which is itself a symlink
/// outside `/proc` (`/dev/stdin`, `/dev/fd`) is copied as the symlink (its text), which reads
/// nothing of the server.
fn copy_refused_or_link(what: &str, r: &Result<Value, Value>, dst: &str, secret: &str) {
    let dst = Path::new(dst);
    if r.is_ok() {
        let m = std::fs::symlink_metadata(dst).unwrap();
        assert!(m.file_type().is_symlink(), "{what}: copied content");
        std::fs::remove_file(dst).unwrap();
        return;
    }
    assert_refused(what, r, secret);
    assert!(
        std::fs::symlink_metadata(dst).is_err(),
        "{what}: wrote {}",
        dst.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_own_proc_entries_are_refused_under_every_confining_policy() {
    let secret = marker("topsecret");
    let c = server_with_secret(&secret, &["--ceiling", "external-sandbox"]).await;
    let s = Scratch::new("hfsproc");
    let ws = s.ws();
    symlink("/proc/self", ws.join("me")).unwrap();
    symlink("/proc", ws.join("p")).unwrap();
    symlink("../../../../../../../../proc/thread-self", ws.join("rel")).unwrap();
    std::fs::create_dir(ws.join("d")).unwrap();
    let spid = server_pid(&c);
    let (zygote, keepers) = zygote_and_keepers(spid);
    let tids = threads(spid);
    assert!(tids.len() > 1, "the server has worker threads: {tids:?}");
    let other_tid = *tids.iter().find(|t| **t != spid).unwrap();
    let ws_s = ws.to_str().unwrap().to_string();

    let mut reads: Vec<String> = vec![
        "/proc/self/environ".into(),
        "/proc/thread-self/environ".into(),
        format!("/proc/{spid}/environ"),
        format!("/proc/{other_tid}/environ"),
        format!("/proc/{spid}/task/{other_tid}/environ"),
        format!("/proc/{other_tid}/task/{other_tid}/environ"),
        "/proc/self/mem".into(),
        "/proc/self/cmdline".into(),
        "/proc/./self/environ".into(),
        "/proc//self/./environ".into(),
        "/proc/self/../self/environ".into(),
        "/proc/thread-self/../environ".into(),
        "/proc/self/task/../environ".into(),
        format!("{ws_s}/me/environ"),
        format!("{ws_s}/p/self/environ"),
        format!("{ws_s}/rel/environ"),
        format!("{ws_s}/d/../me/environ"),
        format!("/proc/{spid}/root/proc/self/environ"),
        format!("/proc/{spid}/cwd/x"),
        "/proc/self/fd/0".into(),
        "/proc/self/fd/1".into(),
        "/proc/self/fd/2".into(),
        "/dev/fd/0".into(),
        "/dev/fd/2".into(),
        "/dev/stdin".into(),
        "/proc/mounts".into(),
        format!("/proc/{zygote}/environ"),
        format!("/proc/{zygote}/cmdline"),
        format!("/proc/{zygote}/mem"),
    ];
    for k in &keepers {
        reads.push(format!("/proc/{k}/environ"));
    }
    // Every fd the server holds, by number.
    for e in std::fs::read_dir(format!("/proc/{spid}/fd"))
        .unwrap()
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        reads.push(format!("/proc/self/fd/{n}"));
        reads.push(format!("/dev/fd/{n}"));
    }
    let dirs = [
        "/proc/self/fd".to_string(),
        "/proc/self/task".into(),
        "/proc/thread-self/fd".into(),
        "/dev/fd".into(),
        format!("/proc/{spid}"),
        format!("/proc/{spid}/root"),
        format!("/proc/{zygote}"),
        format!("{ws_s}/me/fd"),
    ];
    for (name, policy) in confining_policies(&ws) {
        for p in &reads {
            let r = c
                .call("fs/readFile", with(&policy, json!({"path": p})))
                .await;
            assert_refused(&format!("{name}: readFile {p}"), &r, &secret);
            let r = c
                .call("fs/getMetadata", with(&policy, json!({"path": p})))
                .await;
            assert_refused(&format!("{name}: getMetadata {p}"), &r, &secret);
            let r = c
                .call("fs/canonicalize", with(&policy, json!({"path": p})))
                .await;
            assert_refused(&format!("{name}: canonicalize {p}"), &r, &secret);
            let dst = format!("{ws_s}/copied");
            let r = c
                .call(
                    "fs/copy",
                    with(
                        &policy,
                        json!({"sourcePath": p, "destinationPath": dst, "recursive": false}),
                    ),
                )
                .await;
            copy_refused_or_link(&format!("{name}: copy {p}"), &r, &dst, &secret);
        }
        for p in &dirs {
            for method in ["fs/readDirectory", "fs/getMetadata", "fs/canonicalize"] {
                let r = c.call(method, with(&policy, json!({"path": p}))).await;
                assert_refused(&format!("{name}: {method} {p}"), &r, &secret);
            }
            let dst = format!("{ws_s}/copied-dir");
            let r = c
                .call(
                    "fs/copy",
                    with(
                        &policy,
                        json!({"sourcePath": p, "destinationPath": dst, "recursive": true}),
                    ),
                )
                .await;
            copy_refused_or_link(&format!("{name}: copy -r {p}"), &r, &dst, &secret);
        }
        // Writing into the server: its thread names, its memory.
        for p in [
            "/proc/thread-self/comm".to_string(),
            "/proc/self/comm".into(),
            format!("/proc/{spid}/task/{other_tid}/comm"),
            "/proc/self/mem".into(),
            "/proc/self/attr/current".into(),
        ] {
            let r = c
                .call(
                    "fs/writeFile",
                    with(&policy, json!({"path": p, "dataBase64": b64(b"pwned")})),
                )
                .await;
            assert_refused(&format!("{name}: writeFile {p}"), &r, &secret);
            let r = c
                .call(
                    "fs/remove",
                    with(
                        &policy,
                        json!({"path": p, "recursive": true, "force": true}),
                    ),
                )
                .await;
            assert_refused(&format!("{name}: remove {p}"), &r, &secret);
        }
    }
    for t in threads(spid) {
        let comm = std::fs::read_to_string(format!("/proc/{spid}/task/{t}/comm")).unwrap();
        assert!(!comm.contains("pwned"), "a server thread was renamed");
    }
    // The rest of /proc stays as a process sees it: the server's own entries are the only
    // ones refused.
    let (_, ro) = &confining_policies(&ws)[0];
    c.ok("fs/readFile", with(ro, json!({"path": "/proc/version"})))
        .await;
    let listed = c
        .ok("fs/readDirectory", with(ro, json!({"path": "/proc"})))
        .await;
    assert!(listed["entries"].as_array().unwrap().len() > 5, "{listed}");
}

/// The same holds under a `read-only` ceiling, and for the server's default policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_server_never_serves_its_own_environment() {
    let secret = marker("rosecret");
    let c = server_with_secret(
        &secret,
        &["--ceiling", "read-only", "--default-policy", "read-only"],
    )
    .await;
    for p in [
        "/proc/self/environ",
        "/proc/thread-self/environ",
        "/dev/fd/0",
    ] {
        for params in [
            json!({"path": p}),
            json!({"path": p, "sandboxPolicy": {"type": "read-only"}}),
        ] {
            let r = c.call("fs/readFile", params.clone()).await;
            assert_refused(&format!("{params}"), &r, &secret);
        }
    }
}

/// What a process under the policy gets when it opens `/proc/<pid>/...` of another confined
/// process of the same client, against what the fs API answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_of_a_confined_process_of_the_same_client_answers_as_for_a_process() {
    let c = server_with_secret("unused", &["--ceiling", "external-sandbox"]).await;
    let s = Scratch::new("hfsother");
    let ws = s.ws();
    const PROBE: &str = r#"
import os, sys, json, errno
res = []
for op, p in json.loads(sys.argv[1]):
    try:
        if op == "read":
            with open(p, "rb") as f:
                f.read(1)
        else:
            os.listdir(p)
        res.append("ok")
    except OSError as e:
        res.append(errno.errorcode.get(e.errno, str(e.errno)))
print(json.dumps(res))
"#;
    for (name, policy) in confining_policies(&ws) {
        if name.contains("sandboxCwd /proc") {
            continue; // A process cannot start with /proc as its cwd policy and our probe.
        }
        // `sandboxPolicy`/`sandbox` and `sandboxCwd` as process/start params.
        let mut start = json!({"cwd": ws.to_str().unwrap()});
        for (k, v) in policy.as_object().unwrap() {
            if k != "sandboxCwd" {
                start[k] = v.clone();
            }
        }
        let sleeper = format!("sleeper-{name}");
        c.start_with(
            &sleeper,
            &["/bin/sh", "-c", "echo pid=$$; exec /bin/sleep 30"],
            start.clone(),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ev = c.wait_output(&sleeper, "\n").await;
        let out = String::from_utf8_lossy(&ev.stdout).into_owned();
        let pid: u32 = out
            .trim()
            .strip_prefix("pid=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{name}: sleeper said {out:?}"));
        let ops: Vec<(&str, String)> = vec![
            ("read", format!("/proc/{pid}/environ")),
            ("read", format!("/proc/{pid}/cmdline")),
            ("read", format!("/proc/{pid}/status")),
            ("read", format!("/proc/{pid}/mem")),
            ("read", format!("/proc/{pid}/maps")),
            ("list", format!("/proc/{pid}/fd")),
            ("list", format!("/proc/{pid}/task")),
        ];
        let list: Vec<Value> = ops.iter().map(|(o, p)| json!([o, p])).collect();
        let probe = format!("probe-{name}");
        c.start_with(
            &probe,
            &[PY, "-c", PROBE, &Value::Array(list).to_string()],
            start.clone(),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ev = c.closed(&probe).await;
        let out = String::from_utf8_lossy(&ev.stdout).into_owned();
        let proc_results: Vec<String> = serde_json::from_str(out.trim()).unwrap_or_else(|_| {
            panic!(
                "{name}: probe: {out} {}",
                String::from_utf8_lossy(&ev.stderr)
            )
        });
        for ((op, p), pr) in ops.iter().zip(&proc_results) {
            let method = if *op == "read" {
                "fs/readFile"
            } else {
                "fs/readDirectory"
            };
            let r = c.call(method, with(&policy, json!({"path": p}))).await;
            let fs_ok = r.is_ok();
            let proc_ok = pr == "ok";
            // /proc/<pid>/mem of another process reads nothing at offset 0 (EIO) even where it
            // opens: opening is what decides.
            let proc_ok = proc_ok || (p.ends_with("/mem") && pr == "EIO");
            let fs_ok = fs_ok
                || (p.ends_with("/mem")
                    && r.as_ref()
                        .err()
                        .is_some_and(|e| e["message"].as_str().unwrap().contains("os error 5")));
            assert_eq!(
                fs_ok, proc_ok,
                "{name}: {method} {p}: process {pr}, fs API {r:?}"
            );
        }
        c.call("process/terminate", json!({"processId": sleeper}))
            .await
            .unwrap();
        c.closed(&sleeper).await;
    }
}

// ---------------------------------------------------------------------------------------
// Item 3: the workers hold a process's privileges.

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// As root: files of another user, mode-000 files and directories a process cannot write are
/// out of reach of the fs API too, under every confining policy (the workers hold no
/// capability). As uid 65534 the same holds for the cases that user can set up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_hold_no_capability_dac_applies() {
    let c = server_with_secret("unused", &["--ceiling", "external-sandbox"]).await;
    let s = Scratch::new("hfsdac");
    let ws = s.ws();
    let other = 4242;
    // Mode 000, owned by the server's user.
    std::fs::write(ws.join("zero"), "zero").unwrap();
    chmod(&ws.join("zero"), 0o000);
    // A read-only directory (r-x) with a file in it that is writable.
    std::fs::create_dir(ws.join("rx")).unwrap();
    std::fs::write(ws.join("rx/f"), "keep").unwrap();
    chmod(&ws.join("rx/f"), 0o666);
    chmod(&ws.join("rx"), 0o555);
    // A `-wx` directory: cannot be listed.
    std::fs::create_dir(ws.join("wx")).unwrap();
    std::fs::write(ws.join("wx/f"), "wx").unwrap();
    chmod(&ws.join("wx"), 0o300);
    if is_root() {
        // Another user's private file, and another user's directory.
        std::fs::write(ws.join("theirs"), "theirs").unwrap();
        chmod(&ws.join("theirs"), 0o600);
        chown(&ws.join("theirs"), other, other);
        std::fs::create_dir(ws.join("theirdir")).unwrap();
        std::fs::write(ws.join("theirdir/f"), "keep").unwrap();
        chown(&ws.join("theirdir/f"), other, other);
        chmod(&ws.join("theirdir/f"), 0o644);
        chown(&ws.join("theirdir"), other, other);
        chmod(&ws.join("theirdir"), 0o755);
    }
    let p = |r: &str| ws.join(r).to_str().unwrap().to_string();
    for (name, policy) in confining_policies(&ws) {
        if name.contains("sandboxCwd /proc") {
            continue;
        }
        let read_only = name == "read-only";
        let refused = |r: Result<Value, Value>, what: &str| {
            let e = r.expect_err(&format!("{name}: {what} must be refused"));
            assert_eq!(e["code"], -32600, "{name}: {what}: {e}");
        };
        refused(
            c.call("fs/readFile", with(&policy, json!({"path": p("zero")})))
                .await,
            "readFile of a mode-000 file",
        );
        refused(
            c.call("fs/readDirectory", with(&policy, json!({"path": p("wx")})))
                .await,
            "readDirectory of a -wx directory",
        );
        refused(
            c.call(
                "fs/copy",
                with(
                    &policy,
                    json!({"sourcePath": p("zero"), "destinationPath": p("zcopy"), "recursive": false}),
                ),
            )
            .await,
            "copy of a mode-000 file",
        );
        assert!(!ws.join("zcopy").exists());
        if !read_only {
            // Creating in an r-x directory, removing from it, replacing in it.
            refused(
                c.call(
                    "fs/writeFile",
                    with(
                        &policy,
                        json!({"path": p("rx/new"), "dataBase64": b64(b"x")}),
                    ),
                )
                .await,
                "writeFile creating in an r-x directory",
            );
            refused(
                c.call(
                    "fs/remove",
                    with(
                        &policy,
                        json!({"path": p("rx/f"), "recursive": false, "force": false}),
                    ),
                )
                .await,
                "remove in an r-x directory",
            );
            refused(
                c.call(
                    "fs/createDirectory",
                    with(&policy, json!({"path": p("rx/sub"), "recursive": false})),
                )
                .await,
                "createDirectory in an r-x directory",
            );
            // The file itself is writable: rewritten in place, as a process would.
            c.ok(
                "fs/writeFile",
                with(
                    &policy,
                    json!({"path": p("rx/f"), "dataBase64": b64(b"new")}),
                ),
            )
            .await;
            assert_eq!(std::fs::read_to_string(ws.join("rx/f")).unwrap(), "new");
            // Writing into a -wx directory works (as for a process).
            c.ok(
                "fs/writeFile",
                with(&policy, json!({"path": p("wx/g"), "dataBase64": b64(b"g")})),
            )
            .await;
            std::fs::remove_file(ws.join("wx/g")).unwrap();
        }
        if is_root() {
            refused(
                c.call("fs/readFile", with(&policy, json!({"path": p("theirs")})))
                    .await,
                "readFile of another user's 0600 file",
            );
            if !read_only {
                refused(
                    c.call(
                        "fs/writeFile",
                        with(
                            &policy,
                            json!({"path": p("theirdir/f"), "dataBase64": b64(b"x")}),
                        ),
                    )
                    .await,
                    "writeFile replacing a file in another user's directory",
                );
                assert_eq!(
                    std::fs::read_to_string(ws.join("theirdir/f")).unwrap(),
                    "keep"
                );
                refused(
                    c.call(
                        "fs/writeFile",
                        with(
                            &policy,
                            json!({"path": p("theirdir/new"), "dataBase64": b64(b"x")}),
                        ),
                    )
                    .await,
                    "writeFile creating in another user's directory",
                );
                refused(
                    c.call(
                        "fs/remove",
                        with(
                            &policy,
                            json!({"path": p("theirdir/f"), "recursive": false, "force": false}),
                        ),
                    )
                    .await,
                    "remove in another user's directory",
                );
            }
        }
    }
    assert_eq!(std::fs::read_to_string(ws.join("rx/f")).unwrap(), "new");
}

/// `fs/writeFile` and `fs/copy` never leave a setuid or setgid bit on what they wrote, and
/// replacing another user's writable file keeps its owner (it is rewritten in place, as by a
/// process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_never_reapply_setuid_or_setgid() {
    let c = server_with_secret("unused", &["--ceiling", "danger-full-access"]).await;
    let s = Scratch::new("hfssuid");
    let ws = s.ws();
    let p = |r: &str| ws.join(r).to_str().unwrap().to_string();
    let mut policies = confining_policies(&ws);
    policies.retain(|(n, _)| *n != "read-only" && !n.contains("sandboxCwd /proc"));
    policies.push((
        "danger-full-access",
        json!({"sandboxPolicy": {"type": "danger-full-access"}}),
    ));
    for (name, policy) in policies {
        for f in ["suid", "sgid", "src"] {
            let _ = std::fs::remove_file(ws.join(f));
            std::fs::write(ws.join(f), "#!/bin/sh\n").unwrap();
        }
        chmod(&ws.join("suid"), 0o4755);
        chmod(&ws.join("sgid"), 0o2775);
        chmod(&ws.join("src"), 0o6755);
        for f in ["suid", "sgid"] {
            c.ok(
                "fs/writeFile",
                with(
                    &policy,
                    json!({"path": p(f), "dataBase64": b64(b"#!/bin/sh\nid\n")}),
                ),
            )
            .await;
            let mode = std::fs::metadata(ws.join(f)).unwrap().mode();
            assert_eq!(mode & 0o6000, 0, "{name}: writeFile {f}: mode {mode:o}");
            assert_eq!(
                std::fs::read_to_string(ws.join(f)).unwrap(),
                "#!/bin/sh\nid\n"
            );
        }
        // Copy of a set-id file, and copy onto an existing set-id file.
        let _ = std::fs::remove_file(ws.join("dst"));
        c.ok(
            "fs/copy",
            with(
                &policy,
                json!({"sourcePath": p("src"), "destinationPath": p("dst"), "recursive": false}),
            ),
        )
        .await;
        let mode = std::fs::metadata(ws.join("dst")).unwrap().mode();
        assert_eq!(mode & 0o6000, 0, "{name}: copy: mode {mode:o}");
        chmod(&ws.join("dst"), 0o6755);
        std::fs::write(ws.join("empty"), "").unwrap();
        c.ok(
            "fs/copy",
            with(
                &policy,
                json!({"sourcePath": p("empty"), "destinationPath": p("dst"), "recursive": false}),
            ),
        )
        .await;
        let mode = std::fs::metadata(ws.join("dst")).unwrap().mode();
        assert_eq!(
            mode & 0o6000,
            0,
            "{name}: copy onto a set-id file: mode {mode:o}"
        );
        // Recursive copy of a directory holding a set-id file.
        let _ = std::fs::remove_dir_all(ws.join("tree"));
        let _ = std::fs::remove_dir_all(ws.join("tree2"));
        std::fs::create_dir(ws.join("tree")).unwrap();
        std::fs::write(ws.join("tree/x"), "x").unwrap();
        chmod(&ws.join("tree/x"), 0o4755);
        chmod(&ws.join("tree"), 0o2775);
        c.ok(
            "fs/copy",
            with(
                &policy,
                json!({"sourcePath": p("tree"), "destinationPath": p("tree2"), "recursive": true}),
            ),
        )
        .await;
        for f in ["tree2", "tree2/x"] {
            let mode = std::fs::metadata(ws.join(f)).unwrap().mode();
            assert_eq!(mode & 0o6000, 0, "{name}: copy -r: {f}: mode {mode:o}");
        }
        if is_root() {
            // Another user's group-writable file in the workspace keeps its owner.
            let _ = std::fs::remove_file(ws.join("theirs"));
            std::fs::write(ws.join("theirs"), "old").unwrap();
            chown(&ws.join("theirs"), 4242, 4242);
            chmod(&ws.join("theirs"), 0o666);
            c.ok(
                "fs/writeFile",
                with(
                    &policy,
                    json!({"path": p("theirs"), "dataBase64": b64(b"new")}),
                ),
            )
            .await;
            let m = std::fs::metadata(ws.join("theirs")).unwrap();
            assert_eq!((m.uid(), m.gid()), (4242, 4242), "{name}: owner changed");
            assert_eq!(std::fs::read_to_string(ws.join("theirs")).unwrap(), "new");
        }
    }
}

/// The worker threads themselves: no capability in any set, an empty bounding set when the
/// server could empty it (root), no_new_privs; the server's other threads keep what they had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_threads_hold_no_capability_and_cannot_regain_one() {
    let c = server_with_secret("unused", &["--ceiling", "external-sandbox"]).await;
    let s = Scratch::new("hfscaps");
    let ws = s.ws();
    std::fs::write(ws.join("f"), "f").unwrap();
    let policies = confining_policies(&ws);
    for (_, policy) in &policies {
        c.ok(
            "fs/readFile",
            with(policy, json!({"path": ws.join("f").to_str().unwrap()})),
        )
        .await;
    }
    let spid = server_pid(&c);
    let field = |status: &str, key: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {status}"))
            .trim()
            .to_string()
    };
    let mut workers = 0;
    let mut others = Vec::new();
    for t in threads(spid) {
        let comm = std::fs::read_to_string(format!("/proc/{spid}/task/{t}/comm")).unwrap();
        let status = std::fs::read_to_string(format!("/proc/{spid}/task/{t}/status")).unwrap();
        if comm.starts_with("stockade-fs-") {
            workers += 1;
            for key in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
                assert_eq!(
                    u64::from_str_radix(&field(&status, key), 16).unwrap(),
                    0,
                    "{comm}: {key}"
                );
            }
            if is_root() {
                assert_eq!(
                    u64::from_str_radix(&field(&status, "CapBnd:"), 16).unwrap(),
                    0,
                    "{comm}: bounding set"
                );
            }
            assert_eq!(field(&status, "NoNewPrivs:"), "1", "{comm}");
        } else {
            others.push(status);
        }
    }
    // Two threads per policy (the sandboxCwd variants share a pool only when equal).
    assert!(workers >= 2 * 4, "only {workers} fs worker threads");
    if is_root() {
        // The main thread keeps the server's capabilities (it spawns, mounts, …).
        let main = std::fs::read_to_string(format!("/proc/{spid}/task/{spid}/status")).unwrap();
        assert_ne!(
            u64::from_str_radix(&field(&main, "CapEff:"), 16).unwrap(),
            0,
            "the server's main thread lost its capabilities"
        );
    }
    assert!(!others.is_empty());
}
