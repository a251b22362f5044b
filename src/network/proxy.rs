//! The managed-network proxy: HTTP/1.1 (absolute-form and CONNECT) and SOCKS5 CONNECT on
//! listeners that belong to one process, so every connection is that process's and is judged
//! by its policy. Runs in the supervisor (tokio); upstream sockets are opened in the
//! supervisor's own network namespace.
//!
//! Per connection: read the request, decide on the name ([`NetworkPolicy::decide_name`]),
//! resolve an allowed name once, check every answer
//! ([`NetworkPolicy::decide_addresses`]), dial exactly those addresses, relay. Every decision
//! is recorded ([`DecisionEvent`]); refusals also in a per-destination count.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};

use super::pattern::{Host, parse_host};
use super::policy::{NetworkPolicy, Protocol, Reason};
use super::resolve::{Resolve, own_addresses};

/// Largest request head the HTTP listener reads.
const MAX_HEAD: usize = 64 * 1024;
/// How long a client may take to send its request.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an upstream dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Distinct refused destinations kept for the report.
pub const MAX_DENIALS: usize = 32;

/// One policy decision, in the shape of Codex's `network/policyDecision` params.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DecisionEvent {
    /// The process whose listener took the connection.
    pub process_id: String,
    /// RFC 3339 UTC.
    pub timestamp: String,
    /// `domain` (a name) or `non_domain` (an IP literal).
    pub scope: &'static str,
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// `baseline_policy` or `mode_guard`.
    pub source: &'static str,
    /// Codex's reason name (`allowed` for an allow).
    pub reason: &'static str,
    /// `http`, `https_connect` or `socks5_tcp`.
    pub protocol: &'static str,
    /// The host as asked for (normalised when it parsed).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The HTTP method of a plain request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Always false: stockade has no decider override yet.
    pub policy_override: bool,
}

/// A refused destination, aggregated for `process/exited`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Denial {
    /// The host.
    pub host: String,
    /// The port.
    pub port: u16,
    /// `http`, `https_connect` or `socks5_tcp`.
    pub protocol: &'static str,
    /// Codex's reason name.
    pub reason: &'static str,
    /// How many times.
    pub count: u64,
}

/// Formats `t` as RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// (host, port, protocol, reason) of a refused destination.
type DenialKey = (String, u16, &'static str, &'static str);

/// State shared by a process's listeners and connections.
struct Shared {
    process_id: String,
    policy: NetworkPolicy,
    resolver: Arc<dyn Resolve>,
    events: Mutex<Option<mpsc::UnboundedSender<DecisionEvent>>>,
    denials: Mutex<BTreeMap<DenialKey, u64>>,
    /// Connections accepted whose decision is not made yet.
    undecided: AtomicUsize,
    decided: Notify,
    shutdown: watch::Sender<bool>,
}

/// Counts a connection as undecided until dropped or [`Pending::decided`].
struct Pending(Arc<Shared>, bool);

impl Pending {
    fn new(s: &Arc<Shared>) -> Pending {
        s.undecided.fetch_add(1, Ordering::SeqCst);
        Pending(s.clone(), true)
    }
    fn decided(&mut self) {
        if std::mem::take(&mut self.1) {
            self.0.undecided.fetch_sub(1, Ordering::SeqCst);
            self.0.decided.notify_waiters();
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.decided();
    }
}

/// Why a destination is not reached.
enum Refusal {
    Policy(Reason),
    /// Resolution or dial failed (not a policy decision): 502.
    Upstream(String),
}

/// Which listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// HTTP proxy.
    Http,
    /// SOCKS5.
    Socks5,
}

