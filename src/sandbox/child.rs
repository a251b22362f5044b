//! The only code that runs in the target process between `fork` and `execve`.
//!
//! Everything here is async-signal-safe: no allocation, no locks, no logging. All inputs were
//! prepared in the parent ([`ExecPlan`]); failures cross back as a `(stage, errno)` pair written
//! to a close-on-exec pipe.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;

/// A failure stage reported by the child before `execve`; the parent turns it into a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Stage {
    /// The keeper could not fork the target.
    Fork = 1,
    /// `setsid` (tty) failed.
    Setsid = 2,
    /// `setpgid` failed.
    Setpgid = 3,
    /// Redirecting stdio failed.
    Dup = 4,
    /// Making the terminal the controlling terminal failed.
    ControllingTerminal = 5,
    /// `chdir` to the cwd failed.
    Chdir = 6,
    /// `execve` failed.
    Exec = 7,
}

impl Stage {
    /// Decodes the integer sent over the error pipe.
    pub fn from_raw(raw: i32) -> Option<Stage> {
        Some(match raw {
            1 => Stage::Fork,
            2 => Stage::Setsid,
            3 => Stage::Setpgid,
            4 => Stage::Dup,
            5 => Stage::ControllingTerminal,
            6 => Stage::Chdir,
            7 => Stage::Exec,
            _ => return None,
        })
    }

    /// What the stage was doing, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Stage::Fork => "fork",
            Stage::Setsid => "setsid",
            Stage::Setpgid => "setpgid",
            Stage::Dup => "stdio redirection",
            Stage::ControllingTerminal => "controlling terminal setup",
            Stage::Chdir => "chdir",
            Stage::Exec => "execve",
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
    /// Close-on-exec pipe for `(stage, errno)` failure reports.
    pub error_pipe: i32,
    /// Keeper → server: target pid, then the exit record.
    pub status_pipe: i32,
}

/// Writes a failure report and exits. Async-signal-safe.
pub fn fail(error_pipe: i32, stage: Stage, errno: i32) -> ! {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&(stage as i32).to_ne_bytes());
    msg[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: plain syscalls on a valid buffer; _exit never returns.
    unsafe {
        libc::write(error_pipe, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
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
pub unsafe fn exec_target(plan: &ExecPlan, fds: &ChildFds) -> ! {
    let ep = fds.error_pipe;
    // SAFETY: async-signal-safe syscalls only; every pointer comes from `plan`.
    unsafe {
        if plan.tty {
            if libc::setsid() < 0 {
                fail(ep, Stage::Setsid, errno());
            }
        } else if libc::setpgid(0, 0) < 0 {
            fail(ep, Stage::Setpgid, errno());
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
        if libc::chdir(plan.cwd.as_ptr()) < 0 {
            fail(ep, Stage::Chdir, errno());
        }
        // Only fds 0-2 survive exec; the error pipe closes exactly when exec succeeds.
        close_range_cloexec(3);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(
            plan.program.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
        );
        fail(ep, Stage::Exec, errno())
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
