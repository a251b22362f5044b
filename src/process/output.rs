//! The observable state of one process: sequence numbers, retained output, exit and close.
//! Pure data (no I/O), so the cursor rules of `process/read` are unit-testable.

use std::collections::{HashSet, VecDeque};

use super::spawn::Stream;
use crate::protocol::process::{ReadChunk, ReadResult};
use crate::sandbox::denials::DenialLog;

/// How the main process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, or 128+n for a signal death.
    pub code: i32,
    /// Signal name for a signal death (e.g. `SIGKILL`).
    pub signal: Option<String>,
}

impl ExitInfo {
    /// Interprets a raw wait status.
    pub fn from_wait_status(status: i32) -> ExitInfo {
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            let name = nix::sys::signal::Signal::try_from(sig)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("SIG{sig}"));
            ExitInfo {
                code: 128 + sig,
                signal: Some(name),
            }
        } else {
            ExitInfo {
                code: libc::WEXITSTATUS(status),
                signal: None,
            }
        }
    }
}

/// `sandboxDenied` with the reference executor's meaning, which Codex clients rely on: the
/// process ran `confined`, did not succeed (a non-zero exit code or a signal death), was not
/// ended by stockade for a limit (`ended_by_limit`: wall time or output), and there is
/// `evidence` of a refusal. A client reads `true` as "the command failed because of the
/// sandbox" and drops its result, so an incidental refusal in a command that succeeded (a login
/// shell's profile writing a cache in `$HOME`) must not set it.
pub fn sandbox_denied(
    confined: bool,
    evidence: bool,
    exit: &ExitInfo,
    ended_by_limit: bool,
) -> bool {
    let failed = exit.code != 0 || exit.signal.is_some();
    confined && evidence && failed && !ended_by_limit
}

struct Retained {
    seq: u64,
    stream: Stream,
    data: Vec<u8>,
}

/// Bound on remembered `writeId`s per process.
const MAX_WRITE_IDS: usize = 4096;

/// Sequenced, bounded output state of one process.
pub struct OutputState {
    next_seq: u64,
    chunks: VecDeque<Retained>,
    retained_bytes: usize,
    retain_limit: usize,
    /// Set once the main process exited.
    pub exit: Option<ExitInfo>,
    /// Set once `process/closed` was sent.
    pub closed: bool,
    /// `sandboxDenied` as reported: decided once, at exit, by [`sandbox_denied`].
    pub sandbox_denied: bool,
    /// What the sandbox refused the tree, from every evidence source.
    pub denials: DenialLog,
    /// No process of the tree is left (the keeper exited): the list can no longer grow.
    pub tree_done: bool,
    write_ids: HashSet<String>,
    write_id_order: VecDeque<String>,
}

impl OutputState {
    /// Empty state retaining at most `retain_limit` bytes of output.
    pub fn new(retain_limit: usize) -> OutputState {
        OutputState {
            next_seq: 1,
            chunks: VecDeque::new(),
            retained_bytes: 0,
            retain_limit,
            exit: None,
            closed: false,
            sandbox_denied: false,
            denials: DenialLog::default(),
            tree_done: false,
            write_ids: HashSet::new(),
            write_id_order: VecDeque::new(),
        }
    }

    /// Allocates the next sequence number.
    pub fn allocate_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Records an output chunk; returns its sequence number. The oldest chunks are dropped
    /// once more than the retention limit is held (the newest chunk is always kept).
    pub fn push_output(&mut self, stream: Stream, data: Vec<u8>) -> u64 {
        let seq = self.allocate_seq();
        self.retained_bytes += data.len();
        self.chunks.push_back(Retained { seq, stream, data });
        while self.retained_bytes > self.retain_limit && self.chunks.len() > 1 {
            if let Some(old) = self.chunks.pop_front() {
                self.retained_bytes -= old.data.len();
            }
        }
        seq
    }

    /// Remembers a `writeId`; false if it was already applied.
    pub fn remember_write_id(&mut self, id: &str) -> bool {
        if self.write_ids.contains(id) {
            return false;
        }
        self.write_ids.insert(id.to_string());
        self.write_id_order.push_back(id.to_string());
        if self.write_id_order.len() > MAX_WRITE_IDS
            && let Some(old) = self.write_id_order.pop_front()
        {
            self.write_ids.remove(&old);
        }
        true
    }

    /// True if this `writeId` was already applied.
    pub fn write_id_seen(&self, id: &str) -> bool {
        self.write_ids.contains(id)
    }

