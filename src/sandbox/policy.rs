//! One policy model for every wire shape (PROTOCOL.md section 6.1). The shapes are parsed in
//! `protocol::policy` and converted into this model by [`super::from_wire`] (`sandboxPolicy`,
//! 6.2, Codex's `SandboxPolicy`; `sandbox`, 6.3, permission profiles).
//!
//! The model is a list of `(path, access)` entries resolved by longest prefix (whole
//! components; on a tie `none` beats `write` beats `read`; uncovered paths are `none`), plus the
//! network switch and whether hardening applies. Paths are absolute and lexically normalised
//! here; symlinks are followed when the enforcer opens them, as the kernel would.

use std::path::{Component, Path, PathBuf};

pub use super::from_wire::{
    from_permission_profile, from_request, from_sandbox_policy, from_sandbox_policy_at,
};

/// Access granted to a subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Read and execute.
    Read,
    /// Read, execute, create, modify, delete, rename.
    Write,
    /// Nothing.
    None,
}

impl Access {
    /// Tie-break rank: `none` beats `write` beats `read`.
    fn rank(self) -> u8 {
        match self {
            Access::Read => 0,
            Access::Write => 1,
            Access::None => 2,
        }
    }
}

/// One filesystem entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FsEntry {
    /// Absolute, normalised path.
    pub path: PathBuf,
    /// What the subtree may do.
    pub access: Access,
    /// Where the entry came from (for reports and errors).
    pub origin: &'static str,
    /// Skip silently when the path does not exist (otherwise a missing `read`/`none` path
    /// inside a writable root must be protected from creation).
    pub skip_if_missing: bool,
}

/// How the filesystem is confined.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Filesystem {
    /// No filesystem confinement.
    Unrestricted,
    /// Only the entries.
    Restricted(Vec<FsEntry>),
}

/// The policy levels of the ceiling: `read-only < workspace-write < external-sandbox <
/// danger-full-access`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// No write access anywhere.
    ReadOnly,
    /// Write access somewhere.
    WorkspaceWrite,
    /// Unrestricted filesystem, hardening on.
    ExternalSandbox,
    /// Nothing confined.
    DangerFullAccess,
}

impl Level {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Level::ReadOnly => "read-only",
            Level::WorkspaceWrite => "workspace-write",
            Level::ExternalSandbox => "external-sandbox",
            Level::DangerFullAccess => "danger-full-access",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "read-only" => Level::ReadOnly,
            "workspace-write" => Level::WorkspaceWrite,
            "external-sandbox" => Level::ExternalSandbox,
            "danger-full-access" => Level::DangerFullAccess,
            _ => return None,
        })
    }
}

/// The internal policy every wire shape becomes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SandboxPolicy {
    /// Name for reports (`read-only`, `workspace-write`, ..., or `managed`).
    pub name: String,
    /// Ceiling level.
    pub level: Level,
    /// Filesystem confinement.
    pub filesystem: Filesystem,
    /// Network enabled.
    pub network: bool,
    /// Hardening (no_new_privs, seccomp deny set, scopes, no capabilities).
    pub hardening: bool,
    /// Things the conversion ignored (unknown kinds...), reported back.
    pub notes: Vec<String>,
}

impl SandboxPolicy {
    /// `danger-full-access`.
    pub fn full_access() -> SandboxPolicy {
        SandboxPolicy {
            name: "danger-full-access".into(),
            level: Level::DangerFullAccess,
            filesystem: Filesystem::Unrestricted,
            network: true,
            hardening: false,
            notes: Vec::new(),
        }
    }

    /// True when nothing at all is confined.
    pub fn is_unconfined(&self) -> bool {
        !self.hardening && self.network && self.filesystem == Filesystem::Unrestricted
    }

    /// The access the policy grants at `path` (absolute, normalised), by the rules of 6.1.
    pub fn access_at(&self, path: &Path) -> Access {
        let Filesystem::Restricted(entries) = &self.filesystem else {
            return Access::Write;
        };
        resolve(entries, path)
    }
}

