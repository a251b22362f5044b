//! Spawning: the server prepares the fds and the request, the zygote forks a keeper (see
//! [`super::zygote`] and [`super::keeper`]), and the keeper forks and execs the program.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::Semaphore;

use super::keeper::{START_REPORT_LEN, StartReport};
use super::sys::{self, PidFd};
use super::zygote::{self, KeeperRequest, NamespaceMode, Zygote};
use crate::fdio::{AsyncPipe, enlarge_pipe};
use crate::sandbox::child::{ChildFds, Stage};
use crate::sandbox::mountns::NamespaceFds;

/// What to start.
pub struct SpawnSpec {
    /// Program, argv, environment, cwd and tty flag, as the keeper will use them.
    pub request: KeeperRequest,
    /// Terminal size when running on a PTY.
    pub tty: Option<(u16, u16)>,
    /// Keep a writable stdin pipe (non-tty).
    pub pipe_stdin: bool,
    /// Landlock ruleset for the child (sent after the request memfd, if any).
    pub ruleset: Option<OwnedFd>,
    /// The ruleset denying the server's own ports (sent after the ruleset), shared by every
    /// spawn.
    pub port_guard: Option<Arc<OwnedFd>>,
    /// The process cgroup's `cgroup.procs`, opened for writing: the keeper moves itself in
    /// before starting the program (sent after the ruleset).
    pub cgroup_procs: Option<OwnedFd>,
    /// How the program gets its mount namespace, when `request.mounts` asks for one.
    pub namespace: SpawnNamespace,
}

/// How a spawn gets its mount namespace (see [`crate::sandbox::mountns`]).
#[derive(Debug, Default)]
pub enum SpawnNamespace {
    /// Built from `request.mounts` (if any).
    #[default]
    Build,
    /// Built, and captured for reuse: [`Spawned::captured`] holds its fds.
    BuildAndCapture,
    /// Joined: `request.mounts` is ignored.
    Join(Arc<NamespaceFds>),
}

/// Which stream an output fd carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// The merged PTY stream.
    Pty,
}

impl Stream {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Pty => "pty",
        }
    }

    /// The metrics label.
    pub(crate) fn metric(self) -> crate::metrics::OutputStream {
        match self {
            Stream::Stdout => crate::metrics::OutputStream::Stdout,
            Stream::Stderr => crate::metrics::OutputStream::Stderr,
            Stream::Pty => crate::metrics::OutputStream::Pty,
        }
    }
}

/// A started process: its pid, keeper and the server's ends of its fds.
pub struct Spawned {
    /// Host pid of the program.
    pub pid: i32,
    /// The keeper that owns the process tree.
    pub keeper: PidFd,
    /// Output fds (stdout+stderr, or the PTY master).
    pub outputs: Vec<(Stream, Arc<AsyncPipe>)>,
    /// Writable stdin (pipe or PTY master), if any.
    pub stdin: Option<Arc<AsyncPipe>>,
    /// The PTY master, for resize and foreground-group signals.
    pub pty: Option<Arc<AsyncPipe>>,
    /// Keeper status pipe, positioned after the start report: the exit record comes next.
    pub status: pipe::Receiver,
    /// With [`SpawnNamespace::BuildAndCapture`]: the namespace's fds (user namespace first,
    /// when there is one), as the program sent them before exec; empty if it could not.
    pub captured: Vec<OwnedFd>,
    /// With `request.has_notify_socket`: the listener of the program's seccomp filter, or
    /// `None` when the program could not install one and runs under the plain filter.
    pub listener: Option<OwnedFd>,
}

/// Why a spawn failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// Creating pipes, the PTY or the keeper failed in the server.
    #[error("{what}: {source}")]
    Setup {
        /// The step that failed.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The child reported a failure before exec.
    #[error("{stage}: {source}")]
    Child {
        /// The step that failed, as text.
        stage: &'static str,
        /// Which stage, for callers that care.
        kind: Stage,
        /// The OS error.
        source: io::Error,
    },
}

/// Sends spawn requests to the zygote's idle keepers.
pub struct Spawner {
    sock: AsyncFd<OwnedFd>,
    /// The cap-free pool's socket, for requests that drop capabilities (root server only).
    cap_free: Option<AsyncFd<OwnedFd>>,
    /// Bounds requests in flight (each carries fds, and the kernel limits fds in flight).
    in_flight: Semaphore,
}

