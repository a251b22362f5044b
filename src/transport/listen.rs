//! Parsing of the `--listen` URL.

use std::net::SocketAddr;

/// Where `stockade serve` listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// One connection over stdin/stdout.
    Stdio,
    /// A WebSocket server bound to this address.
    WebSocket(SocketAddr),
}

/// Errors of [`parse_listen`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListenError {
    /// Neither `stdio` nor `ws://`.
    #[error("unsupported --listen value `{0}`: use `stdio` or `ws://IP:PORT`")]
    Scheme(String),
    /// Not an `IP:PORT` (hostnames are refused).
    #[error("invalid WebSocket address `{0}`: it must be IP:PORT (hostnames are not accepted)")]
    Address(String),
}

/// Parses `stdio`, `stdio://`, `ws://` (127.0.0.1:0) or `ws://IP:PORT`.
pub fn parse_listen(value: &str) -> Result<ListenAddr, ListenError> {
    if value == "stdio" || value == "stdio://" {
        return Ok(ListenAddr::Stdio);
    }
    let Some(rest) = value.strip_prefix("ws://") else {
        return Err(ListenError::Scheme(value.to_string()));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(ListenAddr::WebSocket(SocketAddr::from(([127, 0, 0, 1], 0))));
    }
    rest.parse::<SocketAddr>()
        .map(ListenAddr::WebSocket)
        .map_err(|_| ListenError::Address(rest.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        assert_eq!(parse_listen("stdio"), Ok(ListenAddr::Stdio));
        assert_eq!(parse_listen("stdio://"), Ok(ListenAddr::Stdio));
        assert_eq!(
            parse_listen("ws://"),
            Ok(ListenAddr::WebSocket("127.0.0.1:0".parse().unwrap()))
        );
        assert_eq!(
            parse_listen("ws://[::1]:9000"),
            Ok(ListenAddr::WebSocket("[::1]:9000".parse().unwrap()))
        );
        assert!(matches!(
            parse_listen("ws://localhost:80"),
            Err(ListenError::Address(_))
        ));
        assert!(matches!(
            parse_listen("tcp://x"),
            Err(ListenError::Scheme(_))
        ));
    }
}
