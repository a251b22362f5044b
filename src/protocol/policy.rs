//! The wire shapes of the policy objects (PROTOCOL.md sections 5, 6.2, 6.3 and 7): what the
//! server parses (serde, strict: unknown keys refused), what the schema describes (schemars),
//! and what a TOML file spells in snake_case. No behaviour: the models (`env::EnvPolicy`,
//! `sandbox::policy::SandboxPolicy`) apply the defaults (absent or `null`: the default) and
//! resolve the shapes.
//!
//! Two helpers keep one definition per shape:
//! - [`two_spellings!`] declares the fields once and derives the camelCase wire struct and the
//!   snake_case file struct from that one list (`envPolicy` and a run policy file's `[env]`;
//!   `limits` and the config's `[limits.*]`).
//! - [`tagged_shape!`] declares an enum tagged by `type` whose errors keep their path: serde's
//!   own internally tagged enums buffer their content and lose the path of an error inside it
//!   (`read_only_access.readable_roots[0]`), and an error that does not name its field is one
//!   the client cannot act on. [`parse_shape`] reads a shape and names the field in its error.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::strict::explain_serde_error;

/// Separates the path of an error inside a [`tagged_shape!`] from its message, so that the
/// enclosing shapes can prefix their own path (the message then crosses serde as text).
const PATH_MARK: char = '\u{1}';

/// Joins two paths in serde_path_to_error's notation (`.` is the object itself).
fn join_path(outer: &str, inner: &str) -> String {
    match (outer, inner) {
        (".", i) => i.to_string(),
        (o, ".") => o.to_string(),
        (o, i) if i.starts_with('[') => format!("{o}{i}"),
        (o, i) => format!("{o}.{i}"),
    }
}

/// The path and message of an error at `path`, with the path of a nested marked error
/// appended.
fn unmark(path: String, msg: String) -> (String, String) {
    match msg
        .strip_prefix(PATH_MARK)
        .and_then(|rest| rest.split_once(PATH_MARK))
    {
        Some((inner, rest)) => unmark(join_path(&path, inner), rest.to_string()),
        None => (path, msg),
    }
}

/// Deserializes `value` into `T`; an error carries its path inside `value`, marked.
fn marked<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let (path, msg) = unmark(e.path().to_string(), e.inner().to_string());
        format!("{PATH_MARK}{path}{PATH_MARK}{msg}")
    })
}

/// Reads the shape `T` from `value`, the object a request or file has at `root`
/// (`sandboxPolicy`, `sandbox.default_policy`, ...). The error names the field
/// (`sandboxPolicy.writable_roots[0]: ...`) and, for an unknown key, the likely intended one.
pub fn parse_shape<T: DeserializeOwned>(value: &Value, root: &str) -> Result<T, String> {
    if !value.is_object() {
        return Err(format!("{root}: must be an object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let (path, msg) = unmark(e.path().to_string(), e.inner().to_string());
        explain_serde_error(&join_path(root, &path), &msg)
    })
}

/// The `type` of a tagged shape: one of `names`.
fn shape_tag<'v>(value: &'v Value, names: &[&str]) -> Result<&'v str, String> {
    let mark = |msg: String| format!("{PATH_MARK}type{PATH_MARK}{msg}");
    if !value.is_object() {
        return Err(format!("{PATH_MARK}.{PATH_MARK}must be an object"));
    }
    let tag = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| mark("missing or not a string".into()))?;
    if names.contains(&tag) {
        return Ok(tag);
    }
    let expected = match names {
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
        [] => String::new(),
    };
    Err(mark(format!("unknown type {tag:?} (expected {expected})")))
}