/// The proxy of one process: serves its listeners until [`Proxy::finish`].
pub struct Proxy {
    shared: Arc<Shared>,
    /// The accept loops; each owns its listener, which closes when the loop ends.
    accepting: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Proxy {
    /// Starts serving `listeners`; decisions go to `events` as they are made.
    pub fn start(
        process_id: String,
        policy: NetworkPolicy,
        resolver: Arc<dyn Resolve>,
        listeners: Vec<(ListenerKind, TcpListener)>,
        events: mpsc::UnboundedSender<DecisionEvent>,
    ) -> Proxy {
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            process_id,
            policy,
            resolver,
            events: Mutex::new(Some(events)),
            denials: Mutex::new(BTreeMap::new()),
            undecided: AtomicUsize::new(0),
            decided: Notify::new(),
            shutdown,
        });
        let accepting = listeners
            .into_iter()
            .map(|(kind, listener)| tokio::spawn(accept_loop(shared.clone(), kind, listener)))
            .collect();
        Proxy {
            shared,
            accepting: Mutex::new(accepting),
        }
    }

    /// Stops accepting (the listeners are closed when this returns), waits (at most `grace`)
    /// for the connections already accepted to be decided, closes every connection and the
    /// event channel. Every decision event of this process has been sent when this returns.
    pub async fn finish(&self, grace: Duration) {
        let s = &self.shared;
        let _ = s.shutdown.send(true);
        let loops = std::mem::take(&mut *self.accepting.lock().unwrap_or_else(|e| e.into_inner()));
        for l in loops {
            let _ = l.await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = s.decided.notified();
            if s.undecided.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        s.events.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// The refused destinations so far (at most [`MAX_DENIALS`] distinct ones).
    pub fn denials(&self) -> Vec<Denial> {
        let d = self
            .shared
            .denials
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        d.iter()
            .map(|((host, port, protocol, reason), count)| Denial {
                host: host.clone(),
                port: *port,
                protocol,
                reason,
                count: *count,
            })
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.shared.shutdown.send(true);
    }
}

/// Resolves once shutdown was signalled.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await.is_ok();
}

/// A process's proxy and the task that forwards its decisions to the client.
pub struct ProxyHandle {
    /// The proxy.
    pub proxy: Proxy,
    /// Forwards [`DecisionEvent`]s; ends when the proxy's event channel closes.
    pub forwarder: tokio::task::JoinHandle<()>,
}

impl ProxyHandle {
    /// Stops the proxy and waits until every decision was forwarded; returns the refused
    /// destinations.
    pub async fn finish(self) -> Vec<Denial> {
        self.proxy.finish(Duration::from_secs(2)).await;
        let _ = self.forwarder.await;
        self.proxy.denials()
    }
}

async fn accept_loop(shared: Arc<Shared>, kind: ListenerKind, listener: TcpListener) {
    let mut stop = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            r = listener.accept() => {
                let Ok((conn, _)) = r else {
                    // EMFILE and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let s = shared.clone();
                let mut stop = shared.shutdown.subscribe();
                tokio::spawn(async move {
                    let pending = Pending::new(&s);
                    tokio::select! {
                        _ = stopped(&mut stop) => {}
                        _ = serve(s.clone(), kind, conn, pending) => {}
                    }
                });
            }
        }
    }
}

async fn serve(s: Arc<Shared>, kind: ListenerKind, conn: TcpStream, pending: Pending) {
    let _ = conn.set_nodelay(true);
    let _ = match kind {
        ListenerKind::Http => serve_http(&s, conn, pending).await,
        ListenerKind::Socks5 => serve_socks(&s, conn, pending).await,
    };
}

impl Shared {
    fn emit(&self, ev: DecisionEvent) {
        if let Some(tx) = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = tx.send(ev);
        }
    }

    /// Decides on `raw_host:port`, resolves and checks; returns the addresses to dial.
    async fn admit(
        &self,
        raw_host: &str,
        port: u16,
        protocol: Protocol,
        method: Option<&str>,
        pending: &mut Pending,
    ) -> Result<Vec<SocketAddr>, Refusal> {
        let host = parse_host(raw_host);
        let shown = host
            .as_ref()
            .map(Host::as_text)
            .unwrap_or_else(|| raw_host.chars().take(253).collect());
        let scope = match host {
            Some(Host::Ip(_)) => "non_domain",
            _ => "domain",
        };
        let record = |reason: Result<(), Reason>| {
            let (decision, source, reason_name) = match reason {
                Ok(()) => ("allow", "baseline_policy", "allowed"),
                Err(r) => ("deny", r.source(), r.name()),
            };
            if let Err(r) = reason {
                let mut d = self.denials.lock().unwrap_or_else(|e| e.into_inner());
                let key = (shown.clone(), port, protocol.name(), r.name());
                if let Some(c) = d.get_mut(&key) {
                    *c += 1;
                } else if d.len() < MAX_DENIALS {
                    d.insert(key, 1);
                }
            }
            self.emit(DecisionEvent {
                process_id: self.process_id.clone(),
                timestamp: rfc3339(SystemTime::now()),
                scope,
                decision,
                source,
                reason: reason_name,
                protocol: protocol.name(),
                host: shown.clone(),
                port,
                method: method.map(str::to_string),
                policy_override: false,
            });
        };
        if let Err(r) = self
            .policy
            .decide_name(host.as_ref(), protocol, method, port)
        {
            record(Err(r));
            pending.decided();
            return Err(Refusal::Policy(r));
        }
        let host = host.expect("decide_name refuses a missing host");
        let (addrs, pinned) = match &host {
            Host::Ip(ip) => (vec![*ip], false),
            Host::Name(n) => match self.resolver.lookup(n).await {
                Ok(r) => (r.addrs, r.pinned),
                Err(e) => {
                    pending.decided();
                    return Err(Refusal::Upstream(format!("cannot resolve {n}: {e}")));
                }
            },
        };
        let verdict = self
            .policy
            .decide_addresses(&addrs, &own_addresses(), pinned);
        record(verdict);
        pending.decided();
        verdict.map_err(Refusal::Policy)?;
        Ok(addrs
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

/// Connects to the first of `addrs` that answers.
async fn dial(addrs: &[SocketAddr]) -> Result<TcpStream, Refusal> {
    let mut last = String::from("no address");
    for a in addrs {
        match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(c)) => {
                let _ = c.set_nodelay(true);
                return Ok(c);
            }
            Ok(Err(e)) => last = format!("connecting to {a}: {e}"),
            Err(_) => last = format!("connecting to {a}: timed out"),
        }
    }
    Err(Refusal::Upstream(last))
}

