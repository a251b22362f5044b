//! The server's own processes in `/proc`, which fs calls never reach.
//!
//! An fs call runs on a thread of the server, so for it `/proc/self` is the server, and the
//! kernel lets any thread of a process read every `/proc` entry of its own thread group
//! (`environ`, `mem`, `fd/`, …) whatever its Landlock domain or capabilities: the ptrace
//! checks are skipped within a thread group. A process under the same policy has none of
//! that (its `/proc/self` is itself; the server is outside its Landlock domain). So every
//! walk refuses, by what the kernel resolved rather than by the text of the path:
//!
//! - `/proc/<n>` of a procfs when task `n` belongs to the server's thread group, or is a
//!   child of it (the zygote) or a grandchild (a keeper, idle or not): their memory and
//!   environment are the server's. `/proc/self` and `/proc/thread-self` are symlinks the
//!   walk reads and splices, so they arrive here as the server's pid; `/dev/fd` is a symlink
//!   to `/proc/self/fd`.
//! - a piece of a procfs mounted anywhere but at its root (a bind mount of `/proc/<n>` or of
//!   a file in it): whose process it shows cannot be told, so it is refused.
//!
//! Targets are further down the tree (children of keepers): `/proc/<pid>` of a process is
//! left to the kernel, which answers the worker as it answers a process under the policy
//! (the worker holds no capability and has its own Landlock domain).

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode};
use nix::sys::statfs::{PROC_SUPER_MAGIC, fstatfs};

/// The inode number of every procfs root directory.
const PROC_ROOT_INO: u64 = 1;

fn on_procfs(fd: impl AsFd) -> bool {
    // Unknown counts as procfs: the callers then look closer or refuse.
    fstatfs(fd).map_or(true, |s| s.filesystem_type() == PROC_SUPER_MAGIC)
}

fn is_number(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b.len() <= 10 && b.iter().all(u8::is_ascii_digit)
}

fn open_path(dir: impl AsFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// True when the walk must not enter `child` (named `name` in `parent`): it belongs to the
/// server, or it is a piece of a procfs mounted away from its root. `child` is the object
/// already opened (`O_PATH`), when the caller has it.
pub fn is_servers(
    parent: BorrowedFd<'_>,
    parent_st: &FileStat,
    name: &OsStr,
    child: Option<BorrowedFd<'_>>,
    child_st: &FileStat,
) -> bool {
    let opened;
    let child = match child {
        Some(c) => c,
        None if child_st.st_dev != parent_st.st_dev || is_number(name) => {
            match open_path(parent, name) {
                Ok(fd) => {
                    opened = fd;
                    opened.as_fd()
                }
                // Gone meanwhile: nothing to protect (the caller's next step fails).
                Err(_) => return false,
            }
        }
        None => return false,
    };
    if child_st.st_dev != parent_st.st_dev && child_st.st_ino != PROC_ROOT_INO && on_procfs(child) {
        return true;
    }
    if !is_number(name) || parent_st.st_ino != PROC_ROOT_INO || !on_procfs(parent) {
        return false;
    }
    servers_task(parent, child)
}

/// `/proc/<n>` (opened as `task`) of the procfs whose root is `proc`: true when the task is
/// the server's, its child's or its grandchild's, or when that cannot be told.
fn servers_task(proc: BorrowedFd<'_>, task: BorrowedFd<'_>) -> bool {
    // The server's thread group as this procfs numbers it; a procfs of a pid namespace the
    // server is not in shows none of its processes.
    let me = match readlinkat(proc, OsStr::new("self")) {
        Ok(s) => match s.to_str().and_then(|s| s.parse::<u32>().ok()) {
            Some(n) => n,
            None => return true,
        },
        Err(Errno::ENOENT) => return false,
        Err(_) => return true,
    };
    let Some((tgid, ppid)) = ids(task) else {
        return true;
    };
    if tgid == me || ppid == me {
        return true;
    }
    let Ok(parent) = open_path(proc, OsStr::new(&ppid.to_string())) else {
        // The parent is gone: the task was reparented meanwhile; look again.
        return ids(task).is_none_or(|(_, p)| p == me || p != ppid);
    };
    ids(parent.as_fd()).is_none_or(|(_, grandparent)| grandparent == me)
}

/// `(Tgid, PPid)` from the task's `status` (readable for every task without ptrace rights).
fn ids(task: BorrowedFd<'_>) -> Option<(u32, u32)> {
    let fd = openat(
        task,
        OsStr::new("status"),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .ok()?;
    let mut text = String::new();
    std::fs::File::from(fd).read_to_string(&mut text).ok()?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    Some((field("Tgid:")?, field("PPid:")?))
}
