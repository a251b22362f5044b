//! Validation of the sandbox fields of a request. Until Landlock/seccomp enforcement lands,
//! the only policies that can be honoured are "no policy" and "danger-full-access": every
//! other policy is refused with -32021 rather than run with less confinement than requested.

use serde_json::Value;

use crate::protocol::{ErrorCode, RpcError};

/// What a request asked for, as far as this build can honour it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// No policy given: the server default applies (currently unconfined).
    Default,
    /// `danger-full-access` (or `permissions.type = disabled`): nothing is confined.
    FullAccess,
}

/// Checks `sandboxPolicy` / `sandbox` of a `process/start`.
pub fn check_request(
    sandbox_policy: Option<&Value>,
    sandbox: Option<&Value>,
) -> Result<Requested, RpcError> {
    let sandbox_policy = sandbox_policy.filter(|v| !v.is_null());
    let sandbox = sandbox.filter(|v| !v.is_null());
    match (sandbox_policy, sandbox) {
        (Some(_), Some(_)) => Err(RpcError::invalid_params(
            "send either sandboxPolicy or sandbox, not both",
        )),
        (None, None) => Ok(Requested::Default),
        (Some(p), None) => match p.get("type").and_then(Value::as_str) {
            Some("danger-full-access") => Ok(Requested::FullAccess),
            Some(t) => Err(unavailable(t)),
            None => Err(RpcError::invalid_params(
                "sandboxPolicy.type: missing or not a string",
            )),
        },
        (None, Some(s)) => match s.pointer("/permissions/type").and_then(Value::as_str) {
            Some("disabled") => Ok(Requested::FullAccess),
            Some(t) => Err(unavailable(t)),
            None => Err(RpcError::invalid_params(
                "sandbox.permissions.type: missing or not a string",
            )),
        },
    }
}

fn unavailable(kind: &str) -> RpcError {
    RpcError::new(
        ErrorCode::SandboxUnavailable,
        format!(
            "sandbox enforcement not available: policy `{kind}` cannot be enforced by this build of stockade"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_unconfined_policies_pass() {
        assert_eq!(check_request(None, None), Ok(Requested::Default));
        assert_eq!(
            check_request(Some(&json!({"type":"danger-full-access"})), None),
            Ok(Requested::FullAccess)
        );
        assert_eq!(
            check_request(None, Some(&json!({"permissions":{"type":"disabled"}}))),
            Ok(Requested::FullAccess)
        );
        let e = check_request(Some(&json!({"type":"read-only"})), None).unwrap_err();
        assert_eq!(e.code, -32021);
        let e = check_request(Some(&json!({})), Some(&json!({}))).unwrap_err();
        assert_eq!(e.code, -32602);
    }
}
