//! A confined process can never reach its own supervisor over TCP, and Landlock handles every
//! right of the ABI in use. Runs as root and as uid 65534 (scripts/test-unprivileged).

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{Value, json};

const PY: &str = "/usr/bin/python3";

/// A WebSocket server with a token file; returns the server, a connected initialized client
/// and the server's port.
async fn ws_server(dir: &std::path::Path, args: &[&str]) -> (tokio::process::Child, Client, u16) {
    let token = dir.join("token");
    std::fs::write(&token, "landlock-token\n").unwrap();
    let mut all = vec!["--ws-token-file", token.to_str().unwrap()];
    all.extend_from_slice(args);
    let (server, url) = Client::spawn_ws_server(&all).await;
    let port: u16 = url
        .trim_start_matches("ws://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let mut c = Client::ws_connect(&url, &[("Authorization", "Bearer landlock-token")])
        .await
        .unwrap();
    c.initialize().await;
    (server, c, port)
}

/// The attack: connect to and bind the server's port, next to the same operations on a port
/// the test listens on. Prints `name=OK` or `name=<errno name>`.
fn attack_script(server_port: u16, other_port: u16) -> String {
    format!(
        r#"
import errno, socket
def t(name, f):
    try:
        f(); print(f"{{name}}=OK")
    except OSError as e:
        print(f"{{name}}={{errno.errorcode.get(e.errno, e.errno)}}")
def connect(host, port):
    s = socket.socket(); s.settimeout(5); s.connect((host, port)); s.close()
def bind(host, port):
    s = socket.socket(); s.bind((host, port)); s.close()
t("connect_server", lambda: connect("127.0.0.1", {server_port}))
t("connect_other", lambda: connect("127.0.0.1", {other_port}))
# Another loopback address, same port: nothing else listens there, so without the rule this
# bind succeeds (and a later client of that address would talk to the process).
t("bind_server", lambda: bind("127.0.0.2", {server_port}))
t("bind_any", lambda: bind("127.0.0.1", 0))
# Protocols that carry TCP without being TCP sockets, which Landlock's port rules do not see:
# multipath TCP falls back to plain TCP towards the server's listener, and so does SMC.
def mptcp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262); s.settimeout(5)
    s.connect((host, port)); s.close()
t("mptcp_server", lambda: mptcp("127.0.0.1", {server_port}))
t("smc_socket", lambda: socket.socket(43, socket.SOCK_STREAM, 0).close())
"#
    )
}