/// The body of a 403: Codex's machine-readable first line, then a sentence.
pub fn blocked_body(reason: Reason, protocol: Protocol, host: &str, port: u16) -> String {
    let line = serde_json::json!({
        "decision": "deny",
        "reason": reason.name(),
        "source": reason.source(),
        "protocol": protocol.name(),
        "host": host,
        "port": port,
    });
    let why = match reason {
        Reason::Denied => "is on this process's network deny-list",
        Reason::NotAllowed => "is not on this process's network allow-list",
        Reason::NotAllowedLocal => {
            "resolves to a local, private, metadata or own address that the policy does not name literally"
        }
        Reason::MethodNotAllowed => "was asked with a method that limited network mode refuses",
        Reason::MitmRequired => "needs a tunnel, which limited network mode refuses",
    };
    format!("CODEX_NETWORK_POLICY_DECISION {line}\nstockade: {host}:{port} {why}.\n")
}

async fn respond(conn: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &str) {
    let mut head = format!("HTTP/1.1 {status}\r\ncontent-type: text/plain\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.shutdown().await;
}

async fn refuse_http(conn: &mut TcpStream, r: Refusal, protocol: Protocol, host: &str, port: u16) {
    match r {
        Refusal::Policy(reason) => {
            let shown = parse_host(host).map(|h| h.as_text()).unwrap_or_default();
            respond(
                conn,
                "403 Forbidden",
                &[("x-proxy-error", reason.header())],
                &blocked_body(reason, protocol, &shown, port),
            )
            .await
        }
        Refusal::Upstream(msg) => {
            respond(conn, "502 Bad Gateway", &[], &format!("stockade: {msg}\n")).await
        }
    }
}

/// Splits `host:port` (`[v6]:port`); `default` when there is no port.
fn split_authority(a: &str, default: Option<u16>) -> Option<(String, u16)> {
    if let Some(rest) = a.strip_prefix('[') {
        let (h, tail) = rest.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if tail.is_empty() => default?,
            None => return None,
        };
        return Some((format!("[{h}]"), port));
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), p.parse().ok()?)),
        Some(_) => None,
        None => Some((a.to_string(), default?)),
    }
}

