//! The example server configs shipped in `policies/`, compiled into the binary so that a user
//! who installed stockade without its source (`cargo install`) has them:
//! `stockade config example NAME` prints one.

/// (name, file text) of each example server config, commented inline.
pub const SERVER_CONFIGS: [(&str, &str); 3] = [
    (
        "ci-runner",
        include_str!("../policies/server-ci-runner.toml"),
    ),
    (
        "agent-workstation",
        include_str!("../policies/server-agent-workstation.toml"),
    ),
    (
        "locked-down",
        include_str!("../policies/server-locked-down.toml"),
    ),
];

/// The example config called `name`, or an error listing the names.
pub fn server_config(name: &str) -> Result<&'static str, String> {
    SERVER_CONFIGS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .ok_or_else(|| {
            let names: Vec<&str> = SERVER_CONFIGS.iter().map(|(n, _)| *n).collect();
            format!(
                "no example config named {name:?}; the examples are: {}",
                names.join(", ")
            )
        })
}
