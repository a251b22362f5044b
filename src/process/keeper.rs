//! The keeper: a forked (not exec'd) child of the server that owns one process tree.
//!
//! Why it exists: a process group or session does not contain a tree (a descendant can call
//! `setsid`), and the server cannot make itself the reaper of just one tree. The keeper is a
//! *child subreaper*: every orphan of its tree is reparented to it, so "all descendants of the
//! keeper" is exactly the tree, whatever the processes do. On SIGTERM, from the server or via
//! `PR_SET_PDEATHSIG` when the server dies, it SIGKILLs its children over and over until it
//! has none, then exits. Everything that loop needs is in hand before the program starts: the
//! list of children is an fd opened while the keeper was idle (re-read from offset 0 each
//! time), and killing needs no new resource, so nothing the tree does to the keeper's limits
//! (a lowered RLIMIT_NOFILE, an exhausted pid space) can keep a descendant alive.
//!
//! Protocol on the status pipe (native endian): a [`StartReport`] (the keeper's and the
//! target's pids, and the failure if the program could not be started), then, when the target
//! exits, an [`ExitRecord`]. The keeper exits once the target is reaped and it has no children
//! left.
//!
//! Everything here runs between fork and `_exit`: async-signal-safe syscalls only.

use super::super::sandbox::child::{self, ChildFds, ExecPlan, FailureSlot, Stage};

/// The record the keeper writes when the target exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitRecord {
    /// The raw wait status of the target.
    pub wait_status: i32,
    /// User CPU time of the target and every reaped descendant, in microseconds.
    pub user_us: i64,
    /// System CPU time, same scope.
    pub sys_us: i64,
    /// Largest max-RSS of the reaped processes, in KiB.
    pub max_rss_kb: i64,
}

/// Size of an encoded [`ExitRecord`].
pub const EXIT_RECORD_LEN: usize = 32;

impl ExitRecord {
    /// Encodes the record (native endian).
    pub fn encode(&self) -> [u8; EXIT_RECORD_LEN] {
        let mut b = [0u8; EXIT_RECORD_LEN];
        b[0..8].copy_from_slice(&(self.wait_status as i64).to_ne_bytes());
        b[8..16].copy_from_slice(&self.user_us.to_ne_bytes());
        b[16..24].copy_from_slice(&self.sys_us.to_ne_bytes());
        b[24..32].copy_from_slice(&self.max_rss_kb.to_ne_bytes());
        b
    }

