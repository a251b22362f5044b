//! Reusable mount namespaces: one per distinct mount plan, built by the first process that
//! needs it and joined (`setns`) by the later ones.
//!
//! Why: building a private mount namespace costs one `unshare`, a recursive propagation change
//! and two or three mount calls per carve-out, and tearing it down costs as much again when the
//! process exits. With many carve-outs (each file with a hard link outside the writable roots
//! is one, see [`super::links`]) that dominated a spawn: about 200 ms for 1,000 of them. Joining
//! a finished namespace costs two `setns` calls, whatever it holds.
//!
//! Soundness: a namespace is only ever joined by processes whose plan is byte-for-byte the
//! plan that built it, and only while nothing it captured has changed:
//! - the paths it covers: a covered path that was replaced, renamed or re-linked on the host
//!   no longer carries its mount (the kernel detaches mounts from dentries that go away), so
//!   the namespace is dropped and built again. Carve-outs are stamped (device, inode, ctime)
//!   when the namespace is built and checked again before every join. The hard links the
//!   census found are many (one stat each per spawn would cost more than the rest of the
//!   spawn), and the census already follows them with inotify: its version changes whenever
//!   one of them is replaced or relinked, so they are checked by that version instead (and
//!   stamped like the rest when the census cannot watch);
//! - the host's mount table: a namespace is a copy of it, so every change to it (seen by
//!   polling `/proc/self/mounts`) drops every namespace.
//!
//! The namespace is captured by the process that built it, before it executes anything (see
//! `sandbox::child`), so what is reused is exactly what the plan built. No process in it can
//! change it: Landlock forbids mounting, seccomp forbids the mount API, and none holds a
//! capability. Joining also moves the process's root to the namespace's root, so the server
//! only reuses namespaces when that root is its own ([`super::probe::setns_keeps_root`]).

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::placeholders::Lease;

/// At most this many namespaces are kept (least recently used dropped first).
const CAPACITY: usize = 32;

/// A captured namespace: what a process joins.
#[derive(Debug)]
pub struct NamespaceFds {
    /// The user namespace (when the server is not root).
    pub user: Option<OwnedFd>,
    /// The mount namespace.
    pub mnt: OwnedFd,
}

/// What a covered path was when the namespace was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

/// Stamps of every path of a mount plan (kind byte + path); `None` when one is missing.
fn stamp_all(mounts: &[Vec<u8>]) -> Option<Vec<Stamp>> {
    mounts
        .iter()
        .map(|m| {
            let path = OsStr::from_bytes(m.get(1..)?);
            // Host mount points made read-only (kind 5): the mount-table poll vouches for
            // them. Writable roots bound onto themselves (kind 6): only their identity
            // matters (their ctime changes with every file created in them).
            if m.first() == Some(&5) {
                return Some(Stamp {
                    dev: 0,
                    ino: 0,
                    ctime: 0,
                    ctime_nsec: 0,
                });
            }
            let md = std::fs::symlink_metadata(path).ok()?;
            // A writable root is known by its birth time instead of its ctime: a root
            // deleted and made again often gets the same inode number, and the namespace's
            // bind went with the old one. Without a birth time, the ctime.
            let born = md
                .created()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            let (ctime, ctime_nsec) = match born {
                Some(b) if m.first() == Some(&6) => (b.as_secs() as i64, b.subsec_nanos() as i64),
                _ => (md.ctime(), md.ctime_nsec()),
            };
            Some(Stamp {
                dev: md.dev(),
                ino: md.ino(),
                ctime,
                ctime_nsec,
            })
        })
        .collect()
}

/// Stamps of hard-linked files (as [`stamp_all`] stamps a read-only op); `None` when one is
/// missing.
fn stamp_paths(paths: &[PathBuf]) -> Option<Vec<Stamp>> {
    paths
        .iter()
        .map(|p| {
            let md = std::fs::symlink_metadata(p).ok()?;
            Some(Stamp {
                dev: md.dev(),
                ino: md.ino(),
                ctime: md.ctime(),
                ctime_nsec: md.ctime_nsec(),
            })
        })
        .collect()
}

