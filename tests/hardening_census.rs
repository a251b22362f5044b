//! The hard-link census holds against a confined process (issue 14, items 4 and 9).
//!
//! Each attack is two confined processes in sequence: the first prepares a hiding place for a
//! hard link to an outside file (a directory the server cannot read, a path longer than
//! `PATH_MAX`, a tree deeper than the walk descends), the second writes through the hidden
//! link. The outside file must stay unchanged. Then the census's own resources: a confined
//! process that exhausts the inotify watches of the server's user degrades the census only
//! while it holds them, and a slow walk of one root never holds up a spawn under another.
//! `.ci/run` runs this file as root and again as uid 65534 (scripts/test-unprivileged).

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

const PY: &str = "/usr/bin/python3";

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// workspace-write with only the workspace writable (no /tmp, no $TMPDIR).
fn ws_policy() -> Value {
    json!({"type": "workspace-write", "network_access": false,
           "exclude_slash_tmp": true, "exclude_tmpdir_env_var": true})
}

/// A scratch tree with an outside file hard-linked as `ws/d/linked`.
fn linked_scratch(tag: &str) -> Scratch {
    let s = Scratch::new(tag);
    std::fs::write(s.outside().join("file"), "outside\n").unwrap();
    std::fs::create_dir(s.ws().join("d")).unwrap();
    std::fs::hard_link(s.outside().join("file"), s.ws().join("d/linked")).unwrap();
    s
}

/// Runs `code` (Python) confined under `ws_policy` in `cwd`; returns (exit code, stdout,
/// stderr, the start response).
async fn py(c: &Client, id: &str, cwd: &Path, code: &str) -> (i64, String, String, Value) {
    let r = c
        .start_with(
            id,
            &[PY, "-c", code],
            json!({"cwd": cwd.to_str().unwrap(), "sandboxPolicy": ws_policy()}),
        )
        .await
        .unwrap_or_else(|e| panic!("start {id}: {e}"));
    assert_eq!(r["sandboxType"], "linuxSeccomp", "{r}");
    let ev = c.closed(id).await;
    (
        ev.exited.as_ref().unwrap()["exitCode"].as_i64().unwrap(),
        String::from_utf8_lossy(&ev.stdout).into_owned(),
        String::from_utf8_lossy(&ev.stderr).into_owned(),
        r,
    )
}

/// Appends to `path` (relative to the cwd, any length: opened one directory at a time) and
/// prints `append=OK` or `append=<errno name>`.
fn append_script(components: &[&str]) -> String {
    format!(
        r#"
import os, errno
parts = {components:?}
try:
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    for p in parts[:-1]:
        nfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    f = os.open(parts[-1], os.O_WRONLY | os.O_APPEND, dir_fd=fd)
    os.write(f, b"written through the hidden link\n")
    print("append=OK")
except OSError as e:
    print("append=" + errno.errorcode.get(e.errno, str(e.errno)))
"#
    )
}

fn assert_outside_unchanged(s: &Scratch, what: &str) {
    assert_eq!(
        std::fs::read_to_string(s.outside().join("file")).unwrap(),
        "outside\n",
        "{what}: the outside file was written through a hard link the census did not see"
    );
}

