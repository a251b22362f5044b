//! Sessions: the processes created by one `initialize`, which outlive a dropped WebSocket
//! connection for a grace period and can be resumed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{OutMessage, Outbox};
use crate::process::ProcessTable;
use crate::protocol::{ErrorCode, RpcError};

/// Where a session's notifications go: the attached connection, or nowhere while detached.
#[derive(Clone, Default)]
pub struct SessionSink(Arc<Mutex<Option<Outbox>>>);

impl SessionSink {
    fn slot(&self) -> MutexGuard<'_, Option<Outbox>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a notification if a connection is attached. Waits when the connection's queue
    /// is full (back-pressure on the producing process), never while holding a lock.
    pub async fn send(&self, message: impl Into<OutMessage>) {
        let outbox = self.slot().clone();
        if let Some(outbox) = outbox {
            let _ = outbox.send(message.into()).await;
        }
    }

    fn set(&self, outbox: Option<Outbox>) {
        *self.slot() = outbox;
    }
}

struct Attachment {
    attached: bool,
    generation: u64,
}

/// One session.
pub struct Session {
    /// The session id (UUID).
    pub id: String,
    /// Its processes.
    pub processes: Arc<ProcessTable>,
    /// Notification sink.
    pub sink: SessionSink,
    attachment: Mutex<Attachment>,
}

impl Session {
    fn attachment(&self) -> MutexGuard<'_, Attachment> {
        self.attachment.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kills every process of the session and waits (bounded) for their keepers.
    pub async fn kill_all(&self, timeout: Duration) {
        let processes = self.processes.all();
        for p in &processes {
            p.kill_tree();
        }
        for p in &processes {
            p.wait_finished(timeout).await;
        }
    }
}

/// The table of sessions.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a session attached to `outbox`.
    pub fn create(&self, outbox: Outbox) -> Arc<Session> {
        let session = Arc::new(Session {
            id: new_uuid(),
            processes: Arc::new(ProcessTable::default()),
            sink: SessionSink::default(),
            attachment: Mutex::new(Attachment {
                attached: true,
                generation: 0,
            }),
        });
        session.sink.set(Some(outbox));
        self.map().insert(session.id.clone(), session.clone());
        session
    }

    /// Reattaches a detached session to `outbox`.
    pub fn resume(&self, id: &str, outbox: Outbox) -> Result<Arc<Session>, RpcError> {
        let session = self
            .map()
            .get(id)
            .cloned()
            .ok_or_else(|| RpcError::invalid_request(format!("unknown session id {id}")))?;
        let mut att = session.attachment();
        if att.attached {
            return Err(RpcError::new(
                ErrorCode::SessionAttached,
                format!("session {id} is already attached to another connection"),
            ));
        }
        att.attached = true;
        att.generation += 1;
        drop(att);
        session.sink.set(Some(outbox));
        Ok(session)
    }

    /// Detaches a session; after `grace` without a resume, its processes are killed and it is
    /// forgotten.
    pub fn detach(self: &Arc<Self>, session: &Arc<Session>, grace: Duration) {
        session.sink.set(None);
        let generation = {
            let mut att = session.attachment();
            att.attached = false;
            att.generation += 1;
            att.generation
        };
        let sessions = self.clone();
        let session = session.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let expired = {
                let att = session.attachment();
                !att.attached && att.generation == generation
            };
            if expired {
                sessions.map().remove(&session.id);
                session.kill_all(Duration::from_secs(5)).await;
            }
        });
    }

    /// Ends a session now (stdio EOF): kills its processes and forgets it.
    pub async fn end(&self, session: &Arc<Session>) {
        session.sink.set(None);
        self.map().remove(&session.id);
        session.kill_all(Duration::from_secs(5)).await;
    }

    /// Every session.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map().values().cloned().collect()
    }
}

/// A random (version 4) UUID from the kernel's CSPRNG.
pub fn new_uuid() -> String {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        // Extremely unlikely; fall back to time and pid so ids still differ.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b.copy_from_slice(&(t ^ ((std::process::id() as u128) << 64)).to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
