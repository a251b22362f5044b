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
//! Walking the roots on every spawn would cost tens of milliseconds on a large tree, so the
//! census keeps, per server, the regular files with more than one link under every root it
//! has seen, and an inotify watch on every directory there. Before each use it reads the
//! queued events: names created, removed or renamed inside the roots are applied; directory
//! renames and a queue overflow cause a full walk. When watches cannot be added (the per-user
//! limit), the census walks the roots on every use instead.
//!
//! What it sees: every link that existed when a root was first walked, and every name created
//! inside the roots since. What it does not see until the next full walk: a *new outside name*
//! given to a file that lives inside (the kernel reports that link count change to watches
//! on the file itself, not on its directory). That file's content is the workspace's own;
//! writing it is what the policy allows, and the outside name was made by someone outside the
//! sandbox to show exactly that file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

/// The set of directories the census follows and what it found there.
#[derive(Default)]
struct State {
    /// The inotify instance; `None` when watching is not possible (then every use walks).
    inotify: Option<OwnedFd>,
    /// Watching failed once: walk on every use from now on.
    unwatchable: bool,
    /// Canonical root directories walked so far.
    roots: BTreeSet<PathBuf>,
    /// Watch descriptor → directory.
    dirs: HashMap<i32, PathBuf>,
    /// Regular files with more than one link: path → (device, inode, link count).
    multi: BTreeMap<PathBuf, (u64, u64, u64)>,
    /// Bumped whenever `multi` may have changed.
    version: u64,
    /// The last answer: `(version, canonical entries, findings)`. Most spawns ask the same
    /// question of an unchanged census.
    memo: Option<(u64, Vec<FsEntry>, Vec<PathBuf>)>,
}

/// The census, shared by all requests of a server.
#[derive(Default)]
pub struct LinkCensus {
    state: Mutex<State>,
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
    /// The writable names of files that also have a name outside the writable roots.
    pub paths: Vec<PathBuf>,
    /// The census's version when they were found, while it is watching (`None` otherwise).
    /// It changes whenever a multi-link file appears, disappears, or is replaced or relinked
    /// anywhere under the watched roots, so an unchanged version means every path here still
    /// names the file it named then (see [`crate::sandbox::mountns`]).
    pub version: Option<u64>,
    /// The census cannot watch (inotify limits) and walked the roots for this answer; it does
    /// so on every use, which is slow for large roots.
    pub walked_again: bool,
}

