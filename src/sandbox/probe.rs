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

/// Whether a user namespace could be created (the startup probe, see [`probes`]).
pub fn user_namespaces() -> bool {
    probes().user_namespace.available
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
/// (the way processes will, see [`MountNamespaces`]), joins it and compares `/` before and
/// after.
/// Reusing namespaces ([`super::mountns`]) depends on it.
pub fn setns_keeps_root() -> bool {
    let mut before: libc::stat = unsafe_zeroed_stat();
    // SAFETY: stat into a valid struct.
    if unsafe { libc::stat(c"/".as_ptr(), &mut before) } < 0 {
        return false;
    }
    let flags = match probes().mount_namespace_mode {
        MountNamespaces::Direct => libc::CLONE_NEWNS,
        MountNamespaces::InUserNamespace => libc::CLONE_NEWNS | libc::CLONE_NEWUSER,
        MountNamespaces::Unavailable(_) => return false,
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

/// How processes get their private mount namespace on this host (read-only view, carve-outs),
/// decided at startup from what the kernel really allowed, not from the uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountNamespaces {
    /// `unshare(CLONE_NEWNS)` directly: the server is root and holds `CAP_SYS_ADMIN` (each
    /// process drops every capability before it executes anything).
    Direct,
    /// Inside a new user namespace: a non-root server, or root without `CAP_SYS_ADMIN` (a
    /// container's root, a server started with the capability dropped).
    InUserNamespace,
    /// Neither works; the text says why and what to change.
    Unavailable(&'static str),
}

impl MountNamespaces {
    /// The wire name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            MountNamespaces::Direct => "direct",
            MountNamespaces::InUserNamespace => "userNamespace",
            MountNamespaces::Unavailable(_) => "unavailable",
        }
    }
}

/// The result of one startup probe.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    /// It worked.
    pub available: bool,
    /// What failed (the step and the kernel's error), when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What to change so that it works, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<&'static str>,
}

impl ProbeResult {
    fn ok() -> ProbeResult {
        ProbeResult {
            available: true,
            error: None,
            fix: None,
        }
    }

    fn failed(error: String, fix: &'static str) -> ProbeResult {
        ProbeResult {
            available: false,
            error: Some(error),
            fix: Some(fix),
        }
    }
}

/// What the startup probes found: each mechanism tried for real in a throwaway child.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probes {
    /// A mount namespace with a read-only bind mount of a scratch directory (directly when
    /// root, else inside a user namespace).
    pub mount_namespace: ProbeResult,
    /// How processes get their mount namespace (see [`MountNamespaces`]).
    #[serde(serialize_with = "serialize_mode")]
    pub mount_namespace_mode: MountNamespaces,
    /// A user namespace mapping the server's own ids.
    pub user_namespace: ProbeResult,
    /// A network namespace (inside a user namespace unless the server holds `CAP_SYS_ADMIN`).
    pub network_namespace: ProbeResult,
    /// Landlock (any ABI).
    pub landlock: ProbeResult,
    /// A seccomp filter with a user-notification listener.
    pub seccomp_user_notification: ProbeResult,
}

fn serialize_mode<S: serde::Serializer>(m: &MountNamespaces, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.name())
}

/// Fix for a user namespace the kernel refused (`errno` of `unshare(CLONE_NEWUSER)`).
fn user_namespace_fix(errno: i32) -> &'static str {
    let sysctl = |name: &str| {
        std::fs::read_to_string(name)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
    };
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if errno == libc::EINVAL {
        return "the kernel has no user namespaces (CONFIG_USER_NS): use a kernel built with them";
    }
    if sysctl("/proc/sys/user/max_user_namespaces") == Some(0) {
        return "user namespaces are disabled (sysctl user.max_user_namespaces = 0): set it above 0 on the host";
    }
    if errno == libc::ENOSPC || errno == libc::EUSERS {
        return "the user namespace limit is reached (sysctl user.max_user_namespaces, or the nesting depth of 32): raise the limit on the host";
    }
    if !root && sysctl("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return "unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone = 0): set it to 1 on the host, or run the server as root";
    }
    if !root && sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
        return "AppArmor restricts unprivileged user namespaces (sysctl kernel.apparmor_restrict_unprivileged_userns = 1): give stockade an AppArmor profile that allows userns, or set the sysctl to 0";
    }
    let filtered = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Seccomp:") && l.trim_end().ends_with('2'))
    });
    if filtered {
        "user namespaces are blocked by the seccomp profile this server runs under (container runtimes' default profiles allow unshare/clone of namespaces only with CAP_SYS_ADMIN): run the container with --security-opt seccomp=deploy/seccomp-stockade.json (see docs/containers.md)"
    } else {
        "user namespaces are refused by the kernel or a security module (a chroot, SELinux or AppArmor policy): see docs/containers.md"
    }
}

