//! Sandbox hardening, mount side (issue 14, items 1, 2, 3 and the read-only view of 5): attacks
//! that a confined process (or two in sequence) really attempts against the carve-outs and
//! the rest of the host. `.ci/run` runs this file as root and again as uid 65534.

mod common;

use std::path::Path;

use common::probe::*;
use common::*;
use serde_json::{Value, json};

/// A 6.3 permission profile: read everywhere, `ws` writable, plus `extra` entries.
fn profile(ws: &Path, extra: &[(&Path, &str)]) -> Value {
    let entry = |p: &Path, access: &str| json!({"path": {"type": "path", "path": p.to_str().unwrap()}, "access": access});
    let mut entries = vec![
        json!({"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"}),
        entry(ws, "write"),
    ];
    entries.extend(extra.iter().map(|(p, a)| entry(p, a)));
    let uri = format!("file://{}", ws.display());
    json!({"permissions": {"type": "managed", "network": "restricted",
        "file_system": {"type": "restricted", "entries": entries}},
        "cwd": uri, "workspaceRoots": [uri]})
}

/// A repository in `dir` (a `.git` directory with a hooks directory is all that matters).
fn make_repo(dir: &Path) {
    std::fs::create_dir_all(dir.join(".git/hooks")).unwrap();
    std::fs::write(dir.join(".git/config"), "[core]\n").unwrap();
}

/// Item 1, depth 1: `.git` in the cwd of a workspace that lies inside another writable root
/// of the same policy. The first process renames the workspace and leaves a decoy repository
/// at its name; the second (same policy, same cwd name) must still find the real `.git`
/// read-only under its new name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_workspace_keeps_its_git_read_only() {
    let s = Scratch::new("hm-depth1");
    let ws = s.ws();
    make_repo(&ws);
    let moved = s.root.join("moved");
    let policy = json!({"type": "workspace-write", "exclude_slash_tmp": true,
        "exclude_tmpdir_env_var": true, "writable_roots": [s.root.to_str().unwrap()]});
    let c = Client::new(Transport::Stdio, &[]).await;
    let r = probe(
        &c,
        "rename",
        &ws,
        &policy,
        &format!(
            r#"
t("hook_before", lambda: open(".git/hooks/evil", "w"))
t("rename_ws", lambda: os.rename({ws:?}, {moved:?}))
t("decoy", lambda: os.makedirs({ws:?} + "/.git/hooks"))
"#,
            ws = ws.to_str().unwrap(),
            moved = moved.to_str().unwrap()
        ),
    )
    .await;
    expect(&r, "hook_before", "EROFS");
    expect(&r, "rename_ws", "OK");
    expect(&r, "decoy", "OK");
    let r = probe(
        &c,
        "write",
        &ws,
        &policy,
        &format!(
            r#"
t("moved_hook", lambda: open({hook:?}, "w"))
t("moved_config", lambda: open({config:?}, "a"))
t("decoy_hook", lambda: open(".git/hooks/evil", "w"))
t("ws_write", lambda: open("file", "w"))
"#,
            hook = moved.join(".git/hooks/evil").to_str().unwrap(),
            config = moved.join(".git/config").to_str().unwrap()
        ),
    )
    .await;
    expect(&r, "moved_hook", "EROFS");
    expect(&r, "moved_config", "EROFS");
    expect(&r, "decoy_hook", "EROFS");
    expect(&r, "ws_write", "OK");
    assert!(!moved.join(".git/hooks/evil").exists());
}

