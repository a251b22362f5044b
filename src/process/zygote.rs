//! The zygote: a small, single-threaded process forked from the server at startup, before any
//! thread or large allocation exists. It forks the keepers.
//!
//! Why: fork cost grows with the parent's touched memory (about 60 µs per MiB on the project's
//! machines), and the tokio server is several MiB; forking from a ~1 MiB zygote keeps spawn
//! latency close to a plain `posix_spawn`. Because the zygote is single-threaded, it and the
//! keepers may allocate freely (only the target, between its fork and exec, must not).
//!
//! Lifetime: the zygote has `PR_SET_PDEATHSIG(SIGKILL)` bound to the server's main thread; each
//! keeper has `PR_SET_PDEATHSIG(SIGTERM)` bound to the zygote. So when the server dies for any
//! reason, the zygote dies, every keeper gets SIGTERM and kills its tree.
//!
//! The zygote keeps a small pool of **idle keepers**, pre-forked and blocked in `recvmsg` on
//! the shared `SOCK_SEQPACKET` socket, so that a spawn is one `sendmsg` away from a running
//! keeper: no fork on the critical path. A keeper that takes a request tells the zygote (its
//! pid on a pipe), and the zygote forks replacements when they do not compete with a spawn
//! for the CPU: in a batch once no keeper is starting a program (each one's exit arrives as
//! SIGCHLD), at once only when no idle keeper is left.
//!
//! Wire format: one datagram per request: the request length (4 bytes), then the encoded
//! [`KeeperRequest`] when it fits ([`INLINE_MAX`]), with fds attached (`SCM_RIGHTS`): stdin,
//! stdout, stderr, the status pipe, then the optional ones (see [`FDS_PER_REQUEST`]); a request
//! too large to travel inline comes in a memfd. The keeper answers on the status pipe: a
//! [`keeper::StartReport`], then the exit record.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::keeper;
use crate::sandbox::child::{ChildFds, ChildSandbox, ExecPlan, MountKind, MountPlan};
use crate::sandbox::seccomp;

/// What a keeper needs to start the target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeeperRequest {
    /// Resolved program path.
    pub program: Vec<u8>,
    /// argv (argv[0] already replaced by `arg0` when given).
    pub argv: Vec<Vec<u8>>,
    /// `NAME=value` entries.
    pub envp: Vec<Vec<u8>>,
    /// Working directory.
    pub cwd: Vec<u8>,
    /// Run on a PTY (new session, controlling terminal).
    pub tty: bool,
    /// Encoded seccomp programs (empty: none).
    pub seccomp: Vec<u8>,
    /// A Landlock ruleset fd is attached as the 7th fd.
    pub has_ruleset: bool,
    /// Set no_new_privs.
    pub no_new_privs: bool,
    /// Drop every capability (server runs as root).
    pub drop_caps: bool,
    /// RLIMIT_CORE = 0.
    pub no_core: bool,
    /// Mounts for a private mount namespace: kind byte (0 read-only, 1 hide dir, 2 hide file,
    /// 3 read-only if present) followed by the path. Empty: no mount namespace.
    pub mounts: Vec<Vec<u8>>,
    /// Create a user namespace for the mounts (the server is not root).
    pub userns: bool,
    /// Resource limits: each entry is the resource number (u32 LE) and the value (u64 LE).
    pub rlimits: Vec<Vec<u8>>,
    /// Ignore SIGXFSZ (file size limit set).
    pub ignore_sigxfsz: bool,
    /// The ruleset denying the server's own ports is attached after the ruleset.
    pub has_port_guard: bool,
    /// A process cgroup's `cgroup.procs` is attached after the rulesets: the keeper joins it
    /// before starting the program.
    pub has_cgroup: bool,
    /// How the target gets its mount namespace (when it needs one).
    pub namespace: NamespaceMode,
    /// `seccomp` holds a user-notification filter and its plain fallback; the socket the
    /// target sends the filter's listener on is attached last.
    pub has_notify_socket: bool,
}