/// Fix for a mount refused inside a namespace the kernel did create.
const MOUNT_DENIED_FIX: &str = "mounting inside a new mount namespace is refused, most likely by the container's AppArmor or SELinux profile: run the container with --security-opt apparmor=unconfined (or a profile that allows bind mounts; see docs/containers.md)";

/// Runs `steps` in a forked child and reports the first failing step and its errno.
/// `steps` must be async-signal-safe (the server may have threads): syscalls on data
/// prepared by the caller only.
fn in_child(steps: impl FnOnce() -> Result<(), (u8, i32)>) -> Result<(), (u8, i32)> {
    let mut pipe = [0; 2];
    // SAFETY: pipe2 writes two fds.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err((
            0,
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    // SAFETY: the child runs `steps` (syscalls only) and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = match steps() {
            Ok(()) => 0,
            Err((step, errno)) => {
                let mut msg = [0u8; 5];
                msg[0] = step;
                msg[1..].copy_from_slice(&errno.to_le_bytes());
                // SAFETY: write of a stack buffer to our pipe, then exit.
                unsafe { libc::write(pipe[1], msg.as_ptr().cast(), msg.len()) };
                1
            }
        };
        // SAFETY: leaving the probe child.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(pipe[1]) };
    let mut msg = [0u8; 5];
    let n = if pid < 0 {
        -1
    } else {
        let mut status = 0;
        loop {
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r == pid || (r < 0 && errno() != libc::EINTR) {
                break;
            }
        }
        // SAFETY: read into a stack buffer from our pipe.
        unsafe { libc::read(pipe[0], msg.as_mut_ptr().cast(), msg.len()) }
    };
    // SAFETY: closing our read end.
    unsafe { libc::close(pipe[0]) };
    match n {
        0 => Ok(()),
        5 => Err((msg[0], i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]))),
        _ => Err((0, libc::ECHILD)),
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The uid and gid map lines of a user namespace mapping this process's own ids.
fn own_id_maps() -> (std::ffi::CString, std::ffi::CString) {
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    (
        std::ffi::CString::new(format!("{uid} {uid} 1")).expect("digits"),
        std::ffi::CString::new(format!("{gid} {gid} 1")).expect("digits"),
    )
}

fn write_proc(path: &std::ffi::CStr, data: &[u8]) -> bool {
    // SAFETY: open/write/close of a /proc file with a valid buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let ok = libc::write(fd, data.as_ptr().cast(), data.len()) == data.len() as isize;
        libc::close(fd);
        ok
    }
}

/// Steps of the namespace probes (what the error names).
const STEP_NAMES: [&str; 8] = [
    "fork",
    "unshare",
    "write the uid/gid maps",
    "make the mounts private",
    "bind-mount the scratch directory",
    "remount it read-only",
    "check that it is read-only (a file could still be created)",
    "install the filter",
];

fn step_error(what: &str, (step, errno): (u8, i32)) -> String {
    let step = STEP_NAMES.get(usize::from(step)).unwrap_or(&"?");
    if errno == 0 {
        format!("{what}: {step}")
    } else {
        format!(
            "{what}: {step}: {}",
            std::io::Error::from_raw_os_error(errno)
        )
    }
}

