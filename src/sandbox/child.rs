//! The only code that runs in the target process between `fork` and `execve`.
//!
//! Everything here is async-signal-safe: no allocation, no locks, no logging. All inputs were
//! prepared in the parent ([`ExecPlan`]); a failure crosses back as a `(stage, errno)` pair
//! left in the keeper's memory ([`FailureSlot`]: the target shares it until exec), which the
//! keeper reports to the server with the pids.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::sync::atomic::{AtomicU64, Ordering};

/// A failure stage reported by the child before `execve`; the parent turns it into a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Stage {
    /// The keeper could not fork the target.
    Fork = 1,
    /// `setsid` failed.
    Setsid = 2,
    /// Redirecting stdio failed.
    Dup = 4,
    /// Making the terminal the controlling terminal failed.
    ControllingTerminal = 5,
    /// `chdir` to the cwd failed.
    Chdir = 6,
    /// `execve` failed.
    Exec = 7,
    /// Dropping capabilities failed.
    Capabilities = 8,
    /// `PR_SET_NO_NEW_PRIVS` failed.
    NoNewPrivs = 9,
    /// `landlock_restrict_self` failed.
    Landlock = 10,
    /// Installing a seccomp filter failed.
    Seccomp = 11,
    /// Setting a resource limit failed.
    Rlimit = 12,
    /// Creating the user/mount namespace or a mount failed.
    Mounts = 13,
    /// The keeper could not join the process cgroup.
    Cgroup = 14,
    /// The keeper could not open its list of children (`/proc/thread-self/children`), which
    /// its tree kill needs.
    ChildList = 15,
}

impl Stage {
    /// Every stage, for decoding.
    const ALL: [Stage; 14] = [
        Stage::Fork,
        Stage::Setsid,
        Stage::Dup,
        Stage::ControllingTerminal,
        Stage::Chdir,
        Stage::Exec,
        Stage::Capabilities,
        Stage::NoNewPrivs,
        Stage::Landlock,
        Stage::Seccomp,
        Stage::Rlimit,
        Stage::Mounts,
        Stage::Cgroup,
        Stage::ChildList,
    ];

    /// Decodes the stage number of a failure report.
    pub fn from_raw(raw: i32) -> Option<Stage> {
        Stage::ALL.iter().copied().find(|s| *s as i32 == raw)
    }

    /// What the stage was doing, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Stage::Fork => "fork",
            Stage::Setsid => "setsid",
            Stage::Dup => "stdio redirection",
            Stage::ControllingTerminal => "controlling terminal setup",
            Stage::Chdir => "chdir",
            Stage::Exec => "execve",
            Stage::Capabilities => "dropping capabilities",
            Stage::NoNewPrivs => "setting no_new_privs",
            Stage::Landlock => "Landlock restriction",
            Stage::Seccomp => "installing the seccomp filter",
            Stage::Rlimit => "setting resource limits",
            Stage::Mounts => "setting up the private mount namespace",
            Stage::Cgroup => "joining the process cgroup",
            Stage::ChildList => "opening the keeper's list of children",
        }
    }
}

/// Everything the target needs, prepared in the parent. Pointers point into the owned
/// `CString`s of the same struct, whose heap buffers do not move when the struct moves.
pub struct ExecPlan {
    program: CString,
    cwd: CString,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    envp_ptrs: Vec<*const c_char>,
    /// Run on a pseudo-terminal: new session and controlling terminal.
    pub tty: bool,
    /// Confinement to apply before exec.
    pub sandbox: ChildSandbox,
}

/// Confinement steps, prepared in the parent.
#[derive(Default)]
pub struct ChildSandbox {
    /// Landlock ruleset fd (-1: none).
    pub ruleset_fd: i32,
    /// The ruleset denying the server's own ports, stacked after `ruleset_fd` (-1: none; see
    /// [`crate::sandbox::prepare::SupervisorPorts`]).
    pub port_guard_fd: i32,
    /// seccomp programs, applied in order as the last step.
    pub seccomp: Vec<Vec<libc::sock_filter>>,
    /// `sock_fprog`s pointing into `seccomp` (built once, in the parent).
    fprogs: Vec<libc::sock_fprog>,
    /// A socket to send the seccomp listener on (-1: none). Then `seccomp` is a
    /// user-notification filter and its plain fallback: the first is installed with a
    /// listener, which goes to the server; when no listener can be had (an outer filter has
    /// one: EBUSY), the second, which answers EPERM in the kernel.
    pub notify_sock: i32,
    /// Set no_new_privs.
    pub no_new_privs: bool,
    /// Empty the bounding set, clear ambient and inheritable capabilities.
    pub drop_caps: bool,
    /// RLIMIT_CORE = 0.
    pub no_core: bool,
    /// Private mount namespace for what Landlock cannot express.
    pub mounts: Option<MountPlan>,
    /// Resource limits `(resource, value)`, lowered to at most the current hard limit.
    pub rlimits: Vec<(i32, u64)>,
    /// Ignore SIGXFSZ so that writes past RLIMIT_FSIZE fail with EFBIG instead of killing.
    pub ignore_sigxfsz: bool,
}

