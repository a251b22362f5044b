//! The proxy variables a managed-network process gets. They always overwrite what the request
//! carried: a request must not be able to point its tools past the proxy (there is no route
//! anyway) or at another listener.

use std::collections::BTreeMap;

use super::{HTTP_PORT, SOCKS_PORT};

/// Variables set to the HTTP proxy URL.
const HTTP_KEYS: [&str; 21] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "YARN_HTTP_PROXY",
    "YARN_HTTPS_PROXY",
    "npm_config_http_proxy",
    "npm_config_https_proxy",
    "npm_config_proxy",
    "NPM_CONFIG_HTTP_PROXY",
    "NPM_CONFIG_HTTPS_PROXY",
    "NPM_CONFIG_PROXY",
    "BUNDLE_HTTP_PROXY",
    "BUNDLE_HTTPS_PROXY",
    "PIP_PROXY",
    "DOCKER_HTTP_PROXY",
    "DOCKER_HTTPS_PROXY",
    "WS_PROXY",
    "WSS_PROXY",
    "ws_proxy",
    "wss_proxy",
];

/// Variables set to the SOCKS URL when SOCKS5 is on, else to the HTTP URL.
const ALL_KEYS: [&str; 4] = ["ALL_PROXY", "all_proxy", "FTP_PROXY", "ftp_proxy"];

/// No-proxy variables: empty unless local destinations are allowed (then local targets skip
/// the proxy; "localhost" is the process's own loopback). `YARN_NO_PROXY` is left out: Yarn
/// Berry refuses to run with it.
const NO_PROXY_KEYS: [&str; 5] = [
    "NO_PROXY",
    "no_proxy",
    "npm_config_noproxy",
    "NPM_CONFIG_NOPROXY",
    "BUNDLE_NO_PROXY",
];

/// Sets every proxy variable in `env`.
pub fn apply(env: &mut BTreeMap<String, String>, socks5: bool, allow_local: bool) {
    let http = format!("http://127.0.0.1:{HTTP_PORT}");
    for k in HTTP_KEYS {
        env.insert(k.into(), http.clone());
    }
    let all = if socks5 {
        format!("socks5h://127.0.0.1:{SOCKS_PORT}")
    } else {
        http.clone()
    };
    for k in ALL_KEYS {
        env.insert(k.into(), all.clone());
    }
    let no_proxy = if allow_local {
        "localhost,127.0.0.1,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
    } else {
        ""
    };
    for k in NO_PROXY_KEYS {
        env.insert(k.into(), no_proxy.into());
    }
    env.remove("YARN_NO_PROXY");
    // cargo reads its own key; git and curl read HTTPS_PROXY; Node's fetch needs the opt-in.
    env.insert("CARGO_HTTP_PROXY".into(), http.clone());
    env.insert("NODE_USE_ENV_PROXY".into(), "1".into());
    env.insert("ELECTRON_GET_USE_PROXY".into(), "true".into());
    env.insert("CODEX_NETWORK_PROXY_ACTIVE".into(), "1".into());
    env.insert(
        "CODEX_NETWORK_ALLOW_LOCAL_BINDING".into(),
        if allow_local { "1" } else { "0" }.into(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrites_and_empties_no_proxy() {
        let mut env = BTreeMap::new();
        env.insert("HTTP_PROXY".to_string(), "http://evil:1".to_string());
        env.insert("YARN_NO_PROXY".to_string(), "x".to_string());
        env.insert("no_proxy".to_string(), "*".to_string());
        apply(&mut env, true, false);
        assert_eq!(env["HTTP_PROXY"], "http://127.0.0.1:3128");
        assert_eq!(env["https_proxy"], "http://127.0.0.1:3128");
        assert_eq!(env["ALL_PROXY"], "socks5h://127.0.0.1:1080");
        assert_eq!(env["no_proxy"], "");
        assert_eq!(env["CARGO_HTTP_PROXY"], "http://127.0.0.1:3128");
        assert!(!env.contains_key("YARN_NO_PROXY"));
        apply(&mut env, false, true);
        assert_eq!(env["all_proxy"], "http://127.0.0.1:3128");
        assert!(env["NO_PROXY"].contains("127.0.0.1"));
    }
}