/// How the target gets its mount namespace; the fds it needs follow the cgroup's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NamespaceMode {
    /// Build it from `mounts` (none when `mounts` is empty).
    #[default]
    Build,
    /// Build it, then send its fds back over the attached socket (see
    /// [`crate::sandbox::mountns`]).
    BuildAndCapture,
    /// Join the attached namespace: the user namespace fd first when `userns` is set, then
    /// the mount namespace fd. `mounts` is empty.
    Join,
}

impl NamespaceMode {
    fn byte(self) -> u8 {
        match self {
            NamespaceMode::Build => 0,
            NamespaceMode::BuildAndCapture => 1,
            NamespaceMode::Join => 2,
        }
    }

    fn from_byte(b: u8) -> Option<NamespaceMode> {
        Some(match b {
            0 => NamespaceMode::Build,
            1 => NamespaceMode::BuildAndCapture,
            2 => NamespaceMode::Join,
            _ => return None,
        })
    }

    /// How many fds the mode attaches.
    pub fn fds(self, userns: bool) -> usize {
        match self {
            NamespaceMode::Build => 0,
            NamespaceMode::BuildAndCapture => 1,
            NamespaceMode::Join => 1 + usize::from(userns),
        }
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_list(out: &mut Vec<u8>, items: &[Vec<u8>]) {
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for i in items {
        put(out, i);
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_le_bytes(*head))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        if self.0.len() < n {
            return None;
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(b.to_vec())
    }
    fn list(&mut self) -> Option<Vec<Vec<u8>>> {
        let n = self.u32()? as usize;
        (0..n).map(|_| self.bytes()).collect()
    }
}

impl KeeperRequest {
    /// Encodes the request (length-prefixed fields).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put(&mut out, &self.program);
        put_list(&mut out, &self.argv);
        put_list(&mut out, &self.envp);
        put(&mut out, &self.cwd);
        put(&mut out, &self.seccomp);
        put_list(&mut out, &self.mounts);
        put_list(&mut out, &self.rlimits);
        out.push(self.ignore_sigxfsz as u8);
        out.push(self.userns as u8);
        out.push(self.tty as u8);
        out.push(self.has_ruleset as u8);
        out.push(self.no_new_privs as u8);
        out.push(self.drop_caps as u8);
        out.push(self.no_core as u8);
        out.push(self.has_cgroup as u8);
        out.push(self.namespace.byte());
        out.push(self.has_port_guard as u8);
        out.push(self.has_notify_socket as u8);
        out
    }

    /// Decodes a request; `None` if malformed.
    pub fn decode(bytes: &[u8]) -> Option<KeeperRequest> {
        let mut r = Reader(bytes);
        let req = KeeperRequest {
            program: r.bytes()?,
            argv: r.list()?,
            envp: r.list()?,
            cwd: r.bytes()?,
            seccomp: r.bytes()?,
            mounts: r.list()?,
            rlimits: r.list()?,
            ignore_sigxfsz: {
                let (b, rest) = r.0.split_first()?;
                r.0 = rest;
                *b != 0
            },
            userns: {
                let (b, rest) = r.0.split_first()?;
                r.0 = rest;
                *b != 0
            },
            tty: *r.0.first()? != 0,
            has_ruleset: *r.0.get(1)? != 0,
            no_new_privs: *r.0.get(2)? != 0,
            drop_caps: *r.0.get(3)? != 0,
            no_core: *r.0.get(4)? != 0,
            has_cgroup: *r.0.get(5)? != 0,
            namespace: NamespaceMode::from_byte(*r.0.get(6)?)?,
            has_port_guard: *r.0.get(7)? != 0,
            has_notify_socket: *r.0.get(8)? != 0,
        };
        if r.0.len() != 9 {
            return None;
        }
        Some(req)
    }

    /// The exec plan; `ns_fds` are the fds the namespace mode attached, in order.
    fn into_plan(
        self,
        ruleset_fd: i32,
        port_guard_fd: i32,
        ns_fds: &[i32],
        notify_sock: i32,
    ) -> Option<ExecPlan> {
        let c = |b: Vec<u8>| CString::new(b).ok();
        let mut sandbox = ChildSandbox::new(
            ruleset_fd,
            seccomp::decode(&self.seccomp)?,
            self.no_new_privs,
            self.drop_caps,
            self.no_core,
        );
        sandbox.port_guard_fd = port_guard_fd;
        if self.has_notify_socket {
            if notify_sock < 0 || sandbox.seccomp.len() != 2 {
                return None;
            }
            sandbox.notify_sock = notify_sock;
        }
        for rl in &self.rlimits {
            if rl.len() != 12 {
                return None;
            }
            let resource = u32::from_le_bytes(rl[..4].try_into().ok()?) as i32;
            let value = u64::from_le_bytes(rl[4..].try_into().ok()?);
            sandbox.rlimits.push((resource, value));
        }
        sandbox.ignore_sigxfsz = self.ignore_sigxfsz;
        if ns_fds.len() != self.namespace.fds(self.userns) {
            return None;
        }
        if self.namespace == NamespaceMode::Join {
            let (user, mnt) = match ns_fds {
                [user, mnt] => (*user, *mnt),
                [mnt] => (-1, *mnt),
                _ => return None,
            };
            sandbox.mounts = Some(MountPlan {
                join: Some((user, mnt)),
                ..MountPlan::default()
            });
        } else if !self.mounts.is_empty() {
            let mut ops = Vec::new();
            for m in self.mounts {
                let (kind, path) = m.split_first()?;
                let kind = match kind {
                    0 => MountKind::ReadOnly,
                    1 => MountKind::HideDir,
                    2 => MountKind::HideFile,
                    3 => MountKind::ReadOnlyIfPresent,
                    4 => MountKind::PinLink,
                    5 => MountKind::HostReadOnly,
                    6 => MountKind::BindWritable,
                    _ => return None,
                };
                ops.push((kind, CString::new(path.to_vec()).ok()?));
            }
            let userns = if self.userns {
                // SAFETY: getuid/getgid have no preconditions.
                let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
                Some((
                    CString::new(format!("{uid} {uid} 1")).ok()?,
                    CString::new(format!("{gid} {gid} 1")).ok()?,
                ))
            } else {
                None
            };
            sandbox.mounts = Some(MountPlan {
                userns,
                ops,
                join: None,
                capture_fd: ns_fds.first().copied().unwrap_or(-1),
            });
        }
        Some(ExecPlan::new(
            c(self.program)?,
            self.argv.into_iter().map(c).collect::<Option<Vec<_>>>()?,
            self.envp.into_iter().map(c).collect::<Option<Vec<_>>>()?,
            c(self.cwd)?,
            self.tty,
            sandbox,
        ))
    }
}

/// The server's handle on the zygote: the request sockets.
pub struct Zygote {
    sock: OwnedFd,
    cap_free: Option<OwnedFd>,
}

/// A `SOCK_SEQPACKET` pair (close-on-exec).
fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut pair = [0; 2];
    // SAFETY: socketpair writes two fds.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) })
}

