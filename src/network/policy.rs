//! The decision: which destination a managed-network process may reach.
//!
//! Order (each step only runs when the previous ones allowed): a host that does not parse is
//! `not_allowed`; a deny match is `denied`; the mode's method guard (`limited`: GET, HEAD and
//! OPTIONS only, no tunnels); no allow match (or an empty allow-list) is `not_allowed`. All of
//! this is decided on the *name*, before any DNS lookup, so a refused name is never resolved.
//! Only then is an allowed name resolved, once, and every answer classified
//! ([`classify`]); a refused class makes the whole answer `not_allowed_local`, and the proxy
//! dials exactly the addresses that were checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::pattern::{DomainPattern, Host};

/// `full` or `limited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every method, tunnels allowed.
    #[default]
    Full,
    /// GET, HEAD and OPTIONS only; no CONNECT and no SOCKS (nothing the proxy cannot see).
    Limited,
}

impl Mode {
    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "full" => Some(Mode::Full),
            "limited" => Some(Mode::Limited),
            _ => None,
        }
    }

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Limited => "limited",
        }
    }
}

/// How a destination is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A plain HTTP request in absolute form.
    Http,
    /// An HTTP CONNECT tunnel.
    HttpsConnect,
    /// A SOCKS5 CONNECT.
    Socks5Tcp,
}

impl Protocol {
    /// Codex's wire name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::HttpsConnect => "https_connect",
            Protocol::Socks5Tcp => "socks5_tcp",
        }
    }
}

/// Why a destination was refused (Codex's reason names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// A deny pattern matched.
    Denied,
    /// No allow pattern matched (or the allow-list is empty), or the host is malformed.
    NotAllowed,
    /// The destination is local, private, link-local, cloud metadata or the host's own
    /// address, and the policy does not name it literally.
    NotAllowedLocal,
    /// `limited` mode and a method other than GET, HEAD, OPTIONS.
    MethodNotAllowed,
    /// `limited` mode and a tunnel the proxy cannot inspect.
    MitmRequired,
}

impl Reason {
    /// Codex's reason name.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Denied => "denied",
            Reason::NotAllowed => "not_allowed",
            Reason::NotAllowedLocal => "not_allowed_local",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::MitmRequired => "mitm_required",
        }
    }

    /// The `x-proxy-error` header value Codex clients parse.
    pub fn header(self) -> &'static str {
        match self {
            Reason::Denied => "blocked-by-denylist",
            Reason::NotAllowed | Reason::NotAllowedLocal => "blocked-by-allowlist",
            Reason::MethodNotAllowed => "blocked-by-method-policy",
            Reason::MitmRequired => "blocked-by-mitm-required",
        }
    }

    /// Which part of the policy decided (Codex's `source`).
    pub fn source(self) -> &'static str {
        match self {
            Reason::MethodNotAllowed | Reason::MitmRequired => "mode_guard",
            _ => "baseline_policy",
        }
    }
}

/// A managed-network policy.
#[derive(Debug, Clone, Default)]
pub struct NetworkPolicy {
    /// Allowed patterns (empty: nothing).
    pub allow: Vec<DomainPattern>,
    /// Denied patterns (win over allow).
    pub deny: Vec<DomainPattern>,
    /// `full` or `limited`.
    pub mode: Mode,
    /// Local and private destinations allowed (Codex's `allowLocalBinding`); cloud metadata
    /// and the host's own addresses still need a literal.
    pub allow_local: bool,
    /// Start the SOCKS5 listener.
    pub socks5: bool,
}

impl NetworkPolicy {
    /// Builds a policy from pattern texts; the error names the bad pattern. A deny-list `*` is
    /// refused (it would make every allow entry dead, which is never what was meant).
    pub fn new(
        allow: &[String],
        deny: &[String],
        mode: Mode,
        allow_local: bool,
    ) -> Result<NetworkPolicy, String> {
        let parse = |list: &[String], what: &str| -> Result<Vec<DomainPattern>, String> {
            list.iter()
                .map(|p| DomainPattern::parse(p).map_err(|e| format!("{what}: {e}")))
                .collect()
        };
        let deny = parse(deny, "deny")?;
        if deny.iter().any(DomainPattern::is_global) {
            return Err("deny: \"*\" is not accepted in a deny-list (an empty allow-list already refuses everything)".into());
        }
        Ok(NetworkPolicy {
            allow: parse(allow, "allow")?,
            deny,
            mode,
            allow_local,
            socks5: true,
        })
    }