/// What a mount does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    /// Bind the path onto itself, read-only.
    ReadOnly,
    /// Cover a directory with an empty, mode-000, read-only tmpfs.
    HideDir,
    /// Cover a file with an empty, mode-000, read-only file (see [`STASH_DIRS`]).
    HideFile,
    /// As [`MountKind::ReadOnly`], skipped when the path is gone (a hard link the census
    /// found may be removed between the census and the spawn; a missing name needs no
    /// protection).
    ReadOnlyIfPresent,
    /// Make the path itself (a symlink, not followed) a mount point, so that it cannot be
    /// removed, renamed or replaced: binds it onto itself through `/proc/self/fd`. Done
    /// before the other mounts (the hidden-file stash may cover `/proc` for a while).
    PinLink,
    /// A mount point of the host outside the writable roots: remount it read-only (done
    /// after every [`MountKind::BindWritable`], before the carve-outs). Skipped when it is
    /// gone or out of the server's reach (then out of the process's too).
    HostReadOnly,
    /// A writable root: bind it onto itself, submounts included, keeping its flags, so
    /// that it stays writable when the mount around it turns read-only. Done first.
    BindWritable,
}

/// The mount namespace setup, prepared in the keeper (strings allocated before clone).
#[derive(Debug)]
pub struct MountPlan {
    /// When not root: `(uid_map, gid_map)` lines for a new user namespace.
    pub userns: Option<(CString, CString)>,
    /// The mounts, in order (parents before children).
    pub ops: Vec<(MountKind, CString)>,
    /// Join an existing namespace instead of building one: `(user ns fd or -1, mount ns fd)`.
    /// The server keeps one namespace per distinct mount plan (see
    /// [`crate::sandbox::mountns`]); `ops` is then empty.
    pub join: Option<(i32, i32)>,
    /// After building the namespace, send its fds (user ns first when there is one, then the
    /// mount ns) over this `SOCK_SEQPACKET` socket, so that the server can reuse it (-1: no).
    /// Done before exec: what the server receives is exactly what the plan built.
    pub capture_fd: i32,
}

impl Default for MountPlan {
    fn default() -> Self {
        MountPlan {
            userns: None,
            ops: Vec::new(),
            join: None,
            capture_fd: -1,
        }
    }
}

impl ChildSandbox {
    /// Builds the sandbox steps; `seccomp` programs are owned here and pointed to by fprogs.
    pub fn new(
        ruleset_fd: i32,
        seccomp: Vec<Vec<libc::sock_filter>>,
        no_new_privs: bool,
        drop_caps: bool,
        no_core: bool,
    ) -> ChildSandbox {
        let mut s = ChildSandbox {
            ruleset_fd,
            port_guard_fd: -1,
            seccomp,
            fprogs: Vec::new(),
            notify_sock: -1,
            no_new_privs,
            drop_caps,
            no_core,
            mounts: None,
            rlimits: Vec::new(),
            ignore_sigxfsz: false,
        };
        s.fprogs = s
            .seccomp
            .iter_mut()
            .map(|p| libc::sock_fprog {
                len: p.len() as u16,
                filter: p.as_mut_ptr(),
            })
            .collect();
        s
    }

    /// No confinement.
    pub fn none() -> ChildSandbox {
        ChildSandbox {
            ruleset_fd: -1,
            port_guard_fd: -1,
            notify_sock: -1,
            ..ChildSandbox::default()
        }
    }
}

// SAFETY: the raw pointers only point into heap buffers owned by the same struct, which are
// never mutated after construction.
unsafe impl Send for ExecPlan {}

