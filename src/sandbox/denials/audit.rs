//! Landlock audit records (Landlock ABI 7, Linux 6.15) as a denial source: the kernel writes
//! one `AUDIT_LANDLOCK_ACCESS` record per refused access (`blockers=fs.write_file
//! path="/etc/x" ...`) naming the Landlock domain that refused it, and one
//! `AUDIT_LANDLOCK_DOMAIN` record (`status=allocated ... pid=N`) the first time a domain shows
//! up, naming the process that created it. stockade's child creates its domains itself,
//! before `execve`, so the domain names the process stockade spawned: records are attributed
//! **by domain** (a descendant's refusal carries its ancestor's domain), never by the pid of
//! the refused task.
//!
//! Reading them takes the audit netlink multicast group `AUDIT_NLGRP_READLOG`
//! (`CAP_AUDIT_READ`, initial user and network namespace), and records only flow while the
//! host's audit subsystem is enabled. A startup self-test decides ([`prepare`]); the host's
//! audit state is changed only with `[sandbox] denial_audit = "enable"` (host-wide).
//!
//! Landlock logs a domain's refusals after `execve` only when the domain was created with
//! `LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON`; the child passes it exactly when this source is
//! active ([`restrict_flags`]), so a host whose audit log nobody reads gets no extra records.
//!
//! The socket is read with a hand-written netlink reader on `rustix` (a 16-byte header and a
//! text payload): the audit crates parse the binary rule and status formats stockade does not
//! use, and bring their own socket stack.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use crate::protocol::process::{Denial, DenialKind, DenialSource};

/// `AUDIT_GET`: the audit status.
const AUDIT_GET: u16 = 1000;
/// `AUDIT_SET`: change the audit status.
const AUDIT_SET: u16 = 1001;
/// `AUDIT_LANDLOCK_ACCESS`: one refused access.
pub const AUDIT_LANDLOCK_ACCESS: u16 = 1423;
/// `AUDIT_LANDLOCK_DOMAIN`: a domain's creation or release.
pub const AUDIT_LANDLOCK_DOMAIN: u16 = 1424;
/// `AUDIT_NLGRP_READLOG`: the read-only multicast group of every record.
const AUDIT_NLGRP_READLOG: u32 = 1;
/// `NLMSG_ERROR`.
const NLMSG_ERROR: u16 = 2;
/// `NLM_F_REQUEST`, `NLM_F_ACK`.
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
/// `AUDIT_STATUS_ENABLED` in `audit_status.mask`.
const AUDIT_STATUS_ENABLED: u32 = 1;
/// `LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON`.
const LOG_NEW_EXEC_ON: u32 = 2;

/// `[sandbox] denial_audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditMode {
    /// Used when the host already lets records flow (the self-test decides).
    #[default]
    Auto,
    /// Never used.
    Off,
    /// Turn the host's audit subsystem on at startup (host-wide), then as `auto`.
    Enable,
}

impl AuditMode {
    /// Parses the config value.
    pub fn parse(s: &str) -> Option<AuditMode> {
        match s {
            "auto" => Some(AuditMode::Auto),
            "off" => Some(AuditMode::Off),
            "enable" => Some(AuditMode::Enable),
            _ => None,
        }
    }

    /// The config value.
    pub fn name(self) -> &'static str {
        match self {
            AuditMode::Auto => "auto",
            AuditMode::Off => "off",
            AuditMode::Enable => "enable",
        }
    }
}

/// Whether the source is active, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditState {
    /// The configured mode.
    pub mode: AuditMode,
    /// Records are read and attributed.
    pub active: bool,
    /// Why it is not active.
    pub reason: Option<String>,
    /// How to make it active.
    pub fix: Option<String>,
    /// What the mode does to the host (for `enable`).
    pub note: Option<String>,
}

impl AuditState {
    fn inactive(mode: AuditMode, reason: String, fix: &str) -> AuditState {
        AuditState {
            mode,
            active: false,
            reason: Some(reason),
            fix: Some(fix.to_string()),
            note: None,
        }
    }
}

/// What `enable` does, said by `doctor` and the handshake.
pub const ENABLE_NOTE: &str = "denial_audit = \"enable\" turns the kernel audit subsystem on for the whole host (AUDIT_SET enabled=1) when the server starts; it stays on after the server exits, until `auditctl -e 0` or a reboot, and every audit record of the host (not only stockade's) is then produced and, without an audit daemon, printed to the kernel log";

/// The restrict flags the child passes to `landlock_restrict_self` (async-signal-safe read).
static RESTRICT_FLAGS: AtomicU32 = AtomicU32::new(0);

