//! The Landlock audit denial source (issue 16, `[sandbox] denial_audit`): as root with
//! `enable`, refused accesses are listed from the kernel's audit records, attributed by Landlock
//! domain; otherwise the source says why it is inactive and the other sources still list what
//! they see. `.ci/run` runs this file as root and again as uid 65534.
//!
//! The tests that read or change the host's audit state hold [`AUDIT_LOCK`], and the one that
//! turns audit on turns it off again when it was off (CI's VM starts with it off).

mod common;

use common::*;
use serde_json::{Value, json};

/// Serialises the tests that depend on the host's audit state.
static AUDIT_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The kernel's `audit_enabled`, or `None` when it cannot be read (not root).
fn audit_enabled() -> Option<u32> {
    audit_request(1000, &[]).and_then(|p| {
        p.get(4..8)
            .map(|b| u32::from_ne_bytes(b.try_into().unwrap()))
    })
}

/// Turns the kernel audit subsystem on or off (root).
fn set_audit(on: bool) {
    let mut status = [0u8; 44];
    status[0..4].copy_from_slice(&1u32.to_ne_bytes());
    status[4..8].copy_from_slice(&(on as u32).to_ne_bytes());
    audit_request(1001, &status).expect("AUDIT_SET");
}

/// One audit netlink request; the answer's payload (for AUDIT_SET, the acknowledgement).
fn audit_request(kind: u16, payload: &[u8]) -> Option<Vec<u8>> {
    // SAFETY: plain socket calls on buffers we own.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 9);
        if fd < 0 {
            return None;
        }
        let mut msg = Vec::new();
        msg.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(1u16 | 4).to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        let sent = libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        );
        let mut buf = [0u8; 8192];
        let mut out = None;
        if sent > 0 {
            for _ in 0..4 {
                let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if n < 16 {
                    break;
                }
                let t = u16::from_ne_bytes([buf[4], buf[5]]);
                if t == 2 {
                    let errno = i32::from_ne_bytes(buf[16..20].try_into().unwrap());
                    if errno != 0 {
                        break;
                    }
                    if kind == 1001 {
                        out = Some(Vec::new());
                        break;
                    }
                    continue;
                }
                if t == kind {
                    out = Some(buf[16..n as usize].to_vec());
                    break;
                }
            }
        }
        libc::close(fd);
        out
    }
}

/// A config file with `[sandbox] denial_audit = mode`.
fn config(s: &Scratch, mode: &str) -> String {
    let path = s.root.join("audit.toml");
    std::fs::write(&path, format!("[sandbox]\ndenial_audit = \"{mode}\"\n")).unwrap();
    path.to_str().unwrap().to_string()
}

/// workspace-write with only the workspace writable, network off.
fn ws_policy() -> Value {
    json!({"type": "workspace-write", "network_access": false,
           "exclude_slash_tmp": true, "exclude_tmpdir_env_var": true})
}

/// A server with `args`; returns it and `stockade.sandboxSupport.denialAudit`.
async fn server(args: &[&str]) -> (Client, Value) {
    let mut c = Client::uninitialized(Transport::Stdio, args).await;
    let init = c.initialize().await;
    let audit = init["stockade"]["sandboxSupport"]["denialAudit"].clone();
    assert!(audit.is_object(), "{init}");
    (c, audit)
}

fn has_source(v: &Value, source: &str) -> bool {
    v["denialSources"]
        .as_array()
        .is_some_and(|s| s.iter().any(|x| x == source))
}

/// Starts `script` confined to the workspace (not waiting).
async fn start(c: &Client, id: &str, s: &Scratch, script: &str) {
    c.start_with(
        id,
        &["sh", "-c", script],
        json!({"cwd": s.ws().to_str().unwrap(), "sandboxPolicy": ws_policy()}),
    )
    .await
    .unwrap();
}