impl ExecPlan {
    /// Builds a plan. `argv` must be non-empty; `program` is the resolved path to execute.
    pub fn new(
        program: CString,
        argv: Vec<CString>,
        envp: Vec<CString>,
        cwd: CString,
        tty: bool,
        sandbox: ChildSandbox,
    ) -> ExecPlan {
        let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<*const c_char> = envp.iter().map(|a| a.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        ExecPlan {
            program,
            cwd,
            _argv: argv,
            _envp: envp,
            argv_ptrs,
            envp_ptrs,
            tty,
            sandbox,
        }
    }

    /// The program path that will be executed.
    pub fn program(&self) -> &CStr {
        &self.program
    }
}

/// File descriptors handed from the parent to the keeper and the target.
#[derive(Debug, Clone, Copy)]
pub struct ChildFds {
    /// Becomes fd 0.
    pub stdin: i32,
    /// Becomes fd 1.
    pub stdout: i32,
    /// Becomes fd 2.
    pub stderr: i32,
    /// Keeper → server: the start report, then the exit record.
    pub status_pipe: i32,
}

/// Where the target leaves `(stage, errno)` when it fails before exec: a word of the keeper's
/// memory, which the target shares until it execs (`CLONE_VM | CLONE_VFORK`), so the keeper
/// knows the outcome as soon as `clone` returns. Zero: no failure.
#[derive(Debug, Default)]
pub struct FailureSlot(AtomicU64);

impl FailureSlot {
    /// The recorded failure, if any.
    pub fn get(&self) -> Option<(i32, i32)> {
        let v = self.0.load(Ordering::SeqCst);
        (v != 0).then_some(((v >> 32) as i32, v as u32 as i32))
    }
}

/// Records a failure in `slot` and exits. Async-signal-safe.
pub fn fail(slot: &FailureSlot, stage: Stage, errno: i32) -> ! {
    let errno = if errno == 0 { libc::EIO } else { errno };
    slot.0.store(
        ((stage as u32 as u64) << 32) | errno as u32 as u64,
        Ordering::SeqCst,
    );
    // SAFETY: _exit never returns.
    unsafe { libc::_exit(127) }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Sets up the target process and executes the program. Never returns.
///
/// # Safety
/// Must only be called in a freshly forked, single-threaded child; `plan` and `fds` must have
/// been prepared before the fork.
pub unsafe fn exec_target(plan: &ExecPlan, fds: &ChildFds, ep: &FailureSlot) -> ! {
    // SAFETY: async-signal-safe syscalls only; every pointer comes from `plan`.
    unsafe {
        // Every program leads a session of its own, and so a process group whose id is its
        // pid (which `process/signal` and the tree kill address). Without a terminal it then
        // has no controlling terminal at all: in the server's session it could open the
        // server's terminal as /dev/tty, make itself its foreground group and read what the
        // user types. With a terminal, the pty becomes its controlling terminal below.
        if libc::setsid() < 0 {
            fail(ep, Stage::Setsid, errno());
        }
        // The sources are all >= 3 (fds 0-2 of the server are always occupied), so no dup2
        // below can clobber a source that is still needed.
        for (src, dst) in [(fds.stdin, 0), (fds.stdout, 1), (fds.stderr, 2)] {
            if libc::dup2(src, dst) < 0 {
                fail(ep, Stage::Dup, errno());
            }
        }
        if plan.tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            fail(ep, Stage::ControllingTerminal, errno());
        }
        let sb = &plan.sandbox;
        // Mounts first, so that the cwd and every later lookup see them.
        if let Some(m) = &sb.mounts {
            apply_mounts(m, ep);
        }
        if libc::chdir(plan.cwd.as_ptr()) < 0 {
            fail(ep, Stage::Chdir, errno());
        }
        if sb.no_core {
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &zero) < 0 {
                fail(ep, Stage::Rlimit, errno());
            }
        }
        for &(resource, value) in &sb.rlimits {
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(resource as _, &mut cur);
            // Hard limits can only be lowered without CAP_SYS_RESOURCE: never ask for more.
            let hard = value.min(cur.rlim_max);
            let lim = libc::rlimit {
                rlim_cur: hard,
                rlim_max: hard,
            };
            if libc::setrlimit(resource as _, &lim) < 0 {
                fail(ep, Stage::Rlimit, errno());
            }
        }
        if sb.ignore_sigxfsz {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        }
        if sb.drop_caps {
            drop_capabilities(ep, sb.no_new_privs);
        }
        if sb.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            fail(ep, Stage::NoNewPrivs, errno());
        }
        // LOG_NEW_EXEC_ON while the Landlock audit source reads the records (the program's
        // refusals come after exec, which Landlock does not log by default); else 0.
        let log_flags = super::denials::audit::restrict_flags();
        if sb.ruleset_fd >= 0
            && libc::syscall(libc::SYS_landlock_restrict_self, sb.ruleset_fd, log_flags) < 0
        {
            fail(ep, Stage::Landlock, errno());
        }
        // The policy's own (small) ruleset first: a new domain copies every rule of the one
        // it stacks on, so this order copies the port guard's rules once, not twice.
        if sb.port_guard_fd >= 0
            && libc::syscall(
                libc::SYS_landlock_restrict_self,
                sb.port_guard_fd,
                log_flags,
            ) < 0
        {
            fail(ep, Stage::Landlock, errno());
        }
        // Only fds 0-2 survive exec.
        close_range_cloexec(3);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // seccomp last: nothing after it but execve (which the filters allow).
        if sb.notify_sock >= 0 {
            install_with_listener(sb, ep);
        } else {
            for prog in &sb.fprogs {
                if libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0u32,
                    prog as *const libc::sock_fprog,
                ) < 0
                {
                    fail(ep, Stage::Seccomp, errno());
                }
            }
        }
        libc::execve(
            plan.program.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
        );
        fail(ep, Stage::Exec, errno())
    }
}

