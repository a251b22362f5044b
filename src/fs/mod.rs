//! The filesystem methods (PROTOCOL.md section 8), enforced like a process's file access.
//!
//! request → policy (either wire shape, or the server default; ceiling checked) → a worker
//! thread with a process's privileges under the policy: no capability, the policy's Landlock
//! domain ([`workers`]) → the operation ([`ops`]), which resolves every path component by
//! component ([`walk`]), never enters the server's own processes in `/proc` (`procfs`),
//! and refuses what the mount namespace would refuse a process ([`guard`]) → result.
//!
//! Results that carry a path use the form the request used (plain path or `file://` URI).

pub mod guard;
pub mod ops;
pub(crate) mod procfs;
pub mod walk;
pub mod workers;

use std::path::{Path, PathBuf};

use base64::Engine;
use nix::errno::Errno;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::paths::{PathForm, parse_wire_path, to_file_uri};
use crate::protocol::fs::{
    CopyParams, CreateDirectoryParams, FsPolicyParams, PathParams, RemoveParams, WriteFileParams,
};
use crate::protocol::{ErrorCode, RpcError};
use crate::sandbox::policy::{self, Filesystem, SandboxPolicy};
use crate::sandbox::prepare::{self, HostSupport, SandboxSettings};
use guard::Need;
use workers::FsWorkers;

/// Why a filesystem operation failed; mapped to the errors of PROTOCOL.md section 8.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The policy does not allow it (-32600 `fs/<read|write> is not permitted for path P`).
    #[error("fs/{} is not permitted for path {}", need.word(), path.display())]
    Denied {
        /// The right that was missing.
        need: Need,
        /// The path as the client named it (or the nested path inside a tree operation).
        path: PathBuf,
    },
    /// An OS error.
    #[error("{}", std::io::Error::from(*.0))]
    Io(Errno),
    /// Invalid input with a fixed message (-32600).
    #[error("{0}")]
    Invalid(String),
    /// Anything else (-32603).
    #[error("{0}")]
    Other(String),
}

impl From<Errno> for FsError {
    fn from(e: Errno) -> Self {
        FsError::Io(e)
    }
}

impl FsError {
    /// From a `std::io::Error` (OS errors keep their errno).
    pub fn from_io(e: std::io::Error) -> FsError {
        match e.raw_os_error() {
            Some(n) => FsError::Io(Errno::from_raw(n)),
            None => FsError::Other(e.to_string()),
        }
    }

    /// The JSON-RPC error: not found → -32004; invalid input or denied → -32600; other
    /// OS errors → -32603 with the OS text.
    pub fn into_rpc(self) -> RpcError {
        let code = match &self {
            FsError::Denied { .. } | FsError::Invalid(_) => ErrorCode::InvalidRequest,
            FsError::Io(Errno::ENOENT) => ErrorCode::NotFound,
            FsError::Io(Errno::EINVAL | Errno::EACCES | Errno::EPERM | Errno::EROFS) => {
                ErrorCode::InvalidRequest
            }
            FsError::Io(_) | FsError::Other(_) => ErrorCode::Internal,
        };
        RpcError::new(code, self.to_string())
    }
}

/// The filesystem side of the server: settings it needs and the worker cache.
pub struct FsService {
    workers: FsWorkers,
    /// The server's working directory (default `sandboxCwd`, and the default policy's cwd).
    cwd: PathBuf,
    /// The server's `TMPDIR` (the `tmpdir` root of policies resolved for fs calls).
    env: std::collections::BTreeMap<String, String>,
    settings: SandboxSettings,
    host: HostSupport,
}

/// A result ready to send: a JSON value, or JSON text built directly (large file reads).
pub enum FsAnswer {
    /// A value.
    Value(Value),
    /// The result object as JSON text.
    Raw(String),
}

/// Spare capacity left in a raw result for the response envelope around it.
pub const RAW_HEADROOM: usize = 128;

