//! Issue 20, item 2: stockade as pid 1, as it is when it is a container's entrypoint.
//!
//! The zygote checked whether the server had died before its parent-death signal was armed
//! by comparing its parent's pid with 1; when the server itself is pid 1 that is always
//! true, so the zygote exited at once and every spawn failed with `zygote: Broken pipe`.
//! Here the server is pid 1 of a new pid namespace (`unshare --pid --fork`; inside a user
//! namespace mapping the caller's own ids when not root), and runs a command in a git
//! workspace (carve-outs) and one without.

mod common;

use std::process::{Command, Stdio};

use common::{Scratch, bin};

fn as_pid_one(args: &[&str]) -> Command {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = Command::new("unshare");
    if !root {
        cmd.arg("--map-current-user");
    }
    cmd.args(["--pid", "--fork", "--kill-child", "--"])
        .arg(bin())
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::null());
    cmd
}

#[test]
fn a_server_that_is_pid_one_spawns() {
    let s = Scratch::new("pidone");
    std::fs::create_dir(s.ws().join(".git")).unwrap();
    let ws = s.ws().to_str().unwrap().to_string();
    for script in ["echo hi; echo $$ > pid", "echo hi > .git/x || echo refused"] {
        let out = as_pid_one(&["run", "--cwd", &ws, "--", "sh", "-c", script])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{script}: {:?}\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        assert!(
            stdout.starts_with("hi") || stdout.starts_with("refused"),
            "{script}: {stdout} {stderr}"
        );
    }
    // The server really was pid 1: its processes have small pids of that namespace.
    let pid: u32 = std::fs::read_to_string(s.ws().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        pid < 100,
        "the command's pid {pid} is not from the new pid namespace"
    );
    assert!(!s.ws().join(".git/x").exists(), ".git was writable");
}
