//! Sandbox escape tests: real children under real policies. Each forbidden operation must fail
//! with the expected errno and each allowed one must succeed. `.ci/run` runs this file as root
//! and again as uid 65534 (scripts/test-unprivileged).

mod common;

use std::path::Path;

use common::probe::*;
use common::*;
use serde_json::{Value, json};

/// The common scratch tree, with a file outside and one in the workspace.
fn scratch(tag: &str) -> Scratch {
    let s = Scratch::new(tag);
    std::fs::write(s.outside().join("file"), "outside\n").unwrap();
    std::fs::write(s.ws().join("existing"), "ws\n").unwrap();
    s
}

/// workspace-write with only the workspace writable (no /tmp, no $TMPDIR).
fn ws_policy(network: bool) -> Value {
    json!({"type": "workspace-write", "network_access": network,
           "exclude_slash_tmp": true, "exclude_tmpdir_env_var": true})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_reads_everywhere_and_writes_nowhere() {
    let s = scratch("ro");
    let c = Client::new(Transport::Stdio, &[]).await;
    let r = probe(
        &c,
        "ro",
        &s.ws(),
        json!({"type": "read-only"}),
        r#"
t("read_etc", lambda: open("/etc/hostname").read())
t("exec_ls", lambda: os.system("/bin/ls / >/dev/null") and -1)
t("read_ws", lambda: open("existing").read())
t("write_ws", lambda: open("new", "w"))
t("append_ws", lambda: open("existing", "a"))
t("write_tmp", lambda: open("/tmp/stockade-ro-probe", "w"))
t("dev_null", lambda: open("/dev/null", "w").write("x"))
"#,
    )
    .await;
    expect(&r, "read_etc", "OK");
    expect(&r, "exec_ls", "OK");
    expect(&r, "read_ws", "OK");
    // Everything outside the writable roots (here: everything) is a read-only mount too
    // (README: metadata changes), and the kernel checks that before Landlock: EROFS.
    expect(&r, "write_ws", "EROFS");
    expect(&r, "append_ws", "EROFS");
    expect(&r, "write_tmp", "EROFS");
    expect(&r, "dev_null", "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_write_inside_only() {
    let s = scratch("ww");
    let c = Client::new(Transport::Stdio, &[]).await;
    let out = s.outside();
    let code = format!(
        r#"
O = "{out}"
t("create", lambda: open("new", "w").write("x"))
t("append", lambda: open("existing", "a").write("more"))
t("truncate", lambda: os.truncate("existing", 0))
t("rename", lambda: os.rename("new", "renamed"))
t("mkdir", lambda: os.mkdir("sub"))
t("delete", lambda: os.unlink("renamed"))
t("rmdir", lambda: os.rmdir("sub"))
t("out_create", lambda: open(O + "/new", "w"))
t("out_append", lambda: open(O + "/file", "a"))
t("out_truncate", lambda: os.truncate(O + "/file", 0))
t("out_rename_in", lambda: os.rename(O + "/file", "stolen"))
t("out_unlink", lambda: os.unlink(O + "/file"))
t("out_mkdir", lambda: os.mkdir(O + "/d"))
t("out_read", lambda: open(O + "/file").read())
t("out_hardlink", lambda: os.link(O + "/file", "hl"))
os.symlink(O, "link_to_outside")
t("symlink_write", lambda: open("link_to_outside/new", "w"))
os.symlink("/etc", "etc_link")
t("etc_link_write", lambda: open("etc_link/stockade-probe", "w"))
t("dotdot_escape", lambda: open("link_to_outside/../outside/new2", "w"))
"#,
        out = out.display()
    );
    let r = probe(&c, "ww", &s.ws(), ws_policy(false), &code).await;
    for ok in [
        "create", "append", "truncate", "rename", "mkdir", "delete", "rmdir", "out_read",
    ] {
        expect(&r, ok, "OK");
    }
    for denied in [
        "out_create",
        "out_append",
        "out_truncate",
        "out_unlink",
        "out_mkdir",
        "symlink_write",
        "etc_link_write",
        "dotdot_escape",
    ] {
        // Outside the roots is a read-only mount (checked before Landlock): EROFS.
        expect(&r, denied, "EROFS");
    }
    // Moving or linking a file out of a read-only directory needs the Refer right there.
    assert!(
        matches!(r["out_rename_in"].as_str(), "EXDEV" | "EACCES"),
        "{r:?}"
    );
    assert!(
        matches!(r["out_hardlink"].as_str(), "EXDEV" | "EACCES"),
        "{r:?}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("file")).unwrap(),
        "outside\n"
    );
    assert!(!out.join("new").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_dir_is_read_only_and_git_still_works() {
    let s = scratch("git");
    let ws = s.ws();
    let git = |args: &[&str]| {
        let st = std::process::Command::new("/usr/bin/git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@e",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(&ws)
            .env("HOME", &ws)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&["add", "existing"]);
    git(&["commit", "-qm", "first"]);
    let c = Client::new(Transport::Stdio, &[]).await;
    let r = probe(
        &c,
        "gitprobe",
        &ws,
        ws_policy(false),
        r#"
t("config_write", lambda: open(".git/config", "a"))
t("hook_create", lambda: open(".git/hooks/new-file", "w"))
t("git_read", lambda: open(".git/HEAD").read())
t("ws_write", lambda: open("file2", "w").write("x"))
"#,
    )
    .await;
    expect(&r, "config_write", "EROFS");
    expect(&r, "hook_create", "EROFS");
    expect(&r, "git_read", "OK");
    expect(&r, "ws_write", "OK");
    let (code, out, err) = shell(
        &c,
        "status",
        &ws,
        ws_policy(false),
        "git status --porcelain",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("file2"), "{out}");
    // Commits need to write .git: denied while .git is protected (decision in README).
    let (code, _, err) = shell(&c, "commit", &ws, ws_policy(false),
        "git -c user.name=t -c user.email=t@e add file2 && git -c user.name=t -c user.email=t@e commit -qm second").await;
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    // A fresh workspace without .git: git init/add/commit work (nothing to protect yet).
    let fresh = s.root.join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    let (code, out, err) = shell(&c, "fresh", &fresh, ws_policy(false),
        "git -c init.defaultBranch=main init -q && echo hi > a && git add a && git -c user.name=t -c user.email=t@e commit -qm one && git log --oneline | wc -l").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "1");
    let r = c
        .start_with(
            "rep",
            &["true"],
            json!({"cwd": ws.to_str().unwrap(), "sandboxPolicy": ws_policy(false)}),
        )
        .await
        .unwrap();
    assert_eq!(r["sandbox"]["filesystem"], "landlock+mount-namespace");
}

/// Processes with the same mount plan share one namespace (built by the first, joined by the
/// next): it must never outlive what it captured. A protected `.git` replaced on the host is
/// protected again for the next process, and (as root, who can mount) a mount made on the host
/// after the namespace was built is visible to the next process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_namespaces_follow_the_host() {
    let s = scratch("nsreuse");
    let ws = s.ws();
    let git_init = || {
        let st = std::process::Command::new("/usr/bin/git")
            .args(["init", "-q"])
            .current_dir(&ws)
            .output()
            .unwrap();
        assert!(st.status.success());
    };
    git_init();
    let c = Client::new(Transport::Stdio, &[]).await;
    let code = r#"
t("config_write", lambda: open(".git/config", "a"))
t("ws_write", lambda: open("file2", "w").write("x"))
t("see_mount", lambda: open("mnt/marker").read())
"#;
    for round in 0..2 {
        let r = probe(&c, &format!("p{round}"), &ws, ws_policy(false), code).await;
        expect(&r, "config_write", "EROFS");
        expect(&r, "ws_write", "OK");
        expect(&r, "see_mount", "ENOENT");
    }
    // The whole git dir replaced on the host: the old namespace's bind went with the old one.
    std::fs::remove_dir_all(ws.join(".git")).unwrap();
    git_init();
    let r = probe(&c, "after_reinit", &ws, ws_policy(false), code).await;
    expect(&r, "config_write", "EROFS");
    expect(&r, "ws_write", "OK");
    // A mount made on the host (root only).
    std::fs::create_dir(ws.join("mnt")).unwrap();
    let target = std::ffi::CString::new(ws.join("mnt").to_str().unwrap()).unwrap();
    // SAFETY: mount with valid C strings.
    let mounted = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    } == 0;
    if mounted {
        std::fs::write(ws.join("mnt/marker"), "m").unwrap();
        let r = probe(&c, "after_mount", &ws, ws_policy(false), code).await;
        // SAFETY: unmounting what this test mounted.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        expect(&r, "see_mount", "OK");
        expect(&r, "config_write", "EROFS");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_blocked_and_allowed() {
    let s = scratch("net");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let unix_path = s.root.join("sock");
    let _unix = std::os::unix::net::UnixListener::bind(&unix_path).unwrap();
    let abstract_name = marker("abs");
    let _abs = {
        use std::os::linux::net::SocketAddrExt;
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap();
        std::os::unix::net::UnixListener::bind_addr(&addr).unwrap()
    };
    let c = Client::new(Transport::Stdio, &[]).await;
    let code = format!(
        r#"
def tcp():
    s = socket.socket(); s.settimeout(5); s.connect(("127.0.0.1", {port})); return 0
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x", ("127.0.0.1", 9)); return 0
def unix_path():
    s = socket.socket(socket.AF_UNIX); s.connect("{unix}"); return 0
def unix_abstract():
    s = socket.socket(socket.AF_UNIX); s.connect("\0{abs}"); return 0
t("tcp", tcp)
t("udp", udp)
t("raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
t("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
t("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
t("unix_path", unix_path)
t("unix_abstract", unix_abstract)
def pair():
    a, b = socket.socketpair(); a.send(b"x"); return 0 if b.recv(1) == b"x" else -1
t("socketpair", pair)
"#,
        unix = unix_path.display(),
        abs = abstract_name
    );
    let r = probe(&c, "blocked", &s.ws(), ws_policy(false), &code).await;
    for denied in [
        "tcp",
        "udp",
        "raw",
        "netlink",
        "packet",
        "unix_path",
        "unix_abstract",
    ] {
        expect(&r, denied, "EPERM");
    }
    expect(&r, "socketpair", "OK");
    let r = probe(&c, "allowed", &s.ws(), ws_policy(true), &code).await;
    expect(&r, "tcp", "OK");
    expect(&r, "socketpair", "OK");
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_and_kernel_are_out_of_reach() {
    let s = scratch("hard");
    let c = Client::new(Transport::Stdio, &[]).await;
    let server = c.server.as_ref().unwrap().id().unwrap();
    let code = format!(
        r#"
S = {server}
t("ptrace_attach", lambda: libc.ptrace(16, S, 0, 0))
t("environ", lambda: open(f"/proc/{{S}}/environ", "rb").read())
t("mem", lambda: open(f"/proc/{{S}}/mem", "rb").read(1))
t("kill_server", lambda: os.kill(S, 0))
t("kill_self_group", lambda: os.kill(os.getpid(), 0))
t("io_uring_setup", lambda: libc.syscall(425, 8, ctypes.create_string_buffer(120)))
t("unshare_user", lambda: libc.unshare(0x10000000))
t("mount", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
t("bpf", lambda: libc.syscall(321, 0, None, 0))
t("keyctl", lambda: libc.syscall(250, 0, 0, 0, 0, 0))
t("perf", lambda: libc.syscall(298, None, 0, -1, -1, 0))
t("userfaultfd", lambda: libc.syscall(323, 0))
t("clone3", lambda: libc.syscall(435, None, 0))
def clone_ns():
    # clone(CLONE_NEWUSER | SIGCHLD) with no stack behaves like fork if it is allowed.
    r = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)
    if r == 0:
        os._exit(0)
    return r
t("clone_newuser", clone_ns)
def plain_fork():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    return 0 if os.waitpid(pid, 0)[1] == 7 << 8 else -1
t("fork", plain_fork)
t("ioctl_plain", lambda: libc.ioctl(1, 0x541B, ctypes.byref(ctypes.c_int())))
st = open("/proc/self/status").read()
for key in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"]:
    line = [l for l in st.splitlines() if l.startswith(key + ":")][0]
    print(key + "=" + line.split()[1])
print("fds=" + ",".join(sorted(os.listdir("/proc/self/fd"))))
"#
    );
    let r = probe(&c, "hard", &s.ws(), ws_policy(false), &code).await;
    expect(&r, "ptrace_attach", "EPERM");
    expect(&r, "environ", "EACCES");
    expect(&r, "mem", "EACCES");
    expect(&r, "kill_server", "EPERM");
    expect(&r, "kill_self_group", "OK");
    for denied in [
        "io_uring_setup",
        "unshare_user",
        "mount",
        "bpf",
        "keyctl",
        "perf",
        "userfaultfd",
    ] {
        expect(&r, denied, "EPERM");
    }
    expect(&r, "clone3", "ENOSYS");
    expect(&r, "clone_newuser", "EPERM");
    expect(&r, "fork", "OK");
    expect(&r, "ioctl_plain", "OK");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        expect(&r, cap, "0000000000000000");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Root: the bounding set is emptied so that nothing is regained at exec.
        expect(&r, "CapBnd", "0000000000000000");
    }
    expect(&r, "NoNewPrivs", "1");
    // Python's own fd for listing /proc/self/fd shows up as the fourth entry.
    assert_eq!(r["fds"].split(',').count(), 4, "{r:?}");
    // A setuid binary gains nothing under no_new_privs.
    let (_, out, _) = shell(
        &c,
        "suid",
        &s.ws(),
        ws_policy(false),
        "/usr/bin/newgrp --help >/dev/null 2>&1; id -u; grep CapEff /proc/self/status",
    )
    .await;
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_injection_is_refused() {
    let s = scratch("tty");
    let c = Client::new(Transport::Stdio, &[]).await;
    let script = r#"import fcntl, termios, errno
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"x")
    print("TIOCSTI=OK")
except OSError as e:
    print("TIOCSTI=" + errno.errorcode[e.errno])
import os
print("winsize=" + ("OK" if os.get_terminal_size(0).columns == 80 else "BAD"))
"#;
    c.start_with(
        "tty",
        &[PY, "-c", script],
        json!({"tty": true, "cwd": s.ws().to_str().unwrap(), "sandboxPolicy": ws_policy(false)}),
    )
    .await
    .unwrap();
    let ev = c.closed("tty").await;
    let out = String::from_utf8_lossy(&ev.pty);
    assert!(out.contains("TIOCSTI=EPERM"), "{out}");
    assert!(out.contains("winsize=OK"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tools_work_under_workspace_write() {
    let s = scratch("tools");
    let c = Client::new(Transport::Stdio, &[]).await;
    let (code, out, err) = shell(
        &c,
        "pipe",
        &s.ws(),
        ws_policy(false),
        "seq 1 1000 | sort -rn | head -3 | tr '\\n' ' ' > out.txt && cat out.txt",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "1000 999 998 ");
    let (code, _, err) = shell(&c, "venv", &s.ws(), ws_policy(false),
        "/usr/bin/python3 -m venv --without-pip venv && ./venv/bin/python -c 'import sys; print(sys.prefix)'").await;
    assert_eq!(code, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_hosts_fail_closed_unless_allowed() {
    let s = scratch("deg");
    let cwd = s.ws();
    let params = json!({"cwd": cwd.to_str().unwrap(), "sandboxPolicy": ws_policy(false)});
    let c = Client::new(Transport::Stdio, &["--landlock-abi", "2"]).await;
    let e = c
        .start_with("d1", &["true"], params.clone())
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32021);
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("ABI 3") && msg.contains("ABI 6"), "{msg}");
    let c = Client::new(Transport::Stdio, &["--landlock-abi", "0"]).await;
    let e = c
        .start_with("d2", &["true"], params.clone())
        .await
        .unwrap_err();
    assert!(e["message"].as_str().unwrap().contains("Landlock"), "{e}");
    let c = Client::new(
        Transport::Stdio,
        &["--landlock-abi", "5", "--allow-degraded"],
    )
    .await;
    let r = c
        .start_with(
            "d3",
            &["sh", "-c", "echo x > inside && echo y > ../outside/nope"],
            params.clone(),
        )
        .await
        .unwrap();
    assert_eq!(r["sandbox"]["enforcement"], "degraded");
    assert_eq!(r["sandbox"]["landlockAbi"], 5);
    assert!(
        r["sandbox"]["degradations"][0]
            .as_str()
            .unwrap()
            .contains("ABI 6"),
        "{r}"
    );
    let ev = c.closed("d3").await;
    assert_ne!(
        ev.exited.unwrap()["exitCode"],
        0,
        "filesystem rules still apply"
    );
    assert!(s.ws().join("inside").exists());
    assert!(!s.outside().join("nope").exists());
    // Full support is reported in initialize.
    let mut c = Client::uninitialized(Transport::Stdio, &[]).await;
    let init = c.initialize().await;
    assert_eq!(init["stockade"]["sandboxSupport"]["seccomp"], true);
    assert!(
        init["stockade"]["sandboxSupport"]["landlockAbi"]
            .as_i64()
            .unwrap()
            >= 6
    );
    assert_eq!(
        init["stockade"]["sandboxSupport"]["policies"],
        json!(["read-only", "workspace-write"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceiling_and_default_policy() {
    let s = scratch("ceil");
    let cwd = s.ws();
    let c = Client::new(
        Transport::Stdio,
        &["--ceiling", "read-only", "--default-policy", "read-only"],
    )
    .await;
    let r = c
        .start_with("a", &["true"], json!({"cwd": cwd.to_str().unwrap()}))
        .await
        .unwrap();
    assert_eq!(r["sandbox"]["policy"], "read-only");
    let e = c
        .start_with(
            "b",
            &["true"],
            json!({"cwd": cwd.to_str().unwrap(), "sandboxPolicy": {"type": "workspace-write"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32020);
    assert!(e["message"].as_str().unwrap().contains("read-only"));
    let c = Client::new(Transport::Stdio, &["--no-network"]).await;
    let e = c
        .start_with(
            "n",
            &["true"],
            json!({"cwd": cwd.to_str().unwrap(), "sandboxPolicy": ws_policy(true)}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32020);
    // danger-full-access needs a higher ceiling; then nothing is confined.
    let c = Client::new(Transport::Stdio, &["--ceiling", "danger-full-access"]).await;
    let r = c
        .start_with(
            "f",
            &["true"],
            json!({"cwd": cwd.to_str().unwrap(), "sandboxPolicy": {"type": "danger-full-access"}}),
        )
        .await
        .unwrap();
    assert_eq!(r["sandboxType"], "none");
    assert_eq!(r["sandbox"]["enforcement"], "none");
    // enforceManagedNetwork blocks the network even when the policy allows it.
    let c = Client::new(Transport::Stdio, &[]).await;
    let r = c.start_with("m", &["true"], json!({"cwd": cwd.to_str().unwrap(), "sandboxPolicy": ws_policy(true), "enforceManagedNetwork": true})).await.unwrap();
    assert_eq!(r["sandbox"]["network"], "blocked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_denied_is_reported() {
    let s = scratch("denied");
    let c = Client::new(Transport::Stdio, &[]).await;
    let script = format!("echo x > {}/nope", s.outside().display());
    c.start_with(
        "d",
        &["sh", "-c", &script],
        json!({"cwd": s.ws().to_str().unwrap(), "sandboxPolicy": ws_policy(false)}),
    )
    .await
    .unwrap();
    let ev = c.closed("d").await;
    assert_eq!(ev.exited.unwrap()["sandboxDenied"], true);
    let r = c.ok("process/read", json!({"processId": "d"})).await;
    assert_eq!(r["sandboxDenied"], true);
    c.start_with(
        "ok",
        &["sh", "-c", "echo fine > inside"],
        json!({"cwd": s.ws().to_str().unwrap(), "sandboxPolicy": ws_policy(false)}),
    )
    .await
    .unwrap();
    let ev = c.closed("ok").await;
    assert_eq!(ev.exited.unwrap()["sandboxDenied"], false);
}

/// A syscall through the i386 ABI (`int 0x80`) uses other numbers (20 is getpid there, ptrace
/// is 26), so the filter's rules cannot apply to it: a confined process that tries one is
/// killed (SIGSYS), while an unconfined one gets its answer.
#[cfg(target_arch = "x86_64")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_abi_syscalls_are_killed() {
    let s = scratch("abi");
    let c = Client::new(Transport::Stdio, &["--ceiling", "danger-full-access"]).await;
    let script = r#"import mmap, ctypes, os
code = bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3])  # mov eax, 20; int 0x80; ret
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(code)
f = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(m)))
print("getpid=" + ("OK" if f() == os.getpid() else "OTHER"))
"#;
    let run = |id: &'static str, policy: Value| {
        let c = &c;
        let cwd = s.ws();
        async move {
            c.start_with(
                id,
                &[PY, "-c", script],
                json!({"cwd": cwd.to_str().unwrap(), "sandboxPolicy": policy}),
            )
            .await
            .unwrap_or_else(|e| panic!("start {id}: {e}"));
            c.closed(id).await
        }
    };
    let free = run("free", json!({"type": "danger-full-access"})).await;
    let out = String::from_utf8_lossy(&free.stdout);
    if !out.contains("getpid=OK") {
        return allow_skip(
            "i386",
            &format!("this kernel has no i386 syscall entry ({out})"),
        );
    }
    let confined = run("confined", ws_policy(false)).await;
    let exited = confined.exited.unwrap();
    assert_eq!(exited["signal"], "SIGSYS", "{exited}");
    assert!(confined.stdout.is_empty());
}

/// `none` entries inside a writable workspace: a hidden file cannot be opened at all (EACCES
/// for reading and for writing: it is not an empty file that swallows writes), a hidden
/// directory cannot be listed, and everything around them works, `/proc` included (the
/// stand-in's helper mount is gone before exec).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_entries_hide_files_and_directories() {
    let s = scratch("none");
    std::fs::write(s.ws().join("secret"), "s3cret\n").unwrap();
    std::fs::create_dir(s.ws().join("private")).unwrap();
    std::fs::write(s.ws().join("private/key"), "k\n").unwrap();
    let ws = s.ws();
    let entry = |p: &Path, access: &str| json!({"path": {"type": "path", "path": p.to_str().unwrap()}, "access": access});
    let uri = format!("file://{}", ws.display());
    let policy = json!({"permissions": {"type": "managed", "network": "restricted",
        "file_system": {"type": "restricted", "entries": [
            {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
            entry(&ws, "write"),
            entry(&ws.join("secret"), "none"),
            entry(&ws.join("private"), "none"),
        ]}},
        "cwd": uri, "workspaceRoots": [uri]});
    let c = Client::new(Transport::Stdio, &[]).await;
    let r = probe(
        &c,
        "none",
        &ws,
        policy,
        r#"
t("read_secret", lambda: open("secret", "rb").read())
t("write_secret", lambda: open("secret", "ab").write(b"x"))
t("list_private", lambda: os.listdir("private"))
t("read_key", lambda: open("private/key").read())
t("read_existing", lambda: open("existing").read())
t("write_other", lambda: open("other", "w").write("x"))
t("proc", lambda: open("/proc/self/status").read())
t("dev_null", lambda: open("/dev/null", "w").write("x"))
"#,
    )
    .await;
    expect(&r, "read_secret", "EACCES");
    expect(&r, "write_secret", "EACCES");
    expect(&r, "list_private", "EACCES");
    expect(&r, "read_key", "EACCES");
    expect(&r, "read_existing", "OK");
    expect(&r, "write_other", "OK");
    expect(&r, "proc", "OK");
    expect(&r, "dev_null", "OK");
    // Nothing reached the hidden file.
    assert_eq!(
        std::fs::read_to_string(ws.join("secret")).unwrap(),
        "s3cret\n"
    );
}

/// A hard link inside the workspace to a file outside it, made before the process starts
/// (here by the test, as a user or a tool would): Landlock alone lets the process write the
/// outside file through it. By default the link is read-only for the process (EROFS), reading
/// it works, a link whose names are all inside stays writable, and a link made while the server
/// runs (found from the census's inotify events) is protected for the next process too.
/// `--no-protect-hard-links` is the operator's explicit opt-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_links_to_outside_files_are_read_only() {
    let s = scratch("hardlink");
    let ws = s.ws();
    std::fs::hard_link(s.outside().join("file"), ws.join("linked")).unwrap();
    std::fs::write(ws.join("mine"), "mine\n").unwrap();
    std::fs::create_dir(ws.join("sub")).unwrap();
    std::fs::hard_link(ws.join("mine"), ws.join("sub/mine2")).unwrap();
    // With the opt-out the gap is there (as documented)...
    let plain = Client::new(Transport::Stdio, &["--no-protect-hard-links"]).await;
    let r = probe(
        &plain,
        "hl0",
        &ws,
        ws_policy(false),
        r#"t("append_linked", lambda: open("linked", "a").write("x"))"#,
    )
    .await;
    expect(&r, "append_linked", "OK");
    std::fs::write(s.outside().join("file"), "outside\n").unwrap();
    // ...and by default, closed.
    let c = Client::new(Transport::Stdio, &[]).await;
    let code = r#"
t("read_linked", lambda: open("linked").read())
t("append_linked", lambda: open("linked", "a").write("x"))
t("truncate_linked", lambda: os.truncate("linked", 0))
t("append_inside_pair", lambda: open("sub/mine2", "a").write("x"))
t("write_new", lambda: open("new", "w").write("x"))
"#;
    let r = probe(&c, "hl1", &ws, ws_policy(false), code).await;
    expect(&r, "read_linked", "OK");
    expect(&r, "append_linked", "EROFS");
    expect(&r, "truncate_linked", "EROFS");
    expect(&r, "append_inside_pair", "OK");
    expect(&r, "write_new", "OK");
    assert_eq!(
        std::fs::read_to_string(s.outside().join("file")).unwrap(),
        "outside\n"
    );
    // A link made now, while the server runs, into a new directory.
    std::fs::create_dir(ws.join("later")).unwrap();
    std::fs::hard_link(s.outside().join("file"), ws.join("later/linked2")).unwrap();
    let r = probe(
        &c,
        "hl2",
        &ws,
        ws_policy(false),
        r#"t("append_linked2", lambda: open("later/linked2", "a").write("x"))"#,
    )
    .await;
    expect(&r, "append_linked2", "EROFS");
    assert_eq!(
        std::fs::read_to_string(s.outside().join("file")).unwrap(),
        "outside\n"
    );
    // The same name replaced on the host by a link to another outside file: the namespace
    // the earlier processes shared lost its bind there (the kernel detaches mounts from a
    // replaced name), so it must not be joined again.
    std::fs::write(s.outside().join("file2"), "outside2\n").unwrap();
    std::fs::hard_link(s.outside().join("file2"), ws.join("linked.tmp")).unwrap();
    std::fs::rename(ws.join("linked.tmp"), ws.join("linked")).unwrap();
    let r = probe(
        &c,
        "hl3",
        &ws,
        ws_policy(false),
        r#"t("append_linked", lambda: open("linked", "a").write("x"))"#,
    )
    .await;
    expect(&r, "append_linked", "EROFS");
    assert_eq!(
        std::fs::read_to_string(s.outside().join("file2")).unwrap(),
        "outside2\n"
    );
}
