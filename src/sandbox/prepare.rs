//! Policy + host → what the child applies, decided once in the parent: fail closed when the
//! host cannot enforce something (unless degradation is allowed), and report what was enforced.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use super::landlock::{self, RulesetSpec};
use super::placeholders::{self, Lease};
use super::policy::{Access, Filesystem, FsEntry, Level, SandboxPolicy};
use super::probe::{self, MountNamespaces};
use super::seccomp;
use super::server_files::{Current, ServerFiles};
use super::tracking::{self, Carved, Protection};
use crate::protocol::sandbox::{Enforcement, SandboxReport};
use crate::protocol::{ErrorCode, RpcError};

/// Why a policy cannot be prepared. Each kind is one JSON-RPC error code (see
/// [`From<SandboxError> for RpcError`](RpcError)); the message names what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The operator's bounds refuse the policy (-32020): ceiling, network switch, writable
    /// paths.
    #[error("{0}")]
    NotAllowed(String),
    /// The host cannot enforce the policy and degradation is not allowed (-32021).
    #[error("{0}")]
    Unavailable(String),
    /// Building what enforces the policy failed (-32603).
    #[error("{0}")]
    Internal(String),
}

impl From<SandboxError> for RpcError {
    fn from(e: SandboxError) -> RpcError {
        match e {
            SandboxError::NotAllowed(m) => RpcError::new(ErrorCode::PolicyNotAllowed, m),
            SandboxError::Unavailable(m) => RpcError::new(ErrorCode::SandboxUnavailable, m),
            SandboxError::Internal(m) => RpcError::internal(m),
        }
    }
}

/// Server-wide sandbox settings (from the config file and flags).
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// The policy used when a request carries none (a 6.2 `sandboxPolicy` object).
    pub default_policy: Value,
    /// The most permissive level a client may ask for.
    pub ceiling: Level,
    /// May clients ask for network access?
    pub allow_network: bool,
    /// Run what cannot be fully enforced, reporting the degradations.
    pub allow_degraded: bool,
    /// Landlock ABI to use at most (tests simulate older kernels with it).
    pub landlock_abi_cap: Option<i32>,
    /// Make files with a hard link outside the writable roots read-only for processes (see
    /// [`crate::sandbox::links`]). On by default.
    pub protect_hard_links: bool,
    /// The server's own listening TCP ports, which no confined process may connect to or bind
    /// (set by the transport once its listener is bound; empty for stdio and `stockade run`).
    pub supervisor_ports: SupervisorPorts,
    /// Operator bound on paths (`[sandbox] workspace_roots`, `--workspace-root`): when not
    /// empty, every path a policy makes writable must lie inside one of them (resolved).
    pub workspace_roots: Vec<PathBuf>,
    /// `/tmp` and the server's `$TMPDIR` (and paths inside them) are writable roots allowed
    /// outside `workspace_roots` (`[sandbox] allow_tmp_roots`, default true).
    pub allow_tmp_roots: bool,
    /// Allow writable roots that are the whole host or a system directory (`/`, `/etc`,
    /// `/usr`, ..., `$HOME` itself). Off by default.
    pub allow_system_writable_roots: bool,
    /// Files the server read at startup (token, config): hidden from every confined process
    /// and every filesystem call.
    pub server_files: ServerFiles,
    /// Landlock audit records as a denial source (`[sandbox] denial_audit`).
    pub denial_audit: super::denials::audit::AuditMode,
}

/// The TCP ports the server itself listens on, and the network-only Landlock ruleset that
/// denies them (built once, see [`landlock::build_port_guard`]). A confined process with the
/// network on gets this ruleset stacked on its own, so it can neither drive its supervisor
/// over loopback nor take its port; with the network off its own ruleset and seccomp already
/// refuse all TCP.
#[derive(Debug, Clone, Default)]
pub struct SupervisorPorts {
    ports: Vec<u16>,
    guard: Option<Arc<OwnedFd>>,
}

impl SupervisorPorts {
    /// The server listens on `ports`; call [`SupervisorPorts::build`] before use.
    pub fn new(ports: Vec<u16>) -> SupervisorPorts {
        SupervisorPorts { ports, guard: None }
    }

    /// The ports (sorted, without duplicates).
    pub fn ports(&self) -> Vec<u16> {
        let mut p = self.ports.clone();
        p.sort_unstable();
        p.dedup();
        p
    }

    /// Builds the ruleset when there are ports and the Landlock ABI in use has TCP rules
    /// (ABI 4); otherwise [`prepare`] fails closed for network-enabled confined policies.
    pub fn build(&mut self, abi: i32) -> std::io::Result<()> {
        self.guard = if self.ports.is_empty() || abi < 4 {
            None
        } else {
            Some(Arc::new(
                landlock::build_port_guard(&self.ports).map_err(std::io::Error::other)?,
            ))
        };
        Ok(())
    }