/// Number of fds passed with every request (stdin, stdout, stderr, status pipe);
/// then, in this order and only when present: the request memfd (a request too large to travel
/// inline), the Landlock ruleset, the port guard ruleset, the process cgroup's `cgroup.procs`, the namespace fds of
/// [`NamespaceMode`], the seccomp listener socket.
const FDS_PER_REQUEST: usize = 4;

/// Requests up to this size travel inside the datagram; larger ones in a memfd (sent as the
/// fifth fd). Most requests are a few KiB: the inline path saves a memfd per spawn.
pub const INLINE_MAX: usize = 32 * 1024;
const MAX_FDS_PER_REQUEST: usize = 11;

/// Idle keepers kept ready.
const POOL_SIZE: usize = 4;

/// The pool is refilled (to [`POOL_SIZE`]) once it is down to this many and no spawn is in
/// progress: in batches, between spawns.
const REFILL_AT: usize = 2;

/// A keeper counts as starting its program for this long after it took the request, or until
/// it exits (a short program's whole life); a long-running program does not hold refills back.
const SPAWN_WINDOW: std::time::Duration = std::time::Duration::from_millis(5);

/// With nothing in progress, the pool is topped up after this long without a request (ms).
const QUIET_MS: i32 = 200;

impl Zygote {
    /// Forks the zygote. Must be called while the process is single-threaded (start of main).
    pub fn start() -> io::Result<Zygote> {
        let (server_end, zygote_end) = seqpacket_pair()?;
        // SAFETY: geteuid has no preconditions.
        let (cap_free_server, cap_free_zygote) = if unsafe { libc::geteuid() } == 0 {
            let (a, b) = seqpacket_pair()?;
            (Some(a), Some(b))
        } else {
            (None, None)
        };
        // SAFETY: getpid has no preconditions.
        let server_pid = unsafe { libc::getpid() };
        // SAFETY: called before any thread exists, so the child may run arbitrary code.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            drop(server_end);
            drop(cap_free_server);
            zygote_main([Some(zygote_end), cap_free_zygote], server_pid);
        }
        drop(zygote_end);
        Ok(Zygote {
            sock: server_end,
            cap_free: cap_free_server,
        })
    }

    /// The request socket (the spawner sends on it without blocking).
    pub fn socket(&self) -> &OwnedFd {
        &self.sock
    }

    /// The request socket of the keepers that emptied their capability bounding set while
    /// idle (a server running as root only): for requests with
    /// [`KeeperRequest::drop_caps`], whose program then has nothing left to drop.
    pub fn cap_free_socket(&self) -> Option<&OwnedFd> {
        self.cap_free.as_ref()
    }

    /// Builds the memfd carrying an encoded request too large to travel inline.
    pub fn request_memfd(encoded: &[u8]) -> io::Result<OwnedFd> {
        // SAFETY: memfd_create with a static name.
        let fd = unsafe { libc::memfd_create(c"stockade-request".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut file = std::fs::File::from(fd);
        file.write_all(encoded)?;
        Ok(OwnedFd::from(file))
    }
}

/// A `msghdr` with one data buffer and a control buffer for `SCM_RIGHTS`; both buffers must
/// outlive every use of the result.
fn msghdr_over(iov: &mut libc::iovec, control: &mut [u8]) -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len();
    msg
}

