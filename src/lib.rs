//! stockade: a Linux exec supervisor that speaks the Codex exec-server protocol.
//!
//! The data flows one way: a transport turns bytes into frames, the server decodes and routes
//! them, handlers validate params into protocol types, and the process module spawns and
//! supervises children whose events flow back as notifications.

pub mod cli;
pub mod config;
pub mod doctor;
pub mod env;
pub mod examples;
pub mod fdio;
pub mod fs;
pub mod metrics;
pub mod network;
pub mod paths;
pub mod process;
pub mod protocol;
pub mod run;
pub mod sandbox;
pub mod server;
pub mod transport;
