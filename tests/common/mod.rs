//! Test client: drives the real `stockade` binary over stdio or WebSocket.
#![allow(dead_code)]

pub mod probe;
pub mod schema;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The stockade binary: `$STOCKADE_BIN` when set (the unprivileged CI pass runs a copy that
/// uid 65534 can reach), else the one cargo built.
pub fn bin() -> String {
    std::env::var("STOCKADE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_stockade").to_string())
}

/// A test that cannot run its subject on this host calls this instead of returning quietly: it
/// fails the test unless `STOCKADE_ALLOW_SKIP` (a comma-separated list, set by `.ci/run` for the
/// skips it expects) names `reason`, in which case it says why and the test returns.
///
/// ```ignore
/// let Some(root) = test_cgroup_root() else {
///     return allow_skip("cgroup-v2", "no writable cgroup v2 directory");
/// };
/// ```
pub fn allow_skip(reason: &str, why: &str) {
    let allowed = std::env::var("STOCKADE_ALLOW_SKIP").unwrap_or_default();
    if allowed.split(',').any(|a| a.trim() == reason) {
        eprintln!("note: test not run ({reason}, an allowed skip per STOCKADE_ALLOW_SKIP): {why}");
    } else {
        panic!(
            "cannot run this test here: {why}. If that is expected on this host, set \
             STOCKADE_ALLOW_SKIP={reason} (CI lists its allowed skips in .ci/run)"
        );
    }
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Stdio,
    Ws,
}

/// Everything the client saw for one process (from notifications).
#[derive(Debug, Default, Clone)]
pub struct ProcEvents {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub pty: Vec<u8>,
    pub seqs: Vec<u64>,
    pub exited: Option<Value>,
    pub closed: bool,
}

#[derive(Default)]
pub struct Inbox {
    pub responses: Vec<Value>,
    pub procs: HashMap<String, ProcEvents>,
    pub other: Vec<Value>,
    pub disconnected: bool,
    /// Messages from the server that the protocol schema does not accept (checked in
    /// `wait_for`, since they are found on a reader task where a panic would go unseen).
    pub violations: Vec<String>,
}

pub struct Client {
    out: mpsc::UnboundedSender<String>,
    inbox: Arc<Mutex<Inbox>>,
    changed: Arc<Notify>,
    next_id: std::sync::atomic::AtomicI64,
    pub server: Option<Child>,
    pub ws_url: Option<String>,
    pub session_id: Option<String>,
}

fn ingest(inbox: &Mutex<Inbox>, changed: &Notify, line: &str) {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        panic!("server sent invalid JSON: {line}");
    };
    let mut ib = inbox.lock().unwrap();
    if let Err(e) = schema::check_server_message(&v) {
        ib.violations.push(format!("{e}\n  message: {line}"));
    }
    match v.get("method").and_then(Value::as_str) {
        Some(m) if m.starts_with("process/") => {
            let p = &v["params"];
            let id = p["processId"].as_str().unwrap().to_string();
            let e = ib.procs.entry(id).or_default();
            e.seqs.push(p["seq"].as_u64().unwrap());
            match m {
                "process/output" => {
                    let data = unb64(p["chunk"].as_str().unwrap());
                    match p["stream"].as_str().unwrap() {
                        "stdout" => e.stdout.extend(data),
                        "stderr" => e.stderr.extend(data),
                        "pty" => e.pty.extend(data),
                        s => panic!("bad stream {s}"),
                    }
                }
                "process/exited" => e.exited = Some(p.clone()),
                "process/closed" => e.closed = true,
                _ => ib.other.push(v.clone()),
            }
        }
        Some(_) => ib.other.push(v),
        None => ib.responses.push(v),
    }
    drop(ib);
    changed.notify_waiters();
}

impl Client {
    fn with_channels(
        out: mpsc::UnboundedSender<String>,
        inbox: Arc<Mutex<Inbox>>,
        changed: Arc<Notify>,
    ) -> Client {
        Client {
            out,
            inbox,
            changed,
            next_id: std::sync::atomic::AtomicI64::new(1),
            server: None,
            ws_url: None,
            session_id: None,
        }
    }

    /// Spawns `stockade serve <args>` on stdio.
    pub async fn stdio(args: &[&str]) -> Client {
        let mut cmd = Command::new(bin());
        cmd.arg("serve").args(args);
        Self::stdio_cmd(cmd).await
    }

