//! `stockade run`: the one-shot CLI over the same code path.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{bin, marker};

fn run(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(bin())
        .arg("run")
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/home/x")
        .env("GH_TOKEN", "secret")
        .env("DB_PASSWORD", "pw")
        .env("FOO", "foo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sorted_lines(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = s.lines().collect();
    v.sort();
    v
}

#[test]
fn forwards_stdio_and_exit_status() {
    let (code, out, err) = run(
        &["--", "sh", "-c", "cat; echo to-err >&2; exit 7"],
        b"piped input\n",
    );
    assert_eq!(code, 7);
    assert_eq!(out, "piped input\n");
    assert_eq!(err, "to-err\n");
    let (code, _, _) = run(&["--", "sh", "-c", "kill -9 $$"], b"");
    assert_eq!(code, 137);
    let (code, _, err) = run(&["--", "definitely-not-a-program"], b"");
    assert_eq!(code, 125);
    assert!(err.contains("No such file or directory"), "{err}");
}

#[test]
fn env_flags() {
    let (_, out, _) = run(
        &[
            "--env-inherit",
            "none",
            "--env-set",
            "A=1",
            "--env-set",
            "B=x=y",
            "--",
            "env",
        ],
        b"",
    );
    assert_eq!(sorted_lines(&out), vec!["A=1", "B=x=y"]);
    // Default: inherit all minus the default excludes.
    let (_, out, _) = run(&["--", "env"], b"");
    assert_eq!(
        sorted_lines(&out),
        vec![
            "DB_PASSWORD=pw",
            "FOO=foo",
            "HOME=/home/x",
            "PATH=/usr/bin:/bin"
        ]
    );
    let (_, out, _) = run(
        &[
            "--env-exclude",
            "db_*",
            "--env-include",
            "GH_*",
            "--env-include-only",
            "GH_TOKEN",
            "--env-include-only",
            "FOO",
            "--",
            "env",
        ],
        b"",
    );
    assert_eq!(sorted_lines(&out), vec!["FOO=foo", "GH_TOKEN=secret"]);
    let (_, out, _) = run(
        &[
            "--env-inherit",
            "core",
            "--env-ignore-default-excludes",
            "--",
            "env",
        ],
        b"",
    );
    assert_eq!(
        sorted_lines(&out),
        vec!["HOME=/home/x", "PATH=/usr/bin:/bin"]
    );
    let (code, _, err) = run(&["--env-inherit", "most", "--", "env"], b"");
    assert_ne!(code, 0);
    assert!(err.contains("--env-inherit"), "{err}");
}

#[test]
fn policy_file_and_guard() {
    let dir = std::env::temp_dir().join(marker("runpol"));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[env]\ninherit = \"none\"\ninclude = [\"FOO\", \"*PASSWORD*\"]\nset = { CI = \"true\" }\n",
    )
    .unwrap();
    let cfg = dir.join("server.toml");
    std::fs::write(&cfg, "[env]\nnever_inherit = [\"*PASSWORD*\"]\n").unwrap();
    let p = policy.to_str().unwrap();
    let (_, out, _) = run(&["--policy", p, "--", "env"], b"");
    assert_eq!(
        sorted_lines(&out),
        vec!["CI=true", "DB_PASSWORD=pw", "FOO=foo"]
    );
    // Flags extend the file.
    let (_, out, _) = run(&["--policy", p, "--env-set", "X=1", "--", "env"], b"");
    assert_eq!(
        sorted_lines(&out),
        vec!["CI=true", "DB_PASSWORD=pw", "FOO=foo", "X=1"]
    );
    // The operator guard beats the policy's include.
    let (_, out, _) = run(
        &[
            "--policy",
            p,
            "--config",
            cfg.to_str().unwrap(),
            "--",
            "env",
        ],
        b"",
    );
    assert_eq!(sorted_lines(&out), vec!["CI=true", "FOO=foo"]);
    // Unknown keys in the policy file are an error.
    std::fs::write(&policy, "[env]\ninherrit = \"none\"\n").unwrap();
    let (code, _, err) = run(&["--policy", p, "--", "env"], b"");
    assert_ne!(code, 0);
    assert!(err.contains("inherrit"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