/// A directory the server cannot list (`-wx` for its owner): as uid 65534 the server cannot
/// read what the process hides there; as root it can. Either way the hidden link must not be
/// writable (as 65534 the whole directory is read-only, as root the link is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_hidden_in_unreadable_directories_stay_read_only() {
    let s = linked_scratch("wx");
    let ws = s.ws();
    std::fs::create_dir_all(ws.join("a/b")).unwrap();
    std::fs::create_dir(ws.join("t")).unwrap();
    std::fs::hard_link(s.outside().join("file"), ws.join("t/top")).unwrap();
    let c = Client::new(Transport::Stdio, &[]).await;
    // The first process hides: `d` (holding the link) made -wx and moved; a second link moved
    // into a -wx directory two levels down, and that tree moved too (so the census walks it
    // afresh).
    let (code, out, err, _) = py(
        &c,
        "hide",
        &ws,
        r#"
import os
os.chmod("d", 0o300)
os.rename("d", "hidden")
os.chmod("a/b", 0o300)
os.rename("t", "a/b/t")
os.rename("a", "a2")
print("hidden")
"#,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    // The second process writes through both.
    let (_, out, err, r) = py(&c, "write1", &ws, &append_script(&["hidden", "linked"])).await;
    assert!(out.contains("append=E"), "{out}{err}\n{r}");
    let (_, out, err, r) = py(&c, "write2", &ws, &append_script(&["a2", "b", "t", "top"])).await;
    assert!(out.contains("append=E"), "{out}{err}\n{r}");
    if !is_root() {
        let notes = r["sandbox"]["notes"].to_string();
        assert!(
            notes.contains("read-only because the hard-link census cannot see into them")
                && notes.contains("a2/b"),
            "{r}"
        );
    }
    assert_outside_unchanged(&s, "-wx directories");
}

/// A mode-000 directory holding a link (as root: owned by another user, so the process, uid 0
/// without capabilities, cannot open it up; as 65534: its own, which the server cannot read
/// either). One process tries to open it up and write at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_in_mode_000_directories_stay_read_only() {
    let s = linked_scratch("m000");
    let ws = s.ws();
    let d = ws.join("d");
    if is_root() {
        // SAFETY: chown with a valid path.
        let path = std::ffi::CString::new(d.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::chown(path.as_ptr(), 65534, 65534) }, 0);
    }
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let c = Client::new(Transport::Stdio, &[]).await;
    let mut script = String::from(
        "import os\ntry:\n    os.chmod('d', 0o700)\n    print('chmod=OK')\nexcept OSError as e:\n    print('chmod', e)\n",
    );
    script.push_str(&append_script(&["d", "linked"]));
    let (_, out, err, r) = py(&c, "open-up", &ws, &script).await;
    assert!(out.contains("append=E"), "{out}{err}\n{r}");
    assert!(!out.contains("chmod=OK"), "{out}{err}\n{r}");
    assert_outside_unchanged(&s, "mode-000 directory");
}

/// Paths longer than `PATH_MAX`: the first process moves the link's directory to the bottom
/// of a chain of 255-byte names (about 5,000 bytes deep); the census follows it there from
/// directory fd to directory fd, and since no mount can name a path that long, the deepest
/// ancestor a mount can name is made read-only instead. A second link goes below a chain of
/// more levels than the walk descends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_hidden_below_path_max_or_deep_trees_stay_read_only() {
    let s = linked_scratch("long");
    let ws = s.ws();
    std::fs::create_dir(ws.join("e")).unwrap();
    std::fs::hard_link(s.outside().join("file"), ws.join("e/linked2")).unwrap();
    let c = Client::new(Transport::Stdio, &[]).await;
    let (code, out, err, _) = py(
        &c,
        "hide",
        &ws,
        r#"
import os
def chain(names, src):
    top = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    fd = os.dup(top)
    for n in names:
        os.mkdir(n, dir_fd=fd)
        nfd = os.open(n, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.rename(src, src, src_dir_fd=top, dst_dir_fd=fd)
chain(["L" * 255] * 20, "d")
chain(["n"] * 200, "e")
print("hidden")
"#,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let mut long: Vec<String> = vec!["L".repeat(255); 20];
    long.push("d".into());
    long.push("linked".into());
    let long: Vec<&str> = long.iter().map(String::as_str).collect();
    let (_, out, err, r) = py(&c, "write1", &ws, &append_script(&long)).await;
    assert!(out.contains("append=E"), "{out}{err}\n{r}");
    let mut deep: Vec<&str> = vec!["n"; 200];
    deep.push("e");
    deep.push("linked2");
    let (_, out, err, r) = py(&c, "write2", &ws, &append_script(&deep)).await;
    assert!(out.contains("append=E"), "{out}{err}\n{r}");
    assert_outside_unchanged(&s, "long paths");
    // What a process may write there otherwise is still writable above the read-only part.
    let (_, out, err, _) = py(
        &c,
        "other",
        &ws,
        "open('plain', 'w').write('x'); print('plain=OK')",
    )
    .await;
    assert!(out.contains("plain=OK"), "{out}{err}");
}

/// A link moved around between two spawns (and its directory renamed several times, at
/// several depths): the census finds it again wherever it went inside the root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_moved_between_spawns_stay_read_only() {
    let s = linked_scratch("moved");
    let ws = s.ws();
    let c = Client::new(Transport::Stdio, &[]).await;
    let (_, out, err, _) = py(&c, "first", &ws, &append_script(&["d", "linked"])).await;
    assert!(out.contains("append=EROFS"), "{out}{err}");
    let (code, out, err, _) = py(
        &c,
        "move",
        &ws,
        r#"
import os
os.makedirs("x/y/z")
os.rename("d", "x/y/z/d")
os.rename("x/y", "y2")
os.rename("y2/z", "z3")
os.rename("z3", "x/z4")
print("moved")
"#,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, err, _) = py(
        &c,
        "write",
        &ws,
        &append_script(&["x", "z4", "d", "linked"]),
    )
    .await;
    assert!(out.contains("append=EROFS"), "{out}{err}");
    assert_outside_unchanged(&s, "moved links");
}