/// Item 1, a workspace under /tmp (which workspace-write always makes writable): renamed via
/// /tmp, with a decoy left behind, and then written from the next process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_under_tmp_renamed_via_tmp() {
    let s = Scratch::new("hm-tmp");
    let ws = s.ws();
    make_repo(&ws);
    let moved = s.root.join("x");
    // The default 6.2 shape: cwd, /tmp and $TMPDIR writable.
    let policy = json!({"type": "workspace-write"});
    let c = Client::new(Transport::Stdio, &[]).await;
    let r = probe(
        &c,
        "rename",
        &ws,
        &policy,
        &format!(
            r#"
t("rename_ws", lambda: os.rename({ws:?}, {moved:?}))
t("decoy", lambda: os.makedirs({ws:?} + "/.git"))
"#,
            ws = ws.to_str().unwrap(),
            moved = moved.to_str().unwrap()
        ),
    )
    .await;
    expect(&r, "rename_ws", "OK");
    expect(&r, "decoy", "OK");
    let r = probe(
        &c,
        "write",
        &ws,
        &policy,
        &format!(
            r#"t("moved_hook", lambda: open({hook:?}, "w"))"#,
            hook = moved.join(".git/hooks/post-checkout").to_str().unwrap()
        ),
    )
    .await;
    expect(&r, "moved_hook", "EROFS");
    // Renamed again without a decoy: the cwd name no longer has a `.git` at all.
    let r = probe(
        &c,
        "rename2",
        &ws,
        &policy,
        &format!(
            r#"t("rename_again", lambda: os.rename({moved:?}, {moved:?} + "2"))"#,
            moved = moved.to_str().unwrap()
        ),
    )
    .await;
    expect(&r, "rename_again", "OK");
    std::fs::remove_dir_all(ws.join(".git")).unwrap();
    let r = probe(
        &c,
        "write2",
        &ws,
        &policy,
        &format!(
            r#"t("moved_hook", lambda: open({hook:?}, "w"))"#,
            hook = s.root.join("x2/.git/hooks/post-checkout").to_str().unwrap()
        ),
    )
    .await;
    expect(&r, "moved_hook", "EROFS");
}

/// Item 1, a protected `.git` renamed by a process under a *different* policy (for which it
/// is no protected name), then written by the next process under the first policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_renamed_from_another_policy_stays_read_only() {
    let s = Scratch::new("hm-other");
    let ws = s.ws();
    make_repo(&ws);
    let only = |root: &Path| {
        json!({"type": "workspace-write", "exclude_slash_tmp": true,
            "exclude_tmpdir_env_var": true, "writable_roots": [root.to_str().unwrap()]})
    };
    let c = Client::new(Transport::Stdio, &[]).await;
    let r = probe(
        &c,
        "protect",
        &ws,
        &only(&ws),
        r#"t("config", lambda: open(".git/config", "a"))"#,
    )
    .await;
    expect(&r, "config", "EROFS");
    // cwd = the scratch root: `ws/.git` is no protected name of this policy.
    let r = probe(
        &c,
        "swap",
        &s.root,
        &only(&s.root),
        r#"
t("rename_git", lambda: os.rename("ws/.git", "ws/old-git"))
t("decoy", lambda: os.makedirs("ws/.git"))
"#,
    )
    .await;
    expect(&r, "rename_git", "OK");
    expect(&r, "decoy", "OK");
    let r = probe(
        &c,
        "write",
        &ws,
        &only(&ws),
        r#"t("moved_config", lambda: open("old-git/config", "a"))"#,
    )
    .await;
    expect(&r, "moved_config", "EROFS");
}

