//! Section 3: handshake (`initialize`, `initialized`, `environment/info`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Params of `initialize`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitializeParams {
    /// Name of the client (informational).
    #[serde(default)]
    pub client_name: Option<String>,
    /// Session to reattach to (WebSocket only).
    #[serde(default)]
    pub resume_session_id: Option<String>,
}

/// The shell the executor host offers.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ShellInfo {
    /// Shell name, e.g. `bash`.
    pub name: String,
    /// Absolute path of the shell.
    pub path: String,
}

/// `environmentInfo`: a description of the executor host.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct EnvironmentInfo {
    /// The host's default shell.
    pub shell: ShellInfo,
    /// The server's working directory as a `file://` URI.
    pub cwd: String,
    /// The home directory as a `file://` URI.
    pub user_home_dir: String,
    /// The temp directory as a `file://` URI.
    pub temp_dir: String,
    /// Always `linux`.
    pub platform_os: String,
    /// `stockade <version>`.
    pub executor_version: String,
    /// Optional Codex features implemented (none yet).
    pub capabilities: serde_json::Map<String, serde_json::Value>,
}

/// `stockade.sandboxSupport`: what this host can enforce.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct SandboxSupport {
    /// Landlock ABI in use (0 = none).
    pub landlock_abi: i32,
    /// Whether seccomp filters can be installed.
    pub seccomp: bool,
    /// Whether user namespaces can be created.
    pub user_namespaces: bool,
    /// How processes get their private mount namespace: `direct`, `userNamespace` or
    /// `unavailable` (then requests that need one fail closed, naming `probes`' fix).
    pub mount_namespaces: String,
    /// The startup probes (mount, user and network namespaces, Landlock, seccomp user
    /// notification): `available`, and when not, `error` and `fix`.
    pub probes: serde_json::Value,
    /// Policy types accepted by this server after its ceiling.
    pub policies: Vec<String>,
    /// Whether Landlock audit records are a denial source (`denialSources` value
    /// `landlock`), and why not.
    pub denial_audit: DenialAuditSupport,
}

/// `stockade.sandboxSupport.denialAudit`: the Landlock audit denial source.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct DenialAuditSupport {
    /// `[sandbox] denial_audit`: `auto`, `off` or `enable`.
    pub mode: String,
    /// Records are read and attributed to processes.
    pub active: bool,
    /// Why the source is not active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How to make it active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// What the mode does to the host (`enable`: audit is on host-wide).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The `stockade` extension object of the `initialize` result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct StockadeInfo {
    /// Server version.
    pub version: String,
    /// Host enforcement capabilities.
    pub sandbox_support: SandboxSupport,
}

/// Result of `initialize`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct InitializeResult {
    /// The session id (a UUID), new or resumed.
    pub session_id: String,
    /// The executor host description.
    pub environment_info: EnvironmentInfo,
    /// stockade's extension.
    pub stockade: StockadeInfo,
}
