//! Section 2: the JSON-RPC "lite" envelope and the error codes.

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The error codes of PROTOCOL.md section 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// -32600: unparseable JSON, oversized message, handshake order, duplicate process id,
    /// unknown process on read, denied or invalid filesystem access.
    InvalidRequest,
    /// -32601: the method does not exist.
    MethodNotFound,
    /// -32602: the params do not have the required shape.
    InvalidParams,
    /// -32603: the server failed (e.g. spawn failure).
    Internal,
    /// -32004: filesystem path not found.
    NotFound,
    /// -32010: the session is attached to another connection.
    SessionAttached,
    /// -32020: the sandbox policy is above the server's ceiling.
    PolicyNotAllowed,
    /// -32021: the sandbox policy cannot be enforced on this host.
    SandboxUnavailable,
}

impl ErrorCode {
    /// The numeric code sent on the wire.
    pub fn code(self) -> i64 {
        match self {
            ErrorCode::InvalidRequest => -32600,
            ErrorCode::MethodNotFound => -32601,
            ErrorCode::InvalidParams => -32602,
            ErrorCode::Internal => -32603,
            ErrorCode::NotFound => -32004,
            ErrorCode::SessionAttached => -32010,
            ErrorCode::PolicyNotAllowed => -32020,
            ErrorCode::SandboxUnavailable => -32021,
        }
    }
}

/// A JSON-RPC error object: `{"code", "message", "data"?}`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RpcError {
    /// Numeric error code (see [`ErrorCode`]).
    pub code: i64,
    /// Human-readable message; PROTOCOL.md fixes the exact text for many errors.
    pub message: String,
    /// Optional machine-readable details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// Builds an error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RpcError {
            code: code.code(),
            message: message.into(),
            data: None,
        }
    }

    /// -32600 with the given message.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// -32602 with the given message.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParams, message)
    }

    /// -32603 with the given message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

/// One incoming message, classified by its shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// `{"id", "method", "params"?}`.
    Request {
        /// The id, echoed exactly in the reply (integer or string).
        id: Value,
        /// The method name.
        method: String,
        /// The params (`null` when missing).
        params: Value,
    },
    /// `{"method", "params"?}` without an id.
    Notification {
        /// The method name.
        method: String,
    },
    /// A response or error object sent by the client (not allowed: closes the connection).
    Response,
    /// Valid JSON that is none of the above.
    Invalid {
        /// The id if one was present, to echo in the error.
        id: Option<Value>,
        /// Why the message is invalid.
        reason: String,
    },
}

/// Result of decoding one frame: the message and whether it carried `"jsonrpc": "2.0"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The classified message.
    pub message: Incoming,
    /// True when the message had `"jsonrpc": "2.0"`.
    pub jsonrpc: bool,
}

/// Decodes one frame's bytes. `Err` carries the parse error text (reply: id -1, -32600).
pub fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(classify(value))
}

/// Classifies a parsed JSON value as request, notification, response or invalid.
pub fn classify(value: Value) -> Decoded {
    let Value::Object(mut map) = value else {
        return Decoded {
            message: Incoming::Invalid {
                id: None,
                reason: "message must be a JSON object".into(),
            },
            jsonrpc: false,
        };
    };
    let jsonrpc = map.get("jsonrpc").and_then(Value::as_str) == Some("2.0");
    let id = map.remove("id");
    let method = map.remove("method");
    let params = map.remove("params").unwrap_or(Value::Null);
    let message = match (id, method) {
        (Some(id), Some(Value::String(method))) => Incoming::Request { id, method, params },
        (None, Some(Value::String(method))) => Incoming::Notification { method },
        (id, Some(_)) => Incoming::Invalid {
            id,
            reason: "method must be a string".into(),
        },
        (Some(_), None) if map.contains_key("result") || map.contains_key("error") => {
            Incoming::Response
        }
        (id, None) => Incoming::Invalid {
            id,
            reason: "message has no method".into(),
        },
    };
    Decoded { message, jsonrpc }
}

/// Builds a response object `{"id", "result"}`.
pub fn response(id: Value, result: Value) -> Value {
    serde_json::json!({"id": id, "result": result})
}

/// Builds an error object `{"id", "error"}`.
pub fn error_response(id: Value, error: &RpcError) -> Value {
    serde_json::json!({"id": id, "error": error})
}

/// Builds a notification object `{"method", "params"}`.
pub fn notification(method: &str, params: Value) -> Value {
    serde_json::json!({"method": method, "params": params})
}

/// Decodes params, naming the offending field on failure (-32602).
pub fn parse_params<T: DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    if params.is_null() {
        return Err(RpcError::invalid_params(
            "invalid params: expected an object, got null",
        ));
    }
    serde_path_to_error::deserialize(params).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { "" } else { path.as_str() };
        // Unknown keys of strict objects (`limits`) name the key and the likely intended one.
        let msg = super::strict::explain_serde_error(path, &e.inner().to_string());
        RpcError::invalid_params(format!("invalid params: {msg}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_each_shape() {
        let d = decode(br#"{"id":7,"method":"initialize","jsonrpc":"2.0"}"#).unwrap();
        assert!(d.jsonrpc);
        assert_eq!(
            d.message,
            Incoming::Request {
                id: json!(7),
                method: "initialize".into(),
                params: Value::Null
            }
        );
        let d = decode(br#"{"method":"initialized"}"#).unwrap();
        assert!(!d.jsonrpc);
        assert_eq!(
            d.message,
            Incoming::Notification {
                method: "initialized".into()
            }
        );
        let d = decode(br#"{"id":"a","result":{}}"#).unwrap();
        assert_eq!(d.message, Incoming::Response);
        let d = decode(br#"[1,2]"#).unwrap();
        assert!(matches!(d.message, Incoming::Invalid { id: None, .. }));
        let d = decode(br#"{"id":"x","method":5}"#).unwrap();
        assert!(matches!(d.message, Incoming::Invalid { id: Some(_), .. }));
        assert!(decode(b"{nope").is_err());
    }

    #[test]
    fn ids_are_kept_exactly() {
        let d = decode(br#"{"id":"00123","method":"m"}"#).unwrap();
        let Incoming::Request { id, .. } = d.message else {
            panic!()
        };
        assert_eq!(response(id, json!({})), json!({"id":"00123","result":{}}));
    }
}
