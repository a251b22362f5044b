//! Policy → Landlock ruleset, built in the parent with raw syscalls. The child only calls
//! `landlock_restrict_self` on the ruleset fd.
//!
//! Raw syscalls rather than the `landlock` crate's builder: the crate's best-effort mode can
//! silently drop rights or paths, and stockade must instead know, per request, exactly what
//! was enforced (fail closed, report always).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::policy::{Access, FsEntry};

/// Filesystem access rights (bit numbers from the kernel UAPI).
pub mod fs {
    /// Execute a file.
    pub const EXECUTE: u64 = 1 << 0;
    /// Open a file for writing.
    pub const WRITE_FILE: u64 = 1 << 1;
    /// Open a file for reading.
    pub const READ_FILE: u64 = 1 << 2;
    /// List a directory.
    pub const READ_DIR: u64 = 1 << 3;
    /// Remove a directory.
    pub const REMOVE_DIR: u64 = 1 << 4;
    /// Unlink a file.
    pub const REMOVE_FILE: u64 = 1 << 5;
    /// Create a character device.
    pub const MAKE_CHAR: u64 = 1 << 6;
    /// Create a directory.
    pub const MAKE_DIR: u64 = 1 << 7;
    /// Create a regular file.
    pub const MAKE_REG: u64 = 1 << 8;
    /// Create a socket file.
    pub const MAKE_SOCK: u64 = 1 << 9;
    /// Create a FIFO.
    pub const MAKE_FIFO: u64 = 1 << 10;
    /// Create a block device.
    pub const MAKE_BLOCK: u64 = 1 << 11;
    /// Create a symlink.
    pub const MAKE_SYM: u64 = 1 << 12;
    /// Link or rename across directories (ABI 2).
    pub const REFER: u64 = 1 << 13;
    /// Truncate a file (ABI 3).
    pub const TRUNCATE: u64 = 1 << 14;
    /// ioctl on a device (ABI 5).
    pub const IOCTL_DEV: u64 = 1 << 15;
}

/// Rights that make sense on a non-directory.
const FILE_RIGHTS: u64 =
    fs::EXECUTE | fs::WRITE_FILE | fs::READ_FILE | fs::TRUNCATE | fs::IOCTL_DEV;

/// TCP rights (ABI 4).
pub const NET_BIND_TCP: u64 = 1 << 0;
/// TCP connect (ABI 4).
pub const NET_CONNECT_TCP: u64 = 1 << 1;
/// Scope: abstract UNIX sockets (ABI 6).
pub const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
/// Scope: signals (ABI 6).
pub const SCOPE_SIGNAL: u64 = 1 << 1;

/// Every filesystem right the given ABI knows.
pub fn handled_fs(abi: i32) -> u64 {
    let mut r = (1 << 13) - 1;
    if abi >= 2 {
        r |= fs::REFER;
    }
    if abi >= 3 {
        r |= fs::TRUNCATE;
    }
    if abi >= 5 {
        r |= fs::IOCTL_DEV;
    }
    r
}

/// Devices every restricted policy keeps usable.
pub const DEVICES: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

#[repr(C)]
struct NetPortAttr {
    allowed_access: u64,
    port: u64,
}

const RULE_PATH_BENEATH: u32 = 1;
const RULE_NET_PORT: u32 = 2;

/// What to build.
#[derive(Debug, Clone)]
pub struct RulesetSpec<'a> {
    /// ABI to use (already capped).
    pub abi: i32,
    /// Filesystem entries (`None`: filesystem not handled).
    pub entries: Option<&'a [FsEntry]>,
    /// Block TCP bind/connect (ABI 4+).
    pub block_tcp: bool,
    /// Scope signals and abstract UNIX sockets (ABI 6+).
    pub scopes: bool,
}

/// A built ruleset and what it could not include.
#[derive(Debug)]
pub struct BuiltRuleset {
    /// The ruleset fd, handed to the child.
    pub fd: OwnedFd,
    /// Entries that could not be opened (reported, never silently dropped).
    pub unopenable: Vec<String>,
}

