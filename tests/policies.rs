//! Every file shipped in `policies/` is accepted by the binary that ships it: server configs with
//! `stockade run --config`, run policies with `stockade run --policy`. The files are embedded at
//! build time (so the unprivileged pass, which cannot see the checkout, checks them too), and a
//! second test makes sure the embedded list is the whole directory.

mod common;

use std::process::Command;

use common::{allow_skip, bin, marker};
use serde_json as _;

/// (file name, contents, how the binary takes it).
const SHIPPED: [(&str, &str, &str); 7] = [
    (
        "server-agent-workstation.toml",
        include_str!("../policies/server-agent-workstation.toml"),
        "--config",
    ),
    (
        "server-ci-runner.toml",
        include_str!("../policies/server-ci-runner.toml"),
        "--config",
    ),
    (
        "server-locked-down.toml",
        include_str!("../policies/server-locked-down.toml"),
        "--config",
    ),
    (
        "run-ci-job.toml",
        include_str!("../policies/run-ci-job.toml"),
        "--policy",
    ),
    (
        "run-rust.toml",
        include_str!("../policies/run-rust.toml"),
        "--policy",
    ),
    (
        "run-python.toml",
        include_str!("../policies/run-python.toml"),
        "--policy",
    ),
    (
        "run-node.toml",
        include_str!("../policies/run-node.toml"),
        "--policy",
    ),
];

#[test]
fn every_shipped_policy_file_is_accepted() {
    let dir = std::env::temp_dir().join(marker("policies"));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text, flag) in SHIPPED {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(bin())
            .args(["run", flag, path.to_str().unwrap(), "--cwd"])
            .arg(&dir)
            .args(["--", "true"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            // Not the cwd: a writable root that is $HOME itself is refused.
            .env("HOME", dir.join("home"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "policies/{name} was not accepted ({flag}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A file with an unknown key is refused, so the check above is not vacuous.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[sandbox]\nceilling = \"read-only\"\n").unwrap();
    let out = Command::new(bin())
        .args(["run", "--config", bad.to_str().unwrap(), "--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a misspelled key was accepted");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_embedded_list_is_the_whole_directory() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return allow_skip(
            "source-tree",
            &format!("{dir} is not readable by this user"),
        );
    };
    let mut on_disk: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = SHIPPED.iter().map(|(n, _, _)| n.to_string()).collect();
    embedded.sort();
    assert_eq!(
        on_disk, embedded,
        "tests/policies.rs must embed every file in policies/"
    );
}

/// `stockade config example NAME` prints the shipped example server configs byte for byte (a
/// user who installed the binary alone has them), `serve --help` points there, and a wrong
/// name is refused listing the valid ones.
#[test]
fn config_examples_ship_with_the_binary() {
    for (file, text, _) in SHIPPED.iter().filter(|(n, _, _)| n.starts_with("server-")) {
        let name = file
            .strip_prefix("server-")
            .and_then(|n| n.strip_suffix(".toml"))
            .unwrap();
        let out = Command::new(bin())
            .args(["config", "example", name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            *text,
            "stockade config example {name} differs from policies/{file}"
        );
    }
    let out = Command::new(bin())
        .args(["config", "example", "ci-runer"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for name in ["ci-runner", "agent-workstation", "locked-down"] {
        assert!(err.contains(name), "{err}");
    }
    let out = Command::new(bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("stockade config example ci-runner|agent-workstation|locked-down"),
        "{help}"
    );
    assert!(!help.contains("policies/server"), "{help}");
}