/// Installs the user-notification filter with a listener and sends the listener to the server;
/// installs the plain fallback instead when no listener can be had. Async-signal-safe.
fn install_with_listener(sb: &ChildSandbox, ep: &FailureSlot) {
    let (Some(notify), Some(plain)) = (sb.fprogs.first(), sb.fprogs.get(1)) else {
        fail(ep, Stage::Seccomp, libc::EINVAL)
    };
    let install = |prog: &libc::sock_fprog, flags: libc::c_ulong| {
        // SAFETY: seccomp reads the program the fprog points to (owned by the plan).
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                prog as *const libc::sock_fprog,
            )
        }
    };
    // A call received by the server waits killably only: a signal cannot restart it (and
    // report it twice). Kernels before 5.19 do not know the flag.
    let listener_flags = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
    let mut listener = install(
        notify,
        listener_flags | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
    );
    if listener < 0 && errno() == libc::EINVAL {
        listener = install(notify, listener_flags);
    }
    if listener < 0 {
        // EBUSY: an outer filter (stockade itself runs under a seccomp notifier) has the one
        // listener a chain may have; EINVAL/ENOSYS: the kernel has none. The plain filter
        // refuses the same calls; the server sees no listener arrive and says so.
        if install(plain, 0) < 0 {
            fail(ep, Stage::Seccomp, errno());
        }
        return;
    }
    // Without the listener at the server every refused call would answer ENOSYS (the
    // listener closes at exec): never exec then.
    if !send_fd(sb.notify_sock, listener as i32) {
        fail(ep, Stage::Seccomp, errno());
    }
    // SAFETY: closing our copy; the server holds its own.
    unsafe { libc::close(listener as i32) };
}

/// Sends one fd over a `SOCK_SEQPACKET` socket. Async-signal-safe (stack buffers only).
fn send_fd(sock: i32, fd: i32) -> bool {
    // SAFETY: sendmsg over stack buffers sized for one fd.
    unsafe {
        let mut byte = [1u8];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut control = [0u64; 3];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
        libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) == 1
    }
}

fn write_file(path: &CStr, data: &[u8]) -> bool {
    // SAFETY: open/write/close on a valid path and buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        libc::close(fd);
        n == data.len() as isize
    }
}

/// Where hidden files get their stand-in: an empty tmpfs briefly covers the first of these
/// directories that holds no hidden file, a mode-000 file is created in it and bound over each
/// hidden file, then the tmpfs is detached (the binds keep the file alive). A process opening
/// a hidden file then gets EACCES, for reading and for writing, as for any `none` path: it
/// holds no capability that could override the mode. Each exists on every Linux host this
/// runs on (stockade itself needs `/proc`).
const STASH_DIRS: [&CStr; 3] = [c"/proc", c"/dev", c"/sys"];