/// The access `entries` grant at `path`: the longest prefix by whole components decides, on a
/// tie `none` beats `write` beats `read`, and a path no entry covers is `none` (6.1).
pub fn resolve(entries: &[FsEntry], path: &Path) -> Access {
    let mut best: Option<(usize, Access)> = None;
    for e in entries {
        if path.starts_with(&e.path) {
            let depth = e.path.components().count();
            best = match best {
                Some((d, a)) if d > depth || (d == depth && a.rank() >= e.access.rank()) => {
                    Some((d, a))
                }
                _ => Some((depth, e.access)),
            };
        }
    }
    best.map(|(_, a)| a).unwrap_or(Access::None)
}

/// One entry per path: the winner of the tie rule (`none` beats `write` beats `read`), in
/// the order paths first appear. Enforcement then sees exactly what the model means: a losing
/// `write` at the same path as a `none` would otherwise still become a Landlock rule.
pub fn winning_entries(entries: Vec<FsEntry>) -> Vec<FsEntry> {
    let mut out: Vec<FsEntry> = Vec::with_capacity(entries.len());
    for e in entries {
        match out.iter_mut().find(|o| o.path == e.path) {
            Some(o) if e.access.rank() > o.access.rank() => *o = e,
            Some(_) => {}
            None => out.push(e),
        }
    }
    out
}

/// Why a policy object was refused (-32602).
pub type PolicyError = String;

/// Lexical normalisation of an absolute path (`.`/`..` removed; `..` at `/` stays `/`).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

/// Context a policy is resolved in.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The process's working directory (absolute).
    pub cwd: &'a Path,
    /// The child's `TMPDIR`, if set.
    pub tmpdir: Option<&'a str>,
}

/// The platform defaults of `include_platform_defaults` / `minimal`.
pub const PLATFORM_DEFAULTS: [&str; 6] = ["/bin", "/sbin", "/usr", "/lib", "/lib64", "/etc"];

/// Names protected (read-only) inside every writable root of a 6.2 `workspace-write` policy.
pub const PROTECTED_NAMES: [&str; 3] = [".git", ".agents", ".codex"];

/// An entry at `path` (normalised) that is not skipped when missing.
pub(crate) fn entry(path: &Path, access: Access, origin: &'static str) -> FsEntry {
    FsEntry {
        path: normalize(path),
        access,
        origin,
        skip_if_missing: false,
    }
}

