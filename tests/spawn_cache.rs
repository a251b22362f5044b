//! What the spawn path keeps from one process to the next (Landlock rulesets, the host's mount
//! points, shared mount namespaces) must never let a later process do more than a fresh
//! build would allow. Each test makes the server keep something, changes the host the way a
//! process under another policy (or the operator) could, and checks the next process.
//! `.ci/run` runs this file as root and again as uid 65534.

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `workspace-write` with the cwd as the only writable root (no `/tmp`, no `$TMPDIR`).
fn only_cwd_writable() -> Value {
    json!({"type": "workspace-write", "exclude_slash_tmp": true, "exclude_tmpdir_env_var": true})
}

/// `read-only` that reads only the platform directories and the cwd.
fn only_cwd_readable() -> Value {
    json!({"type": "read-only", "access": {"type": "restricted", "readable_roots": []}})
}

/// Moves `dir` to `to` and makes a new, empty `dir` (as a process under another policy could).
fn replace_dir(dir: &Path, to: &Path) {
    std::fs::rename(dir, to).unwrap();
    std::fs::create_dir(dir).unwrap();
}

/// A readable root that was replaced: the kept ruleset still holds the old directory (now
/// under another name), so reusing it would let the next process read that directory. The
/// next process must read the new directory and not the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_ruleset_never_follows_a_replaced_readable_root() {
    let s = Scratch::new("rsread");
    let ws = s.ws();
    std::fs::write(ws.join("secret"), "s3cret\n").unwrap();
    let c = Client::new(Transport::Stdio, &[]).await;
    let policy = only_cwd_readable();
    let (code, out, err) = shell(&c, "first", &ws, policy.clone(), "cat secret").await;
    assert_eq!((code, out.as_str()), (0, "s3cret\n"), "{err}");
    // The same policy again: the kept ruleset serves it.
    let (code, _, err) = shell(&c, "again", &ws, policy.clone(), "cat secret").await;
    assert_eq!(code, 0, "{err}");
    let moved = s.root.join("moved");
    replace_dir(&ws, &moved);
    std::fs::write(ws.join("new"), "fresh\n").unwrap();
    let script = format!("cat new; cat {}/secret", moved.display());
    let (code, out, err) = shell(&c, "after", &ws, policy, &script).await;
    assert_eq!(out, "fresh\n", "the new directory is readable: {err}");
    assert_ne!(
        code, 0,
        "the replaced directory was still readable: {out}{err}"
    );
    assert!(err.contains("Permission denied"), "{err}");
}

/// A writable root that was replaced: the next process writes in the new directory (a kept
/// ruleset holding the old one would refuse that) and not in the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_ruleset_never_follows_a_replaced_workspace() {
    let s = Scratch::new("rswrite");
    let ws = s.ws();
    let c = Client::new(Transport::Stdio, &[]).await;
    let policy = only_cwd_writable();
    for id in ["first", "again"] {
        let (code, _, err) = shell(&c, id, &ws, policy.clone(), "echo a > f").await;
        assert_eq!(code, 0, "{err}");
    }
    let moved = s.root.join("moved");
    replace_dir(&ws, &moved);
    let (code, _, err) = shell(&c, "new-ws", &ws, policy.clone(), "echo b > g").await;
    assert_eq!(code, 0, "the new workspace is writable: {err}");
    let script = format!("echo c > {}/f", moved.display());
    let (code, _, err) = shell(&c, "old-ws", &ws, policy, &script).await;
    assert_ne!(code, 0, "the replaced workspace was still writable: {err}");
    assert_eq!(std::fs::read_to_string(moved.join("f")).unwrap(), "a\n");
}

/// A mount made on the host after the server read its mount points (and built a namespace):
/// the next process's read-only view covers it too (`chmod` there fails with EROFS). As uid
/// 65534 the host's mount table cannot be changed from here (checked), so the view is only
/// checked on what exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_mount_made_after_a_spawn_is_read_only_for_the_next() {
    let s = Scratch::new("rsmnt");
    let ws = s.ws();
    let target = s.outside().join("mnt");
    std::fs::create_dir(&target).unwrap();
    let c = Client::new(Transport::Stdio, &[]).await;
    let policy = only_cwd_writable();
    let chmod = format!("chmod 0700 {}", target.display());
    let (code, _, err) = shell(&c, "before", &ws, policy.clone(), &chmod).await;
    assert_ne!(code, 0, "chmod outside the writable roots worked: {err}");
    let c_target = std::ffi::CString::new(target.to_str().unwrap()).unwrap();
    // SAFETY: mount with valid C strings.
    let mounted = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c_target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"mode=755".as_ptr().cast(),
        )
    } == 0;
    if !is_root() {
        assert!(!mounted, "uid 65534 changed the host's mount table");
        return;
    }
    assert!(mounted, "{}", std::io::Error::last_os_error());
    let (code, _, err) = shell(&c, "after", &ws, policy, &chmod).await;
    // SAFETY: unmounting what this test mounted.
    unsafe { libc::umount2(c_target.as_ptr(), libc::MNT_DETACH) };
    assert_ne!(code, 0, "chmod on the new mount worked");
    assert!(err.contains("Read-only file system"), "{err}");
}

