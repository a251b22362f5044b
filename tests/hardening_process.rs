//! Hardening attacks on processes (issue 14, items 5-8 and 11): a confined process really
//! attempts each attack; the test asserts that it fails and that the supervisor, the next
//! spawn and the host are unaffected. `.ci/run` runs this file as root and again as uid 65534.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::probe::*;
use common::*;
use serde_json::{Value, json};

/// workspace-write with only the workspace writable (no /tmp, no $TMPDIR).
fn ws_policy(network: bool) -> Value {
    json!({"type": "workspace-write", "network_access": network,
           "exclude_slash_tmp": true, "exclude_tmpdir_env_var": true})
}

/// The `Max open files` line of `/proc/<pid>/limits`.
fn nofile_limits(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string()
}

/// Scheduling state of a process: nice value, policy and affinity, as `/proc` shows them.
fn sched_state(pid: u32) -> (String, String) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // Fields after the command: state is 3, nice 19, policy 41 (1-based in proc(5)).
    let nice_policy = format!("nice {} policy {}", fields[19 - 3], fields[41 - 3]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let cpus = status
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list"))
        .unwrap()
        .to_string();
    (nice_policy, cpus)
}

/// Item 6: a confined process changes the limits and scheduling of the server and of its own
/// keeper (the processes every later spawn depends on). Each call must fail with EPERM; the same
/// calls on itself keep working (so `nice`, `ionice`, `taskset`, `prlimit` and `ulimit` on the
/// program itself work), and a second spawn runs as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_and_scheduling_calls_reach_only_the_caller() {
    let s = Scratch::new("rlim");
    let c = Client::new(Transport::Stdio, &[]).await;
    let server = c.server.as_ref().unwrap().id().unwrap();
    let limits_before = nofile_limits(server);
    let sched_before = sched_state(server);
    let code = format!(
        r#"
S = {server}
K = os.getppid()
print("keeper_nofile_before=" + repr(resource.prlimit(K, resource.RLIMIT_NOFILE)))
for who, pid in [("server", S), ("keeper", K)]:
    t(who + "_prlimit_nofile", lambda: resource.prlimit(pid, resource.RLIMIT_NOFILE, (8, 8)))
    t(who + "_prlimit_cpu", lambda: resource.prlimit(pid, resource.RLIMIT_CPU, (0, 0)))
    t(who + "_setpriority", lambda: os.setpriority(os.PRIO_PROCESS, pid, 19))
    t(who + "_affinity", lambda: os.sched_setaffinity(pid, {{0}}))
    t(who + "_setscheduler", lambda: os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0)))
    t(who + "_setparam", lambda: os.sched_setparam(pid, os.sched_param(0)))
    # struct sched_attr {{ u32 size; u32 policy; ... }}: SCHED_IDLE (5).
    attr = (ctypes.c_uint32 * 14)(56, 5)
    t(who + "_setattr", lambda: libc.syscall(314, pid, attr, 0))
    # ioprio_set(IOPRIO_WHO_PROCESS, pid, IOPRIO_CLASS_IDLE << 13)
    t(who + "_ioprio", lambda: libc.syscall(251, 1, pid, 3 << 13))
    mask = ctypes.c_ulong(1)
    t(who + "_migrate_pages", lambda: libc.syscall(256, pid, 64, ctypes.byref(mask), ctypes.byref(mask)))
    t(who + "_move_pages", lambda: libc.syscall(279, pid, 0, None, None, None, 0))