/// Protected names that are protected from being created when they are missing (a
/// placeholder, see [`crate::sandbox::placeholders`]): what an agent could plant there is
/// configuration the user's own tools load. `.git` is not among them, so that `git init`
/// works in a fresh workspace.
pub const PROTECTED_EVEN_IF_MISSING: [&str; 2] = [".agents", ".codex"];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::collections::BTreeMap;

    fn ctx<'a>(cwd: &'a Path) -> Context<'a> {
        Context {
            cwd,
            tmpdir: Some("/var/tmp/job"),
        }
    }

    fn entries(p: &SandboxPolicy) -> Vec<(String, Access)> {
        match &p.filesystem {
            Filesystem::Unrestricted => panic!("unrestricted"),
            Filesystem::Restricted(e) => e
                .iter()
                .map(|e| (e.path.to_string_lossy().into_owned(), e.access))
                .collect(),
        }
    }

    #[test]
    fn one_entry_per_path_after_the_tie_rule() {
        let e = |p: &str, a| entry(Path::new(p), a, "t");
        let got = winning_entries(vec![
            e("/", Access::Read),
            e("/w", Access::Write),
            e("/w", Access::None),
            e("/x", Access::Read),
            e("/x", Access::Write),
            e("/w", Access::Read),
        ]);
        let got: Vec<_> = got
            .iter()
            .map(|e| (e.path.to_str().unwrap(), e.access))
            .collect();
        assert_eq!(
            got,
            [
                ("/", Access::Read),
                ("/w", Access::None),
                ("/x", Access::Write)
            ]
        );
    }

    #[test]
    fn longest_prefix_and_ties() {
        let p = SandboxPolicy {
            name: "t".into(),
            level: Level::WorkspaceWrite,
            filesystem: Filesystem::Restricted(vec![
                entry(Path::new("/"), Access::Read, "t"),
                entry(Path::new("/w"), Access::Write, "t"),
                entry(Path::new("/w/.git"), Access::Read, "t"),
                entry(Path::new("/w/secret"), Access::None, "t"),
                entry(Path::new("/w/secret"), Access::Write, "t"),
                entry(Path::new("/x"), Access::Write, "t"),
                entry(Path::new("/x"), Access::Read, "t"),
            ]),
            network: false,
            hardening: true,
            notes: vec![],
        };
        assert_eq!(p.access_at(Path::new("/etc/passwd")), Access::Read);
        assert_eq!(p.access_at(Path::new("/w/src/a.rs")), Access::Write);
        assert_eq!(p.access_at(Path::new("/w/.git/config")), Access::Read);
        assert_eq!(
            p.access_at(Path::new("/w/.gitignore")),
            Access::Write,
            "whole components"
        );
        assert_eq!(
            p.access_at(Path::new("/w/secret/k")),
            Access::None,
            "none beats write"
        );
        assert_eq!(
            p.access_at(Path::new("/x/y")),
            Access::Write,
            "write beats read"
        );
        let q = SandboxPolicy {
            filesystem: Filesystem::Restricted(vec![entry(Path::new("/usr"), Access::Read, "t")]),
            ..p
        };
        assert_eq!(
            q.access_at(Path::new("/etc")),
            Access::None,
            "uncovered is none"
        );
    }

    #[test]
    fn read_only_shapes() {
        let cwd = Path::new("/home/ci/repo");
        let p = from_sandbox_policy(&json!({"type": "read-only"}), &ctx(cwd)).unwrap();
        assert_eq!(entries(&p), vec![("/".into(), Access::Read)]);
        assert!(!p.network && p.hardening);
        assert_eq!(p.level, Level::ReadOnly);
        let p = from_sandbox_policy(
            &json!({"type": "read-only", "network_access": true}),
            &ctx(cwd),
        )
        .unwrap();
        assert!(p.network);
        let p = from_sandbox_policy(
            &json!({"type": "read-only", "access": {"type": "restricted", "readable_roots": ["/opt/x", "file:///data/y%20z"]}}),
            &ctx(cwd),
        )
        .unwrap();
        let mut want: Vec<(String, Access)> = vec![
            ("/opt/x".into(), Access::Read),
            ("/data/y z".into(), Access::Read),
            ("/home/ci/repo".into(), Access::Read),
        ];
        want.extend(
            PLATFORM_DEFAULTS
                .iter()
                .map(|p| (p.to_string(), Access::Read)),
        );
        assert_eq!(entries(&p), want);
        let p = from_sandbox_policy(
            &json!({"type": "read-only", "access": {"type": "restricted", "include_platform_defaults": false}}),
            &ctx(cwd),
        )
        .unwrap();
        assert_eq!(entries(&p), vec![("/home/ci/repo".into(), Access::Read)]);
    }

    #[test]
    fn workspace_write_shape_and_protected_paths() {
        let dir = std::env::temp_dir().join(format!("stk-policy-{}", std::process::id()));
        let ws = dir.join("ws");
        std::fs::create_dir_all(ws.join(".git")).unwrap();
        std::fs::create_dir_all(ws.join(".codex")).unwrap();
        let wt = dir.join("wt");
        std::fs::create_dir_all(&wt).unwrap();
        std::fs::write(wt.join(".git"), "gitdir: ../ws/.git/worktrees/wt\n").unwrap();
        let p = from_sandbox_policy(
            &json!({"type": "workspace-write", "writable_roots": [wt.to_str().unwrap()], "network_access": false}),
            &ctx(&ws),
        )
        .unwrap();
        let e = entries(&p);
        let has = |path: &Path, a: Access| {
            e.contains(&(normalize(path).to_string_lossy().into_owned(), a))
        };
        assert!(has(Path::new("/"), Access::Read));
        assert!(has(&ws, Access::Write));
        assert!(has(&ws.join(".git"), Access::Read));
        assert!(has(&ws.join(".codex"), Access::Read));
        // `.agents` is missing and protected all the same (a placeholder); a missing `.git`
        // is not (`git init` works).
        assert!(has(&ws.join(".agents"), Access::Read));
        assert!(has(&wt.join(".codex"), Access::Read));
        assert!(
            !e.iter()
                .any(|(p, _)| p.starts_with(wt.join(".git/").to_str().unwrap()))
        );
        assert!(!has(&dir.join("ws/.git/x"), Access::Read));
        assert!(has(&wt, Access::Write));
        assert!(has(&wt.join(".git"), Access::Read));
        assert!(
            has(&ws.join(".git/worktrees/wt"), Access::Read),
            "gitdir target protected"
        );
        assert!(has(Path::new("/tmp"), Access::Write));
        assert!(has(Path::new("/var/tmp/job"), Access::Write));
        assert_eq!(p.access_at(&ws.join(".git/config")), Access::Read);
        assert_eq!(p.access_at(&ws.join("src")), Access::Write);
        let p = from_sandbox_policy(
            &json!({"type": "workspace-write", "exclude_slash_tmp": true, "exclude_tmpdir_env_var": true,
                    "read_only_access": {"type": "restricted", "include_platform_defaults": false}}),
            &ctx(&ws),
        )
        .unwrap();
        assert_eq!(p.access_at(Path::new("/tmp/x")), Access::None);
        assert_eq!(p.access_at(Path::new("/var/tmp/job/x")), Access::None);
        assert_eq!(p.access_at(Path::new("/etc/passwd")), Access::None);
        assert_eq!(p.access_at(&ws.join("a")), Access::Write);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn external_and_full_access() {
        let cwd = Path::new("/w");
        let p = from_sandbox_policy(&json!({"type": "external-sandbox"}), &ctx(cwd)).unwrap();
        assert_eq!(p.filesystem, Filesystem::Unrestricted);
        assert!(!p.network && p.hardening);
        let p = from_sandbox_policy(
            &json!({"type": "external-sandbox", "network_access": "enabled"}),
            &ctx(cwd),
        )
        .unwrap();
        assert!(p.network);
        let p = from_sandbox_policy(&json!({"type": "danger-full-access"}), &ctx(cwd)).unwrap();
        assert!(p.is_unconfined());
        assert!(from_sandbox_policy(&json!({"type": "bogus"}), &ctx(cwd)).is_err());
        assert!(
            from_sandbox_policy(
                &json!({"type": "read-only", "network_access": "yes"}),
                &ctx(cwd)
            )
            .unwrap_err()
            .contains("network_access")
        );
    }

    #[test]
    fn permission_profile_shape() {
        let v = json!({"permissions": {"type": "managed",
            "file_system": {"type": "restricted", "entries": [
                {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
                {"path": {"type": "special", "value": {"kind": "project_roots"}}, "access": "write"},
                {"path": {"type": "special", "value": {"kind": "slash_tmp"}}, "access": "write"},
                {"path": {"type": "special", "value": {"kind": "tmpdir"}}, "access": "write"},
                {"path": {"type": "special", "value": {"kind": "project_roots", "subpath": ".git"}}, "access": "read", "missing_path_behavior": "skip"},
                {"path": {"type": "path", "path": "/abs/dir"}, "access": "none"},
                {"path": {"type": "path", "path": "file:///abs/other"}, "access": "deny"},
                {"path": {"type": "special", "value": {"kind": "future_thing"}}, "access": "write"},
                {"path": {"type": "special", "value": {"kind": "current_working_directory"}}, "access": "read"},
                {"path": {"type": "special", "value": {"kind": "minimal"}}, "access": "read"}]},
            "network": "restricted"},
            "cwd": "file:///home/ci/repo", "workspaceRoots": ["file:///home/ci/repo", "file:///home/ci/lib"],
            "windowsSandboxLevel": "disabled", "useLegacyLandlock": false});
        let p = from_permission_profile(&v, Path::new("/elsewhere"), Some("/var/tmp/t")).unwrap();
        assert_eq!(p.level, Level::WorkspaceWrite);
        assert!(!p.network);
        assert_eq!(p.notes.len(), 1, "{:?}", p.notes);
        let e = entries(&p);
        for (path, a) in [
            ("/", Access::Read),
            ("/home/ci/repo", Access::Write),
            ("/home/ci/lib", Access::Write),
            ("/tmp", Access::Write),
            ("/var/tmp/t", Access::Write),
            ("/home/ci/repo/.git", Access::Read),
            ("/home/ci/lib/.git", Access::Read),
            ("/abs/dir", Access::None),
            ("/abs/other", Access::None),
            ("/usr", Access::Read),
        ] {
            assert!(
                e.contains(&(path.to_string(), a)),
                "missing {path} {a:?} in {e:?}"
            );
        }
        assert_eq!(p.access_at(Path::new("/abs/dir/x")), Access::None);
        // `.agents` and `.codex` at the top of every writable root, protected even when
        // missing (the `.git` entry keeps its skip).
        let full = |path: &str| match &p.filesystem {
            Filesystem::Restricted(e) => e.iter().find(|e| e.path == Path::new(path)).cloned(),
            Filesystem::Unrestricted => None,
        };
        for root in ["/home/ci/repo", "/home/ci/lib", "/tmp", "/var/tmp/t"] {
            for name in PROTECTED_EVEN_IF_MISSING {
                let e = full(&format!("{root}/{name}")).expect("protected name");
                assert_eq!((e.access, e.skip_if_missing), (Access::Read, false));
            }
        }
        assert!(full("/home/ci/repo/.git").unwrap().skip_if_missing);
        // Defaults: workspaceRoots = cwd = process cwd.
        let v = json!({"permissions": {"type": "managed", "network": "enabled",
            "file_system": {"type": "restricted", "entries": [
                {"path": {"type": "special", "value": {"kind": "project_roots"}}, "access": "read"}]}}});
        let p = from_permission_profile(&v, Path::new("/proc-cwd"), None).unwrap();
        assert_eq!(entries(&p), vec![("/proc-cwd".into(), Access::Read)]);
        assert_eq!(p.level, Level::ReadOnly);
        assert!(p.network);
        let p = from_permission_profile(
            &json!({"permissions": {"type": "disabled"}}),
            Path::new("/"),
            None,
        )
        .unwrap();
        assert!(p.is_unconfined());
        let p = from_permission_profile(
            &json!({"permissions": {"type": "external", "network": "enabled"}}),
            Path::new("/"),
            None,
        )
        .unwrap();
        assert_eq!(p.level, Level::ExternalSandbox);
        assert!(p.network && p.hardening);
        let e = from_permission_profile(&json!({"permissions": {"type": "managed", "file_system": {"type": "restricted", "entries": [{"path": {"type": "path", "path": "/x"}, "access": "all"}]}}}), Path::new("/"), None).unwrap_err();
        assert!(e.contains("entries[0].access"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        let cwd = Path::new("/w");
        let err = |v: Value| from_sandbox_policy(&v, &ctx(cwd)).unwrap_err();
        assert_eq!(
            err(json!({"type": "workspace-write", "writeable_roots": ["/x"]})),
            "sandboxPolicy.writeable_roots: unknown field (did you mean writable_roots?)"
        );
        assert_eq!(
            err(json!({"type": "read-only", "netwrok_access": true})),
            "sandboxPolicy.netwrok_access: unknown field (did you mean network_access?)"
        );
        // A key of another policy type is unknown here.
        assert!(
            err(json!({"type": "read-only", "writable_roots": []}))
                .starts_with("sandboxPolicy.writable_roots: unknown field")
        );
        assert!(
            err(json!({"type": "danger-full-access", "network_access": true}))
                .starts_with("sandboxPolicy.network_access: unknown field")
        );
        assert_eq!(
            err(
                json!({"type": "workspace-write", "read_only_access": {"type": "restricted", "readable_root": []}})
            ),
            "sandboxPolicy.read_only_access.readable_root: unknown field (did you mean readable_roots?)"
        );
        assert!(
            err(json!({"type": "read-only", "access": {"type": "full-access", "x": 1}}))
                .starts_with("sandboxPolicy.access.x: unknown field")
        );
        let e = from_sandbox_policy_at(
            &json!({"type": "external-sandbox", "network_acess": "enabled"}),
            &ctx(cwd),
            "sandbox.default_policy",
        )
        .unwrap_err();
        assert_eq!(
            e,
            "sandbox.default_policy.network_acess: unknown field (did you mean network_access?)"
        );
    }

    #[test]
    fn permission_profile_unknown_keys_are_refused_but_codex_fields_accepted() {
        let entry = |extra: Value| {
            let mut e = json!({"path": {"type": "special", "value": {"kind": "project_roots", "subpath": ".git"}},
                               "access": "read", "missing_path_behavior": "skip"});
            for (k, v) in extra.as_object().unwrap() {
                e[k] = v.clone();
            }
            e
        };
        let profile = |top: Value, e: Value| {
            let mut v = json!({"permissions": {"type": "managed", "network": "restricted",
                "file_system": {"type": "restricted", "entries": [
                    {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"}, e]}},
                "cwd": "file:///w", "workspaceRoots": ["file:///w"]});
            for (k, x) in top.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        };
        let err = |v: Value| from_permission_profile(&v, Path::new("/w"), None).unwrap_err();
        // Every field Codex's `FileSystemSandboxContext` defines is accepted.
        let all = json!({"windowsSandboxLevel": "disabled", "windowsSandboxPrivateDesktop": false,
            "windowsSandboxProxySettingsMode": "reconcile", "useLegacyLandlock": false,
            "userHomeDir": "file:///root", "temporaryDirectories": ["file:///var/tmp/x"],
            "policyContext": {"cwd": "file:///w", "workspaceRoots": ["file:///w"]}});
        from_permission_profile(&profile(all, entry(json!({}))), Path::new("/w"), None).unwrap();
        assert_eq!(
            err(profile(json!({"workspaceRoot": []}), entry(json!({})))),
            "sandbox.workspaceRoot: unknown field (did you mean workspaceRoots?)"
        );
        assert_eq!(
            err(profile(
                json!({}),
                entry(json!({"missing_path_behaviour": "skip"}))
            )),
            "sandbox.permissions.file_system.entries[1].missing_path_behaviour: unknown field (did you mean missing_path_behavior?)"
        );
        let mut v = profile(json!({}), entry(json!({})));
        v["permissions"]["file_system"]["entries"][1]["path"]["value"]["subpth"] = json!("x");
        assert_eq!(
            err(v),
            "sandbox.permissions.file_system.entries[1].path.value.subpth: unknown field (did you mean subpath?)"
        );
        let mut v = profile(json!({}), entry(json!({})));
        v["permissions"]["netwrok"] = json!("enabled");
        assert_eq!(
            err(v),
            "sandbox.permissions.netwrok: unknown field (did you mean network?)"
        );
        let mut v = profile(json!({}), entry(json!({})));
        v["permissions"]["file_system"]["glob_scan_max_depth"] = json!(3);
        from_permission_profile(&v, Path::new("/w"), None).unwrap();
        v["permissions"]["file_system"]["entrie"] = json!([]);
        assert_eq!(
            err(v),
            "sandbox.permissions.file_system.entrie: unknown field (did you mean entries?)"
        );
        assert!(
            err(profile(json!({"policyContext": {"cwd": "file:///w", "workspace_roots": []}}), entry(json!({}))))
                .starts_with("sandbox.policyContext.workspace_roots: unknown field (did you mean workspaceRoots?)")
        );
        let e = from_permission_profile(
            &json!({"permissions": {"type": "disabled", "network": "enabled"}}),
            Path::new("/"),
            None,
        )
        .unwrap_err();
        assert!(
            e.starts_with("sandbox.permissions.network: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn temporary_directories_replace_tmpdir() {
        let v = json!({"permissions": {"type": "managed", "network": "restricted",
            "file_system": {"type": "restricted", "entries": [
                {"path": {"type": "special", "value": {"kind": "tmpdir"}}, "access": "write"}]}},
            "temporaryDirectories": ["file:///scratch/a", "/scratch/b"]});
        let p = from_permission_profile(&v, Path::new("/w"), Some("/var/tmp/t")).unwrap();
        let mut e = entries(&p);
        e.retain(|(p, _)| !p.ends_with("/.agents") && !p.ends_with("/.codex"));
        assert_eq!(
            e,
            vec![
                ("/scratch/a".into(), Access::Write),
                ("/scratch/b".into(), Access::Write)
            ]
        );
    }

    #[test]
    fn both_shapes_is_an_error() {
        let env = BTreeMap::new();
        assert!(
            from_request(
                Some(&json!({"type": "read-only"})),
                Some(&json!({})),
                Path::new("/"),
                &env
            )
            .is_err()
        );
        assert_eq!(
            from_request(None, Some(&Value::Null), Path::new("/"), &env),
            Ok(None)
        );
    }
}
