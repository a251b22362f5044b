//! The per-session process table and the shared state of one process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::cgroup::{ProcessCgroup, TreeUsage};
use super::output::OutputState;
use super::sys::{self, PidFd};
use crate::fdio::AsyncPipe;
use crate::protocol::process::{DenialSource, ReadResult, WriteStatus};
use crate::sandbox::denials::stderr::StderrEvidence;
use crate::sandbox::placeholders::Lease;

enum Slot {
    /// Reserved while `process/start` runs (so duplicate ids are refused atomically).
    Starting,
    Live(Arc<Process>),
}

/// The processes of one session, by client-chosen id.
#[derive(Default)]
pub struct ProcessTable {
    slots: Mutex<HashMap<String, Slot>>,
}

/// Result of looking an id up.
pub enum Lookup {
    /// No such process.
    Unknown,
    /// Still being started.
    Starting,
    /// Running or retained.
    Live(Arc<Process>),
}

impl ProcessTable {
    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves an id; false if it is already present.
    pub fn reserve(&self, id: &str) -> bool {
        let mut slots = self.slots();
        if slots.contains_key(id) {
            return false;
        }
        slots.insert(id.to_string(), Slot::Starting);
        true
    }

    /// Drops a reservation after a failed start.
    pub fn unreserve(&self, id: &str) {
        let mut slots = self.slots();
        if matches!(slots.get(id), Some(Slot::Starting)) {
            slots.remove(id);
        }
    }

    /// Turns a reservation into a live process.
    pub fn insert(&self, process: Arc<Process>) {
        self.slots().insert(process.id.clone(), Slot::Live(process));
    }

    /// Removes a process once its retention expired (only if it is still the same one).
    pub fn remove(&self, process: &Arc<Process>) {
        let mut slots = self.slots();
        if let Some(Slot::Live(p)) = slots.get(&process.id)
            && Arc::ptr_eq(p, process)
        {
            slots.remove(&process.id);
        }
    }

    /// Looks an id up.
    pub fn get(&self, id: &str) -> Lookup {
        match self.slots().get(id) {
            None => Lookup::Unknown,
            Some(Slot::Starting) => Lookup::Starting,
            Some(Slot::Live(p)) => Lookup::Live(p.clone()),
        }
    }

    /// Every live process.
    pub fn all(&self) -> Vec<Arc<Process>> {
        self.slots()
            .values()
            .filter_map(|s| match s {
                Slot::Live(p) => Some(p.clone()),
                Slot::Starting => None,
            })
            .collect()
    }