fn params<T: DeserializeOwned>(v: Value) -> Result<T, RpcError> {
    crate::protocol::envelope::parse_params(v)
}

fn wire_path(s: &str, field: &str) -> Result<(PathBuf, PathForm), RpcError> {
    parse_wire_path(s)
        .map_err(|e| RpcError::invalid_params(format!("invalid params: {field}: {e}")))
}

impl FsService {
    /// A service for a server with these settings.
    pub fn new(
        settings: SandboxSettings,
        host: HostSupport,
        env: std::collections::BTreeMap<String, String>,
    ) -> FsService {
        FsService {
            workers: FsWorkers::new(16),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            env,
            settings,
            host,
        }
    }

    /// The policy of a request: its own (either shape) or the server default, resolved
    /// against `sandboxCwd` (default: the server's cwd); then the operator's limits and
    /// what the host can enforce.
    fn policy(&self, p: &FsPolicyParams) -> Result<SandboxPolicy, RpcError> {
        let cwd = match &p.sandbox_cwd {
            Some(c) => wire_path(c, "sandboxCwd")?.0,
            None => self.cwd.clone(),
        };
        let requested = policy::from_request(
            p.sandbox_policy.as_ref(),
            p.sandbox.as_ref(),
            &cwd,
            &self.env,
        )
        .map_err(|e| RpcError::invalid_params(format!("invalid params: {e}")))?;
        let mut policy = match requested {
            Some(p) => p,
            None => policy::from_sandbox_policy(
                &self.settings.default_policy,
                &policy::Context {
                    cwd: &cwd,
                    tmpdir: self.env.get("TMPDIR").map(String::as_str),
                },
            )
            .map_err(|e| RpcError::internal(format!("server default policy: {e}")))?,
        };
        prepare::bound_policy(&mut policy, &self.settings, true)?;
        if matches!(policy.filesystem, Filesystem::Restricted(_))
            && let Some(gap) = prepare::filesystem_gap(self.host.landlock_abi)
            && !self.settings.allow_degraded
        {
            return Err(prepare::unenforceable(&policy, &[gap]).into());
        }
        Ok(policy)
    }

    async fn run<T, F>(&self, policy: &SandboxPolicy, op: F) -> Result<T, RpcError>
    where
        T: Send + 'static,
        F: FnOnce(&guard::Guard) -> Result<T, FsError> + Send + 'static,
    {
        self.workers
            .run(policy, self.host.landlock_abi, op)
            .await
            .map_err(|e| RpcError::internal(format!("filesystem worker: {e}")))?
            .map_err(FsError::into_rpc)
    }

    /// Handles one `fs/*` method. `None`: not a filesystem method this server implements.
    pub async fn handle(&self, method: &str, v: Value) -> Option<Result<FsAnswer, RpcError>> {
        use crate::metrics::{FsMethod, FsResult};
        let (counted, answer) = match method {
            "fs/readFile" => (
                FsMethod::ReadFile,
                self.read_file(v).await.map(FsAnswer::Raw),
            ),
            "fs/writeFile" => (
                FsMethod::WriteFile,
                self.write_file(v).await.map(FsAnswer::Value),
            ),
            "fs/createDirectory" => (
                FsMethod::CreateDirectory,
                self.create_directory(v).await.map(FsAnswer::Value),
            ),
            "fs/getMetadata" => (
                FsMethod::GetMetadata,
                self.path_method(v, PathOp::Metadata).await,
            ),
            "fs/readDirectory" => (
                FsMethod::ReadDirectory,
                self.path_method(v, PathOp::ReadDirectory).await,
            ),
            "fs/canonicalize" => (
                FsMethod::Canonicalize,
                self.path_method(v, PathOp::Canonicalize).await,
            ),
            "fs/remove" => (FsMethod::Remove, self.remove(v).await.map(FsAnswer::Value)),
            "fs/copy" => (FsMethod::Copy, self.copy(v).await.map(FsAnswer::Value)),
            _ => return None,
        };
        let result = match &answer {
            Ok(_) => FsResult::Ok,
            Err(e) => FsResult::from_error_code(e.code),
        };
        crate::metrics::fs_call(counted, result);
        Some(answer)
    }

