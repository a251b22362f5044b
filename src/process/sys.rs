//! Thin wrappers over the raw syscalls the supervisor side needs: pipes, pseudo-terminals,
//! and pidfds (non-blocking fd I/O for tokio is [`crate::fdio`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A close-on-exec pipe: `(read end, write end)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A close-on-exec `SOCK_SEQPACKET` socket pair.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two fds into the array.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Receives the fds of one queued message without blocking (close-on-exec); empty when no
/// message is queued or it carried none.
pub fn recv_fds_now(sock: &OwnedFd) -> Vec<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for a cmsg header and four ints, 8-byte aligned.
    let mut control = [0u64; 6];
    // SAFETY: a zeroed msghdr is valid; it points to the live buffers above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: recvmsg into the buffers described by msg.
    let n = unsafe {
        libc::recvmsg(
            sock.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    let mut out = Vec::new();
    if n < 0 {
        return out;
    }
    // SAFETY: walking the control messages the kernel wrote; each fd is fresh and ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<i32>();
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / std::mem::size_of::<i32>() {
                    out.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    out
}

/// Opens `/dev/null` read-only, close-on-exec.
pub fn dev_null() -> io::Result<OwnedFd> {
    // SAFETY: open with a static C string.
    let fd = cvt(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Allocates a pseudo-terminal: `(master, slave)`, both close-on-exec, with the given size.
pub fn open_pty(rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: open with a static C string.
    let master = cvt(unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh fd.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    // TIOCGPTPEER opens the slave without a path lookup (no /dev/pts race).
    // SAFETY: the ioctl returns a new fd.
    let slave = cvt(unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh fd.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    set_window_size(master.as_raw_fd(), rows, cols)?;
    Ok((master, slave))
}

/// Sets a terminal's window size (the kernel sends SIGWINCH to its foreground group).
pub fn set_window_size(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) })?;
    Ok(())
}

/// The foreground process group of a terminal (via its master).
pub fn foreground_group(fd: RawFd) -> io::Result<libc::pid_t> {
    // SAFETY: plain ioctl wrapper.
    let pgid = unsafe { libc::tcgetpgrp(fd) };
    if pgid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pgid)
    }
}

/// Sends a signal to a process group.
pub fn kill_group(pgid: libc::pid_t, sig: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: kill has no memory effects.
    cvt(unsafe { libc::kill(-pgid, sig) })?;
    Ok(())
}

/// Raises the soft fd limit to the hard limit: every process costs the server about five fds
/// (output pipes, status pipe, pidfd, stdin), and 1024 is a common soft default.
pub fn raise_fd_limit() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max.min(1 << 20);
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// Makes sure fds 0, 1 and 2 are open (on `/dev/null` if not), so that every fd the server
/// creates later is >= 3. Call once at startup, before any thread is spawned.
pub fn ensure_std_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            // SAFETY: open returns the lowest free fd, which is `fd`.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

unsafe extern "C" {
    /// The C library's environment block (`environ(7)`): a NULL-terminated array of
    /// `NAME=value` strings, at first pointing into the area `/proc/<pid>/environ` shows.
    static mut environ: *mut *mut libc::c_char;
}

/// Takes a secret from the environment: returns the value of `name`, overwrites the value's
/// bytes in place (so `/proc/<pid>/environ`, which shows the environment the process was
/// started with, no longer holds it) and removes the variable (so no later capture of the
/// environment for children sees it). Call at startup, before any thread is spawned.
pub fn take_env_secret(name: &str) -> Option<String> {
    let value = std::env::var(name).ok();
    let prefix = format!("{name}=");
    // SAFETY: reads the pointer value of the C library's `environ`; no thread can change it.
    let mut entry = unsafe { (&raw const environ).read() };
    while !entry.is_null() {
        // SAFETY: `entry` points into the NULL-terminated `environ` array, not past its end.
        let string = unsafe { *entry };
        if string.is_null() {
            break;
        }
        // SAFETY: every `environ` entry is a NUL-terminated string.
        let len = unsafe { std::ffi::CStr::from_ptr(string) }.to_bytes().len();
        // SAFETY: `string` has `len` readable bytes; compares the name part only.
        let head = unsafe { std::slice::from_raw_parts(string as *const u8, len) };
        if head.starts_with(prefix.as_bytes()) {
            // SAFETY: overwrites the value bytes of this writable string, before its NUL.
            unsafe { std::ptr::write_bytes(string.add(prefix.len()), 0, len - prefix.len()) };
        }
        // SAFETY: the next element exists: this one was not the terminating NULL.
        entry = unsafe { entry.add(1) };
    }
    // SAFETY: no other thread exists yet (the caller's contract), so nothing reads the
    // environment concurrently.
    unsafe { std::env::remove_var(name) };
    value
}

/// A pidfd for one of our children: signals through it cannot hit a recycled pid.
#[derive(Debug)]
pub struct PidFd {
    pid: libc::pid_t,
    fd: Option<AsyncFd<OwnedFd>>,
}

impl PidFd {
    /// Opens a pidfd for `pid` (falls back to plain pids on kernels without pidfds).
    pub fn open(pid: libc::pid_t) -> PidFd {
        // SAFETY: pidfd_open returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
        let fd = if fd >= 0 {
            // SAFETY: fresh fd, owned here; pidfds are pollable (readable on exit).
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: we own the fd and keep it registered until drop.
            unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }.ok()
        } else {
            None
        };
        PidFd { pid, fd }
    }

    /// The pid.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Sends a signal; `Ok(false)` when the process is already gone.
    pub fn signal(&self, sig: i32) -> io::Result<bool> {
        let r = match &self.fd {
            // SAFETY: pidfd_send_signal with a null info pointer.
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.get_ref().as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            },
            // SAFETY: kill has no memory effects.
            None => (unsafe { libc::kill(self.pid, sig) }) as libc::c_long,
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(true)
    }

    /// Waits until the process has exited (it is reaped by its parent, the zygote).
    pub async fn wait(&self) -> io::Result<()> {
        if let Some(fd) = &self.fd {
            // A pidfd becomes readable when the process exits.
            let _ = fd.readable().await?;
            return Ok(());
        }
        // Without pidfds: poll until the pid is gone (the zygote reaps within ~200 ms).
        // SAFETY: kill with signal 0 only checks existence.
        while unsafe { libc::kill(self.pid, 0) } == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(())
    }
}