/// Item 1, depth 2: 6.3 `read` and `none` entries two levels below the writable root. The
/// first process moves their grandparent away and leaves decoys; the second must find the
/// real objects read-only and hidden under their new names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_two_entries_follow_their_objects() {
    let s = Scratch::new("hm-depth2");
    let ws = s.ws();
    std::fs::create_dir_all(ws.join("a/b/ro")).unwrap();
    std::fs::write(ws.join("a/b/ro/file"), "ro\n").unwrap();
    std::fs::create_dir_all(ws.join("d/e")).unwrap();
    std::fs::write(ws.join("d/e/secret"), "s3cret\n").unwrap();
    let policy = profile(
        &ws,
        &[
            (&ws.join("a/b/ro"), "read"),
            (&ws.join("d/e/secret"), "none"),
        ],
    );
    let c = Client::new(Transport::Stdio, &[]).await;
    let r = probe(
        &c,
        "move",
        &ws,
        &policy,
        r#"
t("ro_before", lambda: open("a/b/ro/file", "a"))
t("secret_before", lambda: open("d/e/secret").read())
t("move_a", lambda: os.rename("a", "a2"))
t("move_d", lambda: os.rename("d", "d2"))
t("decoy_ro", lambda: os.makedirs("a/b/ro"))
t("decoy_secret_dir", lambda: os.makedirs("d/e"))
t("decoy_secret", lambda: open("d/e/secret", "w").write("decoy"))
"#,
    )
    .await;
    expect(&r, "ro_before", "EROFS");
    expect(&r, "secret_before", "EACCES");
    for k in [
        "move_a",
        "move_d",
        "decoy_ro",
        "decoy_secret_dir",
        "decoy_secret",
    ] {
        expect(&r, k, "OK");
    }
    let r = probe(
        &c,
        "use",
        &ws,
        &policy,
        r#"
t("ro_moved", lambda: open("a2/b/ro/file", "a"))
t("ro_moved_new", lambda: open("a2/b/ro/new", "w"))
t("secret_moved", lambda: open("d2/e/secret").read())
"#,
    )
    .await;
    expect(&r, "ro_moved", "EROFS");
    expect(&r, "ro_moved_new", "EROFS");
    expect(&r, "secret_moved", "EACCES");
    assert_eq!(
        std::fs::read_to_string(ws.join("a2/b/ro/file")).unwrap(),
        "ro\n"
    );
}

/// Item 1, a hidden (`none`) directory one level down, moved by its parent's rename from a
/// process whose policy is the plain workspace, then read by the next process of the policy
/// that hides it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_object_moved_and_read() {
    let s = Scratch::new("hm-hidden");
    let ws = s.ws();
    std::fs::create_dir_all(ws.join("keys/private")).unwrap();
    std::fs::write(ws.join("keys/private/id"), "k\n").unwrap();
    let hiding = profile(&ws, &[(&ws.join("keys/private"), "none")]);
    let c = Client::new(Transport::Stdio, &[]).await;
    let r = probe(
        &c,
        "hide",
        &ws,
        &hiding,
        r#"
t("read", lambda: open("keys/private/id").read())
t("move", lambda: os.rename("keys", "k2"))
t("decoy", lambda: os.makedirs("keys/private"))
"#,
    )
    .await;
    expect(&r, "read", "EACCES");
    expect(&r, "move", "OK");
    expect(&r, "decoy", "OK");
    let r = probe(
        &c,
        "read",
        &ws,
        &hiding,
        r#"
t("read_moved", lambda: open("k2/private/id").read())
t("list_moved", lambda: os.listdir("k2/private"))
"#,
    )
    .await;
    expect(&r, "read_moved", "EACCES");
    expect(&r, "list_moved", "EACCES");
}

/// Item 2: a protected `.git` that is a symlink (here to a repository stored inside the
/// workspace). Its target is read-only, and the link itself cannot be removed, renamed or
/// replaced (by a new repository, or by another link renamed over it), in this process or
/// the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_symlink_cannot_be_replaced() {
    let s = Scratch::new("hm-symlink");
    let ws = s.ws();
    make_repo(&ws.join("store/repo"));
    std::os::unix::fs::symlink("store/repo/.git", ws.join(".git")).unwrap();
    let policy = json!({"type": "workspace-write", "exclude_slash_tmp": true,
        "exclude_tmpdir_env_var": true});
    let c = Client::new(Transport::Stdio, &[]).await;
    let code = r#"
t("hook", lambda: open(".git/hooks/evil", "w"))
t("hook_via_target", lambda: open("store/repo/.git/hooks/evil", "w"))
t("unlink", lambda: os.unlink(".git"))
t("rename_away", lambda: os.rename(".git", "old"))
t("new_repo", lambda: os.makedirs(".git/hooks"))
t("link_tmp", lambda: os.symlink("elsewhere", "tmp-link"))
t("rename_over", lambda: os.rename("tmp-link", ".git"))
t("ws_write", lambda: open("file", "w"))
"#;
    for round in 0..2 {
        let r = probe(&c, &format!("p{round}"), &ws, &policy, code).await;
        expect(&r, "hook", "EROFS");
        expect(&r, "hook_via_target", "EROFS");
        expect(&r, "unlink", "EBUSY");
        expect(&r, "rename_away", "EBUSY");
        expect(&r, "new_repo", "EEXIST");
        expect(&r, "rename_over", "EBUSY");
        expect(&r, "ws_write", "OK");
        std::fs::remove_file(ws.join("tmp-link")).unwrap();
    }
    assert_eq!(
        std::fs::read_link(ws.join(".git")).unwrap(),
        Path::new("store/repo/.git")
    );
    assert!(!ws.join("store/repo/.git/hooks/evil").exists());
}

