//! The server: connection state machine, sessions and method routing.

pub mod connection;
pub mod hostinfo;
pub mod methods;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::ServerConfig;
use crate::env::ServerEnv;
use crate::fs::FsService;
use crate::process::cgroup::CgroupRoot;
use crate::process::service::ProcessService;
use crate::process::spawn::Spawner;
use crate::process::zygote::Zygote;
use crate::sandbox::mountns::NamespaceCache;
use crate::sandbox::policy::Level;
use crate::sandbox::prepare::{HostSupport, SeccompCache};
use crate::sandbox::probe;
use session::Sessions;

/// One serialized outgoing message: a JSON object without the `jsonrpc` field (the writer
/// adds it when the connection asked for it).
#[derive(Debug, Clone)]
pub struct OutMessage(pub String);

impl From<Value> for OutMessage {
    fn from(v: Value) -> Self {
        OutMessage(serde_json::to_string(&v).unwrap_or_else(|_| "{}".into()))
    }
}

/// Messages queued for one connection's writer.
pub type Outbox = mpsc::Sender<OutMessage>;

/// Shared server state: configuration, the spawner thread and the session table.
pub struct Server {
    /// Settings.
    pub config: ServerConfig,
    /// Starting processes (spawner, census, namespaces, cgroups); shared by all sessions.
    pub processes: ProcessService,
    /// All sessions (the only global mutable state).
    pub sessions: Arc<Sessions>,
    /// Host description for `initialize` and `environment/info`.
    pub host: hostinfo::HostInfo,
    /// The filesystem methods and their confined workers.
    pub fs: FsService,
}

impl Server {
    /// Builds a server around a started zygote (see [`crate::process::zygote`]).
    pub fn new(mut config: ServerConfig, zygote: Zygote) -> std::io::Result<Arc<Server>> {
        let host_support = HostSupport::measure(config.sandbox.landlock_abi_cap);
        let seccomp = SeccompCache::build();
        // Once, before the settings are shared: the ruleset keeping processes off our ports.
        config
            .sandbox
            .supervisor_ports
            .build(host_support.landlock_abi)?;
        let mut host = hostinfo::HostInfo::probe();
        host.sandbox_support.landlock_abi = host_support.landlock_abi;
        host.sandbox_support.seccomp = host_support.seccomp;
        host.sandbox_support.policies = [
            Level::ReadOnly,
            Level::WorkspaceWrite,
            Level::ExternalSandbox,
            Level::DangerFullAccess,
        ]
        .iter()
        .filter(|l| **l <= config.sandbox.ceiling)
        .map(|l| l.name().to_string())
        .collect();
        // SAFETY: geteuid has no preconditions.
        let is_root = unsafe { libc::geteuid() } == 0;
        let env = ServerEnv::capture();
        let fs = FsService::new(config.sandbox.clone(), host_support, env.vars().clone());
        let cgroup = match &config.cgroup_root {
            Some(dir) => Some(Arc::new(
                CgroupRoot::open(dir).map_err(std::io::Error::other)?,
            )),
            None => None,
        };
        let processes = ProcessService::new(
            config.process_settings(),
            env,
            Spawner::start(zygote)?,
            cgroup,
            host_support,
            seccomp,
            is_root,
            NamespaceCache::new(probe::setns_keeps_root()),
        );
        Ok(Arc::new(Server {
            fs,
            processes,
            config,
            sessions: Arc::new(Sessions::default()),
            host,
        }))
    }

    /// Kills every process of every session and waits (bounded) until their keepers are
    /// reaped. Used on SIGTERM and at the end of a stdio connection.
    pub async fn shutdown(&self) {
        for session in self.sessions.all() {
            session.kill_all(Duration::from_secs(5)).await;
        }
        // No process is left: the placeholders the kept namespaces relied on can go.
        self.processes.forget_namespaces();
    }
}
