//! From the wire shapes of a policy (`protocol::policy`: 6.2 `sandboxPolicy`, 6.3 `sandbox`)
//! to the one model of [`super::policy`]: the defaults of absent fields, the context a policy
//! is resolved in (cwd, workspace roots, `$TMPDIR`), the protected names inside writable roots.
//! Parsing (types, unknown keys, the field an error names) is serde's, in `protocol::policy`;
//! what is left here are the errors a type cannot express (a relative path, a bad URI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::policy::{
    Access, Context, Filesystem, FsEntry, Level, PLATFORM_DEFAULTS, PROTECTED_EVEN_IF_MISSING,
    PROTECTED_NAMES, PolicyError, SandboxPolicy, entry, normalize, winning_entries,
};
use crate::paths::parse_wire_path;
use crate::protocol::policy::{
    EntryAccess, EntryPath, FileSystemEntry, FileSystemPermissions, Permissions, ReadAccess,
    SandboxPolicyShape, SandboxShape, SpecialPath, parse_shape,
};

/// The paths of a list of absolute paths or `file://` URIs at `field` (absent: none).
fn wire_paths(list: Option<Vec<String>>, field: &str) -> Result<Vec<PathBuf>, PolicyError> {
    list.unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            parse_wire_path(s)
                .map(|(p, _)| normalize(&p))
                .map_err(|e| format!("{field}[{i}]: {e}"))
        })
        .collect()
}

/// Read entries of a 6.2 read access object (`access` / `read_only_access`, at `field`).
fn read_access(
    access: Option<ReadAccess>,
    ctx: &Context,
    field: &str,
) -> Result<Vec<FsEntry>, PolicyError> {
    match access {
        None | Some(ReadAccess::FullAccess {}) => {
            Ok(vec![entry(Path::new("/"), Access::Read, "root")])
        }
        Some(ReadAccess::Restricted {
            readable_roots,
            include_platform_defaults,
        }) => {
            let mut out: Vec<FsEntry> =
                wire_paths(readable_roots, &format!("{field}.readable_roots"))?
                    .iter()
                    .map(|p| entry(p, Access::Read, "readable_roots"))
                    .collect();
            out.push(entry(ctx.cwd, Access::Read, "cwd"));
            if include_platform_defaults.unwrap_or(true) {
                for p in PLATFORM_DEFAULTS {
                    let mut e = entry(Path::new(p), Access::Read, "platform defaults");
                    e.skip_if_missing = true;
                    out.push(e);
                }
            }
            Ok(out)
        }
    }
}

/// `read` entries for the protected names inside a writable root, including a `gitdir:`
/// target when `.git` is a file. `.git` only when it exists; `.agents` and `.codex` always.
fn protected_inside(root: &Path) -> Vec<FsEntry> {
    let mut out = Vec::new();
    for name in PROTECTED_NAMES {
        let p = root.join(name);
        if !PROTECTED_EVEN_IF_MISSING.contains(&name) && std::fs::symlink_metadata(&p).is_err() {
            continue;
        }
        out.push(entry(&p, Access::Read, "protected path"));
        if name == ".git"
            && std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file())
            && let Ok(text) = std::fs::read_to_string(&p)
            && let Some(dir) = text.lines().find_map(|l| l.strip_prefix("gitdir:"))
        {
            let dir = Path::new(dir.trim());
            let dir = if dir.is_absolute() {
                dir.to_path_buf()
            } else {
                root.join(dir)
            };
            out.push(entry(&dir, Access::Read, "protected gitdir"));
        }
    }
    out
}

/// Converts a `sandboxPolicy` (6.2).
pub fn from_sandbox_policy(v: &Value, ctx: &Context) -> Result<SandboxPolicy, PolicyError> {
    from_sandbox_policy_at(v, ctx, "sandboxPolicy")
}

/// Converts a 6.2 policy found at `root` (the name errors give it: `sandboxPolicy`,
/// `sandbox.default_policy`, ...). Unknown keys are refused (see `protocol::strict`).
pub fn from_sandbox_policy_at(
    v: &Value,
    ctx: &Context,
    root: &str,
) -> Result<SandboxPolicy, PolicyError> {
    resolve_sandbox_policy(parse_shape(v, root)?, ctx, root)
}