/// Makes a mount namespace (in a user namespace when `userns`) and a read-only bind mount of
/// a scratch directory in it, and checks that the directory became read-only.
fn probe_mount_namespace(userns: bool) -> Result<(), (u8, i32)> {
    use std::os::unix::ffi::OsStrExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("stockade-probe-{}-{nanos}", std::process::id()));
    if std::fs::create_dir(&dir).is_err() {
        return Err((4, errno()));
    }
    let dir_c = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("no NUL in temp dir");
    let file_c = std::ffi::CString::new(dir.join("probe").as_os_str().as_bytes())
        .expect("no NUL in temp dir");
    let maps = own_id_maps();
    let flags = if userns {
        libc::CLONE_NEWUSER | libc::CLONE_NEWNS
    } else {
        libc::CLONE_NEWNS
    };
    let result = in_child(|| {
        // SAFETY: syscalls on prepared C strings (async-signal-safe).
        unsafe {
            if libc::unshare(flags) < 0 {
                return Err((1, errno()));
            }
            if userns
                && !(write_proc(c"/proc/self/setgroups", b"deny")
                    && write_proc(c"/proc/self/uid_map", maps.0.as_bytes())
                    && write_proc(c"/proc/self/gid_map", maps.1.as_bytes()))
            {
                return Err((2, errno()));
            }
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) < 0
            {
                return Err((3, errno()));
            }
            if libc::mount(
                dir_c.as_ptr(),
                dir_c.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) < 0
            {
                return Err((4, errno()));
            }
            if !super::child::remount_read_only(dir_c.as_ptr()) {
                return Err((5, errno()));
            }
            let fd = libc::open(
                file_c.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
                0o600,
            );
            if fd >= 0 {
                return Err((6, 0));
            }
            if errno() != libc::EROFS {
                return Err((6, errno()));
            }
        }
        Ok(())
    });
    let _ = std::fs::remove_file(dir.join("probe"));
    let _ = std::fs::remove_dir(&dir);
    result
}

fn measure() -> Probes {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let user = in_child(|| {
        // SAFETY: one syscall.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER) } < 0 {
            return Err((1, errno()));
        }
        Ok(())
    });
    let user_namespace = match user {
        Ok(()) => ProbeResult::ok(),
        Err(e) => ProbeResult::failed(step_error("user namespace", e), user_namespace_fix(e.1)),
    };
    // Root tries the mount namespace directly first: it works when the server holds
    // CAP_SYS_ADMIN. Everything else (and root without it) goes through a user namespace.
    let direct = root && probe_mount_namespace(false).is_ok();
    let (mount_namespace, mount_namespace_mode) = if direct {
        (ProbeResult::ok(), MountNamespaces::Direct)
    } else {
        match probe_mount_namespace(true) {
            Ok(()) => (ProbeResult::ok(), MountNamespaces::InUserNamespace),
            Err(e) => {
                // The user namespace itself failed: its fix. Else the mounts in it did.
                let fix = if e.0 <= 2 {
                    user_namespace_fix(e.1)
                } else {
                    MOUNT_DENIED_FIX
                };
                (
                    ProbeResult::failed(step_error("mount namespace", e), fix),
                    MountNamespaces::Unavailable(fix),
                )
            }
        }
    };
    let net_flags = if direct {
        libc::CLONE_NEWNET
    } else {
        libc::CLONE_NEWNET | libc::CLONE_NEWUSER
    };
    let network_namespace = match in_child(|| {
        // SAFETY: one syscall.
        if unsafe { libc::unshare(net_flags) } < 0 {
            return Err((1, errno()));
        }
        Ok(())
    }) {
        Ok(()) => ProbeResult::ok(),
        Err(e) => ProbeResult::failed(step_error("network namespace", e), user_namespace_fix(e.1)),
    };
    let landlock = if landlock_abi() > 0 {
        ProbeResult::ok()
    } else {
        ProbeResult::failed(
            "landlock_create_ruleset refused: Landlock is not available".into(),
            "Landlock needs Linux 5.13+ with landlock in the lsm= boot list (or CONFIG_LSM), and a container seccomp profile that allows the landlock_* syscalls (deploy/seccomp-stockade.json does)",
        )
    };
    let filter = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: filter.as_ptr().cast_mut(),
    };
    let seccomp_user_notification = match in_child(|| {
        // SAFETY: prctl and seccomp on a stack program that outlives the call.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err((7, errno()));
            }
            if libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            ) < 0
            {
                return Err((7, errno()));
            }
        }
        Ok(())
    }) {
        Ok(()) => ProbeResult::ok(),
        Err(e) => ProbeResult::failed(
            step_error("seccomp user notification", e),
            "seccomp user notification needs Linux 5.0+ and a container seccomp profile that allows seccomp(2) (deploy/seccomp-stockade.json does)",
        ),
    };
    Probes {
        mount_namespace,
        mount_namespace_mode,
        user_namespace,
        network_namespace,
        landlock,
        seccomp_user_notification,
    }
}

/// The startup probes, measured once per process.
pub fn probes() -> &'static Probes {
    static PROBES: std::sync::OnceLock<Probes> = std::sync::OnceLock::new();
    PROBES.get_or_init(measure)
}
