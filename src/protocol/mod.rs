//! Wire types of the stockade protocol, one module per section of `docs/PROTOCOL.md` (code
//! comments cite its sections as "PROTOCOL.md section N").
//!
//! This module has no behaviour: it only describes shapes (serde) and error codes, so that
//! handlers and tests can build and inspect messages with the same types.

pub mod envelope;
pub mod fs;
pub mod handshake;
pub mod policy;
pub mod process;
pub mod sandbox;
pub mod schema;
pub mod strict;

pub use envelope::{ErrorCode, RpcError};