/// Flags for every `landlock_restrict_self` of a spawned process: `LOG_NEW_EXEC_ON` while
/// this source is active (Landlock logs nothing after `execve` without it), else 0.
pub fn restrict_flags() -> u32 {
    RESTRICT_FLAGS.load(Ordering::Relaxed)
}

/// The active source (set once, at startup).
static ACTIVE: OnceLock<Arc<AuditSource>> = OnceLock::new();

/// The active source, when the self-test found one.
pub fn active() -> Option<&'static Arc<AuditSource>> {
    ACTIVE.get()
}

/// The state [`prepare`] decided (for the handshake), or `Off` before it ran.
static STATE: OnceLock<AuditState> = OnceLock::new();

/// What [`prepare`] decided in this process (`off` when it never ran: `stockade doctor`).
pub fn state() -> AuditState {
    STATE.get().cloned().unwrap_or(AuditState {
        mode: AuditMode::Off,
        active: false,
        reason: Some("not set up in this process".into()),
        fix: None,
        note: None,
    })
}

// ---------------------------------------------------------------------------------------
// Netlink

fn socket(groups: u32) -> std::io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(rustix::net::netlink::AUDIT),
    )?;
    rustix::net::bind(&fd, &SocketAddrNetlink::new(0, groups))?;
    Ok(fd)
}

fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + payload.len());
    m.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m
}

/// The messages of one datagram: `(type, seq, payload)`.
fn messages(mut buf: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes(buf[4..6].try_into().expect("2 bytes"));
        let seq = u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes"));
        out.push((kind, seq, &buf[16..len]));
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
}

/// The fields of `struct audit_status` stockade uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelStatus {
    /// 0 off, 1 on, 2 on and locked.
    pub enabled: u32,
    /// Records the kernel dropped since boot.
    pub lost: u32,
    /// Records waiting to be sent.
    pub backlog: u32,
}

/// A unicast audit socket for status requests (needs `CAP_AUDIT_CONTROL`).
struct Control {
    fd: OwnedFd,
    seq: u32,
}

impl Control {
    fn open() -> std::io::Result<Control> {
        let fd = socket(0)?;
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(Duration::from_secs(2)),
        )?;
        Ok(Control { fd, seq: 0 })
    }

    /// Sends one request and returns the payload of its answer of type `want` (or the
    /// acknowledgement when `want` is [`NLMSG_ERROR`]).
    fn request(
        &mut self,
        kind: u16,
        flags: u16,
        payload: &[u8],
        want: u16,
    ) -> std::io::Result<Vec<u8>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        rustix::net::send(
            &self.fd,
            &message(kind, NLM_F_REQUEST | flags, seq, payload),
            SendFlags::empty(),
        )?;
        let mut buf = vec![0u8; 8192];
        loop {
            let (n, _) = rustix::net::recv(&self.fd, &mut buf[..], RecvFlags::empty())?;
            for (k, s, p) in messages(&buf[..n]) {
                if s != seq {
                    continue;
                }
                if k == NLMSG_ERROR && p.len() >= 4 {
                    let errno = i32::from_ne_bytes(p[0..4].try_into().expect("4 bytes"));
                    if errno != 0 {
                        return Err(std::io::Error::from_raw_os_error(-errno));
                    }
                    if want == NLMSG_ERROR {
                        return Ok(Vec::new());
                    }
                    continue;
                }
                if k == want {
                    return Ok(p.to_vec());
                }
            }
        }
    }

    fn status(&mut self) -> std::io::Result<KernelStatus> {
        let p = self.request(AUDIT_GET, 0, &[], AUDIT_GET)?;
        let word = |i: usize| -> u32 {
            p.get(i * 4..i * 4 + 4)
                .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
                .unwrap_or(0)
        };
        if p.len() < 32 {
            return Err(std::io::Error::other("short AUDIT_GET answer"));
        }
        Ok(KernelStatus {
            enabled: word(1),
            lost: word(6),
            backlog: word(7),
        })
    }

    fn enable(&mut self) -> std::io::Result<()> {
        let mut status = [0u8; 44];
        status[0..4].copy_from_slice(&AUDIT_STATUS_ENABLED.to_ne_bytes());
        status[4..8].copy_from_slice(&1u32.to_ne_bytes());
        self.request(AUDIT_SET, NLM_F_ACK, &status, NLMSG_ERROR)
            .map(|_| ())
    }
}

// ---------------------------------------------------------------------------------------
// Records

/// One Landlock record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A refused access by `domain`.
    Access {
        /// The youngest domain that refused it.
        domain: u64,
        /// The denial entry (source `landlock`).
        denial: Denial,
    },
    /// `domain` was created by `pid`.
    Allocated {
        /// The domain.
        domain: u64,
        /// The process that created it (host pid).
        pid: u32,
    },
    /// `domain` is gone; `denials` were logged for it.
    Deallocated {
        /// The domain.
        domain: u64,
        /// How many refusals the kernel logged for it.
        denials: u64,
    },
}

