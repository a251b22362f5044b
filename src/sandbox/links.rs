//! The hard-link census: which files inside the writable roots of a policy are also reachable
//! under a name outside them.
//!
//! Landlock decides by path. A regular file that has one name inside a writable root and
//! another one outside (created before the sandbox, e.g. `ln ~/.bashrc workspace/x`) would be
//! writable through the inside name, which writes the outside file too. A confined process
//! cannot create such a link (Refer, `fs.protected_hardlinks`), so only pre-existing ones
//! matter. Such a file is found by counting: its link count is larger than the number of its
//! names that the policy makes writable. Every writable name of it then becomes a read-only
//! entry of the policy, which the private mount namespace enforces with a read-only bind.
//!
//! Fail closed: a confined process may try to hide such a name from the census (move it into a
//! directory the server cannot list, or below a path longer than `PATH_MAX`, or keep renaming
//! directories while the census walks). The walk therefore goes from directory fd to directory
//! fd (no path is ever looked up whole, so length does not matter, and no symlink is followed),
//! and every directory it cannot list, watch or descend into (unreadable, deeper than
//! [`MAX_DEPTH`]) is a *blind spot*: the whole directory becomes read-only for the process
//! (its nearest ancestor when its own path is too long to mount). A walk without inotify checks
//! afterwards that no directory changed while it ran and walks again if one did; when the view
//! never settles the request fails (-32021).
//!
//! Cost: walking the roots on every spawn would cost tens of milliseconds on a large tree, so
//! the census keeps, per writable root, the regular files with more than one link, the blind
//! spots, and an inotify watch on every directory there. Before each use it reads the queued
//! events: names created, removed or renamed inside the roots are applied; a queue overflow or
//! a moved root causes a full walk. Each root has its own lock and inotify instance: a spawn
//! never waits for the walk of a root its policy does not use. When watches or instances run
//! out (the per-user limits, which any process of the user, a confined one included, can
//! exhaust), the root is walked on every use instead, and watching is tried again with every
//! such walk, backing off (up to [`RETRY_MAX`]) while it keeps failing; callers that arrived
//! before a walk started share its result instead of walking again.
//!
//! What it sees: every link that existed when a root was first walked, and every name created
//! inside the roots since. What it does not see until the next full walk: a *new outside name*
//! given to a file that lives inside (the kernel reports that link count change to watches
//! on the file itself, not on its directory). That file's content is the workspace's own;
//! writing it is what the policy allows, and the outside name was made by someone outside the
//! sandbox to show exactly that file.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::dir::{Dir, Type};

use super::policy::{Access, FsEntry, resolve};

/// Filesystems the walk does not enter: they hold no user files, and some are unbounded.
const PSEUDO_FS: [i64; 8] = [
    0x9fa0,                // proc
    0x6265_6572,           // sysfs
    0x0027_e0eb,           // cgroup
    0x6367_7270,           // cgroup2
    0x6462_6720,           // debugfs
    0x7472_6163,           // tracefs
    0x7363_6673,           // securityfs
    0xcafe_4a11u32 as i64, // bpf
];

/// The longest path a mount can name (`PATH_MAX` counts the NUL).
const MOUNTABLE: usize = libc::PATH_MAX as usize - 1;

/// Directories deeper than this below a root are blind spots: the walk holds one fd per level.
pub const MAX_DEPTH: usize = 128;

/// Walks without inotify that may find the tree changed under them before the census gives up.
const WALK_ATTEMPTS: usize = 3;

/// The first wait before watching is tried again after it failed; it doubles per failure.
const RETRY_FIRST: Duration = Duration::from_millis(250);

/// The longest wait before watching is tried again.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// Root censuses kept (least recently used dropped first): each holds an inotify instance,
/// of which a user has 128 by default.
const MAX_ROOTS: usize = 64;

/// Versions come from one counter for all roots, so a change anywhere yields a version larger
/// than every earlier one: the largest version of a policy's roots changes whenever any of them
/// changes (what [`Findings::version`] promises).
static VERSIONS: AtomicU64 = AtomicU64::new(0);

fn next_version() -> u64 {
    VERSIONS.fetch_add(1, Ordering::Relaxed) + 1
}

/// A directory's identity and change times, taken before it was listed: a walk without
/// inotify compares them afterwards to know whether the tree changed while it ran (the kernel
/// gives a changed directory a distinct ctime once its ctime was queried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirStamp {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl DirStamp {
    fn of(st: &libc::stat) -> DirStamp {
        DirStamp {
            dev: st.st_dev,
            ino: st.st_ino,
            ctime: (st.st_ctime, st.st_ctime_nsec),
            mtime: (st.st_mtime, st.st_mtime_nsec),
        }
    }
}

/// What the census knows about one writable root.
#[derive(Default)]
struct RootState {
    /// Walked at least once.
    walked: bool,
    /// The inotify instance while the root is watched (`None`: it is walked on every use).
    inotify: Option<OwnedFd>,
    /// A watch or the instance could not be had during the current walk or drain.
    watch_failed: bool,
    /// Watching failed this many times in a row...
    failures: u32,
    /// ...and is not tried again before this.
    retry_at: Option<Instant>,
    /// Watch descriptor → directory.
    dirs: HashMap<i32, PathBuf>,
    /// Regular files with more than one link: path → (device, inode, link count).
    multi: BTreeMap<PathBuf, (u64, u64, u64)>,
    /// Directories the census cannot see into → why.
    blind: BTreeMap<PathBuf, String>,
    /// Changes whenever `multi` or `blind` may have changed (from [`VERSIONS`]).
    version: u64,
    /// The last walk without inotify saw the tree change under it on every attempt.
    unsettled: bool,
    /// Ticket of the last walk started (see [`RootCensus::walks`]).
    last_walk: u64,
}