/// How a process gets its mount namespace.
#[derive(Debug)]
pub enum NamespacePlan {
    /// Join this finished namespace.
    Join(Arc<NamespaceFds>),
    /// Build one; when `capture` is set, hand the result to [`NamespaceCache::adopt`].
    Build {
        /// What to keep it under, if it may be kept.
        capture: Option<Capture>,
    },
}

/// The key and stamps of a namespace being built, to pass back to [`NamespaceCache::adopt`].
#[derive(Debug)]
pub struct Capture {
    mounts: Vec<Vec<u8>>,
    links: Arc<[PathBuf]>,
    userns: bool,
    stamps: Vec<Stamp>,
    census: Option<u64>,
    generation: u64,
}

struct Entry {
    mounts: Vec<Vec<u8>>,
    /// The hard-linked files made read-only after `mounts` (vouched for by `census`).
    links: Arc<[PathBuf]>,
    userns: bool,
    /// Stamps of the leading ops (all of them when `census` is `None`).
    stamps: Vec<Stamp>,
    /// The census version that vouches for the trailing ops.
    census: Option<u64>,
    fds: Arc<NamespaceFds>,
    /// The placeholders its mounts sit on: kept while the namespace is kept.
    _placeholders: Vec<Lease>,
}

struct State {
    /// Most recently used first.
    entries: VecDeque<Entry>,
    /// Bumped whenever every entry is dropped; a capture from an older generation is stale.
    generation: u64,
}

/// The server's namespaces, keyed by mount plan.
pub struct NamespaceCache {
    /// `/proc/self/mounts`, polled for changes of the host's mount table (`None`: disabled).
    mount_table: Option<File>,
    state: Mutex<State>,
}

impl NamespaceCache {
    /// A cache; `enabled` is false when namespaces cannot be reused soundly on this host.
    pub fn new(enabled: bool) -> NamespaceCache {
        let mount_table = if enabled {
            File::open("/proc/self/mounts").ok()
        } else {
            None
        };
        let cache = NamespaceCache {
            mount_table,
            state: Mutex::new(State {
                entries: VecDeque::new(),
                generation: 0,
            }),
        };
        // The first poll reports a change: consume it now.
        cache.mount_table_changed();
        cache
    }

    /// Whether namespaces are reused at all.
    pub fn enabled(&self) -> bool {
        self.mount_table.is_some()
    }

    /// True when the host's mount table changed since the last call.
    fn mount_table_changed(&self) -> bool {
        let Some(f) = &self.mount_table else {
            return false;
        };
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd, without waiting.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n != 0 && pfd.revents & (libc::POLLPRI | libc::POLLERR) != 0
    }

    /// How a process with this mount plan (kind byte + path each; parents first; then a
    /// read-only-if-present mount on each of `links`) gets its namespace. The ops after the
    /// first `stamped`, and `links`, are what the census found at version `census` (see
    /// [`super::links::Findings`]); without a version every op and link is stamped.
    pub fn plan(
        &self,
        mounts: &[Vec<u8>],
        links: &Arc<[PathBuf]>,
        userns: bool,
        stamped: usize,
        census: Option<u64>,
    ) -> NamespacePlan {
        if !self.enabled() || (mounts.is_empty() && links.is_empty()) {
            return NamespacePlan::Build { capture: None };
        }
        let stamps = if census.is_some() {
            stamp_all(&mounts[..stamped.min(mounts.len())])
        } else {
            // No census version vouches for the links: each is stamped like a carve-out.
            stamp_all(mounts).and_then(|mut st| {
                st.extend(stamp_paths(links)?);
                Some(st)
            })
        };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.mount_table_changed() {
            st.entries.clear();
            st.generation += 1;
        }
        let Some(stamps) = stamps else {
            return NamespacePlan::Build { capture: None };
        };
        // The census hands out the same allocation while it is unchanged: most lookups
        // compare the links by pointer, not path by path.
        let same = |e: &Entry| {
            e.userns == userns
                && e.mounts == mounts
                && (Arc::ptr_eq(&e.links, links) || e.links == *links)
        };
        if let Some(i) = st.entries.iter().position(same) {
            let entry = st.entries.remove(i).expect("index in range");
            if entry.stamps == stamps && entry.census == census {
                let fds = entry.fds.clone();
                st.entries.push_front(entry);
                return NamespacePlan::Join(fds);
            }
        }
        NamespacePlan::Build {
            capture: Some(Capture {
                mounts: mounts.to_vec(),
                links: links.clone(),
                userns,
                stamps,
                census,
                generation: st.generation,
            }),
        }
    }