/// The stand-in's path in a stash directory (at most 4 + 16 bytes, NUL included).
fn stash_file(dir: &CStr, buf: &mut [u8; 24]) -> *const libc::c_char {
    let d = dir.to_bytes();
    let name = b"/hidden\0";
    buf[..d.len()].copy_from_slice(d);
    buf[d.len()..d.len() + name.len()].copy_from_slice(name);
    buf.as_ptr().cast()
}

/// Whether `path` is `dir` or lies below it.
fn is_within(path: &[u8], dir: &[u8]) -> bool {
    path.starts_with(dir) && (path.len() == dir.len() || path[dir.len()] == b'/')
}

/// Mounts the stash tmpfs and creates the stand-in; returns the stash directory.
/// Async-signal-safe.
fn open_stash(m: &MountPlan) -> Option<&'static CStr> {
    // Neither inside nor above any mounted path, so that no mount of the plan covers it.
    let dir = STASH_DIRS.into_iter().find(|d| {
        !m.ops.iter().any(|(k, p)| {
            // The read-only view is in place before the stash is mounted.
            !matches!(k, MountKind::HostReadOnly | MountKind::BindWritable)
                && (is_within(p.to_bytes(), d.to_bytes()) || is_within(d.to_bytes(), p.to_bytes()))
        })
    })?;
    let mut buf = [0u8; 24];
    // SAFETY: mount and open on valid C strings; the fd is closed right away.
    unsafe {
        if libc::mount(
            c"tmpfs".as_ptr(),
            dir.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            c"size=4k,mode=700".as_ptr().cast(),
        ) != 0
        {
            return None;
        }
        let fd = libc::open(
            stash_file(dir, &mut buf),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
            0,
        );
        if fd < 0 {
            return None;
        }
        libc::close(fd);
    }
    Some(dir)
}

/// Joins the prepared namespace, or creates the private mount namespace and applies the
/// mounts. Async-signal-safe.
fn apply_mounts(m: &MountPlan, ep: &FailureSlot) {
    if let Some((user, mnt)) = m.join {
        // SAFETY: setns on fds the keeper received; the target is single-threaded and does not
        // share its fs struct (no CLONE_FS), as setns requires.
        unsafe {
            if user >= 0 && libc::setns(user, libc::CLONE_NEWUSER) < 0 {
                fail(ep, Stage::Mounts, errno());
            }
            // Also moves root and cwd to the namespace's root; the server only joins when that
            // is the root it runs in (see `probe::setns_keeps_root`), and chdir follows.
            if libc::setns(mnt, libc::CLONE_NEWNS) < 0 {
                fail(ep, Stage::Mounts, errno());
            }
        }
        return;
    }
    build_namespace(m, ep);
    if m.capture_fd >= 0 {
        capture_namespace(m.capture_fd, m.userns.is_some());
    }
}

