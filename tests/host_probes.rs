//! Issue 20, item 1: what the server may do is decided from startup probes, not from its uid.
//!
//! - Root without `CAP_SYS_ADMIN` (a container's root) makes its carve-outs inside a user
//!   namespace, as a non-root server does: a `.git` in the workspace stays read-only and
//!   writes next to it work.
//! - Where namespaces cannot be created at all (here: the server runs under a seccomp filter
//!   like a container runtime's default profile, which refuses `unshare`/`clone` of
//!   namespaces), `stockade doctor` and `stockade.sandboxSupport` report the mount namespace
//!   unavailable with the fix, and a request that needs one fails closed with the same text.
//!
//! Both run as root and as uid 65534 (the filter needs no privilege; `setpriv` drops the
//! capability only where there is one to drop).

#![cfg(target_arch = "x86_64")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

use common::{Scratch, bin};
use serde_json::Value;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `stockade <args>`, as root with `CAP_SYS_ADMIN` out of the bounding set (so the exec'd
/// server never has it); as anyone else unchanged (they have no capability to drop).
fn without_sys_admin(args: &[&str]) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--"])
            .arg(bin());
        c
    } else {
        Command::new(bin())
    };
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", std::env::temp_dir());
    cmd
}

/// The namespace flags a runtime's default profile refuses to callers without
/// `CAP_SYS_ADMIN`: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
const NAMESPACE_FLAGS: u32 = 0x7E02_0000;

/// A classic BPF seccomp program: `unshare` and `clone` with a namespace flag fail with
/// EPERM, `clone3` (whose flags a filter cannot see) with ENOSYS so that libc falls back to
/// `clone`; everything else is allowed.
fn docker_like_filter() -> Vec<libc::sock_filter> {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let jset = libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    vec![
        /* 0 */ stmt(ld, 0), // syscall number
        /* 1 */ jump(jeq, libc::SYS_clone3 as u32, 5, 0),
        /* 2 */ jump(jeq, libc::SYS_unshare as u32, 1, 0),
        /* 3 */ jump(jeq, libc::SYS_clone as u32, 0, 4),
        /* 4 */ stmt(ld, 16), // low half of the first argument: the flags
        /* 5 */ jump(jset, NAMESPACE_FLAGS, 0, 2),
        /* 6 */ stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        /* 7 */ stmt(ret, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        /* 8 */ stmt(ret, libc::SECCOMP_RET_ALLOW),
    ]
}

/// `stockade <args>` under [`docker_like_filter`].
fn under_filter(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", std::env::temp_dir());
    let filter = docker_like_filter();
    // `filter` moves into the closure; the program pointing at it is made on the stack.
    let hook = move || {
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: prctl between fork and exec.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: seccomp with a program that outlives the call.
        if unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        } < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook only makes two syscalls on data prepared before the fork.
    unsafe { cmd.pre_exec(hook) };
    cmd
}

fn output(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn git_workspace(tag: &str) -> Scratch {
    let s = Scratch::new(tag);
    std::fs::create_dir(s.ws().join(".git")).unwrap();
    std::fs::write(s.ws().join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    s
}

#[test]
fn root_without_cap_sys_admin_makes_carve_outs_in_a_user_namespace() {
    let s = git_workspace("nosysadmin");
    let ws = s.ws().to_str().unwrap().to_string();
    let out = output(without_sys_admin(&[
        "run",
        "--cwd",
        &ws,
        "--",
        "sh",
        "-c",
        "echo a > written; echo b > .git/HEAD && echo GIT-WRITTEN; exit 0",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the run failed ({:?}): {stderr}",
        out.status
    );
    assert_eq!(
        std::fs::read_to_string(s.ws().join("written")).unwrap(),
        "a\n"
    );
    assert_eq!(
        std::fs::read_to_string(s.ws().join(".git/HEAD")).unwrap(),
        "ref: refs/heads/main\n",
        ".git was writable"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("GIT-WRITTEN"));
    assert!(
        stderr.contains("Read-only file system"),
        "the write to .git was not refused by a read-only mount: {stderr}"
    );
    let doctor = output(without_sys_admin(&["doctor", "--json"]));
    let r: Value = serde_json::from_slice(&doctor.stdout).unwrap();
    assert_eq!(r["mountNamespaces"], "userNamespace", "{r}");
    assert_eq!(r["probes"]["mountNamespace"]["available"], true, "{r}");
    assert_eq!(
        r["policies"]["workspace-write"]["enforcement"], "full",
        "{r}"
    );
}

/// The fix text doctor gives for the mount namespace (panics unless it reports one missing).
fn doctor_fix_under_filter() -> (Value, String) {
    let out = output(under_filter(&["doctor", "--json"]));
    assert!(out.status.success(), "doctor failed: {out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let probes = &r["probes"];
    assert_eq!(probes["mountNamespace"]["available"], false, "{r}");
    assert_eq!(probes["userNamespace"]["available"], false, "{r}");
    assert_eq!(probes["networkNamespace"]["available"], false, "{r}");
    // What the filter leaves alone is still found working.
    assert_eq!(probes["landlock"]["available"], true, "{r}");
    assert_eq!(probes["seccompUserNotification"]["available"], true, "{r}");
    assert_eq!(r["mountNamespaces"], "unavailable", "{r}");
    let fix = probes["mountNamespace"]["fix"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        fix.contains("seccomp profile") && fix.contains("docs/containers.md"),
        "the fix does not name the cause and the remedy: {fix}"
    );
    assert!(
        probes["mountNamespace"]["error"]
            .as_str()
            .unwrap()
            .contains("Operation not permitted"),
        "{r}"
    );
    // A workspace with a carve-out cannot be enforced: doctor says so, with the fix.
    let ww = &r["policies"]["workspace-write"];
    assert_eq!(ww["enforcement"], "refused", "{r}");
    assert!(ww["error"].as_str().unwrap().contains(&fix), "{r}");
    let human = output(under_filter(&["doctor"]));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("UNAVAILABLE") && text.contains(&fix),
        "doctor's text does not show the fix: {text}"
    );
    (r, fix)
}

#[test]
fn blocked_namespaces_are_reported_with_the_fix_and_requests_fail_closed() {
    let (_, fix) = doctor_fix_under_filter();
    let s = git_workspace("blocked");
    let ws = s.ws().to_str().unwrap().to_string();
    let out = output(under_filter(&[
        "run",
        "--cwd",
        &ws,
        "--",
        "sh",
        "-c",
        "echo ran > ran",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run was not refused: {stderr}");
    assert!(
        !s.ws().join("ran").exists(),
        "the command ran without its carve-outs"
    );
    assert!(
        stderr.contains("cannot be enforced") && stderr.contains(&fix),
        "the refusal does not carry doctor's fix ({fix}): {stderr}"
    );
}

#[test]
fn sandbox_support_reports_the_probes_and_the_fix() {
    let (_, fix) = doctor_fix_under_filter();
    let mut cmd = under_filter(&["serve"]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(
        stdin,
        r#"{{"id":1,"method":"initialize","params":{{"clientName":"host-probes"}}}}"#
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    drop(stdin);
    let _ = child.wait();
    let r: Value = serde_json::from_str(&line).unwrap();
    let support = &r["result"]["stockade"]["sandboxSupport"];
    assert_eq!(support["mountNamespaces"], "unavailable", "{r}");
    assert_eq!(support["userNamespaces"], false, "{r}");
    assert_eq!(
        support["probes"]["mountNamespace"]["fix"],
        fix.as_str(),
        "{r}"
    );
}