/// The final `process/read` result of a closed process (the list is final once closed).
async fn final_read(c: &Client, id: &str) -> (Value, Value) {
    let ev = c.closed(id).await;
    let read = c.ok("process/read", json!({"processId": id})).await;
    (ev.exited.clone().unwrap(), read)
}

/// A FIFO outside the roots that anyone may open: opening it for writing is refused by
/// Landlock itself (a FIFO is not a regular file: the read-only mount view does not refuse
/// it first), and nothing is printed (stderr goes to /dev/null), so only the audit source can
/// list it.
fn fifo(s: &Scratch, name: &str) -> String {
    let p = s.outside().join(name);
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    std::fs::set_permissions(
        s.outside(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    p.to_str().unwrap().to_string()
}

/// `off`: the source is inactive and says so; seccomp and stderr evidence still list what
/// they see (the fallback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_audit_off_is_reported_and_the_other_sources_still_list() {
    let s = Scratch::new("audoff");
    let cfg = config(&s, "off");
    let (c, audit) = server(&["--config", &cfg]).await;
    assert_eq!(audit["mode"], "off", "{audit}");
    assert_eq!(audit["active"], false, "{audit}");
    assert!(
        audit["reason"]
            .as_str()
            .unwrap()
            .contains("denial_audit = \"off\""),
        "{audit}"
    );
    let out = s.outside();
    let script = format!(
        "echo x > {}/f; python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_STREAM)'; exit 0",
        out.display()
    );
    start(&c, "p", &s, &script).await;
    let (exited, read) = final_read(&c, "p").await;
    for v in [&exited, &read] {
        assert!(!has_source(v, "landlock"), "{v}");
        assert!(has_source(v, "seccomp") && has_source(v, "stderr"), "{v}");
        let list = v["denials"].as_array().unwrap();
        assert!(list.iter().all(|d| d["source"] != "landlock"), "{v}");
        assert!(
            list.iter()
                .any(|d| d["source"] == "stderr" && d["path"] == format!("{}/f", out.display())),
            "{v}"
        );
        assert!(
            list.iter()
                .any(|d| d["source"] == "seccomp" && d["args"] == json!(["AF_INET", "SOCK_STREAM"])),
            "{v}"
        );
    }
    assert_eq!(read["denialsComplete"], true, "{read}");
}

/// The default (`auto`) never changes the host: with audit off it is inactive and names the
/// reason and the fix; as uid 65534 it names the missing capability. Where the host lets
/// records flow (audit already on, root) it is active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_says_why_the_source_is_inactive_and_never_changes_the_host() {
    let _lock = AUDIT_LOCK.lock().await;
    let before = audit_enabled();
    let (c, audit) = server(&[]).await;
    assert_eq!(audit["mode"], "auto", "{audit}");
    assert_eq!(
        audit_enabled(),
        before,
        "auto changed the host's audit state"
    );
    match before {
        None => {
            assert!(!is_root(), "root cannot read the audit status");
            assert_eq!(audit["active"], false, "{audit}");
            let reason = audit["reason"].as_str().unwrap();
            assert!(reason.contains("audit status"), "{audit}");
            assert!(
                audit["fix"].as_str().unwrap().contains("CAP_AUDIT_READ"),
                "{audit}"
            );
        }
        Some(0) => {
            assert_eq!(audit["active"], false, "{audit}");
            assert_eq!(
                audit["reason"], "audit is disabled on this host (audit_enabled=0)",
                "{audit}"
            );
            assert!(
                audit["fix"]
                    .as_str()
                    .unwrap()
                    .contains("denial_audit = \"enable\""),
                "{audit}"
            );
        }
        Some(_) => assert_eq!(audit["active"], true, "{audit}"),
    }
    // Whatever the verdict, a process's sources say whether the audit source watched it.
    let s = Scratch::new("audauto");
    start(&c, "p", &s, "exit 0").await;
    let (exited, _) = final_read(&c, "p").await;
    assert_eq!(
        has_source(&exited, "landlock"),
        audit["active"] == true,
        "{exited}"
    );
}

