//! Section 8: filesystem methods (`fs/*`). Paths are absolute paths or `file://` URIs; the
//! policy fields are kept raw and converted by the sandbox module.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The policy fields every filesystem method accepts (section 8).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FsPolicyParams {
    /// Section 6.2 policy shape.
    #[serde(default)]
    #[schemars(with = "Option<super::policy::SandboxPolicyShape>")]
    pub sandbox_policy: Option<Value>,
    /// [stockade] The directory `sandboxPolicy` is resolved against (default: the server's
    /// working directory).
    #[serde(default)]
    pub sandbox_cwd: Option<String>,
    /// Section 6.3 policy shape.
    #[serde(default)]
    #[schemars(with = "Option<super::policy::SandboxShape>")]
    pub sandbox: Option<Value>,
}

/// Params of the methods that take one path: `fs/readFile`, `fs/getMetadata`,
/// `fs/readDirectory`, `fs/canonicalize`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathParams {
    /// The path.
    pub path: String,
    /// The policy.
    #[serde(flatten)]
    pub policy: FsPolicyParams,
}

/// Params of `fs/writeFile`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteFileParams {
    /// The file to create or truncate; its parent must exist.
    pub path: String,
    /// The new content, base64.
    pub data_base64: String,
    /// The policy.
    #[serde(flatten)]
    pub policy: FsPolicyParams,
}

fn yes() -> bool {
    true
}

/// Params of `fs/createDirectory`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateDirectoryParams {
    /// The directory to create.
    pub path: String,
    /// Create missing parents too, and accept an existing directory (default true).
    #[serde(default = "yes")]
    pub recursive: bool,
    /// The policy.
    #[serde(flatten)]
    pub policy: FsPolicyParams,
}

/// Params of `fs/remove`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoveParams {
    /// What to remove (a final symlink is removed, never followed).
    pub path: String,
    /// Remove directories with their contents (default true).
    #[serde(default = "yes")]
    pub recursive: bool,
    /// A missing path is not an error (default true).
    #[serde(default = "yes")]
    pub force: bool,
    /// The policy.
    #[serde(flatten)]
    pub policy: FsPolicyParams,
}

/// Params of `fs/copy`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopyParams {
    /// What to copy.
    pub source_path: String,
    /// Where to copy it.
    pub destination_path: String,
    /// Required for a directory source.
    pub recursive: bool,
    /// The policy.
    #[serde(flatten)]
    pub policy: FsPolicyParams,
}

/// Result of `fs/getMetadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct Metadata {
    /// The path (symlinks followed) is a directory.
    pub is_directory: bool,
    /// The path (symlinks followed) is a regular file.
    pub is_file: bool,
    /// The path itself is a symlink.
    pub is_symlink: bool,
    /// Size in bytes (symlinks followed).
    pub size: u64,
    /// Creation time in ms since the epoch, 0 when unknown.
    pub created_at_ms: u64,
    /// Modification time in ms since the epoch, 0 when unknown.
    pub modified_at_ms: u64,
}

/// One entry of `fs/readDirectory`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct DirEntry {
    /// The entry's name.
    pub file_name: String,
    /// A directory (symlinks followed).
    pub is_directory: bool,
    /// A regular file (symlinks followed).
    pub is_file: bool,
}

/// The file size limit of `fs/readFile`.
pub const READ_FILE_LIMIT: u64 = 512 * 1024 * 1024;