# Whole process groups and users: the server is one of the user's processes. The value set is
# the default (nice 0, no I/O class), so an unfixed kernel path changes nothing that matters.
t("user_setpriority", lambda: os.setpriority(os.PRIO_USER, 0, 0))
t("pgrp_setpriority", lambda: os.setpriority(os.PRIO_PGRP, 0, 0))
t("pgrp_ioprio", lambda: libc.syscall(251, 2, 0, 0))
# A pid that only the high bits make foreign is the caller: the kernel reads an int.
cur = (ctypes.c_ulong * 2)(*resource.getrlimit(resource.RLIMIT_NOFILE))
t("self_prlimit_high_bits", lambda: libc.syscall(302, ctypes.c_long(1 << 32), 7, ctypes.byref(cur), None))
# Reading a foreign limit is harmless (and /proc/PID/limits shows it anyway).
t("server_prlimit_read", lambda: resource.prlimit(S, resource.RLIMIT_NOFILE))
# The same calls on the caller itself.
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
t("self_setrlimit", lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard)))
t("self_prlimit", lambda: resource.prlimit(0, resource.RLIMIT_NOFILE, (64, hard)))
t("self_nice", lambda: os.nice(1))
t("self_setpriority", lambda: os.setpriority(os.PRIO_PROCESS, 0, 2))
t("self_affinity", lambda: os.sched_setaffinity(0, os.sched_getaffinity(0)))
t("self_setscheduler", lambda: os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0)))
t("self_setparam", lambda: os.sched_setparam(0, os.sched_param(0)))
t("self_ioprio", lambda: libc.syscall(251, 1, 0, 2 << 13 | 4))
print("keeper_nofile_after=" + repr(resource.prlimit(K, resource.RLIMIT_NOFILE)))
"#
    );
    let r = probe(&c, "attack", &s.ws(), ws_policy(false), &code).await;
    for who in ["server", "keeper"] {
        for call in [
            "prlimit_nofile",
            "prlimit_cpu",
            "setpriority",
            "affinity",
            "setscheduler",
            "setparam",
            "setattr",
            "ioprio",
            "migrate_pages",
            "move_pages",
        ] {
            expect(&r, &format!("{who}_{call}"), "EPERM");
        }
    }
    for denied in ["user_setpriority", "pgrp_setpriority", "pgrp_ioprio"] {
        expect(&r, denied, "EPERM");
    }
    for ok in [
        "self_prlimit_high_bits",
        "server_prlimit_read",
        "self_setrlimit",
        "self_prlimit",
        "self_nice",
        "self_setpriority",
        "self_affinity",
        "self_setscheduler",
        "self_setparam",
        "self_ioprio",
    ] {
        expect(&r, ok, "OK");
    }
    assert_eq!(r["keeper_nofile_before"], r["keeper_nofile_after"], "{r:?}");
    assert_eq!(nofile_limits(server), limits_before);
    assert_eq!(sched_state(server), sched_before);

    // The tools, on the program itself.
    let (code, out, err) = shell(
        &c,
        "tools",
        &s.ws(),
        ws_policy(false),
        "nice -n 5 sh -c 'echo nice=$(cut -d\" \" -f19 /proc/self/stat)' && \
         ionice -c 3 sh -c 'echo ionice=$(ionice)' && \
         taskset -c 0 sh -c 'echo taskset=$(taskset -cp $$ | sed \"s/.*: //\")' && \
         prlimit --nofile=100:100 sh -c 'echo ulimit=$(ulimit -n)'",
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    for line in ["nice=5", "ionice=idle", "taskset=0", "ulimit=100"] {
        assert!(out.lines().any(|l| l == line), "{line}: {out}{err}");
    }
    // `renice`/`prlimit --pid` of another process are refused.
    let (code, out, err) = shell(
        &c,
        "renice",
        &s.ws(),
        ws_policy(false),
        &format!("renice -n 19 -p {server}; prlimit --pid {server} --nofile=8:8"),
    )
    .await;
    assert_ne!(code, 0, "{out}{err}");
    assert_eq!(nofile_limits(server), limits_before);
    assert_eq!(sched_state(server), sched_before);

    // The next spawn works as before.
    let ev = c.run("second", &["sh", "-c", "echo second"]).await;
    assert_eq!(ev.stdout, b"second\n");
}