/// Sends one request datagram without blocking (`WouldBlock` when the queue is full): the
/// request's length, then `inline` (the request itself, or nothing when it is in a memfd).
pub fn send_request(sock: RawFd, len: u32, inline: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut data = Vec::with_capacity(4 + inline.len());
    data.extend_from_slice(&len.to_le_bytes());
    data.extend_from_slice(inline);
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let msg = msghdr_over(&mut iov, &mut cbuf);
    // SAFETY: msghdr/cmsg built over live buffers of the right sizes.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), fds.len());
        loop {
            let n = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT);
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            return Ok(());
        }
    }
}

/// Receives one request datagram into `buf` (at least `4 + INLINE_MAX` bytes) and its fds:
/// the request length, the bytes received after it, and the fds. `None` when the server is
/// gone.
fn recv_request(sock: RawFd, buf: &mut [u8]) -> Option<(u32, usize, Vec<OwnedFd>)> {
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS_PER_REQUEST * 4) as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut msg = msghdr_over(&mut iov, &mut cbuf);
    // SAFETY: msghdr/cmsg over live buffers; received fds are taken into OwnedFd once.
    unsafe {
        let n = loop {
            let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break n;
        };
        if n < 4 || msg.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let mut fds = Vec::new();
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize) / 4;
                let data = libc::CMSG_DATA(cmsg).cast::<i32>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(*data.add(i)));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
        Some((len, n as usize - 4, fds))
    }
}

/// Reaps every keeper that exited; those still in `starting` are done starting.
fn reap_keepers(starting: &mut Vec<(libc::pid_t, std::time::Instant)>) {
    loop {
        let mut status = 0;
        // SAFETY: the zygote is single-threaded and its only children are keepers.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r <= 0 {
            return;
        }
        starting.retain(|(pid, _)| *pid != r);
    }
}

