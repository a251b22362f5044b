//! Spawning: fds and the exec plan are prepared in the parent, then one long-lived thread
//! forks the keeper (see [`super::keeper`]). Forking from one thread matters because
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked exits.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, mpsc};

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::keeper;
use super::sys::{self, AsyncPipe, PidFd};
use crate::sandbox::child::{ChildFds, ExecPlan, Stage};

/// What to start.
pub struct SpawnSpec {
    /// The prepared exec plan (program, argv, env, cwd, tty flag).
    pub plan: ExecPlan,
    /// Terminal size when running on a PTY.
    pub tty: Option<(u16, u16)>,
    /// Keep a writable stdin pipe (non-tty).
    pub pipe_stdin: bool,
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
    /// Keeper status pipe, positioned after the pid: the exit record comes next.
    pub status: pipe::Receiver,
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

struct Job {
    plan: ExecPlan,
    fds: ChildFds,
    reply: oneshot::Sender<io::Result<libc::pid_t>>,
}

/// The thread that forks keepers.
pub struct Spawner {
    tx: Mutex<mpsc::Sender<Job>>,
}

impl Spawner {
    /// Starts the spawner thread.
    pub fn start() -> io::Result<Arc<Spawner>> {
        let (tx, rx) = mpsc::channel::<Job>();
        // SAFETY: getpid has no preconditions.
        let server_pid = unsafe { libc::getpid() };
        std::thread::Builder::new()
            .name("stockade-spawner".into())
            .spawn(move || {
                sys::block_all_signals_in_this_thread();
                while let Ok(job) = rx.recv() {
                    // SAFETY: the child branch only runs async-signal-safe code
                    // (keeper_main) on data prepared before the fork.
                    let pid = unsafe { libc::fork() };
                    if pid == 0 {
                        // SAFETY: we are the freshly forked child with all signals blocked.
                        unsafe { keeper::keeper_main(&job.plan, &job.fds, server_pid) };
                    }
                    let res = if pid < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(pid)
                    };
                    let _ = job.reply.send(res);
                }
            })?;
        Ok(Arc::new(Spawner { tx: Mutex::new(tx) }))
    }

    /// Starts a process. On error nothing is left running.
    pub async fn spawn(&self, spec: SpawnSpec) -> Result<Spawned, SpawnError> {
        let setup = |what| move |source| SpawnError::Setup { what, source };
        let (err_r, err_w) = sys::pipe().map_err(setup("error pipe"))?;
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
            error_pipe: err_w.as_raw_fd(),
            status_pipe: status_w.as_raw_fd(),
        };
        let (reply, rx) = oneshot::channel();
        let job = Job {
            plan: spec.plan,
            fds,
            reply,
        };
        let sent = self
            .tx
            .lock()
            .map_err(|_| io::Error::other("spawner poisoned"))
            .and_then(|tx| tx.send(job).map_err(|_| io::Error::other("spawner gone")));
        sent.map_err(setup("spawner"))?;
        let keeper_pid = rx
            .await
            .map_err(|_| io::Error::other("spawner gone"))
            .and_then(|r| r)
            .map_err(setup("fork"))?;
        // The child-side ends now live in the keeper (and the target) only.
        drop((child_stdin, child_stdout, child_stderr, err_w, status_w));
        let keeper = PidFd::open(keeper_pid);

        let mut status = pipe::Receiver::from_owned_fd(status_r).map_err(setup("status pipe"))?;
        let mut err = pipe::Receiver::from_owned_fd(err_r).map_err(setup("error pipe"))?;
        let mut pid_buf = [0u8; 8];
        let pid_read = status.read_exact(&mut pid_buf).await;
        let mut report = Vec::new();
        let _ = err.read_to_end(&mut report).await;
        if report.len() >= 8 || pid_read.is_err() {
            let (kind, errno) = if report.len() >= 8 {
                (
                    Stage::from_raw(i32::from_ne_bytes(report[0..4].try_into().unwrap()))
                        .unwrap_or(Stage::Exec),
                    i32::from_ne_bytes(report[4..8].try_into().unwrap()),
                )
            } else {
                (Stage::Fork, libc::EIO)
            };
            let _ = keeper.signal(libc::SIGTERM);
            let _ = keeper.wait().await;
            return Err(SpawnError::Child {
                stage: kind.describe(),
                kind,
                source: io::Error::from_raw_os_error(errno),
            });
        }
        let pid = i64::from_ne_bytes(pid_buf) as i32;
        Ok(Spawned {
            pid,
            keeper,
            outputs,
            stdin: stdin_pipe,
            pty,
            status,
        })
    }
}

/// Converts strings to `CString`s, naming the field on an interior NUL.
pub fn to_cstrings(field: &str, items: &[String]) -> Result<Vec<CString>, String> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| format!("{field}: contains a NUL byte")))
        .collect()
}
