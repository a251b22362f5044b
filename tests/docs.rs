//! The documentation stays inside the repository and covers the wire protocol the server
//! accepts (issue 17's acceptance):
//! - README.md and docs/*.md link only to files of this repository, and every `#anchor` they
//!   use names a heading of its target;
//! - nothing in the repository points at the shared contract outside it;
//! - docs/PROTOCOL.md names every method, notification and error code, and every field and
//!   enum value that a wire type deserializes (found by reading the sources, so a new field
//!   without documentation fails here).
//!
//! The sources are read at run time from the checkout this binary was built from; a user who
//! cannot read it (the unprivileged CI pass) skips only if `STOCKADE_ALLOW_SKIP` says
//! `source-tree` (the root pass checks everything).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::allow_skip;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// True when this user can read the checkout; otherwise the caller returns after
/// [`allow_skip`].
fn checkout_readable() -> bool {
    let readable = std::fs::read_to_string(root().join("docs/PROTOCOL.md")).is_ok()
        && std::fs::read_dir(root().join("src")).is_ok();
    if !readable {
        allow_skip(
            "source-tree",
            &format!(
                "the checkout {} is not readable by this user",
                root().display()
            ),
        );
    }
    readable
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} (the docs check reads the checkout it was built from): {e}",
            path.display()
        )
    })
}

/// Every `.rs` file under `dir`, recursively, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
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

fn markdown_files() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// GitHub's anchor for a heading: lower case, spaces become `-`, and everything but letters,
/// digits, `-` and `_` is dropped. Repeated headings get `-1`, `-2`, ...
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_fence = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence || !line.starts_with('#') {
            continue;
        }
        let text = line.trim_start_matches('#').trim();
        let slug: String = text
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let mut unique = slug.clone();
        let mut n = 1;
        while out.contains(&unique) {
            unique = format!("{slug}-{n}");
            n += 1;
        }
        out.insert(unique);
    }
    out
}

