//! Thin wrappers over the raw syscalls the supervisor side needs: pipes, pseudo-terminals,
//! pidfds and non-blocking fd I/O for tokio.

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

    /// Waits for the process to exit and reaps it; returns the raw wait status.
    pub async fn wait(&self) -> io::Result<i32> {
        if let Some(fd) = &self.fd {
            let _ = fd.readable().await?;
            return waitpid_blocking(self.pid);
        }
        let pid = self.pid;
        tokio::task::spawn_blocking(move || waitpid_blocking(pid))
            .await
            .map_err(io::Error::other)?
    }
}

fn waitpid_blocking(pid: libc::pid_t) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        return Ok(status);
    }
}

/// A non-blocking fd (pipe end or PTY master) driven by tokio.
#[derive(Debug)]
pub struct AsyncPipe {
    fd: AsyncFd<OwnedFd>,
    /// EIO on read means EOF (a PTY master after the last slave closed).
    eio_is_eof: bool,
}

impl AsyncPipe {
    /// Registers `fd` with tokio, making it non-blocking.
    pub fn new(fd: OwnedFd, eio_is_eof: bool) -> io::Result<AsyncPipe> {
        let raw = fd.as_raw_fd();
        // SAFETY: F_GETFL/F_SETFL on an fd we own.
        unsafe {
            let flags = cvt(libc::fcntl(raw, libc::F_GETFL))?;
            cvt(libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
        }
        // SAFETY: we own `fd`; it stays registered until this value is dropped.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(AsyncPipe { fd, eio_is_eof })
    }

    /// The raw fd (for ioctls).
    pub fn raw(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }

    /// Reads once; `Ok(0)` is EOF. Cancel-safe.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let res = guard.try_io(|inner| {
                // SAFETY: reading into a valid mutable slice.
                let n = unsafe {
                    libc::read(
                        inner.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) && self.eio_is_eof => {
                    return Ok(0);
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data`.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            let res = guard.try_io(|inner| {
                // SAFETY: writing from a valid slice.
                let n = unsafe {
                    libc::write(
                        inner.get_ref().as_raw_fd(),
                        data.as_ptr().cast(),
                        data.len(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

/// Blocks every signal in the calling thread (the spawner thread: forked keepers then start
/// with every signal blocked, so no inherited handler can run in them).
pub fn block_all_signals_in_this_thread() {
    // SAFETY: sigset manipulation on a local value.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    }
}
