//! Server configuration: timings and limits of the protocol (from CLI flags).

use std::time::Duration;

/// Runtime settings of `stockade serve`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Maximum incoming message size (`--max-message-bytes`).
    pub max_message_bytes: usize,
    /// How long a detached WebSocket session survives (`--session-grace-ms`).
    pub session_grace: Duration,
    /// How long to wait for output EOF after exit before killing the tree (`--close-grace-ms`).
    pub close_grace: Duration,
    /// Output retained per process for `process/read` (`--retain-output-bytes`).
    pub retain_output_bytes: usize,
    /// How long a closed process stays readable (`--retain-exited-ms`).
    pub retain_exited: Duration,
    /// Outgoing messages queued per connection before producers wait (back-pressure).
    pub outbox_capacity: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_message_bytes: crate::transport::DEFAULT_MAX_MESSAGE_BYTES,
            session_grace: Duration::from_secs(30),
            close_grace: Duration::from_millis(2000),
            retain_output_bytes: 1024 * 1024,
            retain_exited: Duration::from_secs(30),
            outbox_capacity: 64,
        }
    }
}
