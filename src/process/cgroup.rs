//! One cgroup v2 group per process, inside a directory the operator delegated to stockade
//! (`[limits] cgroup_root` or `--cgroup-root`).
//!
//! With a group, the whole tree of a process is one unit for the kernel: `memory.max` and
//! `pids.max` bound the tree (when those controllers are enabled for the delegated
//! directory), `cgroup.kill` kills every member at once, and `cpu.stat` / `memory.peak`
//! measure the tree. The keeper moves itself into the group before it starts the program, so
//! nothing of the tree ever runs outside it. Without a delegated directory stockade uses
//! rlimits (see README, Limits).

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// `statfs` magic of cgroup2.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// A delegated cgroup v2 directory in which stockade creates one group per process.
#[derive(Debug)]
pub struct CgroupRoot {
    dir: PathBuf,
    memory: bool,
    pids: bool,
    next: AtomicU64,
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

impl CgroupRoot {
    /// Opens a delegated cgroup v2 directory, enabling the memory and pids controllers for
    /// its children where its parent offers them. Fails when `dir` is not a writable
    /// cgroup v2 directory.
    pub fn open(dir: &Path) -> Result<CgroupRoot, String> {
        let st = nix::sys::statfs::statfs(dir)
            .map_err(|e| format!("cgroup root {}: {e}", dir.display()))?;
        if st.filesystem_type().0 as i64 != CGROUP2_SUPER_MAGIC {
            return Err(format!(
                "cgroup root {} is not a cgroup v2 directory",
                dir.display()
            ));
        }
        CgroupRoot::open_unchecked(dir)
    }

    /// [`CgroupRoot::open`] without the filesystem check (tests use a plain directory).
    pub fn open_unchecked(dir: &Path) -> Result<CgroupRoot, String> {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let offered = read("cgroup.controllers");
        for c in ["memory", "pids"] {
            if offered.split_whitespace().any(|o| o == c) {
                // Fails when the directory itself holds processes (the "no internal
                // processes" rule); then the controller is simply not used.
                let _ = write_file(&dir.join("cgroup.subtree_control"), &format!("+{c}"));
            }
        }
        let enabled = read("cgroup.subtree_control");
        let has = |c: &str| {
            enabled
                .split_whitespace()
                .any(|e| e.trim_start_matches('+') == c)
        };
        let root = CgroupRoot {
            dir: dir.to_path_buf(),
            memory: has("memory"),
            pids: has("pids"),
            next: AtomicU64::new(0),
        };
        // Prove that groups can be created here before the first request depends on it.
        let probe = root
            .dir
            .join(format!("stockade-probe-{}", std::process::id()));
        std::fs::create_dir(&probe)
            .and_then(|_| std::fs::remove_dir(&probe))
            .map_err(|e| format!("cannot create groups in {}: {e}", dir.display()))?;
        Ok(root)
    }

    /// The memory controller is enabled for the groups.
    pub fn memory(&self) -> bool {
        self.memory
    }

    /// The pids controller is enabled for the groups.
    pub fn pids(&self) -> bool {
        self.pids
    }

    /// Creates the group of one process with its limits (each only when the controller is
    /// enabled; the caller uses rlimits otherwise).
    pub fn create(&self, memory: Option<u64>, pids: Option<u64>) -> io::Result<ProcessCgroup> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .dir
            .join(format!("stockade-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir)?;
        let group = ProcessCgroup { dir };
        if let (Some(m), true) = (memory, self.memory) {
            write_file(&group.dir.join("memory.max"), &m.to_string())?;
            // Swap would let the tree exceed the limit; a missing file means no swap.
            let _ = write_file(&group.dir.join("memory.swap.max"), "0");
        }
        if let (Some(p), true) = (pids, self.pids) {
            write_file(&group.dir.join("pids.max"), &p.to_string())?;
        }
        Ok(group)
    }
}

/// Usage of a whole tree, from its group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeUsage {
    /// User CPU time in microseconds.
    pub user_us: u64,
    /// System CPU time in microseconds.
    pub sys_us: u64,
    /// Peak memory in bytes (`memory.peak`), when the memory controller is enabled.
    pub peak_bytes: Option<u64>,
}

/// The group of one process; removed when dropped (after its tree was killed).
#[derive(Debug)]
pub struct ProcessCgroup {
    dir: PathBuf,
}

impl ProcessCgroup {
    /// The group's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `cgroup.procs`, opened for the keeper to move itself in (it writes `0`).
    pub fn procs(&self) -> io::Result<OwnedFd> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))?;
        Ok(f.into())
    }

    /// Kills every member at once.
    pub fn kill(&self) {
        let _ = write_file(&self.dir.join("cgroup.kill"), "1");
    }

    /// CPU time and peak memory of everything that ran in the group.
    pub fn usage(&self) -> TreeUsage {
        let stat = std::fs::read_to_string(self.dir.join("cpu.stat")).unwrap_or_default();
        let field = |name: &str| {
            stat.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0)
        };
        TreeUsage {
            user_us: field("user_usec"),
            sys_us: field("system_usec"),
            peak_bytes: std::fs::read_to_string(self.dir.join("memory.peak"))
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        }
    }
}

impl Drop for ProcessCgroup {
    fn drop(&mut self) {
        // A group can only be removed once empty: kill what is left, then retry briefly off
        // the caller's thread.
        self.kill();
        let dir = std::mem::take(&mut self.dir);
        if std::fs::remove_dir(&dir).is_ok() {
            return;
        }
        std::thread::spawn(move || {
            for _ in 0..50 {
                std::thread::sleep(std::time::Duration::from_millis(20));
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    return;
                }
            }
            tracing::warn!(dir = %dir.display(), "could not remove a process cgroup");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_limits_and_reads_usage_from_the_interface_files() {
        let dir = std::env::temp_dir().join(format!("stockade-cg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Plain files stand in for cgroupfs: only memory is offered, and the "+memory"
        // written to subtree_control is what reads back.
        std::fs::write(dir.join("cgroup.controllers"), "cpu memory\n").unwrap();
        std::fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
        let root = CgroupRoot::open_unchecked(&dir).unwrap();
        assert!(
            !root.pids(),
            "only what subtree_control shows counts as enabled"
        );
        assert!(root.memory());
        std::fs::write(dir.join("cgroup.controllers"), "").unwrap();
        std::fs::write(dir.join("cgroup.subtree_control"), "memory pids").unwrap();
        let root = CgroupRoot::open_unchecked(&dir).unwrap();
        assert!(root.memory() && root.pids());
        // On a plain directory `create` cannot write the limits (cgroupfs makes the
        // interface files itself): the group is not used.
        assert!(root.create(Some(64 << 20), Some(50)).is_err());
        let gdir = dir.join("group");
        let g = ProcessCgroup { dir: gdir.clone() };
        std::fs::create_dir_all(&gdir).unwrap();
        std::fs::write(
            gdir.join("cpu.stat"),
            "usage_usec 900\nuser_usec 700\nsystem_usec 200\n",
        )
        .unwrap();
        std::fs::write(gdir.join("memory.peak"), "4096\n").unwrap();
        assert_eq!(
            g.usage(),
            TreeUsage {
                user_us: 700,
                sys_us: 200,
                peak_bytes: Some(4096)
            }
        );
        std::mem::forget(g);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