/// Item 5: no file or directory can gain a set-user-id or set-group-id bit, by any call that
/// sets a mode (chmod family, creation with a mode, mknod of a regular file, O_TMPFILE), while
/// ordinary modes (and the sticky bit) still work. `openat2` answers ENOSYS so that libc falls
/// back to `openat`, whose mode the filter can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_file_gains_a_set_id_bit() {
    let s = Scratch::new("setid");
    let ws = s.ws();
    // A set-group-id directory made by the user: subdirectories inherit the bit (the kernel's
    // doing, and harmless: see the README), files do not.
    std::fs::create_dir(ws.join("shared")).unwrap();
    std::fs::set_permissions(ws.join("shared"), std::fs::Permissions::from_mode(0o2775)).unwrap();
    let c = Client::new(Transport::Stdio, &[]).await;
    let (code, out, err) = shell(
        &c,
        "tools",
        &ws,
        ws_policy(false),
        r#"
cp /bin/true t1
chmod u+s t1 2>/dev/null; echo chmod_us=$?
chmod g+s t1 2>/dev/null; echo chmod_gs=$?
chmod 6755 t1 2>/dev/null; echo chmod_6755=$?
install -m 4755 /bin/true t2 2>/dev/null; echo install_4755=$?
mkdir -m 2755 d1 2>/dev/null; echo mkdir_2755=$?
chmod +x t1; echo chmod_x=$?
chmod 755 t1; echo chmod_755=$?
install -m 755 /bin/true t3; echo install_755=$?
mkdir -m 755 d2; echo mkdir_755=$?
mkdir -m 1777 d3; echo mkdir_1777=$?
chmod +t d2; echo chmod_t=$?
mkdir shared/sub; echo mkdir_in_setgid=$?
touch shared/file; echo touch_in_setgid=$?
"#,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let results: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
    for refused in [
        "chmod_us",
        "chmod_gs",
        "chmod_6755",
        "install_4755",
        "mkdir_2755",
    ] {
        assert_ne!(results.get(refused), Some(&"0"), "{refused}: {out}{err}");
        assert!(results.contains_key(refused), "{refused}: {out}{err}");
    }
    for allowed in [
        "chmod_x",
        "chmod_755",
        "install_755",
        "mkdir_755",
        "mkdir_1777",
        "chmod_t",
        "mkdir_in_setgid",
        "touch_in_setgid",
    ] {
        assert_eq!(results.get(allowed), Some(&"0"), "{allowed}: {out}{err}");
    }

    // Every raw call of the family, with each set-id bit.
    let r = probe(
        &c,
        "calls",
        &ws,
        ws_policy(false),
        r#"
AT_FDCWD = -100
open("plain", "w").close()
fd = os.open("plain", os.O_RDONLY)
for bits in (0o4000, 0o2000):
    m = 0o755 | bits
    n = oct(bits)
    t("chmod_" + n, lambda: os.chmod("plain", m))
    t("fchmod_" + n, lambda: os.fchmod(fd, m))
    t("fchmodat_" + n, lambda: libc.syscall(268, AT_FDCWD, b"plain", m))
    t("fchmodat2_" + n, lambda: libc.syscall(452, AT_FDCWD, b"plain", m, 0x100))
    t("legacy_chmod_" + n, lambda: libc.syscall(90, b"plain", m))
    t("openat_creat_" + n, lambda: os.close(os.open("o" + n, os.O_CREAT | os.O_WRONLY, m)))
    t("legacy_open_creat_" + n, lambda: libc.syscall(2, ("l" + n).encode(), os.O_CREAT | os.O_WRONLY, m))
    t("creat_" + n, lambda: libc.syscall(85, ("c" + n).encode(), m))
    t("tmpfile_" + n, lambda: os.close(os.open(".", os.O_TMPFILE | os.O_WRONLY, m)))
    t("mkdir_" + n, lambda: os.mkdir("d" + n, m))
    t("legacy_mkdir_" + n, lambda: libc.syscall(83, ("e" + n).encode(), m))
    t("mknod_reg_" + n, lambda: os.mknod("n" + n, 0o100000 | m))
    t("legacy_mknod_reg_" + n, lambda: libc.syscall(133, ("k" + n).encode(), 0o100000 | m, 0))
    # Bits above the 16 the kernel keeps do not hide the set-id bits.
    t("chmod_high_" + n, lambda: libc.syscall(90, b"plain", (1 << 40) | m))
how = (ctypes.c_uint64 * 3)(os.O_CREAT | os.O_WRONLY, 0o4755, 0)
t("openat2", lambda: libc.syscall(437, AT_FDCWD, b"o2", how, 24))
t("chmod_plain", lambda: os.chmod("plain", 0o755))
t("fchmod_plain", lambda: os.fchmod(fd, 0o1755))
t("openat_plain", lambda: os.close(os.open("p", os.O_CREAT | os.O_WRONLY, 0o755)))
t("tmpfile_plain", lambda: os.close(os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o600)))
t("mknod_plain", lambda: os.mknod("q", 0o100755))
t("mkdir_plain", lambda: os.mkdir("r", 0o755))
# Without O_CREAT the mode argument means nothing and is not checked.
t("open_existing_odd_mode", lambda: libc.syscall(2, b"plain", os.O_RDONLY, 0o4755))
"#,
    )
    .await;
    for bits in ["0o4000", "0o2000"] {
        for call in [
            "chmod",
            "fchmod",
            "fchmodat",
            "fchmodat2",
            "legacy_chmod",
            "openat_creat",
            "legacy_open_creat",
            "creat",
            "tmpfile",
            "mkdir",
            "legacy_mkdir",
            "mknod_reg",
            "legacy_mknod_reg",
            "chmod_high",
        ] {
            expect(&r, &format!("{call}_{bits}"), "EPERM");
        }
    }
    expect(&r, "openat2", "ENOSYS");
    for ok in [
        "chmod_plain",
        "fchmod_plain",
        "openat_plain",
        "tmpfile_plain",
        "mknod_plain",
        "mkdir_plain",
        "open_existing_odd_mode",
    ] {
        expect(&r, ok, "OK");
    }

    // Whatever the calls answered, nothing in the workspace carries a set-id bit except the
    // user's own directory and what the kernel made inherit it.
    let mut found = Vec::new();
    for e in walk(&ws) {
        let mode = std::fs::symlink_metadata(&e).unwrap().permissions().mode();
        if mode & 0o6000 != 0 {
            found.push((
                e.strip_prefix(&ws).unwrap().display().to_string(),
                mode & 0o6000,
            ));
        }
    }
    found.sort();
    assert_eq!(
        found,
        vec![
            ("shared".to_string(), 0o2000),
            ("shared/sub".to_string(), 0o2000)
        ],
        "{out}"
    );
    assert_eq!(
        std::fs::metadata(ws.join("shared/file"))
            .unwrap()
            .permissions()
            .mode()
            & 0o6000,
        0
    );
}