/// One writable root's census, locked on its own.
struct RootCensus {
    root: PathBuf,
    state: Mutex<RootState>,
    /// Walks started so far: a caller that read this before a walk started may use that walk's
    /// result instead of walking again.
    walks: AtomicU64,
    /// When it was last asked for (a tick of [`LinkCensus::uses`]).
    used: AtomicU64,
}

impl RootCensus {
    fn lock(&self) -> MutexGuard<'_, RootState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The last answer: most spawns ask the same question of an unchanged census.
struct Memo {
    versions: Vec<(PathBuf, u64)>,
    entries: Vec<FsEntry>,
    answer: Answer,
}

/// What the census contents say about one policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Answer {
    /// Shared with every [`Findings`] given out while the census is unchanged: a spawn then
    /// copies no path (a `/tmp` with local clones holds hundreds of such links).
    paths: Arc<[PathBuf]>,
    dirs: Vec<PathBuf>,
    blind: Vec<String>,
}

/// The census, shared by all requests of a server.
#[derive(Default)]
pub struct LinkCensus {
    /// One census per outermost writable root seen (sorted by path). The lock is held only
    /// to look up or add an entry, never for a walk.
    roots: Mutex<Vec<Arc<RootCensus>>>,
    memo: Mutex<Option<Memo>>,
    /// Ticks, one per lookup of a root census.
    uses: AtomicU64,
    /// Tests: never watch (every use walks).
    #[cfg(test)]
    never_watch: bool,
}

/// The writable directories of `entries` (outermost only).
fn writable_roots(entries: &[FsEntry]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = entries
        .iter()
        .filter(|e| e.access == Access::Write && e.path.is_dir())
        .map(|e| e.path.clone())
        .collect();
    dirs.sort();
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if !out.iter().any(|o| d.starts_with(o)) {
            out.push(d);
        }
    }
    out
}

/// What the census found for a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// The writable names of files that also have a name outside the writable roots. The
    /// same allocation for every answer of an unchanged census and policy, so that users can
    /// recognise it cheaply ([`Arc::ptr_eq`]).
    pub paths: Arc<[PathBuf]>,
    /// Directories to make read-only whole: the census cannot see into them (blind spots), or
    /// a file found below them has a name too long to mount.
    pub dirs: Vec<PathBuf>,
    /// Why each of `dirs` is read-only, for the report's notes ("path: reason").
    pub blind: Vec<String>,
    /// The census's version when they were found, while it is watching (`None` otherwise).
    /// It changes whenever a multi-link file or a blind spot appears, disappears, or is
    /// replaced or relinked anywhere under the watched roots, so an unchanged version means
    /// every path here still names what it named then (see [`crate::sandbox::mountns`]).
    pub version: Option<u64>,
    /// A root is not watched (inotify limits) and was walked for this answer; that happens on
    /// every use until watching works again, which is slow for large roots.
    pub walked_again: bool,
    /// Roots that kept changing while the census walked them: it has no reliable view of
    /// them, and the request must fail.
    pub unsettled: Vec<PathBuf>,
}

impl LinkCensus {
    /// A census that never watches (tests of the walk-only path).
    #[cfg(test)]
    fn unwatched() -> LinkCensus {
        LinkCensus {
            never_watch: true,
            ..LinkCensus::default()
        }
    }

