//! Environment policy (PROTOCOL.md section 5): pure functions over explicit inputs, so that the
//! seven-step algorithm can be tested without touching the process environment.

pub mod pattern;
pub mod policy;

pub use pattern::{PatternSet, matches};
pub use policy::{EnvPolicy, Inherit, ServerEnv, build};