/// The targets of inline links `[text](target)` outside code fences and code spans.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_fence = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        // Drop code spans: `a](b)` inside backticks is not a link.
        let text: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn links_stay_inside_the_repository_and_anchors_exist() {
    if !checkout_readable() {
        return;
    }
    let root = root().canonicalize().unwrap();
    let mut checked = 0;
    for file in markdown_files() {
        let text = read(&file);
        for target in link_targets(&text) {
            let here = format!("{}: link `{target}`", file.display());
            assert!(
                !target.contains("://") && !target.starts_with("mailto:"),
                "{here}: README and docs must not link outside the repository"
            );
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let resolved = resolved
                .canonicalize()
                .unwrap_or_else(|e| panic!("{here}: {}: {e}", resolved.display()));
            assert!(
                resolved.starts_with(&root),
                "{here}: leaves the repository ({})",
                resolved.display()
            );
            if let Some(anchor) = anchor {
                assert!(
                    resolved.extension().is_some_and(|e| e == "md"),
                    "{here}: anchor into a file that is not markdown"
                );
                let known = anchors(&read(&resolved));
                assert!(
                    known.contains(anchor),
                    "{here}: no heading with anchor `{anchor}` in {} (headings: {known:?})",
                    resolved.display()
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "only {checked} links found: the link scanner is broken"
    );
}

#[test]
fn nothing_points_at_the_shared_contract_outside_the_repository() {
    if !checkout_readable() {
        return;
    }
    let root = root();
    let mut files = markdown_files();
    for dir in ["src", "tests", "examples", "fuzz/fuzz_targets"] {
        if root.join(dir).is_dir() {
            files.extend(rust_files(&root.join(dir)));
        }
    }
    for entry in std::fs::read_dir(root.join("scripts")).unwrap() {
        files.push(entry.unwrap().path());
    }
    let needle = ["..", "/shared/"].concat();
    for file in &files {
        if file.is_file()
            && let Ok(text) = std::fs::read_to_string(file)
        {
            assert!(
                !text.contains(&needle),
                "{} refers to {needle}: point to docs/PROTOCOL.md or docs/architecture-notes.md instead",
                file.display()
            );
        }
    }
}

fn protocol_doc() -> String {
    read(&root().join("docs/PROTOCOL.md"))
}

/// True when the document names `word` as code (`` `word` ``) or as a JSON key or string
/// (`"word"`).
fn documented(doc: &str, word: &str) -> bool {
    doc.contains(&format!("`{word}`")) || doc.contains(&format!("\"{word}\""))
}

/// Every string literal in `text` that looks like a method name (`process/start`, ...).
fn method_literals(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for piece in text.split('"').skip(1).step_by(2) {
        if let Some((family, name)) = piece.split_once('/')
            && ["process", "fs", "environment"].contains(&family)
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric())
        {
            out.insert(piece.to_string());
        }
    }
    out
}

#[test]
fn every_method_notification_and_error_code_is_documented() {
    if !checkout_readable() {
        return;
    }
    let doc = protocol_doc();
    let mut names = BTreeSet::new();
    for file in rust_files(&root().join("src")) {
        names.extend(method_literals(&read(&file)));
    }
    for required in [
        "initialize",
        "initialized",
        "process/start",
        "process/output",
    ] {
        assert!(
            documented(&doc, required),
            "docs/PROTOCOL.md does not name `{required}`"
        );
    }
    assert!(
        names.len() >= 15,
        "only {names:?} found in src/: the method scanner is broken"
    );
    let missing: Vec<_> = names.iter().filter(|m| !documented(&doc, m)).collect();
    assert!(
        missing.is_empty(),
        "methods or notifications in src/ that docs/PROTOCOL.md does not name: {missing:?}"
    );

    let envelope = read(&root().join("src/protocol/envelope.rs"));
    let codes: Vec<&str> = envelope
        .split(|c: char| !(c.is_ascii_digit() || c == '-'))
        .filter(|w| w.starts_with("-320") && w.len() == 6)
        .collect();
    assert!(codes.len() >= 8, "error codes not found: {codes:?}");
    for code in codes {
        assert!(
            doc.contains(&format!("| {code} |")),
            "error code {code} has no row in docs/PROTOCOL.md's error table"
        );
    }
}

/// How serde names a field or variant under a `rename_all` rule.
fn wire_name(ident: &str, rule: Option<&str>, is_variant: bool) -> String {
    let words: Vec<String> = if is_variant {
        // PascalCase → words.
        let mut words = Vec::new();
        let mut current = String::new();
        for c in ident.chars() {
            if c.is_uppercase() && !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            current.extend(c.to_lowercase());
        }
        words.push(current);
        words
    } else {
        ident.split('_').map(str::to_string).collect()
    };
    let capitalized = |w: &String| {
        let mut c = w.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect::<String>())
            .unwrap_or_default()
    };
    match rule {
        Some("camelCase") => {
            let mut out = words[0].clone();
            out.extend(words[1..].iter().map(capitalized));
            out
        }
        Some("kebab-case") => words.join("-"),
        Some("snake_case") => words.join("_"),
        Some("lowercase") => words.concat(),
        _ => ident.to_string(),
    }
}

fn attr_value<'a>(attrs: &'a str, key: &str) -> Option<&'a str> {
    let start = attrs.find(&format!("{key} = \""))? + key.len() + 4;
    let len = attrs[start..].find('"')?;
    Some(&attrs[start..start + len])
}