    fn listed(&self) -> String {
        self.ports()
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            default_policy: json!({"type": "workspace-write"}),
            ceiling: Level::WorkspaceWrite,
            allow_network: true,
            allow_degraded: false,
            landlock_abi_cap: None,
            protect_hard_links: true,
            supervisor_ports: SupervisorPorts::default(),
            workspace_roots: Vec::new(),
            allow_tmp_roots: true,
            allow_system_writable_roots: false,
            server_files: ServerFiles::default(),
            denial_audit: Default::default(),
        }
    }
}

/// What this host offers, measured once.
#[derive(Debug, Clone, Copy)]
pub struct HostSupport {
    /// Landlock ABI in use (after the cap).
    pub landlock_abi: i32,
    /// seccomp filters available.
    pub seccomp: bool,
    /// User namespaces available (the startup probe).
    pub user_namespaces: bool,
    /// How processes get their private mount namespace (the startup probe).
    pub mount_namespaces: probe::MountNamespaces,
}

impl HostSupport {
    /// Measures this host (the probes run once per process); `cap` simulates an older
    /// Landlock ABI.
    pub fn measure(cap: Option<i32>) -> HostSupport {
        let probes = probe::probes();
        HostSupport {
            landlock_abi: probe::landlock_abi_in_use(cap),
            seccomp: probe::seccomp(),
            user_namespaces: probes.user_namespace.available,
            mount_namespaces: probes.mount_namespace_mode,
        }
    }
}

/// Precompiled seccomp programs (one pair per network setting), built at startup: each pair is
/// the user-notification variant and the plain one the child falls back to when it cannot
/// install a listener (see [`seccomp::FilterSpec::notify`]).
#[derive(Debug, Clone)]
pub struct SeccompCache {
    with_network: Vec<u8>,
    without_network: Vec<u8>,
}

impl SeccompCache {
    /// Generates both variants.
    pub fn build() -> SeccompCache {
        let c = |block_network| {
            let variant = |notify| {
                seccomp::compile(seccomp::FilterSpec {
                    block_network,
                    notify,
                })
            };
            seccomp::encode(&[variant(true), variant(false)].concat())
        };
        SeccompCache {
            with_network: c(false),
            without_network: c(true),
        }
    }
}

/// Mounts of the mount-max budget left for those copied from the host.
const MOUNTS_RESERVED: usize = 1000;

/// Everything the child needs to confine itself.
#[derive(Debug)]
pub struct Prepared {
    /// The Landlock ruleset to restrict to.
    pub ruleset: Option<OwnedFd>,
    /// The ruleset denying the server's own ports, stacked after `ruleset` (see
    /// [`SupervisorPorts`]).
    pub port_guard: Option<Arc<OwnedFd>>,
    /// Encoded seccomp programs (empty: none): the user-notification filter and its plain
    /// fallback (see [`SeccompCache`]).
    pub seccomp: Vec<u8>,
    /// Set no_new_privs.
    pub no_new_privs: bool,
    /// Leave the target no capability (it drops whatever it holds before exec).
    pub drop_caps: bool,
    /// RLIMIT_CORE = 0.
    pub no_core: bool,
    /// Mount operations (kind byte + path) for a private mount namespace: the read-only
    /// view, the carve-outs and the directories of `read_only_dirs`; then one
    /// read-only-if-present op (kind 3) per file of `link_files`, which [`Prepared::all_mounts`]
    /// appends.
    pub mounts: Vec<Vec<u8>>,
    /// The files of `read_only_files` that get a mount (empty when they do not fit): kept as
    /// the census gave them, not encoded per spawn, since a spawn that joins a namespace
    /// (most do) only compares them, and the census hands out the same allocation while it
    /// is unchanged (see [`super::mountns`]).
    pub link_files: Arc<[PathBuf]>,
    /// The mount namespace needs a user namespace (not root).
    pub userns: bool,
    /// Any confinement at all (`sandboxType: linuxSeccomp`).
    pub confined: bool,
    /// The SandboxReport.
    pub report: SandboxReport,
    /// The placeholders the mounts rely on (missing protected paths, see
    /// [`super::placeholders`]): keep them until the process tree is gone, and with a kept
    /// namespace as long as it is kept.
    pub placeholders: Vec<Lease>,
}

impl Prepared {
    /// Every mount op, `link_files` encoded (kind 3) after `mounts`: what a process that
    /// builds its namespace applies.
    pub fn all_mounts(&self) -> Vec<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        let mut all = self.mounts.clone();
        all.extend(self.link_files.iter().map(|f| {
            let mut op = vec![3u8];
            op.extend_from_slice(f.as_os_str().as_bytes());
            op
        }));
        all
    }

    /// Whether the process needs a private mount namespace.
    pub fn needs_namespace(&self) -> bool {
        !self.mounts.is_empty() || !self.link_files.is_empty()
    }
}

