//! The sandbox: the policy model and its enforcement. Until the enforcement lands, only
//! unconfined execution exists and every confining policy is refused (fail closed).

pub mod child;
pub mod landlock;
pub mod links;
pub mod policy;
pub mod prepare;
pub mod probe;
pub mod seccomp;