/// Item 5 (mount part): outside the writable roots nothing's metadata can change. A
/// workspace-write process tries `chmod 4755`, `chown` to itself, `utime` and a user xattr on
/// a file outside its roots that its user owns (root's file as root; as uid 65534 that user's
/// own file, since a non-root server's processes run as its uid): each fails with EROFS, in a
/// read-only policy too. Inside the roots the same calls work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_metadata_changes_outside_the_writable_roots() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new("hm-meta");
    let ws = s.ws();
    let target = s.outside().join("tool");
    std::fs::write(&target, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(ws.join("mine"), "x").unwrap();
    let before = std::fs::metadata(&target).unwrap();
    let code = format!(
        r#"
uid, gid = os.getuid(), os.getgid()
def each(prefix, path):
    t(prefix + "chmod_setuid", lambda: os.chmod(path, 0o4755))
    t(prefix + "chmod", lambda: os.chmod(path, 0o777))
    t(prefix + "chown_self", lambda: os.chown(path, uid, gid))
    t(prefix + "utime", lambda: os.utime(path, (0, 0)))
    t(prefix + "xattr", lambda: os.setxattr(path, "user.x", b"1"))
each("out_", {target:?})
"#,
        target = target.to_str().unwrap()
    );
    let c = Client::new(Transport::Stdio, &[]).await;
    let ws_write = json!({"type": "workspace-write", "exclude_slash_tmp": true,
        "exclude_tmpdir_env_var": true});
    let read_only = json!({"type": "read-only"});
    for (id, policy) in [("ww", &ws_write), ("ro", &read_only)] {
        let r = probe(&c, id, &ws, policy, &code).await;
        // seccomp refuses set-id modes first (EPERM) where it is in force; either way it fails.
        let setuid = r.get("out_chmod_setuid").map(String::as_str);
        assert!(matches!(setuid, Some("EROFS" | "EPERM")), "{r:?}");
        for k in ["out_chmod", "out_chown_self", "out_utime", "out_xattr"] {
            expect(&r, k, "EROFS");
        }
    }
    // Inside the roots metadata changes work (a plain chmod; set-id bits are seccomp's).
    let r = probe(
        &c,
        "inside",
        &ws,
        &ws_write,
        r#"
uid, gid = os.getuid(), os.getgid()
t("in_chmod", lambda: os.chmod("mine", 0o600))
t("in_chown_self", lambda: os.chown("mine", uid, gid))
t("in_utime", lambda: os.utime("mine", (0, 0)))
t("in_xattr", lambda: os.setxattr("mine", "user.x", b"1"))
t("in_write", lambda: open("new", "w").write("x"))
t("dev_null", lambda: open("/dev/null", "w").write("x"))
"#,
    )
    .await;
    for k in [
        "in_chmod",
        "in_chown_self",
        "in_utime",
        "in_write",
        "dev_null",
    ] {
        expect(&r, k, "OK");
    }
    // User xattrs depend on the filesystem; where they work outside, they work inside too.
    let mine = std::ffi::CString::new(ws.join("mine").to_str().unwrap()).unwrap();
    // SAFETY: setxattr with valid C strings and a one-byte value.
    let host_xattr = unsafe {
        libc::setxattr(
            mine.as_ptr(),
            c"user.y".as_ptr(),
            b"1".as_ptr().cast(),
            1,
            0,
        )
    } == 0;
    if host_xattr {
        expect(&r, "in_xattr", "OK");
    }
    let after = std::fs::metadata(&target).unwrap();
    assert_eq!(after.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        std::os::unix::fs::MetadataExt::mtime(&after),
        std::os::unix::fs::MetadataExt::mtime(&before)
    );
}