    /// The decision on the name, before any lookup. `method` is the HTTP method of a plain
    /// request; `port` only matters for the `limited` guard on SOCKS.
    pub fn decide_name(
        &self,
        host: Option<&Host>,
        protocol: Protocol,
        method: Option<&str>,
        port: u16,
    ) -> Result<(), Reason> {
        let Some(host) = host else {
            return Err(Reason::NotAllowed);
        };
        if self.deny.iter().any(|p| p.matches(host)) {
            return Err(Reason::Denied);
        }
        if self.mode == Mode::Limited {
            match protocol {
                Protocol::Http => {
                    let m = method.unwrap_or("");
                    if !matches!(m, "GET" | "HEAD" | "OPTIONS") {
                        return Err(Reason::MethodNotAllowed);
                    }
                }
                Protocol::HttpsConnect => return Err(Reason::MitmRequired),
                Protocol::Socks5Tcp if port == 443 => return Err(Reason::MitmRequired),
                Protocol::Socks5Tcp => return Err(Reason::MethodNotAllowed),
            }
        }
        if !self.allow.iter().any(|p| p.matches(host)) {
            return Err(Reason::NotAllowed);
        }
        Ok(())
    }

    /// Whether an allow pattern names `host` exactly (no wildcard).
    pub fn names_literally(&self, host: &Host) -> bool {
        self.allow.iter().any(|p| p.names_exactly(host))
    }

    /// The decision on the addresses an allowed host resolved to (or its literal): every one
    /// must pass, else the whole answer is refused. `own` is the host's own addresses,
    /// `pinned` whether the operator's `[network] hosts` gave these addresses.
    pub fn decide_addresses(
        &self,
        addrs: &[IpAddr],
        own: &[IpAddr],
        pinned: bool,
    ) -> Result<(), Reason> {
        for ip in addrs {
            // Named literally: the address itself is on the allow-list (a name that resolves
            // to it does not count, or any allowed name could be pointed at a local service).
            let literal = self.names_literally(&Host::Ip(*ip));
            let class = classify(*ip, own);
            let ok = match class {
                AddressClass::Public => true,
                // A name the operator pinned to an address of this host is an explicit choice.
                AddressClass::HostOwn => literal || pinned,
                AddressClass::Metadata => literal,
                AddressClass::Local => literal || self.allow_local,
            };
            if !ok {
                return Err(Reason::NotAllowedLocal);
            }
        }
        Ok(())
    }
}

/// What an address is, for the local-destination rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally routable and none of the others.
    Public,
    /// Loopback, private, link-local, CGNAT, documentation, multicast, reserved ...
    Local,
    /// A cloud metadata endpoint (169.254.169.254, 168.63.129.16, 100.100.100.200,
    /// fd00:ec2::254 ...).
    Metadata,
    /// One of the host's own interface addresses.
    HostOwn,
}

const METADATA_V4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(168, 63, 129, 16),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
];

const METADATA_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    Ipv6Addr::new(0xfd00, 0x42, 0, 0, 0, 0, 0, 0x42),
];

fn v4_local(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 CGNAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24
        || (o[0] == 192 && o[1] == 0 && o[2] == 2) // TEST-NET-1
        || (o[0] == 198 && o[1] == 51 && o[2] == 100) // TEST-NET-2
        || (o[0] == 203 && o[1] == 0 && o[2] == 113) // TEST-NET-3
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15
        || o[0] >= 240
}