    /// True if a chunk with `seq > after` is retained.
    pub fn has_after(&self, after: u64) -> bool {
        self.chunks.back().is_some_and(|c| c.seq > after)
    }

    /// Builds a `process/read` result for the cursor rules of PROTOCOL.md section 4.
    pub fn read(&self, after: u64, max_bytes: Option<u64>) -> ReadResult {
        let mut chunks = Vec::new();
        let mut total: u64 = 0;
        let mut last = None;
        for c in self.chunks.iter().filter(|c| c.seq > after) {
            let len = c.data.len() as u64;
            if let Some(max) = max_bytes
                && !chunks.is_empty()
                && total + len > max
            {
                break;
            }
            total += len;
            last = Some(c.seq);
            chunks.push(ReadChunk {
                seq: c.seq,
                stream: c.stream.name(),
                chunk: base64_simd::STANDARD.encode_to_string(&c.data),
            });
        }
        ReadResult {
            chunks,
            next_seq: last.map(|s| s + 1).unwrap_or(self.next_seq),
            exited: self.exit.is_some(),
            exit_code: self.exit.as_ref().map(|e| e.code),
            closed: self.closed,
            failure: None,
            sandbox_denied: self.sandbox_denied,
            denials: self.denials.report(self.tree_done),
        }
    }

    /// Whether there is evidence that the sandbox refused an operation of the tree.
    pub fn has_denial_evidence(&self) -> bool {
        self.denials.has_evidence()
    }

    /// Bytes currently retained.
    pub fn retained_bytes(&self) -> usize {
        self.retained_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_and_max_bytes_rules() {
        let mut s = OutputState::new(1 << 20);
        s.push_output(Stream::Stdout, vec![b'a'; 10]);
        s.push_output(Stream::Stderr, vec![b'b'; 10]);
        s.push_output(Stream::Stdout, vec![b'c'; 10]);
        let r = s.read(0, None);
        assert_eq!(r.chunks.len(), 3);
        assert_eq!(r.next_seq, 4);
        // First chunk always returned, even above maxBytes.
        let r = s.read(0, Some(5));
        assert_eq!(r.chunks.len(), 1);
        assert_eq!(r.next_seq, 2);
        let r = s.read(1, Some(20));
        assert_eq!(
            r.chunks.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![2, 3]
        );
        // Nothing after: nextSeq is the next to allocate.
        let r = s.read(3, None);
        assert!(r.chunks.is_empty());
        assert_eq!(r.next_seq, 4);
    }

    #[test]
    fn retention_drops_oldest() {
        let mut s = OutputState::new(25);
        for _ in 0..5 {
            s.push_output(Stream::Stdout, vec![0; 10]);
        }
        assert_eq!(s.retained_bytes(), 20);
        let r = s.read(0, None);
        assert_eq!(r.chunks.first().unwrap().seq, 4);
    }

    #[test]
    fn write_ids_dedup() {
        let mut s = OutputState::new(10);
        assert!(s.remember_write_id("w1"));
        assert!(!s.remember_write_id("w1"));
        assert!(s.write_id_seen("w1"));
    }

    #[test]
    fn sandbox_denied_needs_confinement_failure_and_evidence() {
        let ok = ExitInfo::from_wait_status(0);
        let failed = ExitInfo::from_wait_status(1 << 8);
        let killed = ExitInfo::from_wait_status(libc::SIGKILL);
        let segv = ExitInfo::from_wait_status(libc::SIGSEGV);
        // A refusal on the way of a command that succeeded is not a failure by the sandbox.
        assert!(!sandbox_denied(true, true, &ok, false));
        assert!(sandbox_denied(true, true, &failed, false));
        assert!(sandbox_denied(true, true, &killed, false));
        assert!(sandbox_denied(true, true, &segv, false));
        // No evidence, or not confined: never.
        assert!(!sandbox_denied(true, false, &failed, false));
        assert!(!sandbox_denied(false, true, &failed, false));
        // Ended by stockade for a limit (timeout, output): the limit, not the sandbox.
        assert!(!sandbox_denied(true, true, &killed, true));
        assert!(!sandbox_denied(true, true, &failed, true));
    }

    #[test]
    fn exit_info_from_status() {
        assert_eq!(ExitInfo::from_wait_status(3 << 8).code, 3);
        let k = ExitInfo::from_wait_status(libc::SIGKILL);
        assert_eq!(k.code, 137);
        assert_eq!(k.signal.as_deref(), Some("SIGKILL"));
    }
}
