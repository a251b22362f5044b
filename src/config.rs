//! Server configuration: protocol timings and limits (CLI flags) and the config file
//! (`stockade serve --config FILE`, TOML; unknown keys are an error).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use std::path::PathBuf;

use crate::process::service::ProcessSettings;
use crate::protocol::process::{Limits, LimitsTable};
use crate::sandbox::denials::audit::AuditMode;
use crate::sandbox::policy::Level;
use crate::sandbox::prepare::SandboxSettings;

/// Default maximum incoming message size (64 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Runtime settings of `stockade serve`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Maximum incoming message size (`--max-message-bytes`).
    pub max_message_bytes: usize,
    /// How long a detached WebSocket session survives (`--session-grace-ms`).
    pub session_grace: Duration,
    /// How long to wait for output EOF after exit before killing the tree (`--close-grace-ms`).
    pub close_grace: Duration,
    /// Output retained per process for `process/read` (`--retain-output-bytes`).
    pub retain_output_bytes: usize,
    /// How long a closed process stays readable (`--retain-exited-ms`).
    pub retain_exited: Duration,
    /// Outgoing messages queued per connection before producers wait (back-pressure).
    pub outbox_capacity: usize,
    /// Operator guard: server variables matching these are never inherited by children.
    pub never_inherit: Vec<String>,
    /// Default policy, ceiling and degradation settings.
    pub sandbox: SandboxSettings,
    /// Limits applied when a request does not set them.
    pub limits_default: Limits,
    /// Largest limits a request may ask for (above: -32020).
    pub limits_max: Limits,
    /// Delegated cgroup v2 directory for per-process groups (`[limits] cgroup_root`).
    pub cgroup_root: Option<PathBuf>,
}

impl ServerConfig {
    /// The settings starting a process uses.
    pub fn process_settings(&self) -> ProcessSettings {
        ProcessSettings {
            sandbox: self.sandbox.clone(),
            limits_default: self.limits_default,
            limits_max: self.limits_max,
            never_inherit: self.never_inherit.clone(),
            retain_output_bytes: self.retain_output_bytes,
            close_grace: self.close_grace,
            retain_exited: self.retain_exited,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            session_grace: Duration::from_secs(30),
            close_grace: Duration::from_millis(2000),
            retain_output_bytes: 1024 * 1024,
            retain_exited: Duration::from_secs(30),
            outbox_capacity: 64,
            never_inherit: Vec::new(),
            sandbox: SandboxSettings::default(),
            limits_default: Limits::default(),
            limits_max: Limits::default(),
            cgroup_root: None,
        }
    }
}

/// The config file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[env]`.
    #[serde(default)]
    pub env: EnvSection,
    /// `[sandbox]`.
    #[serde(default)]
    pub sandbox: SandboxSection,
    /// `[limits]`.
    #[serde(default)]
    pub limits: LimitsSection,
}

/// `[limits]` of the config file: `default` applies to requests that do not set a limit,
/// `max` bounds what requests may ask for (above it: -32020, never silently clamped).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Defaults.
    #[serde(default)]
    pub default: LimitsTable,
    /// Maxima.
    #[serde(default)]
    pub max: LimitsTable,
    /// A cgroup v2 directory delegated to stockade: each process gets its own group in it
    /// (whole-tree memory and process limits, kill and usage). Unset: rlimits only.
    pub cgroup_root: Option<PathBuf>,
}

