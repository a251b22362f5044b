//! Managed network: the proxy driven directly (policy before DNS, 403 shapes, SOCKS5, limited
//! mode, lifecycle).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use stockade::network::resolve::LookupFuture;
use stockade::network::{
    DecisionEvent, ListenerKind, Mode, NetworkPolicy, Proxy, Resolve, Resolved,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A resolver that answers from a table and counts every lookup.
struct CountingResolver {
    table: BTreeMap<String, Vec<IpAddr>>,
    lookups: AtomicUsize,
}

impl Resolve for CountingResolver {
    fn lookup<'a>(&'a self, name: &'a str) -> LookupFuture<'a> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let r = self.table.get(name).cloned();
        Box::pin(async move {
            r.map(|addrs| Resolved {
                addrs,
                pinned: false,
            })
            .ok_or_else(|| std::io::Error::other("unknown name"))
        })
    }
}

/// An HTTP server that answers every request with "hello" and counts connections.
async fn test_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = l.accept().await else {
                return;
            };
            s.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let body = format!("hello {}", head.lines().next().unwrap_or(""));
                let _ = c
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (addr, seen)
}

struct Harness {
    proxy: Proxy,
    http: SocketAddr,
    socks: SocketAddr,
    resolver: Arc<CountingResolver>,
    events: mpsc::UnboundedReceiver<DecisionEvent>,
    server: SocketAddr,
    server_seen: Arc<AtomicUsize>,
}

async fn harness(allow: &[&str], deny: &[&str], mode: Mode) -> Harness {
    let (server, server_seen) = test_server().await;
    let mut table = BTreeMap::new();
    table.insert("allowed.test".to_string(), vec![server.ip()]);
    table.insert("bad.allowed.test".to_string(), vec![server.ip()]);
    table.insert(
        "private.test".to_string(),
        vec!["10.0.0.1".parse().unwrap()],
    );
    let resolver = Arc::new(CountingResolver {
        table,
        lookups: AtomicUsize::new(0),
    });
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let policy = NetworkPolicy::new(&s(allow), &s(deny), mode, false).unwrap();
    let h = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let so = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http, socks) = (h.local_addr().unwrap(), so.local_addr().unwrap());
    let (tx, events) = mpsc::unbounded_channel();
    let proxy = Proxy::start(
        "p1".into(),
        policy,
        resolver.clone(),
        vec![(ListenerKind::Http, h), (ListenerKind::Socks5, so)],
        tx,
    );
    Harness {
        proxy,
        http,
        socks,
        resolver,
        events,
        server,
        server_seen,
    }
}

async fn exchange(addr: SocketAddr, req: &str) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    String::from_utf8_lossy(&out).to_string()
}

fn decision_line(resp: &str) -> serde_json::Value {
    let body = resp.split("\r\n\r\n").nth(1).unwrap();
    let first = body.lines().next().unwrap();
    serde_json::from_str(
        first
            .strip_prefix("CODEX_NETWORK_POLICY_DECISION ")
            .unwrap(),
    )
    .unwrap()
}

// The test server listens on 127.0.0.1: the allow-list must name that literal for a name
// resolving there to pass (a loopback answer is refused otherwise).
const ALLOW: [&str; 2] = ["**.allowed.test", "127.0.0.1"];