/// Every path below `dir` (not following symlinks).
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// A server started from a real terminal: the test allocates a pseudo-terminal and starts
/// `stockade serve --listen ws://...` as the leader of a new session whose controlling
/// terminal is that pty (stdin and stderr on it), as a shell in a terminal would.
struct ServerOnTerminal {
    client: Client,
    master: std::os::fd::OwnedFd,
    slave_path: String,
    server_pid: i32,
}

async fn server_on_terminal() -> ServerOnTerminal {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::process::Stdio;
    use tokio::io::AsyncBufReadExt;
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two fds; no name buffer, termios or winsize.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty returned two fresh fds that nothing else owns.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let slave_path = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd()))
        .unwrap()
        .display()
        .to_string();
    assert!(slave_path.starts_with("/dev/pts/"), "{slave_path}");
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args([
        "serve",
        "--listen",
        "ws://127.0.0.1:0",
        "--ceiling",
        "danger-full-access",
    ])
    .stdin(Stdio::from(slave.try_clone().unwrap()))
    .stdout(Stdio::piped())
    .stderr(Stdio::from(slave.try_clone().unwrap()))
    .kill_on_drop(true);
    // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe; fd 0 is the pty slave.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn stockade");
    drop(slave);
    let server_pid = child.id().unwrap() as i32;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .expect("server printed its URL")
        .unwrap()
        .unwrap();
    let mut client = Client::ws_connect(&url, &[]).await.unwrap();
    client.server = Some(child);
    client.initialize().await;
    ServerOnTerminal {
        client,
        master,
        slave_path,
        server_pid,
    }
}

/// The foreground process group of the terminal, read through its master side.
fn foreground_group(master: &std::os::fd::OwnedFd) -> i32 {
    use std::os::fd::AsRawFd;
    // SAFETY: tcgetpgrp on a valid fd.
    unsafe { libc::tcgetpgrp(master.as_raw_fd()) }
}

