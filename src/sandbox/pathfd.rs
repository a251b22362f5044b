//! Opening a path without following any symlink in it, so that what the server checks and
//! what it then uses (creates in, builds a Landlock rule from, mounts on) is one object: a
//! confined process that swaps a component for a symlink between the two cannot redirect
//! the server elsewhere.

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};

/// `flags` (libc's `O_*`) plus `O_CLOEXEC` and `O_NOFOLLOW`.
fn oflags(flags: i32) -> OFlags {
    OFlags::from_bits_retain(flags as u32) | OFlags::CLOEXEC | OFlags::NOFOLLOW
}

/// Opens `path` (absolute) with `flags` (`O_CLOEXEC` is added), refusing a symlink in any
/// component, the last one included (ELOOP). `openat2(RESOLVE_NO_SYMLINKS)` where the kernel
/// has it (5.6), otherwise one `openat(O_NOFOLLOW)` per component.
pub fn open_no_symlinks(path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    if !path.is_absolute() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(CWD, path, oflags(flags), Mode::empty(), resolve) {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::NOSYS) => open_by_components(path, flags),
        Err(e) => Err(e.into()),
    }
}

/// The fallback of [`open_no_symlinks`]: one component at a time, each `O_NOFOLLOW`.
fn open_by_components(path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    let walk = oflags(libc::O_PATH | libc::O_DIRECTORY);
    let names: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let Some((last, parents)) = names.split_last() else {
        return Ok(rustix::fs::openat(CWD, "/", oflags(flags), Mode::empty())?);
    };
    let mut cur = rustix::fs::openat(CWD, "/", walk, Mode::empty())?;
    for name in parents {
        cur = rustix::fs::openat(&cur, *name, walk, Mode::empty())?;
    }
    Ok(rustix::fs::openat(
        &cur,
        *last,
        oflags(flags),
        Mode::empty(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_anywhere_in_the_path_is_refused() {
        let dir = std::env::temp_dir().join(format!("stockade-pathfd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("real/sub")).unwrap();
        let dir = dir.canonicalize().unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        assert!(open_no_symlinks(&dir.join("real/sub"), flags).is_ok());
        assert!(open_by_components(&dir.join("real/sub"), flags).is_ok());
        let e = open_no_symlinks(&dir.join("link/sub"), flags).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        for p in [dir.join("link/sub"), dir.join("link")] {
            assert!(open_no_symlinks(&p, flags).is_err(), "{p:?}");
            assert!(open_by_components(&p, flags).is_err(), "{p:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