/// `[sandbox]` of the config file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    /// Policy used when a request carries none: a `sandboxPolicy` table (PROTOCOL.md 6.2) or a
    /// type name. Built-in: `{ type = "workspace-write" }` (network restricted).
    pub default_policy: Option<toml::Value>,
    /// Most permissive policy type a client may ask for. Built-in: `workspace-write`.
    pub ceiling: Option<String>,
    /// May clients ask for network access? Built-in: true.
    pub allow_network: Option<bool>,
    /// Run what cannot be fully enforced, reporting degradations. Built-in: false.
    pub allow_degraded: Option<bool>,
    /// Use at most this Landlock ABI (simulates older kernels).
    pub landlock_abi: Option<i32>,
    /// Make files with a hard link outside the writable roots read-only. Built-in: true.
    pub protect_hard_links: Option<bool>,
    /// Every path a request makes writable must lie inside one of these directories
    /// (resolved, symlinks followed); outside: -32020. Built-in: no bound.
    pub workspace_roots: Option<Vec<PathBuf>>,
    /// `/tmp` and the server's `$TMPDIR` stay writable roots outside `workspace_roots`.
    /// Built-in: true.
    pub allow_tmp_roots: Option<bool>,
    /// Allow writable roots that are the host (`/`, `/etc`, `/usr`, ..., `$HOME` itself).
    /// Built-in: false (-32020).
    pub allow_system_writable_roots: Option<bool>,
    /// Landlock audit records as a denial source: `auto` (when records already flow),
    /// `off`, or `enable` (turn the host's audit subsystem on at startup; host-wide).
    /// Built-in: `auto`.
    pub denial_audit: Option<String>,
}

impl SandboxSection {
    /// Applies the section over `settings`.
    pub fn apply(&self, settings: &mut SandboxSettings) -> Result<(), String> {
        if let Some(p) = &self.default_policy {
            settings.default_policy = parse_default_policy_at(
                serde_json::to_value(p).map_err(|e| format!("sandbox.default_policy: {e}"))?,
                "sandbox.default_policy",
            )?;
        }
        if let Some(c) = &self.ceiling {
            settings.ceiling = Level::parse(c).ok_or_else(|| {
                format!("sandbox.ceiling: unknown policy type {c:?} (read-only, workspace-write, external-sandbox, danger-full-access)")
            })?;
        }
        if let Some(n) = self.allow_network {
            settings.allow_network = n;
        }
        if let Some(d) = self.allow_degraded {
            settings.allow_degraded = d;
        }
        if let Some(a) = self.landlock_abi {
            settings.landlock_abi_cap = Some(a);
        }
        if let Some(h) = self.protect_hard_links {
            settings.protect_hard_links = h;
        }
        if let Some(roots) = &self.workspace_roots {
            for root in roots {
                settings
                    .workspace_roots
                    .push(workspace_root(root, "sandbox.workspace_roots")?);
            }
        }
        if let Some(t) = self.allow_tmp_roots {
            settings.allow_tmp_roots = t;
        }
        if let Some(a) = self.allow_system_writable_roots {
            settings.allow_system_writable_roots = a;
        }
        if let Some(m) = &self.denial_audit {
            settings.denial_audit = AuditMode::parse(m).ok_or_else(|| {
                format!("sandbox.denial_audit: unknown value {m:?} (auto, off, enable)")
            })?;
        }
        Ok(())
    }
}

/// Validates one workspace root: absolute, lexically normalised (it is resolved, symlinks
/// followed, each time a request is checked against it).
pub fn workspace_root(root: &Path, field: &str) -> Result<PathBuf, String> {
    if !root.is_absolute() {
        return Err(format!(
            "{field}: {} is not an absolute path",
            root.display()
        ));
    }
    Ok(crate::sandbox::policy::normalize(root))
}

/// Accepts a type name (`"read-only"`) or a 6.2 object for the default policy.
pub fn parse_default_policy_value(v: serde_json::Value) -> Result<serde_json::Value, String> {
    parse_default_policy_at(v, "default_policy")
}

/// [`parse_default_policy_value`] for the policy found at `root` (the name its errors give it).
fn parse_default_policy_at(v: serde_json::Value, root: &str) -> Result<serde_json::Value, String> {
    let v = match v {
        serde_json::Value::String(s) => serde_json::json!({ "type": s }),
        obj @ serde_json::Value::Object(_) => obj,
        other => {
            return Err(format!(
                "{root}: must be a type name or an object, got {other}"
            ));
        }
    };
    // Validate now (against a neutral cwd) so a typo fails at startup, not per request.
    validate_sandbox_policy(&v, root)?;
    Ok(v)
}

