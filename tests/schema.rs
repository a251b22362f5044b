//! The committed JSON Schema (`schema/stockade-protocol.json`) is what the wire types
//! generate (`stockade schema`), and the validator the other suites use really refuses what
//! the schema refuses. To regenerate the file after changing a wire type:
//! `cargo run --release -- schema > schema/stockade-protocol.json`, or run this test with
//! `STOCKADE_UPDATE_SCHEMA=1`.

mod common;

use std::process::Command;

use common::bin;
use common::schema::{SCHEMA_TEXT, check, check_exchange, check_server_message, resolve};
use serde_json::json;

#[test]
fn committed_schema_is_the_generated_one() {
    let out = Command::new(bin()).arg("schema").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap();
    if std::env::var_os("STOCKADE_UPDATE_SCHEMA").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/stockade-protocol.json");
        std::fs::write(path, &generated).unwrap();
        eprintln!("wrote {path}");
        return;
    }
    assert!(
        generated == SCHEMA_TEXT,
        "schema/stockade-protocol.json is not what the wire types generate: run \
         `cargo run --release -- schema > schema/stockade-protocol.json` (or this test with \
         STOCKADE_UPDATE_SCHEMA=1) and commit the result"
    );
}

#[test]
fn schema_covers_every_message_kind() {
    let s: serde_json::Value = serde_json::from_str(SCHEMA_TEXT).unwrap();
    let methods = s["x-stockade-methods"].as_object().unwrap();
    for m in [
        "initialize",
        "environment/info",
        "process/start",
        "process/read",
        "process/write",
        "process/closeStdin",
        "process/terminate",
        "process/signal",
        "process/resize",
        "fs/readFile",
        "fs/writeFile",
        "fs/createDirectory",
        "fs/getMetadata",
        "fs/readDirectory",
        "fs/remove",
        "fs/copy",
        "fs/canonicalize",
    ] {
        assert!(methods.contains_key(m), "{m} missing");
    }
    let notes = s["x-stockade-notifications"].as_object().unwrap();
    for n in ["process/output", "process/exited", "process/closed"] {
        assert!(notes.contains_key(n), "{n} missing");
    }
    for d in [
        "SandboxPolicyShape",
        "SandboxShape",
        "EnvPolicyShape",
        "Limits",
        "SandboxReport",
        "ErrorResponse",
        "ClientMessage",
        "ServerMessage",
    ] {
        assert!(s["$defs"].get(d).is_some(), "{d} missing");
    }
}

/// The validator accepts good messages and refuses each kind of bad one, so that the checks
/// in the other suites cannot pass vacuously.
#[test]
fn validator_refuses_what_the_schema_refuses() {
    let start = json!({"id": 1, "method": "process/start", "params": {
        "processId": "p", "argv": ["true"], "cwd": "/tmp", "env": {}, "tty": false,
        "sandboxPolicy": {"type": "workspace-write", "writable_roots": ["/tmp/x"]},
        "envPolicy": {"inherit": "core", "set": {"A": "b"}},
        "limits": {"wallTimeMs": 1000},
        "metadata": {"threadId": "t"}}});
    let report = json!({"policy": "workspace-write", "enforcement": "full", "landlockAbi": 7,
        "landlockRights": {"fs": ["execute"], "net": [], "scopes": []},
        "filesystem": "landlock", "network": "blocked", "hardening": true,
        "degradations": [], "notes": [], "limits": {}});
    let ok = json!({"id": 1, "result": {"processId": "p", "sandboxType": "linuxSeccomp",
        "pid": 42, "sandbox": report}});
    check_exchange("process/start", &start, &ok).unwrap();

    let bad_requests = [
        ("/params/sandboxPolicy/writeable_roots", json!(["/x"])),
        ("/params/sandboxPolicy/type", json!("workspace_write")),
        ("/params/envPolicy/inherit", json!("some")),
        ("/params/limits/wallTimeMS", json!(5)),
        ("/params/limits/wallTimeMs", json!(-1)),
        ("/params/tty", json!("yes")),
    ];
    for (pointer, value) in bad_requests {
        let mut req = start.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        req.pointer_mut(parent).unwrap()[key] = value;
        assert!(
            check_exchange("process/start", &req, &ok).is_err(),
            "accepted {pointer}"
        );
    }
    let mut missing = start.clone();
    missing["params"].as_object_mut().unwrap().remove("argv");
    assert!(check_exchange("process/start", &missing, &ok).is_err());

    let mut extra = ok.clone();
    extra["result"]["sandbox"]["surprise"] = json!(1);
    assert!(check_exchange("process/start", &start, &extra).is_err());
    assert!(check_exchange("bogus/method", &start, &ok).is_err());

    let exited = json!({"method": "process/exited", "params": {"processId": "p", "seq": 3,
        "exitCode": 0, "sandboxDenied": false,
        "usage": {"wallMs": 1, "userMs": 0, "sysMs": 0, "maxRssKb": 900},
        "denials": [{"kind": "fs", "access": ["write_file"], "path": "/etc/x",
                     "source": "stderr", "count": 1}],
        "denialsTotal": 1, "denialsComplete": true, "denialSources": ["stderr"]}});
    check_server_message(&exited).unwrap();
    let mut e2 = exited.clone();
    e2["params"]["surprise"] = json!([]);
    assert!(
        check_server_message(&e2).is_err(),
        "an undocumented field passed"
    );
    let mut e3 = exited.clone();
    e3["params"]
        .as_object_mut()
        .unwrap()
        .remove("sandboxDenied");
    assert!(check_server_message(&e3).is_err());
    assert!(check_server_message(&json!({"method": "process/unknown", "params": {}})).is_err());
    let out = json!({"method": "process/output", "params": {"processId": "p", "seq": 1,
        "stream": "stdout", "chunk": "aGk="}});
    check_server_message(&out).unwrap();
    let mut o2 = out.clone();
    o2["params"]["stream"] = json!("stdin");
    assert!(check_server_message(&o2).is_err());

    let err = json!({"id": -1, "error": {"code": -32600, "message": "invalid JSON"}});
    check_server_message(&err).unwrap();
    let err2 = json!({"id": 1, "error": {"code": 7, "message": "x"}});
    assert!(
        check_server_message(&err2).is_err(),
        "an unknown error code passed"
    );

    // The 6.3 shape, as Codex clients send it.
    let sandbox = json!({"permissions": {"type": "managed", "network": "restricted",
        "file_system": {"type": "restricted", "entries": [
            {"path": {"type": "special", "value": {"kind": "project_roots", "subpath": ".git"}},
             "access": "read", "missing_path_behavior": "skip"},
            {"path": {"type": "path", "path": "/w/secret"}, "access": "none"}]}},
        "cwd": "file:///w", "workspaceRoots": ["file:///w"], "windowsSandboxLevel": "disabled"});
    check(resolve("#/$defs/SandboxShape"), &sandbox, "sandbox").unwrap();
    let mut s2 = sandbox.clone();
    s2["permissions"]["file_system"]["entries"][0]["acess"] = json!("read");
    assert!(check(resolve("#/$defs/SandboxShape"), &s2, "sandbox").is_err());
}