/// A read-only or hidden subtree inside an allowed one: Landlock cannot express it, so it
/// becomes a mount in a private mount namespace. Returns the mounts (kind byte + path, parents
/// first) and what cannot be protected at all (missing paths that must not be created).
/// The kind byte: 0 read-only, 1 hidden directory, 2 hidden file, 4 a symlink pinned (a mount
/// point on the link itself, so that it cannot be removed, renamed or replaced). Objects
/// protected earlier that moved away from their names are protected where they are now (see
/// [`super::tracking`]). The filesystem API uses the same list so that it refuses exactly
/// what the mounts refuse a process.
pub fn carve_outs(entries: &[FsEntry]) -> (Vec<Vec<u8>>, Vec<String>) {
    use std::os::unix::ffi::OsStrExt;
    let mut mounts: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut carved: Vec<Carved> = Vec::new();
    let mut out = Vec::new();
    let op = |kind: u8, path: &Path| {
        let mut m = vec![kind];
        m.extend_from_slice(path.as_os_str().as_bytes());
        (path.components().count(), m)
    };
    for e in entries {
        let inside = |pred: &dyn Fn(Access) -> bool| {
            entries
                .iter()
                .any(|o| pred(o.access) && o.path != e.path && e.path.starts_with(&o.path))
        };
        let carve = match e.access {
            Access::Read => inside(&|a| a == Access::Write),
            Access::None => inside(&|a| a != Access::None),
            Access::Write => false,
        };
        if !carve {
            continue;
        }
        let what = if e.access == Access::Read {
            "read-only"
        } else {
            "hidden"
        };
        // A mount covers its whole subtree: an entry below it that grants more cannot be
        // honoured, and silently running with less would misreport the policy.
        if let Some(o) = entries.iter().find(|o| {
            o.path != e.path
                && o.path.starts_with(&e.path)
                && match e.access {
                    Access::Read => o.access == Access::Write,
                    _ => o.access != Access::None,
                }
        }) {
            out.push(format!(
                "granting access to {} inside the {what} path {} (a private mount covers the whole subtree)",
                o.path.display(),
                e.path.display()
            ));
        }
        // Follow symlinks as the kernel would: protect what the path resolves to.
        match std::fs::canonicalize(&e.path) {
            Ok(real) => {
                let (kind, protection) = match (e.access, real.is_dir()) {
                    (Access::Read, _) => (0, Protection::ReadOnly),
                    (_, true) => (1, Protection::Hidden),
                    (_, false) => (2, Protection::Hidden),
                };
                mounts.push(op(kind, &real));
                carved.push(Carved {
                    real,
                    name: e.path.clone(),
                    protection,
                });
                // A protected name that is a symlink: the link itself must not be replaced
                // (by a new repository, say), so it becomes a mount point too.
                if std::fs::symlink_metadata(&e.path).is_ok_and(|m| m.file_type().is_symlink())
                    && let (Some(parent), Some(name)) = (e.path.parent(), e.path.file_name())
                    && let Ok(parent) = std::fs::canonicalize(parent)
                {
                    let link = parent.join(name);
                    mounts.push(op(4, &link));
                    carved.push(Carved {
                        real: link,
                        name: e.path.clone(),
                        protection: Protection::Pinned,
                    });
                }
            }
            Err(_) if e.skip_if_missing => {}
            // Missing: where a process could create it, its first missing component is a
            // placeholder (made by `placeholders::ensure` before a process's plan; a
            // filesystem call is refused there); elsewhere nothing can create it.
            Err(_) => {
                if let Some(at) = placeholders::needed_for(entries, e) {
                    mounts.push(op(if e.access == Access::Read { 0 } else { 1 }, &at));
                }
            }
        }
    }
    // Objects protected earlier that moved: protected where they are, unless this policy
    // allows no more there, or names that very path itself (its own decision).
    let hidden: Vec<PathBuf> = carved
        .iter()
        .filter(|c| c.protection == Protection::Hidden)
        .map(|c| c.real.clone())
        .collect();
    let needs = |now: &Path, protection: Protection| {
        // Below a hidden carve-out of this plan: out of reach already (and no mount point).
        if hidden.iter().any(|h| now.starts_with(h)) {
            return false;
        }
        let real_entries: Vec<(PathBuf, Access)> = entries
            .iter()
            .filter_map(|e| Some((std::fs::canonicalize(&e.path).ok()?, e.access)))
            .collect();
        if real_entries.iter().any(|(p, _)| p == now) {
            return false;
        }
        let granted = |a: Access| {
            real_entries
                .iter()
                .any(|(p, pa)| *pa == a && now.starts_with(p))
        };
        match protection {
            Protection::Pinned | Protection::ReadOnly => granted(Access::Write),
            Protection::Hidden => granted(Access::Write) || granted(Access::Read),
        }
    };
    match tracking::follow(&carved, &needs) {
        Ok(extra) => {
            for (protection, path) in extra {
                let kind = match protection {
                    Protection::Pinned => 4,
                    Protection::ReadOnly => 0,
                    Protection::Hidden if path.is_dir() => 1,
                    Protection::Hidden => 2,
                };
                mounts.push(op(kind, &path));
            }
        }
        Err(e) => out.push(e),
    }
    mounts.sort();
    mounts.dedup();
    (mounts.into_iter().map(|(_, m)| m).collect(), out)
}