impl LinkCensus {
    /// The writable names, under `entries`, of regular files that also have a name the
    /// entries do not make writable. Blocking (it may walk directory trees): call it off the
    /// async runtime, or try [`LinkCensus::current`] first.
    pub fn outside_links(&self, entries: &[FsEntry]) -> Findings {
        let (canonical, roots) = canonical_entries(entries);
        if roots.is_empty() {
            return Findings::default();
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.refresh(&roots);
        let paths = st.findings(&canonical, &roots);
        Findings {
            paths,
            version: (!st.unwatchable).then_some(st.version),
            walked_again: st.unwatchable,
        }
    }

    /// The same answer without blocking, when the census is already current for `entries`
    /// (every root known, no event queued, watching works); `None` otherwise.
    pub fn current(&self, entries: &[FsEntry]) -> Option<Findings> {
        let (canonical, roots) = canonical_entries(entries);
        if roots.is_empty() {
            return Some(Findings::default());
        }
        let mut st = self.state.try_lock().ok()?;
        let known = roots
            .iter()
            .all(|r| st.roots.iter().any(|o| r.starts_with(o)));
        if st.unwatchable || !known || st.pending_events() != 0 {
            return None;
        }
        let paths = st.findings(&canonical, &roots);
        Some(Findings {
            paths,
            version: Some(st.version),
            walked_again: false,
        })
    }
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

impl State {
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

    /// Groups the multi-link files under `roots` by inode and keeps the writable names of
    /// those with more links than writable names.
    fn findings(&mut self, canonical: &[FsEntry], roots: &[PathBuf]) -> Vec<PathBuf> {
        if let Some((version, entries, found)) = &self.memo
            && *version == self.version
            && entries == canonical
        {
            return found.clone();
        }
        let found = self.compute_findings(canonical, roots);
        self.memo = Some((self.version, canonical.to_vec(), found.clone()));
        found
    }

    fn compute_findings(&self, canonical: &[FsEntry], roots: &[PathBuf]) -> Vec<PathBuf> {
        let mut by_inode: HashMap<(u64, u64), (u64, Vec<&PathBuf>)> = HashMap::new();
        for (path, &(dev, ino, nlink)) in &self.multi {
            if roots.iter().any(|r| path.starts_with(r))
                && resolve(canonical, path) == Access::Write
            {
                let group = by_inode.entry((dev, ino)).or_insert((nlink, Vec::new()));
                group.0 = group.0.max(nlink);
                group.1.push(path);
            }
        }
        // The link count noted for a name is from when that name was seen: a link made later
        // elsewhere changes the file's count but is reported only to watches on its own
        // directory. Ask the file itself (this runs only when the census changed).
        let mut out: Vec<PathBuf> = by_inode
            .into_iter()
            .filter(|((dev, ino), (noted, names))| {
                let now = names.iter().find_map(|p| {
                    std::fs::symlink_metadata(p)
                        .ok()
                        .filter(|m| m.dev() == *dev && m.ino() == *ino)
                        .map(|m| m.nlink())
                });
                now.unwrap_or(*noted) > names.len() as u64
            })
            .flat_map(|(_, (_, names))| names.into_iter().cloned())
            .collect();
        out.sort();
        out
    }

    /// Brings the census up to date for `roots`.
    fn refresh(&mut self, roots: &[PathBuf]) {
        if self.unwatchable {
            self.rewalk(roots);
            return;
        }
        let stale = self.drain_events();
        let new: Vec<PathBuf> = roots
            .iter()
            .filter(|r| !self.roots.iter().any(|o| r.starts_with(o)))
            .cloned()
            .collect();
        // A new root above an old one is walked whole, the old one included.
        let above = new
            .iter()
            .any(|r| self.roots.iter().any(|o| o.starts_with(r)));
        if stale || above || self.unwatchable {
            let all: Vec<PathBuf> = self.roots.iter().chain(roots).cloned().collect();
            self.rewalk(&all);
        } else {
            for r in new {
                self.walk(&r);
                self.roots.insert(r);
            }
        }
    }

    /// Forgets everything and walks `roots` again (with fresh watches, unless unwatchable).
    fn rewalk(&mut self, roots: &[PathBuf]) {
        self.inotify = None;
        self.dirs.clear();
        self.multi.clear();
        self.version += 1;
        self.roots.clear();
        let mut sorted: Vec<PathBuf> = roots.to_vec();
        sorted.sort();
        for r in sorted {
            if !self.roots.iter().any(|o| r.starts_with(o)) {
                self.roots.insert(r.clone());
                self.walk(&r);
            }
        }
    }

    fn watch(&mut self, dir: &Path) {
        if self.unwatchable {
            return;
        }
        if self.inotify.is_none() {
            // SAFETY: inotify_init1 has no memory arguments.
            let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            if fd < 0 {
                // The per-user instance limit: walk on every use.
                self.unwatchable = true;
                return;
            }
            // SAFETY: a fresh fd we own.
            self.inotify = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let Some(fd) = &self.inotify else { return };
        let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
            return;
        };
        let mask = libc::IN_CREATE
            | libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM
            | libc::IN_DELETE
            | libc::IN_ATTRIB
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF
            | libc::IN_ONLYDIR
            | libc::IN_DONT_FOLLOW;
        // SAFETY: a valid fd and C string.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            let e = std::io::Error::last_os_error().raw_os_error();
            if matches!(e, Some(libc::ENOSPC | libc::ENOMEM)) {
                // The per-user watch limit: walk on every use from now on.
                self.unwatchable = true;
                self.inotify = None;
                self.dirs.clear();
            }
            // Otherwise the directory is gone or not readable (then it cannot be listed
            // either, by the census or by a process).
            return;
        }
        self.dirs.insert(wd, dir.to_path_buf());
    }

    /// Records `dir` and everything below it (symlinks are not followed; pseudo filesystems
    /// are not entered).
    fn walk(&mut self, dir: &Path) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            self.watch(&d);
            let Ok(read) = std::fs::read_dir(&d) else {
                continue;
            };
            for ent in read.flatten() {
                // The entry's type comes with the listing, and its metadata from a lookup
                // relative to the open directory: no path walk per entry.
                let Ok(kind) = ent.file_type() else {
                    continue;
                };
                let path = ent.path();
                if kind.is_dir() {
                    if !is_pseudo_fs(&path) {
                        stack.push(path);
                    }
                } else if kind.is_file() {
                    if let Ok(meta) = ent.metadata() {
                        self.note_file(path, &meta);
                    }
                } else if self.multi.remove(&path).is_some() {
                    self.version += 1;
                }
            }
        }
    }

    fn note_file(&mut self, path: PathBuf, meta: &std::fs::Metadata) {
        let changed = if meta.is_file() && meta.nlink() > 1 {
            let now = (meta.dev(), meta.ino(), meta.nlink());
            self.multi.insert(path, now) != Some(now)
        } else {
            self.multi.remove(&path).is_some()
        };
        if changed {
            self.version += 1;
        }
    }

    /// Applies the queued events, in order; true when only a full walk can bring the census
    /// up to date (the queue overflowed, or a root itself moved).
    fn drain_events(&mut self) -> bool {
        let Some(fd) = &self.inotify else {
            return false;
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
                if ev.mask & libc::IN_IGNORED != 0 {
                    self.dirs.remove(&ev.wd);
                    continue;
                }
                if ev.mask & libc::IN_MOVE_SELF != 0 {
                    // A directory below a root moved: its parent reported it (IN_MOVED_FROM).
                    // A root itself moved: its parent is not watched, start over.
                    if self
                        .dirs
                        .get(&ev.wd)
                        .is_some_and(|d| self.roots.contains(d))
                    {
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
                let name = std::ffi::OsStr::from_bytes(&name_bytes[..name_len]);
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
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {
                    if !is_pseudo_fs(&path) && !self.dirs.values().any(|d| d == &path) {
                        self.walk(&path);
                    }
                }
                Ok(meta) => self.note_file(path, &meta),
                // Gone (a file, or a directory with everything below it).
                Err(_) => {
                    let before = self.multi.len();
                    self.multi.retain(|p, _| !p.starts_with(&path));
                    if self.multi.len() != before {
                        self.version += 1;
                    }
                }
            }
        }
        self.unwatchable
    }

    /// Forgets `dir` and everything below it: its files and its watches (their descriptors
    /// follow the moved inodes, so their paths would be wrong from now on).
    fn forget_below(&mut self, dir: &Path) {
        let before = self.multi.len();
        self.multi.retain(|p, _| !p.starts_with(dir));
        if self.multi.len() != before {
            self.version += 1;
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

fn is_pseudo_fs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return true;
    };
    // SAFETY: statfs into a zeroed struct with a valid path.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && PSEUDO_FS.contains(&(st.f_type as i64))
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
        assert_eq!(first.paths, vec![ws.join("cfg"), ws.join("sub/link")]);
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
            census.outside_links(&entries).paths,
            vec![ws.join("cfg"), ws.join("late"), ws.join("new/late2")]
        );
        // A directory renamed: the census follows it without a walk and stays exact, also
        // for links made below it later.
        std::fs::rename(ws.join("sub"), ws.join("sub2")).unwrap();
        std::fs::hard_link(out.join("secret"), ws.join("sub2/again")).unwrap();
        std::fs::remove_dir_all(ws.join("new")).unwrap();
        assert_eq!(
            census.outside_links(&entries).paths,
            vec![ws.join("cfg"), ws.join("late"), ws.join("sub2/again")]
        );
        std::fs::hard_link(out.join("secret"), ws.join("sub2/again2")).unwrap();
        assert_eq!(
            census.outside_links(&entries).paths,
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
        assert_eq!(census.outside_links(&entries).paths, want);
        std::fs::rename(ws.join("tree"), ws.join("sub2/tree")).unwrap();
        std::fs::hard_link(out.join("secret"), ws.join("sub2/tree/deep/m")).unwrap();
        want.pop();
        want.push(ws.join("sub2/tree/deep/l"));
        want.push(ws.join("sub2/tree/deep/m"));
        assert_eq!(census.outside_links(&entries).paths, want);
        std::fs::rename(ws.join("sub2/tree"), out.join("tree")).unwrap();
        want.truncate(4);
        assert_eq!(census.outside_links(&entries).paths, want);
        // What the census knows equals a fresh walk.
        let fresh = LinkCensus::default();
        assert_eq!(fresh.outside_links(&entries).paths, want);
        let _ = std::fs::remove_dir_all(&base);
    }
}
