//! What the sandbox refused a process tree (issue 16, PROTOCOL.md 6.5): the evidence sources
//! feed one [`DenialLog`] per process, which deduplicates, caps and counts.
//!
//! Sources: seccomp user notification (`notify`: the supervisor answers each call the filter
//! refuses and records it with its arguments), Landlock audit records (`audit`: the kernel's
//! own record of each access a Landlock domain refused, attributed by domain), and error texts on stderr or the terminal that
//! name a path the policy denies (`stderr`). Each is exact for what it reports; what a source
//! cannot see (a refusal a program does not print) is missing, and `denialSources` tells a
//! client which sources were watching.

pub mod audit;
pub mod notify;
pub mod stderr;

use crate::protocol::process::{Denial, DenialKind, DenialSource, DenialsReport};

/// Distinct entries kept per process; later distinct refusals only count in the total.
pub const MAX_DENIALS: usize = 32;

/// Longest path or object kept in an entry (bytes): with [`MAX_DENIALS`] this bounds a
/// process's list to about 32 * 4 KiB whatever the tree does.
const MAX_TEXT: usize = 4096;

/// Cuts `s` to at most [`MAX_TEXT`] bytes at a character boundary.
fn bounded(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The refusals of one process tree: deduplicated by (kind, access, path, object, args),
/// in order of first occurrence, at most [`MAX_DENIALS`] entries; the total is exact.
#[derive(Debug, Clone, Default)]
pub struct DenialLog {
    entries: Vec<Denial>,
    total: u64,
    /// Refusals that count as evidence for `sandboxDenied` (see [`is_incidental`]).
    evidence: u64,
    lost: bool,
    /// A source still has records of the finished tree to hand over (Landlock audit).
    awaiting: bool,
    sources: Vec<DenialSource>,
}

impl DenialLog {
    /// An empty log watched by `sources`.
    pub fn new(sources: &[DenialSource]) -> DenialLog {
        let mut sources = sources.to_vec();
        sources.sort();
        sources.dedup();
        DenialLog {
            sources,
            ..DenialLog::default()
        }
    }

    /// Adds a source that became active (e.g. the seccomp listener arrived).
    pub fn add_source(&mut self, source: DenialSource) {
        if !self.sources.contains(&source) {
            self.sources.push(source);
            self.sources.sort();
        }
    }

    /// Records `times` occurrences of a refusal (its `count` is ignored).
    pub fn record(&mut self, mut d: Denial, times: u64) {
        crate::metrics::denials(d.kind, times);
        self.total = self.total.saturating_add(times);
        if !is_incidental(&d) {
            self.evidence = self.evidence.saturating_add(times);
        }
        d.path = d.path.map(bounded);
        d.object = d.object.map(bounded);
        let same = |e: &&mut Denial| {
            e.kind == d.kind
                && e.access == d.access
                && e.path == d.path
                && e.object == d.object
                && e.args == d.args
        };
        if let Some(e) = self.entries.iter_mut().find(same) {
            e.count = e.count.saturating_add(times);
        } else if self.entries.len() < MAX_DENIALS {
            d.count = times;
            self.entries.push(d);
        }
    }

    /// A source will hand over records after the tree ended: the list is not final until
    /// [`DenialLog::release`].
    pub fn hold(&mut self) {
        self.awaiting = true;
    }

    /// The source that held the list has handed over everything.
    pub fn release(&mut self) {
        self.awaiting = false;
    }

    /// Marks that refusals may have been lost (a source dropped records).
    pub fn mark_lost(&mut self) {
        self.lost = true;
    }

    /// Every refusal seen so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether a refusal was seen that can explain a failure (`sandboxDenied`).
    pub fn has_evidence(&self) -> bool {
        self.evidence > 0
    }

    /// The distinct entries.
    pub fn entries(&self) -> &[Denial] {
        &self.entries
    }

    /// The wire fields; `tree_done`: no process of the tree can refuse anything any more.
    pub fn report(&self, tree_done: bool) -> DenialsReport {
        DenialsReport {
            denials: self.entries.clone(),
            denials_total: self.total,
            denials_complete: tree_done && !self.lost && !self.awaiting,
            denial_sources: self.sources.clone(),
        }
    }
}

/// A refusal that is listed but is no evidence that the sandbox made a command fail: a
/// `socket(AF_UNIX)` refused with the network off. The C library makes one on its own in nearly
/// every program (glibc asks the name-service cache daemon before reading `/etc/passwd`;
/// `syslog` tries `/dev/log`) and carries on without it, so counting it would mark almost
/// every failing command `sandboxDenied`, which Codex clients read as "retry outside the
/// sandbox".
pub fn is_incidental(d: &Denial) -> bool {
    d.kind == DenialKind::Syscall
        && d.access.first().is_some_and(|a| a == "socket")
        && d.args.first().is_some_and(|a| a == "AF_UNIX")
}

/// A filesystem refusal of `access` on `path`.
pub fn fs_denial(access: &str, path: String, source: DenialSource) -> Denial {
    Denial {
        kind: DenialKind::Fs,
        access: vec![access.to_string()],
        path: Some(path),
        object: None,
        args: Vec::new(),
        source,
        count: 1,
    }
}

/// One line for humans: `write /etc/hosts`, `socket AF_INET SOCK_STREAM`.
pub fn describe(d: &Denial) -> String {
    let mut words = vec![d.access.join(",")];
    words.extend(d.path.iter().cloned());
    words.extend(d.object.iter().cloned());
    words.extend(d.args.iter().cloned());
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syscall(name: &str, args: &[&str]) -> Denial {
        Denial {
            kind: DenialKind::Syscall,
            access: vec![name.into()],
            path: None,
            object: None,
            args: args.iter().map(|a| a.to_string()).collect(),
            source: DenialSource::Seccomp,
            count: 1,
        }
    }

    #[test]
    fn dedupes_caps_and_counts_exactly() {
        let mut log = DenialLog::new(&[DenialSource::Stderr, DenialSource::Seccomp]);
        for i in 0..10_000u64 {
            log.record(syscall("socket", &["AF_INET", "SOCK_STREAM"]), 1);
            log.record(
                fs_denial("write", format!("/etc/f{i}"), DenialSource::Stderr),
                1,
            );
        }
        let r = log.report(true);
        assert_eq!(r.denials.len(), MAX_DENIALS);
        assert_eq!(r.denials_total, 20_000);
        assert_eq!(r.denials[0].count, 10_000);
        assert_eq!(r.denials[1].path.as_deref(), Some("/etc/f0"));
        assert!(r.denials_complete);
        assert_eq!(
            r.denial_sources,
            vec![DenialSource::Seccomp, DenialSource::Stderr]
        );
        assert!(!log.report(false).denials_complete);
        assert!(log.has_evidence());
        let mut unix = DenialLog::new(&[]);
        unix.record(syscall("socket", &["AF_UNIX", "SOCK_STREAM"]), 2);
        assert!(!unix.has_evidence());
        assert_eq!(unix.total(), 2);
        log.mark_lost();
        assert!(!log.report(true).denials_complete);
    }

    #[test]
    fn long_paths_are_bounded_and_describe_reads() {
        let mut log = DenialLog::new(&[]);
        log.record(
            fs_denial("write", "/é".repeat(3000), DenialSource::Stderr),
            1,
        );
        assert!(log.entries()[0].path.as_ref().unwrap().len() <= MAX_TEXT);
        assert_eq!(
            describe(&syscall("socket", &["AF_INET", "SOCK_STREAM"])),
            "socket AF_INET SOCK_STREAM"
        );
        assert_eq!(
            describe(&fs_denial(
                "write",
                "/etc/hosts".into(),
                DenialSource::Stderr
            )),
            "write /etc/hosts"
        );
    }
}
