//! The Python probe the sandbox suites share: a confined `python3 -c` that tries a list of
//! operations and prints, per operation, `name=OK` or `name=<errno name>`.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use super::Client;

/// The interpreter the probes run (Debian's, reachable by uid 65534 too).
pub const PY: &str = "/usr/bin/python3";

/// The probe's helpers: `t(name, f)` prints `name=OK`, or `name=<errno name>` when `f` raises
/// `OSError` or returns a negative int (a raw `libc` call through ctypes, errno in `get_errno`).
pub const PRELUDE: &str = r#"
import os, errno, socket, ctypes, sys, resource
libc = ctypes.CDLL(None, use_errno=True)
def t(name, f):
    try:
        r = f()
        if isinstance(r, int) and r < 0:
            print(f"{name}={errno.errorcode[ctypes.get_errno()]}", flush=True)
        else:
            print(f"{name}=OK", flush=True)
    except OSError as e:
        print(f"{name}={errno.errorcode.get(e.errno, e.errno)}", flush=True)
"#;

/// The `process/start` params for `policy`: a `sandbox` permission profile (PROTOCOL.md 6.3)
/// when it has `permissions`, else a `sandboxPolicy`.
pub fn policy_params(cwd: &Path, policy: &Value) -> Value {
    let key = if policy.get("permissions").is_some() {
        "sandbox"
    } else {
        "sandboxPolicy"
    };
    json!({"cwd": cwd.to_str().unwrap(), key: policy})
}

/// The `name=value` lines of a probe's output.
pub fn probe_results(out: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs the probe `code` (after [`PRELUDE`]) under `policy` (a value or a reference) in `cwd`, checks that it ran
/// confined (unless the policy is `danger-full-access`) and exited 0, and returns
/// name → "OK", an errno name, or what the probe printed as `name=value`.
pub async fn probe(
    c: &Client,
    id: &str,
    cwd: &Path,
    policy: impl Borrow<Value>,
    code: &str,
) -> BTreeMap<String, String> {
    let policy = policy.borrow();
    let script = format!("{PRELUDE}\n{code}");
    let r = c
        .start_with(id, &[PY, "-c", &script], policy_params(cwd, policy))
        .await
        .unwrap_or_else(|e| panic!("start {id}: {e}"));
    let confined = policy["type"] != "danger-full-access";
    assert_eq!(r["sandboxType"] == "linuxSeccomp", confined, "{r}");
    let ev = c.closed(id).await;
    assert_eq!(
        ev.exited.as_ref().unwrap()["exitCode"],
        0,
        "probe {id} failed: {}\n{}",
        String::from_utf8_lossy(&ev.stdout),
        String::from_utf8_lossy(&ev.stderr)
    );
    probe_results(&ev.stdout)
}
