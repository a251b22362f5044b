//! Placeholders: missing protected names that a process must not create.
//!
//! Landlock cannot forbid one name inside a writable tree, and a mount needs something to
//! mount on. So when a protected path is missing (`.agents` or `.codex` at the top of a
//! writable root, a 6.3 `read` or `none` entry without `missing_path_behavior: "skip"`) and
//! the policy would let the process create it, the server creates an empty directory there
//! (mode 0444, the *placeholder*), which then becomes a read-only (or hidden) mount point in
//! the process's namespace like any existing carve-out: `mkdir` answers EEXIST, writing into
//! it EROFS, removing or renaming it EBUSY. When the path's parent is missing too, the first
//! missing component is the placeholder (nothing below a path that does not exist exists).
//!
//! Its life: every spawn that relies on a placeholder holds a [`Lease`] until its process tree
//! is gone, and a kept mount namespace (see [`super::mountns`]) holds the leases of the
//! process that built it while it is kept. Each lease holds a shared `flock` on the directory,
//! across servers too (another stockade server relying on the same path takes its own). When
//! the last lease of this server goes, the server removes the directory, but only when it
//! gets the exclusive lock (no other server relies on it), it is still at its path, and it is
//! still an empty mode-0444 directory (`rmdir` cannot remove anything a process put in it).
//!
//! Races: the parent is opened without following any symlink (a process swapping a component
//! for a link cannot make the server create a directory elsewhere), the directory is created
//! and opened relative to that parent (`O_NOFOLLOW`: a link put there is not followed, it is
//! then protected as an existing symlink), and the lock is only trusted once the object is
//! seen still at its name. A placeholder left behind by a server that died is recognised by
//! its shape (an empty mode-0444 directory) and adopted: protected, then removed when its
//! last user is done.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use super::pathfd::open_no_symlinks;
use super::policy::{Access, FsEntry, resolve};

/// The mode of a placeholder directory (also how a leftover one is recognised).
pub const PLACEHOLDER_MODE: u32 = 0o444;

/// How often an acquisition retries when the directory is being removed or replaced.
const ATTEMPTS: usize = 1000;

/// Keeps a placeholder in place (and locked) while it lives.
#[derive(Clone)]
pub struct Lease(Arc<Placeholder>);

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({})", self.0.path.display())
    }
}

impl Lease {
    /// The placeholder's path.
    pub fn path(&self) -> &Path {
        &self.0.path
    }
}

struct Placeholder {
    path: PathBuf,
    /// The parent directory, opened without symlinks when the placeholder was acquired.
    parent: OwnedFd,
    name: CString,
    /// The directory itself (`O_RDONLY`), holding the shared lock.
    dir: File,
    dev: u64,
    ino: u64,
}

/// This server's placeholders in use, by path.
static REGISTRY: Mutex<Vec<(PathBuf, Weak<Placeholder>)>> = Mutex::new(Vec::new());

