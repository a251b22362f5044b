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

/// Every failure of stockade itself exits 125 with one `stockade: ...` line and no backtrace,
/// even with `RUST_BACKTRACE=1` (often set in CI).
#[test]
fn own_errors_exit_125_with_one_message() {
    let dir = std::env::temp_dir().join(marker("own-errors"));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[sandbox]\nbogus = 1\n").unwrap();
    let bad = bad.to_str().unwrap();
    for args in [
        vec!["--config", bad, "--", "true"],
        vec!["--policy", bad, "--", "true"],
        vec!["--policy", "workspace-writ", "--", "true"],
        vec!["--", "definitely-not-a-program"],
    ] {
        let out = Command::new(bin())
            .arg("run")
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
        assert!(err.starts_with("stockade: "), "{args:?}: {err}");
        assert!(!err.contains("backtrace"), "{args:?}: {err}");
    }
    let out = Command::new(bin())
        .args(["run", "--policy", "workspace-writ", "--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("workspace-write") && err.contains("read-only"),
        "a wrong policy name lists the valid names: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The statuses CI users rely on: 124 for a wall-time kill (as `timeout`), 122 for a cut output
/// (never 0), the command's own otherwise; one stderr line from stockade says what happened,
/// `--quiet` suppresses it, and `--report` writes the whole story as JSON.
#[test]
fn exit_statuses_summary_and_report() {
    let dir = std::env::temp_dir().join(marker("run-report"));
    std::fs::create_dir_all(&dir).unwrap();
    let cwd = dir.to_str().unwrap();
    let (code, _, err) = run(
        &["--cwd", cwd, "--wall-time-ms", "300", "--", "sleep", "30"],
        b"",
    );
    assert_eq!(code, 124, "{err}");
    assert!(err.contains("stockade: timed out after 300 ms"), "{err}");
    let (code, _, err) = run(
        &[
            "--cwd",
            cwd,
            "-q",
            "--wall-time-ms",
            "300",
            "--",
            "sleep",
            "30",
        ],
        b"",
    );
    assert_eq!(code, 124);
    assert_eq!(err, "", "--quiet prints nothing of stockade's own");
    let (code, out, err) = run(
        &[
            "--cwd",
            cwd,
            "--max-output-bytes",
            "10",
            "--",
            "sh",
            "-c",
            "yes | head -c 100000",
        ],
        b"",
    );
    assert_eq!(code, 122, "{err}");
    assert_eq!(out.len(), 10);
    assert!(err.contains("output limit of 10 bytes"), "{err}");
    // A refused write that the command turns into a failure.
    let (code, _, err) = run(
        &[
            "--cwd",
            cwd,
            "--",
            "sh",
            "-c",
            "echo x > /etc/stockade-test; exit 3",
        ],
        b"",
    );
    assert_eq!(code, 3, "the command's own status");
    assert!(
        err.contains("stockade: sandbox refused: write /etc/stockade-test"),
        "{err}"
    );
    // Nothing happened: nothing is said.
    let report = dir.join("report.json");
    let (code, out, err) = run(
        &[
            "--cwd",
            cwd,
            "--report",
            report.to_str().unwrap(),
            "--",
            "echo",
            "ok",
        ],
        b"",
    );
    assert_eq!((code, out.as_str(), err.as_str()), (0, "ok\n", ""));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(doc["exitStatus"], 0);
    assert_eq!(doc["exit"]["exitCode"], 0);
    assert_eq!(doc["exit"]["timedOut"], false);
    assert_eq!(doc["sandbox"]["enforcement"], "full", "{doc}");
    assert!(doc["usage"]["wallMs"].is_u64(), "{doc}");
    assert!(doc["denials"].is_array(), "{doc}");
    assert_eq!(doc["argv"][0], "echo");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `run --help` shows no flag that only bounds what a server's clients may ask for.
#[test]
fn run_help_shows_no_serve_only_flags() {
    let help = Command::new(bin())
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--wall-time-ms"), "{help}");
    for flag in ["--ceiling", "--default-policy", "--no-network"] {
        assert!(!help.contains(flag), "{flag} in run --help");
    }
    let serve = Command::new(bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&serve.stdout).contains("--ceiling"));
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

#[test]
fn sandbox_flags() {
    let dir = std::env::temp_dir().join(marker("runsb"));
    let ws = dir.join("ws");
    let extra = dir.join("extra");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(&extra).unwrap();
    let w = ws.to_str().unwrap();
    let x = extra.to_str().unwrap();
    // read-only by name: writing the cwd fails (EROFS: outside the writable roots is a
    // read-only mount, checked before Landlock).
    let (code, _, err) = run(
        &[
            "--cwd",
            w,
            "--policy",
            "read-only",
            "--",
            "sh",
            "-c",
            "echo x > f",
        ],
        b"",
    );
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    // workspace-write (without /tmp): the cwd is writable, a sibling is not...
    let ww = dir.join("ww.toml");
    std::fs::write(&ww, "[sandbox]\ntype = \"workspace-write\"\nexclude_slash_tmp = true\nexclude_tmpdir_env_var = true\n").unwrap();
    let ww = ww.to_str().unwrap();
    let script = format!("echo x > f && echo y > {x}/g");
    let (code, _, err) = run(
        &["--cwd", w, "--policy", ww, "--", "sh", "-c", &script],
        b"",
    );
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(ws.join("f").exists() && !extra.join("g").exists());
    // ...unless made --writable.
    let (code, _, err) = run(
        &[
            "--cwd",
            w,
            "--policy",
            ww,
            "--writable",
            x,
            "--",
            "sh",
            "-c",
            &script,
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    assert!(extra.join("g").exists());
    // A policy file with a [sandbox] table.
    let policy = dir.join("p.toml");
    std::fs::write(
        &policy,
        "[sandbox]\ntype = \"read-only\"\n[env]\ninherit = \"none\"\n",
    )
    .unwrap();
    let (code, out, err) = run(
        &[
            "--cwd",
            w,
            "--policy",
            policy.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "env | grep -c . ; touch h",
        ],
        b"",
    );
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(
        out.trim(),
        "1",
        "only PWD (set by sh) in a none-inherit env: {out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn doctor_reports_the_host() {
    let out = Command::new(bin())
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["landlockAbi"].as_i64().unwrap() >= 6, "{v}");
    assert_eq!(v["policies"]["workspace-write"]["enforcement"], "full");
    // This host (user namespaces, no chroot) can share mount namespaces between processes.
    assert_eq!(v["sharedMountNamespaces"], true, "{v}");
    assert!(v["inotifyMaxUserWatches"].as_u64().unwrap() > 0, "{v}");
    let out = Command::new(bin())
        .args(["doctor", "--json", "--landlock-abi", "2"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["policies"]["read-only"]["enforcement"], "refused");
    assert!(
        v["policies"]["read-only"]["error"]
            .as_str()
            .unwrap()
            .contains("ABI 3")
    );
    let out = Command::new(bin()).arg("doctor").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("landlock ABI"));
}

#[test]
fn limit_flags() {
    let (code, _, _) = run(&["--wall-time-ms", "300", "--", "sleep", "30"], b"");
    assert_eq!(code, 124, "killed by the wall-time limit");
    let (code, out, _) = run(&["--max-output-bytes", "1000", "--", "yes"], b"");
    assert_eq!(code, 122, "cut by the output limit");
    assert_eq!(out.len(), 1000);
    let (_, _, err) = run(
        &[
            "--max-open-files",
            "10",
            "--",
            "/usr/bin/python3",
            "-c",
            "import os\n[os.open('/dev/null', 0) for _ in range(50)]",
        ],
        b"",
    );
    assert!(err.contains("Too many open files"), "{err}");
}