/// Declares an enum tagged by `type` (the variant's wire name given as `Variant = "name"`),
/// serialized and described by serde's internally tagged form, and deserialized variant by
/// variant so that an error inside a variant keeps its path: each variant is read as a struct
/// of its fields plus `type`, unknown keys refused.
macro_rules! tagged_shape {
    (
        $(#[$enum_attr:meta])*
        pub enum $shape:ident {
            $(
                $(#[$variant_attr:meta])*
                $variant:ident = $wire:literal {
                    $(
                        $(#[$field_attr:meta])*
                        $field:ident: $ty:ty,
                    )*
                },
            )*
        }
    ) => {
        $(#[$enum_attr])*
        pub enum $shape {
            $(
                $(#[$variant_attr])*
                #[serde(rename = $wire)]
                $variant {
                    $(
                        $(#[$field_attr])*
                        $field: $ty,
                    )*
                },
            )*
        }

        impl<'de> Deserialize<'de> for $shape {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = Value::deserialize(deserializer)?;
                let tag = shape_tag(&value, &[$($wire),*]).map_err(D::Error::custom)?;
                $(
                    if tag == $wire {
                        #[derive(Deserialize)]
                        #[serde(deny_unknown_fields)]
                        struct Fields {
                            /// The tag, read above.
                            #[serde(rename = "type")]
                            _tag: serde::de::IgnoredAny,
                            $(
                                $(#[$field_attr])*
                                $field: $ty,
                            )*
                        }
                        let _fields: Fields = marked(value).map_err(D::Error::custom)?;
                        return Ok($shape::$variant {
                            $($field: _fields.$field,)*
                        });
                    }
                )*
                unreachable!("shape_tag returned a tag that is not a variant")
            }
        }
    };
}

/// Declares a wire struct (written out as a normal struct, its attributes as given, normally
/// `rename_all = "camelCase"`) and, after `file struct Name;`, the same fields as a snake_case
/// struct for TOML files, with `From<file>` for the wire struct.
macro_rules! two_spellings {
    (
        $(#[$wire_attr:meta])*
        pub struct $wire:ident {
            $(
                $(#[$field_attr:meta])*
                pub $field:ident: $ty:ty,
            )*
        }
        $(#[$file_attr:meta])*
        file struct $file:ident;
    ) => {
        $(#[$wire_attr])*
        pub struct $wire {
            $(
                $(#[$field_attr])*
                pub $field: $ty,
            )*
        }

        $(#[$file_attr])*
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        pub struct $file {
            $(
                $(#[$field_attr])*
                pub $field: $ty,
            )*
        }

        impl From<$file> for $wire {
            fn from(file: $file) -> $wire {
                $wire {
                    $($field: file.$field,)*
                }
            }
        }
    };
}

pub(crate) use two_spellings;

/// A boolean or one of two words, as the network fields of the policies take it.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum NetworkSetting {
    /// `"restricted"` or `"enabled"`.
    Word(NetworkWord),
    /// `true` (enabled) or `false` (restricted).
    Flag(bool),
}

impl<'de> Deserialize<'de> for NetworkSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Bool(b) => Ok(NetworkSetting::Flag(b)),
            Value::String(s) if s == "restricted" => {
                Ok(NetworkSetting::Word(NetworkWord::Restricted))
            }
            Value::String(s) if s == "enabled" => Ok(NetworkSetting::Word(NetworkWord::Enabled)),
            other => Err(D::Error::custom(format!(
                "must be \"restricted\" or \"enabled\", got {other}"
            ))),
        }
    }
}

impl NetworkSetting {
    /// Whether the setting enables the network.
    pub fn enabled(&self) -> bool {
        matches!(
            self,
            NetworkSetting::Flag(true) | NetworkSetting::Word(NetworkWord::Enabled)
        )
    }
}

/// The words of [`NetworkSetting`].
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkWord {
    /// No network (the default).
    Restricted,
    /// Network allowed.
    Enabled,
}

tagged_shape! {
    /// A read access object of a `sandboxPolicy` (PROTOCOL.md 6.2).
    #[derive(Debug, Serialize, JsonSchema)]
    #[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
    pub enum ReadAccess {
        /// Read everywhere (the default).
        FullAccess = "full-access" {},
        /// Read only the listed roots, the cwd and (by default) the platform directories.
        Restricted = "restricted" {
            /// Absolute paths or `file://` URIs.
            #[serde(default)]
            readable_roots: Option<Vec<String>>,
            /// Also `/bin`, `/sbin`, `/usr`, `/lib`, `/lib64`, `/etc` (default true).
            #[serde(default)]
            include_platform_defaults: Option<bool>,
        },
    }
}

tagged_shape! {
    /// `sandboxPolicy`: Codex's `SandboxPolicy` shape (PROTOCOL.md 6.2). Missing fields and
    /// `null` take their defaults; any other key is refused.
    #[derive(Debug, Serialize, JsonSchema)]
    #[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
    pub enum SandboxPolicyShape {
        /// Nothing confined, network enabled.
        DangerFullAccess = "danger-full-access" {},
        /// Read per `access`, write nowhere.
        ReadOnly = "read-only" {
            /// What may be read (default: everything).
            #[serde(default)]
            access: Option<ReadAccess>,
            /// Allow the network (default false).
            #[serde(default)]
            network_access: Option<bool>,
        },
        /// Read per `read_only_access`; write the cwd, `writable_roots`, `/tmp` and `$TMPDIR`.
        WorkspaceWrite = "workspace-write" {
            /// More writable directories: absolute paths or `file://` URIs.
            #[serde(default)]
            writable_roots: Option<Vec<String>>,
            /// What may be read (default: everything).
            #[serde(default)]
            read_only_access: Option<ReadAccess>,
            /// Allow the network (default false).
            #[serde(default)]
            network_access: Option<bool>,
            /// Do not make the child's `$TMPDIR` writable (default false).
            #[serde(default)]
            exclude_tmpdir_env_var: Option<bool>,
            /// Do not make `/tmp` writable (default false).
            #[serde(default)]
            exclude_slash_tmp: Option<bool>,
        },
        /// Unrestricted filesystem, hardening on.
        ExternalSandbox = "external-sandbox" {
            /// Network (default restricted).
            #[serde(default)]
            network_access: Option<NetworkSetting>,
        },
    }
}

/// The access of a `sandbox` filesystem entry.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EntryAccess {
    /// Read and execute.
    Read,
    /// Read, execute, create, modify, delete, rename.
    Write,
    /// Nothing at all.
    None,
    /// Another spelling of `none`.
    Deny,
}

/// A special path of a `sandbox` entry. Kinds: `root`, `minimal`,
/// `current_working_directory`, `project_roots`, `tmpdir`, `slash_tmp`; an unknown kind is
/// ignored (the report's `notes` say so), since dropping an entry can only remove access.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecialPath {
    /// The kind of base path.
    pub kind: String,
    /// A relative path below each base.
    #[serde(default)]
    pub subpath: Option<String>,
}

tagged_shape! {
    /// The path of a `sandbox` entry.
    #[derive(Debug, Serialize, JsonSchema)]
    #[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
    pub enum EntryPath {
        /// An absolute path or `file://` URI.
        Path = "path" {
            /// The path.
            path: String,
        },
        /// A path relative to the context (cwd, workspace roots, tmpdir, ...).
        Special = "special" {
            /// Which one.
            value: SpecialPath,
        },
    }
}

/// One filesystem entry of a `sandbox` policy.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSystemEntry {
    /// Where.
    pub path: EntryPath,
    /// What may be done there.
    pub access: EntryAccess,
    /// `"skip"`: drop the entry when its path does not exist.
    #[serde(default)]
    pub missing_path_behavior: Option<String>,
}

tagged_shape! {
    /// `permissions.file_system` of a `sandbox` policy.
    #[derive(Debug, Serialize, JsonSchema)]
    #[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
    pub enum FileSystemPermissions {
        /// Exactly the entries.
        Restricted = "restricted" {
            /// The entries (missing: none, so nothing is readable).
            #[serde(default)]
            entries: Option<Vec<FileSystemEntry>>,
            /// Sent by Codex clients; accepted and ignored.
            #[serde(default)]
            glob_scan_max_depth: Option<Value>,
        },
        /// No filesystem confinement (hardening on).
        Unrestricted = "unrestricted" {
            /// Sent by Codex clients; accepted and ignored.
            #[serde(default)]
            glob_scan_max_depth: Option<Value>,
        },
    }
}

tagged_shape! {
    /// `permissions` of a `sandbox` policy.
    #[derive(Debug, Serialize, JsonSchema)]
    #[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
    pub enum Permissions {
        /// The entries of `file_system`.
        Managed = "managed" {
            /// The filesystem part.
            file_system: FileSystemPermissions,
            /// Network (default restricted).
            #[serde(default)]
            network: Option<NetworkSetting>,
        },
        /// Nothing confined, network enabled.
        Disabled = "disabled" {},
        /// Unrestricted filesystem, hardening on.
        External = "external" {
            /// Network (default restricted).
            #[serde(default)]
            network: Option<NetworkSetting>,
        },
    }
}

/// `policyContext` of a `sandbox` policy (read when the top-level fields are missing).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyContext {
    /// File URI or absolute path.
    #[serde(default)]
    pub cwd: Option<String>,
    /// File URIs.
    #[serde(default)]
    pub workspace_roots: Option<Vec<String>>,
}

/// `sandbox`: the policy shape Codex clients send (PROTOCOL.md 6.3).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxShape {
    /// What the process may do.
    pub permissions: Permissions,
    /// File URI or absolute path (default: the process's cwd).
    #[serde(default)]
    pub cwd: Option<String>,
    /// File URIs (default: `[cwd]`).
    #[serde(default)]
    pub workspace_roots: Option<Vec<String>>,
    /// File URIs that `tmpdir` entries mean instead of the child's `$TMPDIR`.
    #[serde(default)]
    pub temporary_directories: Option<Vec<String>>,
    /// `cwd` and `workspaceRoots` in the form filesystem methods receive.
    #[serde(default)]
    pub policy_context: Option<PolicyContext>,
    /// Sent by Codex clients; accepted and ignored.
    #[serde(default)]
    pub windows_sandbox_level: Option<Value>,
    /// Sent by Codex clients; accepted and ignored.
    #[serde(default)]
    pub windows_sandbox_private_desktop: Option<Value>,
    /// Sent by Codex clients; accepted and ignored.
    #[serde(default)]
    pub windows_sandbox_proxy_settings_mode: Option<Value>,
    /// Sent by Codex clients; accepted and ignored.
    #[serde(default)]
    pub use_legacy_landlock: Option<Value>,
    /// Sent by Codex clients; accepted and ignored.
    #[serde(default)]
    pub user_home_dir: Option<Value>,
}

/// The start set of an environment policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Inherit {
    /// Every server variable (the default).
    #[default]
    All,
    /// `PATH`, `SHELL`, `TMPDIR`, `TEMP`, `TMP`, `HOME`, `LANG`, `LC_ALL`, `LC_CTYPE`,
    /// `LOGNAME`, `USER`.
    Core,
    /// Nothing.
    None,
}

two_spellings! {
    /// `envPolicy` (PROTOCOL.md section 5). Patterns match whole names, case-insensitively, with
    /// `*` and `?`.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct EnvPolicyShape {
        /// The start set (default `all`).
        #[serde(default)]
        pub inherit: Option<Inherit>,
        /// Skip the default excludes `*KEY*`, `*SECRET*`, `*TOKEN*` (default false).
        #[serde(default)]
        pub ignore_default_excludes: Option<bool>,
        /// Names to remove.
        #[serde(default)]
        pub exclude: Option<Vec<String>>,
        /// [stockade] Server variables to add back after the excludes.
        #[serde(default)]
        pub include: Option<Vec<String>>,
        /// Variables to set.
        #[serde(default)]
        pub set: Option<BTreeMap<String, String>>,
        /// When non-empty, keep only matching names.
        #[serde(default)]
        pub include_only: Option<Vec<String>>,
    }
    /// The `[env]` table of a `stockade run` policy file: `envPolicy` in snake_case.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
    file struct EnvPolicyFileShape;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_have_the_same_fields() {
        let wire: EnvPolicyShape = serde_json::from_value(serde_json::json!({
            "inherit": "core", "ignoreDefaultExcludes": true, "exclude": ["A*"],
            "set": {"B": "1"}, "includeOnly": ["PATH"], "include": ["C"]
        }))
        .unwrap();
        let file: EnvPolicyFileShape = toml::from_str(
            "inherit = \"core\"\nignore_default_excludes = true\nexclude = [\"A*\"]\n\
             set = { B = \"1\" }\ninclude_only = [\"PATH\"]\ninclude = [\"C\"]\n",
        )
        .unwrap();
        assert_eq!(EnvPolicyShape::from(file), wire);
        // Each spelling refuses the other's.
        assert!(toml::from_str::<EnvPolicyFileShape>("includeOnly = []").is_err());
        assert!(
            serde_json::from_value::<EnvPolicyShape>(serde_json::json!({"include_only": []}))
                .is_err()
        );
    }
}