    /// Keeps the namespace a process built for `capture` (its fds: the user namespace first
    /// when `userns`, then the mount namespace) and the placeholders its mounts sit on.
    /// Dropped when anything changed meanwhile.
    pub fn adopt(&self, capture: Capture, mut fds: Vec<OwnedFd>, placeholders: Vec<Lease>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.mount_table_changed() {
            st.entries.clear();
            st.generation += 1;
            return;
        }
        // Stamped before the build: a path replaced since then invalidates it at first use.
        if st.generation != capture.generation || fds.len() != 1 + usize::from(capture.userns) {
            return;
        }
        let mnt = fds.pop().expect("length checked");
        let user = fds.pop();
        st.entries.retain(|e| {
            !(e.userns == capture.userns && e.mounts == capture.mounts && e.links == capture.links)
        });
        st.entries.push_front(Entry {
            mounts: capture.mounts,
            links: capture.links,
            userns: capture.userns,
            stamps: capture.stamps,
            census: capture.census,
            fds: Arc::new(NamespaceFds { user, mnt }),
            _placeholders: placeholders,
        });
        st.entries.truncate(CAPACITY);
    }

    /// Drops every kept namespace (and so the placeholders only they relied on): at
    /// shutdown, once every process is gone.
    pub fn clear(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.entries.clear();
        st.generation += 1;
    }

    /// Namespaces currently kept.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }

    /// True when none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// What `plan` decided, in one word.
    #[derive(Debug, PartialEq)]
    enum Verdict {
        Join,
        BuildAndKeep,
        BuildOnce,
    }

    fn verdict(
        cache: &NamespaceCache,
        mounts: &[Vec<u8>],
        userns: bool,
        census: Option<u64>,
    ) -> Verdict {
        match cache.plan(mounts, &Arc::from([]), userns, 1, census) {
            NamespacePlan::Join(_) => Verdict::Join,
            NamespacePlan::Build { capture: Some(_) } => Verdict::BuildAndKeep,
            NamespacePlan::Build { capture: None } => Verdict::BuildOnce,
        }
    }

    /// Plans, and adopts what the (pretend) process built; panics unless it was a capture.
    fn build(cache: &NamespaceCache, mounts: &[Vec<u8>], census: Option<u64>, fds: usize) {
        let NamespacePlan::Build {
            capture: Some(capture),
        } = cache.plan(mounts, &Arc::from([]), false, 1, census)
        else {
            panic!("expected a build to capture");
        };
        let fds = (0..fds)
            .map(|_| OwnedFd::from(File::open("/dev/null").unwrap()))
            .collect();
        cache.adopt(capture, fds, Vec::new());
    }

