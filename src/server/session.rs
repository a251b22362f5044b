//! Sessions: the processes created by one `initialize`, which outlive a dropped WebSocket
//! connection for a grace period and can be resumed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{OutMessage, Outbox};
use crate::process::ProcessTable;
use crate::process::events::{EventSink, OutputEvent};
use crate::protocol::envelope::notification;
use crate::protocol::process::{ClosedParams, ExitedParams};
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

/// A process's events become this session's notifications. `process/output` is built by hand
/// straight into one buffer: base64 needs no JSON escaping, and this is the hot path for
/// streaming.
impl EventSink for SessionSink {
    async fn output(&self, event: OutputEvent<'_>) {
        let id = serde_json::to_string(event.process_id).unwrap_or_else(|_| "\"\"".into());
        let mut msg = Vec::with_capacity(
            base64_simd::STANDARD.encoded_length(event.data.len()) + id.len() + 100,
        );
        msg.extend_from_slice(b"{\"method\":\"process/output\",\"params\":{\"processId\":");
        msg.extend_from_slice(id.as_bytes());
        msg.extend_from_slice(b",\"seq\":");
        msg.extend_from_slice(event.seq.to_string().as_bytes());
        msg.extend_from_slice(b",\"stream\":\"");
        msg.extend_from_slice(event.stream.name().as_bytes());
        msg.extend_from_slice(b"\",\"chunk\":\"");
        base64_simd::STANDARD.encode_append(event.data, &mut msg);
        msg.extend_from_slice(b"\"}}");
        match String::from_utf8(msg) {
            Ok(text) => self.send(OutMessage(text)).await,
            Err(_) => tracing::error!("output notification was not UTF-8"),
        }
    }

    async fn exited(&self, event: ExitedParams) {
        self.send(notification(
            "process/exited",
            serde_json::to_value(event).unwrap_or_default(),
        ))
        .await;
    }

    async fn closed(&self, event: ClosedParams) {
        self.send(notification(
            "process/closed",
            serde_json::to_value(event).unwrap_or_default(),
        ))
        .await;
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

    /// Creates a session attached to `outbox`. Fails (-32603) when the OS's random source
    /// cannot give an id: a session id is a capability (it resumes the session's processes),
    /// so it is never made from guessable values.
    pub fn create(&self, outbox: Outbox) -> Result<Arc<Session>, RpcError> {
        let id = new_uuid().map_err(|e| {
            RpcError::internal(format!(
                "cannot create a session id: the OS random source failed: {e}"
            ))
        })?;
        let session = Arc::new(Session {
            id,
            processes: Arc::new(ProcessTable::default()),
            sink: SessionSink::default(),
            attachment: Mutex::new(Attachment {
                attached: true,
                generation: 0,
            }),
        });
        session.sink.set(Some(outbox));
        self.map().insert(session.id.clone(), session.clone());
        crate::metrics::session_created();
        Ok(session)
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

    /// How many sessions are attached to a connection and how many wait for a resume.
    pub fn census(&self) -> crate::metrics::Snapshot {
        let mut snapshot = crate::metrics::Snapshot::default();
        for session in self.map().values() {
            if session.attachment().attached {
                snapshot.sessions_attached += 1;
            } else {
                snapshot.sessions_detached += 1;
            }
        }
        snapshot
    }
}

/// A random (version 4) UUID from the OS's random source (`getrandom(2)`). There is no
/// fallback: an error is returned when the random source fails.
pub fn new_uuid() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)?;
    Ok(format_uuid_v4(b))
}

/// Formats 16 random bytes as a version 4, variant 1 UUID.
fn format_uuid_v4(mut b: [u8; 16]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_has_version_4_and_variant_1_shape() {
        let id = new_uuid().expect("random source");
        assert_eq!(id.len(), 36);
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_eq!(&parts[2][..1], "4");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{id}");
    }

    #[test]
    fn uuid_formatting_forces_only_the_version_and_variant_bits() {
        assert_eq!(
            format_uuid_v4([0xff; 16]),
            "ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
        assert_eq!(
            format_uuid_v4([0; 16]),
            "00000000-0000-4000-8000-000000000000"
        );
    }

    #[test]
    fn ids_do_not_repeat() {
        let ids: std::collections::HashSet<String> = (0..1000)
            .map(|_| new_uuid().expect("random source"))
            .collect();
        assert_eq!(ids.len(), 1000);
    }

    #[tokio::test]
    async fn sessions_get_distinct_random_ids() {
        let sessions = Sessions::default();
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let a = sessions.create(tx.clone()).expect("session");
        let b = sessions.create(tx).expect("session");
        assert_ne!(a.id, b.id);
        assert_eq!(sessions.all().len(), 2);
    }
}
