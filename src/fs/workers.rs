//! Worker threads confined like a process under a policy.
//!
//! Before Landlock ABI 8, `landlock_restrict_self` confines only the calling thread, and
//! capabilities are per thread too. A worker thread that dropped every capability and
//! restricted itself with a policy's ruleset therefore performs that policy's filesystem
//! operations with exactly a process's privileges, under the kernel's enforcement: the same
//! Landlock domain decision (a ruleset for a restricted filesystem, the scopes for
//! hardening), no capability (so DAC applies to a root server's workers as to its processes,
//! which hold none after exec), no_new_privs. The server's other threads keep theirs. Pools
//! are cached per policy (bounded, least recently used first out) and rebuilt when an entry
//! path has changed since they were built (a ruleset holds the inodes it was built with).

use std::collections::VecDeque;
use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::guard::Guard;
use crate::sandbox::landlock::{self, RulesetSpec};
use crate::sandbox::policy::{Filesystem, SandboxPolicy};

/// Work for a pool: runs on a confined thread with the pool's guard.
type Job = Box<dyn FnOnce(&Guard) + Send>;

/// Threads per policy.
const THREADS_PER_POOL: usize = 2;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct` (two of them in version 3).
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`.
const CAP_VERSION_3: u32 = 0x2008_0522;
/// The capability that allows dropping from the bounding set.
const CAP_SETPCAP: u32 = 8;

fn thread_caps() -> io::Result<[CapData; 2]> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills two version-3 data structs on the stack.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data)
}

/// Leaves the calling thread no capability at all, as a process under a confining policy
/// has after its exec: empty bounding set (when the thread may change it: it needs
/// CAP_SETPCAP, which a thread without it has nothing to drop with anyway), no ambient,
/// inheritable, permitted or effective capability. capset changes only the calling thread;
/// the rest of the server keeps its capabilities. Checked afterwards.
fn drop_thread_capabilities() -> io::Result<()> {
    let held = thread_caps()?;
    if held[0].effective & (1 << CAP_SETPCAP) != 0 {
        for cap in 0..64 {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } < 0 {
                let e = io::Error::last_os_error();
                // EINVAL: past the last capability this kernel knows.
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e);
                }
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
        return Err(io::Error::last_os_error());
    }
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let none = [CapData::default(); 2];
    // SAFETY: capset reads two version-3 data structs on the stack.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            none.as_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if thread_caps()? != none {
        return Err(io::Error::other(
            "capabilities remain after dropping them on a filesystem worker thread",
        ));
    }
    Ok(())
}

/// Sets no_new_privs on the calling thread (done by Landlock's restrict too, and needed
/// without it).
fn no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Confines the calling thread: no capability, no_new_privs, then the Landlock ruleset.
fn confine_thread(ruleset: Option<&::landlock::RulesetCreated>) -> io::Result<()> {
    drop_thread_capabilities()?;
    no_new_privs()?;
    match ruleset {
        Some(r) => landlock::restrict_current_thread(r),
        None => Ok(()),
    }
}

/// One policy's confined threads.
struct Pool {
    policy: SandboxPolicy,
    guard: Arc<Guard>,
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Pool {
    /// Builds the guard and the ruleset now, and starts threads that confine themselves
    /// with it. `abi` 0: no Landlock (only when degradation is allowed); the guard alone
    /// then decides.
    fn start(policy: &SandboxPolicy, abi: i32) -> std::io::Result<Pool> {
        let guard = Arc::new(Guard::build(policy));
        let entries = match &policy.filesystem {
            Filesystem::Restricted(e) => Some(e.as_slice()),
            Filesystem::Unrestricted => None,
        };
        // The decision a process's preparation makes: a domain for a restricted filesystem,
        // and for hardening where scopes exist. A domain also keeps the worker from the
        // `/proc` entries of every process outside it (Landlock's ptrace restriction).
        let want_landlock = abi >= 1 && (entries.is_some() || (policy.hardening && abi >= 6));
        let ruleset = if want_landlock {
            let built = landlock::build(&RulesetSpec {
                abi,
                entries,
                block_network: !policy.network,
                scopes: policy.hardening,
            })
            .map_err(std::io::Error::other)?;
            Some(Arc::new(built.ruleset))
        } else {
            None
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<()>>();
        for i in 0..THREADS_PER_POOL {
            let (rx, guard, ruleset, ready) =
                (rx.clone(), guard.clone(), ruleset.clone(), ready_tx.clone());
            std::thread::Builder::new()
                .name(format!("stockade-fs-{i}"))
                .spawn(move || {
                    let confined = confine_thread(ruleset.as_deref());
                    drop(ruleset);
                    let ok = confined.is_ok();
                    let _ = ready.send(confined);
                    if !ok {
                        return;
                    }
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        match job {
                            // A panicking operation must not take the worker with it.
                            Ok(job) => {
                                let _ =
                                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                        job(&guard)
                                    }));
                            }
                            Err(_) => return,
                        }
                    }
                })?;
        }
        drop(ready_tx);
        for _ in 0..THREADS_PER_POOL {
            ready_rx
                .recv()
                .map_err(|_| std::io::Error::other("a filesystem worker thread died"))??;
        }
        Ok(Pool {
            policy: policy.clone(),
            guard,
            jobs: Mutex::new(tx),
        })
    }
}

/// The cache of confined worker pools.
pub struct FsWorkers {
    pools: Mutex<VecDeque<Arc<Pool>>>,
    capacity: usize,
}

impl FsWorkers {
    /// A cache holding at most `capacity` policies' pools.
    pub fn new(capacity: usize) -> FsWorkers {
        FsWorkers {
            pools: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
        }
    }

    fn pool_for(&self, policy: &SandboxPolicy, abi: i32) -> std::io::Result<Arc<Pool>> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = pools.iter().position(|p| p.policy == *policy) {
            let pool = pools.remove(i).expect("index from position");
            if !pool.guard.is_stale() {
                pools.push_front(pool.clone());
                return Ok(pool);
            }
        }
        let pool = Arc::new(Pool::start(policy, abi)?);
        pools.push_front(pool.clone());
        // Dropping an evicted pool closes its queue; its threads finish what they hold
        // and exit.
        pools.truncate(self.capacity);
        Ok(pool)
    }

    /// Runs `op` under `policy`: on a confined worker for every confining policy, on the
    /// blocking pool (no confinement to apply) for an unconfined one.
    pub async fn run<T, F>(&self, policy: &SandboxPolicy, abi: i32, op: F) -> std::io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Guard) -> T + Send + 'static,
    {
        if policy.is_unconfined() {
            return tokio::task::spawn_blocking(move || op(&Guard::unrestricted()))
                .await
                .map_err(std::io::Error::other);
        }
        let pool = self.pool_for(policy, abi)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |g| {
            let _ = tx.send(op(g));
        });
        pool.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| std::io::Error::other("the filesystem workers stopped"))?;
        rx.await
            .map_err(|_| std::io::Error::other("a filesystem worker failed"))
    }
}