fn stat_at(parent: &OwnedFd, name: &CString) -> Option<(u64, u64)> {
    rustix::fs::statat(parent, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
        .ok()
        .map(|st| (st.st_dev, st.st_ino))
}

/// True when the directory behind `dir` was deleted.
fn parent_gone(dir: &OwnedFd) -> bool {
    rustix::fs::fstat(dir).map_or(true, |st| st.st_nlink == 0)
}

fn flock(f: &File, op: i32) -> bool {
    let op = if op == libc::LOCK_EX {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    rustix::fs::flock(f, op).is_ok()
}

/// An empty directory of exactly [`PLACEHOLDER_MODE`]: what stockade creates.
fn looks_like_placeholder(dir: &File) -> bool {
    let Ok(md) = dir.metadata() else {
        return false;
    };
    md.is_dir()
        && md.permissions().mode() & 0o7777 == PLACEHOLDER_MODE
        && std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
            .is_ok_and(|mut d| d.next().is_none())
}

impl Drop for Placeholder {
    fn drop(&mut self) {
        let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        reg.retain(|(_, w)| w.strong_count() > 0);
        // Another user (here or in another server) holds a shared lock: it stays.
        if !flock(&self.dir, libc::LOCK_EX) {
            return;
        }
        if stat_at(&self.parent, &self.name) != Some((self.dev, self.ino))
            || !looks_like_placeholder(&self.dir)
        {
            return;
        }
        // AT_REMOVEDIR only ever removes an empty directory.
        let _ = rustix::fs::unlinkat(&self.parent, self.name.as_c_str(), AtFlags::REMOVEDIR);
    }
}

/// Where a placeholder must go for `e`, if anywhere: `e` is a `read` or `none` entry that
/// must be protected when missing, it is missing, and the policy would let a process create
/// its first missing component. Returns that component's real path (its parent resolved).
pub fn needed_for(entries: &[FsEntry], e: &FsEntry) -> Option<PathBuf> {
    if e.access == Access::Write || e.skip_if_missing || std::fs::symlink_metadata(&e.path).is_ok()
    {
        return None;
    }
    // The deepest existing ancestor, and the component below it.
    let mut cur = e.path.clone();
    let mut below: Option<OsString> = None;
    while std::fs::symlink_metadata(&cur).is_err() {
        below = cur.file_name().map(|n| n.to_os_string());
        if !cur.pop() {
            return None;
        }
    }
    let real_parent = std::fs::canonicalize(&cur).ok()?;
    // What a process may do there, from the entries as the kernel sees them.
    let real: Vec<FsEntry> = entries
        .iter()
        .filter_map(|o| {
            Some(FsEntry {
                path: std::fs::canonicalize(&o.path).ok()?,
                ..o.clone()
            })
        })
        .collect();
    // The deepest existing ancestor is the placeholder of this entry already (made for a
    // deeper missing path).
    if let Some(up) = real_parent.parent()
        && resolve(&real, up) == Access::Write
        && File::open(&real_parent).is_ok_and(|d| looks_like_placeholder(&d))
    {
        return Some(real_parent);
    }
    if resolve(&real, &real_parent) != Access::Write {
        return None;
    }
    Some(real_parent.join(below?))
}

/// Creates (or adopts) the placeholders `entries` need and returns their leases; a protected
/// path that exists and looks like a placeholder (made by this or another server) is leased
/// too, so that nobody removes it while this process relies on it. An error names a
/// placeholder that cannot be made (the request then fails closed).
pub fn ensure(entries: &[FsEntry]) -> Result<Vec<Lease>, String> {
    let mut leases: Vec<Lease> = Vec::new();
    for e in entries {
        if e.access == Access::Write || e.skip_if_missing {
            continue;
        }
        let path = match needed_for(entries, e) {
            Some(p) => p,
            // Existing: lease it only when it may be a placeholder (cheap check first).
            None => match std::fs::symlink_metadata(&e.path) {
                Ok(m) if m.is_dir() && m.permissions().mode() & 0o7777 == PLACEHOLDER_MODE => {
                    match std::fs::canonicalize(&e.path) {
                        Ok(p) => p,
                        Err(_) => continue,
                    }
                }
                _ => continue,
            },
        };
        if leases.iter().any(|l| l.path() == path) {
            continue;
        }
        if let Some(l) = acquire(&path)? {
            leases.push(l);
        }
    }
    Ok(leases)
}

/// The lease of the placeholder at `path` (real): this server's, or one made (or adopted)
/// now. `None` when something that is not a placeholder is there (it is protected as the
/// existing object it is).
fn acquire(path: &Path) -> Result<Option<Lease>, String> {
    let fail = |what: &str, e: std::io::Error| {
        format!(
            "a placeholder at {} to protect it from being created ({what}: {e})",
            path.display()
        )
    };
    let (Some(parent_path), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(None);
    };
    let name = CString::new(name.as_bytes()).map_err(|_| format!("{}: NUL", path.display()))?;
    for _ in 0..ATTEMPTS {
        let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        // Still at that path (a placeholder whose parent was renamed is no longer there).
        let now = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if let Some(p) = reg
            .iter()
            .filter(|(p, _)| p == path)
            .filter_map(|(_, w)| w.upgrade())
            .find(|p| now == Some((p.dev, p.ino)))
        {
            return Ok(Some(Lease(p)));
        }
        let parent = open_no_symlinks(parent_path, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| fail("opening its directory without symlinks", e))?;
        let made = rustix::fs::mkdirat(
            &parent,
            name.as_c_str(),
            Mode::from_raw_mode(PLACEHOLDER_MODE as libc::mode_t),
        );
        let created = made.is_ok();
        if let Err(errno) = made {
            let e = std::io::Error::from(errno);
            match e.raw_os_error() {
                Some(libc::EEXIST) => {}
                // The directory was removed meanwhile: look again.
                Some(libc::ENOENT) if parent_gone(&parent) => continue,
                // Nobody can create anything there (a read-only or pseudo filesystem such as
                // `/proc`, or a directory the server's user may not write; a process has no
                // more rights than the server): nothing to hold.
                Some(libc::EROFS | libc::ENOENT | libc::EPERM | libc::EACCES) => return Ok(None),
                _ => return Err(fail("creating it", e)),
            }
        }
        let opened = rustix::fs::openat(
            &parent,
            name.as_c_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let fd = match opened {
            Ok(fd) => fd,
            Err(errno) => {
                let e = std::io::Error::from(errno);
                match e.raw_os_error() {
                    // Removed meanwhile: again.
                    Some(libc::ENOENT) => continue,
                    // A symlink or a file: not a placeholder, protected as what it is.
                    Some(libc::ELOOP) | Some(libc::ENOTDIR) if !created => return Ok(None),
                    _ => return Err(fail("opening it", e)),
                }
            }
        };
        let dir = File::from(fd);
        if created {
            // The umask may have taken bits away; the mode is also the mark.
            let _ = dir.set_permissions(std::fs::Permissions::from_mode(PLACEHOLDER_MODE));
        }
        if !looks_like_placeholder(&dir) {
            // A directory someone else made (or filled): an ordinary existing object.
            return Ok(None);
        }
        let md = dir.metadata().map_err(|e| fail("examining it", e))?;
        // Another server is removing it (exclusive lock): again, once it is gone.
        if !flock(&dir, libc::LOCK_SH) {
            drop(reg);
            std::thread::yield_now();
            continue;
        }
        if stat_at(&parent, &name) != Some((md.dev(), md.ino())) {
            continue;
        }
        let p = Arc::new(Placeholder {
            path: path.to_path_buf(),
            parent,
            name: name.clone(),
            dir,
            dev: md.dev(),
            ino: md.ino(),
        });
        reg.retain(|(_, w)| w.strong_count() > 0);
        reg.push((path.to_path_buf(), Arc::downgrade(&p)));
        return Ok(Some(Lease(p)));
    }
    Err(format!(
        "a placeholder at {} to protect it from being created (it stays locked or keeps being replaced; a process holding an exclusive flock on it, or replacing it, must stop)",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &Path, access: Access) -> FsEntry {
        FsEntry {
            path: path.to_path_buf(),
            access,
            origin: "t",
            skip_if_missing: false,
        }
    }

    #[test]
    fn a_placeholder_lives_as_long_as_its_last_lease() {
        let dir = std::env::temp_dir().join(format!("stockade-ph-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("ws")).unwrap();
        let dir = dir.canonicalize().unwrap();
        let ws = dir.join("ws");
        let entries = vec![
            entry(&ws, Access::Write),
            entry(&ws.join(".codex"), Access::Read),
            entry(&ws.join("a/b"), Access::None),
            // Inside a read-only part: nothing can create it, nothing to hold.
            entry(&dir.join("ro"), Access::Read),
            entry(&dir.join("ro/x"), Access::None),
        ];
        let first = ensure(&entries).unwrap();
        let paths: Vec<&Path> = first.iter().map(|l| l.path()).collect();
        assert_eq!(
            paths,
            vec![ws.join(".codex").as_path(), ws.join("a").as_path()]
        );
        let md = std::fs::symlink_metadata(ws.join(".codex")).unwrap();
        assert!(md.is_dir());
        assert_eq!(md.permissions().mode() & 0o7777, PLACEHOLDER_MODE);
        // A second user shares them.
        let second = ensure(&entries).unwrap();
        assert_eq!(second.len(), 2);
        drop(first);
        assert!(ws.join(".codex").exists(), "removed while still leased");
        drop(second);
        assert!(!ws.join(".codex").exists());
        assert!(!ws.join("a").exists());
        // A leftover (an empty mode-0444 directory) is adopted and removed; a real one is not.
        std::fs::create_dir(ws.join(".codex")).unwrap();
        std::fs::set_permissions(ws.join(".codex"), std::fs::Permissions::from_mode(0o444))
            .unwrap();
        std::fs::create_dir_all(ws.join("a/b")).unwrap();
        let third = ensure(&entries).unwrap();
        assert_eq!(third.len(), 1);
        drop(third);
        assert!(!ws.join(".codex").exists());
        assert!(ws.join("a/b").exists());
        // A symlink at the name is no placeholder (protected as a symlink elsewhere).
        std::os::unix::fs::symlink(&dir, ws.join(".codex")).unwrap();
        assert!(ensure(&entries).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
