//! The sandbox: the policy model (`policy`), what the host can enforce (`probe`), the
//! preparation of a policy in the parent (`prepare`, `landlock`, `seccomp`, `links`,
//! `mountns`, `tracking`,
//! `placeholders`, `pathfd`) and what the child applies between fork and exec (`child`).

pub mod child;
pub mod denials;
pub mod from_wire;
pub mod landlock;
pub mod links;
pub mod mountns;
pub mod pathfd;
pub mod placeholders;
pub mod policy;
pub mod prepare;
pub mod probe;
pub mod seccomp;
pub mod server_files;
pub mod tracking;
