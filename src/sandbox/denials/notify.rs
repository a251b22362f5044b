//! seccomp user notification: the filter hands every call it refuses (its EPERM verdicts) to
//! the supervisor, which answers EPERM itself, so the program sees exactly what the plain filter
//! would answer, and records the call with its arguments. Attribution is by construction: each
//! process tree has its own filter and so its own listener.
//!
//! The supervisor decides nothing here: the arguments it reports are the scalars the filter
//! judged (copied into `seccomp_data` by the kernel, so they cannot change under it), never
//! memory of the process.

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::protocol::process::{Denial, DenialKind, DenialSource};

/// One call the filter handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The calling thread (host pid).
    pub pid: u32,
    /// The syscall number (native ABI: other ABIs never reach the listener).
    pub nr: i64,
    /// Its arguments.
    pub args: [u64; 6],
}

/// What a listener has to offer right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// A call waits for its answer.
    Call,
    /// Nothing now.
    Idle,
    /// No process uses the filter any more: nothing will come.
    Gone,
}

/// Whether a call is waiting on `listener`, without blocking (a receive with nothing queued
/// would block).
pub fn pending(listener: BorrowedFd<'_>) -> Pending {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd with a zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    if n <= 0 {
        Pending::Idle
    } else if pfd.revents & libc::POLLIN != 0 {
        Pending::Call
    } else if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        Pending::Gone
    } else {
        Pending::Idle
    }
}

/// Asks the kernel to wake the waiting process on the supervisor's CPU when it answers
/// (`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`, Linux 6.6): a refused call then costs less. Older
/// kernels refuse the flag, which only costs speed.
pub fn prefer_sync_wakeup(listener: BorrowedFd<'_>) {
    // SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP. The kernel takes the flags as the ioctl's argument
    // itself, not through a pointer (a pointer there is refused with EINVAL).
    let flags: libc::c_ulong = 1;
    // SAFETY: the ioctl reads no memory: its argument is the flag word.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS as _,
            flags,
        )
    };
}

/// Receives one call (call only when [`pending`] said [`Pending::Call`]: the receive blocks
/// when nothing is queued), hands it to `record`, then answers it with EPERM, exactly what the
/// plain filter answers. Recording before answering means that a call is on record before its
/// process can go on (and exit): `process/exited` never misses it. `Ok(None)` when the call
/// vanished before it was received (its process was killed).
pub fn answer_eperm(
    listener: BorrowedFd<'_>,
    record: impl FnOnce(&Call),
) -> std::io::Result<Option<Call>> {
    // SAFETY: all-zero is a valid seccomp_notif, and the kernel requires it zeroed.
    let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes one seccomp_notif into the valid buffer.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV as _,
            &mut notif as *mut libc::seccomp_notif,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        };
    }
    let call = Call {
        pid: notif.pid,
        nr: notif.data.nr as i64,
        args: notif.data.args,
    };
    record(&call);
    let resp = libc::seccomp_notif_resp {
        id: notif.id,
        val: 0,
        error: -libc::EPERM,
        flags: 0,
    };
    // SAFETY: the ioctl reads one seccomp_notif_resp from a valid pointer. ENOENT (the caller
    // was killed meanwhile) needs no answer.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND as _,
            &resp as *const libc::seccomp_notif_resp,
        )
    };
    Ok(Some(call))
}

/// The name of a syscall the filter can refuse (`syscall=N` for any other).
pub fn syscall_name(nr: i64) -> String {
    let name = match nr {
        libc::SYS_ptrace => "ptrace",
        libc::SYS_process_vm_readv => "process_vm_readv",
        libc::SYS_process_vm_writev => "process_vm_writev",
        libc::SYS_bpf => "bpf",
        libc::SYS_perf_event_open => "perf_event_open",
        libc::SYS_userfaultfd => "userfaultfd",
        libc::SYS_keyctl => "keyctl",
        libc::SYS_add_key => "add_key",
        libc::SYS_request_key => "request_key",
        libc::SYS_kexec_load => "kexec_load",
        libc::SYS_kexec_file_load => "kexec_file_load",
        libc::SYS_init_module => "init_module",
        libc::SYS_finit_module => "finit_module",
        libc::SYS_delete_module => "delete_module",
        libc::SYS_mount => "mount",
        libc::SYS_umount2 => "umount2",
        libc::SYS_pivot_root => "pivot_root",
        libc::SYS_fsopen => "fsopen",
        libc::SYS_fsconfig => "fsconfig",
        libc::SYS_fsmount => "fsmount",
        libc::SYS_fspick => "fspick",
        libc::SYS_move_mount => "move_mount",
        libc::SYS_open_tree => "open_tree",
        libc::SYS_mount_setattr => "mount_setattr",
        libc::SYS_unshare => "unshare",
        libc::SYS_setns => "setns",
        libc::SYS_acct => "acct",
        libc::SYS_swapon => "swapon",
        libc::SYS_swapoff => "swapoff",
        libc::SYS_reboot => "reboot",
        libc::SYS_io_uring_setup => "io_uring_setup",
        libc::SYS_io_uring_enter => "io_uring_enter",
        libc::SYS_io_uring_register => "io_uring_register",
        libc::SYS_lookup_dcookie => "lookup_dcookie",
        libc::SYS_quotactl => "quotactl",
        libc::SYS_syslog => "syslog",
        libc::SYS_vhangup => "vhangup",
        libc::SYS_socket => "socket",
        libc::SYS_ioctl => "ioctl",
        libc::SYS_clone => "clone",
        libc::SYS_fchmod => "fchmod",
        libc::SYS_fchmodat => "fchmodat",
        libc::SYS_fchmodat2 => "fchmodat2",
        libc::SYS_mkdirat => "mkdirat",
        libc::SYS_mknodat => "mknodat",
        libc::SYS_openat => "openat",
        libc::SYS_prlimit64 => "prlimit64",
        libc::SYS_setpriority => "setpriority",
        libc::SYS_ioprio_set => "ioprio_set",
        libc::SYS_sched_setaffinity => "sched_setaffinity",
        libc::SYS_sched_setscheduler => "sched_setscheduler",
        libc::SYS_sched_setparam => "sched_setparam",
        libc::SYS_sched_setattr => "sched_setattr",
        libc::SYS_migrate_pages => "migrate_pages",
        libc::SYS_move_pages => "move_pages",
        _ => legacy_name(nr),
    };
    if name.is_empty() {
        format!("syscall={nr}")
    } else {
        name.to_string()
    }
}