/// Checks a 6.2 policy found at `root` (unknown keys included), against a neutral cwd.
pub fn validate_sandbox_policy(v: &serde_json::Value, root: &str) -> Result<(), String> {
    crate::sandbox::policy::from_sandbox_policy_at(
        v,
        &crate::sandbox::policy::Context {
            cwd: std::path::Path::new("/"),
            tmpdir: None,
        },
        root,
    )
    .map(|_| ())
}

/// Parses `--default-policy`: a JSON object or a type name.
pub fn parse_default_policy_flag(s: &str) -> Result<serde_json::Value, String> {
    let v = if s.trim_start().starts_with('{') {
        serde_json::from_str(s).map_err(|e| format!("--default-policy: invalid JSON: {e}"))?
    } else {
        serde_json::Value::String(s.to_string())
    };
    parse_default_policy_at(v, "default_policy").map_err(|e| format!("--default-policy: {e}"))
}

/// `[env]` of the config file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnvSection {
    /// Server variables matching these patterns are never passed to children by inheritance,
    /// whatever a request asks (values the client sends itself are not affected).
    #[serde(default)]
    pub never_inherit: Vec<String>,
}

/// Errors reading the config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// The path.
        path: String,
        /// What is wrong, with the location.
        message: String,
    },
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// A TOML parse error as one line: where (`line L, column C`) and what, an unknown key named
/// with the likely intended one (see `protocol::strict`).
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = crate::protocol::strict::explain_serde_error("", e.message());
    match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!("line {line}, column {col}: {msg}")
        }
        None => msg,
    }
}

/// The byte offset of the key at the dotted `path` (`sandbox.default_policy.writeable_roots`;
/// `name[i]` steps into an array) in TOML `text`, or of the deepest part of it that exists.
fn toml_key_offset(text: &str, path: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut value: Option<&DeValue> = None;
    let mut table = root.get_ref();
    let mut found = None;
    for segment in path.split('.') {
        let (key, index) = match segment.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        if let Some(v) = value {
            match v {
                DeValue::Table(t) => table = t,
                _ => break,
            }
        }
        let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == key) else {
            break;
        };
        found = Some(k.span().start);
        let mut v = v.get_ref();
        if let Some(i) = index {
            match v {
                DeValue::Array(a) => match a.get(i) {
                    Some(item) => {
                        found = Some(item.span().start);
                        v = item.get_ref();
                    }
                    None => break,
                },
                _ => break,
            }
        }
        value = Some(v);
    }
    found
}

/// Prefixes a policy error (`<dotted path>: <what>`) about TOML `text` with the line of the key
/// it names.
pub fn with_toml_line(text: &str, error: &str) -> String {
    let path = error.split(": ").next().unwrap_or("");
    match toml_key_offset(text, path) {
        Some(offset) => format!("line {}: {error}", line_col(text, offset).0),
        None => error.to_string(),
    }
}