    /// Runs a prepared command that speaks the protocol on its stdio.
    pub async fn stdio_cmd(mut cmd: Command) -> Client {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn stockade");
        let mut stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let changed = Arc::new(Notify::new());
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if line.is_empty() {
                    break; // close stdin
                }
                if stdin.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
                let _ = stdin.flush().await;
            }
        });
        let (ib, ch) = (inbox.clone(), changed.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                ingest(&ib, &ch, &line);
            }
            ib.lock().unwrap().disconnected = true;
            ch.notify_waiters();
        });
        let mut c = Client::with_channels(tx, inbox, changed);
        c.server = Some(child);
        c
    }

    /// Spawns `stockade serve --listen ws://127.0.0.1:0 <args>` and returns the URL.
    pub async fn spawn_ws_server(args: &[&str]) -> (Child, String) {
        let mut child = Command::new(bin())
            .arg("serve")
            .arg("--listen")
            .arg("ws://127.0.0.1:0")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn stockade");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("server printed its URL")
            .unwrap()
            .unwrap();
        assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
        (child, url)
    }

    /// Connects to a WebSocket server.
    pub async fn ws_connect(url: &str, headers: &[(&str, &str)]) -> Result<Client, String> {
        let mut req = url.into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sink, mut source) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let changed = Arc::new(Notify::new());
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if line.is_empty() {
                    let _ = sink.close().await;
                    break;
                }
                if sink
                    .send(Message::text(line.trim_end().to_string()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let (ib, ch) = (inbox.clone(), changed.clone());
        tokio::spawn(async move {
            while let Some(Ok(msg)) = source.next().await {
                if let Message::Text(t) = msg {
                    ingest(&ib, &ch, t.as_str());
                }
            }
            ib.lock().unwrap().disconnected = true;
            ch.notify_waiters();
        });
        let mut c = Client::with_channels(tx, inbox, changed);
        c.ws_url = Some(url.to_string());
        Ok(c)
    }

    /// A fresh server on the given transport, initialized.
    pub async fn new(t: Transport, args: &[&str]) -> Client {
        let mut c = Client::uninitialized(t, args).await;
        c.initialize().await;
        c
    }

    /// A fresh server on the given transport, not initialized.
    pub async fn uninitialized(t: Transport, args: &[&str]) -> Client {
        match t {
            Transport::Stdio => Client::stdio(args).await,
            Transport::Ws => {
                let (child, url) = Client::spawn_ws_server(args).await;
                let mut c = Client::ws_connect(&url, &[]).await.unwrap();
                c.server = Some(child);
                c
            }
        }
    }

    pub fn send_raw(&self, line: &str) {
        let mut l = line.to_string();
        l.push('\n');
        self.out.send(l).unwrap();
    }

    /// Closes our sending side (stdin EOF / WebSocket close).
    pub fn close(&self) {
        let _ = self.out.send(String::new());
    }

    pub async fn wait_for<T>(&self, what: &str, mut f: impl FnMut(&mut Inbox) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut ib = self.inbox.lock().unwrap();
                if let Some(e) = ib.violations.first() {
                    panic!("the server sent a message the protocol schema refuses: {e}");
                }
                if let Some(v) = f(&mut ib) {
                    return v;
                }
                if ib.disconnected {
                    panic!("server disconnected while waiting for {what}");
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting for {what}");
            }
        }
    }

    /// Waits for the response with this id (raw: `{"id", "result"|"error"}`).
    pub async fn response(&self, id: &Value) -> Value {
        self.wait_for(&format!("response {id}"), |ib| {
            let pos = ib.responses.iter().position(|r| &r["id"] == id)?;
            Some(ib.responses.remove(pos))
        })
        .await
    }

    /// Waits until the server closed the connection.
    pub async fn wait_disconnected(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inbox.lock().unwrap().disconnected {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting for disconnect");
            }
        }
    }

    pub fn is_disconnected(&self) -> bool {
        self.inbox.lock().unwrap().disconnected
    }

    /// Raw responses received so far that were not claimed.
    pub fn unclaimed_responses(&self) -> Vec<Value> {
        self.inbox.lock().unwrap().responses.clone()
    }

    /// Sends a request and returns the whole response object.
    pub async fn call_raw(&self, method: &str, params: Value) -> Value {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let msg = json!({"id": id, "method": method, "params": params});
        self.send_raw(&msg.to_string());
        let response = self.response(&json!(id)).await;
        if let Err(e) = schema::check_exchange(method, &msg, &response) {
            panic!("protocol schema: {e}\n  request: {msg}\n  response: {response}");
        }
        response
    }

    /// Sends a request; Ok(result) or Err(error object).
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, Value> {
        let r = self.call_raw(method, params).await;
        if let Some(e) = r.get("error") {
            Err(e.clone())
        } else {
            Ok(r["result"].clone())
        }
    }

    pub async fn ok(&self, method: &str, params: Value) -> Value {
        match self.call(method, params.clone()).await {
            Ok(v) => v,
            Err(e) => panic!("{method} {params} failed: {e}"),
        }
    }

    pub async fn initialize(&mut self) -> Value {
        let r = self
            .ok("initialize", json!({"clientName": "stockade-tests"}))
            .await;
        self.session_id = Some(r["sessionId"].as_str().unwrap().to_string());
        self.send_raw(r#"{"method":"initialized"}"#);
        r
    }

    /// Starts a non-tty process with a plain environment.
    pub async fn start(&self, id: &str, argv: &[&str]) -> Value {
        self.start_with(id, argv, json!({})).await.unwrap()
    }

    pub async fn start_with(&self, id: &str, argv: &[&str], extra: Value) -> Result<Value, Value> {
        let mut params = json!({
            "processId": id,
            "argv": argv,
            "cwd": "/tmp",
            "env": {"PATH": "/usr/local/bin:/usr/bin:/bin"},
            "tty": false,
        });
        for (k, v) in extra.as_object().unwrap() {
            params[k] = v.clone();
        }
        self.call("process/start", params).await
    }

    /// Waits until the process is closed and returns what was seen.
    pub async fn closed(&self, id: &str) -> ProcEvents {
        self.wait_for(&format!("{id} closed"), |ib| {
            ib.procs.get(id).filter(|p| p.closed).cloned()
        })
        .await
    }

    pub fn events(&self, id: &str) -> ProcEvents {
        self.inbox
            .lock()
            .unwrap()
            .procs
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until the process has produced output containing `needle`.
    pub async fn wait_output(&self, id: &str, needle: &str) -> ProcEvents {
        self.wait_for(&format!("{id} output {needle:?}"), |ib| {
            let p = ib.procs.get(id)?;
            let all = [&p.stdout[..], &p.stderr[..], &p.pty[..]].concat();
            String::from_utf8_lossy(&all)
                .contains(needle)
                .then(|| p.clone())
        })
        .await
    }

    pub async fn run(&self, id: &str, argv: &[&str]) -> ProcEvents {
        self.start(id, argv).await;
        self.closed(id).await
    }
}

/// True if a process with this pid is alive (and not a zombie).
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Waits (up to a generous deadline, for loaded machines) until none of the pids is alive;
/// returns the survivors.
pub async fn wait_all_dead(pids: &[i32]) -> Vec<i32> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let alive: Vec<i32> = pids.iter().copied().filter(|p| pid_alive(*p)).collect();
        if alive.is_empty() {
            return alive;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pids.iter().copied().filter(|p| pid_alive(*p)).collect()
}

/// Pids of live processes with `marker` as one whole argument.
pub fn pids_with_marker(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let me = std::process::id() as i32;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && cmd.split(|b| *b == 0).any(|arg| arg == marker.as_bytes())
            && pid_alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, ...).
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

/// Resident set size of a process in kB.
pub fn rss_kb(pid: u32) -> u64 {
    proc_status_kb(pid, "VmRSS")
}

/// A scratch directory with a workspace `ws/` and a sibling `outside/` (removed on drop,
/// whatever modes a test left behind).
pub struct Scratch {
    pub root: std::path::PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let root = std::env::temp_dir().join(marker(tag));
        std::fs::create_dir_all(root.join("ws")).unwrap();
        std::fs::create_dir_all(root.join("outside")).unwrap();
        let root = root.canonicalize().unwrap();
        Scratch { root }
    }
    pub fn ws(&self) -> std::path::PathBuf {
        self.root.join("ws")
    }
    pub fn outside(&self) -> std::path::PathBuf {
        self.root.join("outside")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+rwX"])
            .arg(&self.root)
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A unique marker for finding a test's processes in /proc.
pub fn marker(name: &str) -> String {
    format!(
        "stk{}{}{}",
        name,
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

/// Adds `run_env` / `run_extra` helpers to the test client.
#[macro_export]
macro_rules! impl_run_helpers {
    () => {};
}

impl Client {
    /// Runs with exactly this environment.
    pub async fn run_env(&self, id: &str, argv: &[&str], env: Value) -> ProcEvents {
        self.start_with(id, argv, json!({ "env": env }))
            .await
            .unwrap();
        self.closed(id).await
    }

    /// Runs with extra start params.
    pub async fn run_extra(&self, id: &str, argv: &[&str], extra: Value) -> ProcEvents {
        self.start_with(id, argv, extra).await.unwrap();
        self.closed(id).await
    }
}

/// Runs the body once per transport.
#[macro_export]
macro_rules! both_transports {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn stdio() {
                ($body)(Transport::Stdio).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ws() {
                ($body)(Transport::Ws).await
            }
        }
    };
}

/// Asserts that a probe's `name=value` results hold `want` for `name`.
pub fn expect(results: &std::collections::BTreeMap<String, String>, name: &str, want: &str) {
    assert_eq!(
        results.get(name).map(String::as_str),
        Some(want),
        "{name}: {results:?}"
    );
}

/// Runs `sh -c script` under `policy` in `cwd`: (exit code, stdout, stderr).
pub async fn shell(
    c: &Client,
    id: &str,
    cwd: &std::path::Path,
    policy: Value,
    script: &str,
) -> (i64, String, String) {
    c.start_with(
        id,
        &["sh", "-c", script],
        json!({"cwd": cwd.to_str().unwrap(), "sandboxPolicy": policy,
        "env": {"PATH": "/usr/bin:/bin", "HOME": cwd.to_str().unwrap()}}),
    )
    .await
    .unwrap_or_else(|e| panic!("start {id}: {e}"));
    let ev = c.closed(id).await;
    (
        ev.exited.unwrap()["exitCode"].as_i64().unwrap(),
        String::from_utf8_lossy(&ev.stdout).into_owned(),
        String::from_utf8_lossy(&ev.stderr).into_owned(),
    )
}
