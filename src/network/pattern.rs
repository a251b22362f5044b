//! Domain patterns of a managed-network policy (Codex's grammar, with wildcards confined to
//! one label).
//!
//! - `example.com` matches exactly that host;
//! - `*.example.com` matches every subdomain (any depth), never the apex;
//! - `**.example.com` matches the apex and every subdomain;
//! - `*` alone matches every host *name* (allow-lists only; never an IP literal);
//! - `*` and `?` inside a label match within that label only (`region*.x.com` matches
//!   `region1.x.com`, not `region1.y.x.com`);
//! - an IP literal (`10.0.0.1`, `[::1]`) matches only that address, and wildcards never match
//!   an IP literal: reaching an address by number must be asked for by number.
//!
//! Hosts and patterns are compared normalised: trimmed, lowercased, one trailing dot dropped,
//! IPv6 brackets removed, and a `:port` suffix ignored (rules are not scoped by port).

use std::net::IpAddr;

use wildmatch::WildMatch;

/// A host as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, normalised (lowercase, no trailing dot).
    Name(String),
    /// An IP literal.
    Ip(IpAddr),
}

impl Host {
    /// The host as text (IPv6 without brackets).
    pub fn as_text(&self) -> String {
        match self {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }
}

/// Strips a `:port` (only when there is exactly one colon, or after a bracketed IPv6) and the
/// brackets, trims, lowercases and drops one trailing dot.
fn normalise(raw: &str) -> String {
    let s = raw.trim();
    let s = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inner, _)) => inner,
            None => rest,
        }
    } else if s.matches(':').count() == 1 {
        s.split_once(':').map(|(h, _)| h).unwrap_or(s)
    } else {
        s
    };
    let s = s.to_ascii_lowercase();
    s.strip_suffix('.').map(str::to_string).unwrap_or(s)
}

/// Parses a destination host (from a CONNECT authority, a URI, a Host header or SOCKS).
/// `None` for anything that is neither an IP literal nor a plausible DNS name (empty, longer
/// than 253 bytes, characters outside letters, digits, `-`, `_` and `.`, empty labels).
pub fn parse_host(raw: &str) -> Option<Host> {
    let n = normalise(raw);
    if let Ok(ip) = n.parse::<IpAddr>() {
        return Some(Host::Ip(ip));
    }
    if n.is_empty() || n.len() > 253 {
        return None;
    }
    let ok = n.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    ok.then_some(Host::Name(n))
}

/// One compiled pattern.
#[derive(Debug, Clone)]
enum Compiled {
    /// `*`: every name.
    AnyName,
    /// An IP literal.
    Ip(IpAddr),
    /// Labels matched one by one; `subdomains` = `*.` prefix (strictly deeper), `apex_too` =
    /// `**.` prefix (the suffix itself or deeper).
    Labels {
        suffix: Vec<WildMatch>,
        subdomains: bool,
        apex_too: bool,
        /// The pattern had no glob character: an exact name.
        exact: Option<String>,
    },
}

/// A domain pattern of an allow- or deny-list.
#[derive(Debug, Clone)]
pub struct DomainPattern {
    text: String,
    compiled: Compiled,
}