/// `stockade serve` in a user namespace of its own whose inotify watch limit is `watches`,
/// with the server's uid and gid inside (so root stays root and 65534 stays 65534): the
/// process tree of this server shares that small budget, and nothing else on the host does.
async fn server_with_watch_limit(watches: u32, args: &[&str]) -> Client {
    // SAFETY: getters without arguments.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let script = format!(
        "echo {watches} > /proc/sys/user/max_inotify_watches && exec unshare --user --map-user={uid} --map-group={gid} \"$0\" serve \"$@\""
    );
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args(["--user", "--map-root-user", "sh", "-c", &script, &bin()])
        .args(args);
    let mut c = Client::stdio_cmd(cmd).await;
    c.initialize().await;
    c
}

const WALKED: &str = "walked them for this process";

/// A confined process exhausts the inotify watches of the server's user (in a user namespace
/// whose limit the test sets low, so that nothing else on the host is touched) and holds them:
/// spawns under a new root are served by walking it. Once the watches are released, later
/// spawns go back to watching (their reports no longer say the census walked), and a hard
/// link made meanwhile is protected throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_inotify_watches_recover() {
    let s = linked_scratch("inotify");
    let hog_ws = s.root.join("hog");
    std::fs::create_dir(&hog_ws).unwrap();
    let c = server_with_watch_limit(64, &[]).await;
    // The hog: every watch it can get, held until its stdin closes.
    let hog = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
n = 0
for top, dirs, files in os.walk("/usr"):
    if libc.inotify_add_watch(fd, top.encode(), 0x100) < 0:
        break
    n += 1
print("holding", n, os.strerror(ctypes.get_errno()), flush=True)
sys.stdin.read()
"#;
    c.start_with(
        "hog",
        &[PY, "-c", hog],
        json!({"cwd": hog_ws.to_str().unwrap(), "sandboxPolicy": ws_policy(), "pipeStdin": true}),
    )
    .await
    .unwrap();
    let ev = c.wait_output("hog", "holding").await;
    let said = String::from_utf8_lossy(&ev.stdout).into_owned();
    assert!(said.contains("No space left on device"), "{said}");
    // A new root cannot be watched now: walked, and still protected.
    let ws = s.ws();
    let (_, out, err, r) = py(&c, "during", &ws, &append_script(&["d", "linked"])).await;
    assert!(out.contains("append=EROFS"), "{out}{err}");
    assert!(r["sandbox"]["notes"].to_string().contains(WALKED), "{r}");
    // Release.
    c.ok("process/closeStdin", json!({"processId": "hog"}))
        .await;
    c.closed("hog").await;
    // Spawns return to watching (the census retries, backing off; poll with a deadline).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut n = 0;
    loop {
        n += 1;
        let (_, out, err, r) = py(
            &c,
            &format!("after{n}"),
            &ws,
            &append_script(&["d", "linked"]),
        )
        .await;
        assert!(out.contains("append=EROFS"), "{out}{err}");
        if !r["sandbox"]["notes"].to_string().contains(WALKED) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the census never went back to watching: {r}"
        );
        std::thread::yield_now();
    }
    // And stays there: a link made now is seen from the events.
    std::fs::create_dir(ws.join("later")).unwrap();
    std::fs::hard_link(s.outside().join("file"), ws.join("later/l2")).unwrap();
    let (_, out, err, r) = py(&c, "watching", &ws, &append_script(&["later", "l2"])).await;
    assert!(out.contains("append=EROFS"), "{out}{err}");
    assert!(!r["sandbox"]["notes"].to_string().contains(WALKED), "{r}");
    assert_outside_unchanged(&s, "after exhaustion");
}

