//! The host description returned by `initialize` and `environment/info`.

use std::path::PathBuf;

use crate::paths::to_file_uri;
use crate::protocol::handshake::{DenialAuditSupport, EnvironmentInfo, SandboxSupport, ShellInfo};
use crate::sandbox::probe;

/// Facts about the executor host, measured once at startup.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// `environmentInfo`.
    pub environment: EnvironmentInfo,
    /// `stockade.sandboxSupport`.
    pub sandbox_support: SandboxSupport,
}

impl HostInfo {
    /// Measures the host.
    pub fn probe() -> HostInfo {
        let shell_path = std::env::var("SHELL")
            .ok()
            .filter(|s| s.starts_with('/'))
            .unwrap_or_else(|| "/bin/sh".to_string());
        let shell_name = shell_path.rsplit('/').next().unwrap_or("sh").to_string();
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        HostInfo {
            environment: EnvironmentInfo {
                shell: ShellInfo {
                    name: shell_name,
                    path: shell_path,
                },
                cwd: to_file_uri(&cwd),
                user_home_dir: to_file_uri(&home),
                temp_dir: to_file_uri(&std::env::temp_dir()),
                platform_os: "linux".into(),
                executor_version: format!("stockade {}", env!("CARGO_PKG_VERSION")),
                capabilities: Default::default(),
            },
            sandbox_support: SandboxSupport {
                landlock_abi: probe::landlock_abi(),
                seccomp: true,
                user_namespaces: probe::user_namespaces(),
                mount_namespaces: probe::probes().mount_namespace_mode.name().into(),
                probes: serde_json::to_value(probe::probes()).unwrap_or_default(),
                policies: vec!["danger-full-access".into()],
                denial_audit: denial_audit_support(),
            },
        }
    }
}

/// The Landlock audit source as this process's startup decided it.
pub fn denial_audit_support() -> DenialAuditSupport {
    let st = crate::sandbox::denials::audit::state();
    DenialAuditSupport {
        mode: st.mode.name().into(),
        active: st.active,
        reason: st.reason,
        fix: st.fix,
        note: st.note,
    }
}