impl DomainPattern {
    /// Compiles `raw`; the error says what is wrong with it.
    pub fn parse(raw: &str) -> Result<DomainPattern, String> {
        if raw.contains("://") || raw.contains('/') {
            return Err(format!(
                "{raw:?}: a domain pattern is a host name, without scheme or path"
            ));
        }
        let n = normalise(raw);
        if n.is_empty() {
            return Err("empty domain pattern".into());
        }
        let compiled = if n == "*" {
            Compiled::AnyName
        } else if let Ok(ip) = n.parse::<IpAddr>() {
            Compiled::Ip(ip)
        } else {
            let (rest, subdomains, apex_too) = if let Some(r) = n.strip_prefix("**.") {
                (r, false, true)
            } else if let Some(r) = n.strip_prefix("*.") {
                (r, true, false)
            } else {
                (n.as_str(), false, false)
            };
            let labels: Vec<&str> = rest.split('.').collect();
            for l in &labels {
                if l.is_empty()
                    || l.contains("**")
                    || !l.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*' | b'?')
                    })
                {
                    return Err(format!(
                        "{raw:?}: not a domain pattern (labels of letters, digits, '-', '_', with '*' or '?' inside a label, and an optional leading '*.' or '**.')"
                    ));
                }
            }
            if (subdomains || apex_too)
                && labels
                    .iter()
                    .all(|l| l.chars().all(|c| c == '*' || c == '?'))
            {
                return Err(format!(
                    "{raw:?}: a wildcard prefix needs a literal domain after it"
                ));
            }
            let exact =
                (!subdomains && !apex_too && !rest.contains(['*', '?'])).then(|| rest.to_string());
            Compiled::Labels {
                suffix: labels.iter().map(|l| WildMatch::new(l)).collect(),
                subdomains,
                apex_too,
                exact,
            }
        };
        Ok(DomainPattern {
            text: raw.trim().to_string(),
            compiled,
        })
    }

    /// The pattern as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// `*` alone.
    pub fn is_global(&self) -> bool {
        matches!(self.compiled, Compiled::AnyName)
    }

    /// Whether this pattern names exactly `host` (no wildcard): what a local or host-own
    /// destination needs to be reachable.
    pub fn names_exactly(&self, host: &Host) -> bool {
        match (&self.compiled, host) {
            (Compiled::Ip(a), Host::Ip(b)) => a == b,
            (Compiled::Labels { exact: Some(e), .. }, Host::Name(n)) => e == n,
            _ => false,
        }
    }

    /// Whether the pattern matches `host`.
    pub fn matches(&self, host: &Host) -> bool {
        match (&self.compiled, host) {
            (Compiled::AnyName, Host::Name(_)) => true,
            (Compiled::Ip(a), Host::Ip(b)) => a == b,
            (
                Compiled::Labels {
                    suffix,
                    subdomains,
                    apex_too,
                    ..
                },
                Host::Name(n),
            ) => {
                let labels: Vec<&str> = n.split('.').collect();
                let deeper = labels.len() > suffix.len();
                let same = labels.len() == suffix.len();
                let depth_ok = if *subdomains {
                    deeper
                } else if *apex_too {
                    deeper || same
                } else {
                    same
                };
                depth_ok
                    && labels[labels.len() - suffix.len()..]
                        .iter()
                        .zip(suffix)
                        .all(|(l, p)| p.matches(l))
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, h: &str) -> bool {
        DomainPattern::parse(p)
            .unwrap()
            .matches(&parse_host(h).unwrap())
    }

    #[test]
    fn grammar_table() {
        let cases = [
            ("example.com", "example.com", true),
            ("example.com", "EXAMPLE.com.", true),
            ("example.com", "a.example.com", false),
            ("example.com:8443", "example.com", true),
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "example.com", false),
            ("**.example.com", "example.com", true),
            ("**.example.com", "x.y.example.com", true),
            ("**.example.com", "badexample.com", false),
            ("*.example.com", "aexample.com", false),
            ("region*.v2.argo.com", "region1.v2.argo.com", true),
            ("region*.v2.argo.com", "region.v2.argo.com", true),
            ("region*.v2.argo.com", "xregion1.v2.argo.com", false),
            ("region*.v2.argo.com", "foo.region1.v2.argo.com", false),
            ("Crates.IO.", "crates.io", true),
            ("*", "anything.test", true),
            ("*", "10.0.0.1", false),
            ("*.0.0.1", "10.0.0.1", false),
            ("10.0.0.1", "10.0.0.1", true),
            ("[::1]", "::1", true),
            ("[::1]:443", "[::1]:443", true),
            ("::1", "0:0::1", true),
        ];
        for (p, h, want) in cases {
            assert_eq!(m(p, h), want, "{p} vs {h}");
        }
    }

    #[test]
    fn bad_patterns_and_hosts_are_refused() {
        for p in [
            "",
            "http://x.com",
            "x.com/path",
            "**.*",
            "a..b",
            "a b.com",
            "*.*",
        ] {
            assert!(DomainPattern::parse(p).is_err(), "{p:?}");
        }
        for h in ["", "a..b", "a b", "x\u{0}y", &"a".repeat(300)] {
            assert!(parse_host(h).is_none(), "{h:?}");
        }
    }

    #[test]
    fn exact_naming() {
        let p = DomainPattern::parse("10.1.2.3").unwrap();
        assert!(p.names_exactly(&parse_host("10.1.2.3").unwrap()));
        let p = DomainPattern::parse("*.x.com").unwrap();
        assert!(!p.names_exactly(&parse_host("a.x.com").unwrap()));
        let p = DomainPattern::parse("X.com").unwrap();
        assert!(p.names_exactly(&parse_host("x.com").unwrap()));
    }
}