/// The wire names of every field and variant of the `Deserialize` types in `source`
/// (fields marked `flatten` or `skip` excluded), with the type they belong to.
fn deserialized_names(source: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = source.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        // A derive list may span lines (rustfmt breaks long ones).
        let mut derive = lines[i].trim().to_string();
        if derive.starts_with("#[derive(") {
            while !derive.ends_with(")]") && i + 1 < lines.len() {
                i += 1;
                derive.push_str(lines[i].trim());
            }
        }
        if !(derive.starts_with("#[derive(") && derive.contains("Deserialize")) {
            i += 1;
            continue;
        }
        // Type-level attributes, then the item.
        let mut type_attrs = String::new();
        i += 1;
        while i < lines.len() && !lines[i].contains("struct ") && !lines[i].contains("enum ") {
            type_attrs.push_str(lines[i]);
            i += 1;
        }
        if i >= lines.len() {
            break;
        }
        let header = lines[i].trim();
        let is_enum = header.contains("enum ");
        let type_name = header
            .split_whitespace()
            .skip_while(|w| *w != "struct" && *w != "enum")
            .nth(1)
            .unwrap_or("?")
            .trim_end_matches(['{', '(', ';'])
            .to_string();
        let rule = attr_value(&type_attrs, "rename_all").map(str::to_string);
        if !header.ends_with('{') {
            i += 1;
            continue; // tuple or unit struct: no named fields
        }
        i += 1;
        let mut attrs = String::new();
        let mut depth = 1;
        while i < lines.len() && depth > 0 {
            let raw = lines[i];
            let l = raw.trim();
            if depth == 1 && l.starts_with("#[") {
                attrs.push_str(l);
            } else if depth == 1 && !l.starts_with("//") && !l.is_empty() && l != "}" {
                let ident = l
                    .trim_start_matches("pub(crate) ")
                    .trim_start_matches("pub ")
                    .split([':', ',', '(', ' ', '{'])
                    .next()
                    .unwrap_or("");
                let skipped = attrs
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .any(|w| ["flatten", "skip", "skip_deserializing"].contains(&w));
                // Macro templates (`$field: $ty`) name no field themselves.
                let is_ident = ident
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_alphabetic() || c == '_');
                if is_ident && !skipped {
                    let name = match attr_value(&attrs, "rename") {
                        Some(r) => r.to_string(),
                        None => wire_name(ident, rule.as_deref(), is_enum),
                    };
                    out.push((type_name.clone(), name));
                }
                attrs.clear();
            }
            depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
            i += 1;
        }
    }
    out
}

#[test]
fn every_deserialized_wire_field_is_documented() {
    if !checkout_readable() {
        return;
    }
    let doc = protocol_doc();
    // The config file, `stockade run`'s policy file and the CLI have their own documentation
    // (README); everything else that deserializes is wire input.
    let not_wire = ["config.rs", "run.rs", "cli.rs", "main.rs", "doctor.rs"];
    let mut names = Vec::new();
    for file in rust_files(&root().join("src")) {
        if file
            .file_name()
            .is_some_and(|n| not_wire.contains(&n.to_str().unwrap_or("")))
            && file.parent() == Some(&root().join("src"))
        {
            continue;
        }
        names.extend(deserialized_names(&read(&file)));
    }
    assert!(
        names.len() >= 40,
        "only {} fields found: the scanner is broken ({names:?})",
        names.len()
    );
    let missing: Vec<_> = names
        .iter()
        .filter(|(_, n)| !documented(&doc, n))
        .map(|(t, n)| format!("{t}.{n}"))
        .collect();
    assert!(
        missing.is_empty(),
        "wire fields the server deserializes that docs/PROTOCOL.md does not name: {missing:?}"
    );
}

/// The policy shapes tagged by `type` implement `Deserialize` through `tagged_shape!` (so that
/// errors keep their path), which the scanner above does not read: each of their type names and
/// fields is documented.
#[test]
fn every_tagged_policy_shape_key_is_documented() {
    if !checkout_readable() {
        return;
    }
    let doc = protocol_doc();
    let source = read(&root().join("src/protocol/policy.rs"));
    let mut keys = BTreeSet::new();
    let mut inside = false;
    for line in source.lines() {
        if line.starts_with("tagged_shape! {") {
            inside = true;
            continue;
        }
        if line == "}" {
            inside = false;
        }
        let l = line.trim();
        if !inside || l.starts_with("//") || l.starts_with("#[") {
            continue;
        }
        if let Some((_, rest)) = l.split_once(" = \"") {
            // `Variant = "wire-name" {`
            keys.insert(rest.split('"').next().unwrap_or("").to_string());
        } else if let Some((field, _)) = l.split_once(": ")
            && field.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            keys.insert(field.to_string());
        }
    }
    keys.retain(|k| !k.is_empty());
    assert!(
        keys.len() >= 15,
        "only {keys:?} found: the key scanner is broken"
    );
    let missing: Vec<_> = keys.iter().filter(|k| !documented(&doc, k)).collect();
    assert!(
        missing.is_empty(),
        "policy keys of the tagged shapes that docs/PROTOCOL.md does not name: {missing:?}"
    );
}
