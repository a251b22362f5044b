//! Strict keys for policy objects (`sandboxPolicy`, `sandbox`, `envPolicy`, `limits`, policy
//! files): an unknown key is an error naming it with its path and, when a known key is close,
//! the likely intended one. A misspelled key that were ignored would silently yield another
//! policy than the one meant (`writeable_roots` would drop the roots it lists).
//!
//! Top-level request params stay lenient (PROTOCOL.md section 9): Codex clients add fields
//! there from version to version.

/// Keys of the Codex `sandbox` object (`FileSystemSandboxContext`, Codex CLI 0.169) that
/// stockade accepts and does not use. Each one only concerns Windows or a legacy Linux helper,
/// or names a directory stockade does not need (`userHomeDir`: no home-relative path kinds are
/// supported, and an unknown kind is ignored, which can only remove access). Listed in
/// README, "Strict policy parsing".
pub const CODEX_SANDBOX_UNUSED: [&str; 5] = [
    "windowsSandboxLevel",
    "windowsSandboxPrivateDesktop",
    "windowsSandboxProxySettingsMode",
    "useLegacyLandlock",
    "userHomeDir",
];

/// Keys of a Codex restricted `file_system` object that stockade accepts and does not use:
/// `glob_scan_max_depth` bounds the expansion of glob entries, which stockade refuses.
pub const CODEX_FILE_SYSTEM_UNUSED: [&str; 1] = ["glob_scan_max_depth"];

/// Edit distance by characters, counting a swap of two neighbours as one edit (optimal string
/// alignment): `netwrok` is one edit from `network`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The name with case, `_` and `-` removed: `writableRoots`, `writable_roots` and
/// `Writable-Roots` are one name spelled three ways.
fn folded(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The known name closest to `name`: the same name in another spelling (case, `_`, `-`), or
/// one within a small edit distance (1 for short names, 2 from 5 characters, 3 from 10).
/// `None` when nothing is close enough to be a likely typo.
pub fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let f = folded(name);
    let limit = match f.chars().count() {
        0..=4 => 1,
        5..=9 => 2,
        _ => 3,
    };
    known
        .into_iter()
        .map(|k| (distance(&f, &folded(k)), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The error for an unknown key `key` of the object at `path`.
pub fn unknown_key(path: &str, key: &str, known: &[&str]) -> String {
    let full = if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    };
    match closest(key, known.iter().copied()) {
        Some(s) => format!("{full}: unknown field (did you mean {s}?)"),
        None if known.is_empty() => format!("{full}: unknown field (this object has no fields)"),
        None => format!("{full}: unknown field (known fields: {})", known.join(", ")),
    }
}

/// Reads serde's unknown-field message (`unknown field `x`, expected one of `a`, `b``, or
/// `expected `a``, or `there are no fields`): the unknown key and the known ones.
pub fn parse_unknown_field(msg: &str) -> Option<(String, Vec<String>)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (key, tail) = rest.split_once('`')?;
    let known = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((key.to_string(), known))
}

/// Rewrites serde's unknown-field message for the object at `path` in the form of
/// [`unknown_key`]; other messages are returned as they are, prefixed with the path.
pub fn explain_serde_error(path: &str, msg: &str) -> String {
    match parse_unknown_field(msg) {
        Some((key, known)) => {
            // Keys accepted and ignored on purpose are never suggested.
            let known: Vec<&str> = known
                .iter()
                .map(String::as_str)
                .filter(|k| {
                    !CODEX_SANDBOX_UNUSED.contains(k) && !CODEX_FILE_SYSTEM_UNUSED.contains(k)
                })
                .collect();
            // serde_path_to_error's path already ends with the unknown key.
            let parent = if path == key {
                ""
            } else {
                path.strip_suffix(&format!(".{key}")).unwrap_or(path)
            };
            unknown_key(parent, &key, &known)
        }
        None if path.is_empty() => msg.to_string(),
        None => format!("{path}: {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_for_likely_typos_only() {
        let known = [
            "type",
            "writable_roots",
            "network_access",
            "exclude_slash_tmp",
        ];
        let k = || known.iter().copied();
        assert_eq!(closest("writeable_roots", k()), Some("writable_roots"));
        assert_eq!(closest("netwrok_access", k()), Some("network_access"));
        assert_eq!(closest("writableRoots", k()), Some("writable_roots"));
        assert_eq!(closest("NETWORK_ACCESS", k()), Some("network_access"));
        assert_eq!(closest("tpye", k()), Some("type"));
        assert_eq!(closest("tyep", k()), Some("type"));
        assert_eq!(closest("typ", k()), Some("type"));
        assert_eq!(closest("readable_roots", k()), None);
        assert_eq!(closest("x", k()), None);
    }

    #[test]
    fn unknown_keys_name_the_path_and_the_suggestion() {
        let known = ["type", "writable_roots"];
        assert_eq!(
            unknown_key("sandboxPolicy", "writeable_roots", &known),
            "sandboxPolicy.writeable_roots: unknown field (did you mean writable_roots?)"
        );
        assert_eq!(
            unknown_key("sandboxPolicy", "bogus", &known),
            "sandboxPolicy.bogus: unknown field (known fields: type, writable_roots)"
        );
        // Unused keys are accepted by the shapes but never suggested.
        let m = "unknown field `useLegacyLandlok`, expected `permissions` or `useLegacyLandlock`";
        assert_eq!(
            explain_serde_error("sandbox.useLegacyLandlok", m),
            "sandbox.useLegacyLandlok: unknown field (known fields: permissions)"
        );
    }

    #[test]
    fn serde_messages_are_rewritten() {
        let m = "unknown field `wallTimeMS`, expected one of `wallTimeMs`, `cpuTimeMs`";
        assert_eq!(
            explain_serde_error("limits", m),
            "limits.wallTimeMS: unknown field (did you mean wallTimeMs?)"
        );
        let m = "unknown field `never_inherti`, expected `never_inherit`";
        assert_eq!(
            explain_serde_error("env", m),
            "env.never_inherti: unknown field (did you mean never_inherit?)"
        );
        let m = "unknown field `x`, there are no fields";
        assert_eq!(
            explain_serde_error("a", m),
            "a.x: unknown field (this object has no fields)"
        );
        assert_eq!(explain_serde_error("a", "invalid type"), "a: invalid type");
        let m = "unknown field `x`, expected `max`";
        assert_eq!(
            explain_serde_error("limits.x", m),
            "limits.x: unknown field (known fields: max)"
        );
        assert_eq!(
            explain_serde_error("x", m),
            "x: unknown field (known fields: max)"
        );
    }
}
