//! The environment policy and the build algorithm.

use std::collections::BTreeMap;
use std::ffi::OsString;

use serde_json::Value;

use super::pattern::PatternSet;
use crate::protocol::policy::EnvPolicyShape;
pub use crate::protocol::policy::Inherit;
use crate::protocol::strict::explain_serde_error;

/// The names `inherit: "core"` keeps (exact, case-sensitive).
pub const CORE_NAMES: [&str; 11] = [
    "PATH", "SHELL", "TMPDIR", "TEMP", "TMP", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "LOGNAME",
    "USER",
];

/// Names removed by step 2 unless `ignoreDefaultExcludes`.
pub const DEFAULT_EXCLUDES: [&str; 3] = ["*KEY*", "*SECRET*", "*TOKEN*"];

/// A validated `envPolicy`. Its default is the policy of an empty shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvPolicy {
    /// Step 1.
    pub inherit: Inherit,
    /// Skip step 2.
    pub ignore_default_excludes: bool,
    /// Step 3.
    pub exclude: Vec<String>,
    /// Step 5.
    pub set: BTreeMap<String, String>,
    /// Step 6 (empty: no filter).
    pub include_only: Vec<String>,
    /// Step 4 ([stockade]).
    pub include: Vec<String>,
}

/// Checks a variable name: non-empty, no `=`, no NUL.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && !name.contains('\0')
}

/// The names and values of `set`: a name is non-empty without `=` or NUL, a value has no NUL.
fn check_set(set: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in set {
        if !valid_name(k) {
            return Err(format!(
                "envPolicy.set: invalid variable name {k:?} (empty, or contains '=' or NUL)"
            ));
        }
        if v.contains('\0') {
            return Err(format!("envPolicy.set.{k}: value contains a NUL byte"));
        }
    }
    Ok(())
}

impl EnvPolicy {
    /// Checks what the type cannot: the names and values of `set` (a policy built in code,
    /// as `stockade run` does, gets the same errors as one from the wire).
    pub fn check(&self) -> Result<(), String> {
        check_set(&self.set)
    }

    /// The policy a shape (either spelling) describes: absent or `null` fields take their
    /// defaults, then the checks the type cannot make ([`EnvPolicy::check`]).
    pub fn from_shape(shape: impl Into<EnvPolicyShape>) -> Result<EnvPolicy, String> {
        let shape = shape.into();
        let policy = EnvPolicy {
            inherit: shape.inherit.unwrap_or_default(),
            ignore_default_excludes: shape.ignore_default_excludes.unwrap_or_default(),
            exclude: shape.exclude.unwrap_or_default(),
            set: shape.set.unwrap_or_default(),
            include_only: shape.include_only.unwrap_or_default(),
            include: shape.include.unwrap_or_default(),
        };
        policy.check()?;
        Ok(policy)
    }

    /// Validates the wire object (missing or `null` fields take their defaults); the error
    /// names the offending field (`envPolicy.set.A`, `envPolicy.includeonly`, ...).
    pub fn from_json(v: &Value) -> Result<EnvPolicy, String> {
        if !v.is_object() {
            return Err("envPolicy: must be an object".into());
        }
        let shape: EnvPolicyShape = serde_path_to_error::deserialize(v).map_err(|e| {
            let path = match e.path().to_string() {
                root if root == "." => "envPolicy".to_string(),
                field => format!("envPolicy.{field}"),
            };
            explain_serde_error(&path, &e.inner().to_string())
        })?;
        EnvPolicy::from_shape(shape)
    }
}

/// The server's own environment, captured once at startup. Variables whose name or value is
/// not valid UTF-8 are dropped here, so they can never be inherited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerEnv {
    vars: BTreeMap<String, String>,
}

impl ServerEnv {
    /// From `(name, value)` pairs as the OS gives them.
    pub fn from_os(vars: impl IntoIterator<Item = (OsString, OsString)>) -> ServerEnv {
        ServerEnv {
            vars: vars
                .into_iter()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .filter(|(k, _)| valid_name(k))
                .collect(),
        }
    }

    /// Captures the current process environment.
    pub fn capture() -> ServerEnv {
        ServerEnv::from_os(std::env::vars_os())
    }