impl Spawner {
    /// Wraps a started zygote.
    pub fn start(zygote: Zygote) -> io::Result<Arc<Spawner>> {
        let register = |fd: &OwnedFd| -> io::Result<AsyncFd<OwnedFd>> {
            let fd = fd.try_clone()?;
            // SAFETY: we own the duplicate; it stays registered until the spawner is dropped.
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::WRITABLE) }
                .map_err(|e| e.into_parts().1)
        };
        let sock = register(zygote.socket())?;
        let cap_free = zygote.cap_free_socket().map(register).transpose()?;
        drop(zygote);
        Ok(Arc::new(Spawner {
            sock,
            cap_free,
            in_flight: Semaphore::new(16),
        }))
    }

    async fn send_datagram(
        &self,
        drop_caps: bool,
        len: u32,
        inline: &[u8],
        fds: &[i32],
    ) -> io::Result<()> {
        // Either pool's keeper runs any request; the cap-free one only saves the program's
        // capability drops, so only requests that drop them go there.
        let sock = match &self.cap_free {
            Some(s) if drop_caps => s,
            _ => &self.sock,
        };
        loop {
            match zygote::send_request(sock.get_ref().as_raw_fd(), len, inline, fds) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut guard = sock.writable().await?;
                    guard.clear_ready();
                }
                other => return other,
            }
        }
    }

    /// Starts a process. On error nothing is left running.
    pub async fn spawn(&self, spec: SpawnSpec) -> Result<Spawned, SpawnError> {
        self.hand_over(spec).await?.finish().await
    }

    /// Hands the request to an idle keeper and returns without waiting for the program to
    /// start: the caller can do work the keeper does not need while the keeper and the
    /// program run on another CPU, then [`SentRequest::finish`]. Dropping the result without
    /// finishing leaves the keeper to run the program unobserved: always finish.
    pub async fn hand_over(&self, mut spec: SpawnSpec) -> Result<SentRequest<'_>, SpawnError> {
        let setup = |what| move |source| SpawnError::Setup { what, source };
        // The request says how the namespace is made; its fds go last in the datagram.
        let mut capture = None;
        let ns_fds: Vec<i32> = match &spec.namespace {
            SpawnNamespace::Build => {
                spec.request.namespace = NamespaceMode::Build;
                Vec::new()
            }
            SpawnNamespace::BuildAndCapture => {
                spec.request.namespace = NamespaceMode::BuildAndCapture;
                let (server_end, child_end) =
                    sys::seqpacket_pair().map_err(setup("namespace socket"))?;
                let fd = child_end.as_raw_fd();
                capture = Some((server_end, child_end));
                vec![fd]
            }
            SpawnNamespace::Join(ns) => {
                spec.request.namespace = NamespaceMode::Join;
                spec.request.mounts.clear();
                spec.request.userns = ns.user.is_some();
                let user = ns.user.as_ref().map(|u| u.as_raw_fd());
                user.into_iter().chain([ns.mnt.as_raw_fd()]).collect()
            }
        };
        let (status_r, status_w) = sys::pipe().map_err(setup("status pipe"))?;
        // (server side, child side) pairs.
        let mut outputs = Vec::new();
        let stdin_pipe;
        let pty;
        let child_stdin: OwnedFd;
        let child_stdout: OwnedFd;
        let child_stderr: Option<OwnedFd>;
        if let Some((rows, cols)) = spec.tty {
            let (master, slave) = sys::open_pty(rows, cols).map_err(setup("openpty"))?;
            let master = Arc::new(AsyncPipe::new(master, true).map_err(setup("pty master"))?);
            outputs.push((Stream::Pty, master.clone()));
            stdin_pipe = Some(master.clone());
            pty = Some(master);
            child_stdin = slave;
            child_stdout = child_stdin.try_clone().map_err(setup("dup slave"))?;
            child_stderr = None;
        } else {
            let (out_r, out_w) = sys::pipe().map_err(setup("stdout pipe"))?;
            let (errout_r, errout_w) = sys::pipe().map_err(setup("stderr pipe"))?;
            enlarge_pipe(&out_r, 128 * 1024);
            outputs.push((
                Stream::Stdout,
                Arc::new(AsyncPipe::new(out_r, false).map_err(setup("stdout pipe"))?),
            ));
            outputs.push((
                Stream::Stderr,
                Arc::new(AsyncPipe::new(errout_r, false).map_err(setup("stderr pipe"))?),
            ));
            if spec.pipe_stdin {
                let (in_r, in_w) = sys::pipe().map_err(setup("stdin pipe"))?;
                stdin_pipe = Some(Arc::new(
                    AsyncPipe::new(in_w, false).map_err(setup("stdin pipe"))?,
                ));
                child_stdin = in_r;
            } else {
                stdin_pipe = None;
                child_stdin = sys::dev_null().map_err(setup("/dev/null"))?;
            }
            pty = None;
            child_stdout = out_w;
            child_stderr = Some(errout_w);
        }
        let fds = ChildFds {
            stdin: child_stdin.as_raw_fd(),
            stdout: child_stdout.as_raw_fd(),
            stderr: child_stderr
                .as_ref()
                .map(|f| f.as_raw_fd())
                .unwrap_or(child_stdout.as_raw_fd()),
            status_pipe: status_w.as_raw_fd(),
        };
        let encoded = spec.request.encode();
        let len = encoded.len() as u32;
        let memfd = if encoded.len() > zygote::INLINE_MAX {
            Some(Zygote::request_memfd(&encoded).map_err(setup("request memfd"))?)
        } else {
            None
        };
        let inline: &[u8] = if memfd.is_some() { &[] } else { &encoded };
        let permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| setup("spawner")(io::Error::other("closed")))?;
        let mut raw = vec![fds.stdin, fds.stdout, fds.stderr, fds.status_pipe];
        if let Some(m) = &memfd {
            raw.push(m.as_raw_fd());
        }
        if let Some(r) = &spec.ruleset {
            raw.push(r.as_raw_fd());
        }
        if let Some(g) = &spec.port_guard {
            raw.push(g.as_raw_fd());
        }
        if let Some(c) = &spec.cgroup_procs {
            raw.push(c.as_raw_fd());
        }
        raw.extend(ns_fds);
        let notify = if spec.request.has_notify_socket {
            let pair = sys::seqpacket_pair().map_err(setup("seccomp listener socket"))?;
            raw.push(pair.1.as_raw_fd());
            Some(pair)
        } else {
            None
        };
        self.send_datagram(spec.request.drop_caps, len, inline, &raw)
            .await
            .map_err(setup("zygote"))?;
        // The child-side ends now live in the keeper (and the target) only.
        drop((child_stdin, child_stdout, child_stderr, status_w, memfd));
        let capture = capture.map(|(server_end, _child_end)| server_end);
        let notify = notify.map(|(server_end, _child_end)| server_end);
        let status = pipe::Receiver::from_owned_fd(status_r).map_err(setup("status pipe"))?;
        Ok(SentRequest {
            _permit: permit,
            status,
            capture,
            notify,
            outputs,
            stdin: stdin_pipe,
            pty,
        })
    }
}

