//! What the sandbox refused, exactly (issue 16): the `denials` list, its total, completeness
//! and sources on `process/exited` and `process/read`, from each evidence source this host
//! offers. `.ci/run` runs this file as root and again as uid 65534.

mod common;

use common::*;
use serde_json::{Value, json};

/// workspace-write with only the workspace writable (no /tmp, no $TMPDIR), network off.
fn ws_policy() -> Value {
    json!({"type": "workspace-write", "network_access": false,
           "exclude_slash_tmp": true, "exclude_tmpdir_env_var": true})
}

/// Runs `script` under `sh -c` confined to the workspace; returns the `process/exited`
/// params, the `process/read` result after close and the events.
async fn run_confined(
    c: &Client,
    id: &str,
    s: &Scratch,
    script: &str,
) -> (Value, Value, ProcEvents) {
    c.start_with(
        id,
        &["sh", "-c", script],
        json!({"cwd": s.ws().to_str().unwrap(), "sandboxPolicy": ws_policy()}),
    )
    .await
    .unwrap();
    let ev = c.closed(id).await;
    let read = c.ok("process/read", json!({"processId": id})).await;
    (ev.exited.clone().unwrap(), read, ev)
}

/// The entries of `v["denials"]` of `kind`.
#[allow(dead_code)]
fn of_kind<'a>(v: &'a Value, kind: &str) -> Vec<&'a Value> {
    v["denials"]
        .as_array()
        .unwrap_or_else(|| panic!("no denials list: {v}"))
        .iter()
        .filter(|d| d["kind"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_fields_are_on_exited_and_read() {
    let s = Scratch::new("denfields");
    let c = Client::new(Transport::Stdio, &[]).await;
    let (exited, read, _) = run_confined(&c, "clean", &s, "echo fine > inside").await;
    for v in [&exited, &read] {
        assert_eq!(v["denials"], json!([]), "{v}");
        assert_eq!(v["denialsTotal"], 0, "{v}");
        assert!(v["denialSources"].is_array(), "{v}");
    }
    // After close the tree is gone: the list is final.
    assert_eq!(read["denialsComplete"], true, "{read}");
}
