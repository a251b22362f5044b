//! What this host can enforce, measured with the kernel itself.

/// The Landlock ABI version the kernel offers (0 = none).
pub fn landlock_abi() -> i32 {
    // SAFETY: landlock_create_ruleset with LANDLOCK_CREATE_RULESET_VERSION (1) only queries.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    if r < 0 { 0 } else { r as i32 }
}

/// The Landlock ABI stockade uses: the kernel's, at most `cap` (to simulate older kernels)
/// and at most the newest ABI whose rights this build knows
/// ([`super::landlock::NEWEST_KNOWN_ABI`]).
pub fn landlock_abi_in_use(cap: Option<i32>) -> i32 {
    let abi = landlock_abi().min(super::landlock::NEWEST_KNOWN_ABI);
    cap.map_or(abi, |c| c.clamp(0, abi))
}

/// Whether seccomp filters can be installed (`PR_GET_SECCOMP` answers).
pub fn seccomp() -> bool {
    // SAFETY: PR_GET_SECCOMP only queries.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) >= 0 }
}

/// Whether user namespaces can be created at all on this host.
pub fn user_namespaces() -> bool {
    std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

/// The kernel's limit on mounts in one mount namespace (`fs.mount-max`), read once.
pub fn mount_max() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/fs/mount-max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100_000)
    })
}

/// The per-user inotify watch limit (`None` when unknown). The hard-link census needs a watch
/// per directory of the writable roots it follows.
pub fn inotify_max_user_watches() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Whether joining a mount namespace with `setns` keeps this process's root: false when the
/// server runs under `chroot` (setns would move a joining process to the namespace's real
/// root, outside the chroot). Measured in a forked child, which makes a mount namespace
/// (with a user namespace when not root), joins it and compares `/` before and after.
/// Reusing namespaces ([`super::mountns`]) depends on it.
pub fn setns_keeps_root() -> bool {
    let mut before: libc::stat = unsafe_zeroed_stat();
    // SAFETY: stat into a valid struct.
    if unsafe { libc::stat(c"/".as_ptr(), &mut before) } < 0 {
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    let flags = if unsafe { libc::geteuid() } == 0 {
        libc::CLONE_NEWNS
    } else {
        libc::CLONE_NEWNS | libc::CLONE_NEWUSER
    };
    // SAFETY: the child only makes async-signal-safe syscalls on stack data and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return false;
    }
    if pid == 0 {
        // SAFETY: as above (child of a possibly multithreaded process: syscalls only).
        unsafe {
            if libc::unshare(flags) < 0 {
                libc::_exit(2);
            }
            let fd = libc::open(c"/proc/self/ns/mnt".as_ptr(), libc::O_RDONLY);
            if fd < 0 || libc::setns(fd, libc::CLONE_NEWNS) < 0 {
                libc::_exit(3);
            }
            let mut after: libc::stat = std::mem::zeroed();
            if libc::stat(c"/".as_ptr(), &mut after) < 0 {
                libc::_exit(4);
            }
            let same = after.st_dev == before.st_dev && after.st_ino == before.st_ino;
            libc::_exit(if same { 0 } else { 1 });
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

fn unsafe_zeroed_stat() -> libc::stat {
    // SAFETY: an all-zero stat is a valid value.
    unsafe { std::mem::zeroed() }
}