    /// From UTF-8 pairs (tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> ServerEnv {
        ServerEnv {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The variables.
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }
}

/// Builds a child's environment: the seven steps of PROTOCOL.md section 5, with the operator
/// guard `never_inherit` applied to everything taken from the server (steps 1 and 4).
pub fn build(
    server: &ServerEnv,
    policy: &EnvPolicy,
    never_inherit: &[String],
    overlay: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    // Each pattern list is compiled once for this build, not once per variable.
    let guard = PatternSet::new(never_inherit);
    let inheritable = |name: &str| !guard.any(name);
    // 1. Start set.
    let mut env: BTreeMap<String, String> = match policy.inherit {
        Inherit::All => server
            .vars
            .iter()
            .filter(|(k, _)| inheritable(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Inherit::Core => server
            .vars
            .iter()
            .filter(|(k, _)| CORE_NAMES.contains(&k.as_str()) && inheritable(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Inherit::None => BTreeMap::new(),
    };
    // 2. Default excludes.
    if !policy.ignore_default_excludes {
        let defaults = PatternSet::new(DEFAULT_EXCLUDES);
        env.retain(|k, _| !defaults.any(k));
    }
    // 3. Client excludes.
    let exclude = PatternSet::new(&policy.exclude);
    env.retain(|k, _| !exclude.any(k));
    // 4. Explicit includes beat steps 2-3 (but never the operator guard).
    if !policy.include.is_empty() {
        let include = PatternSet::new(&policy.include);
        for (k, v) in &server.vars {
            if include.any(k) && inheritable(k) {
                env.insert(k.clone(), v.clone());
            }
        }
    }
    // 5. set.
    for (k, v) in &policy.set {
        env.insert(k.clone(), v.clone());
    }
    // 6. includeOnly (after set: it can remove set entries).
    if !policy.include_only.is_empty() {
        let include_only = PatternSet::new(&policy.include_only);
        env.retain(|k, _| include_only.any(k));
    }
    // 7. Overlay.
    for (k, v) in overlay {
        env.insert(k.clone(), v.clone());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server() -> ServerEnv {
        ServerEnv::from_pairs([
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/home/ci"),
            ("LANG", "C.UTF-8"),
            ("USER", "ci"),
            ("SHELL", "/bin/bash"),
            ("TMPDIR", "/tmp"),
            ("path", "lowercase"),
            ("FOO", "foo"),
            ("MONKEY", "banana"),
            ("my_secret", "s"),
            ("GH_TOKEN", "t"),
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_REGION", "eu"),
            ("MYAPP_TOKEN", "m"),
            ("MYAPP_MODE", "fast"),
            ("A.B", "dot"),
            ("AxB", "x"),
            ("AAB", "plus"),
            ("A+B", "plus2"),
        ])
    }

    fn policy(v: Value) -> EnvPolicy {
        EnvPolicy::from_json(&v).unwrap()
    }

    fn names(m: &BTreeMap<String, String>) -> Vec<&str> {
        m.keys().map(String::as_str).collect()
    }

    fn run(p: Value, overlay: &[(&str, &str)]) -> BTreeMap<String, String> {
        let overlay = overlay
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        build(&server(), &policy(p), &[], &overlay)
    }

    #[test]
    fn unknown_env_policy_keys_are_refused() {
        let e = EnvPolicy::from_json(&serde_json::json!({"inherit": "core", "includeonly": ["A"]}))
            .unwrap_err();
        assert_eq!(
            e,
            "envPolicy.includeonly: unknown field (did you mean includeOnly?)"
        );
        let e = EnvPolicy::from_json(
            &serde_json::json!({"inherit": "core", "ignoreDefaultExclude": true}),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "envPolicy.ignoreDefaultExclude: unknown field (did you mean ignoreDefaultExcludes?)"
        );
        // What the Codex CLI 0.169 sends.
        EnvPolicy::from_json(
            &serde_json::json!({"inherit": "all", "ignoreDefaultExcludes": true,
            "exclude": ["CODEX_VERSION"], "set": {}, "includeOnly": []}),
        )
        .unwrap();
    }

    #[test]
    fn acceptance_table() {
        // inherit all: default excludes remove *KEY*, *SECRET*, *TOKEN* (case-insensitive).
        let e = run(json!({"inherit": "all"}), &[]);
        for gone in [
            "MONKEY",
            "my_secret",
            "GH_TOKEN",
            "AWS_ACCESS_KEY_ID",
            "MYAPP_TOKEN",
        ] {
            assert!(!e.contains_key(gone), "{gone} should be excluded");
        }
        for kept in ["PATH", "FOO", "path", "AWS_REGION"] {
            assert!(e.contains_key(kept), "{kept} should be kept");
        }
        // ignoreDefaultExcludes keeps them.
        let e = run(
            json!({"inherit": "all", "ignoreDefaultExcludes": true}),
            &[],
        );
        assert_eq!(e.len(), server().vars().len());
        // core: exactly the core names that exist; case-sensitive (lowercase `path` dropped).
        let e = run(json!({"inherit": "core"}), &[]);
        assert_eq!(
            names(&e),
            vec!["HOME", "LANG", "PATH", "SHELL", "TMPDIR", "USER"]
        );
        // none: only set + overlay.
        let e = run(json!({"inherit": "none", "set": {"A": "1"}}), &[("B", "2")]);
        assert_eq!(names(&e), vec!["A", "B"]);
        // exclude.
        let e = run(json!({"inherit": "all", "exclude": ["AWS_*"]}), &[]);
        assert!(!e.contains_key("AWS_REGION"));
        assert!(e.contains_key("FOO"));
        // include re-adds after the default excludes.
        let e = run(json!({"inherit": "none", "include": ["MYAPP_*"]}), &[]);
        assert_eq!(names(&e), vec!["MYAPP_MODE", "MYAPP_TOKEN"]);
        let e = run(
            json!({"inherit": "all", "exclude": ["MYAPP_*"], "include": ["myapp_token"]}),
            &[],
        );
        assert_eq!(e.get("MYAPP_TOKEN").map(String::as_str), Some("m"));
        assert!(!e.contains_key("MYAPP_MODE"));
        // set overrides an inherited value and re-adds an excluded name.
        let e = run(
            json!({"inherit": "all", "exclude": ["FOO"], "set": {"PATH": "/x", "FOO": "again", "GH_TOKEN": "mine"}}),
            &[],
        );
        assert_eq!(e["PATH"], "/x");
        assert_eq!(e["FOO"], "again");
        assert_eq!(e["GH_TOKEN"], "mine");
        // includeOnly runs after set and can drop a set entry.
        // (Patterns are case-insensitive: `PATH` also keeps `path`.)
        let e = run(
            json!({"inherit": "all", "set": {"X1": "1"}, "includeOnly": ["PATH", "HOME"]}),
            &[],
        );
        assert_eq!(names(&e), vec!["HOME", "PATH", "path"]);
        // The overlay wins over set (and survives includeOnly).
        let e = run(
            json!({"inherit": "none", "set": {"K": "set"}, "includeOnly": ["Q"]}),
            &[("K", "overlay")],
        );
        assert_eq!(e["K"], "overlay");
        // `?` matches exactly one character.
        let e = run(json!({"inherit": "none", "include": ["A?B"]}), &[]);
        assert_eq!(names(&e), vec!["A+B", "A.B", "AAB", "AxB"]);
        let e = run(json!({"inherit": "none", "include": ["A?"]}), &[]);
        assert!(e.is_empty());
        // Regex characters match literally.
        let e = run(json!({"inherit": "none", "include": ["A.B", "A+B"]}), &[]);
        assert_eq!(names(&e), vec!["A+B", "A.B"]);
    }

    #[test]
    fn operator_guard() {
        let guard = vec!["*PASSWORD*".to_string(), "FOO".to_string()];
        let mut server = server();
        server.vars.insert("DB_PASSWORD".into(), "p".into());
        let p = policy(json!({"inherit": "all", "ignoreDefaultExcludes": true, "include": ["*"]}));
        let e = build(&server, &p, &guard, &BTreeMap::new());
        assert!(!e.contains_key("DB_PASSWORD"));
        assert!(!e.contains_key("FOO"));
        // Values the client sends itself are not affected.
        let p = policy(json!({"inherit": "all", "set": {"FOO": "client"}}));
        let overlay = BTreeMap::from([("DB_PASSWORD".to_string(), "client".to_string())]);
        let e = build(&server, &p, &guard, &overlay);
        assert_eq!(e["FOO"], "client");
        assert_eq!(e["DB_PASSWORD"], "client");
    }

    #[test]
    fn validation_names_the_field() {
        let err = |v: Value| EnvPolicy::from_json(&v).unwrap_err();
        assert!(err(json!({"inherit": "some"})).contains("envPolicy.inherit"));
        assert!(err(json!({"inherit": 3})).contains("envPolicy.inherit"));
        assert!(err(json!({"set": {"A": 1}})).contains("envPolicy.set.A"));
        assert!(err(json!({"set": {"A=B": "x"}})).contains("envPolicy.set"));
        assert!(err(json!({"set": {"A\u{0}": "x"}})).contains("envPolicy.set"));
        assert!(err(json!({"exclude": [1]})).contains("envPolicy.exclude[0]"));
        assert!(err(json!({"includeOnly": "X"})).contains("envPolicy.includeOnly"));
        assert!(err(json!({"include": [null]})).contains("envPolicy.include[0]"));
        assert!(err(json!({"ignoreDefaultExcludes": "yes"})).contains("ignoreDefaultExcludes"));
        assert!(err(json!([])).contains("envPolicy"));
        // All fields optional (defaults in brackets in PROTOCOL.md).
        assert_eq!(policy(json!({})), EnvPolicy::default());
    }

    #[test]
    fn non_utf8_is_never_inherited() {
        use std::os::unix::ffi::OsStringExt;
        let s = ServerEnv::from_os([
            (OsString::from("GOOD"), OsString::from("v")),
            (
                OsString::from("BADVAL"),
                OsString::from_vec(vec![0xff, 0xfe]),
            ),
            (OsString::from_vec(vec![b'B', 0xff]), OsString::from("x")),
        ]);
        assert_eq!(names(s.vars()), vec!["GOOD"]);
    }

    /// Property test with a fixed seed: whatever the server environment and the policy, no name
    /// matched by `never_inherit` appears unless the client set it itself, and every overlay
    /// entry is present with its value.
    #[test]
    fn property_guard_and_overlay() {
        let mut seed: u64 = 0x5eed_1234_abcd_0001;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let alphabet = ["A", "B", "KEY", "_", "x", "TOKEN", "PASS", "1"];
        let pats = ["*", "A*", "*KEY*", "?", "B?", "*_*", "x", "PASS*", "*1"];
        for _ in 0..2000 {
            let name = |rnd: &mut dyn FnMut(u64) -> u64| -> String {
                (0..1 + rnd(3))
                    .map(|_| alphabet[rnd(alphabet.len() as u64) as usize])
                    .collect()
            };
            let server = ServerEnv {
                vars: (0..rnd(12))
                    .map(|_| (name(&mut rnd), "s".to_string()))
                    .collect(),
            };
            let pick = |rnd: &mut dyn FnMut(u64) -> u64| -> Vec<String> {
                (0..rnd(3))
                    .map(|_| pats[rnd(pats.len() as u64) as usize].to_string())
                    .collect()
            };
            let policy = EnvPolicy {
                inherit: [Inherit::All, Inherit::Core, Inherit::None][rnd(3) as usize],
                ignore_default_excludes: rnd(2) == 0,
                exclude: pick(&mut rnd),
                set: (0..rnd(3))
                    .map(|_| (name(&mut rnd), "set".to_string()))
                    .collect(),
                include_only: pick(&mut rnd),
                include: pick(&mut rnd),
            };
            let guard = pick(&mut rnd);
            let overlay: BTreeMap<String, String> = (0..rnd(3))
                .map(|_| (name(&mut rnd), "ov".to_string()))
                .collect();
            let env = build(&server, &policy, &guard, &overlay);
            for (k, v) in &env {
                if PatternSet::new(&guard).any(k) {
                    assert!(
                        policy.set.contains_key(k) || overlay.contains_key(k),
                        "{k}={v} leaked past never_inherit {guard:?}"
                    );
                }
            }
            for (k, v) in &overlay {
                assert_eq!(env.get(k), Some(v));
            }
        }
    }
}