/// The zygote's life: `socks` are the request sockets of the two pools, the plain one and (a
/// root server only) the one of keepers without a capability bounding set.
fn zygote_main(socks: [Option<OwnedFd>; 2], server_pid: libc::pid_t) -> ! {
    let mut taken = [0; 2];
    // SAFETY: single-threaded child; plain syscalls.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        // The server may have died before PDEATHSIG was armed: then this process has been
        // reparented. Compared with the server's pid, not with 1: the server itself is pid 1
        // as a container's entrypoint (and an orphan may go to a subreaper instead of 1).
        if libc::getppid() != server_pid {
            libc::_exit(0);
        }
        // Do not hold the server's stdin/stdout (the client waits for their EOF).
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            if null > 2 {
                libc::close(null);
            }
        }
        // Only the sockets and stderr stay open.
        let mut keep: Vec<u32> = socks
            .iter()
            .flatten()
            .map(|s| s.as_raw_fd() as u32)
            .collect();
        keep.sort_unstable();
        let mut next = 3u32;
        for s in keep {
            if s > next {
                libc::syscall(libc::SYS_close_range, next, s - 1, 0u32);
            }
            next = s + 1;
        }
        libc::syscall(libc::SYS_close_range, next, u32::MAX, 0u32);
        if libc::pipe2(taken.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
            libc::_exit(1);
        }
        // Terminal signals aimed at the server's group must not kill the zygote.
        libc::setpgid(0, 0);
        // Blocked here and in working keepers (which wait for them with sigwaitinfo).
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    // SIGCHLD (blocked) as a readable fd: a keeper's exit wakes the loop at once. -1 when it
    // cannot be had: then exits are seen at the next timeout.
    // SAFETY: sigset operations on a stack set; signalfd creates a new fd.
    let sigchld = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
    };
    // Idle keepers per pool (the second one exists for a root server only).
    let mut idle = [0usize; 2];
    let mut quiet = true;
    // Keepers that took a request less than SPAWN_WINDOW ago and have not exited: spawns in
    // progress (pid, when taken).
    let mut starting: Vec<(libc::pid_t, std::time::Instant)> = Vec::new();
    loop {
        let now = std::time::Instant::now();
        starting.retain(|(_, at)| now.duration_since(*at) < SPAWN_WINDOW);
        // Fork at once when no idle keeper is left (a request would wait for the fork);
        // otherwise refill in one batch once the pool is down to REFILL_AT and nothing is
        // being started, or after a quiet moment: a fork, and the new keeper's page faults,
        // compete with a spawn in progress for the CPU.
        for (pool, sock) in socks.iter().enumerate() {
            let Some(sock) = sock else { continue };
            let cap_free = pool == 1;
            while idle[pool] < POOL_SIZE
                && (idle[pool] == 0 || quiet || (idle[pool] <= REFILL_AT && starting.is_empty()))
            {
                // SAFETY: single-threaded; the child runs the idle keeper and never returns.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    idle_keeper(sock, taken[1], me, cap_free);
                }
                if pid < 0 {
                    break;
                }
                idle[pool] += 1;
            }
        }
        reap_keepers(&mut starting);
        let mut pfds = [
            libc::pollfd {
                fd: taken[0],
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sigchld,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // While a spawn is in progress, wake when its window ends; otherwise a quiet moment
        // (which also bounds how long zombies linger without a SIGCHLD fd).
        let timeout = starting
            .iter()
            .map(|(_, at)| SPAWN_WINDOW.saturating_sub(at.elapsed()).as_millis() as i32 + 1)
            .min()
            .unwrap_or(QUIET_MS);
        let waits_quietly = starting.is_empty();
        let nfds = if sigchld >= 0 { 2 } else { 1 };
        // SAFETY: poll on valid pollfds.
        let ready = unsafe { libc::poll(pfds.as_mut_ptr(), nfds, timeout) };
        if ready <= 0 {
            quiet = waits_quietly;
            continue;
        }
        if pfds[1].revents != 0 {
            let mut info = [0u8; 128 * 4];
            // SAFETY: reading into a stack buffer (non-blocking): drains queued SIGCHLDs.
            while unsafe { libc::read(sigchld, info.as_mut_ptr().cast(), info.len()) } > 0 {}
        }
        if pfds[0].revents != 0 {
            // Each taken keeper writes its pid (4 bytes, atomically), negated for the
            // cap-free pool.
            let mut buf = [0u8; 64 * 4];
            // SAFETY: reading into a stack buffer.
            let n = unsafe { libc::read(taken[0], buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                let now = std::time::Instant::now();
                for pid in buf[..n as usize].chunks_exact(4) {
                    let pid = libc::pid_t::from_ne_bytes(pid.try_into().expect("4 bytes"));
                    let pool = usize::from(pid < 0);
                    idle[pool] = idle[pool].saturating_sub(1);
                    if starting.len() < 8 * POOL_SIZE {
                        starting.push((pid.abs(), now));
                    }
                }
            }
            quiet = false;
        }
    }
}

/// An idle keeper: waits for one request, then becomes that request's keeper.
fn idle_keeper(sock: &OwnedFd, taken: RawFd, zygote_pid: libc::pid_t, cap_free: bool) -> ! {
    // SAFETY: single-threaded child; plain syscalls.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::getppid() != zygote_pid {
            libc::_exit(0);
        }
        // While idle, SIGTERM (the zygote died) must simply end us.
        let mut term: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut term);
        libc::sigaddset(&mut term, libc::SIGTERM);
        libc::sigprocmask(libc::SIG_UNBLOCK, &term, std::ptr::null_mut());
    }
    // Do now, while idle, what the spawn path would otherwise pay for: default signal
    // dispositions, and the pages a spawn touches (the top of the target's stack, the start of
    // the request buffer). Page faults in a fresh fork are slow; touching more than a spawn
    // uses only slows the spawn that runs while this keeper is being made.
    keeper::reset_all_signal_dispositions();
    if cap_free {
        // The program drops whatever is left (and checks); emptying the bounding set costs a
        // credentials copy per capability (~65 µs for all), better paid here than on a spawn.
        keeper::drop_bounding_set();
    }
    // The tree kill's list of children, opened before any request (see keeper.rs); a failure
    // is reported by the keeper when a request comes.
    let child_list = keeper::open_child_list();
    let mut target_stack = vec![0u8; keeper::TARGET_STACK];
    let top = target_stack.len();
    for at in (top - keeper::TARGET_STACK_TOUCHED..top).step_by(4096) {
        // SAFETY: in bounds; volatile so that the store into zeroed memory is not elided.
        unsafe { std::ptr::write_volatile(target_stack.as_mut_ptr().add(at), 1) };
    }
    let mut datagram = vec![0u8; 4 + INLINE_MAX];
    for at in (0..8 * 1024).step_by(4096) {
        // SAFETY: in bounds; volatile so that the store into zeroed memory is not elided.
        unsafe { std::ptr::write_volatile(datagram.as_mut_ptr().add(at), 1) };
    }
    let request = recv_request(sock.as_raw_fd(), &mut datagram);
    // SAFETY: from here on every signal is blocked again (the keeper waits for them).
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        // Our pid tells the zygote which keeper is busy (its exit ends the spawn), and its sign
        // from which pool it came.
        let pid = libc::getpid();
        let me = if cap_free { -pid } else { pid }.to_ne_bytes();
        libc::write(taken, me.as_ptr().cast(), me.len());
    }
    let Some((len, inline_len, fds)) = request else {
        // SAFETY: exiting.
        unsafe { libc::_exit(0) }
    };
    if fds.len() < FDS_PER_REQUEST {
        // SAFETY: exiting; the dropped fds close (the server sees the status pipe EOF).
        unsafe { libc::_exit(1) }
    }
    // The optional fds follow the memfd when there is one.
    let mut next_fd = FDS_PER_REQUEST;
    let decoded = if inline_len > 0 {
        KeeperRequest::decode(&datagram[4..4 + inline_len]).filter(|_| inline_len == len as usize)
    } else {
        next_fd += 1;
        let mut body = vec![0u8; len as usize];
        let memfd = fds.get(FDS_PER_REQUEST).and_then(|f| f.try_clone().ok());
        let Some(memfd) = memfd else {
            // SAFETY: exiting: the promised memfd is missing.
            unsafe { libc::_exit(1) }
        };
        let mut memfd = std::fs::File::from(memfd);
        use std::io::Seek;
        let ok =
            memfd.seek(std::io::SeekFrom::Start(0)).is_ok() && memfd.read_exact(&mut body).is_ok();
        KeeperRequest::decode(&body).filter(|_| ok)
    };
    let ruleset_fd = match &decoded {
        Some(r) if r.has_ruleset => match fds.get(next_fd) {
            Some(fd) => fd.as_raw_fd(),
            // SAFETY: exiting: a promised ruleset is missing (never run unconfined).
            None => unsafe { libc::_exit(1) },
        },
        _ => -1,
    };
    let port_guard_fd = match &decoded {
        Some(r) if r.has_port_guard => match fds.get(next_fd + usize::from(r.has_ruleset)) {
            Some(fd) => fd.as_raw_fd(),
            // SAFETY: exiting: a promised ruleset is missing (never run unconfined).
            None => unsafe { libc::_exit(1) },
        },
        _ => -1,
    };
    // Join the process cgroup before anything of the tree runs; never run outside it.
    if let Some(r) = &decoded
        && r.has_cgroup
    {
        let index = next_fd + usize::from(r.has_ruleset) + usize::from(r.has_port_guard);
        let Some(procs) = fds.get(index) else {
            // SAFETY: exiting: a promised cgroup is missing.
            unsafe { libc::_exit(1) }
        };
        // SAFETY: writing "0" (this process) to cgroup.procs from a valid buffer.
        if unsafe { libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
            let errno = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            keeper::report_start_failure(
                fds[3].as_raw_fd(),
                crate::sandbox::child::Stage::Cgroup,
                errno,
            );
        }
    }
    let ns_fds: Vec<i32> = match &decoded {
        Some(r) => {
            let first = next_fd
                + usize::from(r.has_ruleset)
                + usize::from(r.has_port_guard)
                + usize::from(r.has_cgroup);
            let n = r.namespace.fds(r.userns);
            match fds.get(first..first + n) {
                Some(f) => f.iter().map(|f| f.as_raw_fd()).collect(),
                // SAFETY: exiting: a promised namespace fd is missing.
                None => unsafe { libc::_exit(1) },
            }
        }
        None => Vec::new(),
    };
    let notify_sock = match &decoded {
        Some(r) if r.has_notify_socket => {
            let index = next_fd
                + usize::from(r.has_ruleset)
                + usize::from(r.has_port_guard)
                + usize::from(r.has_cgroup)
                + ns_fds.len();
            match fds.get(index) {
                Some(fd) => fd.as_raw_fd(),
                // SAFETY: exiting: the promised socket is missing.
                None => unsafe { libc::_exit(1) },
            }
        }
        _ => -1,
    };
    let plan =
        match decoded.and_then(|r| r.into_plan(ruleset_fd, port_guard_fd, &ns_fds, notify_sock)) {
            Some(p) => p,
            // SAFETY: exiting.
            None => unsafe { libc::_exit(1) },
        };
    let child_fds = ChildFds {
        stdin: fds[0].as_raw_fd(),
        stdout: fds[1].as_raw_fd(),
        stderr: fds[2].as_raw_fd(),
        status_pipe: fds[3].as_raw_fd(),
    };
    // SAFETY: single-threaded, all signals blocked; keeper_main never returns.
    unsafe { keeper::keeper_main(&plan, &child_fds, zygote_pid, &mut target_stack, child_list) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_roundtrip() {
        let r = KeeperRequest {
            program: b"/bin/sh".to_vec(),
            argv: vec![b"sh".to_vec(), b"-c".to_vec(), vec![]],
            envp: vec![b"A=1".to_vec()],
            cwd: b"/tmp".to_vec(),
            tty: true,
            seccomp: vec![1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0x7f],
            has_ruleset: true,
            no_new_privs: true,
            drop_caps: false,
            no_core: true,
            mounts: vec![b"\x00/x/.git".to_vec()],
            userns: true,
            rlimits: vec![[3u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0].to_vec()],
            ignore_sigxfsz: true,
            has_cgroup: true,
            namespace: NamespaceMode::Join,
            has_port_guard: true,
            has_notify_socket: true,
        };
        assert_eq!(KeeperRequest::decode(&r.encode()), Some(r.clone()));
        let enc = r.encode();
        assert_eq!(KeeperRequest::decode(&enc[..enc.len() - 1]), None);
    }
}