    /// The censuses covering `roots`, created when missing (one per outermost root; a new root
    /// above known ones replaces them for later callers).
    fn censuses_for(&self, roots: &[PathBuf]) -> Vec<Arc<RootCensus>> {
        let mut all = self.roots.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Arc<RootCensus>> = Vec::new();
        for r in roots {
            let found = match all.iter().find(|c| r.starts_with(&c.root)) {
                Some(c) => c.clone(),
                None => {
                    all.retain(|c| !c.root.starts_with(r));
                    let c = Arc::new(RootCensus {
                        root: r.clone(),
                        state: Mutex::new(RootState::default()),
                        walks: AtomicU64::new(0),
                        used: AtomicU64::new(0),
                    });
                    all.push(c.clone());
                    if all.len() > MAX_ROOTS {
                        // The least recently used one goes (a caller still holding it keeps it
                        // until done; a later use walks it again).
                        if let Some(oldest) = all
                            .iter()
                            .enumerate()
                            .filter(|(_, o)| !Arc::ptr_eq(o, &c))
                            .min_by_key(|(_, o)| o.used.load(Ordering::Relaxed))
                            .map(|(i, _)| i)
                        {
                            all.remove(oldest);
                        }
                    }
                    all.sort_by(|a, b| a.root.cmp(&b.root));
                    c
                }
            };
            found
                .used
                .store(self.uses.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
            if !out.iter().any(|c| Arc::ptr_eq(c, &found)) {
                out.push(found);
            }
        }
        out
    }

    /// The known censuses covering `roots`; `None` when one is missing.
    fn known_censuses(&self, roots: &[PathBuf]) -> Option<Vec<Arc<RootCensus>>> {
        let all = self.roots.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Arc<RootCensus>> = Vec::new();
        for r in roots {
            let c = all.iter().find(|c| r.starts_with(&c.root))?;
            if !out.iter().any(|o| Arc::ptr_eq(o, c)) {
                out.push(c.clone());
            }
        }
        Some(out)
    }

    /// The writable names, under `entries`, of regular files that also have a name the
    /// entries do not make writable, and the directories the census cannot see into. Blocking
    /// (it may walk directory trees): call it off the async runtime, or try
    /// [`LinkCensus::current`] first. Only the roots of `entries` are locked, one at a time.
    pub fn outside_links(&self, entries: &[FsEntry]) -> Findings {
        let (canonical, roots) = canonical_entries(entries);
        if roots.is_empty() {
            return Findings::default();
        }
        let censuses = self.censuses_for(&roots);
        let mut walked_again = false;
        let mut watching = true;
        let mut unsettled = Vec::new();
        for c in &censuses {
            // Read before waiting for the lock: a walk that starts after this may serve us.
            let ticket = c.walks.load(Ordering::SeqCst);
            let mut st = c.lock();
            #[cfg(test)]
            if self.never_watch {
                st.failures = 1;
                st.retry_at = Some(Instant::now() + Duration::from_secs(3600));
            }
            st.refresh(&c.root, ticket, &c.walks);
            if st.inotify.is_none() {
                watching = false;
                walked_again = true;
            }
            if st.unsettled {
                unsettled.push(c.root.clone());
            }
        }
        let (answer, versions) = self.answer(&censuses, &canonical, &roots);
        Findings {
            paths: answer.paths,
            dirs: answer.dirs,
            blind: answer.blind,
            version: watching.then(|| versions.iter().map(|(_, v)| *v).max().unwrap_or(0)),
            walked_again,
            unsettled,
        }
    }

    /// The same answer without blocking, when the census is already current for `entries`
    /// (every root known and watched, no event queued, the answer memoized); `None` otherwise.
    pub fn current(&self, entries: &[FsEntry]) -> Option<Findings> {
        let (canonical, roots) = canonical_entries(entries);
        if roots.is_empty() {
            return Some(Findings::default());
        }
        let censuses = self.known_censuses(&roots)?;
        let mut versions = Vec::new();
        for c in &censuses {
            let st = c.state.try_lock().ok()?;
            if !st.walked || st.inotify.is_none() || st.unsettled || st.pending_events() != 0 {
                return None;
            }
            versions.push((c.root.clone(), st.version));
        }
        let memo = self.memo.try_lock().ok()?;
        let m = memo.as_ref()?;
        if m.versions != versions || m.entries != canonical {
            return None;
        }
        Some(Findings {
            paths: m.answer.paths.clone(),
            dirs: m.answer.dirs.clone(),
            blind: m.answer.blind.clone(),
            version: versions.iter().map(|(_, v)| *v).max(),
            walked_again: false,
            unsettled: Vec::new(),
        })
    }

    /// The answer for `canonical` from the censuses' current contents (memoized by their
    /// versions), and those versions.
    fn answer(
        &self,
        censuses: &[Arc<RootCensus>],
        canonical: &[FsEntry],
        roots: &[PathBuf],
    ) -> (Answer, Vec<(PathBuf, u64)>) {
        let versions: Vec<(PathBuf, u64)> = censuses
            .iter()
            .map(|c| (c.root.clone(), c.lock().version))
            .collect();
        {
            let memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(m) = memo.as_ref()
                && m.versions == versions
                && m.entries == canonical
            {
                return (m.answer.clone(), versions);
            }
        }
        // Copy out what concerns this policy, one root at a time; the versions read with it
        // are the ones the answer is good for.
        let under_roots = |p: &Path| roots.iter().any(|r| p.starts_with(r));
        let mut multi: Vec<(PathBuf, (u64, u64, u64))> = Vec::new();
        let mut blind: Vec<(PathBuf, String)> = Vec::new();
        let mut versions = Vec::new();
        for c in censuses {
            let st = c.lock();
            multi.extend(
                st.multi
                    .iter()
                    .filter(|(p, _)| under_roots(p) && resolve(canonical, p) == Access::Write)
                    .map(|(p, v)| (p.clone(), *v)),
            );
            blind.extend(
                st.blind
                    .iter()
                    .filter(|(p, _)| under_roots(p))
                    .map(|(p, why)| (p.clone(), why.clone())),
            );
            versions.push((c.root.clone(), st.version));
        }
        let answer = compute_answer(&multi, &blind, roots);
        *self.memo.lock().unwrap_or_else(|p| p.into_inner()) = Some(Memo {
            versions: versions.clone(),
            entries: canonical.to_vec(),
            answer: answer.clone(),
        });
        (answer, versions)
    }
}

/// Groups the multi-link files by inode and keeps the writable names of those with more links
/// than writable names; adds the blind spots; replaces what is too long to mount by its
/// nearest mountable ancestor; drops what lies below a directory made read-only anyway.
fn compute_answer(
    multi: &[(PathBuf, (u64, u64, u64))],
    blind: &[(PathBuf, String)],
    roots: &[PathBuf],
) -> Answer {
    let mut by_inode: HashMap<(u64, u64), (u64, Vec<&PathBuf>)> = HashMap::new();
    for (path, (dev, ino, nlink)) in multi {
        let group = by_inode.entry((*dev, *ino)).or_insert((*nlink, Vec::new()));
        group.0 = group.0.max(*nlink);
        group.1.push(path);
    }
    // The link count noted for a name is from when that name was seen: a link made later
    // elsewhere changes the file's count but is reported only to watches on its own
    // directory. Ask the file itself (this runs only when the census changed).
    let files: Vec<PathBuf> = by_inode
        .into_iter()
        .filter(|((dev, ino), (noted, names))| {
            let now = names.iter().find_map(|p| {
                let root = roots.iter().find(|r| p.starts_with(r))?;
                lstat_beneath(root, p)
                    .ok()
                    .filter(|st| st.st_dev == *dev && st.st_ino == *ino)
                    .map(|st| st.st_nlink)
            });
            now.unwrap_or(*noted) > names.len() as u64
        })
        .flat_map(|(_, (_, names))| names.into_iter().cloned())
        .collect();
    let mut dirs: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (path, why) in blind {
        let at = mountable(path);
        let why = if &at == path {
            why.clone()
        } else {
            format!("{why} below it")
        };
        dirs.entry(at).or_insert(why);
    }
    let mut paths = Vec::new();
    for f in files {
        if f.as_os_str().len() <= MOUNTABLE {
            paths.push(f);
        } else {
            dirs.entry(mountable(&f)).or_insert_with(|| {
                "a hard link to a file outside, too deep to mount, below it".into()
            });
        }
    }
    // Parents first: one below another needs no mount of its own.
    let mut kept: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (d, why) in dirs {
        if !kept.keys().any(|k| d.starts_with(k)) {
            kept.insert(d, why);
        }
    }
    paths.retain(|p| !kept.keys().any(|k| p.starts_with(k)));
    paths.sort();
    Answer {
        paths: paths.into(),
        blind: kept
            .iter()
            .map(|(d, why)| format!("{}: {why}", shorten(d)))
            .collect(),
        dirs: kept.into_keys().collect(),
    }
}

/// `path`, or its nearest ancestor whose path a mount can name.
fn mountable(path: &Path) -> PathBuf {
    let mut p = path;
    while p.as_os_str().len() > MOUNTABLE {
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    p.to_path_buf()
}

/// A path for a message: very long ones keep their start and end.
fn shorten(p: &Path) -> String {
    let s = p.display().to_string();
    if s.len() <= 200 {
        return s;
    }
    let head: String = s.chars().take(100).collect();
    let tail: String = s
        .chars()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{head}...{tail} ({} bytes)", s.len())
}

/// `entries` with their paths resolved as the kernel resolves them (missing ones dropped),
/// and the writable directories among them.
fn canonical_entries(entries: &[FsEntry]) -> (Vec<FsEntry>, Vec<PathBuf>) {
    let canonical: Vec<FsEntry> = entries
        .iter()
        .filter_map(|e| {
            std::fs::canonicalize(&e.path)
                .ok()
                .map(|path| FsEntry { path, ..e.clone() })
        })
        .collect();
    let roots = writable_roots(&canonical);
    (canonical, roots)
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn errno_text(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

/// Opens directory `name` of `dir` for listing, never following a symlink.
fn open_dir_at(dir: RawFd, name: &CStr) -> Result<OwnedFd, i32> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: openat with a valid C string; the fd returned is ours.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `lstat` of `name` in `dir`.
fn lstat_at(dir: RawFd, name: &CStr) -> Result<libc::stat, i32> {
    // SAFETY: an all-zero `stat` is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat writes one `stat`; the name is a valid C string.
    if unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } < 0 {
        return Err(errno());
    }
    Ok(st)
}

fn fstat_fd(fd: RawFd) -> Result<libc::stat, i32> {
    // SAFETY: an all-zero `stat` is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `stat`.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(errno());
    }
    Ok(st)
}

fn is_pseudo_fs(fd: RawFd) -> bool {
    // SAFETY: an all-zero `statfs` is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes one `statfs`.
    let ok = unsafe { libc::fstatfs(fd, &mut st) } == 0;
    ok && PSEUDO_FS.contains(&(st.f_type as i64))
}

fn c_name(name: &OsStr) -> Result<CString, i32> {
    CString::new(name.as_bytes()).map_err(|_| libc::EINVAL)
}

/// Opens directory `path` (`root` or below it) one component at a time from `root`, never
/// following a symlink: works for paths of any length.
fn open_beneath(root: &Path, path: &Path) -> Result<OwnedFd, i32> {
    let rel = path.strip_prefix(root).map_err(|_| libc::EINVAL)?;
    let mut fd = open_dir_at(libc::AT_FDCWD, &c_name(root.as_os_str())?)?;
    for comp in rel.components() {
        let Component::Normal(name) = comp else {
            return Err(libc::EINVAL);
        };
        fd = open_dir_at(fd.as_raw_fd(), &c_name(name)?)?;
    }
    Ok(fd)
}

/// `lstat` of `path` (below `root`); paths too long for one lookup go component by component.
fn lstat_beneath(root: &Path, path: &Path) -> Result<libc::stat, i32> {
    if path.as_os_str().len() <= MOUNTABLE {
        return lstat_at(libc::AT_FDCWD, &c_name(path.as_os_str())?);
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(libc::EINVAL);
    };
    let dir = open_beneath(root, parent)?;
    lstat_at(dir.as_raw_fd(), &c_name(name)?)
}

fn kind_of(mode: libc::mode_t) -> Type {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => Type::Directory,
        libc::S_IFREG => Type::File,
        libc::S_IFLNK => Type::Symlink,
        libc::S_IFIFO => Type::Fifo,
        libc::S_IFSOCK => Type::Socket,
        libc::S_IFCHR => Type::CharacterDevice,
        _ => Type::BlockDevice,
    }
}

/// An entry name that vanished or changed type since it was listed: a race with a change the
/// events (or the walk's check) report.
fn raced(e: i32) -> bool {
    matches!(e, libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
}

/// One directory being listed by the walk.
struct Frame {
    path: PathBuf,
    dir: Dir,
    entries: Vec<(CString, Option<Type>)>,
    next: usize,
    depth: usize,
}

/// Whether `/proc/self/fd` names open directories (watches are added through it, so that no
/// path is looked up again).
fn proc_fd_works() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

/// Tests: a hook on the walk.
#[cfg(test)]
type ListingHook = Option<Box<dyn FnMut(&Path)>>;

#[cfg(test)]
thread_local! {
    /// Tests: called with each directory just listed by a walk.
    static AFTER_LISTING: std::cell::RefCell<ListingHook> =
        const { std::cell::RefCell::new(None) };
}

impl RootState {
    /// Bytes of inotify events queued (0 when not watching).
    fn pending_events(&self) -> i32 {
        let Some(fd) = &self.inotify else { return 0 };
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
            return 1;
        }
        n
    }

    /// Brings the census of `root` up to date. `ticket` is the number of walks started when
    /// the caller arrived.
    fn refresh(&mut self, root: &Path, ticket: u64, walks: &AtomicU64) {
        if self.walked && self.inotify.is_some() {
            if !self.drain_events(root) {
                return;
            }
        } else if self.walked && self.last_walk > ticket {
            // Walk mode, and a walk that started after the caller arrived just finished.
            return;
        }
        self.full_walk(root, walks);
    }

    fn set_blind(&mut self, dir: PathBuf, why: String) {
        if self.blind.insert(dir, why).is_none() {
            self.version = next_version();
        }
    }

    /// Forgets everything and walks `root` again: with fresh watches unless watching failed
    /// lately, else checking that the tree held still while it was walked (a few attempts).
    fn full_walk(&mut self, root: &Path, walks: &AtomicU64) {
        let before = (
            std::mem::take(&mut self.multi),
            std::mem::take(&mut self.blind),
        );
        let try_watch = self.retry_at.is_none_or(|t| Instant::now() >= t);
        for attempt in 0..WALK_ATTEMPTS {
            self.last_walk = walks.fetch_add(1, Ordering::SeqCst) + 1;
            self.inotify = None;
            self.dirs.clear();
            self.multi.clear();
            self.blind.clear();
            self.watch_failed = false;
            if try_watch && attempt == 0 {
                // SAFETY: inotify_init1 has no memory arguments.
                let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
                if fd < 0 {
                    // The per-user instance limit.
                    self.watch_failed = true;
                } else {
                    // SAFETY: a fresh fd we own.
                    self.inotify = Some(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
            let mut log = Vec::new();
            match c_name(root.as_os_str()).and_then(|c| open_dir_at(libc::AT_FDCWD, &c)) {
                Ok(fd) => self.walk_from(root.to_path_buf(), fd, 0, &mut log),
                // Gone: nothing below it to protect.
                Err(libc::ENOENT) => {}
                Err(e) => {
                    self.blind.insert(
                        root.to_path_buf(),
                        format!("cannot be listed ({})", errno_text(e)),
                    );
                }
            }
            if self.inotify.is_some() {
                // Watched from before it was listed: later changes arrive as events.
                self.unsettled = false;
                break;
            }
            self.unsettled = !log
                .iter()
                .all(|(p, s)| lstat_beneath(root, p).is_ok_and(|st| DirStamp::of(&st) == *s));
            if !self.unsettled {
                break;
            }
        }
        if try_watch {
            if self.inotify.is_some() {
                self.failures = 0;
                self.retry_at = None;
            } else {
                self.failures = self.failures.saturating_add(1);
                let wait = RETRY_FIRST
                    .saturating_mul(1 << self.failures.min(16).saturating_sub(1))
                    .min(RETRY_MAX);
                self.retry_at = Some(Instant::now() + wait);
            }
        }
        if !self.walked || before != (self.multi.clone(), self.blind.clone()) {
            self.version = next_version();
        }
        self.walked = true;
    }

    /// Watches the directory open as `fd` (named `path`); false when it cannot be watched
    /// (then it is a blind spot, or watching stops when the limits are reached).
    fn watch(&mut self, path: &Path, fd: RawFd) -> bool {
        let Some(ino) = &self.inotify else {
            return true;
        };
        let mask = libc::IN_CREATE
            | libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM
            | libc::IN_DELETE
            | libc::IN_ATTRIB
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF
            | libc::IN_ONLYDIR;
        let target = if proc_fd_works() {
            CString::new(format!("/proc/self/fd/{fd}")).ok()
        } else if path.as_os_str().len() <= MOUNTABLE {
            CString::new(path.as_os_str().as_bytes()).ok()
        } else {
            None
        };
        let Some(target) = target else {
            self.set_blind(path.to_path_buf(), "too long to watch".into());
            return false;
        };
        let mask = if proc_fd_works() {
            mask
        } else {
            mask | libc::IN_DONT_FOLLOW
        };
        // SAFETY: a valid fd and C string.
        let wd = unsafe { libc::inotify_add_watch(ino.as_raw_fd(), target.as_ptr(), mask) };
        if wd < 0 {
            let e = errno();
            if matches!(e, libc::ENOSPC | libc::ENOMEM) {
                // The per-user watch limit: this root is walked on every use for a while.
                self.inotify = None;
                self.dirs.clear();
                self.watch_failed = true;
                return true;
            }
            self.set_blind(
                path.to_path_buf(),
                format!("cannot be watched ({})", errno_text(e)),
            );
            return false;
        }
        self.dirs.insert(wd, path.to_path_buf());
        true
    }

    /// Watches, stamps and lists one directory; `None` when it cannot be seen into (then it
    /// is a blind spot).
    fn enter(
        &mut self,
        path: PathBuf,
        fd: OwnedFd,
        depth: usize,
        log: &mut Vec<(PathBuf, DirStamp)>,
    ) -> Option<Frame> {
        if !self.watch(&path, fd.as_raw_fd()) {
            return None;
        }
        match fstat_fd(fd.as_raw_fd()) {
            Ok(st) => log.push((path.clone(), DirStamp::of(&st))),
            Err(e) => {
                self.set_blind(path, format!("cannot be examined ({})", errno_text(e)));
                return None;
            }
        }
        let mut dir = match Dir::from_fd(fd) {
            Ok(d) => d,
            Err(e) => {
                self.set_blind(path, format!("cannot be listed ({})", errno_text(e as i32)));
                return None;
            }
        };
        let mut entries = Vec::new();
        for ent in dir.iter() {
            match ent {
                Ok(ent) => {
                    let name = ent.file_name();
                    if name == c"." || name == c".." {
                        continue;
                    }
                    entries.push((name.to_owned(), ent.file_type()));
                }
                Err(e) => {
                    self.set_blind(path, format!("cannot be listed ({})", errno_text(e as i32)));
                    return None;
                }
            }
        }
        #[cfg(test)]
        AFTER_LISTING.with(|h| {
            if let Some(f) = h.borrow_mut().as_mut() {
                f(&path);
            }
        });
        Some(Frame {
            path,
            dir,
            entries,
            next: 0,
            depth,
        })
    }

    /// Records the directory `path` (open as `fd`, `depth` levels below the root) and
    /// everything below it, from directory fd to directory fd (symlinks are not followed;
    /// pseudo filesystems are not entered).
    fn walk_from(
        &mut self,
        path: PathBuf,
        fd: OwnedFd,
        depth: usize,
        log: &mut Vec<(PathBuf, DirStamp)>,
    ) {
        if is_pseudo_fs(fd.as_raw_fd()) {
            return;
        }
        let mut stack: Vec<Frame> = Vec::new();
        if let Some(f) = self.enter(path, fd, depth, log) {
            stack.push(f);
        }
        while let Some(top) = stack.last_mut() {
            let Some((name, kind)) = top.entries.get(top.next).cloned() else {
                stack.pop();
                continue;
            };
            top.next += 1;
            let child = top.path.join(OsStr::from_bytes(name.to_bytes()));
            let parent = top.path.clone();
            let dfd = top.dir.as_raw_fd();
            let depth = top.depth + 1;
            let kind = match kind {
                Some(k) => k,
                None => match lstat_at(dfd, &name) {
                    Ok(st) => kind_of(st.st_mode),
                    Err(e) if raced(e) => continue,
                    Err(e) => {
                        self.set_blind(parent, format!("cannot be examined ({})", errno_text(e)));
                        continue;
                    }
                },
            };
            match kind {
                Type::Directory => match open_dir_at(dfd, &name) {
                    Ok(fd) => {
                        if is_pseudo_fs(fd.as_raw_fd()) {
                            continue;
                        }
                        if depth > MAX_DEPTH {
                            self.set_blind(
                                child,
                                format!("more than {MAX_DEPTH} directories deep"),
                            );
                            continue;
                        }
                        if let Some(f) = self.enter(child, fd, depth, log) {
                            stack.push(f);
                        }
                    }
                    Err(e) if raced(e) => {}
                    Err(e) => {
                        self.set_blind(child, format!("cannot be listed ({})", errno_text(e)));
                    }
                },
                Type::File => match lstat_at(dfd, &name) {
                    Ok(st) => self.note_file(child, &st),
                    Err(e) if raced(e) => {}
                    Err(e) => {
                        self.set_blind(parent, format!("cannot be examined ({})", errno_text(e)));
                    }
                },
                _ => {
                    if self.multi.remove(&child).is_some() {
                        self.version = next_version();
                    }
                }
            }
        }
    }

    /// Walks `dir` (below `root`, found by an event), opened component by component.
    fn walk_below(&mut self, root: &Path, dir: &Path) {
        let depth = dir.strip_prefix(root).map_or(0, |r| r.components().count());
        if depth > MAX_DEPTH {
            self.set_blind(
                dir.to_path_buf(),
                format!("more than {MAX_DEPTH} directories deep"),
            );
            return;
        }
        match open_beneath(root, dir) {
            Ok(fd) => self.walk_from(dir.to_path_buf(), fd, depth, &mut Vec::new()),
            Err(e) if raced(e) => {}
            Err(e) => self.set_blind(
                dir.to_path_buf(),
                format!("cannot be listed ({})", errno_text(e)),
            ),
        }
    }

    fn note_file(&mut self, path: PathBuf, st: &libc::stat) {
        let changed = if st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_nlink > 1 {
            let now = (st.st_dev, st.st_ino, st.st_nlink);
            self.multi.insert(path, now) != Some(now)
        } else {
            self.multi.remove(&path).is_some()
        };
        if changed {
            self.version = next_version();
        }
    }

    /// Applies the queued events, in order; true when only a full walk can bring the census
    /// up to date (the queue overflowed, a root itself moved, or watching failed).
    fn drain_events(&mut self, root: &Path) -> bool {
        let Some(fd) = &self.inotify else {
            return true;
        };
        let raw = fd.as_raw_fd();
        // (path, a directory moved away from it)
        let mut changed: Vec<(PathBuf, bool)> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reading into a live buffer.
            let n = unsafe { libc::read(raw, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut at = 0usize;
            let hdr = std::mem::size_of::<libc::inotify_event>();
            while at + hdr <= n as usize {
                // SAFETY: the kernel wrote whole events; read_unaligned copes with alignment.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf.as_ptr().add(at).cast()) };
                let name_bytes = &buf[at + hdr..at + hdr + ev.len as usize];
                at += hdr + ev.len as usize;
                if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                    return true;
                }
                let is_root = self.dirs.get(&ev.wd).is_some_and(|d| d == root);
                if ev.mask & libc::IN_IGNORED != 0 {
                    if is_root {
                        // The root itself is gone: whatever replaces it is not watched.
                        return true;
                    }
                    self.dirs.remove(&ev.wd);
                    continue;
                }
                if ev.mask & (libc::IN_MOVE_SELF | libc::IN_DELETE_SELF) != 0 {
                    // A directory below a root moved: its parent reported it (IN_MOVED_FROM).
                    // A root itself moved: its parent is not watched, start over.
                    if is_root {
                        return true;
                    }
                    continue;
                }
                let name_len = name_bytes
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(name_bytes.len());
                if name_len == 0 {
                    continue;
                }
                let Some(dir) = self.dirs.get(&ev.wd) else {
                    continue;
                };
                let name = OsStr::from_bytes(&name_bytes[..name_len]);
                let dir_moved_away =
                    ev.mask & libc::IN_ISDIR != 0 && ev.mask & libc::IN_MOVED_FROM != 0;
                changed.push((dir.join(name), dir_moved_away));
            }
        }
        for (path, dir_moved_away) in changed {
            if dir_moved_away {
                // Everything known below the old name is gone from there; where it went (if
                // inside a root) arrives as IN_MOVED_TO and is walked afresh.
                self.forget_below(&path);
                continue;
            }
            match lstat_beneath(root, &path) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                    let watched = self.dirs.values().any(|d| d == &path);
                    if !watched || self.blind.contains_key(&path) {
                        // New here, or a blind spot that may be visible now (its mode
                        // changed): look again from scratch.
                        self.forget_below(&path);
                        self.walk_below(root, &path);
                    }
                }
                Ok(st) => self.note_file(path, &st),
                // Gone (a file, or a directory with everything below it).
                Err(e) if raced(e) => self.forget_below(&path),
                // Not visible any more (a directory above it lost its search permission):
                // what is below that directory is not known from now on.
                Err(e) => {
                    let parent = path.parent().unwrap_or(root).to_path_buf();
                    self.set_blind(parent, format!("cannot be examined ({})", errno_text(e)));
                }
            }
        }
        self.watch_failed || self.inotify.is_none()
    }

    /// Forgets `dir` and everything below it: its files, blind spots and watches (their
    /// descriptors follow the moved inodes, so their paths would be wrong from now on).
    fn forget_below(&mut self, dir: &Path) {
        let before = (self.multi.len(), self.blind.len());
        self.multi.retain(|p, _| !p.starts_with(dir));
        self.blind.retain(|p, _| !p.starts_with(dir));
        if (self.multi.len(), self.blind.len()) != before {
            self.version = next_version();
        }
        let stale: Vec<i32> = self
            .dirs
            .iter()
            .filter(|(_, p)| p.starts_with(dir))
            .map(|(wd, _)| *wd)
            .collect();
        for wd in stale {
            self.dirs.remove(&wd);
            if let Some(fd) = &self.inotify {
                // SAFETY: removing a watch from our own inotify instance.
                unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &Path, access: Access) -> FsEntry {
        FsEntry {
            path: path.to_path_buf(),
            access,
            origin: "test",
            skip_if_missing: false,
        }
    }

    #[test]
    fn finds_links_out_of_the_writable_roots_and_follows_changes() {
        let base = std::env::temp_dir().join(format!("stockade-links-{}", std::process::id()));
        let ws = base.join("ws");
        let out = base.join("out");
        std::fs::create_dir_all(ws.join("sub")).unwrap();
        std::fs::create_dir_all(ws.join(".git")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("secret"), "s").unwrap();
        std::fs::write(ws.join("a"), "a").unwrap();
        std::fs::write(ws.join(".git/config"), "c").unwrap();
        std::fs::hard_link(out.join("secret"), ws.join("sub/link")).unwrap();
        // Both names writable: not a finding.
        std::fs::hard_link(ws.join("a"), ws.join("sub/a2")).unwrap();
        // One name in a read-only carve-out: the writable name is a finding.
        std::fs::hard_link(ws.join(".git/config"), ws.join("cfg")).unwrap();
        let entries = vec![
            entry(Path::new("/"), Access::Read),
            entry(&ws, Access::Write),
            entry(&ws.join(".git"), Access::Read),
        ];
        let census = LinkCensus::default();
        let ws = std::fs::canonicalize(&ws).unwrap();
        assert_eq!(census.current(&entries), None, "a new root needs a walk");
        let first = census.outside_links(&entries);
        assert_eq!(*first.paths, vec![ws.join("cfg"), ws.join("sub/link")]);
        assert!(first.version.is_some());
        assert_eq!(census.current(&entries), Some(first.clone()));
        // Files with one link come and go without changing the version (namespaces built
        // for these findings stay valid)...
        std::fs::write(ws.join("plain"), "p").unwrap();
        std::fs::remove_file(ws.join("plain")).unwrap();
        assert_eq!(census.outside_links(&entries), first);
        // ...a finding replaced by another file under the same name changes it.
        std::fs::write(ws.join("cfg.new"), "n").unwrap();
        std::fs::hard_link(out.join("secret"), ws.join("cfg.new2")).unwrap();
        std::fs::rename(ws.join("cfg.new2"), ws.join("cfg")).unwrap();
        std::fs::remove_file(ws.join("cfg.new")).unwrap();
        let replaced = census.outside_links(&entries);
        assert_eq!(replaced.paths, first.paths);
        assert_ne!(replaced.version, first.version);
        // Put the carve-out's second name back for the rest of the test.
        std::fs::remove_file(ws.join("cfg")).unwrap();
        std::fs::hard_link(ws.join(".git/config"), ws.join("cfg")).unwrap();
        // A link made later inside, in a new directory too, and one removed: seen on the next
        // use from the events, without a walk.
        std::fs::write(out.join("other"), "o").unwrap();
        std::fs::hard_link(out.join("other"), ws.join("late")).unwrap();
        std::fs::create_dir(ws.join("new")).unwrap();
        std::fs::hard_link(out.join("other"), ws.join("new/late2")).unwrap();
        std::fs::remove_file(ws.join("sub/link")).unwrap();
        assert_eq!(census.current(&entries), None, "events are queued");
        assert_eq!(
            *census.outside_links(&entries).paths,
            vec![ws.join("cfg"), ws.join("late"), ws.join("new/late2")]
        );
        // A directory renamed: the census follows it without a walk and stays exact, also
        // for links made below it later.
        std::fs::rename(ws.join("sub"), ws.join("sub2")).unwrap();
        std::fs::hard_link(out.join("secret"), ws.join("sub2/again")).unwrap();
        std::fs::remove_dir_all(ws.join("new")).unwrap();
        assert_eq!(
            *census.outside_links(&entries).paths,
            vec![ws.join("cfg"), ws.join("late"), ws.join("sub2/again")]
        );
        std::fs::hard_link(out.join("secret"), ws.join("sub2/again2")).unwrap();
        assert_eq!(
            *census.outside_links(&entries).paths,
            vec![
                ws.join("cfg"),
                ws.join("late"),
                ws.join("sub2/again"),
                ws.join("sub2/again2")
            ]
        );
        // A tree with links moved in from outside, nested; then moved deeper; then out.
        std::fs::create_dir_all(out.join("tree/deep")).unwrap();
        std::fs::hard_link(out.join("secret"), out.join("tree/deep/l")).unwrap();
        std::fs::rename(out.join("tree"), ws.join("tree")).unwrap();
        let mut want = vec![
            ws.join("cfg"),
            ws.join("late"),
            ws.join("sub2/again"),
            ws.join("sub2/again2"),
            ws.join("tree/deep/l"),
        ];
        assert_eq!(*census.outside_links(&entries).paths, want);
        std::fs::rename(ws.join("tree"), ws.join("sub2/tree")).unwrap();
        std::fs::hard_link(out.join("secret"), ws.join("sub2/tree/deep/m")).unwrap();
        want.pop();
        want.push(ws.join("sub2/tree/deep/l"));
        want.push(ws.join("sub2/tree/deep/m"));
        assert_eq!(*census.outside_links(&entries).paths, want);
        std::fs::rename(ws.join("sub2/tree"), out.join("tree")).unwrap();
        want.truncate(4);
        assert_eq!(*census.outside_links(&entries).paths, want);
        // What the census knows equals a fresh walk.
        let fresh = LinkCensus::default();
        assert_eq!(*fresh.outside_links(&entries).paths, want);
        let _ = std::fs::remove_dir_all(&base);
    }

    /// Sets the hook called after each directory a walk lists (this thread only).
    fn after_listing(f: ListingHook) {
        AFTER_LISTING.with(|h| *h.borrow_mut() = f);
    }

    #[test]
    fn a_walk_without_watches_sees_links_moved_while_it_ran() {
        let base = std::env::temp_dir().join(format!("stockade-links-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let ws = base.join("ws");
        let out = base.join("out");
        std::fs::create_dir_all(ws.join("b")).unwrap();
        std::fs::create_dir_all(ws.join("c")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("secret"), "s").unwrap();
        std::fs::hard_link(out.join("secret"), ws.join("c/l")).unwrap();
        let ws = std::fs::canonicalize(&ws).unwrap();
        let entries = vec![
            entry(Path::new("/"), Access::Read),
            entry(&ws, Access::Write),
        ];
        // Whichever of b and c the walk lists first, the link moves into it right after, out
        // of the other one, which the walk has not listed yet: that walk cannot see it.
        let mover = |times: usize| {
            let ws = ws.clone();
            let mut left = times;
            Box::new(move |dir: &Path| {
                if left == 0 || !(dir.ends_with("b") || dir.ends_with("c")) {
                    return;
                }
                let (from, to) = if ws.join("b/l").exists() {
                    ("b", "c")
                } else {
                    ("c", "b")
                };
                if dir.ends_with(to) {
                    std::fs::rename(ws.join(from).join("l"), ws.join(to).join("l")).unwrap();
                    left -= 1;
                }
            }) as Box<dyn FnMut(&Path)>
        };
        let census = LinkCensus::unwatched();
        after_listing(Some(mover(1)));
        let found = census.outside_links(&entries);
        after_listing(None);
        assert!(found.walked_again);
        assert_eq!(found.version, None);
        assert!(found.unsettled.is_empty(), "{found:?}");
        let at = if ws.join("b/l").exists() {
            "b/l"
        } else {
            "c/l"
        };
        assert_eq!(*found.paths, vec![ws.join(at)], "the moved link was missed");
        // A tree that never holds still: no answer is trusted.
        let census = LinkCensus::unwatched();
        after_listing(Some(mover(usize::MAX)));
        let found = census.outside_links(&entries);
        after_listing(None);
        assert_eq!(found.unsettled, vec![ws.clone()], "{found:?}");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn names_too_long_to_mount_protect_their_nearest_mountable_ancestor() {
        let root = PathBuf::from("/ws");
        let deep: PathBuf = std::iter::once("/ws".to_string())
            .chain((0..20).map(|_| "L".repeat(255)))
            .chain(["d".to_string(), "linked".to_string()])
            .collect();
        let multi = vec![(deep.clone(), (1, 2, 2))];
        let blind = vec![(root.join("x/y"), "cannot be listed (EACCES)".to_string())];
        let answer = compute_answer(&multi, &blind, std::slice::from_ref(&root));
        assert!(answer.paths.is_empty(), "{answer:?}");
        let long_dir = mountable(&deep);
        assert!(long_dir.as_os_str().len() <= MOUNTABLE);
        assert!(deep.starts_with(&long_dir) && long_dir != deep);
        assert!(long_dir.as_os_str().len() > MOUNTABLE - 256);
        assert_eq!(answer.dirs, vec![long_dir, root.join("x/y")]);
        // A link below a blind spot needs no mount of its own.
        let multi = vec![(root.join("x/y/z/l"), (1, 3, 2))];
        let answer = compute_answer(&multi, &blind, std::slice::from_ref(&root));
        assert!(answer.paths.is_empty());
        assert_eq!(answer.dirs, vec![root.join("x/y")]);
    }
}
