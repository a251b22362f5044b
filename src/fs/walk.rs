//! Path resolution the way the kernel does it, one component at a time, so that the real
//! location of every object is known without a second lookup that a concurrent rename or
//! symlink swap could change.
//!
//! Each component is opened with `O_PATH | O_NOFOLLOW` relative to the directory fd before
//! it; symlinks are read through the fd that was opened (never looked up again) and spliced
//! into the remaining path. The result holds an fd of the containing directory, so the
//! operation that follows acts on exactly the directory that was checked.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};

use super::FsError;
use super::guard::{Guard, Need};
use super::procfs;

/// Symlinks followed in one resolution before ELOOP, as the kernel's limit.
const MAX_LINKS: usize = 40;

/// A resolved path: the directory that contains the final component, and the final object
/// when it exists.
#[derive(Debug)]
pub struct Located {
    /// `O_PATH` fd of the containing directory.
    pub dir: OwnedFd,
    /// Its real path (no symlinks).
    pub dir_path: PathBuf,
    /// The final component (`None` only for `/`).
    pub name: Option<OsString>,
    /// `O_PATH | O_NOFOLLOW` fd and status of the final object, when it exists.
    pub leaf: Option<(OwnedFd, FileStat)>,
}

impl Located {
    /// The real path of the final object.
    pub fn real(&self) -> PathBuf {
        match &self.name {
            Some(n) => self.dir_path.join(n),
            None => self.dir_path.clone(),
        }
    }

    /// The status of the final object, or ENOENT.
    pub fn existing(&self) -> Result<&(OwnedFd, FileStat), FsError> {
        self.leaf.as_ref().ok_or(FsError::Io(Errno::ENOENT))
    }

    /// The final component, or an error for `/`.
    pub fn name(&self) -> Result<&OsStr, FsError> {
        self.name.as_deref().ok_or(FsError::Io(Errno::EBUSY))
    }
}