/// Processes with the same plan share one mount namespace. One of them tries to change it
/// (unmount the read-only `.git`, remount it writable, bind something over it, rename it);
/// the next process joins the same namespace and finds `.git` still read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_cannot_change_the_namespace_the_next_one_joins() {
    let s = Scratch::new("rsshare");
    let ws = s.ws();
    std::fs::create_dir_all(ws.join(".git/hooks")).unwrap();
    std::fs::write(ws.join(".git/config"), "[core]\n").unwrap();
    let c = Client::new(Transport::Stdio, &[]).await;
    let policy = json!({"type": "workspace-write"});
    let write_git = "echo x > .git/hooks/pre-commit";
    let (code, _, err) = shell(&c, "first", &ws, policy.clone(), write_git).await;
    assert_ne!(code, 0, ".git was writable: {err}");
    let attack = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
git = os.path.abspath(".git").encode()
MS_REMOUNT, MS_BIND, MS_RDONLY = 32, 4096, 1
def call(name, f):
    r = f()
    print(name, "=", "OK" if r == 0 else os.strerror(ctypes.get_errno()))
call("umount", lambda: libc.umount2(git, 2))
call("remount", lambda: libc.mount(None, git, None, MS_REMOUNT | MS_BIND, None))
os.makedirs("decoy", exist_ok=True)
call("bind", lambda: libc.mount(b"decoy", git, None, MS_BIND, None))
call("unshare", lambda: libc.unshare(0x00020000))
try:
    os.rename(".git", "git-moved")
    print("rename = OK")
except OSError as e:
    print("rename =", e.strerror)
"#;
    c.start_with(
        "attack",
        &["/usr/bin/python3", "-c", attack],
        json!({"cwd": ws.to_str().unwrap(), "sandboxPolicy": policy.clone()}),
    )
    .await
    .unwrap();
    let ev = c.closed("attack").await;
    let out = String::from_utf8_lossy(&ev.stdout).into_owned();
    for what in ["umount", "remount", "bind", "unshare", "rename"] {
        assert!(out.contains(&format!("{what} = ")), "{out}");
        assert!(
            !out.contains(&format!("{what} = OK")),
            "{what} worked: {out}"
        );
    }
    let (code, _, err) = shell(&c, "next", &ws, policy, write_git).await;
    assert_ne!(code, 0, ".git became writable for the next process: {err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(ws.join(".git/config").exists());
    assert!(!ws.join(".git/hooks/pre-commit").exists());
}

/// This process's value of a `/proc/self/status` capability field (hex).
fn own_caps(key: &str) -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap()
        .trim()
        .to_string()
}

/// A root server keeps idle keepers that emptied their capability bounding set ahead of time,
/// for confined processes only. Whichever keeper serves a spawn, and however the pools are
/// drained and refilled: every confined process has no capabilities and (as root) an empty
/// bounding set, and an unconfined process keeps the server's full bounding set (a keeper
/// made for one kind never serves the other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepers_made_ahead_give_each_process_its_own_capability_set() {
    let s = Scratch::new("capsets");
    let ws = s.ws();
    let c = Client::new(Transport::Stdio, &["--ceiling", "danger-full-access"]).await;
    let script = "grep -E '^Cap(Bnd|Eff):' /proc/self/status | tr -s '\\t ' ' '";
    let full_bounding = own_caps("CapBnd:");
    // More spawns of each kind than either pool holds, interleaved and back to back.
    for round in 0..12 {
        let confined = round % 3 != 0;
        let policy = if confined {
            only_cwd_writable()
        } else {
            json!({"type": "danger-full-access"})
        };
        let (code, out, err) = shell(&c, &format!("caps{round}"), &ws, policy, script).await;
        assert_eq!(code, 0, "{err}");
        let bounding = out
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd: "))
            .unwrap_or_else(|| panic!("no CapBnd in {out:?}"));
        let effective = out
            .lines()
            .find_map(|l| l.strip_prefix("CapEff: "))
            .unwrap_or_else(|| panic!("no CapEff in {out:?}"));
        if confined {
            assert_eq!(effective, "0000000000000000", "round {round}: {out}");
            // Unprivileged, nothing is dropped: the bounding set is the server's, or the full
            // set of the user namespace that holds the mounts (it grants nothing on the host).
            if is_root() {
                assert_eq!(bounding, "0000000000000000", "round {round}: {out}");
            }
        } else {
            assert_eq!(bounding, full_bounding, "round {round}: {out}");
            assert_eq!(effective, own_caps("CapEff:"), "round {round}: {out}");
        }
    }
}