#[tokio::test]
async fn allowed_name_is_proxied_and_reported() {
    let mut h = harness(&ALLOW, &[], Mode::Full).await;
    let port = h.server.port();
    let r = exchange(
        h.http,
        &format!(
            "GET http://allowed.test:{port}/x?y HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n"
        ),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("hello GET /x?y HTTP/1.1"), "{r}");
    let ev = h.events.recv().await.unwrap();
    assert_eq!(
        (ev.decision, ev.reason, ev.protocol),
        ("allow", "allowed", "http")
    );
    assert_eq!(ev.host, "allowed.test");
    assert_eq!(ev.process_id, "p1");
    assert_eq!(h.resolver.lookups.load(Ordering::SeqCst), 1);
    // CONNECT tunnels to the same.
    let mut c = TcpStream::connect(h.http).await.unwrap();
    c.write_all(format!("CONNECT allowed.test:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 39];
    c.read_exact(&mut buf).await.unwrap();
    assert!(buf.starts_with(b"HTTP/1.1 200"));
    c.write_all(b"GET /t HTTP/1.1\r\n\r\n").await.unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    assert!(out.contains("hello GET /t"), "{out}");
    assert_eq!(h.server_seen.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn refused_names_get_403_and_are_never_resolved() {
    let mut h = harness(&ALLOW, &["bad.allowed.test"], Mode::Full).await;
    let port = h.server.port();
    let r = exchange(
        h.http,
        &format!("CONNECT leak-secret.example:{port} HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(r.contains("x-proxy-error: blocked-by-allowlist"), "{r}");
    let v = decision_line(&r);
    assert_eq!(v["reason"], "not_allowed");
    assert_eq!(v["protocol"], "https_connect");
    assert_eq!(v["host"], "leak-secret.example");
    // Deny beats allow, also before any lookup.
    let r = exchange(
        h.http,
        &format!("GET http://BAD.allowed.test.:{port}/ HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(r.contains("x-proxy-error: blocked-by-denylist"), "{r}");
    assert_eq!(decision_line(&r)["reason"], "denied");
    assert_eq!(
        h.resolver.lookups.load(Ordering::SeqCst),
        0,
        "a refused name was resolved"
    );
    assert_eq!(h.server_seen.load(Ordering::SeqCst), 0);
    let ev = h.events.recv().await.unwrap();
    assert_eq!(
        (ev.decision, ev.reason, ev.scope),
        ("deny", "not_allowed", "domain")
    );
    h.proxy.finish(Duration::from_secs(5)).await;
    let d = h.proxy.denials();
    assert_eq!(d.len(), 2, "{d:?}");
}

#[tokio::test]
async fn private_answers_and_metadata_are_refused() {
    let h = harness(&["*.test", "*", "allowed.test"], &[], Mode::Full).await;
    let r = exchange(h.http, "CONNECT private.test:80 HTTP/1.1\r\n\r\n").await;
    assert!(r.contains("blocked-by-allowlist"), "{r}");
    assert_eq!(decision_line(&r)["reason"], "not_allowed_local");
    assert_eq!(h.resolver.lookups.load(Ordering::SeqCst), 1);
    // Literals need a literal entry, wildcards (even `*`) never match them.
    for target in [
        "169.254.169.254:80",
        "168.63.129.16:80",
        "[fd00:ec2::254]:80",
        "127.0.0.1:80",
    ] {
        let r = exchange(h.http, &format!("CONNECT {target} HTTP/1.1\r\n\r\n")).await;
        assert!(r.starts_with("HTTP/1.1 403"), "{target}: {r}");
    }
    // A name resolving to loopback is refused when only the name is allowed.
    let r = exchange(
        h.http,
        &format!("CONNECT allowed.test:{} HTTP/1.1\r\n\r\n", h.server.port()),
    )
    .await;
    assert_eq!(decision_line(&r)["reason"], "not_allowed_local", "{r}");
    assert_eq!(h.server_seen.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn host_header_must_match_and_limited_mode_guards() {
    let h = harness(&ALLOW, &[], Mode::Full).await;
    let port = h.server.port();
    let r = exchange(
        h.http,
        &format!("GET http://allowed.test:{port}/ HTTP/1.1\r\nHost: other.test\r\n\r\n"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert_eq!(h.server_seen.load(Ordering::SeqCst), 0);

    let h = harness(&ALLOW, &[], Mode::Limited).await;
    let port = h.server.port();
    let r = exchange(
        h.http,
        &format!("POST http://allowed.test:{port}/ HTTP/1.1\r\ncontent-length: 0\r\n\r\n"),
    )
    .await;
    assert!(r.contains("x-proxy-error: blocked-by-method-policy"), "{r}");
    let r = exchange(
        h.http,
        &format!("CONNECT allowed.test:{port} HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(r.contains("x-proxy-error: blocked-by-mitm-required"), "{r}");
    // A pipelined POST behind an allowed GET never reaches the server.
    let r = exchange(
        h.http,
        &format!(
            "GET http://allowed.test:{port}/ HTTP/1.1\r\n\r\nPOST /evil HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
        ),
    )
    .await;
    assert!(r.contains("hello GET / HTTP/1.1"), "{r}");
    assert!(!r.contains("evil"), "{r}");
}

#[tokio::test]
async fn socks5_connect_follows_the_policy() {
    let h = harness(&ALLOW, &[], Mode::Full).await;
    let port = h.server.port();
    let socks = |name: &'static str| async move {
        let mut c = TcpStream::connect(h.socks).await.unwrap();
        c.write_all(&[5, 1, 0]).await.unwrap();
        let mut m = [0u8; 2];
        c.read_exact(&mut m).await.unwrap();
        assert_eq!(m, [5, 0]);
        let mut req = vec![5, 1, 0, 3, name.len() as u8];
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(&port.to_be_bytes());
        c.write_all(&req).await.unwrap();
        let mut rep = [0u8; 10];
        c.read_exact(&mut rep).await.unwrap();
        (rep[1], c)
    };
    let (code, mut c) = socks("allowed.test").await;
    assert_eq!(code, 0);
    c.write_all(b"GET /s HTTP/1.1\r\n\r\n").await.unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    assert!(out.contains("hello GET /s"), "{out}");
    let (code, _) = socks("nope.example").await;
    assert_eq!(code, 2, "connection not allowed by ruleset");
    assert_eq!(h.server_seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn finish_closes_listeners_and_the_event_stream() {
    let mut h = harness(&ALLOW, &[], Mode::Full).await;
    let _ = exchange(h.http, "CONNECT nope.example:1 HTTP/1.1\r\n\r\n").await;
    h.proxy.finish(Duration::from_secs(5)).await;
    // Every event was sent before finish returned; then the stream ends.
    assert!(h.events.recv().await.is_some());
    assert!(h.events.recv().await.is_none());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(h.http).await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "listener still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