#[cfg(target_arch = "x86_64")]
fn legacy_name(nr: i64) -> &'static str {
    match nr {
        libc::SYS_chmod => "chmod",
        libc::SYS_creat => "creat",
        libc::SYS_mkdir => "mkdir",
        libc::SYS_mknod => "mknod",
        libc::SYS_open => "open",
        _ => "",
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn legacy_name(_nr: i64) -> &'static str {
    ""
}

/// The denial entry of a refused call: `socket` `AF_INET` `SOCK_STREAM`, `clone`
/// `CLONE_NEWUSER`, `fchmodat` `mode=04755`, `prlimit64` `pid=1`.
pub fn denial(call: &Call) -> Denial {
    Denial {
        kind: DenialKind::Syscall,
        access: vec![syscall_name(call.nr)],
        path: None,
        object: None,
        args: crate::sandbox::seccomp::refusal_args(call.nr, call.args),
        source: DenialSource::Seccomp,
        count: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(nr: i64, args: [u64; 6]) -> Denial {
        denial(&Call { pid: 1, nr, args })
    }

    #[test]
    fn refused_calls_are_decoded() {
        let d = call(
            libc::SYS_socket,
            [2, 1 | libc::SOCK_CLOEXEC as u64, 0, 0, 0, 0],
        );
        assert_eq!(d.access, ["socket"]);
        assert_eq!(d.args, ["AF_INET", "SOCK_STREAM"]);
        let d = call(libc::SYS_socket, [10, 2, 0, 0, 0, 0]);
        assert_eq!(d.args, ["AF_INET6", "SOCK_DGRAM"]);
        let d = call(libc::SYS_socket, [2, 1, 262, 0, 0, 0]);
        assert_eq!(d.args, ["AF_INET", "SOCK_STREAM", "IPPROTO_MPTCP"]);
        let d = call(
            libc::SYS_clone,
            [libc::CLONE_NEWUSER as u64 | 17, 0, 0, 0, 0, 0],
        );
        assert_eq!(
            (d.access[0].as_str(), d.args.as_slice()),
            ("clone", &["CLONE_NEWUSER".to_string()][..])
        );
        let d = call(
            libc::SYS_unshare,
            [libc::CLONE_NEWNET as u64, 0, 0, 0, 0, 0],
        );
        assert_eq!(d.args, ["CLONE_NEWNET"]);
        let d = call(libc::SYS_fchmodat, [u64::MAX - 99, 0, 0o104755, 0, 0, 0]);
        assert_eq!(
            (d.access[0].as_str(), d.args.as_slice()),
            ("fchmodat", &["mode=04755".to_string()][..])
        );
        let d = call(libc::SYS_openat, [0, 0, libc::O_CREAT as u64, 0o2755, 0, 0]);
        assert_eq!(d.args, ["mode=02755"]);
        let d = call(libc::SYS_prlimit64, [4242, 7, 0x7fff_0000, 0, 0, 0]);
        assert_eq!(
            (d.access[0].as_str(), d.args.as_slice()),
            ("prlimit64", &["pid=4242".to_string()][..])
        );
        let d = call(libc::SYS_ioctl, [0, libc::TIOCSTI, 0, 0, 0, 0]);
        assert_eq!(d.args, ["TIOCSTI"]);
        let d = call(libc::SYS_ptrace, [16, 1, 0, 0, 0, 0]);
        assert_eq!((d.access[0].as_str(), d.args.len()), ("ptrace", 0));
        assert_eq!(syscall_name(100_000), "syscall=100000");
    }
}