/// Sends this process's user (when `userns`) and mount namespace fds over `sock`, then closes
/// them. Best effort: on any failure the server simply gets nothing and builds the namespace
/// again next time. Async-signal-safe (stack buffers only).
fn capture_namespace(sock: i32, userns: bool) {
    // SAFETY: open/sendmsg/close on stack buffers sized for two fds.
    unsafe {
        let mut fds = [-1i32; 2];
        let mut n = 0;
        if userns {
            fds[n] = libc::open(
                c"/proc/self/ns/user".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
            n += 1;
        }
        fds[n] = libc::open(
            c"/proc/self/ns/mnt".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        n += 1;
        if fds[..n].iter().all(|&fd| fd >= 0) {
            let mut byte = [n as u8];
            let mut iov = libc::iovec {
                iov_base: byte.as_mut_ptr().cast(),
                iov_len: 1,
            };
            // Room for a cmsg header and two ints, 8-byte aligned.
            let mut control = [0u64; 4];
            let space = libc::CMSG_SPACE((n * std::mem::size_of::<i32>()) as u32) as usize;
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN((n * std::mem::size_of::<i32>()) as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast::<i32>(), n);
            libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
        }
        for &fd in &fds[..n] {
            if fd >= 0 {
                libc::close(fd);
            }
        }
        libc::close(sock);
    }
}

/// Creates the private mount namespace and applies the mounts. Async-signal-safe.
fn build_namespace(m: &MountPlan, ep: &FailureSlot) {
    // SAFETY: plain syscalls on prepared C strings.
    unsafe {
        let flags = if m.userns.is_some() {
            libc::CLONE_NEWUSER | libc::CLONE_NEWNS
        } else {
            libc::CLONE_NEWNS
        };
        if libc::unshare(flags) < 0 {
            fail(ep, Stage::Mounts, errno());
        }
        if let Some((uid_map, gid_map)) = &m.userns
            && !(write_file(c"/proc/self/setgroups", b"deny")
                && write_file(c"/proc/self/uid_map", uid_map.as_bytes())
                && write_file(c"/proc/self/gid_map", gid_map.as_bytes()))
        {
            fail(ep, Stage::Mounts, errno());
        }
        // Nothing done here may propagate back to the host.
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) < 0
        {
            fail(ep, Stage::Mounts, errno());
        }
        // The read-only view: the writable roots get their own mounts, then every host
        // mount outside them turns read-only.
        for (kind, path) in &m.ops {
            let p = path.as_ptr();
            if *kind == MountKind::BindWritable
                && libc::mount(
                    p,
                    p,
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) != 0
            {
                fail(ep, Stage::Mounts, errno());
            }
        }
        // A host mount that went away after the server read the mount table answers ENOENT
        // (its mount point is gone too) or EINVAL (the path is no mount point any more): it now
        // belongs to its parent mount, which has its own op here.
        for (kind, path) in &m.ops {
            if *kind == MountKind::HostReadOnly
                && !remount_read_only(path.as_ptr())
                && !matches!(errno(), libc::ENOENT | libc::EACCES | libc::EINVAL)
            {
                fail(ep, Stage::Mounts, errno());
            }
        }
        for (kind, path) in &m.ops {
            if *kind == MountKind::PinLink
                && let Err(e) = pin_link(path)
            {
                fail(ep, Stage::Mounts, e);
            }
        }
        let stash = if m.ops.iter().any(|(k, _)| *k == MountKind::HideFile) {
            match open_stash(m) {
                Some(dir) => Some(dir),
                None => fail(ep, Stage::Mounts, errno()),
            }
        } else {
            None
        };
        let mut stash_buf = [0u8; 24];
        for (kind, path) in &m.ops {
            let p = path.as_ptr();
            let ok = match kind {
                MountKind::PinLink | MountKind::HostReadOnly | MountKind::BindWritable => true,
                MountKind::ReadOnlyIfPresent => {
                    if libc::mount(p, p, std::ptr::null(), libc::MS_BIND, std::ptr::null()) == 0 {
                        remount_read_only(p)
                    } else {
                        errno() == libc::ENOENT
                    }
                }
                MountKind::ReadOnly => {
                    libc::mount(
                        p,
                        p,
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ) == 0
                        && remount_read_only(p)
                }
                MountKind::HideDir => {
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        p,
                        c"tmpfs".as_ptr(),
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        c"size=4k,mode=000".as_ptr().cast(),
                    ) == 0
                }
                MountKind::HideFile => {
                    let Some(dir) = stash else {
                        fail(ep, Stage::Mounts, libc::EINVAL)
                    };
                    libc::mount(
                        stash_file(dir, &mut stash_buf),
                        p,
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) == 0
                        && remount_read_only(p)
                }
            };
            if !ok {
                fail(ep, Stage::Mounts, errno());
            }
        }
        if let Some(dir) = stash
            && libc::umount2(dir.as_ptr(), libc::MNT_DETACH) != 0
        {
            fail(ep, Stage::Mounts, errno());
        }
    }
}

/// Binds `path` itself (not what a symlink there points to) onto itself: a mount point cannot
/// be unlinked or renamed (EBUSY). The path of the `O_PATH | O_NOFOLLOW` descriptor under
/// `/proc/self/fd` names the link, and the kernel does not follow it any further.
/// Async-signal-safe (a stack buffer for the descriptor's path); the error is the errno.
fn pin_link(path: &CStr) -> Result<(), i32> {
    // SAFETY: open, mount and close on a valid C string and a stack buffer.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(errno());
        }
        let mut buf = [0u8; 32];
        let prefix = b"/proc/self/fd/";
        buf[..prefix.len()].copy_from_slice(prefix);
        let mut digits = [0u8; 10];
        let mut n = fd as u32;
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            buf[prefix.len() + i] = digits[len - 1 - i];
        }
        let p = buf.as_ptr().cast::<libc::c_char>();
        let result = if libc::mount(p, p, std::ptr::null(), libc::MS_BIND, std::ptr::null()) == 0 {
            Ok(())
        } else {
            Err(errno())
        };
        libc::close(fd);
        result
    }
}