/// `enable` as root: audit is turned on, and refused accesses are listed from the kernel's
/// records with Landlock's right names, each attributed to the process whose tree made it,
/// by domain (the refusals come from subshells, whose pids the server never saw), with two
/// processes running at once. As uid 65534 the server refuses to start, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_lists_landlock_refusals_attributed_by_domain() {
    let _lock = AUDIT_LOCK.lock().await;
    let s = Scratch::new("audenable");
    let cfg = config(&s, "enable");
    if !is_root() {
        let out = std::process::Command::new(bin())
            .args(["serve", "--config", &cfg])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("denial_audit = \"enable\"") && err.contains("CAP_AUDIT_CONTROL"),
            "{err}"
        );
        return;
    }
    let before = audit_enabled().expect("root reads the audit status");
    // Turns audit off again (when it was off) however the test ends.
    struct Restore(u32);
    impl Drop for Restore {
        fn drop(&mut self) {
            if self.0 == 0 {
                set_audit(false);
            }
        }
    }
    let restore = Restore(before);
    let (c, audit) = server(&["--config", &cfg]).await;
    assert_eq!(
        audit["active"], true,
        "enable did not activate the source: {audit}"
    );
    assert_ne!(audit_enabled(), Some(0));
    assert!(
        audit["note"].as_str().unwrap().contains("whole host"),
        "{audit}"
    );
    let a = fifo(&s, "fifo-a");
    let b = fifo(&s, "fifo-b");
    // Both run at once: each waits for the other's marker before refusing and ending.
    let ready_a = s.ws().join("ready-a");
    let ready_b = s.ws().join("ready-b");
    let script = |mine: &str, fifo: &str, theirs: &std::path::Path, extra: &str| {
        format!(
            "touch {mine}; while [ ! -e {} ]; do :; done; (exec 3>{fifo}) 2>/dev/null; {extra} exit 0",
            theirs.display()
        )
    };
    start(
        &c,
        "a",
        &s,
        &script(
            ready_a.to_str().unwrap(),
            &a,
            &ready_b,
            "kill -0 1 2>/dev/null;",
        ),
    )
    .await;
    start(
        &c,
        "b",
        &s,
        &script(ready_b.to_str().unwrap(), &b, &ready_a, ""),
    )
    .await;
    let (ea, ra) = final_read(&c, "a").await;
    let (eb, rb) = final_read(&c, "b").await;
    drop(restore);
    for (v, mine, theirs) in [(&ea, &a, &b), (&ra, &a, &b), (&eb, &b, &a), (&rb, &b, &a)] {
        assert!(has_source(v, "landlock"), "{v}");
        let list = v["denials"].as_array().unwrap();
        let fs: Vec<&Value> = list
            .iter()
            .filter(|d| d["source"] == "landlock" && d["kind"] == "fs")
            .collect();
        assert!(
            fs.iter()
                .any(|d| d["path"] == mine.as_str() && d["access"] == json!(["write_file"])),
            "{mine} write_file not in {v}"
        );
        assert!(
            !fs.iter().any(|d| d["path"] == theirs.as_str()),
            "{theirs} listed in {v}"
        );
        assert_eq!(v["sandboxDenied"], false, "{v}");
    }
    // The signal to pid 1 (Landlock's signal scope) is listed for `a` only.
    let signals = |v: &Value| {
        v["denials"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"] == "signal" && d["source"] == "landlock")
            .count()
    };
    assert_eq!(signals(&ra), 1, "{ra}");
    assert_eq!(signals(&rb), 0, "{rb}");
    assert_eq!(ra["denialsComplete"], true, "{ra}");
    assert_eq!(rb["denialsComplete"], true, "{rb}");
}

