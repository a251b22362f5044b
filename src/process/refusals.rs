//! The supervisor's side of seccomp user notification (see
//! [`crate::sandbox::denials::notify`]): one task per process tree answers every call its
//! filter refuses, with EPERM, and records it in the process's denial list.
//!
//! The task owns the listener until no process uses the filter any more (the listener then
//! reports hang-up): closing it earlier would make the tree's refused calls answer ENOSYS
//! instead of EPERM. The tree is always killed before its process is forgotten, so the task
//! ends.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;

use super::table::Process;
use crate::sandbox::denials::notify::{self, Pending};

/// Starts answering `listener`'s calls for `process`. An error means the listener could not be
/// watched; the caller reports the source as inactive.
pub fn watch(process: Arc<Process>, listener: OwnedFd) -> std::io::Result<()> {
    notify::prefer_sync_wakeup(listener.as_fd());
    // SAFETY: we own the listener; it stays registered until the task drops it.
    let fd = unsafe { AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    tokio::spawn(answer_calls(process, fd));
    Ok(())
}

async fn answer_calls(process: Arc<Process>, fd: AsyncFd<OwnedFd>) {
    loop {
        let Ok(mut guard) = fd.readable().await else {
            return;
        };
        // Readiness is edge-triggered: drain every queued call before waiting again. A
        // receive with nothing queued would block, so each is preceded by a poll.
        loop {
            match notify::pending(fd.get_ref().as_fd()) {
                Pending::Call => match notify::answer_eperm(fd.get_ref().as_fd()) {
                    Ok(Some(call)) => process.state().denials.record(notify::denial(&call), 1),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!("seccomp listener of {}: {e}", process.id);
                        process.state().denials.mark_lost();
                        return;
                    }
                },
                Pending::Idle => {
                    guard.clear_ready();
                    break;
                }
                Pending::Gone => return,
            }
        }
    }
}