/// Reads until the end of the request head; returns (head, bytes after it).
async fn read_head(conn: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Some((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve_http(s: &Shared, mut conn: TcpStream, mut pending: Pending) -> io::Result<()> {
    let Ok(Some((head, rest))) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut conn)).await
    else {
        return Ok(());
    };
    let Ok(text) = std::str::from_utf8(&head) else {
        respond(
            &mut conn,
            "400 Bad Request",
            &[],
            "stockade: request head is not UTF-8\n",
        )
        .await;
        return Ok(());
    };
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        respond(
            &mut conn,
            "400 Bad Request",
            &[],
            "stockade: malformed request line\n",
        )
        .await;
        return Ok(());
    };
    let headers: Vec<(&str, &str)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim(), v.trim())))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    if method == "CONNECT" {
        let Some((host, port)) = split_authority(target, None) else {
            respond(
                &mut conn,
                "400 Bad Request",
                &[],
                "stockade: CONNECT needs host:port\n",
            )
            .await;
            return Ok(());
        };
        let addrs = match s
            .admit(&host, port, Protocol::HttpsConnect, None, &mut pending)
            .await
        {
            Ok(a) => a,
            Err(r) => {
                refuse_http(&mut conn, r, Protocol::HttpsConnect, &host, port).await;
                return Ok(());
            }
        };
        let mut up = match dial(&addrs).await {
            Ok(u) => u,
            Err(r) => {
                refuse_http(&mut conn, r, Protocol::HttpsConnect, &host, port).await;
                return Ok(());
            }
        };
        conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        up.write_all(&rest).await?;
        tokio::io::copy_bidirectional(&mut conn, &mut up).await?;
        return Ok(());
    }
    // Absolute form only: this is a proxy, not a server.
    let lower = target.get(..7).map(str::to_ascii_lowercase);
    if lower.as_deref() != Some("http://") {
        respond(
            &mut conn,
            "400 Bad Request",
            &[],
            "stockade: a proxy request needs an absolute http:// URI (use CONNECT for https)\n",
        )
        .await;
        return Ok(());
    }
    let after = &target[7..];
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, path) = after.split_at(end);
    let path = if path.is_empty() || path.starts_with('#') {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.split('#').next().unwrap_or("/").to_string()
    };
    let Some((host, port)) = (!authority.contains('@'))
        .then(|| split_authority(authority, Some(80)))
        .flatten()
    else {
        respond(
            &mut conn,
            "400 Bad Request",
            &[],
            "stockade: bad authority in the URI\n",
        )
        .await;
        return Ok(());
    };
    // The Host header must name what the URI names: a server behind an allowed name must not
    // be asked for another.
    if let Some(h) = header("host") {
        let same = split_authority(h, Some(80)).is_some_and(|(hh, hp)| {
            hp == port && parse_host(&hh).is_some() && parse_host(&hh) == parse_host(&host)
        });
        if !same {
            respond(
                &mut conn,
                "400 Bad Request",
                &[],
                "stockade: the Host header does not match the request URI\n",
            )
            .await;
            return Ok(());
        }
    }
    if header("x-unix-socket").is_some() {
        respond(
            &mut conn,
            "501 Not Implemented",
            &[],
            "stockade: unix sockets unsupported\n",
        )
        .await;
        return Ok(());
    }
    let limited = s.policy.mode == super::policy::Mode::Limited;
    let addrs = match s
        .admit(&host, port, Protocol::Http, Some(method), &mut pending)
        .await
    {
        Ok(a) => a,
        Err(r) => {
            refuse_http(&mut conn, r, Protocol::Http, &host, port).await;
            return Ok(());
        }
    };
    if limited && header("transfer-encoding").is_some() {
        respond(
            &mut conn,
            "400 Bad Request",
            &[],
            "stockade: limited mode takes no chunked request bodies\n",
        )
        .await;
        return Ok(());
    }
    let mut up = match dial(&addrs).await {
        Ok(u) => u,
        Err(r) => {
            refuse_http(&mut conn, r, Protocol::Http, &host, port).await;
            return Ok(());
        }
    };
    let mut out = format!("{method} {path} {version}\r\n");
    for (k, v) in &headers {
        let drop = [
            "proxy-connection",
            "proxy-authorization",
            "connection",
            "keep-alive",
        ]
        .iter()
        .any(|d| k.eq_ignore_ascii_case(d));
        if !drop {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    // One request per connection: a second request on a kept-alive connection would skip the
    // checks.
    out.push_str("connection: close\r\n\r\n");
    up.write_all(out.as_bytes()).await?;
    if limited {
        // Only the declared body, then nothing more from the client: a pipelined request
        // with another method must not reach the server.
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = rest;
        body.truncate(len);
        let missing = len - body.len();
        up.write_all(&body).await?;
        if missing > 0 {
            let mut lim = (&mut conn).take(missing as u64);
            tokio::io::copy(&mut lim, &mut up).await?;
        }
        let (mut ur, _uw) = up.split();
        let (_cr, mut cw) = conn.split();
        tokio::io::copy(&mut ur, &mut cw).await?;
        cw.shutdown().await?;
    } else {
        up.write_all(&rest).await?;
        tokio::io::copy_bidirectional(&mut conn, &mut up).await?;
    }
    Ok(())
}

/// SOCKS5 reply codes.
const SOCKS_OK: u8 = 0;
const SOCKS_NOT_ALLOWED: u8 = 2;
const SOCKS_HOST_UNREACHABLE: u8 = 4;
const SOCKS_CMD_UNSUPPORTED: u8 = 7;
const SOCKS_ATYP_UNSUPPORTED: u8 = 8;

async fn socks_reply(conn: &mut TcpStream, code: u8) -> io::Result<()> {
    conn.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]).await
}

