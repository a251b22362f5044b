//! The process side of the Landlock audit source (see
//! [`crate::sandbox::denials::audit`]): a confined process with a Landlock domain is watched
//! from its spawn until its tree is gone; the records of its domains land in its denial list.

use std::sync::{Arc, Weak};

use super::table::Process;
use crate::protocol::process::{Denial, DenialSource};
use crate::sandbox::denials::audit::{self, AuditSink};

/// Feeds one process's denial list.
struct ProcessSink(Weak<Process>);

impl AuditSink for ProcessSink {
    fn record(&self, denial: Denial) {
        if let Some(p) = self.0.upgrade() {
            p.state().denials.record(denial, 1);
            p.notify_changed();
        }
    }

    fn lost(&self) {
        if let Some(p) = self.0.upgrade() {
            p.state().denials.mark_lost();
        }
    }

    fn settled(&self) {
        if let Some(p) = self.0.upgrade() {
            p.state().denials.release();
            p.notify_changed();
        }
    }
}

/// Watches `process` (a confined process whose child created a Landlock domain) when the
/// audit source is active: `landlock` joins its `denialSources`, and its list is held until
/// [`settle`].
pub fn watch(process: &Arc<Process>) {
    let Some(source) = audit::active() else {
        return;
    };
    {
        let mut st = process.state();
        st.denials.add_source(DenialSource::Landlock);
        st.denials.hold();
    }
    source.watch(
        process.pid as u32,
        Arc::new(ProcessSink(Arc::downgrade(process))),
    );
}

/// The tree of `process` is gone: reads the records still on their way (bounded wait) and
/// releases its list. Returns at once for a process that is not watched.
pub async fn settle(process: &Process) {
    let Some(source) = audit::active() else {
        return;
    };
    let pid = process.pid as u32;
    let source = source.clone();
    let _ = tokio::task::spawn_blocking(move || source.settle(pid)).await;
}
