//! Section 6: sandbox policy wire shapes. Conversion into the internal model lives in
//! `crate::sandbox::policy`.

/// Codex's name for "confined": any confinement applies.
pub const SANDBOX_TYPE_CONFINED: &str = "linuxSeccomp";
/// Codex's name for "not confined".
pub const SANDBOX_TYPE_NONE: &str = "none";
