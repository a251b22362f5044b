//! The README's recipes ("Recipes") work: each runs here through `stockade run` with the policy
//! file it names (embedded, so the unprivileged pass runs them too), offline. A tool this host
//! lacks is a failure unless `STOCKADE_ALLOW_SKIP` names its skip (`.ci/run` says which and
//! why).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Scratch, allow_skip, bin};
use serde_json as _;

const RUST: &str = include_str!("../policies/run-rust.toml");
const PYTHON: &str = include_str!("../policies/run-python.toml");
const NODE: &str = include_str!("../policies/run-node.toml");
/// Writes `wheels/recipe_pkg-1.0-py3-none-any.whl` (standard library only).
const MAKE_WHEEL: &str = include_str!("fixtures/make_wheel.py");

/// The first of `names` that this user can run, searched in PATH and `extra`.
fn tool(names: &[&str], extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path.split(':').map(PathBuf::from);
    let extra = extra.iter().map(PathBuf::from);
    for dir in dirs.chain(extra) {
        for name in names {
            let p = dir.join(name);
            if std::fs::metadata(&p).is_ok_and(|m| m.is_file())
                && Command::new(&p)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            {
                return Some(p);
            }
        }
    }
    None
}

/// `stockade run --policy <policy text> <args> -- sh -c script` in `cwd`, with PATH extended
/// by `path_dirs`.
fn run(s: &Scratch, policy: &str, args: &[&str], path_dirs: &[&Path], script: &str) -> Output {
    let file = s.root.join("policy.toml");
    std::fs::write(&file, policy).unwrap();
    let mut path: Vec<String> = path_dirs.iter().map(|d| d.display().to_string()).collect();
    path.push(std::env::var("PATH").unwrap_or_default());
    Command::new(bin())
        .arg("run")
        .arg("--policy")
        .arg(&file)
        .arg("--cwd")
        .arg(s.ws())
        .args(args)
        .args(["--", "sh", "-c", script])
        .env("PATH", path.join(":"))
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn rust_build_and_test() {
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_bin = format!("{home}/.cargo/bin");
    let Some(cargo) = tool(&["cargo"], &[&cargo_bin]) else {
        return allow_skip("rust-toolchain", "no cargo this user can run");
    };
    let s = Scratch::new("recipe-rust");
    let ws = s.ws();
    std::fs::write(
        ws.join("Cargo.toml"),
        "[package]\nname = \"recipe\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(ws.join("src")).unwrap();
    std::fs::write(
        ws.join("src/lib.rs"),
        "pub fn add(a: u32, b: u32) -> u32 { a + b }\n#[test]\nfn adds() { assert_eq!(add(2, 2), 4); }\n",
    )
    .unwrap();
    let out = run(
        &s,
        RUST,
        &[],
        &[cargo.parent().unwrap()],
        "cargo test --offline 2>&1",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("test adds ... ok"),
        "{}",
        text(&out)
    );
    assert!(
        ws.join("target").is_dir(),
        "the target dir is in the workspace"
    );
}

#[test]
fn python_venv_and_pip() {
    let Some(python) = tool(&["python3"], &[]) else {
        return allow_skip("python-venv", "no python3");
    };
    let s = Scratch::new("recipe-python");
    let ws = s.ws();
    // A vendored wheel: pip installs from files, without the network.
    std::fs::write(ws.join("make_wheel.py"), MAKE_WHEEL).unwrap();
    let out = run(
        &s,
        PYTHON,
        &[],
        &[python.parent().unwrap()],
        "python3 make_wheel.py && { python3 -m venv .venv || exit 90; } && \
         .venv/bin/pip install -q --no-index wheels/*.whl && \
         .venv/bin/python -c 'import recipe_pkg; print(recipe_pkg.VALUE)'",
    );
    if out.status.code() == Some(90) {
        return allow_skip(
            "python-venv",
            &format!("python3 -m venv fails here: {}", text(&out)),
        );
    }
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42",
        "{}",
        text(&out)
    );
    assert!(ws.join(".venv/bin/python").exists());
}

#[test]
fn node_npm_ci() {
    let (Some(node), Some(_)) = (tool(&["node"], &[]), tool(&["npm"], &[])) else {
        return allow_skip("node", "no node and npm on this host");
    };
    let s = Scratch::new("recipe-node");
    let ws = s.ws();
    std::fs::write(
        ws.join("package.json"),
        r#"{"name": "recipe", "version": "1.0.0", "private": true,
            "scripts": {"test": "node -e \"console.log('node ' + (1 + 1))\""}}"#,
    )
    .unwrap();
    std::fs::write(
        ws.join("package-lock.json"),
        r#"{"name": "recipe", "version": "1.0.0", "lockfileVersion": 3, "requires": true,
            "packages": {"": {"name": "recipe", "version": "1.0.0"}}}"#,
    )
    .unwrap();
    let cache = s.outside().join("npm-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let script = format!(
        "npm_config_cache={} npm ci --offline && npm test",
        cache.display()
    );
    let out = run(
        &s,
        NODE,
        &["--writable", cache.to_str().unwrap()],
        &[node.parent().unwrap()],
        &script,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("node 2"),
        "{}",
        text(&out)
    );
}

#[test]
fn git_commits_are_refused_until_dot_git_is_writable() {
    let Some(git) = tool(&["git"], &[]) else {
        return allow_skip("git", "no git");
    };
    let s = Scratch::new("recipe-git");
    let ws = s.ws();
    let git_in_ws = |args: &[&str]| {
        let o = Command::new(&git)
            .args(args)
            .current_dir(&ws)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", text(&o));
    };
    git_in_ws(&["init", "-q"]);
    std::fs::write(ws.join("file"), "x\n").unwrap();
    let commit = "git -c user.name=ci -c user.email=ci@example.com add file && \
                  git -c user.name=ci -c user.email=ci@example.com commit -qm first";
    let dirs = [git.parent().unwrap()];
    let refused = run(
        &s,
        "[sandbox]\ntype = \"workspace-write\"\n",
        &[],
        &dirs,
        commit,
    );
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains(".git/index.lock"),
        "{}",
        text(&refused)
    );
    let dot_git = ws.join(".git");
    let allowed = run(
        &s,
        "[sandbox]\ntype = \"workspace-write\"\n",
        &["--writable", dot_git.to_str().unwrap()],
        &dirs,
        commit,
    );
    assert!(allowed.status.success(), "{}", text(&allowed));
}

/// A command that fails because the network is off is told so, with the flag that allows it;
/// a failure for another refusal gets no such hint.
#[test]
fn network_refusal_says_the_network_is_off() {
    let Some(python) = tool(&["python3"], &[]) else {
        return allow_skip("python-venv", "no python3");
    };
    let s = Scratch::new("recipe-net");
    let dirs = [python.parent().unwrap()];
    let policy = "[sandbox]\ntype = \"workspace-write\"\n";
    let connect = "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 9))'";
    let out = run(&s, policy, &[], &dirs, connect);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("(network is off: use --network)"),
        "{}",
        text(&out)
    );
    let write = "echo x > /etc/stockade-recipe-test";
    let out = run(&s, policy, &[], &dirs, write);
    assert!(!out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("network"),
        "{}",
        text(&out)
    );
}