async fn serve_socks(s: &Shared, mut conn: TcpStream, mut pending: Pending) -> io::Result<()> {
    let read = async {
        let mut hdr = [0u8; 2];
        conn.read_exact(&mut hdr).await?;
        if hdr[0] != 5 {
            return Err(io::Error::other("not SOCKS5"));
        }
        let mut methods = vec![0u8; hdr[1] as usize];
        conn.read_exact(&mut methods).await?;
        if !methods.contains(&0) {
            conn.write_all(&[5, 0xff]).await?;
            return Err(io::Error::other("no acceptable method"));
        }
        conn.write_all(&[5, 0]).await?;
        let mut req = [0u8; 4];
        conn.read_exact(&mut req).await?;
        let host = match req[3] {
            1 => {
                let mut a = [0u8; 4];
                conn.read_exact(&mut a).await?;
                IpAddr::from(a).to_string()
            }
            4 => {
                let mut a = [0u8; 16];
                conn.read_exact(&mut a).await?;
                format!("[{}]", IpAddr::from(a))
            }
            3 => {
                let mut n = [0u8; 1];
                conn.read_exact(&mut n).await?;
                let mut name = vec![0u8; n[0] as usize];
                conn.read_exact(&mut name).await?;
                String::from_utf8_lossy(&name).into_owned()
            }
            _ => {
                socks_reply(&mut conn, SOCKS_ATYP_UNSUPPORTED).await?;
                return Err(io::Error::other("address type"));
            }
        };
        let mut p = [0u8; 2];
        conn.read_exact(&mut p).await?;
        Ok((req[1], host, u16::from_be_bytes(p)))
    };
    let Ok(Ok((cmd, host, port))) = tokio::time::timeout(HEAD_TIMEOUT, read).await else {
        return Ok(());
    };
    if cmd != 1 {
        // UDP ASSOCIATE and BIND are not offered.
        socks_reply(&mut conn, SOCKS_CMD_UNSUPPORTED).await?;
        return Ok(());
    }
    let addrs = match s
        .admit(&host, port, Protocol::Socks5Tcp, None, &mut pending)
        .await
    {
        Ok(a) => a,
        Err(Refusal::Policy(_)) => {
            socks_reply(&mut conn, SOCKS_NOT_ALLOWED).await?;
            return Ok(());
        }
        Err(Refusal::Upstream(_)) => {
            socks_reply(&mut conn, SOCKS_HOST_UNREACHABLE).await?;
            return Ok(());
        }
    };
    let Ok(mut up) = dial(&addrs).await else {
        socks_reply(&mut conn, SOCKS_HOST_UNREACHABLE).await?;
        return Ok(());
    };
    socks_reply(&mut conn, SOCKS_OK).await?;
    tokio::io::copy_bidirectional(&mut conn, &mut up).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_720_000_123);
        assert_eq!(rfc3339(t), "2025-12-03T00:00:00.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn authorities_split() {
        assert_eq!(
            split_authority("a.test:443", None),
            Some(("a.test".into(), 443))
        );
        assert_eq!(
            split_authority("a.test", Some(80)),
            Some(("a.test".into(), 80))
        );
        assert_eq!(split_authority("a.test", None), None);
        assert_eq!(
            split_authority("[::1]:8080", None),
            Some(("[::1]".into(), 8080))
        );
        assert_eq!(split_authority("::1:80", None), None);
    }

    #[test]
    fn blocked_body_first_line_is_codex_json() {
        let b = blocked_body(Reason::NotAllowed, Protocol::Http, "x.test", 80);
        let first = b.lines().next().unwrap();
        let json = first
            .strip_prefix("CODEX_NETWORK_POLICY_DECISION ")
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["reason"], "not_allowed");
        assert_eq!(v["decision"], "deny");
        assert_eq!(v["port"], 80);
    }
}
