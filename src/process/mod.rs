//! Processes: the per-session table, spawning, output sequencing and retention, PTYs, and the
//! tree kill.

pub mod cgroup;
pub mod events;
pub mod keeper;
pub mod landlock_audit;
pub mod output;
pub mod pump;
pub mod refusals;
pub mod resolve;
pub mod service;
pub mod spawn;
pub mod sys;
pub mod table;
pub mod zygote;

pub use table::ProcessTable;