    /// Number of entries (live or starting).
    pub fn len(&self) -> usize {
        self.slots().len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One started process.
pub struct Process {
    /// The client's handle.
    pub id: String,
    /// Host pid of the program (its process group / session id too).
    pub pid: i32,
    keeper: PidFd,
    pty: Option<Arc<AsyncPipe>>,
    stdin: tokio::sync::Mutex<Option<Arc<AsyncPipe>>>,
    state: Mutex<OutputState>,
    changed: Notify,
    finished: Notify,
    finished_flag: AtomicBool,
    /// Runs under a confining policy (denial evidence is only looked for then).
    pub confined: bool,
    /// The process's own cgroup (delegated cgroup v2), removed once the tree is gone.
    cgroup: Mutex<Option<ProcessCgroup>>,
    /// Placeholders its mount namespace relies on, released once the tree is gone.
    placeholders: Mutex<Vec<Lease>>,
    /// Reads its stderr (or terminal) for refusals its policy confirms (restricted
    /// filesystems only).
    stderr_evidence: Mutex<Option<StderrEvidence>>,
}

impl Process {
    /// Builds the shared state of a started process.
    pub fn new(
        id: String,
        pid: i32,
        keeper: PidFd,
        pty: Option<Arc<AsyncPipe>>,
        stdin: Option<Arc<AsyncPipe>>,
        retain_bytes: usize,
        confined: bool,
    ) -> Process {
        // Paired with the decrement in `mark_finished` (once per process).
        crate::metrics::process_started();
        Process {
            id,
            pid,
            keeper,
            pty,
            stdin: tokio::sync::Mutex::new(stdin),
            state: Mutex::new(OutputState::new(retain_bytes)),
            changed: Notify::new(),
            finished: Notify::new(),
            finished_flag: AtomicBool::new(false),
            confined,
            cgroup: Mutex::new(None),
            placeholders: Mutex::new(Vec::new()),
            stderr_evidence: Mutex::new(None),
        }
    }

    /// Reads the process's error output for refusals (see [`StderrEvidence`]).
    pub fn with_stderr_evidence(self, evidence: Option<StderrEvidence>) -> Process {
        if evidence.is_some() {
            self.state().denials.add_source(DenialSource::Stderr);
        }
        *self
            .stderr_evidence
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = evidence;
        self
    }

    /// Looks for policy-confirmed refusals in error output and records them.
    pub fn scan_error_output(&self, data: &[u8]) {
        let (found, skipped) = match self
            .stderr_evidence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            Some(ev) => ev.feed(data),
            None => return,
        };
        if found.is_empty() && !skipped {
            return;
        }
        let mut st = self.state();
        for d in found {
            st.denials.record(d, 1);
        }
        if skipped {
            st.denials.mark_lost();
        }
    }

    /// Keeps the placeholders the process's mounts rely on until its tree is gone.
    pub fn with_placeholders(self, leases: Vec<Lease>) -> Process {
        *self.placeholders.lock().unwrap_or_else(|e| e.into_inner()) = leases;
        self
    }

    /// Attaches the process's own cgroup (removed once the tree is gone).
    pub fn with_cgroup(self, cgroup: Option<ProcessCgroup>) -> Process {
        *self.cgroup_lock() = cgroup;
        self
    }

    /// Locks the output state.
    pub fn state(&self) -> MutexGuard<'_, OutputState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes long-polling readers after a state change.
    pub fn notify_changed(&self) {
        self.changed.notify_waiters();
    }

    /// The keeper of this process's tree.
    pub fn keeper(&self) -> &PidFd {
        &self.keeper
    }

    /// Signals the end of the pump (closed and keeper reaped).
    pub fn mark_finished(&self) {
        // The tree is gone: its group can go too (dropping it removes it).
        drop(self.cgroup_lock().take());
        // No process is left in its namespace: the placeholders may go (when nobody else
        // relies on them).
        std::mem::take(&mut *self.placeholders.lock().unwrap_or_else(|e| e.into_inner()));
        if !self.finished_flag.swap(true, Ordering::SeqCst) {
            crate::metrics::process_finished();
        }
        self.finished.notify_waiters();
    }

    /// Waits until the keeper has been reaped (for shutdown); true if it finished in time.
    pub async fn wait_finished(&self, timeout: Duration) -> bool {
        let finished = self.finished.notified();
        tokio::pin!(finished);
        finished.as_mut().enable();
        if self.finished_flag.load(Ordering::SeqCst) {
            return true;
        }
        tokio::time::timeout(timeout, finished).await.is_ok()
    }

    /// Kills the whole tree (the keeper SIGKILLs every descendant). Returns true if the main
    /// process was still running.
    pub fn terminate(&self) -> bool {
        let running = self.state().exit.is_none();
        self.kill_tree();
        running
    }

    /// Kills the tree without looking at the state (cleanup paths).
    pub fn kill_tree(&self) {
        let _ = self.keeper.signal(libc::SIGTERM);
        if let Some(g) = self.cgroup_lock().as_ref() {
            g.kill();
        }
    }

    fn cgroup_lock(&self) -> std::sync::MutexGuard<'_, Option<ProcessCgroup>> {
        self.cgroup.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Usage of the whole tree from its cgroup, when it has one.
    pub fn tree_usage(&self) -> Option<TreeUsage> {
        self.cgroup_lock().as_ref().map(ProcessCgroup::usage)
    }

    /// `process/read`, with long-polling.
    pub async fn read(&self, after: u64, max_bytes: Option<u64>, wait: Duration) -> ReadResult {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let st = self.state();
                if st.has_after(after)
                    || st.exit.is_some()
                    || tokio::time::Instant::now() >= deadline
                {
                    return st.read(after, max_bytes);
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.state().read(after, max_bytes);
            }
        }
    }

    /// `process/write`.
    pub async fn write(&self, data: &[u8], write_id: Option<&str>) -> WriteStatus {
        let mut stdin = self.stdin.lock().await;
        {
            let st = self.state();
            if let Some(id) = write_id
                && st.write_id_seen(id)
            {
                return WriteStatus::Accepted;
            }
            if st.exit.is_some() {
                return WriteStatus::StdinClosed;
            }
        }
        let Some(pipe) = stdin.as_ref() else {
            return WriteStatus::StdinClosed;
        };
        match pipe.write_all(data).await {
            Ok(()) => {
                if let Some(id) = write_id {
                    self.state().remember_write_id(id);
                }
                WriteStatus::Accepted
            }
            Err(_) => {
                *stdin = None;
                WriteStatus::StdinClosed
            }
        }
    }

    /// `process/closeStdin`.
    pub async fn close_stdin(&self) -> WriteStatus {
        if self.pty.is_some() {
            return WriteStatus::StdinClosed;
        }
        let mut stdin = self.stdin.lock().await;
        match stdin.take() {
            Some(_) => WriteStatus::Accepted,
            None => WriteStatus::StdinClosed,
        }
    }

    /// `process/signal`: to the process group (tty: the foreground group).
    pub fn signal(&self, sig: i32) -> bool {
        if self.state().closed {
            return false;
        }
        let pgid = match &self.pty {
            Some(master) => sys::foreground_group(master.fd()).unwrap_or(self.pid),
            None => self.pid,
        };
        sys::kill_group(pgid, sig).is_ok()
    }

    /// `process/resize`; `None` when the process has no terminal.
    pub fn resize(&self, rows: u16, cols: u16) -> Option<std::io::Result<()>> {
        self.pty
            .as_ref()
            .map(|m| sys::set_window_size(m.fd(), rows, cols))
    }

    /// True when the process runs on a PTY.
    pub fn is_tty(&self) -> bool {
        self.pty.is_some()
    }
}
