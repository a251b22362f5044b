//! `scripts/demo` shows its whole story every time: it is run here (the script is embedded, so
//! the unprivileged pass runs it too) with `STOCKADE_BIN` set, and each line of its summary is
//! checked. The demo waits for answers and `process/closed` instead of sleeping, so a busy
//! machine makes it slower, never shorter.

mod common;

use std::process::Command;

use common::{bin, marker};
use serde_json as _;

const DEMO: &str = include_str!("../scripts/demo");

fn run_demo(dir: &std::path::Path) -> (String, String) {
    let script = dir.join("demo");
    std::fs::write(&script, DEMO).unwrap();
    let out = Command::new("bash")
        .arg(&script)
        .env("STOCKADE_BIN", bin())
        .env("TMPDIR", dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn demo_shows_every_step() {
    let dir = std::env::temp_dir().join(marker("demo"));
    std::fs::create_dir_all(&dir).unwrap();
    // Twice: a demo that raced its own output would fail one of the runs sooner or later.
    for _ in 0..2 {
        let (stdout, stderr) = run_demo(&dir);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 7, "{stdout}\n{stderr}");
        assert!(
            lines[0].starts_with("process in ")
                && lines[0].ends_with(
                    "/project (policy workspace-write, enforcement full, network blocked):"
                ),
            "{stdout}"
        );
        assert!(lines[1].starts_with("  Linux "), "{stdout}");
        assert_eq!(lines[2], "  main.rs", "{stdout}");
        assert_eq!(
            lines[3], "  exit 0; build.log written in the workspace: True",
            "{stdout}"
        );
        assert_eq!(
            lines[4], "fs/readFile NOTES.md: written through the fs API",
            "{stdout}"
        );
        assert_eq!(
            lines[5],
            "fs/writeFile /etc/stockade-demo.txt: refused (-32600): fs/write is not permitted \
             for path /etc/stockade-demo.txt",
            "{stdout}"
        );
        assert!(
            lines[6].starts_with(
                "a process writing /etc/stockade-demo.txt: exit 2, sandboxDenied true: "
            ) && lines[6].contains("/etc/stockade-demo.txt: "),
            "{stdout}"
        );
        // The conversation is on stderr.
        assert!(
            stderr.contains(r#">> {"id": 1, "method": "initialize""#),
            "{stderr}"
        );
        assert!(stderr.contains(r#""method": "process/closed""#), "{stderr}");
    }
    assert!(!std::path::Path::new("/etc/stockade-demo.txt").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
