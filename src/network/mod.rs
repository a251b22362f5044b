//! Managed network: per-process egress by domain allow-list.
//!
//! A managed-network process runs in a network namespace of its own with only `lo`; it binds
//! the proxy listeners there before exec and hands them to the supervisor, which serves them
//! ([`proxy`]) and dials upstream from its own namespace. The only way out is the proxy, and
//! the proxy decides on the name before resolving it ([`policy`]).

pub mod env;
pub mod pattern;
pub mod policy;
pub mod probe;
pub mod proxy;
pub mod resolve;

pub use pattern::{DomainPattern, Host, parse_host};
pub use policy::{Mode, NetworkPolicy, Protocol, Reason};
pub use proxy::{DecisionEvent, Denial, ListenerKind, Proxy, ProxyHandle};
pub use resolve::{Resolve, Resolved, SystemResolver};

/// The HTTP proxy's port inside the process's namespace.
pub const HTTP_PORT: u16 = 3128;
/// The SOCKS5 proxy's port inside the process's namespace.
pub const SOCKS_PORT: u16 = 1080;
