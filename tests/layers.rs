//! The layers import one way (issue 17; docs/architecture-notes.md, "Layers"):
//! - no module under `src/process`, `src/fs`, `src/sandbox`, `src/env` or `src/protocol` (nor
//!   the bottom modules `paths` and `fdio`) names `server` or `transport`;
//! - the top-level modules import each other without a cycle.
//!
//! The sources are read at run time from the checkout this binary was built from: a path
//! written as `crate::x`, `super::x` from a top-level module, or `super::super::x` from one
//! level down counts as an import of `x` (comment lines do not). A user who cannot read the
//! checkout (the unprivileged CI pass) skips only if `STOCKADE_ALLOW_SKIP` says `source-tree`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::allow_skip;

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The layers that must not reach the JSON-RPC server or the transports.
const BELOW_SERVER: &[&str] = &[
    "process", "fs", "sandbox", "env", "protocol", "paths", "fdio", "metrics",
];

/// The top-level modules (`src/x.rs` or `src/x/`), without `lib` and `main`.
fn top_modules() -> BTreeSet<String> {
    std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            if p.is_dir() {
                Some(name)
            } else {
                name.strip_suffix(".rs").map(str::to_string)
            }
        })
        .filter(|m| m != "lib" && m != "main")
        .collect()
}

/// Every `.rs` file under `dir` with its path relative to `src/`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The top-level modules a source file names, each with the first line that does.
fn imports(text: &str, depth: usize, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    // `super::x` names a top-level module from `src/x.rs`-level files (`src/m/mod.rs` and
    // `src/m.rs` are at depth 0, `src/m/y.rs` at depth 1 where `super::super::x` does).
    let prefixes: Vec<String> = match depth {
        0 => vec!["crate::".into(), "super::".into()],
        1 => vec!["crate::".into(), "super::super::".into()],
        _ => vec!["crate::".into()],
    };
    let mut found = BTreeMap::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        for prefix in &prefixes {
            let mut rest = t;
            while let Some(i) = rest.find(prefix.as_str()) {
                // Not a longer path such as `super::super::` when looking for `super::`.
                let before_ok = i == 0 || !rest[..i].ends_with("::");
                let after = &rest[i + prefix.len()..];
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if before_ok && modules.contains(&name) {
                    found.entry(name).or_insert_with(|| line.trim().to_string());
                }
                rest = after;
            }
        }
    }
    found
}

/// For each top-level module, the modules it imports (with a witness line).
fn graph() -> BTreeMap<String, BTreeMap<String, (PathBuf, String)>> {
    let modules = top_modules();
    let mut graph: BTreeMap<String, BTreeMap<String, (PathBuf, String)>> = BTreeMap::new();
    for path in rust_files(&src()) {
        let rel = path.strip_prefix(src()).unwrap().to_path_buf();
        let parts: Vec<&str> = rel.iter().map(|p| p.to_str().unwrap()).collect();
        let top = parts[0].trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let depth = match parts.len() {
            1 => 0,
            2 if parts[1] == "mod.rs" => 0,
            n => n - 1,
        };
        let text = std::fs::read_to_string(&path).unwrap();
        for (name, line) in imports(&text, depth, &modules) {
            if name != top {
                graph
                    .entry(top.clone())
                    .or_default()
                    .entry(name)
                    .or_insert((rel.clone(), line));
            }
        }
    }
    graph
}

fn readable() -> bool {
    let ok =
        std::fs::read_dir(src()).is_ok() && std::fs::read_to_string(src().join("lib.rs")).is_ok();
    if !ok {
        allow_skip(
            "source-tree",
            &format!(
                "the checkout {} is not readable by this user",
                src().display()
            ),
        );
    }
    ok
}

#[test]
fn lower_layers_do_not_import_the_server_or_the_transports() {
    if !readable() {
        return;
    }
    let graph = graph();
    // The check must see the tree: these modules exist and import something.
    for m in ["process", "sandbox", "server", "transport"] {
        assert!(graph.contains_key(m), "no imports found for {m}: {graph:?}");
    }
    let mut bad = Vec::new();
    for low in BELOW_SERVER {
        for (to, (file, line)) in graph.get(*low).into_iter().flatten() {
            if to == "server" || to == "transport" {
                bad.push(format!("src/{}: {line}", file.display()));
            }
        }
    }
    assert!(bad.is_empty(), "upward imports:\n{}", bad.join("\n"));
}

#[test]
fn top_level_modules_import_without_a_cycle() {
    if !readable() {
        return;
    }
    let graph = graph();
    assert!(
        graph
            .get("server")
            .is_some_and(|s| s.contains_key("process")),
        "the import scan found no server -> process edge: {graph:?}"
    );
    // Depth-first search; a back edge is a cycle, reported with its witness lines.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, (PathBuf, String)>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).map(|m| m.keys()).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            let witness: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    let (file, line) = &graph[&w[0]][&w[1]];
                    format!("{} -> {}: src/{}: {line}", w[0], w[1], file.display())
                })
                .collect();
            panic!(
                "import cycle {}:\n{}",
                cycle.join(" -> "),
                witness.join("\n")
            );
        }
    }
}

#[test]
fn the_scan_sees_an_upward_import() {
    // The scanner itself: it finds each form of path it claims to find.
    let modules: BTreeSet<String> = ["server", "transport", "process"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let text = "use crate::server::OutMessage;\n// crate::transport in a comment\nlet x = super::super::transport::Frame;\n";
    let found = imports(text, 1, &modules);
    assert_eq!(
        found.keys().cloned().collect::<Vec<_>>(),
        ["server", "transport"]
    );
    assert!(imports("use super::process::x;", 1, &modules).is_empty());
    assert!(imports("use super::process::x;", 0, &modules).contains_key("process"));
}
