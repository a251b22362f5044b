//! Worker threads confined by a policy's Landlock ruleset.
//!
//! Before Landlock ABI 8, `landlock_restrict_self` confines only the calling thread. A
//! worker thread that restricted itself with a policy's ruleset therefore performs that
//! policy's filesystem operations under the kernel's enforcement, exactly as a process
//! under the policy would be checked. Pools are cached per policy (bounded, least recently
//! used first out) and rebuilt when an entry path has changed since they were built (a
//! ruleset holds the inodes it was built with).

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::guard::Guard;
use crate::sandbox::landlock::{self, RulesetSpec};
use crate::sandbox::policy::{Filesystem, SandboxPolicy};

/// Work for a pool: runs on a confined thread with the pool's guard.
type Job = Box<dyn FnOnce(&Guard) + Send>;

/// Threads per policy.
const THREADS_PER_POOL: usize = 2;

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
        let ruleset = if abi >= 1 {
            let built = landlock::build(&RulesetSpec {
                abi,
                entries,
                block_tcp: false,
                scopes: false,
            })?;
            Some(Arc::new(built.fd))
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
                    let confined = match &ruleset {
                        Some(r) => landlock::restrict_current_thread(r),
                        None => Ok(()),
                    };
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

    /// Runs `op` under `policy`: on a confined worker for a restricted filesystem, on the
    /// blocking pool (no confinement to apply) otherwise.
    pub async fn run<T, F>(&self, policy: &SandboxPolicy, abi: i32, op: F) -> std::io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Guard) -> T + Send + 'static,
    {
        if policy.filesystem == Filesystem::Unrestricted {
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