/// Remounts a bind mount read-only, keeping the flags a user namespace may not clear.
pub(crate) fn remount_read_only(p: *const libc::c_char) -> bool {
    // SAFETY: statvfs into a zeroed struct; mount with a valid path.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(p, &mut st) < 0 {
            return false;
        }
        let keep = st.f_flag
            & (libc::ST_NOSUID
                | libc::ST_NODEV
                | libc::ST_NOEXEC
                | libc::ST_NOATIME
                | libc::ST_NODIRATIME
                | libc::ST_RELATIME);
        libc::mount(
            std::ptr::null(),
            p,
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | keep as libc::c_ulong,
            std::ptr::null(),
        ) == 0
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `CAP_SETPCAP`: needed to empty the bounding set.
const CAP_SETPCAP: u32 = 8;

/// Leaves the target no capability at all, decided from the capabilities it holds, not from
/// its uid: a root server may lack `CAP_SETPCAP` (a container dropping it), a non-root server
/// may hold file or ambient capabilities (`setcap`, `setpriv --ambient-caps`, systemd's
/// `AmbientCapabilities=`), and a target that created a user namespace holds every capability
/// there. Holding none, there is nothing to drop: the `no_new_privs` set next caps what exec
/// may grant at the (empty) permitted set, for root too. Otherwise: the bounding set is
/// emptied when `CAP_SETPCAP` allows it (without it, `no_new_privs` alone keeps exec from
/// granting anything), then ambient, inheritable, permitted and effective are cleared (always
/// allowed: they only shrink). Async-signal-safe.
fn drop_capabilities(ep: &FailureSlot, no_new_privs: bool) {
    let mut header = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut held = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget writes two version-3 data structs on the stack.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            held.as_mut_ptr(),
        )
    };
    if r < 0 {
        fail(ep, Stage::Capabilities, errno());
    }
    // Ambient capabilities are a subset of permitted and inheritable ones.
    let holds_any = held
        .iter()
        .any(|d| d.effective | d.permitted | d.inheritable != 0);
    if !holds_any && no_new_privs {
        return;
    }
    if held[0].effective & (1 << CAP_SETPCAP) != 0 {
        // Capability numbers are dense: the first one the kernel calls invalid (EINVAL) is
        // past its last. Each drop copies the credentials (~1.5 us), a read does not: only
        // what is still in the set is dropped (a keeper of the cap-free pool already emptied
        // it while idle).
        for cap in 0..64 {
            // SAFETY: prctl with integer arguments only.
            let present = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) };
            if present < 0 {
                if errno() == libc::EINVAL {
                    break;
                }
                fail(ep, Stage::Capabilities, errno());
            }
            // SAFETY: prctl with integer arguments only.
            if present == 1 && unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } < 0 {
                fail(ep, Stage::Capabilities, errno());
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if r < 0 && errno() != libc::EINVAL {
        fail(ep, Stage::Capabilities, errno());
    }
    let none = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads two version-3 data structs on the stack.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            none.as_ptr(),
        )
    };
    if r < 0 {
        fail(ep, Stage::Capabilities, errno());
    }
}

/// Marks every fd >= `first` close-on-exec. Async-signal-safe.
fn close_range_cloexec(first: u32) {
    // SAFETY: close_range only changes fd flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r < 0 {
        // Kernels before 5.11: set the flag one fd at a time up to the soft limit.
        let max = max_fd();
        for fd in first as i32..max {
            // SAFETY: fcntl on a possibly-closed fd just fails with EBADF.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// The fd-number bound used by fallbacks: the NOFILE soft limit, capped. Async-signal-safe.
pub fn max_fd() -> i32 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
        rl.rlim_cur.min(1 << 20) as i32
    } else {
        1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_roundtrip_through_their_numbers() {
        for s in Stage::ALL {
            assert_eq!(Stage::from_raw(s as i32), Some(s));
            assert!(!s.describe().is_empty());
        }
        assert_eq!(Stage::from_raw(0), None);
        assert_eq!(Stage::from_raw(3), None);
        assert_eq!(Stage::from_raw(16), None);
    }
}