async fn run_attack(
    c: &Client,
    id: &str,
    cwd: &std::path::Path,
    policy: Value,
    code: &str,
) -> (Value, BTreeMap<String, String>) {
    let r = c
        .start_with(
            id,
            &[PY, "-c", code],
            json!({"cwd": cwd.to_str().unwrap(), "sandboxPolicy": policy}),
        )
        .await
        .unwrap_or_else(|e| panic!("start {id}: {e}"));
    let ev = c.closed(id).await;
    let out = String::from_utf8_lossy(&ev.stdout).into_owned();
    assert_eq!(
        ev.exited.as_ref().unwrap()["exitCode"],
        0,
        "probe failed: {out}\n{}",
        String::from_utf8_lossy(&ev.stderr)
    );
    let results = out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (r["sandbox"].clone(), results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_on_process_cannot_reach_the_server_port() {
    let s = Scratch::new("llport");
    let (_server, c, port) = ws_server(&s.root, &["--ceiling", "external-sandbox"]).await;
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let code = attack_script(port, other.local_addr().unwrap().port());
    for (id, policy) in [
        (
            "ww",
            json!({"type": "workspace-write", "network_access": true}),
        ),
        ("ro", json!({"type": "read-only", "network_access": true})),
        (
            "ext",
            json!({"type": "external-sandbox", "network_access": "enabled"}),
        ),
    ] {
        let (report, r) = run_attack(&c, id, &s.ws(), policy, &code).await;
        assert_eq!(report["enforcement"], "full", "{id}: {report}");
        assert_eq!(report["network"], "allowed", "{id}: {report}");
        expect(&r, "connect_server", "EACCES");
        expect(&r, "bind_server", "EACCES");
        expect(&r, "connect_other", "OK");
        expect(&r, "bind_any", "OK");
        expect(&r, "mptcp_server", "EPERM");
        expect(&r, "smc_socket", "EPERM");
    }
    // With the network off nothing TCP works at all (seccomp refuses the socket).
    let (_, r) = run_attack(
        &c,
        "off",
        &s.ws(),
        json!({"type": "workspace-write"}),
        &code,
    )
    .await;
    expect(&r, "connect_server", "EPERM");
    expect(&r, "connect_other", "EPERM");
    drop(other);
}

/// Documented: an unconfined process runs as the server's user and can reach the server (its
/// port and, with the token, its methods); only the ceiling keeps clients from asking for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn danger_full_access_is_not_confined() {
    let s = Scratch::new("lldanger");
    let (_server, c, port) = ws_server(&s.root, &["--ceiling", "danger-full-access"]).await;
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let code = attack_script(port, other.local_addr().unwrap().port());
    let (report, r) = run_attack(
        &c,
        "danger",
        &s.ws(),
        json!({"type": "danger-full-access"}),
        &code,
    )
    .await;
    assert_eq!(report["enforcement"], "none", "{report}");
    expect(&r, "connect_server", "OK");
    expect(&r, "connect_other", "OK");
    expect(&r, "bind_server", "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tcp_rules_the_network_fails_closed() {
    let s = Scratch::new("llabi3");
    let policy = json!({"type": "workspace-write", "network_access": true});
    let (_server, c, port) = ws_server(&s.root, &["--landlock-abi", "3"]).await;
    let e = c
        .start_with(
            "net",
            &["true"],
            json!({"cwd": s.ws().to_str().unwrap(), "sandboxPolicy": policy}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32021, "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("Landlock ABI 4") && msg.contains(&port.to_string()),
        "{msg}"
    );
    // Degradation allowed: it runs, and the report says what is missing.
    let (_server, c, port) = ws_server(&s.root, &["--landlock-abi", "3", "--allow-degraded"]).await;
    let r = c
        .start_with(
            "net",
            &["true"],
            json!({"cwd": s.ws().to_str().unwrap(), "sandboxPolicy": policy}),
        )
        .await
        .unwrap();
    assert_eq!(r["sandbox"]["enforcement"], "degraded");
    let degradations = r["sandbox"]["degradations"].to_string();
    assert!(
        degradations.contains("Landlock ABI 4") && degradations.contains(&port.to_string()),
        "{degradations}"
    );
}

/// The crate's names for a set of rights, as the report spells them (`IoctlDev` → `ioctl_dev`).
fn snake<T: std::fmt::Debug>(rights: impl Iterator<Item = T>) -> Value {
    let names: Vec<String> = rights
        .map(|r| {
            let mut out = String::new();
            for (i, c) in format!("{r:?}").chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            }
            out
        })
        .collect();
    json!(names)
}

/// Every right the ABI in use knows is handled, and the report lists exactly those: compared
/// with the `landlock` crate's full sets for that ABI (so a right a newer ABI adds, such as
/// UNIX-socket resolution in ABI 9 or UDP in ABI 10, cannot be left out unnoticed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_lists_every_right_of_the_abi_in_use() {
    use landlock::{ABI, Access, AccessFs, AccessNet, Scope};
    let s = Scratch::new("llrights");
    for args in [&[][..], &["--landlock-abi", "5", "--allow-degraded"][..]] {
        let c = Client::new(Transport::Stdio, args).await;
        for (id, network) in [("off", false), ("on", true)] {
            let r = c
                .start_with(
                    id,
                    &["true"],
                    json!({"cwd": s.ws().to_str().unwrap(),
                           "sandboxPolicy": {"type": "workspace-write", "network_access": network}}),
                )
                .await
                .unwrap();
            let report = &r["sandbox"];
            let abi = ABI::from(report["landlockAbi"].as_i64().unwrap() as i32);
            let rights = &report["landlockRights"];
            assert_eq!(
                rights["fs"],
                snake(AccessFs::from_all(abi).iter()),
                "{report}"
            );
            let net = if network {
                json!([])
            } else {
                snake(AccessNet::from_all(abi).iter())
            };
            assert_eq!(rights["net"], net, "{report}");
            assert_eq!(
                rights["scopes"],
                snake(Scope::from_all(abi).iter()),
                "{report}"
            );
            c.closed(id).await;
        }
    }
}
