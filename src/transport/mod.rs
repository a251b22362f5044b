//! Transports: stdio (newline-delimited JSON) and WebSocket. Both turn a byte stream into
//! [`Frame`]s and accept serialized messages to send.

pub mod lines;
pub mod listen;
pub mod stdio;
pub mod ws;

/// One unit received from a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message's bytes (one line or one WebSocket message).
    Message(Vec<u8>),
    /// A message exceeded the size limit and was discarded whole.
    TooLarge,
}

/// Default maximum incoming message size (64 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