/// A request a keeper has taken (see [`Spawner::hand_over`]); the program is being started.
pub struct SentRequest<'a> {
    /// Held until the start report: the request's fds count as in flight until then.
    _permit: tokio::sync::SemaphorePermit<'a>,
    status: pipe::Receiver,
    capture: Option<OwnedFd>,
    notify: Option<OwnedFd>,
    outputs: Vec<(Stream, Arc<AsyncPipe>)>,
    stdin: Option<Arc<AsyncPipe>>,
    pty: Option<Arc<AsyncPipe>>,
}

impl SentRequest<'_> {
    /// Waits for the keeper's start report: the started process, or why it did not start (then
    /// nothing is left running).
    pub async fn finish(self) -> Result<Spawned, SpawnError> {
        let setup = |what| move |source| SpawnError::Setup { what, source };
        let SentRequest {
            _permit,
            mut status,
            capture,
            notify,
            outputs,
            stdin,
            pty,
        } = self;
        let mut report = [0u8; START_REPORT_LEN];
        if status.read_exact(&mut report).await.is_err() {
            return Err(setup("keeper")(io::Error::other(
                "the keeper exited before starting the program",
            )));
        }
        let report = StartReport::decode(&report);
        let keeper = PidFd::open(report.keeper);
        if let Some((stage, errno)) = report.failure {
            let kind = Stage::from_raw(stage).unwrap_or(Stage::Exec);
            let _ = keeper.signal(libc::SIGTERM);
            let _ = keeper.wait().await;
            return Err(SpawnError::Child {
                stage: kind.describe(),
                kind,
                source: io::Error::from_raw_os_error(errno),
            });
        }
        let pid = report.target;
        // The program sent its namespace before exec, and exec has happened: it is queued.
        let captured = capture.as_ref().map(sys::recv_fds_now).unwrap_or_default();
        // Likewise the seccomp listener.
        let listener = notify
            .as_ref()
            .and_then(|s| sys::recv_fds_now(s).into_iter().next());
        Ok(Spawned {
            captured,
            listener,
            pid,
            keeper,
            outputs,
            stdin,
            pty,
            status,
        })
    }
}