/// How many watches the server's inotify instance that watches inode `ino` holds (`None`: no
/// instance watches it).
fn watches_with(pid: u32, ino: u64) -> Option<usize> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).ok()?;
    let needle = format!(" ino:{ino:x} ");
    dir.flatten().find_map(|ent| {
        let text = std::fs::read_to_string(ent.path()).ok()?;
        let watches: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("inotify wd:"))
            .collect();
        watches
            .iter()
            .any(|l| l.contains(&needle))
            .then_some(watches.len())
    })
}

/// Two clients, two unrelated writable roots: while the census walks a large root for the
/// first client (observed: the server watches that root's top directory), the second client's
/// spawn under a small root completes, before the first one's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_walk_does_not_hold_up_other_roots() {
    use std::os::unix::fs::MetadataExt;
    let s = Scratch::new("perroot");
    let small = s.ws();
    // Large enough that walking it takes far longer than a spawn: 30,000 directories (each
    // costs the walk several syscalls and a watch), on tmpfs where they are quick to make.
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        s.root.clone()
    };
    let big_tree = BigTree(base.join(marker("perroot-big")));
    let big = big_tree.0.clone();
    for i in 0..100 {
        for j in 0..300 {
            std::fs::create_dir_all(big.join(format!("d{i}/e{j}"))).unwrap();
        }
    }
    let (mut server, url) = Client::spawn_ws_server(&[]).await;
    let pid = server.id().unwrap();
    let mut a = Client::ws_connect(&url, &[]).await.unwrap();
    a.initialize().await;
    let mut b = Client::ws_connect(&url, &[]).await.unwrap();
    b.initialize().await;
    let start = |cwd: &Path| {
        json!({"processId": "p", "argv": ["true"], "cwd": cwd.to_str().unwrap(),
               "env": {"PATH": "/usr/bin:/bin"}, "tty": false, "sandboxPolicy": ws_policy()})
    };
    a.send_raw(&json!({"id": 900, "method": "process/start", "params": start(&big)}).to_string());
    // The walk of `big` has begun when the server watches its top directory, and it is not
    // over while the server watches fewer than all of its directories.
    let all_dirs = 1 + 100 + 100 * 300;
    let big_ino = std::fs::metadata(&big).unwrap().ino();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while watches_with(pid, big_ino).is_none() {
        assert!(
            a.unclaimed_responses().is_empty(),
            "the walk of the large root finished before it was observed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the walk never started"
        );
        std::thread::yield_now();
    }
    let rb = b.call("process/start", start(&small)).await;
    assert!(rb.is_ok(), "{rb:?}");
    let watched = watches_with(pid, big_ino).unwrap_or(all_dirs);
    assert!(
        watched < all_dirs,
        "the small root's spawn completed only after the large root's walk ({watched} watches)"
    );
    let ra = a.response(&json!(900)).await;
    assert!(ra.get("result").is_some(), "{ra}");
    let _ = server.kill().await;
}

/// A directory tree removed on drop.
struct BigTree(std::path::PathBuf);

impl Drop for BigTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