impl ConfigFile {
    /// Parses TOML text. Unknown keys anywhere, `default_policy` included, are an error naming
    /// the key, its line and the likely intended key.
    pub fn parse(text: &str, path: &str) -> Result<ConfigFile, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_string(),
            message,
        };
        let file: ConfigFile =
            toml::from_str(text).map_err(|e| parse_error(toml_error(text, &e)))?;
        if let Some(p) = &file.sandbox.default_policy {
            let v = serde_json::to_value(p).map_err(|e| parse_error(e.to_string()))?;
            parse_default_policy_at(v, "sandbox.default_policy")
                .map_err(|e| parse_error(with_toml_line(text, &e)))?;
        }
        Ok(file)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        ConfigFile::parse(&text, &p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_section_and_rejects_unknown_keys() {
        let c = ConfigFile::parse("[env]\nnever_inherit = [\"*KEY*\", \"AWS_*\"]\n", "t").unwrap();
        assert_eq!(c.env.never_inherit, vec!["*KEY*", "AWS_*"]);
        assert_eq!(ConfigFile::parse("", "t").unwrap(), ConfigFile::default());
        let e = ConfigFile::parse("[env]\nnever_inherti = []\n", "t").unwrap_err();
        assert_eq!(
            e.to_string(),
            "config file t: line 2, column 1: never_inherti: unknown field (did you mean never_inherit?)"
        );
        assert!(ConfigFile::parse("[nope]\n", "t").is_err());
    }

    #[test]
    fn path_bounds_parse() {
        let c = ConfigFile::parse(
            "[sandbox]\nworkspace_roots = [\"/srv/ws/\", \"/b/../builds\"]\nallow_tmp_roots = false\nallow_system_writable_roots = true\n",
            "t",
        )
        .unwrap();
        let mut settings = SandboxSettings::default();
        assert!(settings.allow_tmp_roots && !settings.allow_system_writable_roots);
        c.sandbox.apply(&mut settings).unwrap();
        assert_eq!(
            settings.workspace_roots,
            vec![PathBuf::from("/srv/ws"), PathBuf::from("/builds")]
        );
        assert!(!settings.allow_tmp_roots && settings.allow_system_writable_roots);
        let c = ConfigFile::parse("[sandbox]\nworkspace_roots = [\"ws\"]\n", "t").unwrap();
        let e = c
            .sandbox
            .apply(&mut SandboxSettings::default())
            .unwrap_err();
        assert!(
            e.contains("sandbox.workspace_roots") && e.contains("absolute"),
            "{e}"
        );
    }

    #[test]
    fn the_ci_runner_config_bounds_writes_to_workspace_roots() {
        let c = ConfigFile::parse(
            include_str!("../policies/server-ci-runner.toml"),
            "server-ci-runner.toml",
        )
        .unwrap();
        let mut settings = SandboxSettings::default();
        c.sandbox.apply(&mut settings).unwrap();
        assert!(!settings.workspace_roots.is_empty());
        assert!(settings.workspace_roots.iter().all(|r| r.is_absolute()));
        assert!(!settings.allow_system_writable_roots);
    }

    #[test]
    fn default_policy_keys_are_strict_with_their_line() {
        let text = "[sandbox]\nceiling = \"workspace-write\"\n\n[sandbox.default_policy]\ntype = \"workspace-write\"\nwriteable_roots = [\"/w\"]\n";
        let e = ConfigFile::parse(text, "c.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "config file c.toml: line 6: sandbox.default_policy.writeable_roots: unknown field (did you mean writable_roots?)"
        );
        let text = "[sandbox]\ndefault_policy = { type = \"read-only\", access = { type = \"restricted\", readable_root = [] } }\n";
        let e = ConfigFile::parse(text, "c.toml").unwrap_err();
        assert!(
            e.to_string().contains("line 2: sandbox.default_policy.access.readable_root: unknown field (did you mean readable_roots?)"),
            "{e}"
        );
        let ok = "[sandbox]\ndefault_policy = { type = \"workspace-write\", writable_roots = [\"/w\"], network_access = true }\n";
        ConfigFile::parse(ok, "c.toml").unwrap();
        let e = ConfigFile::parse("[sandbox]\ncieling = \"read-only\"\n", "c.toml").unwrap_err();
        assert!(
            e.to_string()
                .contains("line 2, column 1: cieling: unknown field (did you mean ceiling?)"),
            "{e}"
        );
        let e = parse_default_policy_flag("{\"type\": \"read-only\", \"netwrok_access\": true}")
            .unwrap_err();
        assert_eq!(
            e,
            "--default-policy: default_policy.netwrok_access: unknown field (did you mean network_access?)"
        );
    }

    #[test]
    fn example_configs_parse() {
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/policies")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml")
                && path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("server-")
            {
                let c = ConfigFile::load(&path).unwrap();
                let mut settings = SandboxSettings::default();
                c.sandbox.apply(&mut settings).unwrap();
            }
        }
    }
}
