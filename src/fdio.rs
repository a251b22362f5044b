//! Non-blocking fds driven by tokio: the pipes and PTY masters of processes, and the server's
//! own stdin and stdout when they are pipes or sockets. It sits below every layer (it imports
//! nothing of the crate) because both `process` and `transport` move bytes through it.
//!
//! The syscalls go through `rustix` (safe, io-safe wrappers; see Cargo.toml for why rustix).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{FileType, OFlags, fcntl_getfl, fcntl_setfl, fstat};
use rustix::io::{Errno, fcntl_dupfd_cloexec};
use rustix::pipe::fcntl_setpipe_size;
use tokio::io::unix::AsyncFd;

/// Asks the kernel for a larger pipe buffer (best effort: fewer, larger reads when streaming).
pub fn enlarge_pipe(fd: impl AsFd, bytes: usize) {
    let _ = fcntl_setpipe_size(fd, bytes);
}

/// A non-blocking duplicate of the server's stdin or stdout when it is a pipe or socket (the
/// usual case for a launcher); `None` for terminals and files, which must stay blocking
/// (tokio's stdio, through its blocking pool, is used for those).
pub fn nonblocking_std(fd: impl AsFd) -> Option<AsyncPipe> {
    let st = fstat(&fd).ok()?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Fifo | FileType::Socket => {}
        _ => return None,
    }
    let dup = fcntl_dupfd_cloexec(&fd, 3).ok()?;
    AsyncPipe::new(dup, false).ok()
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
        let flags = fcntl_getfl(&fd)?;
        fcntl_setfl(&fd, flags | OFlags::NONBLOCK)?;
        // SAFETY: we own `fd`; it stays registered until this value is dropped, and nothing
        // else closes it meanwhile.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(AsyncPipe { fd, eio_is_eof })
    }

    /// Asks for a larger pipe buffer (best effort; see [`enlarge_pipe`]).
    pub fn enlarge(&self, bytes: usize) {
        enlarge_pipe(self.fd.get_ref(), bytes);
    }

    /// The fd (for ioctls).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.get_ref().as_fd()
    }

    /// Waits until the fd is readable (or at EOF/error). Cancel-safe.
    pub async fn readable(&self) -> io::Result<()> {
        let _ = self.fd.readable().await?;
        Ok(())
    }

    /// Reads without waiting: `Ok(None)` when nothing is available, `Ok(Some(0))` at EOF.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // A real read first: tokio's try_io answers WouldBlock without reading when the
            // reactor has not seen the fd ready yet, and the pump's drain at exit must get
            // what a program wrote just before it exited. Only when the fd really is empty
            // does try_io read again, which clears the cached readiness so that the next
            // `readable` really waits.
            let r = match rustix::io::read(self.fd.get_ref(), &mut *buf) {
                Err(Errno::AGAIN) => self.fd.try_io(tokio::io::Interest::READABLE, |inner| {
                    rustix::io::read(inner, &mut *buf).map_err(io::Error::from)
                }),
                other => other.map_err(io::Error::from),
            };
            match r {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(Errno::IO.raw_os_error()) && self.eio_is_eof => {
                    return Ok(Some(0));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads once; `Ok(0)` is EOF. Cancel-safe.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let res = guard.try_io(|inner| {
                rustix::io::read(inner.get_ref(), &mut *buf).map_err(io::Error::from)
            });
            match res {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e))
                    if e.raw_os_error() == Some(Errno::IO.raw_os_error()) && self.eio_is_eof =>
                {
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
            let res = guard
                .try_io(|inner| rustix::io::write(inner.get_ref(), data).map_err(io::Error::from));
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