/// Item 8: a process started with `tty: false` is not in the server's session: it cannot open
/// the server's terminal as `/dev/tty`, make itself the terminal's foreground group, or make
/// the terminal its own; what the user types reaches the server's terminal, not the process.
/// Signals to the process (its group) keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_terminal_is_shared_with_the_server() {
    let s = Scratch::new("ctty");
    let t = server_on_terminal().await;
    let c = &t.client;
    // The server really has the terminal: it leads the session in its foreground.
    assert_eq!(foreground_group(&t.master), t.server_pid);
    for (id, policy) in [
        ("confined", ws_policy(false)),
        ("unconfined", json!({"type": "danger-full-access"})),
    ] {
        let code = format!(
            r#"
import signal, termios, fcntl
signal.signal(signal.SIGTTOU, signal.SIG_IGN)
signal.signal(signal.SIGTTIN, signal.SIG_IGN)
print("same_session=" + str(os.getsid(0) == os.getsid({server})))
print("leader=" + str(os.getsid(0) == os.getpid() == os.getpgrp()))
t("open_dev_tty", lambda: os.close(os.open("/dev/tty", os.O_RDWR)))
t("open_dev_tty_read", lambda: os.close(os.open("/dev/tty", os.O_RDONLY | os.O_NONBLOCK)))
def foreground_via_dev_tty():
    fd = os.open("/dev/tty", os.O_RDWR)
    os.tcsetpgrp(fd, os.getpgrp())
t("tcsetpgrp_dev_tty", foreground_via_dev_tty)
# The server's terminal by its name (readable where the policy reads everywhere).
fd = os.open("{slave}", os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
t("tcsetpgrp_by_path", lambda: os.tcsetpgrp(fd, os.getpgrp()))
t("tiocsctty_by_path", lambda: fcntl.ioctl(fd, termios.TIOCSCTTY, 0))
"#,
            server = t.server_pid,
            slave = t.slave_path,
        );
        let r = probe(c, id, &s.ws(), policy, &code).await;
        expect(&r, "same_session", "False");
        expect(&r, "leader", "True");
        expect(&r, "open_dev_tty", "ENXIO");
        expect(&r, "open_dev_tty_read", "ENXIO");
        expect(&r, "tcsetpgrp_dev_tty", "ENXIO");
        // Not its controlling terminal (ENOTTY, EPERM); for a confined process Landlock
        // refuses ioctls on a device it opened outside the allowed devices first (EACCES).
        assert!(
            matches!(r["tcsetpgrp_by_path"].as_str(), "ENOTTY" | "EACCES"),
            "{r:?}"
        );
        assert!(
            matches!(r["tiocsctty_by_path"].as_str(), "EPERM" | "EACCES"),
            "{r:?}"
        );
        assert_eq!(foreground_group(&t.master), t.server_pid, "{id}");
    }
    // Signals reach the process group as before.
    c.start_with(
        "sig",
        &[
            "sh",
            "-c",
            "trap 'echo got-int; exit 3' INT; echo ready; while :; do sleep 0.05; done",
        ],
        json!({"sandboxPolicy": ws_policy(false), "cwd": s.ws().to_str().unwrap()}),
    )
    .await
    .unwrap();
    c.wait_output("sig", "ready").await;
    let r = c
        .ok(
            "process/signal",
            json!({"processId": "sig", "signal": "interrupt"}),
        )
        .await;
    assert_eq!(r["delivered"], true);
    let ev = c.closed("sig").await;
    assert!(String::from_utf8_lossy(&ev.stdout).contains("got-int"));
    assert_eq!(ev.exited.unwrap()["exitCode"], 3);
}

/// The program of the tree-kill tests: a tree that tries to outlive its request. It ignores
/// every signal it can, starts a daemon that leaves the session (`setsid`) and double-forks,
/// and under the daemon 3 workers that each keep 3 children alive, forking a new one whenever
/// one dies (so the kill loop races against replacements): 14 processes with the main one.
/// With `STARVE` set it first tries to lower its keeper's open-file limit to 0, so that the
/// keeper could not open its list of children; with `MAIN_EXITS` the main process exits once
/// the daemon is started. Every process carries the marker (the last argument).
const TREE: &str = r#"
import os, signal, time, resource, errno
for s in range(1, 65):
    if s == signal.SIGCHLD:
        continue  # ignoring it would make the kernel reap children: wait() must see them
    try:
        signal.signal(s, signal.SIG_IGN)
    except (OSError, ValueError):
        pass