    async fn read_file(&self, v: Value) -> Result<String, RpcError> {
        let p: PathParams = params(v)?;
        let (path, _) = wire_path(&p.path, "path")?;
        let policy = self.policy(&p.policy)?;
        self.run(&policy, move |g| ops::read_file(g, &path, RAW_HEADROOM))
            .await
    }

    async fn write_file(&self, v: Value) -> Result<Value, RpcError> {
        let p: WriteFileParams = params(v)?;
        let (path, _) = wire_path(&p.path, "path")?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(p.data_base64.as_bytes())
            .map_err(|e| {
                RpcError::invalid_request(format!(
                    "fs/writeFile requires valid base64 dataBase64: {e}"
                ))
            })?;
        let policy = self.policy(&p.policy)?;
        self.run(&policy, move |g| ops::write_file(g, &path, &data))
            .await?;
        Ok(json!({}))
    }

    async fn create_directory(&self, v: Value) -> Result<Value, RpcError> {
        let p: CreateDirectoryParams = params(v)?;
        let (path, _) = wire_path(&p.path, "path")?;
        let policy = self.policy(&p.policy)?;
        let recursive = p.recursive;
        self.run(&policy, move |g| ops::create_directory(g, &path, recursive))
            .await?;
        Ok(json!({}))
    }

    async fn remove(&self, v: Value) -> Result<Value, RpcError> {
        let p: RemoveParams = params(v)?;
        let (path, _) = wire_path(&p.path, "path")?;
        let policy = self.policy(&p.policy)?;
        let (recursive, force) = (p.recursive, p.force);
        self.run(&policy, move |g| ops::remove(g, &path, recursive, force))
            .await?;
        Ok(json!({}))
    }

    async fn copy(&self, v: Value) -> Result<Value, RpcError> {
        let p: CopyParams = params(v)?;
        let (from, _) = wire_path(&p.source_path, "sourcePath")?;
        let (to, _) = wire_path(&p.destination_path, "destinationPath")?;
        let policy = self.policy(&p.policy)?;
        let recursive = p.recursive;
        self.run(&policy, move |g| ops::copy(g, &from, &to, recursive))
            .await?;
        Ok(json!({}))
    }

    async fn path_method(&self, v: Value, op: PathOp) -> Result<FsAnswer, RpcError> {
        let p: PathParams = params(v)?;
        let (path, form) = wire_path(&p.path, "path")?;
        let policy = self.policy(&p.policy)?;
        let value = match op {
            PathOp::Metadata => {
                let m = self
                    .run(&policy, move |g| ops::get_metadata(g, &path))
                    .await?;
                serde_json::to_value(m).map_err(|e| RpcError::internal(e.to_string()))?
            }
            PathOp::ReadDirectory => {
                let entries = self
                    .run(&policy, move |g| ops::read_directory(g, &path))
                    .await?;
                json!({ "entries": entries })
            }
            PathOp::Canonicalize => {
                let real = self
                    .run(&policy, move |g| ops::canonicalize(g, &path))
                    .await?;
                json!({ "path": in_form(&real, form) })
            }
        };
        Ok(FsAnswer::Value(value))
    }
}

#[derive(Debug, Clone, Copy)]
enum PathOp {
    Metadata,
    ReadDirectory,
    Canonicalize,
}

/// A path in the form the request used.
fn in_form(path: &Path, form: PathForm) -> String {
    match form {
        PathForm::Uri => to_file_uri(path),
        PathForm::Plain => path.to_string_lossy().into_owned(),
    }
}