/// Undoes the octal escapes of a `/proc/self/mountinfo` path (space, tab, newline, backslash).
fn unescape_mount_path(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The read-only view: outside the writable roots nothing may change, metadata included
/// (Landlock does not mediate `chmod`, `chown`, `utime` or xattrs, so a process running as
/// the owner of a file outside its roots, root above all, could change them). Returns the
/// mount ops that come first in every restricted plan: each writable root (real path,
/// outermost only) bound onto itself with its own flags (kind 6), then every mount point of
/// the host outside the writable roots remounted read-only (kind 5). The binds come first,
/// so the mounts that contain a writable root turn read-only around it, and mounts inside
/// the roots keep their own flags.
pub fn read_only_view(entries: &[FsEntry]) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let mut roots: Vec<PathBuf> = entries
        .iter()
        .filter(|e| e.access == Access::Write)
        .filter_map(|e| std::fs::canonicalize(&e.path).ok())
        .collect();
    roots.sort();
    roots.dedup();
    let outer: Vec<PathBuf> = roots
        .iter()
        .filter(|r| !roots.iter().any(|o| o != *r && r.starts_with(o)))
        .cloned()
        .collect();
    let host = host_mount_points();
    let points = host
        .iter()
        .filter(|p| !outer.iter().any(|r| p.starts_with(r)));
    let op = |kind: u8, p: &Path| {
        let mut m = vec![kind];
        m.extend_from_slice(p.as_os_str().as_bytes());
        m
    };
    outer
        .iter()
        .map(|r| op(6, r))
        .chain(points.map(|p| op(5, p)))
        .collect()
}

/// The host's mount points (absolute, fewest components first, no duplicates), read from
/// `/proc/self/mountinfo` again only when the mount table changed since the last read.
///
/// Why: the kernel renders the whole table for every read (about 0.1 ms per spawn here),
/// while it changes rarely. Sound because the change is polled *before* the table is read:
/// a change that lands during or after the read is reported by the next poll, which reads
/// again (the same `POLLPRI` signal [`super::mountns`] relies on). Without `/proc` (no poll)
/// the table is read every time.
fn host_mount_points() -> Arc<Vec<PathBuf>> {
    use std::os::unix::ffi::OsStringExt;
    struct Cache {
        table: Option<std::fs::File>,
        points: Option<Arc<Vec<PathBuf>>>,
    }
    static CACHE: std::sync::Mutex<Option<Cache>> = std::sync::Mutex::new(None);
    let mut guard = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let cache = guard.get_or_insert_with(|| Cache {
        table: std::fs::File::open("/proc/self/mounts").ok(),
        points: None,
    });
    let changed = match &cache.table {
        Some(f) => {
            use std::os::fd::AsRawFd;
            let mut pfd = libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLPRI,
                revents: 0,
            };
            // SAFETY: poll on one valid pollfd, without waiting.
            let n = unsafe { libc::poll(&mut pfd, 1, 0) };
            // The first poll after opening always reports a change (nothing cached yet).
            n != 0 && pfd.revents & (libc::POLLPRI | libc::POLLERR) != 0
        }
        None => true,
    };
    if !changed && let Some(points) = &cache.points {
        return points.clone();
    }
    let mut points: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|f| PathBuf::from(std::ffi::OsString::from_vec(unescape_mount_path(f))))
        .filter(|p| p.is_absolute())
        .collect();
    points.sort_by_key(|p| p.components().count());
    points.dedup();
    let points = Arc::new(points);
    if cache.table.is_some() {
        cache.points = Some(points.clone());
    }
    points
}

/// The operator's limits on what a client may ask for: the ceiling, the network switch and
/// the paths a policy may make writable (-32020). Processes and filesystem calls share them.
pub fn check_allowed(
    policy: &SandboxPolicy,
    settings: &SandboxSettings,
) -> Result<(), SandboxError> {
    check_level_and_network(policy, settings)?;
    check_writable_roots(policy, settings)
}

fn check_level_and_network(
    policy: &SandboxPolicy,
    settings: &SandboxSettings,
) -> Result<(), SandboxError> {
    if policy.level > settings.ceiling {
        return Err(SandboxError::NotAllowed(format!(
            "sandbox policy `{}` is not allowed: this server's ceiling is `{}`",
            policy.name,
            settings.ceiling.name()
        )));
    }
    if policy.network && !settings.allow_network && policy.level != Level::DangerFullAccess {
        return Err(SandboxError::NotAllowed(
            "network access is not allowed by this server's configuration (--no-network)".into(),
        ));
    }
    Ok(())
}

