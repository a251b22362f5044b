//! Carve-outs follow the object, not the name.
//!
//! A carve-out is a mount on a path decided when a process starts. A confined process cannot
//! rename the protected name itself (it is a mount point in its namespace: EBUSY), but it can
//! rename a writable *ancestor* (or a process under another policy, for which the name is no
//! carve-out, can rename the object itself) and leave a decoy at the old path: the next spawn
//! would then protect the decoy while the real object is writable (or readable) under its new
//! name. Mounts in namespaces that already exist follow the dentry through such renames; only
//! the plans of later spawns are at risk.
//!
//! So the server remembers every object it has protected, by an `O_PATH` descriptor (which
//! follows the object through renames, whoever does them, and does not keep it from being
//! deleted), with the strictest protection it got and the policy paths that named it. At
//! every carve-out computation (each spawn, each filesystem-API guard), an object that is no
//! longer where it was protected (`/proc/self/fd/N` tells where it is now), or that a path of
//! this policy named before but no longer names, is protected again at its current path,
//! unless the policy grants no more than that there anyway or names that exact path itself.
//! Objects that were deleted are forgotten.
//!
//! The memory is the server's: a server that was restarted, or another server, does not know
//! what this one protected (README, security model).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// At most this many objects are followed (one descriptor each); beyond, new carve-outs fail
/// closed rather than be protected by name only.
const MAX_TRACKED: usize = 16_384;

/// How an object is protected, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protection {
    /// A symlink that must not be replaced (a mount point on the link itself).
    Pinned,
    /// Read-only.
    ReadOnly,
    /// Hidden.
    Hidden,
}

/// One carve-out of a plan: the object's path now (no symlinks) and the policy path that
/// named it.
#[derive(Debug, Clone)]
pub struct Carved {
    /// The path the mount goes on.
    pub real: PathBuf,
    /// The policy entry's (lexical) path.
    pub name: PathBuf,
    /// What the mount does.
    pub protection: Protection,
}

struct Tracked {
    /// `O_PATH | O_NOFOLLOW`: the object itself, wherever it moves.
    fd: File,
    dev: u64,
    ino: u64,
    protection: Protection,
    /// Where it was last protected by name.
    origin: PathBuf,
    /// The policy paths that named it.
    names: Vec<PathBuf>,
}

static TRACKED: Mutex<Vec<Tracked>> = Mutex::new(Vec::new());

/// Where the object behind `fd` is now; `None` when it was deleted.
fn current_path(t: &Tracked) -> Option<PathBuf> {
    let md = t.fd.metadata().ok()?;
    if md.nlink() == 0 {
        return None;
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{}", t.fd.as_raw_fd())).ok()?;
    if !link.is_absolute() || link.as_os_str().as_bytes().ends_with(b" (deleted)") {
        return None;
    }
    Some(link)
}

fn open_object(path: &Path) -> Option<(File, u64, u64)> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let md = f.metadata().ok()?;
    Some((f, md.dev(), md.ino()))
}

/// Records the carve-outs of a plan and returns the protections that must be added: each
/// earlier-protected object that moved away from where it was protected, or that one of
/// `carved`'s names protected before, at its current path, when `needs(path, protection)`
/// says the policy would otherwise allow more there. Fails (with what to tell the client)
/// when no more objects can be followed.
pub fn follow(
    carved: &[Carved],
    needs: &dyn Fn(&Path, Protection) -> bool,
) -> Result<Vec<(Protection, PathBuf)>, String> {
    let mut tracked = TRACKED.lock().unwrap_or_else(|p| p.into_inner());
    let mut current: Vec<(u64, u64)> = Vec::with_capacity(carved.len());
    for c in carved {
        let Ok(md) = std::fs::symlink_metadata(&c.real) else {
            continue;
        };
        let id = (md.dev(), md.ino());
        current.push(id);
        match tracked.iter_mut().find(|t| (t.dev, t.ino) == id) {
            Some(t) => {
                t.protection = t.protection.max(c.protection);
                t.origin = c.real.clone();
                if !t.names.contains(&c.name) {
                    t.names.push(c.name.clone());
                }
            }
            None => {
                if tracked.len() >= MAX_TRACKED {
                    tracked.retain(|t| current_path(t).is_some());
                }
                if tracked.len() >= MAX_TRACKED {
                    return Err(format!(
                        "following more than {MAX_TRACKED} protected objects across renames (restart the server to forget those of earlier workspaces)"
                    ));
                }
                // Opened after the stat: only keep it when it is the object that was stat'ed.
                if let Some((fd, dev, ino)) = open_object(&c.real)
                    && (dev, ino) == id
                {
                    tracked.push(Tracked {
                        fd,
                        dev,
                        ino,
                        protection: c.protection,
                        origin: c.real.clone(),
                        names: vec![c.name.clone()],
                    });
                }
            }
        }
    }
    let mut extra = Vec::new();
    tracked.retain(|t| {
        let Some(now) = current_path(t) else {
            return false;
        };
        if current.contains(&(t.dev, t.ino)) {
            return true;
        }
        let moved = now != t.origin;
        let named = carved.iter().any(|c| t.names.contains(&c.name));
        if (moved || named) && needs(&now, t.protection) {
            extra.push((t.protection, now));
        }
        true
    });
    Ok(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_object_is_found_where_it_went_and_forgotten_when_deleted() {
        let dir = std::env::temp_dir().join(format!("stockade-tracking-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("ws/.git")).unwrap();
        let dir = dir.canonicalize().unwrap();
        let git = dir.join("ws/.git");
        let carved = vec![Carved {
            real: git.clone(),
            name: git.clone(),
            protection: Protection::ReadOnly,
        }];
        let all = |_: &Path, _| true;
        // Other tests share the registry: only look at this test's objects.
        let mine = |extra: Vec<(Protection, PathBuf)>| -> Vec<(Protection, PathBuf)> {
            extra
                .into_iter()
                .filter(|(_, p)| p.starts_with(&dir))
                .collect()
        };
        assert_eq!(mine(follow(&carved, &all).unwrap()), vec![]);
        // The workspace renamed and a decoy left at the old name.
        std::fs::rename(dir.join("ws"), dir.join("moved")).unwrap();
        std::fs::create_dir_all(&git).unwrap();
        let extra = mine(follow(&carved, &all).unwrap());
        assert_eq!(extra, vec![(Protection::ReadOnly, dir.join("moved/.git"))]);
        // Not needed where the policy allows no more anyway.
        assert_eq!(mine(follow(&carved, &|_, _| false).unwrap()), vec![]);
        // A plan that does not name it still protects it: it moved.
        assert_eq!(mine(follow(&[], &all).unwrap()).len(), 1);
        // Deleted: forgotten.
        std::fs::remove_dir_all(dir.join("moved")).unwrap();
        assert_eq!(mine(follow(&carved, &all).unwrap()), vec![]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
