//! `stockade doctor`: what this host can enforce, measured with the kernel itself.

use serde_json::{Value, json};

use crate::sandbox::denials::audit::{self, AuditMode};
use crate::sandbox::landlock::{Handled, NEWEST_KNOWN_ABI, names};
use crate::sandbox::policy::{self, Context};
use crate::sandbox::prepare::{self, HostSupport, SandboxSettings, SeccompCache};
use crate::sandbox::probe;

/// The Landlock rights each known ABI adds to the one before (every ruleset handles all the
/// rights of the ABI in use in each category it handles).
fn rights_per_abi() -> Value {
    (1..=NEWEST_KNOWN_ABI)
        .map(|n| {
            let (now, before) = (Handled::all(n), Handled::all(n - 1));
            json!({
                "abi": n,
                "fs": names((now.fs & !before.fs).iter()),
                "net": names((now.net & !before.net).iter()),
                "scopes": names((now.scopes & !before.scopes).iter()),
            })
        })
        .collect()
}

/// Measures the host and checks every built-in policy; `cap` simulates an older Landlock ABI.
pub fn report(cap: Option<i32>, denial_audit: AuditMode) -> Value {
    let abi = probe::landlock_abi();
    let host = HostSupport::measure(cap);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let settings = SandboxSettings {
        ceiling: policy::Level::DangerFullAccess,
        ..SandboxSettings::default()
    };
    let cache = SeccompCache::build();
    // A workspace like a real one: a git checkout, whose `.git` is a read-only carve-out
    // (a directory without one would not show that carve-outs are impossible here).
    let scratch = std::env::temp_dir().join(format!("stockade-doctor-{}", std::process::id()));
    let _ = std::fs::create_dir_all(scratch.join(".git"));
    let cwd = scratch.clone();
    let mut policies = serde_json::Map::new();
    for ty in [
        "read-only",
        "workspace-write",
        "external-sandbox",
        "danger-full-access",
    ] {
        let p = policy::from_sandbox_policy(
            &json!({"type": ty}),
            &Context {
                cwd: &cwd,
                tmpdir: None,
            },
        );
        let verdict = match p {
            Ok(p) => {
                match prepare::prepare(&p, host, &settings, &cache, &Default::default(), &[]) {
                    Ok(prep) => serde_json::to_value(prep.report).unwrap_or_default(),
                    Err(e) => json!({"enforcement": "refused", "error": e.to_string()}),
                }
            }
            Err(e) => json!({"enforcement": "refused", "error": e}),
        };
        policies.insert(ty.to_string(), verdict);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let probes = probe::probes();
    // The server's own self-test, without changing the host (`enable` says what it would do).
    let audit = match audit::prepare(denial_audit, host.landlock_abi, false) {
        Ok((state, _)) => state,
        Err(e) => audit::AuditState {
            mode: denial_audit,
            active: false,
            reason: Some(e),
            fix: None,
            note: None,
        },
    };
    json!({
        "kernel": kernel,
        "landlockAbi": host.landlock_abi,
        "landlockAbiKernel": abi,
        "landlockNewestKnownAbi": NEWEST_KNOWN_ABI,
        "landlockRightsAddedPerAbi": rights_per_abi(),
        "seccomp": host.seccomp,
        "userNamespaces": host.user_namespaces,
        "mountNamespaces": host.mount_namespaces.name(),
        "probes": serde_json::to_value(probes).unwrap_or_default(),
        "runningAsRoot": root,
        "sharedMountNamespaces": probe::setns_keeps_root(),
        "inotifyMaxUserWatches": probe::inotify_max_user_watches(),
        "policies": policies,
        "denialAudit": {
            "mode": audit.mode.name(),
            "active": audit.active,
            "reason": audit.reason,
            "fix": audit.fix,
            "note": audit.note,
        },
    })
}

/// Renders the report for people.
pub fn human(r: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "kernel            {}\n",
        r["kernel"].as_str().unwrap_or("?")
    ));
    out.push_str(&format!(
        "landlock ABI      {} (kernel offers {}){}\n",
        r["landlockAbi"],
        r["landlockAbiKernel"],
        match r["landlockAbi"].as_i64().unwrap_or(0) {
            0 => "  - no filesystem confinement possible",
            1 | 2 => "  - truncate not controllable: read-only paths cannot be enforced",
            3..=5 => "  - no signal/abstract-socket scopes: hardening degraded",
            _ => "",
        }
    ));
    if r["landlockAbiKernel"].as_i64().unwrap_or(0)
        > r["landlockNewestKnownAbi"].as_i64().unwrap_or(0)
    {
        out.push_str(&format!(
            "                  the kernel's ABI is newer than this build knows (up to {}): rights it added are not handled\n",
            r["landlockNewestKnownAbi"]
        ));
    }
    out.push_str("landlock rights   handled per ABI, each adding to the one before (> in use):\n");
    let in_use = r["landlockAbi"].as_i64().unwrap_or(0);
    for added in r["landlockRightsAddedPerAbi"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let n = added["abi"].as_i64().unwrap_or(0);
        let mut parts = Vec::new();
        for cat in ["fs", "net", "scopes"] {
            let list: Vec<&str> = added[cat]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !list.is_empty() {
                parts.push(format!("{cat}: {}", list.join(", ")));
            }
        }
        let mark = if n == in_use { ">" } else { " " };
        let what = if parts.is_empty() {
            "(no new rights)".to_string()
        } else {
            parts.join("; ")
        };
        out.push_str(&format!("  {mark} ABI {n:<3} {what}\n"));
    }
    out.push_str(&format!("seccomp           {}\n", r["seccomp"]));
    out.push_str(&format!("user namespaces   {}\n", r["userNamespaces"]));
    out.push_str(&format!(
        "mount namespaces  {}\n",
        r["mountNamespaces"].as_str().unwrap_or("?")
    ));
    out.push_str("probes            each tried for real at startup:\n");
    for (name, p) in r["probes"].as_object().into_iter().flatten() {
        if !p.is_object() {
            continue;
        }
        if p["available"] == true {
            out.push_str(&format!("  {name:<26} available\n"));
        } else {
            out.push_str(&format!(
                "  {name:<26} UNAVAILABLE: {}\n  {:<26} fix: {}\n",
                p["error"].as_str().unwrap_or("?"),
                "",
                p["fix"].as_str().unwrap_or("?")
            ));
        }
    }
    out.push_str(&format!("running as root   {}\n", r["runningAsRoot"]));
    out.push_str(&format!(
        "shared mount ns   {}{}\n",
        r["sharedMountNamespaces"],
        if r["sharedMountNamespaces"] == true {
            ""
        } else {
            "  - every process with carve-outs builds its own mount namespace (slower)"
        }
    ));
    out.push_str(&format!(
        "inotify watches   {}  - the hard-link census needs one per directory of the writable roots; beyond that it walks them on every spawn\n\n",
        r["inotifyMaxUserWatches"]
    ));
    let audit = &r["denialAudit"];
    if audit["active"] == true {
        out.push_str(&format!(
            "denial audit      active (denial_audit = {}): Landlock audit records list refused accesses\n",
            audit["mode"]
        ));
    } else {
        out.push_str(&format!(
            "denial audit      inactive (denial_audit = {}): {}\n",
            audit["mode"],
            audit["reason"].as_str().unwrap_or("?")
        ));
        if let Some(fix) = audit["fix"].as_str() {
            out.push_str(&format!("                  fix: {fix}\n"));
        }
    }
    if let Some(note) = audit["note"].as_str() {
        out.push_str(&format!("                  note: {note}\n"));
    }
    out.push('\n');
    for (name, v) in r["policies"].as_object().into_iter().flatten() {
        let enforcement = v["enforcement"].as_str().unwrap_or("?");
        out.push_str(&format!("{name:<20} {enforcement}"));
        if let Some(e) = v["error"].as_str() {
            out.push_str(&format!(": {e}"));
        }
        if let Some(d) = v["degradations"].as_array().filter(|d| !d.is_empty()) {
            out.push_str(&format!(" ({} degradations)", d.len()));
        }
        out.push('\n');
    }
    out
}
