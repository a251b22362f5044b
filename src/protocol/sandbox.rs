//! Section 6: sandbox policy wire shapes. Conversion into the internal model lives in
//! `crate::sandbox::policy`. The report of what was enforced (6.6) is here too.

use schemars::JsonSchema;
use serde::Serialize;

/// Codex's name for "confined": any confinement applies.
pub const SANDBOX_TYPE_CONFINED: &str = "linuxSeccomp";
/// Codex's name for "not confined".
pub const SANDBOX_TYPE_NONE: &str = "none";

/// How much of a policy is enforced (section 6.6, `enforcement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// The policy confines nothing (`danger-full-access`).
    None,
    /// Everything the policy asks for is enforced.
    Full,
    /// Some of it is not (the operator allowed degradation); `degradations` says what.
    Degraded,
}

/// The Landlock rights a ruleset handles, by the kernel's names in lower case (section 6.6,
/// `landlockRights`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LandlockRights {
    /// Filesystem rights (`execute`, `write_file`, ..., `resolve_unix`).
    pub fs: Vec<String>,
    /// Network rights (`bind_tcp`, `connect_tcp`, ...).
    pub net: Vec<String>,
    /// Scopes (`abstract_unix_socket`, `signal`).
    pub scopes: Vec<String>,
}

/// One effective limit in the report: its value and what enforces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LimitReport {
    /// The limit's value.
    pub value: u64,
    /// The mechanism that enforces it (cgroup, rlimit, timer, output counter).
    pub mechanism: &'static str,
}

/// What was enforced for a process (section 6.6): the `sandbox` member of the
/// `process/start` result, the `--report` of `stockade run` and the verdicts of
/// `stockade doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct SandboxReport {
    /// The policy's name (`read-only`, `workspace-write`, ..., `managed`).
    #[schemars(with = "super::schema::ReportPolicyName")]
    pub policy: String,
    /// Whether everything asked for is enforced.
    pub enforcement: Enforcement,
    /// The Landlock ABI in use.
    pub landlock_abi: i32,
    /// The rights the ruleset handles.
    pub landlock_rights: LandlockRights,
    /// `none`, `landlock` or `landlock+mount-namespace`.
    #[schemars(with = "super::schema::FilesystemMechanism")]
    pub filesystem: &'static str,
    /// `allowed` or `blocked`.
    #[schemars(with = "super::schema::NetworkState")]
    pub network: &'static str,
    /// Hardening (seccomp denials, Landlock scopes) applies.
    pub hardening: bool,
    /// What could not be enforced (empty unless `enforcement` is `degraded`).
    pub degradations: Vec<String>,
    /// What the caller should know (paths not granted, read-only hard links, ...).
    pub notes: Vec<String>,
    /// The effective limits by wire name (`process/start` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<super::schema::LimitsReport>")]
    pub limits: Option<std::collections::BTreeMap<&'static str, LimitReport>>,
}