/// Builds the ruleset. Errors are unexpected kernel failures.
pub fn build(spec: &RulesetSpec) -> io::Result<BuiltRuleset> {
    let handled_fs = if spec.entries.is_some() {
        handled_fs(spec.abi)
    } else {
        0
    };
    let attr = RulesetAttr {
        handled_access_fs: handled_fs,
        handled_access_net: if spec.block_tcp && spec.abi >= 4 {
            NET_BIND_TCP | NET_CONNECT_TCP
        } else {
            0
        },
        scoped: if spec.scopes && spec.abi >= 6 {
            SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        } else {
            0
        },
    };
    let size = match spec.abi {
        ..=3 => 8,
        4 | 5 => 16,
        _ => 24,
    };
    // SAFETY: the attribute struct is valid for `size` bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            size as usize,
            0u32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut unopenable = Vec::new();
    let mut add = |path: &Path, rights: u64, skip_missing: bool| -> io::Result<()> {
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
            unopenable.push(format!("{}: contains a NUL byte", path.display()));
            return Ok(());
        };
        // SAFETY: open with O_PATH on a valid C string.
        let pfd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if pfd < 0 {
            let e = io::Error::last_os_error();
            if !(skip_missing && e.kind() == io::ErrorKind::NotFound) {
                unopenable.push(format!("{}: {e}", path.display()));
            }
            return Ok(());
        }
        // SAFETY: fresh fd.
        let pfd = unsafe { OwnedFd::from_raw_fd(pfd) };
        let is_dir = std::fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false);
        let mut allowed = rights & handled_fs;
        if !is_dir {
            allowed &= FILE_RIGHTS;
        }
        if allowed == 0 {
            return Ok(());
        }
        let rule = PathBeneathAttr {
            allowed_access: allowed,
            parent_fd: pfd.as_raw_fd(),
        };
        // SAFETY: valid rule struct and ruleset fd.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                fd.as_raw_fd(),
                RULE_PATH_BENEATH,
                &rule as *const PathBeneathAttr,
                0u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    if let Some(entries) = spec.entries {
        let read = fs::EXECUTE | fs::READ_FILE | fs::READ_DIR;
        for e in entries {
            match e.access {
                Access::Read => add(&e.path, read, e.skip_if_missing)?,
                Access::Write => add(&e.path, handled_fs, e.skip_if_missing)?,
                // Landlock is allow-only: `none` is the absence of a rule (carve-outs inside
                // allowed trees are handled by the mount namespace).
                Access::None => {}
            }
        }
        for dev in DEVICES {
            add(
                Path::new(dev),
                fs::READ_FILE | fs::WRITE_FILE | fs::TRUNCATE | fs::IOCTL_DEV,
                true,
            )?;
        }
    }
    Ok(BuiltRuleset { fd, unopenable })
}

/// Confines the calling thread (and threads it creates later) with `ruleset`: sets
/// no_new_privs on the thread, then `landlock_restrict_self`. Before Landlock ABI 8 both are
/// per-thread, which is what the filesystem workers rely on; never call this on a thread
/// that serves anything else.
pub fn restrict_current_thread(ruleset: &OwnedFd) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a valid ruleset fd and no flags.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Builds the network-only ruleset that keeps a process away from the server's own listening
/// TCP ports: it handles TCP bind and connect and allows both on every other port (ABI 4+).
/// Built once at startup and stacked on a network-enabled policy's own ruleset in the child.
///
/// Landlock is allow-only, so this is one rule per allowed port (65,535 minus the server's).
/// A domain holds a copy of every rule, so restricting with it costs the child about 20 ms and
/// about 4 MiB of kernel memory while it lives (measured); only confined processes with the
/// network on pay it (with the network off the policy's ruleset already denies all TCP).
pub fn build_port_guard(denied: &[u16]) -> io::Result<OwnedFd> {
    let access = NET_BIND_TCP | NET_CONNECT_TCP;
    let attr = RulesetAttr {
        handled_access_fs: 0,
        handled_access_net: access,
        scoped: 0,
    };
    // SAFETY: the attribute struct is valid for the 16 bytes that ABI 4 reads.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            16usize,
            0u32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    for port in 0..=u16::MAX {
        if denied.contains(&port) {
            continue;
        }
        let rule = NetPortAttr {
            allowed_access: access,
            port: u64::from(port),
        };
        // SAFETY: valid rule struct and ruleset fd.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                fd.as_raw_fd(),
                RULE_NET_PORT,
                &rule as *const NetPortAttr,
                0u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_rights_per_abi() {
        assert_eq!(handled_fs(1), (1 << 13) - 1);
        assert_eq!(handled_fs(2) & fs::REFER, fs::REFER);
        assert_eq!(handled_fs(2) & fs::TRUNCATE, 0);
        assert_eq!(handled_fs(3) & fs::TRUNCATE, fs::TRUNCATE);
        assert_eq!(handled_fs(4) & fs::IOCTL_DEV, 0);
        assert_eq!(handled_fs(7), (1 << 16) - 1);
    }
}