if os.environ.get("STARVE"):
    try:
        resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (0, 0))
        print("starve=OK", flush=True)
    except OSError as e:
        print("starve=" + errno.errorcode[e.errno], flush=True)
def leaf():
    while True:
        time.sleep(1000)
def keep(n, body):
    kids = set()
    while True:
        while len(kids) < n:
            pid = os.fork()
            if pid == 0:
                body()
            kids.add(pid)
        try:
            kids.discard(os.wait()[0])
        except ChildProcessError:
            kids.clear()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        keep(3, lambda: keep(3, leaf))
    os._exit(0)
os.wait()
print("daemon-started", flush=True)
if os.environ.get("MAIN_EXITS"):
    os._exit(0)
leaf()
"#;

/// Starts [`TREE`] under `policy` and waits (bounded) until all 14 processes run; returns
/// their pids and the process's stdout so far.
async fn start_tree(
    c: &Client,
    id: &str,
    cwd: &Path,
    policy: Value,
    env: Value,
    marker: &str,
) -> (Vec<i32>, String) {
    c.start_with(
        id,
        &[PY, "-c", TREE, marker],
        json!({"cwd": cwd.to_str().unwrap(), "sandboxPolicy": policy, "env": env}),
    )
    .await
    .unwrap_or_else(|e| panic!("start {id}: {e}"));
    c.wait_output(id, "daemon-started").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let pids = pids_with_marker(marker);
        if pids.len() >= 13 + usize::from(env.get("MAIN_EXITS").is_none()) {
            let out = String::from_utf8_lossy(&c.events(id).stdout).into_owned();
            return (pids, out);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tree did not start: {pids:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Asserts that none of `pids` and nothing else carrying `marker` survives.
async fn assert_tree_gone(pids: &[i32], marker: &str) {
    assert_eq!(wait_all_dead(pids).await, Vec::<i32>::new(), "survivors");
    assert_eq!(pids_with_marker(marker), Vec::<i32>::new(), "new survivors");
}

/// Item 7: whatever a confined tree does to itself and to its keeper (ignore signals, leave
/// the session, double-fork, replace killed children, try to starve the keeper of file
/// descriptors), `process/terminate`, the main process's exit (after the close grace), the
/// end of the session and the death of the server each leave no descendant alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_kill_cannot_be_defeated_from_inside() {
    let s = Scratch::new("treekill");
    let c = Client::new(Transport::Stdio, &["--close-grace-ms", "200"]).await;
    let starve = json!({"PATH": "/usr/bin:/bin", "STARVE": "1"});
    let m = marker("tkterm");
    let (pids, out) = start_tree(&c, "term", &s.ws(), ws_policy(false), starve.clone(), &m).await;
    assert!(out.contains("starve=EPERM"), "{out}");
    c.ok("process/terminate", json!({"processId": "term"}))
        .await;
    c.closed("term").await;
    assert_tree_gone(&pids, &m).await;

    let m = marker("tkexit");
    let env = json!({"PATH": "/usr/bin:/bin", "STARVE": "1", "MAIN_EXITS": "1"});
    let (pids, _) = start_tree(&c, "exit", &s.ws(), ws_policy(false), env, &m).await;
    let ev = c.closed("exit").await;
    assert_eq!(ev.exited.unwrap()["exitCode"], 0);
    assert_tree_gone(&pids, &m).await;

    let m = marker("tkeof");
    let (pids, _) = start_tree(&c, "eof", &s.ws(), ws_policy(false), starve.clone(), &m).await;
    c.close();
    c.wait_disconnected().await;
    assert_tree_gone(&pids, &m).await;

    let mut c = Client::new(Transport::Stdio, &[]).await;
    let m = marker("tkserver");
    let (pids, _) = start_tree(&c, "server", &s.ws(), ws_policy(false), starve, &m).await;
    c.server.as_mut().unwrap().start_kill().unwrap();
    assert_tree_gone(&pids, &m).await;
}

/// Item 7, the keeper's side: the keeper opens its list of children before the program
/// starts, so a tree that does starve it of file descriptors (possible only for an
/// unconfined process, which may change its keeper's limits) is still killed whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_without_file_descriptors_still_kills_its_tree() {
    let s = Scratch::new("starved");
    let c = Client::new(Transport::Stdio, &["--ceiling", "danger-full-access"]).await;
    let m = marker("tkstarved");
    let env = json!({"PATH": "/usr/bin:/bin", "STARVE": "1"});
    let policy = json!({"type": "danger-full-access"});
    let (pids, out) = start_tree(&c, "starved", &s.ws(), policy, env, &m).await;
    assert!(out.contains("starve=OK"), "{out}");
    c.ok("process/terminate", json!({"processId": "starved"}))
        .await;
    assert_tree_gone(&pids, &m).await;
    c.closed("starved").await;
}

/// Item 11: with the network allowed, Landlock (before ABI 9) does not govern connecting to a
/// pathname UNIX socket. The report says so in its notes; a socket outside every `none` entry
/// can be connected (the documented limit), and `none` entries hide sockets: one inside a
/// hidden directory, and one hidden itself, cannot be connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_entries_hide_unix_sockets_when_the_network_is_on() {
    use std::os::unix::net::UnixListener;
    let s = Scratch::new("unixsock");
    let ws = s.ws();
    std::fs::create_dir(s.root.join("private")).unwrap();
    let reachable = s.outside().join("reachable.sock");
    let in_hidden_dir = s.root.join("private/hidden.sock");
    let hidden_itself = s.outside().join("hidden-itself.sock");
    let _listeners: Vec<UnixListener> = [&reachable, &in_hidden_dir, &hidden_itself]
        .iter()
        .map(|p| {
            let l = UnixListener::bind(p).unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
            l
        })
        .collect();
    // uid 65534 must reach the sockets by path like any local user could.
    for d in [s.root.clone(), s.outside(), s.root.join("private")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let entry = |p: &Path, access: &str| json!({"path": {"type": "path", "path": p.to_str().unwrap()}, "access": access});
    let uri = format!("file://{}", ws.display());
    let policy = json!({"permissions": {"type": "managed", "network": "enabled",
        "file_system": {"type": "restricted", "entries": [
            {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
            entry(&ws, "write"),
            entry(&s.root.join("private"), "none"),
            entry(&hidden_itself, "none"),
        ]}},
        "cwd": uri, "workspaceRoots": [uri]});
    let c = Client::new(Transport::Stdio, &[]).await;
    let code = format!(
        r#"
def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.close()
t("reachable", lambda: connect("{reachable}"))
t("in_hidden_dir", lambda: connect("{in_hidden_dir}"))
t("hidden_itself", lambda: connect("{hidden_itself}"))
"#,
        reachable = reachable.display(),
        in_hidden_dir = in_hidden_dir.display(),
        hidden_itself = hidden_itself.display(),
    );
    let r = c
        .start_with(
            "sock",
            &[PY, "-c", &format!("{PRELUDE}\n{code}")],
            json!({"cwd": ws.to_str().unwrap(), "sandbox": policy}),
        )
        .await
        .unwrap();
    let notes = r["sandbox"]["notes"].as_array().unwrap();
    assert!(
        notes.iter().any(|n| n
            .as_str()
            .unwrap()
            .starts_with("pathname UNIX sockets are not restricted")),
        "{r}"
    );
    let ev = c.closed("sock").await;
    let out = String::from_utf8_lossy(&ev.stdout);
    assert_eq!(ev.exited.unwrap()["exitCode"], 0, "{out}");
    assert!(out.lines().any(|l| l == "reachable=OK"), "{out}");
    assert!(out.lines().any(|l| l == "in_hidden_dir=EACCES"), "{out}");
    assert!(out.lines().any(|l| l == "hidden_itself=EACCES"), "{out}");
    // With the network blocked there is no note (no socket can be created at all).
    let blocked = c
        .start_with(
            "blocked",
            &["true"],
            json!({"cwd": ws.to_str().unwrap(), "sandboxPolicy": ws_policy(false)}),
        )
        .await
        .unwrap();
    assert!(
        !blocked["sandbox"]["notes"]
            .to_string()
            .contains("pathname UNIX sockets"),
        "{blocked}"
    );
    c.closed("blocked").await;
}