    /// Decodes a record.
    pub fn decode(b: &[u8; EXIT_RECORD_LEN]) -> ExitRecord {
        let f = |i: usize| i64::from_ne_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        ExitRecord {
            wait_status: f(0) as i32,
            user_us: f(8),
            sys_us: f(16),
            max_rss_kb: f(24),
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn write_all(fd: i32, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: writing from a valid slice.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return;
        }
        data = &data[n as usize..];
    }
}

/// Closes every fd except those in `keep` (at most 10). Async-signal-safe.
fn close_all_except(keep: &[i32]) {
    let mut sorted = [-1i32; 10];
    let n = keep.len().min(10);
    sorted[..n].copy_from_slice(&keep[..n]);
    let sorted = &mut sorted[..n];
    // Insertion sort: no allocation.
    for i in 1..sorted.len() {
        let mut j = i;
        while j > 0 && sorted[j - 1] > sorted[j] {
            sorted.swap(j - 1, j);
            j -= 1;
        }
    }
    let mut next: i64 = 0;
    for &fd in sorted.iter() {
        let fd = fd as i64;
        if fd > next {
            close_range(next as u32, (fd - 1) as u32);
        }
        next = next.max(fd + 1);
    }
    close_range(next as u32, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: close_range only closes fds.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if r < 0 {
        let end = (last as i64).min(child::max_fd() as i64);
        let mut fd = first as i64;
        while fd <= end {
            // SAFETY: closing a possibly-unused fd just fails with EBADF.
            unsafe { libc::close(fd as i32) };
            fd += 1;
        }
    }
}

/// Empties this process's capability bounding set as far as it can (an idle keeper of the
/// cap-free pool, see `zygote`): nothing depends on success, the program drops what is left
/// and fails if it cannot. Async-signal-safe.
pub fn drop_bounding_set() {
    for cap in 0..64 {
        // SAFETY: prctl on plain integers.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } < 0 {
            return;
        }
    }
}

/// Opens this thread's list of children (`/proc/thread-self/children`): an idle keeper does
/// it ahead of time, so that its tree kill never needs a new fd. -1 with errno on failure.
/// Async-signal-safe.
pub fn open_child_list() -> i32 {
    // SAFETY: open on a constant path.
    unsafe {
        libc::open(
            c"/proc/thread-self/children".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    }
}

/// SIGKILLs every current child of this (single-threaded) process, and the target's group.
/// `child_list` is [`open_child_list`]'s fd, read from the start each time.
fn kill_children(target: libc::pid_t, child_list: i32) {
    // SAFETY: plain syscalls with stack buffers.
    unsafe {
        libc::kill(-target, libc::SIGKILL);
        let mut buf = [0u8; 4096];
        let mut pid: i64 = 0;
        let mut in_number = false;
        let mut offset: libc::off_t = 0;
        loop {
            // Reading from offset 0 makes the kernel list the children anew.
            let n = libc::pread(child_list, buf.as_mut_ptr().cast(), buf.len(), offset);
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                break;
            }
            offset += n as libc::off_t;
            for &b in &buf[..n as usize] {
                if b.is_ascii_digit() {
                    pid = pid * 10 + (b - b'0') as i64;
                    in_number = true;
                } else {
                    if in_number && pid > 0 {
                        libc::kill(pid as libc::pid_t, libc::SIGKILL);
                    }
                    pid = 0;
                    in_number = false;
                }
            }
        }
        if in_number && pid > 0 {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// The kernel's `struct sigaction` (x86_64 and aarch64 layout), for `rt_sigaction`: glibc's
/// wrapper refuses the signals it reserves (32, 33), which may still be inherited as ignored.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Sets every signal's disposition to default (the server ignores SIGPIPE, and an ignored
/// SIGCHLD would auto-reap). An idle keeper calls it before it takes a request; signals stay
/// blocked while it works, and the target unblocks them before exec. Async-signal-safe.
pub fn reset_all_signal_dispositions() {
    let act = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads a valid struct; the old action is not requested.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &act as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
}

fn timeval_us(t: libc::timeval) -> i64 {
    t.tv_sec * 1_000_000 + t.tv_usec
}

/// Bytes of the [`StartReport`].
pub const START_REPORT_LEN: usize = 16;

/// The keeper's first message on the status pipe: who it is, and whether the program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartReport {
    /// The keeper's pid.
    pub keeper: libc::pid_t,
    /// The program's pid (-1 when it was never started).
    pub target: libc::pid_t,
    /// `(stage, errno)` when starting failed; `None` when the program was executed.
    pub failure: Option<(i32, i32)>,
}

impl StartReport {
    /// Wire form (native endianness: both ends are the same binary).
    pub fn encode(&self) -> [u8; START_REPORT_LEN] {
        let (stage, errno) = self.failure.unwrap_or((0, 0));
        let mut b = [0u8; START_REPORT_LEN];
        b[..4].copy_from_slice(&self.keeper.to_ne_bytes());
        b[4..8].copy_from_slice(&self.target.to_ne_bytes());
        b[8..12].copy_from_slice(&stage.to_ne_bytes());
        b[12..].copy_from_slice(&errno.to_ne_bytes());
        b
    }

    /// Inverse of [`StartReport::encode`].
    pub fn decode(b: &[u8; START_REPORT_LEN]) -> StartReport {
        let int = |r: std::ops::Range<usize>| i32::from_ne_bytes(b[r].try_into().unwrap());
        let (stage, errno) = (int(8..12), int(12..16));
        StartReport {
            keeper: int(0..4),
            target: int(4..8),
            failure: (stage != 0).then_some((stage, errno)),
        }
    }
}

/// Reports that the program could not be started at all (the keeper's own steps) and exits.
/// Async-signal-safe.
pub fn report_start_failure(status_pipe: i32, stage: Stage, errno: i32) -> ! {
    let report = StartReport {
        // SAFETY: getpid has no preconditions.
        keeper: unsafe { libc::getpid() },
        target: -1,
        failure: Some((stage as i32, if errno == 0 { libc::EIO } else { errno })),
    };
    write_all(status_pipe, &report.encode());
    // SAFETY: _exit never returns.
    unsafe { libc::_exit(127) }
}

/// Size of the stack the target uses between clone and exec.
pub const TARGET_STACK: usize = 64 * 1024;

/// How much of the top of that stack an idle keeper faults in ahead of time.
pub const TARGET_STACK_TOUCHED: usize = 16 * 1024;

struct TargetArgs<'a> {
    plan: &'a ExecPlan,
    fds: &'a ChildFds,
    failure: &'a FailureSlot,
}

extern "C" fn target_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to a TargetArgs that outlives the child (the keeper is suspended
    // by CLONE_VFORK until the child execs or exits).
    unsafe {
        let args = &*(arg as *const TargetArgs);
        child::exec_target(args.plan, args.fds, args.failure)
    }
}

/// Starts the target sharing the keeper's memory until it execs (`CLONE_VM | CLONE_VFORK`,
/// as `posix_spawn` does): no page tables are copied. Returns the pid, or -1 with errno set.
unsafe fn spawn_target(
    plan: &ExecPlan,
    fds: &ChildFds,
    failure: &FailureSlot,
    stack: &mut [u8],
) -> libc::pid_t {
    let args = TargetArgs { plan, fds, failure };
    // SAFETY: the stack is live and 16-byte aligned at its top; the keeper waits (VFORK).
    unsafe {
        let top = stack.as_mut_ptr().add(stack.len());
        let top = top.sub(top as usize % 16);
        libc::clone(
            target_entry,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const TargetArgs as *mut libc::c_void,
        )
    }
}

/// The keeper's whole life. Never returns.
///
/// # Safety
/// Must only be called in a freshly forked child with every signal blocked and every disposition
/// at its default, with `plan`/`fds` prepared before the fork. `child_list` is this process's
/// [`open_child_list`] (-1 if that failed: the program is then not started).
pub unsafe fn keeper_main(
    plan: &ExecPlan,
    fds: &ChildFds,
    parent_pid: libc::pid_t,
    target_stack: &mut [u8],
    child_list: i32,
) -> ! {
    // SAFETY: async-signal-safe syscalls only, on data prepared before the fork.
    unsafe {
        // Own process group: terminal signals aimed at the server's group do not reach us.
        libc::setpgid(0, 0);
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        );
        // The parent (the zygote) may have died before PDEATHSIG was armed.
        let mut kill_mode = libc::getppid() != parent_pid;
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0);
        // Without its list of children the keeper could not kill a tree that left the
        // program's session: never start one then.
        let child_list = if child_list >= 0 {
            child_list
        } else {
            let fd = open_child_list();
            if fd < 0 {
                report_start_failure(fds.status_pipe, Stage::ChildList, errno());
            }
            fd
        };
        let (ns_a, ns_b) = match &plan.sandbox.mounts {
            Some(m) => match m.join {
                Some((user, mnt)) => (user, mnt),
                None => (m.capture_fd, -1),
            },
            None => (-1, -1),
        };
        close_all_except(&[
            fds.stdin,
            fds.stdout,
            fds.stderr,
            fds.status_pipe,
            plan.sandbox.ruleset_fd,
            plan.sandbox.port_guard_fd,
            ns_a,
            ns_b,
            child_list,
            plan.sandbox.notify_sock,
        ]);

        let failure = FailureSlot::default();
        let target = spawn_target(plan, fds, &failure, target_stack);
        if target < 0 {
            report_start_failure(fds.status_pipe, Stage::Fork, errno());
        }
        // The target has exec'd or exited by now (CLONE_VFORK): one report says which.
        write_all(
            fds.status_pipe,
            &StartReport {
                keeper: libc::getpid(),
                target,
                failure: failure.get(),
            }
            .encode(),
        );
        libc::close(fds.stdin);
        libc::close(fds.stdout);
        libc::close(fds.stderr);

        let mut waitset: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut waitset);
        libc::sigaddset(&mut waitset, libc::SIGTERM);
        libc::sigaddset(&mut waitset, libc::SIGCHLD);
        let mut target_reaped = false;
        loop {
            // Reap everything that has exited.
            loop {
                let mut status = 0;
                let mut ru: libc::rusage = std::mem::zeroed();
                let r = libc::wait4(-1, &mut status, libc::WNOHANG | libc::__WALL, &mut ru);
                if r > 0 {
                    if r == target {
                        target_reaped = true;
                        let mut all: libc::rusage = std::mem::zeroed();
                        libc::getrusage(libc::RUSAGE_CHILDREN, &mut all);
                        let rec = ExitRecord {
                            wait_status: status,
                            user_us: timeval_us(all.ru_utime),
                            sys_us: timeval_us(all.ru_stime),
                            max_rss_kb: all.ru_maxrss,
                        };
                        write_all(fds.status_pipe, &rec.encode());
                    }
                    continue;
                }
                if r < 0 && errno() == libc::EINTR {
                    continue;
                }
                if r < 0 && target_reaped {
                    // ECHILD: the tree is gone.
                    libc::_exit(0);
                }
                break;
            }
            if kill_mode {
                kill_children(target, child_list);
            }
            let sig = libc::sigwaitinfo(&waitset, std::ptr::null_mut());
            if sig == libc::SIGTERM {
                kill_mode = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_report_roundtrip() {
        for failure in [None, Some((Stage::Chdir as i32, libc::ENOENT))] {
            let r = StartReport {
                keeper: 12,
                target: 34,
                failure,
            };
            assert_eq!(StartReport::decode(&r.encode()), r);
        }
    }

    #[test]
    fn exit_record_roundtrip() {
        let r = ExitRecord {
            wait_status: 9,
            user_us: 1,
            sys_us: 2,
            max_rss_kb: 3,
        };
        assert_eq!(ExitRecord::decode(&r.encode()), r);
    }
}