    fn op(kind: u8, path: &Path) -> Vec<u8> {
        let mut op = vec![kind];
        op.extend_from_slice(path.as_os_str().as_bytes());
        op
    }

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("stockade-mountns-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_namespace_is_reused_until_a_covered_path_changes() {
        let dir = scratch("reuse");
        let file = dir.join("config");
        std::fs::write(&file, "a").unwrap();
        let mounts = vec![op(0, &file)];
        let cache = NamespaceCache::new(true);
        assert!(cache.enabled());
        build(&cache, &mounts, None, 1);
        assert_eq!(cache.len(), 1);
        assert_eq!(verdict(&cache, &mounts, false, None), Verdict::Join);
        // The same plan with a user namespace is another namespace.
        assert_eq!(verdict(&cache, &mounts, true, None), Verdict::BuildAndKeep);
        // Replaced on the host (as an editor or git does: write a new file, rename it over).
        let tmp = dir.join("config.tmp");
        std::fs::write(&tmp, "b").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert_eq!(verdict(&cache, &mounts, false, None), Verdict::BuildAndKeep);
        assert_eq!(cache.len(), 0);
        // A capture with the wrong number of fds is not kept.
        build(&cache, &mounts, None, 0);
        assert_eq!(cache.len(), 0);
        // Missing paths are never captured.
        std::fs::remove_file(&file).unwrap();
        assert_eq!(verdict(&cache, &mounts, false, None), Verdict::BuildOnce);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_change_of_the_host_mount_table_drops_every_namespace() {
        let dir = scratch("table");
        let mounts = vec![op(0, &dir)];
        let cache = NamespaceCache::new(true);
        build(&cache, &mounts, None, 1);
        assert_eq!(verdict(&cache, &mounts, false, None), Verdict::Join);
        std::fs::create_dir_all(dir.join("m")).unwrap();
        let target = std::ffi::CString::new(dir.join("m").as_os_str().as_bytes()).unwrap();
        // SAFETY: mount with valid C strings.
        let mounted = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        } == 0;
        if mounted {
            // SAFETY: unmounting what this test mounted.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            assert_eq!(
                verdict(&cache, &mounts, false, None),
                Verdict::BuildAndKeep,
                "a namespace copied from an older mount table was reused"
            );
            assert!(cache.is_empty());
        } else {
            // Not root: the mount table cannot be changed from here; at least nothing changed.
            assert_eq!(verdict(&cache, &mounts, false, None), Verdict::Join);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn census_ops_are_vouched_for_by_the_census_version() {
        let dir = scratch("census");
        // The census op's path does not even exist: it is not stamped, the version vouches.
        let mounts = vec![op(0, &dir), op(3, &dir.join("no-such-link"))];
        let cache = NamespaceCache::new(true);
        build(&cache, &mounts, Some(7), 1);
        assert_eq!(verdict(&cache, &mounts, false, Some(7)), Verdict::Join);
        // A new census version (a link replaced somewhere) means building again.
        assert_eq!(
            verdict(&cache, &mounts, false, Some(8)),
            Verdict::BuildAndKeep
        );
        // Without a version every op is stamped, and a missing one is never captured.
        assert_eq!(verdict(&cache, &mounts, false, None), Verdict::BuildOnce);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_are_compared_by_content_and_stamped_without_a_census_version() {
        let dir = scratch("links");
        let link = dir.join("linked");
        std::fs::write(&link, "x").unwrap();
        let mounts = vec![op(6, &dir)];
        let links: Arc<[PathBuf]> = Arc::from([link.clone()]);
        let cache = NamespaceCache::new(true);
        let plan =
            |links: &Arc<[PathBuf]>, census| match cache.plan(&mounts, links, false, 1, census) {
                NamespacePlan::Join(_) => Verdict::Join,
                NamespacePlan::Build { capture: Some(c) } => {
                    let fds = vec![OwnedFd::from(File::open("/dev/null").unwrap())];
                    cache.adopt(c, fds, Vec::new());
                    Verdict::BuildAndKeep
                }
                NamespacePlan::Build { capture: None } => Verdict::BuildOnce,
            };
        assert_eq!(plan(&links, Some(3)), Verdict::BuildAndKeep);
        assert_eq!(plan(&links, Some(3)), Verdict::Join);
        // Another allocation with the same paths is the same plan...
        let copy: Arc<[PathBuf]> = Arc::from([link.clone()]);
        assert_eq!(plan(&copy, Some(3)), Verdict::Join);
        // ...other paths are not (nor none at all).
        let other: Arc<[PathBuf]> = Arc::from([dir.join("other")]);
        assert_eq!(plan(&other, Some(3)), Verdict::BuildAndKeep);
        assert_eq!(plan(&Arc::from([]), Some(3)), Verdict::BuildAndKeep);
        // Without a census version the links are stamped: a replaced link means a new build,
        // a missing one is never kept.
        assert_eq!(plan(&links, None), Verdict::BuildAndKeep);
        assert_eq!(plan(&links, None), Verdict::Join);
        let tmp = dir.join("linked.tmp");
        std::fs::write(&tmp, "y").unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        assert_eq!(plan(&links, None), Verdict::BuildAndKeep);
        std::fs::remove_file(&link).unwrap();
        assert_eq!(plan(&links, None), Verdict::BuildOnce);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn disabled_cache_always_builds() {
        let cache = NamespaceCache::new(false);
        assert!(!cache.enabled());
        let mounts = vec![op(0, Path::new("/"))];
        assert_eq!(verdict(&cache, &mounts, false, None), Verdict::BuildOnce);
    }
}