/// `stockade doctor` says whether the source is active and why not; for `enable` it says
/// that the server turns audit on host-wide (doctor itself changes nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_the_audit_source() {
    let _lock = AUDIT_LOCK.lock().await;
    let s = Scratch::new("auddoc");
    let before = audit_enabled();
    for mode in ["auto", "off", "enable"] {
        let cfg = config(&s, mode);
        let out = std::process::Command::new(bin())
            .args(["doctor", "--json", "--config", &cfg])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        let audit = &r["denialAudit"];
        assert_eq!(audit["mode"], mode, "{audit}");
        assert_eq!(
            audit_enabled(),
            before,
            "doctor changed the host's audit state"
        );
        match (mode, before) {
            ("off", _) => assert_eq!(audit["active"], false, "{audit}"),
            (_, None) => {
                assert_eq!(audit["active"], false, "{audit}");
                assert!(
                    audit["fix"].as_str().unwrap().contains("CAP_AUDIT_READ"),
                    "{audit}"
                );
            }
            (_, Some(0)) => {
                assert_eq!(audit["active"], false, "{audit}");
                assert!(
                    audit["reason"]
                        .as_str()
                        .unwrap()
                        .contains("audit_enabled=0"),
                    "{audit}"
                );
            }
            (_, Some(_)) => assert_eq!(audit["active"], true, "{audit}"),
        }
        if mode == "enable" {
            assert!(
                audit["note"].as_str().unwrap().contains("whole host"),
                "{audit}"
            );
        }
        let human = std::process::Command::new(bin())
            .args(["doctor", "--config", &cfg])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&human.stdout);
        assert!(text.contains("denial audit"), "{text}");
        if mode == "enable" {
            assert!(text.contains("whole host"), "{text}");
        }
    }
}

/// `enable` as root with the network on: a connect to the server's own port (refused by the
/// port-guard Landlock domain stacked on the policy's) is listed as `net` `connect_tcp` with
/// its destination. As uid 65534 `enable` refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_lists_a_connect_to_the_server_port() {
    let _lock = AUDIT_LOCK.lock().await;
    let s = Scratch::new("audnet");
    let cfg = config(&s, "enable");
    if !is_root() {
        let out = std::process::Command::new(bin())
            .args(["serve", "--listen", "ws://127.0.0.1:0", "--config", &cfg])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("CAP_AUDIT_CONTROL"), "{err}");
        return;
    }
    struct Restore(u32);
    impl Drop for Restore {
        fn drop(&mut self) {
            if self.0 == 0 {
                set_audit(false);
            }
        }
    }
    let _restore = Restore(audit_enabled().expect("root reads the audit status"));
    let mut c = Client::uninitialized(Transport::Ws, &["--config", &cfg]).await;
    let init = c.initialize().await;
    assert_eq!(
        init["stockade"]["sandboxSupport"]["denialAudit"]["active"], true,
        "{init}"
    );
    let port: u16 = c
        .ws_url
        .as_deref()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let code = format!(
        "import socket, errno\ns = socket.socket()\ntry:\n s.connect((\"127.0.0.1\", {port}))\nexcept OSError as e:\n print(errno.errorcode[e.errno])"
    );
    c.start_with(
        "net",
        &["python3", "-c", &code],
        json!({"cwd": s.ws().to_str().unwrap(),
               "sandboxPolicy": {"type": "workspace-write", "network_access": true,
                                 "exclude_slash_tmp": true, "exclude_tmpdir_env_var": true}}),
    )
    .await
    .unwrap();
    let ev = c.closed("net").await;
    assert_eq!(String::from_utf8_lossy(&ev.stdout), "EACCES\n", "{ev:?}");
    let read = c.ok("process/read", json!({"processId": "net"})).await;
    let net: Vec<&Value> = read["denials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "net" && d["source"] == "landlock")
        .collect();
    assert_eq!(net.len(), 1, "{read}");
    assert_eq!(net[0]["access"], json!(["connect_tcp"]), "{read}");
    assert_eq!(net[0]["object"], format!("127.0.0.1:{port}"), "{read}");
    assert_eq!(read["denialsComplete"], true, "{read}");
}
