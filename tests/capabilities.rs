//! Issue 20, item 1 ("decide from capabilities, not from the uid"), for capabilities: a
//! confined process ends up with no capability whatever the server holds, and a server that
//! holds capabilities but cannot empty the bounding set still spawns.
//!
//! Two servers that the uid-based rule got wrong, each made with a user namespace so that the
//! test runs the same as root and as uid 65534:
//! - a non-root server with ambient capabilities (`unshare --map-user=65534 --keep-caps`, as
//!   `setpriv --ambient-caps` or systemd's `AmbientCapabilities=` make one): its confined
//!   children kept every capability (`CapAmb`, `CapEff` full under `external-sandbox`);
//! - a root server without `CAP_SETPCAP` (a container dropping it): every confined spawn
//!   failed with `dropping capabilities: Operation not permitted`.

mod common;

use common::*;
use serde_json::{Value, json};
use tokio::process::Command;

/// The capability sets of a process, from `/proc/<pid>/status` text: (name, hex value).
fn cap_sets(status: &str) -> Vec<(String, u64)> {
    status
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.strip_prefix("Cap")?;
            Some((
                name.to_string(),
                u64::from_str_radix(value.trim(), 16).ok()?,
            ))
        })
        .collect()
}

/// A server started through `wrapper` (a command line ending where `stockade serve` goes).
async fn server_under(wrapper: &[&str]) -> Client {
    let mut cmd = Command::new(wrapper[0]);
    cmd.args(&wrapper[1..])
        .arg(bin())
        .arg("serve")
        .args(["--ceiling", "danger-full-access"]);
    let mut c = Client::stdio_cmd(cmd).await;
    c.initialize().await;
    c
}

/// The capability sets of `grep Cap /proc/self/status` run under `policy`.
async fn caps_under(c: &Client, id: &str, s: &Scratch, policy: Value) -> Vec<(String, u64)> {
    let ev = c
        .run_extra(
            id,
            &["grep", "^Cap", "/proc/self/status"],
            json!({"cwd": s.ws().to_str().unwrap(), "sandboxPolicy": policy,
                   "env": {"PATH": "/usr/bin:/bin"}}),
        )
        .await;
    let exited = ev.exited.clone().unwrap();
    assert_eq!(
        exited["exitCode"],
        0,
        "{id}: {exited} {}",
        String::from_utf8_lossy(&ev.stderr)
    );
    let sets = cap_sets(&String::from_utf8_lossy(&ev.stdout));
    assert_eq!(sets.len(), 5, "{id}: {sets:?}");
    sets
}

fn confined_policies() -> [(&'static str, Value); 3] {
    [
        ("read-only", json!({"type": "read-only"})),
        (
            "workspace-write",
            json!({"type": "workspace-write", "network_access": false}),
        ),
        ("external-sandbox", json!({"type": "external-sandbox"})),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_root_server_with_ambient_capabilities_confines_children_without_any() {
    let s = Scratch::new("capamb");
    // Mapped to uid 65534 inside, every capability of the namespace ambient.
    let c = server_under(&[
        "unshare",
        "--user",
        "--map-user=65534",
        "--map-group=65534",
        "--keep-caps",
    ])
    .await;
    // The setup really hands capabilities down: an unconfined child keeps them.
    let full = caps_under(&c, "full", &s, json!({"type": "danger-full-access"})).await;
    assert!(
        full.iter().any(|(n, v)| n == "Amb" && *v != 0),
        "the server holds no ambient capability, the test proves nothing: {full:?}"
    );
    for (name, policy) in confined_policies() {
        let sets = caps_under(&c, name, &s, policy).await;
        // Holding CAP_SETPCAP, the child empties its bounding set too.
        for (set, value) in &sets {
            assert_eq!(*value, 0, "{name}: Cap{set} left: {sets:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_server_without_setpcap_spawns_children_without_capabilities() {
    let s = Scratch::new("capnosetpcap");
    // uid 0 of a user namespace, CAP_SETPCAP out of the bounding set (so out of what the
    // server holds after its exec).
    let c = server_under(&[
        "unshare",
        "--user",
        "--map-root-user",
        "setpriv",
        "--bounding-set",
        "-setpcap",
    ])
    .await;
    let full = caps_under(&c, "full", &s, json!({"type": "danger-full-access"})).await;
    let eff = full.iter().find(|(n, _)| n == "Eff").unwrap().1;
    assert!(
        eff != 0 && eff & (1 << 8) == 0,
        "the server should hold capabilities but not CAP_SETPCAP: {full:?}"
    );
    for (name, policy) in confined_policies() {
        let sets = caps_under(&c, name, &s, policy).await;
        // The bounding set stays (it cannot be emptied without CAP_SETPCAP); no_new_privs
        // keeps exec from granting anything from it.
        for (set, value) in &sets {
            if set != "Bnd" {
                assert_eq!(*value, 0, "{name}: Cap{set} left: {sets:?}");
            }
        }
    }
}