/// The IPv4 address an IPv6 address carries (mapped, compatible, NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16`), which is what it reaches.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4() {
        // `to_ipv4` also maps `::1` to 0.0.0.1; loopback stays loopback below.
        if !ip.is_loopback() && !ip.is_unspecified() {
            return Some(v4);
        }
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return Some(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// Classifies `ip`; `own` is the host's own interface addresses.
pub fn classify(ip: IpAddr, own: &[IpAddr]) -> AddressClass {
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => embedded_v4(v6),
    };
    if let Some(v4) = v4 {
        if METADATA_V4.contains(&v4) {
            return AddressClass::Metadata;
        }
        if v4_local(v4) {
            return AddressClass::Local;
        }
        if own.contains(&IpAddr::V4(v4)) {
            return AddressClass::HostOwn;
        }
        return AddressClass::Public;
    }
    let IpAddr::V6(v6) = ip else {
        unreachable!("v4 handled above")
    };
    if METADATA_V6.contains(&v6) {
        return AddressClass::Metadata;
    }
    let s = v6.segments();
    let local = v6.is_loopback()
        || v6.is_unspecified()
        || v6.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // ULA
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local
        || (s[0] == 0x2001 && s[1] == 0x0db8); // documentation
    if local {
        return AddressClass::Local;
    }
    if own.contains(&ip) {
        return AddressClass::HostOwn;
    }
    AddressClass::Public
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::pattern::parse_host;

    fn pol(allow: &[&str], deny: &[&str], mode: Mode) -> NetworkPolicy {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        NetworkPolicy::new(&s(allow), &s(deny), mode, false).unwrap()
    }

    #[test]
    fn deny_beats_allow_and_empty_allows_nothing() {
        let p = pol(&["**.test"], &["bad.test"], Mode::Full);
        let d = |h: &str| p.decide_name(parse_host(h).as_ref(), Protocol::HttpsConnect, None, 443);
        assert_eq!(d("ok.test"), Ok(()));
        assert_eq!(d("BAD.test."), Err(Reason::Denied));
        assert_eq!(d("other.example"), Err(Reason::NotAllowed));
        let empty = pol(&[], &[], Mode::Full);
        assert_eq!(
            empty.decide_name(
                parse_host("x.test").as_ref(),
                Protocol::Http,
                Some("GET"),
                80
            ),
            Err(Reason::NotAllowed)
        );
        assert_eq!(
            p.decide_name(None, Protocol::Http, Some("GET"), 80),
            Err(Reason::NotAllowed)
        );
        assert!(NetworkPolicy::new(&[], &["*".into()], Mode::Full, false).is_err());
    }

    #[test]
    fn limited_mode_guards_methods_and_tunnels() {
        let p = pol(&["x.test"], &[], Mode::Limited);
        let h = parse_host("x.test");
        for m in ["GET", "HEAD", "OPTIONS"] {
            assert_eq!(
                p.decide_name(h.as_ref(), Protocol::Http, Some(m), 80),
                Ok(())
            );
        }
        assert_eq!(
            p.decide_name(h.as_ref(), Protocol::Http, Some("POST"), 80),
            Err(Reason::MethodNotAllowed)
        );
        assert_eq!(
            p.decide_name(h.as_ref(), Protocol::HttpsConnect, None, 443),
            Err(Reason::MitmRequired)
        );
        assert_eq!(
            p.decide_name(h.as_ref(), Protocol::Socks5Tcp, None, 22),
            Err(Reason::MethodNotAllowed)
        );
    }

    #[test]
    fn address_classes() {
        let own: Vec<IpAddr> = vec!["11.22.33.44".parse().unwrap()];
        let c = |s: &str| classify(s.parse().unwrap(), &own);
        assert_eq!(c("8.8.8.8"), AddressClass::Public);
        assert_eq!(c("11.22.33.44"), AddressClass::HostOwn);
        for l in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2001:db8::1",
            "198.18.0.1",
        ] {
            assert_eq!(c(l), AddressClass::Local, "{l}");
        }
        for m in [
            "169.254.169.254",
            "168.63.129.16",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            assert_eq!(c(m), AddressClass::Metadata, "{m}");
        }
    }

    #[test]
    fn local_answers_need_a_literal() {
        let p = pol(&["**.test", "10.9.9.9"], &[], Mode::Full);
        let ten: IpAddr = "10.0.0.1".parse().unwrap();
        let public: IpAddr = "11.22.33.44".parse().unwrap();
        assert_eq!(
            p.decide_addresses(&[public, ten], &[], false),
            Err(Reason::NotAllowedLocal)
        );
        assert_eq!(p.decide_addresses(&[public], &[], false), Ok(()));
        // The host's own address: only when pinned by the operator or named literally.
        assert_eq!(
            p.decide_addresses(&[public], &[public], false),
            Err(Reason::NotAllowedLocal)
        );
        assert_eq!(p.decide_addresses(&[public], &[public], true), Ok(()));
        // Pinning never admits a private address.
        assert_eq!(
            p.decide_addresses(&[ten], &[], true),
            Err(Reason::NotAllowedLocal)
        );
        assert_eq!(
            p.decide_addresses(&["10.9.9.9".parse().unwrap()], &[], false),
            Ok(())
        );
    }
}