/// Decodes an audit value: quoted as is, or hex-encoded (audit's form for a string with
/// spaces, quotes or control characters).
fn value(raw: &str) -> String {
    if let Some(q) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        return q.to_string();
    }
    if raw.len() >= 2 && raw.len().is_multiple_of(2) && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        let bytes: Option<Vec<u8>> = (0..raw.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&raw[i..i + 2], 16).ok())
            .collect();
        if let Some(b) = bytes {
            return String::from_utf8_lossy(&b).into_owned();
        }
    }
    raw.to_string()
}

/// The `key=value` fields of a record's text (after `audit(...): `). Quoted values never
/// contain spaces (audit hex-encodes those).
fn fields(text: &str) -> Vec<(&str, &str)> {
    let body = text.split_once("): ").map(|(_, b)| b).unwrap_or(text);
    body.trim_end_matches('\0')
        .split(' ')
        .filter_map(|f| f.split_once('='))
        .collect()
}

/// Parses one record of type `kind` (others: `None`).
pub fn parse(kind: u16, text: &str) -> Option<Record> {
    let f = fields(text);
    let get = |k: &str| f.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let domain = u64::from_str_radix(get("domain")?, 16).ok()?;
    match kind {
        AUDIT_LANDLOCK_DOMAIN => match get("status")? {
            "allocated" => Some(Record::Allocated {
                domain,
                pid: get("pid")?.parse().ok()?,
            }),
            "deallocated" => Some(Record::Deallocated {
                domain,
                denials: get("denials").and_then(|d| d.parse().ok()).unwrap_or(0),
            }),
            _ => None,
        },
        AUDIT_LANDLOCK_ACCESS => {
            let blockers: Vec<&str> = get("blockers")?.split(',').collect();
            let category = blockers.first()?.split_once('.')?.0;
            let access: Vec<String> = blockers
                .iter()
                .map(|b| b.split_once('.').map(|(_, r)| r).unwrap_or(b).to_string())
                .collect();
            let rest = || {
                f.iter()
                    .filter(|(k, _)| !matches!(*k, "domain" | "blockers"))
                    .map(|(k, v)| format!("{k}={}", value(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let (kind, path, object) = match (category, access.first().map(String::as_str)) {
                ("fs", _) => {
                    let path = get("path")
                        .or_else(|| get("name"))
                        .map(value)
                        .unwrap_or_else(rest);
                    (DenialKind::Fs, Some(path), None)
                }
                ("net", _) => {
                    let object = match (get("daddr"), get("dest"), get("saddr"), get("src")) {
                        (Some(a), Some(p), _, _) | (None, None, Some(a), Some(p)) => {
                            if a.contains(':') {
                                format!("[{a}]:{p}")
                            } else {
                                format!("{a}:{p}")
                            }
                        }
                        (None, Some(p), _, _) | (None, None, None, Some(p)) => format!("port {p}"),
                        _ => rest(),
                    };
                    (DenialKind::Net, None, Some(object))
                }
                ("scope", Some("signal")) => {
                    let object = match (get("opid"), get("ocomm")) {
                        (Some(p), Some(c)) => format!("pid {p} ({})", value(c)),
                        (Some(p), None) => format!("pid {p}"),
                        _ => rest(),
                    };
                    (DenialKind::Signal, None, Some(object))
                }
                _ => (DenialKind::Net, None, Some(rest())),
            };
            Some(Record::Access {
                domain,
                denial: Denial {
                    kind,
                    access,
                    path,
                    object,
                    args: Vec::new(),
                    source: DenialSource::Landlock,
                    count: 1,
                },
            })
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Attribution

/// Where a watched process's records go (implemented by the process layer).
pub trait AuditSink: Send + Sync {
    /// One refusal of the process's tree.
    fn record(&self, denial: Denial);
    /// Records of the tree may have been lost.
    fn lost(&self);
    /// Every record of the finished tree has been read: the source's part is final.
    fn settled(&self);
}

/// Access records kept for a domain whose domain record has not come yet (it follows the
/// first access record), and for domains seen before their process was watched.
const PENDING_PER_DOMAIN: usize = 64;
/// Domains kept waiting for their record or their process; older ones are dropped.
const PENDING_DOMAINS: usize = 128;
/// Domains of other programs remembered, so their later records are dropped at once.
const FOREIGN_DOMAINS: usize = 1024;
/// How long a domain of an unwatched pid waits for that pid to be watched (the child can
/// refuse something before the server has registered it).
const UNCLAIMED_FOR: Duration = Duration::from_secs(10);

struct Watched {
    sink: Arc<dyn AuditSink>,
    /// The kernel's lost-record counter when the watch began.
    lost_at_start: Option<u32>,
}

struct ClaimedDomain {
    pid: u32,
    logged: u64,
}

struct Pending {
    domain: u64,
    /// The creator, once its domain record came.
    pid: Option<u32>,
    since: Instant,
    records: Vec<Denial>,
    overflow: bool,
}

#[derive(Default)]
struct Registry {
    watched: HashMap<u32, Watched>,
    domains: HashMap<u64, ClaimedDomain>,
    pending: VecDeque<Pending>,
    foreign: VecDeque<u64>,
    /// Pending entries pushed out of the bounded queue (domain, creator if known): a process
    /// that later turns out to own one has lost records, and its list says so.
    evicted: VecDeque<(u64, Option<u32>)>,
}

impl Registry {
    fn pending_mut(&mut self, domain: u64) -> &mut Pending {
        if let Some(i) = self.pending.iter().position(|p| p.domain == domain) {
            return &mut self.pending[i];
        }
        if self.pending.len() >= PENDING_DOMAINS
            && let Some(old) = self.pending.pop_front()
        {
            if self.evicted.len() >= FOREIGN_DOMAINS {
                self.evicted.pop_front();
            }
            self.evicted.push_back((old.domain, old.pid));
        }
        self.pending.push_back(Pending {
            domain,
            pid: None,
            since: Instant::now(),
            records: Vec::new(),
            overflow: false,
        });
        self.pending.back_mut().expect("just pushed")
    }

    /// Starts attributing the domains `pid` creates to `watched`. Records of an earlier holder
    /// of the same pid number that were pushed out of the queue, or a second registration of a
    /// pid still watched (pid reuse before the first one settled), make every list involved
    /// incomplete rather than wrong.
    fn register(&mut self, pid: u32, watched: Watched) {
        if self.evicted.iter().any(|(_, p)| *p == Some(pid)) {
            watched.sink.lost();
        }
        if let Some(previous) = self.watched.insert(pid, watched) {
            previous.sink.lost();
            if let Some(w) = self.watched.get(&pid) {
                w.sink.lost();
            }
        }
        // Domains the child created (and was refused in) before this registration.
        let (mine, others): (Vec<Pending>, Vec<Pending>) =
            self.pending.drain(..).partition(|p| p.pid == Some(pid));
        self.pending = others.into();
        for p in mine {
            self.claim(p.domain, pid, p.records, p.overflow);
        }
    }

    fn claim(&mut self, domain: u64, pid: u32, records: Vec<Denial>, overflow: bool) {
        let Some(w) = self.watched.get(&pid) else {
            return;
        };
        if self.evicted.iter().any(|(d, _)| *d == domain) {
            w.sink.lost();
        }
        let logged = records.len() as u64;
        for d in records {
            w.sink.record(d);
        }
        if overflow {
            w.sink.lost();
        }
        self.domains.insert(domain, ClaimedDomain { pid, logged });
    }

    fn handle(&mut self, record: Record) {
        match record {
            Record::Access { domain, denial } => {
                if let Some(c) = self.domains.get_mut(&domain) {
                    c.logged += 1;
                    if let Some(w) = self.watched.get(&c.pid) {
                        w.sink.record(denial);
                    }
                } else if !self.foreign.contains(&domain) {
                    let p = self.pending_mut(domain);
                    if p.records.len() < PENDING_PER_DOMAIN {
                        p.records.push(denial);
                    } else {
                        p.overflow = true;
                    }
                }
            }
            Record::Allocated { domain, pid } => {
                let (records, overflow) = match self.pending.iter().position(|p| p.domain == domain)
                {
                    Some(i) => {
                        let p = self.pending.remove(i).expect("index in range");
                        (p.records, p.overflow)
                    }
                    None => (Vec::new(), false),
                };
                if self.watched.contains_key(&pid) {
                    self.claim(domain, pid, records, overflow);
                } else {
                    // Perhaps a process the server has not registered yet.
                    let p = self.pending_mut(domain);
                    p.pid = Some(pid);
                    p.records = records;
                    p.overflow = overflow;
                    p.since = Instant::now();
                }
            }
            Record::Deallocated { domain, denials } => {
                if let Some(c) = self.domains.remove(&domain) {
                    if c.logged < denials
                        && let Some(w) = self.watched.get(&c.pid)
                    {
                        w.sink.lost();
                    }
                } else {
                    self.pending.retain(|p| p.domain != domain);
                    self.foreign.retain(|d| *d != domain);
                }
            }
        }
        // Domains whose creator was never watched within the window belong to other programs.
        let now = Instant::now();
        while let Some(p) = self.pending.front() {
            if p.pid.is_some() && now.duration_since(p.since) > UNCLAIMED_FOR {
                let d = p.domain;
                self.pending.pop_front();
                if self.foreign.len() >= FOREIGN_DOMAINS {
                    self.foreign.pop_front();
                }
                self.foreign.push_back(d);
            } else {
                break;
            }
        }
    }

    fn mark_all_lost(&self) {
        for w in self.watched.values() {
            w.sink.lost();
        }
    }
}

/// The reader: the multicast socket, the status socket and who is watched.
pub struct AuditSource {
    records: OwnedFd,
    control: Mutex<Control>,
    registry: Mutex<Registry>,
    reading: AtomicBool,
}

impl AuditSource {
    /// Attributes the records of domains `pid` creates (the spawned process, before exec) to
    /// `sink`, until [`AuditSource::settle`].
    pub fn watch(&self, pid: u32, sink: Arc<dyn AuditSink>) {
        let lost_at_start = self.kernel_status().ok().map(|s| s.lost);
        let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        reg.register(
            pid,
            Watched {
                sink,
                lost_at_start,
            },
        );
    }

    fn kernel_status(&self) -> std::io::Result<KernelStatus> {
        self.control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .status()
    }

    /// Reads every record waiting in the socket (under the registry lock, so that whoever
    /// returns from here has seen every record the kernel had handed over).
    fn drain(&self, reg: &mut Registry) {
        let mut buf = vec![0u8; 16384];
        loop {
            match rustix::net::recv(&self.records, &mut buf[..], RecvFlags::DONTWAIT) {
                Ok((n, _)) => {
                    for (kind, _, payload) in messages(&buf[..n]) {
                        if (kind == AUDIT_LANDLOCK_ACCESS || kind == AUDIT_LANDLOCK_DOMAIN)
                            && let Some(r) = parse(kind, &String::from_utf8_lossy(payload))
                        {
                            reg.handle(r);
                        }
                    }
                }
                Err(rustix::io::Errno::AGAIN) => return,
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::NOBUFS) => {
                    // The socket overflowed: records of every watched tree may be missing.
                    tracing::warn!("the Landlock audit socket overflowed: records may be missing");
                    reg.mark_all_lost();
                }
                Err(e) => {
                    tracing::error!("reading Landlock audit records: {e}");
                    reg.mark_all_lost();
                    return;
                }
            }
        }
    }

    /// The tree of `pid` is gone: waits (bounded) until the kernel has handed over every
    /// record queued so far (its audit backlog is empty), reads them, checks the kernel's
    /// lost counter, then stops watching `pid` and tells its sink. A no-op for a pid not
    /// watched. Blocking: call it off the async runtime.
    pub fn settle(&self, pid: u32) {
        if !self
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .watched
            .contains_key(&pid)
        {
            return;
        }
        // Every record of the tree was queued before its last task exited; the kernel's
        // audit thread multicasts them in order. Backlog 0: all handed over.
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut status = self.kernel_status();
        while let Ok(s) = status
            && s.backlog > 0
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
            status = self.kernel_status();
        }
        let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        self.drain(&mut reg);
        let Some(w) = reg.watched.remove(&pid) else {
            return;
        };
        let complete = match (&status, w.lost_at_start) {
            (Ok(s), Some(before)) => s.backlog == 0 && s.lost == before,
            _ => false,
        };
        if !complete {
            tracing::warn!(
                "Landlock audit records of pid {pid} may be incomplete: status {status:?}, lost counter at start {:?}",
                w.lost_at_start
            );
            w.sink.lost();
        }
        reg.domains.retain(|_, c| c.pid != pid);
        w.sink.settled();
    }

    fn run(self: Arc<Self>) {
        if self.reading.swap(true, Ordering::SeqCst) {
            return;
        }
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("landlock-audit".into())
            .spawn(move || {
                loop {
                    let mut pfd = [rustix::event::PollFd::new(
                        &this.records,
                        rustix::event::PollFlags::IN,
                    )];
                    match rustix::event::poll(&mut pfd, None) {
                        Ok(_) | Err(rustix::io::Errno::INTR) => {}
                        Err(e) => {
                            tracing::error!("waiting for Landlock audit records: {e}");
                            return;
                        }
                    }
                    let mut reg = this.registry.lock().unwrap_or_else(|p| p.into_inner());
                    this.drain(&mut reg);
                }
            });
        if let Err(e) = spawned {
            tracing::error!("starting the Landlock audit reader: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Startup

const FIX_CAPS: &str = "run the server as root in the host's initial user and network namespace (reading audit records needs CAP_AUDIT_READ, the audit status CAP_AUDIT_CONTROL)";
const FIX_ENABLE: &str =
    "set [sandbox] denial_audit = \"enable\" to turn audit on host-wide (or `auditctl -e 1`)";

/// A self-test domain: this thread restricts itself (same executable: Landlock logs it by
/// default) so that listing `/` is refused. Returns after the refusal.
fn refuse_once() -> std::io::Result<()> {
    use landlock::{AccessFs, Ruleset, RulesetAttr};
    let ruleset = Ruleset::default()
        .handle_access(AccessFs::ReadDir)
        .and_then(|r| r.create())
        .map_err(std::io::Error::other)?;
    ruleset.restrict_self().map_err(std::io::Error::other)?;
    match std::fs::read_dir("/") {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Err(std::io::Error::other("the self-test domain did not refuse")),
    }
}

/// Waits (until `deadline`) for the self-test's records: an `fs.read_dir` refusal of a
/// domain this process created.
fn saw_own_record(fd: &OwnedFd, deadline: Instant) -> bool {
    let me = std::process::id();
    let mut domains: Vec<u64> = Vec::new();
    let mut mine: Vec<u64> = Vec::new();
    let mut buf = vec![0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let timeout = rustix::event::Timespec::try_from(left).ok();
        let mut pfd = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
        if rustix::event::poll(&mut pfd, timeout.as_ref()).unwrap_or(0) == 0 {
            continue;
        }
        let Ok((n, _)) = rustix::net::recv(fd, &mut buf[..], RecvFlags::DONTWAIT) else {
            continue;
        };
        for (kind, _, payload) in messages(&buf[..n]) {
            match parse(kind, &String::from_utf8_lossy(payload)) {
                Some(Record::Access { domain, denial })
                    if denial.access == ["read_dir"] && denial.path.as_deref() == Some("/") =>
                {
                    domains.push(domain);
                }
                Some(Record::Allocated { domain, pid }) if pid == me => mine.push(domain),
                _ => {}
            }
            if domains.iter().any(|d| mine.contains(d)) {
                return true;
            }
        }
    }
}

/// Decides whether the source is active (`mode`, the running Landlock `abi`), turning audit
/// on first for `enable`. Sets the child's restrict flags. For the server call it before the
/// zygote is forked (the flags must be in its memory) and then [`start`]; `doctor` only
/// wants the verdict. `Err` only for `enable` when audit cannot be turned on.
pub fn prepare(
    mode: AuditMode,
    abi: i32,
    change_host: bool,
) -> Result<(AuditState, Option<Arc<AuditSource>>), String> {
    if mode == AuditMode::Off {
        return Ok((
            AuditState::inactive(
                mode,
                "turned off by the configuration ([sandbox] denial_audit = \"off\")".into(),
                "set [sandbox] denial_audit = \"auto\" (or \"enable\")",
            ),
            None,
        ));
    }
    let note = (mode == AuditMode::Enable).then(|| ENABLE_NOTE.to_string());
    let inactive = |reason: String, fix: &str| {
        let mut s = AuditState::inactive(mode, reason, fix);
        s.note = note.clone();
        s
    };
    if abi < 7 {
        return Ok((
            inactive(
                format!("Landlock ABI {abi} writes no audit records (needs ABI 7, Linux 6.15)"),
                "run a kernel with Landlock ABI 7 or newer",
            ),
            None,
        ));
    }
    let mut control = match Control::open().and_then(|mut c| c.status().map(|s| (c, s))) {
        Ok(c) => c,
        Err(e) => {
            if mode == AuditMode::Enable && change_host {
                return Err(format!(
                    "[sandbox] denial_audit = \"enable\": cannot read or change the kernel's audit status: {e} ({FIX_CAPS})"
                ));
            }
            return Ok((
                inactive(
                    format!("cannot read the kernel's audit status: {e}"),
                    FIX_CAPS,
                ),
                None,
            ));
        }
    };
    if control.1.enabled == 0 {
        if mode == AuditMode::Enable && change_host {
            control.0.enable().map_err(|e| {
                format!("[sandbox] denial_audit = \"enable\": turning the kernel audit subsystem on (AUDIT_SET) failed: {e} ({FIX_CAPS})")
            })?;
            tracing::warn!("{ENABLE_NOTE}");
        } else if mode == AuditMode::Enable {
            // doctor: say what serve would do.
            return Ok((
                inactive(
                    "audit is disabled on this host (audit_enabled=0); the server turns it on at startup (host-wide)".into(),
                    "start the server",
                ),
                None,
            ));
        } else {
            return Ok((
                inactive(
                    "audit is disabled on this host (audit_enabled=0)".into(),
                    FIX_ENABLE,
                ),
                None,
            ));
        }
    }
    let records = match socket(1 << (AUDIT_NLGRP_READLOG - 1)) {
        Ok(fd) => fd,
        Err(e) => {
            return Ok((
                inactive(
                    format!("cannot join the audit read-log group (AUDIT_NLGRP_READLOG): {e}"),
                    FIX_CAPS,
                ),
                None,
            ));
        }
    };
    // Room for bursts (forced as root; the normal limit otherwise).
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(&records, 8 << 20).is_err() {
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&records, 8 << 20);
    }
    // The self-test: one refusal of our own, then its records within a bounded wait.
    let tested = std::thread::Builder::new()
        .name("audit-self-test".into())
        .spawn(refuse_once)
        .map_err(|e| e.to_string())
        .and_then(|t| t.join().map_err(|_| "the self-test panicked".to_string()))
        .and_then(|r| r.map_err(|e| e.to_string()));
    if let Err(e) = tested {
        return Ok((
            inactive(
                format!("the self-test could not make a Landlock refusal: {e}"),
                FIX_CAPS,
            ),
            None,
        ));
    }
    if !saw_own_record(&records, Instant::now() + Duration::from_secs(2)) {
        return Ok((
            inactive(
                "audit is enabled, but the self-test's Landlock record did not arrive within 2 s (an audit rule excludes AUDIT_LANDLOCK_ACCESS, or the server is not in the initial network namespace)".into(),
                "remove audit exclude rules for types 1423/1424 (`auditctl -l`); run the server in the host's network namespace",
            ),
            None,
        ));
    }
    let source = Arc::new(AuditSource {
        records,
        control: Mutex::new(control.0),
        registry: Mutex::new(Registry::default()),
        reading: AtomicBool::new(false),
    });
    RESTRICT_FLAGS.store(LOG_NEW_EXEC_ON, Ordering::Relaxed);
    Ok((
        AuditState {
            mode,
            active: true,
            reason: None,
            fix: None,
            note,
        },
        Some(source),
    ))
}

/// Records the decision of [`prepare`] for this process and starts reading (call after the
/// zygote was forked: it starts a thread).
pub fn start(state: AuditState, source: Option<Arc<AuditSource>>) {
    let _ = STATE.set(state);
    if let Some(s) = source
        && ACTIVE.set(s.clone()).is_ok()
    {
        s.run();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_into_denials() {
        let r = parse(
            AUDIT_LANDLOCK_ACCESS,
            "audit(1796325557.795:231): domain=1726dbc68 blockers=fs.make_reg path=\"/tmp/audx\" dev=\"vda\" ino=10012131",
        )
        .unwrap();
        let Record::Access { domain, denial } = r else {
            panic!("{r:?}")
        };
        assert_eq!(domain, 0x1726dbc68);
        assert_eq!(denial.kind, DenialKind::Fs);
        assert_eq!(denial.access, ["make_reg"]);
        assert_eq!(denial.path.as_deref(), Some("/tmp/audx"));
        assert_eq!(denial.source, DenialSource::Landlock);
        // Hex-encoded (a space in the name), several blockers.
        let Some(Record::Access { denial, .. }) = parse(
            AUDIT_LANDLOCK_ACCESS,
            "audit(1.2:3): domain=a blockers=fs.write_file,fs.truncate path=2F6120622F63 dev=\"vda\" ino=1",
        ) else {
            panic!()
        };
        assert_eq!(denial.access, ["write_file", "truncate"]);
        assert_eq!(denial.path.as_deref(), Some("/a b/c"));
        let Some(Record::Access { denial, .. }) = parse(
            AUDIT_LANDLOCK_ACCESS,
            "audit(1.2:3): domain=a blockers=net.connect_tcp daddr=127.0.0.1 dest=8080",
        ) else {
            panic!()
        };
        assert_eq!(
            (
                denial.kind,
                denial.access[0].as_str(),
                denial.object.as_deref()
            ),
            (DenialKind::Net, "connect_tcp", Some("127.0.0.1:8080"))
        );
        let Some(Record::Access { denial, .. }) = parse(
            AUDIT_LANDLOCK_ACCESS,
            "audit(1.2:3): domain=a blockers=scope.signal opid=1 ocomm=\"systemd\"",
        ) else {
            panic!()
        };
        assert_eq!(
            (denial.kind, denial.object.as_deref()),
            (DenialKind::Signal, Some("pid 1 (systemd)"))
        );
        assert_eq!(
            parse(
                AUDIT_LANDLOCK_DOMAIN,
                "audit(1.2:3): domain=1726dbc68 status=allocated mode=enforcing pid=4497 uid=0 exe=\"/x\" comm=\"python3\""
            ),
            Some(Record::Allocated {
                domain: 0x1726dbc68,
                pid: 4497
            })
        );
        assert_eq!(
            parse(
                AUDIT_LANDLOCK_DOMAIN,
                "audit(1.2:3): domain=1726dbc68 status=deallocated denials=5"
            ),
            Some(Record::Deallocated {
                domain: 0x1726dbc68,
                denials: 5
            })
        );
        assert_eq!(parse(1300, "audit(1.2:3): arch=c000003e"), None);
    }

    struct Sink(Mutex<(Vec<Denial>, bool)>);
    impl AuditSink for Sink {
        fn record(&self, d: Denial) {
            self.0.lock().unwrap().0.push(d);
        }
        fn lost(&self) {
            self.0.lock().unwrap().1 = true;
        }
        fn settled(&self) {}
    }

    fn access(domain: u64, path: &str) -> Record {
        Record::Access {
            domain,
            denial: crate::sandbox::denials::fs_denial(
                "write_file",
                path.into(),
                DenialSource::Landlock,
            ),
        }
    }

    /// Attribution is by domain: the access record comes before its domain record, a domain
    /// can show up before its process is watched, and other programs' domains are dropped.
    #[test]
    fn records_are_attributed_by_domain() {
        let mut reg = Registry::default();
        let a = Arc::new(Sink(Mutex::new((Vec::new(), false))));
        reg.watched.insert(
            10,
            Watched {
                sink: a.clone(),
                lost_at_start: None,
            },
        );
        reg.handle(access(1, "/a"));
        reg.handle(Record::Allocated { domain: 1, pid: 10 });
        reg.handle(access(1, "/a2"));
        // Another program's domain.
        reg.handle(access(2, "/b"));
        reg.handle(Record::Allocated { domain: 2, pid: 99 });
        reg.handle(access(2, "/b2"));
        let got: Vec<_> =
            a.0.lock()
                .unwrap()
                .0
                .iter()
                .map(|d| d.path.clone().unwrap())
                .collect();
        assert_eq!(got, ["/a", "/a2"]);
        // Pid 99 is watched later (a process registered after its first refusal).
        let b = Arc::new(Sink(Mutex::new((Vec::new(), false))));
        reg.watched.insert(
            99,
            Watched {
                sink: b.clone(),
                lost_at_start: None,
            },
        );
        let mine: Vec<Pending> = reg
            .pending
            .drain(..)
            .filter(|p| p.pid == Some(99))
            .collect();
        for p in mine {
            reg.claim(p.domain, 99, p.records, p.overflow);
        }
        reg.handle(access(2, "/b3"));
        let got: Vec<_> =
            b.0.lock()
                .unwrap()
                .0
                .iter()
                .map(|d| d.path.clone().unwrap())
                .collect();
        assert_eq!(got, ["/b", "/b2", "/b3"]);
        // The kernel logged more than we read: lost.
        reg.handle(Record::Deallocated {
            domain: 1,
            denials: 3,
        });
        assert!(a.0.lock().unwrap().1);
    }

    fn sink() -> Arc<Sink> {
        Arc::new(Sink(Mutex::new((Vec::new(), false))))
    }

    fn watched(sink: &Arc<Sink>) -> Watched {
        Watched {
            sink: sink.clone(),
            lost_at_start: None,
        }
    }

    /// A tree that floods the pending queue with its own domains pushes out another
    /// process's early records: that process's list must say it is incomplete.
    #[test]
    fn records_pushed_out_of_the_queue_make_the_owner_incomplete() {
        let mut reg = Registry::default();
        // The victim's child is refused before its domain record (and before it is watched).
        reg.handle(access(1, "/victim"));
        for d in 100..100 + PENDING_DOMAINS as u64 {
            reg.handle(access(d, "/flood"));
        }
        let victim = sink();
        reg.register(10, watched(&victim));
        reg.handle(Record::Allocated { domain: 1, pid: 10 });
        assert!(
            victim.0.lock().unwrap().1,
            "an evicted record went unnoticed"
        );
        // The same when the creator was known but not yet watched.
        let mut reg = Registry::default();
        reg.handle(access(2, "/victim"));
        reg.handle(Record::Allocated { domain: 2, pid: 20 });
        for d in 100..100 + PENDING_DOMAINS as u64 {
            reg.handle(access(d, "/flood"));
        }
        let late = sink();
        reg.register(20, watched(&late));
        assert!(late.0.lock().unwrap().1);
    }

    /// Pid reuse before the first process settled: neither list may claim to be complete.
    #[test]
    fn a_pid_registered_twice_marks_both_lists_lost() {
        let mut reg = Registry::default();
        let first = sink();
        let second = sink();
        reg.register(30, watched(&first));
        assert!(!first.0.lock().unwrap().1);
        reg.register(30, watched(&second));
        assert!(first.0.lock().unwrap().1);
        assert!(second.0.lock().unwrap().1);
    }
}
