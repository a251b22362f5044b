//! The supervisor's side of seccomp user notification (see
//! [`crate::sandbox::denials::notify`]): one thread of the server answers every call that a
//! process tree's filter refuses, with EPERM, and records it in the process's denial list.
//!
//! Why a thread of its own and not a task per process: registering a listener is one
//! `epoll_ctl` on the spawn's path, with no task to spawn, and its teardown when the tree is
//! gone happens here, not on the runtime's workers that report the exit. The thread sleeps in
//! `epoll_wait` on the listeners themselves and answers on its wake-up. (A refused call still
//! costs two wake-ups across CPUs, ~35-50 µs on the project's VMs: the kernel's same-CPU
//! hand-over, `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`, does not pass through epoll.)
//!
//! The thread owns each listener until no process uses the filter any more (the listener then
//! reports hang-up): closing it earlier would make the tree's refused calls answer ENOSYS
//! instead of EPERM. The tree is always killed before its process is forgotten, so every
//! listener hangs up in the end.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustix::event::epoll;

use super::table::Process;
use crate::sandbox::denials::notify::{self, Pending};

/// One process tree's listener.
struct Watched {
    process: Arc<Process>,
    listener: Arc<OwnedFd>,
}

/// The answering thread's state: its epoll set and what each registration stands for.
struct Watcher {
    epoll: OwnedFd,
    watched: Mutex<HashMap<u64, Watched>>,
    next_key: AtomicU64,
}

/// Calls answered per listener before the thread looks at the others again.
const BATCH: usize = 64;

/// The thread, started on first use; the error says why it could not be.
fn watcher() -> std::io::Result<&'static Watcher> {
    static WATCHER: OnceLock<Result<&'static Watcher, String>> = OnceLock::new();
    WATCHER
        .get_or_init(|| {
            let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| e.to_string())?;
            let w: &'static Watcher = Box::leak(Box::new(Watcher {
                epoll,
                watched: Mutex::new(HashMap::new()),
                next_key: AtomicU64::new(0),
            }));
            std::thread::Builder::new()
                .name("seccomp-notify".into())
                .spawn(move || answer_calls(w))
                .map_err(|e| e.to_string())?;
            Ok(w)
        })
        .clone()
        .map_err(std::io::Error::other)
}

/// Starts answering `listener`'s calls for `process`. An error means the listener could not be
/// watched; the caller reports the source as inactive.
pub fn watch(process: Arc<Process>, listener: OwnedFd) -> std::io::Result<()> {
    notify::prefer_sync_wakeup(listener.as_fd());
    let w = watcher()?;
    let key = w.next_key.fetch_add(1, Ordering::Relaxed);
    // Registered under the lock: the thread finds the entry as soon as the listener is ready.
    let mut watched = w.watched.lock().unwrap_or_else(|p| p.into_inner());
    epoll::add(
        &w.epoll,
        &listener,
        epoll::EventData::new_u64(key),
        epoll::EventFlags::IN,
    )?;
    watched.insert(
        key,
        Watched {
            process,
            listener: Arc::new(listener),
        },
    );
    Ok(())
}

fn answer_calls(w: &'static Watcher) {
    let empty = epoll::Event {
        flags: epoll::EventFlags::empty(),
        data: epoll::EventData::new_u64(0),
    };
    let mut events = [empty; 32];
    loop {
        let n = match epoll::wait(&w.epoll, &mut events[..], None) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                // Nothing more will be answered: every listed tree's list is incomplete (its
                // refused calls now wait until the tree is killed).
                tracing::error!("seccomp listener thread: {e}");
                let watched = w.watched.lock().unwrap_or_else(|p| p.into_inner());
                for entry in watched.values() {
                    entry.process.state().denials.mark_lost();
                }
                return;
            }
        };
        for ev in &events[..n] {
            let key = ev.data.u64();
            let Some((process, listener)) = w
                .watched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .map(|e| (e.process.clone(), e.listener.clone()))
            else {
                continue;
            };
            if !answer_queued(&process, &listener) {
                forget(w, key);
            }
        }
    }
}

/// Answers the calls queued on one listener (at most [`BATCH`]; level-triggered readiness
/// brings the thread back for the rest). False when the listener is done with: no process
/// uses the filter any more, or it failed.
fn answer_queued(process: &Process, listener: &OwnedFd) -> bool {
    for _ in 0..BATCH {
        match notify::pending(listener.as_fd()) {
            Pending::Call => {
                let answered = notify::answer_eperm(listener.as_fd(), |call| {
                    process.state().denials.record(notify::denial(call), 1)
                });
                if let Err(e) = answered {
                    tracing::error!("seccomp listener of {}: {e}", process.id);
                    process.state().denials.mark_lost();
                    return false;
                }
            }
            Pending::Idle => return true,
            Pending::Gone => return false,
        }
    }
    true
}

/// Stops watching `key` and closes its listener.
fn forget(w: &Watcher, key: u64) {
    let removed = w
        .watched
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key);
    if let Some(entry) = removed {
        let _ = epoll::delete(&w.epoll, &*entry.listener);
    }
}
