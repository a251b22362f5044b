//! The userspace half of filesystem API enforcement: what Landlock cannot decide.
//!
//! A filesystem worker is confined by the policy's Landlock ruleset, so the kernel refuses
//! every open, create or delete the ruleset does not allow. What a *process* under the same
//! policy additionally experiences comes from the private mount namespace (read-only and
//! hidden subtrees), and Landlock does not cover metadata reads at all. [`Guard`] decides
//! those from the real (symlink-free) path of each object, using the same entry list and the
//! same carve-out computation as the process path, so the fs API is never more permissive
//! than exec.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::sandbox::landlock::DEVICES;
use crate::sandbox::policy::{Access, Filesystem, SandboxPolicy};
use crate::sandbox::prepare::carve_outs;

/// Which right an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read a file, list a directory, read metadata.
    Read,
    /// Create, modify, delete.
    Write,
}

impl Need {
    /// The method family word of the denial message (`fs/read`, `fs/write`).
    pub fn word(self) -> &'static str {
        match self {
            Need::Read => "read",
            Need::Write => "write",
        }
    }
}

/// Identity of an entry path when the guard was built (None: missing or unreadable).
type Stamp = Option<(u64, u64)>;

/// A policy resolved against the filesystem as it is now.
#[derive(Debug, Clone)]
pub struct Guard {
    /// `None`: unrestricted filesystem.
    entries: Option<Vec<(PathBuf, Access)>>,
    /// Read-only carve-outs (what a process gets as read-only bind mounts).
    read_only: Vec<PathBuf>,
    /// Hidden carve-outs (what a process cannot even traverse).
    hidden: Vec<PathBuf>,
    /// The entry paths and their identities, to notice when the guard is stale.
    stamps: Vec<(PathBuf, Stamp)>,
}

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Guard {
    /// A guard that allows everything (unrestricted filesystem policies).
    pub fn unrestricted() -> Guard {
        Guard {
            entries: None,
            read_only: Vec::new(),
            hidden: Vec::new(),
            stamps: Vec::new(),
        }
    }

    /// Resolves `policy` against the filesystem now.
    pub fn build(policy: &SandboxPolicy) -> Guard {
        let Filesystem::Restricted(list) = &policy.filesystem else {
            return Guard::unrestricted();
        };
        let stamps = list
            .iter()
            .map(|e| (e.path.clone(), stamp(&e.path)))
            .collect();
        let entries = list
            .iter()
            .filter(|e| !(e.skip_if_missing && std::fs::symlink_metadata(&e.path).is_err()))
            .map(|e| (crate::paths::canonical_or_lexical(&e.path), e.access))
            .collect();
        let (mounts, _) = carve_outs(list);
        let (mut read_only, mut hidden) = (Vec::new(), Vec::new());
        for m in mounts {
            use std::os::unix::ffi::OsStrExt;
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(&m[1..]));
            // 0: read-only, 4: a pinned symlink (it must not be replaced); the rest hide.
            if m[0] == 0 || m[0] == 4 {
                read_only.push(path);
            } else {
                hidden.push(path);
            }
        }
        Guard {
            entries: Some(entries),
            read_only,
            hidden,
            stamps,
        }
    }

    /// True when an entry path now resolves to a different object (or appeared or
    /// vanished) since the guard was built: the guard, and the ruleset built with it, must
    /// be rebuilt.
    pub fn is_stale(&self) -> bool {
        self.stamps.iter().any(|(p, s)| stamp(p) != *s)
    }

    /// True for an unrestricted guard.
    pub fn is_unrestricted(&self) -> bool {
        self.entries.is_none()
    }

    /// True when a process could not even reach `real` (a hidden carve-out covers it).
    pub fn is_hidden(&self, real: &Path) -> bool {
        self.hidden.iter().any(|h| real.starts_with(h))
    }

    /// The access a process under the policy has at `real` (a path without symlinks):
    /// Landlock's grant (any read or write entry above it), limited by the mounts.
    pub fn access(&self, real: &Path) -> Access {
        let Some(entries) = &self.entries else {
            return Access::Write;
        };
        if self.is_hidden(real) {
            return Access::None;
        }
        // Landlock grants the union of the rules above the path; `none` entries are only
        // enforced through carve-outs.
        let mut granted = Access::None;
        for (p, a) in entries {
            if real.starts_with(p) {
                match a {
                    Access::Write => granted = Access::Write,
                    Access::Read if granted == Access::None => granted = Access::Read,
                    _ => {}
                }
            }
        }
        if granted == Access::Write && self.read_only.iter().any(|r| real.starts_with(r)) {
            granted = Access::Read;
        }
        // The devices every restricted policy keeps usable (not the server's own terminal).
        if granted != Access::Write
            && DEVICES
                .iter()
                .any(|d| *d != "/dev/tty" && real == Path::new(d))
        {
            granted = Access::Write;
        }
        granted
    }

    /// True when `need` is allowed at `real`.
    pub fn allows(&self, need: Need, real: &Path) -> bool {
        matches!(
            (need, self.access(real)),
            (_, Access::Write) | (Need::Read, Access::Read)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::policy::{FsEntry, Level};

    fn policy(entries: &[(&str, Access)]) -> SandboxPolicy {
        SandboxPolicy {
            name: "t".into(),
            level: Level::WorkspaceWrite,
            filesystem: Filesystem::Restricted(
                entries
                    .iter()
                    .map(|(p, a)| FsEntry {
                        path: PathBuf::from(p),
                        access: *a,
                        origin: "t",
                        skip_if_missing: false,
                    })
                    .collect(),
            ),
            network: false,
            hardening: true,
            notes: vec![],
        }
    }

    #[test]
    fn carve_outs_limit_landlock_grants() {
        let dir = std::env::temp_dir().join(format!("stockade-guard-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("w/.git")).unwrap();
        std::fs::create_dir_all(dir.join("w/secret")).unwrap();
        let w = dir.join("w").canonicalize().unwrap();
        let g = Guard::build(&policy(&[
            ("/usr", Access::Read),
            (w.to_str().unwrap(), Access::Write),
            (w.join(".git").to_str().unwrap(), Access::Read),
            (w.join("secret").to_str().unwrap(), Access::None),
        ]));
        assert_eq!(g.access(&w.join("a/b")), Access::Write);
        assert_eq!(g.access(&w.join(".git/config")), Access::Read);
        assert_eq!(g.access(&w.join(".gitignore")), Access::Write);
        assert_eq!(g.access(&w.join("secret/k")), Access::None);
        assert!(g.is_hidden(&w.join("secret")));
        assert_eq!(g.access(Path::new("/usr/bin/env")), Access::Read);
        assert_eq!(g.access(Path::new("/etc/passwd")), Access::None);
        assert_eq!(g.access(Path::new("/dev/null")), Access::Write);
        assert_eq!(g.access(Path::new("/dev/tty")), Access::None);
        assert!(!g.is_stale());
        std::fs::remove_dir(dir.join("w/secret")).unwrap();
        assert!(g.is_stale(), "a vanished entry makes the guard stale");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
