//! Opening a path without following any symlink in it, so that what the server checks and
//! what it then uses (creates in, builds a Landlock rule from, mounts on) is one object: a
//! confined process that swaps a component for a symlink between the two cannot redirect
//! the server elsewhere.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Opens `path` (absolute) with `flags` (`O_CLOEXEC` is added), refusing a symlink in any
/// component, the last one included (ELOOP). `openat2(RESOLVE_NO_SYMLINKS)` where the kernel
/// has it (5.6), otherwise one `openat(O_NOFOLLOW)` per component.
pub fn open_no_symlinks(path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    if !path.is_absolute() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: open_how is plain data; all-zero is valid (it is non-exhaustive, so it is
    // built field by field).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 with a valid C string and a properly sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd >= 0 {
        // SAFETY: a new descriptor this call owns.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    open_by_components(path, flags)
}

/// The fallback of [`open_no_symlinks`]: one component at a time, each `O_NOFOLLOW`.
fn open_by_components(path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let open = |dir: i32, name: &std::ffi::CStr, flags: i32| -> std::io::Result<OwnedFd> {
        // SAFETY: openat on a valid directory fd (or AT_FDCWD) and C string.
        let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new descriptor this call owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let names: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut cur = open(
        libc::AT_FDCWD,
        c"/",
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    )?;
    for (i, name) in names.iter().enumerate() {
        let name = CString::new(name.as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let last = i + 1 == names.len();
        let f = if last {
            flags | libc::O_NOFOLLOW
        } else {
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW
        };
        cur = open(cur.as_raw_fd(), &name, f)?;
    }
    if names.is_empty() {
        return open(libc::AT_FDCWD, c"/", flags | libc::O_NOFOLLOW);
    }
    Ok(cur)
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
