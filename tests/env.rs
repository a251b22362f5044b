//! Environment policy over the real binary: exact child environments.

mod common;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;

use common::*;
use serde_json::{Value, json};

async fn server_with_env(extra_args: &[&str]) -> Client {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.arg("serve").args(extra_args).env_clear();
    for (k, v) in [
        ("PATH", "/usr/bin:/bin"),
        ("HOME", "/home/ci"),
        ("LANG", "C.UTF-8"),
        ("path", "lower"),
        ("FOO", "foo"),
        ("MONKEY", "banana"),
        ("my_secret", "s3"),
        ("GH_TOKEN", "ghp"),
        ("AWS_REGION", "eu"),
        ("MYAPP_TOKEN", "m"),
        ("DB_PASSWORD", "pw"),
    ] {
        cmd.env(k, v);
    }
    cmd.env("BAD_VALUE", std::ffi::OsStr::from_bytes(b"\xff\xfe"));
    let mut c = Client::stdio_cmd(cmd).await;
    c.initialize().await;
    c
}

async fn child_env(
    c: &Client,
    id: &str,
    policy: Value,
    overlay: Value,
) -> BTreeMap<String, String> {
    let mut extra = json!({"env": overlay});
    if !policy.is_null() {
        extra["envPolicy"] = policy;
    }
    c.start_with(id, &["/usr/bin/env", "-0"], extra)
        .await
        .unwrap();
    let ev = c.closed(id).await;
    assert_eq!(ev.exited.unwrap()["exitCode"], 0);
    ev.stdout
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let s = String::from_utf8(e.to_vec()).unwrap();
            let (k, v) = s.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn exact_environments_per_policy() {
    let c = server_with_env(&[]).await;
    // No policy: exactly `env`, nothing from the server.
    let e = child_env(&c, "p0", Value::Null, json!({"ONLY": "this"})).await;
    assert_eq!(e, map(&[("ONLY", "this")]));
    // inherit all: default excludes drop *KEY*/*SECRET*/*TOKEN*; non-UTF-8 never passes.
    let e = child_env(&c, "p1", json!({"inherit": "all", "ignoreDefaultExcludes": false, "exclude": [], "set": {}, "includeOnly": []}), json!({})).await;
    assert_eq!(
        e,
        map(&[
            ("AWS_REGION", "eu"),
            ("DB_PASSWORD", "pw"),
            ("FOO", "foo"),
            ("HOME", "/home/ci"),
            ("LANG", "C.UTF-8"),
            ("PATH", "/usr/bin:/bin"),
            ("path", "lower")
        ])
    );
    // core: the core names that exist, case-sensitive.
    let e = child_env(&c, "p2", json!({"inherit": "core"}), json!({})).await;
    assert_eq!(
        e,
        map(&[
            ("HOME", "/home/ci"),
            ("LANG", "C.UTF-8"),
            ("PATH", "/usr/bin:/bin")
        ])
    );
    // none + set + include + overlay.
    let e = child_env(
        &c,
        "p3",
        json!({"inherit": "none", "set": {"A": "1", "B": "set"}, "include": ["MYAPP_*"]}),
        json!({"B": "overlay"}),
    )
    .await;
    assert_eq!(
        e,
        map(&[("A", "1"), ("B", "overlay"), ("MYAPP_TOKEN", "m")])
    );
    // exclude + includeOnly after set.
    let e = child_env(&c, "p4", json!({"inherit": "all", "exclude": ["AWS_*", "DB_*"], "set": {"X": "x"}, "includeOnly": ["A*", "PATH", "X"]}), json!({})).await;
    assert_eq!(
        e,
        map(&[("PATH", "/usr/bin:/bin"), ("X", "x"), ("path", "lower")])
    );
    // ignoreDefaultExcludes keeps the secret-looking names.
    let e = child_env(&c, "p5", json!({"inherit": "all", "ignoreDefaultExcludes": true, "includeOnly": ["*TOKEN*", "*KEY*", "*SECRET*"]}), json!({})).await;
    assert_eq!(
        e,
        map(&[
            ("GH_TOKEN", "ghp"),
            ("MONKEY", "banana"),
            ("MYAPP_TOKEN", "m"),
            ("my_secret", "s3")
        ])
    );
    // PATH lookup uses the computed environment.
    c.start_with(
        "p6",
        &["env"],
        json!({"env": {}, "envPolicy": {"inherit": "core"}}),
    )
    .await
    .unwrap();
    assert_eq!(c.closed("p6").await.exited.unwrap()["exitCode"], 0);
}

#[tokio::test]
async fn operator_guard_from_config_file() {
    let dir = std::env::temp_dir().join(marker("envcfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("server.toml");
    std::fs::write(
        &cfg,
        "[env]\nnever_inherit = [\"*PASSWORD*\", \"FOO\", \"*TOKEN*\"]\n",
    )
    .unwrap();
    let c = server_with_env(&["--config", cfg.to_str().unwrap()]).await;
    let e = child_env(
        &c,
        "g1",
        json!({"inherit": "all", "ignoreDefaultExcludes": true, "include": ["*"]}),
        json!({}),
    )
    .await;
    for name in ["DB_PASSWORD", "FOO", "GH_TOKEN", "MYAPP_TOKEN"] {
        assert!(!e.contains_key(name), "{name} passed the operator guard");
    }
    assert_eq!(e.get("MONKEY").map(String::as_str), Some("banana"));
    // The client's own values are not affected.
    let e = child_env(
        &c,
        "g2",
        json!({"inherit": "none", "set": {"FOO": "mine"}}),
        json!({"DB_PASSWORD": "client"}),
    )
    .await;
    assert_eq!(e, map(&[("DB_PASSWORD", "client"), ("FOO", "mine")]));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn config_file_errors_are_reported_at_startup() {
    let dir = std::env::temp_dir().join(marker("badcfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("server.toml");
    std::fs::write(&cfg, "[env]\nnever_inherti = []\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("never_inherti"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn bad_policies_are_invalid_params() {
    let c = server_with_env(&[]).await;
    for (policy, field) in [
        (json!({"inherit": "some"}), "envPolicy.inherit"),
        (json!({"set": {"A": 5}}), "envPolicy.set.A"),
        (json!({"set": {"A=B": "x"}}), "envPolicy.set"),
        (json!({"exclude": [1]}), "envPolicy.exclude[0]"),
        (json!({"includeOnly": "x"}), "envPolicy.includeOnly"),
        (json!("all"), "envPolicy"),
    ] {
        let e = c
            .start_with("bad", &["true"], json!({"envPolicy": policy}))
            .await
            .unwrap_err();
        assert_eq!(e["code"], -32602, "{policy}");
        assert!(
            e["message"].as_str().unwrap().contains(field),
            "{e} should name {field}"
        );
    }
    let e = c
        .start_with(
            "bad",
            &["true"],
            json!({"env": {"A\u{0}": "x"}, "envPolicy": {}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32602);
}