/// The file type bits of a status.
pub fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn open_path(dir: impl AsFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Resolves `path` (absolute). `follow_last`: resolve a final symlink too (as `open`
/// does); otherwise the final component is located, not followed (as `unlink` does).
/// Directories a process under `guard`'s policy could not traverse (hidden carve-outs)
/// are refused as a denial of `need`.
pub fn locate(
    path: &Path,
    follow_last: bool,
    guard: &Guard,
    need: Need,
) -> Result<Located, FsError> {
    let root = || open_path(nix::fcntl::AT_FDCWD, OsStr::new("/"));
    let mut dir = root()?;
    // The status of `dir`, for the checks of each step into it (see `procfs`).
    let mut dir_st = fstat(&dir)?;
    let mut dir_path = PathBuf::from("/");
    let mut pending: VecDeque<OsString> = VecDeque::new();
    push_components(&mut pending, path, false);
    let mut links = 0;
    // Denials name the path the client asked for.
    let denied = || FsError::Denied {
        need,
        path: path.to_path_buf(),
    };
    loop {
        // `.` stays, `..` goes to the physical parent; a path that ends on either names the
        // directory we are in (re-located below by its own name).
        while pending.front().is_some_and(|c| c == "." || c == "..") {
            if pending.pop_front().is_some_and(|c| c == "..") && dir_path.pop() {
                dir = openat(
                    &dir,
                    OsStr::new(".."),
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                dir_st = fstat(&dir)?;
            }
        }
        let Some(name) = pending.pop_front() else {
            // The path names a directory we are in (`/`, or it ended with `..`).
            return finish_at_dir(dir, dir_path, guard);
        };
        let last = pending.is_empty();
        let fd = match open_path(&dir, &name) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if last => {
                return verified(
                    Located {
                        dir,
                        dir_path,
                        name: Some(name),
                        leaf: None,
                    },
                    guard,
                );
            }
            Err(e) => return Err(e.into()),
        };
        let st = fstat(&fd)?;
        // The server's own process is never reached, whatever the policy (see `procfs`).
        if procfs::is_servers(dir.as_fd(), &dir_st, &name, Some(fd.as_fd()), &st) {
            return Err(denied());
        }
        if kind(&st) == SFlag::S_IFLNK && (!last || follow_last) {
            links += 1;
            if links > MAX_LINKS {
                return Err(Errno::ELOOP.into());
            }
            let target = readlinkat(&fd, OsStr::new(""))?;
            let target = Path::new(&target);
            if target.is_absolute() {
                dir = root()?;
                dir_st = fstat(&dir)?;
                dir_path = PathBuf::from("/");
            }
            push_components(&mut pending, target, true);
            continue;
        }
        if last {
            return verified(
                Located {
                    dir,
                    dir_path,
                    name: Some(name),
                    leaf: Some((fd, st)),
                },
                guard,
            );
        }
        if kind(&st) != SFlag::S_IFDIR {
            return Err(Errno::ENOTDIR.into());
        }
        dir = fd;
        dir_st = st;
        dir_path.push(&name);
        if guard.is_hidden(&dir_path) {
            return Err(denied());
        }
    }
}

/// Adds the components of `path` to the front (`front`: a symlink target spliced in before
/// what remains) or the back of the queue. Split by hand, not with `Path::components`, which
/// drops inner `.` and a trailing `/`: for the kernel `file/.` and `file/` require `file` to
/// be a directory, so both are kept as a `.` component.
fn push_components(pending: &mut VecDeque<OsString>, path: &Path, front: bool) {
    let bytes = path.as_os_str().as_bytes();
    let mut comps: Vec<OsString> = bytes
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .map(|c| OsStr::from_bytes(c).to_os_string())
        .collect();
    if bytes.len() > 1 && bytes.ends_with(b"/") && !comps.is_empty() {
        comps.push(OsString::from("."));
    }
    if front {
        for c in comps.into_iter().rev() {
            pending.push_front(c);
        }
    } else {
        pending.extend(comps);
    }
}

/// The path resolved to the directory `dir` itself: locate it within its parent.
fn finish_at_dir(dir: OwnedFd, dir_path: PathBuf, guard: &Guard) -> Result<Located, FsError> {
    let st = fstat(&dir)?;
    let Some(name) = dir_path.file_name().map(OsStr::to_os_string) else {
        // `/` has no parent: it is its own container.
        let again = dir.try_clone().map_err(|e| FsError::Other(e.to_string()))?;
        return Ok(Located {
            dir,
            dir_path,
            name: None,
            leaf: Some((again, st)),
        });
    };
    let parent = openat(
        &dir,
        OsStr::new(".."),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut parent_path = dir_path;
    parent_path.pop();
    verified(
        Located {
            dir: parent,
            dir_path: parent_path,
            name: Some(name),
            leaf: Some((dir, st)),
        },
        guard,
    )
}

/// Confirms that the containing directory still is where the walk believes it is (a
/// concurrent rename of a parent would otherwise make the checked path stale).
fn verified(loc: Located, guard: &Guard) -> Result<Located, FsError> {
    if guard.is_unrestricted() {
        return Ok(loc);
    }
    let link = format!("/proc/thread-self/fd/{}", loc.dir.as_raw_fd());
    let actual = std::fs::read_link(&link).map_err(|e| {
        FsError::Other(format!(
            "cannot confirm where {} is ({link}: {e}); is /proc mounted?",
            loc.dir_path.display()
        ))
    })?;
    if actual.as_os_str().as_bytes() != loc.dir_path.as_os_str().as_bytes() {
        return Err(FsError::Other(format!(
            "{} moved while the path was being resolved",
            loc.dir_path.display()
        )));
    }
    Ok(loc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_the_kernel() {
        let base = std::env::temp_dir().join(format!("stockade-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::fs::write(base.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("a/b", base.join("l")).unwrap();
        std::os::unix::fs::symlink(base.join("a/b/f"), base.join("abs")).unwrap();
        let base = base.canonicalize().unwrap();
        let g = Guard::unrestricted();
        let loc = locate(&base.join("l/f"), true, &g, Need::Read).unwrap();
        assert_eq!(loc.real(), base.join("a/b/f"));
        // `l/..` is the physical parent of a/b, not `base`.
        let loc = locate(&base.join("l/../b/f"), true, &g, Need::Read).unwrap();
        assert_eq!(loc.real(), base.join("a/b/f"));
        let loc = locate(&base.join("abs"), false, &g, Need::Read).unwrap();
        assert_eq!(loc.real(), base.join("abs"));
        assert_eq!(kind(&loc.existing().unwrap().1), SFlag::S_IFLNK);
        let loc = locate(&base.join("abs"), true, &g, Need::Read).unwrap();
        assert_eq!(loc.real(), base.join("a/b/f"));
        let loc = locate(&base.join("a/b/.."), true, &g, Need::Read).unwrap();
        assert_eq!(loc.real(), base.join("a"));
        let loc = locate(&base.join("a/missing"), true, &g, Need::Read).unwrap();
        assert!(loc.leaf.is_none());
        assert!(matches!(
            locate(&base.join("a/missing/x"), true, &g, Need::Read),
            Err(FsError::Io(Errno::ENOENT))
        ));
        // `file/.` and `file/` need `file` to be a directory, as for the kernel.
        for p in ["a/b/f/.", "a/b/f/"] {
            let mut s = base.as_os_str().to_os_string();
            s.push("/");
            s.push(p);
            assert!(
                matches!(
                    locate(Path::new(&s), true, &g, Need::Read),
                    Err(FsError::Io(Errno::ENOTDIR))
                ),
                "{p}"
            );
        }
        let loc = locate(&base.join("l/."), true, &g, Need::Read).unwrap();
        assert_eq!(loc.real(), base.join("a/b"));
        let loc = locate(Path::new("/"), true, &g, Need::Read).unwrap();
        assert_eq!(loc.real(), PathBuf::from("/"));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