/// The real path of `path` as the kernel would resolve it now: the real path of its deepest
/// existing ancestor with the rest appended (policy paths are already lexically normal, and
/// names that do not exist yet contain no symlink).
fn resolve_now(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        if let Ok(mut real) = std::fs::canonicalize(&cur) {
            for name in missing.iter().rev() {
                real.push(name);
            }
            return real;
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(name), Some(parent)) => {
                missing.push(name);
                cur = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Directories that, made writable, make the host writable (14.10). `/lib*` is matched by
/// prefix as well; `$HOME` is added at check time.
const SYSTEM_DIRS: [&str; 14] = [
    "/", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/dev",
    "/proc", "/sys", "/var",
];

/// Trees of which no part may be writable: the kernel's interfaces (`/proc/sys/kernel` alone
/// is host root through `core_pattern`), devices, boot files, configuration, programs and
/// libraries, and the schedulers' spools. `/var` itself is refused, its other parts (build
/// workspaces such as `/var/lib/jenkins`) are not.
const SYSTEM_TREES: [&str; 12] = [
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/run",
    "/var/run",
    "/var/spool",
    "/var/lib/dpkg",
];

/// True when `real` (a resolved path) is the root, a system directory, `$HOME` itself or one
/// of its ancestors (which holds `$HOME`'s dotfiles and other users' homes), or lies inside a
/// system tree.
fn is_system_dir(real: &Path, home: Option<&Path>) -> bool {
    let top_level_lib = real
        .components()
        .nth(1)
        .is_some_and(|c| c.as_os_str().as_encoded_bytes().starts_with(b"lib"));
    static TREES: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    let trees = TREES.get_or_init(|| {
        SYSTEM_TREES
            .iter()
            .flat_map(|d| [PathBuf::from(d), resolve_now(Path::new(d))])
            .collect()
    });
    // `/dev/shm` is shared scratch memory, writable by every user anyway: a workspace there
    // makes nothing of the host writable.
    if real.starts_with("/dev/shm") {
        return false;
    }
    if top_level_lib || trees.iter().any(|t| real.starts_with(t)) {
        return true;
    }
    if home.is_some_and(|h| h.starts_with(real)) {
        return true;
    }
    // The host's layout (e.g. `/lib` -> `usr/lib`) does not change while the server runs.
    static RESOLVED: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    let resolved = RESOLVED.get_or_init(|| {
        SYSTEM_DIRS
            .iter()
            .chain(std::iter::once(&"/root"))
            .flat_map(|d| [PathBuf::from(d), resolve_now(Path::new(d))])
            .collect()
    });
    resolved.iter().any(|d| real == d)
}

/// The temporary roots the operator chose: `/tmp` and the server's own `$TMPDIR`, resolved
/// (a request's `TMPDIR` is the client's choice and gets no exemption).
fn tmp_roots() -> Vec<PathBuf> {
    let mut roots = vec![resolve_now(Path::new("/tmp"))];
    if let Some(t) = std::env::var_os("TMPDIR").map(PathBuf::from)
        && t.is_absolute()
    {
        roots.push(resolve_now(&super::policy::normalize(&t)));
    }
    roots
}

/// The paths a policy makes writable must not be the whole host (unless the operator allows
/// it) and must lie inside the operator's `workspace_roots` when set: checked on the
/// resolved path (symlinks followed), since that is what Landlock will grant.
fn check_writable_roots(
    policy: &SandboxPolicy,
    settings: &SandboxSettings,
) -> Result<(), SandboxError> {
    let entries = match &policy.filesystem {
        Filesystem::Restricted(entries) => entries,
        Filesystem::Unrestricted if !settings.workspace_roots.is_empty() => {
            return Err(SandboxError::NotAllowed(format!(
                "sandbox policy `{}` makes the whole filesystem writable, but this server bounds writes to its workspace roots ({})",
                policy.name,
                list(&settings.workspace_roots)
            )));
        }
        Filesystem::Unrestricted => return Ok(()),
    };
    let mut writes = entries
        .iter()
        .filter(|e| e.access == Access::Write)
        .peekable();
    if writes.peek().is_none() {
        return Ok(());
    }
    let tmp = tmp_roots();
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute())
        .map(|h| resolve_now(&super::policy::normalize(&h)));
    let workspaces: Vec<PathBuf> = settings
        .workspace_roots
        .iter()
        .map(|w| resolve_now(w))
        .collect();
    for e in writes {
        let real = resolve_now(&e.path);
        let spelled = if real == e.path {
            e.path.display().to_string()
        } else {
            format!("{} (resolves to {})", e.path.display(), real.display())
        };
        if !settings.allow_system_writable_roots
            && !tmp.iter().any(|t| real.starts_with(t))
            && is_system_dir(&real, home.as_deref())
        {
            return Err(SandboxError::NotAllowed(format!(
                "writable path {spelled} ({}) would make the host's system or home directory writable; ask for a workspace directory instead (an operator can allow this with [sandbox] allow_system_writable_roots = true or --allow-system-writable-roots)",
                e.origin
            )));
        }
        let inside_bound = workspaces.is_empty()
            || workspaces.iter().any(|w| real.starts_with(w))
            || (settings.allow_tmp_roots && tmp.iter().any(|t| real.starts_with(t)));
        if !inside_bound {
            return Err(SandboxError::NotAllowed(format!(
                "writable path {spelled} ({}) is outside this server's workspace roots ({})",
                e.origin,
                list(&settings.workspace_roots)
            )));
        }
    }
    Ok(())
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the server's own files are now (token, config): `none` for every confined process
/// and filesystem call. An error (-32021) when one cannot be located exactly.
fn server_file_paths(settings: &SandboxSettings) -> Result<Vec<PathBuf>, SandboxError> {
    if settings.server_files.is_empty() {
        return Ok(Vec::new());
    }
    let current = settings.server_files.current().map_err(|e| {
        SandboxError::Unavailable(format!("this request cannot be confined safely: {e}"))
    })?;
    Ok(current
        .into_iter()
        .filter_map(|c| match c {
            Current::At(p) => Some(p),
            Current::Gone => None,
        })
        .collect())
}

/// Adds a `none` entry for each of the server's own files to a restricted policy (the entries
/// then become hidden carve-outs for processes and refusals for the filesystem API), after
/// checking the operator's bounds. Unrestricted policies get the same files as hidden mounts
/// in [`prepare`] for processes; for a filesystem call (`for_fs_call`) an unrestricted but
/// confined policy becomes "write everything but those files", so the filesystem API refuses
/// them too. Call it on every policy before it is used.
pub fn bound_policy(
    policy: &mut SandboxPolicy,
    settings: &SandboxSettings,
    for_fs_call: bool,
) -> Result<(), SandboxError> {
    check_allowed(policy, settings)?;
    if policy.is_unconfined() {
        return Ok(());
    }
    let hidden = server_file_paths(settings)?;
    if for_fs_call && policy.filesystem == Filesystem::Unrestricted && !hidden.is_empty() {
        policy.filesystem = Filesystem::Restricted(vec![FsEntry {
            path: PathBuf::from("/"),
            access: Access::Write,
            origin: "unrestricted filesystem",
            skip_if_missing: false,
        }]);
    }
    if let Filesystem::Restricted(entries) = &mut policy.filesystem
        && !hidden.is_empty()
    {
        let mut all = std::mem::take(entries);
        all.extend(hidden.into_iter().map(|path| FsEntry {
            path,
            access: Access::None,
            origin: "server file",
            skip_if_missing: true,
        }));
        *entries = super::policy::winning_entries(all);
    }
    Ok(())
}

/// What a restricted filesystem needs from Landlock that a host with `abi` lacks, if anything.
/// Processes and filesystem calls share it.
pub fn filesystem_gap(abi: i32) -> Option<String> {
    if abi < 1 {
        Some("Landlock (filesystem confinement): not available on this host".into())
    } else if abi < 3 {
        Some(format!(
            "Landlock ABI 3 (truncate control) for read-only paths: host offers ABI {abi}"
        ))
    } else {
        None
    }
}

/// The -32021 error naming what is missing.
pub fn unenforceable(policy: &SandboxPolicy, missing: &[String]) -> SandboxError {
    SandboxError::Unavailable(format!(
        "sandbox policy `{}` cannot be enforced on this host: missing {} (start the server with --allow-degraded to run with what can be enforced)",
        policy.name,
        missing.join("; ")
    ))
}

/// Prepares a policy for a process. `read_only_files` are files inside the writable roots
/// that the process must not write (hard links out of them, see [`super::links`]): real paths,
/// each made a read-only bind mount; `read_only_dirs` are directories there that the process
/// must not write at all (the hard-link census cannot see into them), each a recursive
/// read-only bind mount. Landlock cannot take a right back inside a granted tree, so they need
/// no rule there.
pub fn prepare(
    policy: &SandboxPolicy,
    host: HostSupport,
    settings: &SandboxSettings,
    seccomp_cache: &SeccompCache,
    read_only_files: &Arc<[PathBuf]>,
    read_only_dirs: &[PathBuf],
) -> Result<Prepared, SandboxError> {
    check_allowed(policy, settings)?;
    if policy.is_unconfined() {
        return Ok(Prepared {
            report: SandboxReport {
                policy: policy.name.clone(),
                enforcement: Enforcement::None,
                landlock_abi: host.landlock_abi,
                landlock_rights: landlock::Handled::none().rights(),
                filesystem: "none",
                network: "allowed",
                hardening: false,
                degradations: Vec::new(),
                notes: policy.notes.clone(),
                limits: None,
            },
            ruleset: None,
            port_guard: None,
            seccomp: Vec::new(),
            no_new_privs: false,
            drop_caps: false,
            no_core: false,
            mounts: Vec::new(),
            link_files: Arc::from([]),
            userns: false,
            confined: false,
            placeholders: Vec::new(),
        });
    }
    let abi = host.landlock_abi;
    let mut missing: Vec<String> = Vec::new();
    let mut mounts: Vec<Vec<u8>> = Vec::new();
    let mut link_files: Arc<[PathBuf]> = Arc::from([]);
    let mut notes_extra: Vec<String> = Vec::new();
    let entries = match &policy.filesystem {
        Filesystem::Restricted(e) => Some(e.as_slice()),
        Filesystem::Unrestricted => None,
    };
    let mut leases = Vec::new();
    if let Some(entries) = entries {
        // Missing protected paths a process could create get their placeholders first, so
        // that the carve-outs below find something to mount on.
        match placeholders::ensure(entries) {
            Ok(l) => leases = l,
            Err(e) => missing.push(e),
        }
    }
    if entries.is_some() {
        missing.extend(filesystem_gap(abi));
        let (carved, unprotectable) = carve_outs(entries.unwrap_or(&[]));
        // A missing path that got no placeholder cannot be created by anyone (`/proc`, a
        // read-only filesystem): nothing to mount on, nothing to protect. A placeholder that
        // vanished keeps its mount, which then fails: closed.
        let carved: Vec<Vec<u8>> = carved
            .into_iter()
            .filter(|m| {
                use std::os::unix::ffi::OsStrExt;
                let p = Path::new(std::ffi::OsStr::from_bytes(&m[1..]));
                std::fs::symlink_metadata(p).is_ok() || leases.iter().any(|l| l.path() == p)
            })
            .collect();
        // The read-only view first: the writable roots are bound before anything is mounted
        // inside them, and the carve-outs then land on those binds.
        let mut m = read_only_view(entries.unwrap_or(&[]));
        m.extend(carved);
        missing.extend(unprotectable);
        {
            use std::os::unix::ffi::OsStrExt;
            // Directories the census cannot see into: recursive binds (they keep the carve-outs
            // below them), none below another. Then files below no carve-out (they resolve to
            // `write`) and below none of those directories: order among them is free (the
            // files are appended by `all_mounts`).
            m.extend(read_only_dirs.iter().map(|d| {
                let mut op = vec![0u8];
                op.extend_from_slice(d.as_os_str().as_bytes());
                op
            }));
        }
        let total = m.len() + read_only_files.len();
        // The mounts copied from the host count against the kernel's per-namespace limit too;
        // leave them room.
        let room = probe::mount_max().saturating_sub(MOUNTS_RESERVED);
        if let (false, MountNamespaces::Unavailable(fix)) = (total == 0, host.mount_namespaces) {
            missing.push(format!(
                "a private mount namespace (to make everything outside the writable roots read-only, and subpaths read-only or hidden): {fix}"
            ));
        } else if total > room {
            missing.push(format!(
                "room for {total} mounts in one mount namespace (fs.mount-max allows about {room}) to make {} hard links to files outside the writable roots read-only (remove them, or start the server with --no-protect-hard-links)",
                read_only_files.len() + read_only_dirs.len()
            ));
            // Degraded: the carve-outs alone, when they fit.
            m.truncate(m.len() - read_only_dirs.len());
            if m.len() <= room {
                mounts = m;
            }
        } else {
            mounts = m;
            link_files = read_only_files.clone();
        }
    }
    if entries.is_none() {
        // No Landlock on the filesystem: the server's own files are hidden by mounts alone.
        use std::os::unix::ffi::OsStrExt;
        for path in server_file_paths(settings)? {
            let mut op = vec![2u8];
            op.extend_from_slice(path.as_os_str().as_bytes());
            mounts.push(op);
        }
        if let (false, MountNamespaces::Unavailable(fix)) =
            (mounts.is_empty(), host.mount_namespaces)
        {
            missing.push(format!(
                "a private mount namespace (to hide the server's own files): {fix}"
            ));
            mounts.clear();
        }
        if !mounts.is_empty() {
            notes_extra.push(format!(
                "{} of the server's own files hidden by mounts",
                mounts.len()
            ));
        }
    }
    if policy.hardening && abi < 6 {
        missing.push(format!(
            "Landlock ABI 6 (signal and abstract-socket scopes) to keep the process from signalling the supervisor: host offers ABI {abi}"
        ));
    }
    if !host.seccomp {
        missing.push("seccomp (hardening and network blocking)".into());
    }
    // With the network on, only the port guard keeps the process away from its supervisor.
    let ports = &settings.supervisor_ports;
    let port_guard = if policy.network && !ports.ports.is_empty() {
        if ports.guard.is_none() {
            missing.push(format!(
                "Landlock ABI 4 (TCP port rules) to keep a process with the network on from connecting to this server's own port {} (host offers ABI {abi}; ask for no network, or use the stdio transport)",
                ports.listed()
            ));
        }
        ports.guard.clone()
    } else {
        None
    };
    if !missing.is_empty() && !settings.allow_degraded {
        return Err(unenforceable(policy, &missing));
    }
    let want_landlock = abi >= 1 && (entries.is_some() || (policy.hardening && abi >= 6));
    let mut notes = policy.notes.clone();
    notes.extend(notes_extra);
    let mut handled = landlock::Handled::none();
    let ruleset = if want_landlock {
        let built = landlock::ruleset_for_process(&RulesetSpec {
            abi,
            entries,
            block_network: !policy.network,
            scopes: policy.hardening,
        })
        .map_err(|e| SandboxError::Internal(format!("building the Landlock ruleset: {e}")))?;
        notes.extend(
            built
                .unopenable
                .iter()
                .map(|u| format!("not granted (cannot open): {u}")),
        );
        handled = built.handled;
        Some(built.fd)
    } else {
        None
    };
    if port_guard.is_some() {
        notes.push(format!(
            "TCP connect and bind to this server's own port {} are denied",
            ports.listed()
        ));
    }
    // Connecting to a pathname UNIX socket opens no file, so Landlock before ABI 9 (which has
    // a right for it) does not see it: with the network on, a restricted filesystem does not
    // keep the process from the sockets it can reach by path. Only `none` entries (mounts)
    // hide them.
    if policy.network && entries.is_some() && abi < LANDLOCK_ABI_UNIX_SOCKET {
        notes.push(format!(
            "pathname UNIX sockets are not restricted: with the network allowed, any socket file \
             the process can reach by path (e.g. /var/run/docker.sock) can be connected; Landlock \
             restricts that from ABI {LANDLOCK_ABI_UNIX_SOCKET}, this host uses ABI {abi}; hide \
             such paths with `none` entries"
        ));
    }
    let seccomp = if host.seccomp && (policy.hardening || !policy.network) {
        if policy.network {
            seccomp_cache.with_network.clone()
        } else {
            seccomp_cache.without_network.clone()
        }
    } else {
        Vec::new()
    };
    let filesystem = match (&policy.filesystem, &ruleset) {
        (Filesystem::Restricted(_), Some(_)) if !mounts.is_empty() || !link_files.is_empty() => {
            "landlock+mount-namespace"
        }
        (Filesystem::Restricted(_), Some(_)) => "landlock",
        _ => "none",
    };
    let report = SandboxReport {
        policy: policy.name.clone(),
        enforcement: if missing.is_empty() {
            Enforcement::Full
        } else {
            Enforcement::Degraded
        },
        landlock_abi: abi,
        landlock_rights: handled.rights(),
        filesystem,
        network: if policy.network { "allowed" } else { "blocked" },
        hardening: policy.hardening,
        degradations: missing,
        notes,
        limits: None,
    };
    Ok(Prepared {
        ruleset,
        port_guard,
        seccomp,
        no_new_privs: true,
        // Always asked: the target drops what it holds when it holds anything (see
        // `child::drop_capabilities`), whatever its uid.
        drop_caps: true,
        no_core: true,
        userns: (!mounts.is_empty() || !link_files.is_empty())
            && host.mount_namespaces == MountNamespaces::InUserNamespace,
        mounts,
        link_files,
        confined: true,
        report,
        placeholders: leases,
    })
}

/// The first Landlock ABI that can restrict connecting to a pathname UNIX socket.
const LANDLOCK_ABI_UNIX_SOCKET: i32 = 9;

/// True when `path` lies inside `root` (whole components).
pub fn inside(path: &Path, root: &Path) -> bool {
    path.starts_with(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{policy, probe};

    #[test]
    fn more_protected_links_than_a_namespace_holds_fail_closed() {
        let cwd = std::env::temp_dir();
        let p = policy::from_sandbox_policy(
            &json!({"type": "workspace-write"}),
            &policy::Context {
                cwd: &cwd,
                tmpdir: None,
            },
        )
        .unwrap();
        let host = HostSupport::measure(None);
        if host.landlock_abi < 6 {
            return; // Nothing else to check on a host that refuses the policy anyway.
        }
        let seccomp = SeccompCache::build();
        let files: Arc<[PathBuf]> = (0..probe::mount_max())
            .map(|i| format!("/nonexistent/link{i}").into())
            .collect();
        let settings = SandboxSettings::default();
        let err = prepare(&p, host, &settings, &seccomp, &files, &[]).unwrap_err();
        let SandboxError::Unavailable(message) = err else {
            panic!("{err:?}")
        };
        assert!(message.contains("fs.mount-max"), "{message}");
        // Degraded: runs without those mounts, and says so.
        let degraded = SandboxSettings {
            allow_degraded: true,
            ..SandboxSettings::default()
        };
        let ok = prepare(&p, host, &degraded, &seccomp, &files, &[]).unwrap();
        assert!(
            ok.all_mounts().iter().all(|m| m[0] != 3),
            "no hard-link mount"
        );
        assert_eq!(ok.report.enforcement, Enforcement::Degraded);
        // Within the limit: one read-only-if-present mount per file.
        let few: Arc<[PathBuf]> = files[..3].into();
        let ok = prepare(&p, host, &settings, &seccomp, &few, &[]).unwrap();
        assert_eq!(ok.all_mounts().iter().filter(|m| m[0] == 3).count(), 3);
    }
}
