//! What a running process reports, as typed events, and the sink they go to. The process
//! layer produces them (the pump, in order, each with its sequence number); the layer above
//! decides what they become: the server turns them into `process/output`, `process/exited`
//! and `process/closed` notifications, `stockade run` into its own stdout, stderr and exit
//! status. Nothing here knows about JSON-RPC.

use std::future::Future;

use super::spawn::Stream;
use crate::protocol::process::{ClosedParams, ExitedParams};

/// A piece of output, borrowed from the pump's read buffer (the sink copies or encodes it
/// before the next read).
#[derive(Debug, Clone, Copy)]
pub struct OutputEvent<'a> {
    /// The process handle.
    pub process_id: &'a str,
    /// Its place in the process's event order.
    pub seq: u64,
    /// Which stream it came from.
    pub stream: Stream,
    /// The raw bytes.
    pub data: &'a [u8],
}

/// Where a process's events go. Each call may wait (back-pressure on the producing process:
/// the pump reads no more output until it returns). Events of one process arrive in sequence
/// order: outputs, one `exited`, outputs that were still buffered, then `closed`.
pub trait EventSink: Clone + Send + Sync + 'static {
    /// A chunk of output.
    fn output(&self, event: OutputEvent<'_>) -> impl Future<Output = ()> + Send;
    /// The main process ended.
    fn exited(&self, event: ExitedParams) -> impl Future<Output = ()> + Send;
    /// All output was delivered; nothing follows.
    fn closed(&self, event: ClosedParams) -> impl Future<Output = ()> + Send;
}