/// The model of a 6.2 shape found at `root`.
pub fn resolve_sandbox_policy(
    shape: SandboxPolicyShape,
    ctx: &Context,
    root: &str,
) -> Result<SandboxPolicy, PolicyError> {
    let base = |name: &str, level| SandboxPolicy {
        name: name.to_string(),
        level,
        filesystem: Filesystem::Unrestricted,
        network: false,
        hardening: true,
        notes: Vec::new(),
    };
    match shape {
        SandboxPolicyShape::DangerFullAccess {} => Ok(SandboxPolicy::full_access()),
        SandboxPolicyShape::ReadOnly {
            access,
            network_access,
        } => {
            let mut p = base("read-only", Level::ReadOnly);
            let entries = read_access(access, ctx, &format!("{root}.access"))?;
            p.filesystem = Filesystem::Restricted(winning_entries(entries));
            p.network = network_access.unwrap_or(false);
            Ok(p)
        }
        SandboxPolicyShape::WorkspaceWrite {
            writable_roots,
            read_only_access,
            network_access,
            exclude_tmpdir_env_var,
            exclude_slash_tmp,
        } => {
            let mut p = base("workspace-write", Level::WorkspaceWrite);
            let mut entries =
                read_access(read_only_access, ctx, &format!("{root}.read_only_access"))?;
            let mut roots = vec![normalize(ctx.cwd)];
            roots.extend(wire_paths(
                writable_roots,
                &format!("{root}.writable_roots"),
            )?);
            if !exclude_slash_tmp.unwrap_or(false) {
                roots.push(PathBuf::from("/tmp"));
            }
            if !exclude_tmpdir_env_var.unwrap_or(false)
                && let Some(t) = ctx.tmpdir.filter(|t| t.starts_with('/'))
            {
                roots.push(normalize(Path::new(t)));
            }
            for root in &roots {
                entries.push(entry(root, Access::Write, "writable root"));
                entries.extend(protected_inside(root));
            }
            p.filesystem = Filesystem::Restricted(winning_entries(entries));
            p.network = network_access.unwrap_or(false);
            Ok(p)
        }
        SandboxPolicyShape::ExternalSandbox { network_access } => {
            let mut p = base("external-sandbox", Level::ExternalSandbox);
            p.network = network_access.is_some_and(|n| n.enabled());
            Ok(p)
        }
    }
}

/// Converts a `sandbox` object (6.3). `process_cwd` is the process's cwd (the default of
/// `sandbox.cwd`).
pub fn from_permission_profile(
    v: &Value,
    process_cwd: &Path,
    tmpdir: Option<&str>,
) -> Result<SandboxPolicy, PolicyError> {
    resolve_permission_profile(parse_shape(v, "sandbox")?, process_cwd, tmpdir)
}

/// The model of a 6.3 shape.
pub fn resolve_permission_profile(
    shape: SandboxShape,
    process_cwd: &Path,
    tmpdir: Option<&str>,
) -> Result<SandboxPolicy, PolicyError> {
    let (context_cwd, context_roots) = match shape.policy_context {
        Some(c) => (c.cwd, c.workspace_roots),
        None => (None, None),
    };
    // Codex resolves `tmpdir` entries against these when given, else the child's `$TMPDIR`.
    let tmpdirs: Vec<PathBuf> = match shape.temporary_directories {
        Some(dirs) => wire_paths(Some(dirs), "sandbox.temporaryDirectories")?,
        None => tmpdir
            .filter(|t| t.starts_with('/'))
            .map(|t| vec![PathBuf::from(t)])
            .unwrap_or_default(),
    };
    let cwd = match shape.cwd.or(context_cwd) {
        None => normalize(process_cwd),
        Some(s) => parse_wire_path(&s)
            .map(|(p, _)| normalize(&p))
            .map_err(|e| format!("sandbox.cwd: {e}"))?,
    };
    let roots = match (shape.workspace_roots, context_roots) {
        (Some(r), _) => wire_paths(Some(r), "sandbox.workspaceRoots")?,
        (None, Some(r)) => wire_paths(Some(r), "sandbox.policyContext.workspaceRoots")?,
        (None, None) => vec![cwd.clone()],
    };
    match shape.permissions {
        Permissions::Disabled {} => Ok(SandboxPolicy::full_access()),
        Permissions::External { network } => Ok(SandboxPolicy {
            name: "external".into(),
            level: Level::ExternalSandbox,
            filesystem: Filesystem::Unrestricted,
            network: network.is_some_and(|n| n.enabled()),
            hardening: true,
            notes: Vec::new(),
        }),
        Permissions::Managed {
            file_system,
            network,
        } => {
            let mut notes = Vec::new();
            let filesystem = match file_system {
                FileSystemPermissions::Unrestricted { .. } => Filesystem::Unrestricted,
                FileSystemPermissions::Restricted { entries: items, .. } => {
                    let mut entries = Vec::new();
                    for (i, item) in items.unwrap_or_default().into_iter().enumerate() {
                        let ctxname = format!("sandbox.permissions.file_system.entries[{i}]");
                        entries.extend(managed_entry(
                            item, &ctxname, &cwd, &roots, &tmpdirs, &mut notes,
                        )?);
                    }
                    let mut entries = winning_entries(entries);
                    protect_missing_names(&mut entries);
                    Filesystem::Restricted(entries)
                }
            };
            let level = match &filesystem {
                Filesystem::Unrestricted => Level::ExternalSandbox,
                Filesystem::Restricted(e) if e.iter().any(|e| e.access == Access::Write) => {
                    Level::WorkspaceWrite
                }
                Filesystem::Restricted(_) => Level::ReadOnly,
            };
            Ok(SandboxPolicy {
                name: "managed".into(),
                level,
                filesystem,
                network: network.is_some_and(|n| n.enabled()),
                hardening: true,
                notes,
            })
        }
    }
}

