//! Name resolution for the proxy: the operator's pinned names (`[network] hosts`, like
//! `curl --resolve`) first, the system resolver otherwise. Only names the policy already
//! allowed are ever looked up (see [`super::policy`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

/// The answer to a lookup: the addresses, and whether the operator pinned them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Every address of the answer, in order.
    pub addrs: Vec<IpAddr>,
    /// They come from `[network] hosts`.
    pub pinned: bool,
}

/// A future returned by [`Resolve::lookup`].
pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Resolved>> + Send + 'a>>;

/// Something that turns a (normalised) name into addresses. A trait so that tests can count
/// lookups and answer without DNS.
pub trait Resolve: Send + Sync {
    /// Looks `name` up once.
    fn lookup<'a>(&'a self, name: &'a str) -> LookupFuture<'a>;
}

/// How long a system lookup may take before the request fails (closed).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The operator's pins, then the system resolver.
#[derive(Debug, Clone, Default)]
pub struct SystemResolver {
    /// Lowercase name (no trailing dot) → its addresses.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
}

impl Resolve for SystemResolver {
    fn lookup<'a>(&'a self, name: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            if let Some(addrs) = self.hosts.get(name) {
                return Ok(Resolved {
                    addrs: addrs.clone(),
                    pinned: true,
                });
            }
            let found = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, 0)))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "DNS lookup timed out"))??;
            let mut addrs: Vec<IpAddr> = Vec::new();
            for a in found {
                if !addrs.contains(&a.ip()) {
                    addrs.push(a.ip());
                }
            }
            if addrs.is_empty() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "no address"));
            }
            Ok(Resolved {
                addrs,
                pinned: false,
            })
        })
    }
}

/// The addresses of this host's interfaces (what a server bound to 0.0.0.0 answers on), read
/// fresh for each check since addresses come and go.
pub fn own_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list that freeifaddrs releases below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if family == libc::AF_INET {
                // SAFETY: AF_INET: the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: AF_INET6: the sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_addresses_include_loopback() {
        assert!(own_addresses().iter().any(|a| a.is_loopback()));
    }
}
