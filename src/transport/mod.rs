//! Transports: stdio (newline-delimited JSON) and WebSocket. Both turn a byte stream into
//! [`Frame`]s and accept serialized messages to send.

pub mod lines;
pub mod listen;
pub mod stdio;
pub mod ws;

pub use crate::config::DEFAULT_MAX_MESSAGE_BYTES;
pub use crate::server::connection::Frame;