/// `.agents` and `.codex` at the top of every writable root of a 6.3 profile are protected
/// as in 6.2, also when missing: a `read` entry the profile has for them loses its
/// `missing_path_behavior: "skip"` (Codex clients send it), and one is added when the
/// profile has none. A profile that gives such a path `write` or `none` keeps its choice.
fn protect_missing_names(entries: &mut Vec<FsEntry>) {
    let roots: Vec<PathBuf> = entries
        .iter()
        .filter(|e| e.access == Access::Write)
        .map(|e| e.path.clone())
        .collect();
    for root in roots {
        for name in PROTECTED_EVEN_IF_MISSING {
            let p = root.join(name);
            match entries.iter_mut().find(|e| e.path == p) {
                Some(e) if e.access == Access::Read => e.skip_if_missing = false,
                Some(_) => {}
                None => entries.push(entry(&p, Access::Read, "protected path")),
            }
        }
    }
}

/// The entries of one 6.3 filesystem entry (at `ctxname`): one per base path it means.
fn managed_entry(
    item: FileSystemEntry,
    ctxname: &str,
    cwd: &Path,
    roots: &[PathBuf],
    tmpdirs: &[PathBuf],
    notes: &mut Vec<String>,
) -> Result<Vec<FsEntry>, PolicyError> {
    let access = match item.access {
        EntryAccess::Read => Access::Read,
        EntryAccess::Write => Access::Write,
        EntryAccess::None | EntryAccess::Deny => Access::None,
    };
    let skip = item.missing_path_behavior.as_deref() == Some("skip");
    let bases: Vec<PathBuf> = match item.path {
        EntryPath::Path { path } => vec![
            parse_wire_path(&path)
                .map(|(p, _)| p)
                .map_err(|e| format!("{ctxname}.path.path: {e}"))?,
        ],
        EntryPath::Special {
            value: SpecialPath { kind, subpath },
        } => {
            let mut bases: Vec<PathBuf> = match kind.as_str() {
                "root" => vec![PathBuf::from("/")],
                "minimal" => PLATFORM_DEFAULTS.iter().map(PathBuf::from).collect(),
                "current_working_directory" => vec![cwd.to_path_buf()],
                "project_roots" => roots.to_vec(),
                "tmpdir" => tmpdirs.to_vec(),
                "slash_tmp" => vec![PathBuf::from("/tmp")],
                other => {
                    // Ignoring an entry can only remove access, never add it.
                    notes.push(format!(
                        "{ctxname}: unknown special path kind {other:?} ignored"
                    ));
                    Vec::new()
                }
            };
            if let Some(sub) = subpath {
                if Path::new(&sub).is_absolute() {
                    return Err(format!("{ctxname}.path.value.subpath: must be relative"));
                }
                bases = bases.into_iter().map(|b| b.join(&sub)).collect();
            }
            if kind == "minimal" {
                // Platform directories that do not exist on this host are simply absent.
                return Ok(bases
                    .iter()
                    .map(|b| FsEntry {
                        skip_if_missing: true,
                        ..entry(b, access, "managed entry")
                    })
                    .collect());
            }
            bases
        }
    };
    Ok(bases
        .iter()
        .map(|b| FsEntry {
            skip_if_missing: skip,
            ..entry(b, access, "managed entry")
        })
        .collect())
}

/// Converts whichever shape a request carries. `None` means "no policy given".
pub fn from_request(
    sandbox_policy: Option<&Value>,
    sandbox: Option<&Value>,
    cwd: &Path,
    env: &BTreeMap<String, String>,
) -> Result<Option<SandboxPolicy>, PolicyError> {
    let sandbox_policy = sandbox_policy.filter(|v| !v.is_null());
    let sandbox = sandbox.filter(|v| !v.is_null());
    let tmpdir = env.get("TMPDIR").map(String::as_str);
    match (sandbox_policy, sandbox) {
        (Some(_), Some(_)) => Err("send either sandboxPolicy or sandbox, not both".into()),
        (None, None) => Ok(None),
        (Some(p), None) => from_sandbox_policy(p, &Context { cwd, tmpdir }).map(Some),
        (None, Some(s)) => from_permission_profile(s, cwd, tmpdir).map(Some),
    }
}
