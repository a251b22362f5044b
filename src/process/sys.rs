//! Thin wrappers over the raw syscalls the supervisor side needs: pipes, pseudo-terminals,
//! and pidfds (non-blocking fd I/O for tokio is [`crate::fdio`]).

use std::io;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketFlags, SocketType,
};
use rustix::process::{Pid, Resource, Signal};
use rustix::pty::OpenptFlags;
use tokio::io::unix::AsyncFd;

/// A close-on-exec pipe: `(read end, write end)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// A close-on-exec `SOCK_SEQPACKET` socket pair.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Receives the fds of one queued message without blocking (close-on-exec); empty when no
/// message is queued or it carried none.
pub fn recv_fds_now(sock: &OwnedFd) -> Vec<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    );
    if received.is_err() {
        return Vec::new();
    }
    control
        .drain()
        .flat_map(|message| match message {
            RecvAncillaryMessage::ScmRights(fds) => fds.collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// Opens `/dev/null` read-only, close-on-exec.
pub fn dev_null() -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        "/dev/null",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Allocates a pseudo-terminal: `(master, slave)`, both close-on-exec, with the given size.
pub fn open_pty(rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::unlockpt(&master)?;
    // TIOCGPTPEER opens the slave without a path lookup (no /dev/pts race).
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)?;
    set_window_size(&master, rows, cols)?;
    Ok((master, slave))
}

/// Sets a terminal's window size (the kernel sends SIGWINCH to its foreground group).
pub fn set_window_size(fd: impl AsFd, rows: u16, cols: u16) -> io::Result<()> {
    let size = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    Ok(rustix::termios::tcsetwinsize(fd, size)?)
}

/// The foreground process group of a terminal (via its master).
pub fn foreground_group(fd: impl AsFd) -> io::Result<libc::pid_t> {
    Ok(rustix::termios::tcgetpgrp(fd)?.as_raw_nonzero().get())
}

/// The signal numbered `sig` (only the named ones: stockade sends nothing else).
fn signal(sig: i32) -> io::Result<Signal> {
    Signal::from_named_raw(sig).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Sends a signal to a process group.
pub fn kill_group(pgid: libc::pid_t, sig: i32) -> io::Result<()> {
    let pgid = Pid::from_raw(pgid)
        .filter(|p| p.as_raw_nonzero().get() > 1)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    Ok(rustix::process::kill_process_group(pgid, signal(sig)?)?)
}

/// Raises the soft fd limit to the hard limit: every process costs the server about five fds
/// (output pipes, status pipe, pidfd, stdin), and 1024 is a common soft default.
pub fn raise_fd_limit() {
    let limit = rustix::process::getrlimit(Resource::Nofile);
    let wanted = limit.maximum.map_or(1 << 20, |max| max.min(1 << 20));
    if limit.current.is_some_and(|cur| cur < wanted) {
        let raised = rustix::process::Rlimit {
            current: Some(wanted),
            maximum: limit.maximum,
        };
        let _ = rustix::process::setrlimit(Resource::Nofile, raised);
    }
}

/// Makes sure fds 0, 1 and 2 are open (on `/dev/null` if not), so that every fd the server
/// creates later is >= 3. Call once at startup, before any thread is spawned.
pub fn ensure_std_fds() {
    // open returns the lowest free fd: while it is one of 0, 1, 2 it fills a hole, which is
    // kept open for good (into_raw_fd); the first fd >= 3 shows that all three are open.
    while let Ok(fd) = rustix::fs::open("/dev/null", OFlags::RDWR, Mode::empty()) {
        if fd.as_raw_fd() >= 3 {
            break; // closed here
        }
        let _standard_stream = fd.into_raw_fd();
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
    handle: Handle,
}

/// How a [`PidFd`] reaches its process.
#[derive(Debug)]
enum Handle {
    /// Through a pidfd: never a recycled pid.
    Fd(AsyncFd<OwnedFd>),
    /// The process was gone (or could not be opened) when the pidfd was asked for. Its pid
    /// number may already belong to another process (the zygote reaps its keepers as soon as
    /// they exit), so nothing is ever sent to it.
    Gone,
    /// Only on kernels without `pidfd_open` (ENOSYS, before Linux 5.3): plain pids.
    PlainPid,
}

impl PidFd {
    /// Opens a pidfd for `pid`. A process that is already gone, or that cannot be opened
    /// (e.g. no file descriptor left), is treated as gone: it is never signalled by its pid
    /// number, which another process may hold by now. Plain pids are used only on kernels
    /// without pidfds.
    pub fn open(pid: libc::pid_t) -> PidFd {
        let opened = match Pid::from_raw(pid) {
            Some(p) => rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()),
            None => Err(rustix::io::Errno::SRCH),
        };
        let handle = match opened {
            Ok(owned) => {
                // SAFETY: `owned` is a fresh pidfd (pollable: readable on exit) owned by the
                // AsyncFd from here until it is dropped; nothing else closes it.
                match unsafe {
                    AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE)
                } {
                    Ok(fd) => Handle::Fd(fd),
                    Err(e) => {
                        tracing::error!("watching process {pid}: {e}; treated as gone");
                        Handle::Gone
                    }
                }
            }
            Err(rustix::io::Errno::NOSYS) => Handle::PlainPid,
            Err(rustix::io::Errno::SRCH) => Handle::Gone,
            Err(e) => {
                tracing::error!("opening a pidfd for process {pid}: {e}; treated as gone");
                Handle::Gone
            }
        };
        PidFd { pid, handle }
    }

    /// True when the process was gone before it could be watched: signals and waits are
    /// no-ops for it.
    pub fn is_gone(&self) -> bool {
        matches!(self.handle, Handle::Gone)
    }

    /// The pid.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Sends a signal; `Ok(false)` when the process is already gone.
    pub fn signal(&self, sig: i32) -> io::Result<bool> {
        let sig = signal(sig)?;
        let sent = match (&self.handle, Pid::from_raw(self.pid)) {
            (Handle::Fd(fd), _) => rustix::process::pidfd_send_signal(fd.get_ref(), sig),
            (Handle::PlainPid, Some(pid)) => rustix::process::kill_process(pid, sig),
            (Handle::Gone, _) | (Handle::PlainPid, None) => Err(rustix::io::Errno::SRCH),
        };
        match sent {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::SRCH) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until the process has exited (it is reaped by its parent, the zygote).
    pub async fn wait(&self) -> io::Result<()> {
        match &self.handle {
            Handle::Fd(fd) => {
                // A pidfd becomes readable when the process exits.
                let _ = fd.readable().await?;
                return Ok(());
            }
            Handle::Gone => return Ok(()),
            Handle::PlainPid => {}
        }
        // Without pidfds: poll until the pid is gone (the zygote reaps its keepers on
        // SIGCHLD).
        while let Some(pid) = Pid::from_raw(self.pid)
            && rustix::process::test_kill_process(pid).is_ok()
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::PidFd;

    /// A keeper the zygote reaped before the server asked for its pidfd must never be
    /// signalled by its pid number: that number may belong to another client's process by
    /// then. (Before, the handle fell back to `kill(pid)` whenever `pidfd_open` failed.)
    #[tokio::test]
    async fn a_process_gone_before_it_is_opened_is_never_signalled_by_pid() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        child.wait().unwrap();
        let handle = PidFd::open(pid);
        assert!(
            handle.is_gone(),
            "a reaped pid must not be tracked by number"
        );
        assert!(!handle.signal(libc::SIGTERM).unwrap());
        handle.wait().await.unwrap();
    }

    #[tokio::test]
    async fn a_live_process_is_signalled_through_its_pidfd() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let handle = PidFd::open(child.id() as libc::pid_t);
        assert!(!handle.is_gone());
        assert!(handle.signal(libc::SIGKILL).unwrap());
        child.wait().unwrap();
        handle.wait().await.unwrap();
    }
}
