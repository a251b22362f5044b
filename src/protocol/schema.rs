//! The JSON Schema of the protocol (`schema/stockade-protocol.json`), generated from the wire
//! types with `schemars`: `stockade schema` prints it, `tests/schema.rs` fails when the
//! committed file differs from what the types generate, and the integration tests validate
//! every message they exchange with the server against it (`tests/common/schema.rs`).
//!
//! Most params and results are the types of the other `protocol` modules; the policy objects
//! are the shapes of `protocol::policy`, which the server also parses. The notifications and
//! small results that are written as JSON directly are described here by types that exist only
//! for the schema. Their honesty is checked from the outside: a message the server accepts or
//! sends that does not validate fails the test that exchanged it.
//!
//! The schema-only types derive `Serialize` (never `Deserialize`: the server does not read
//! them) and `JsonSchema`, which follows their serde attributes.
//!
//! Objects the server sends have `additionalProperties: false`, so a field added on the wire
//! without being added here fails the tests. Request params are lenient at the top level (as
//! the server is, PROTOCOL.md section 9) and strict inside the policy objects.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::envelope::{ErrorCode, RpcError};
use super::fs::{
    CopyParams, CreateDirectoryParams, DirEntry, Metadata, PathParams, RemoveParams,
    WriteFileParams,
};
use super::handshake::{EnvironmentInfo, InitializeParams, InitializeResult};
use super::process::{
    ClosedParams, ExitedParams, ProcessRef, ReadParams, ReadResult, ResizeParams, SignalParams,
    StartParams, StartResult, WriteParams, WriteStatus,
};
use super::sandbox::LimitReport;

/// `sandboxType` of the `process/start` result (Codex's names).
#[derive(Debug, Serialize, JsonSchema)]
pub enum SandboxTypeName {
    /// Some confinement applies.
    #[serde(rename = "linuxSeccomp")]
    LinuxSeccomp,
    /// Nothing confined.
    #[serde(rename = "none")]
    None,
}

/// The stream of an output chunk.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamName {
    /// Standard output (no tty).
    Stdout,
    /// Standard error (no tty).
    Stderr,
    /// The terminal (tty processes: both merged).
    Pty,
}

/// The policy names a report gives.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReportPolicyName {
    /// 6.2 `read-only`.
    ReadOnly,
    /// 6.2 `workspace-write`.
    WorkspaceWrite,
    /// 6.2 `external-sandbox`.
    ExternalSandbox,
    /// 6.2 `danger-full-access` (also 6.3 `disabled`).
    DangerFullAccess,
    /// 6.3 `managed`.
    Managed,
    /// 6.3 `external`.
    External,
}

/// `filesystem` of a report.
#[derive(Debug, Serialize, JsonSchema)]
pub enum FilesystemMechanism {
    /// Landlock alone.
    #[serde(rename = "landlock")]
    Landlock,
    /// Landlock and a private mount namespace.
    #[serde(rename = "landlock+mount-namespace")]
    LandlockMountNamespace,
    /// No filesystem confinement.
    #[serde(rename = "none")]
    None,
}

/// `network` of a report.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkState {
    /// No socket reaches a network.
    Blocked,
    /// The network is reachable.
    Allowed,
}

/// `limits` of a report: each effective limit (PROTOCOL.md section 7).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct LimitsReport {
    /// See `limits.wallTimeMs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time_ms: Option<LimitReport>,
    /// See `limits.cpuTimeMs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_ms: Option<LimitReport>,
    /// See `limits.memoryBytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<LimitReport>,
    /// See `limits.maxProcesses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_processes: Option<LimitReport>,
    /// See `limits.maxFileSizeBytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_size_bytes: Option<LimitReport>,
    /// See `limits.maxOpenFiles`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_files: Option<LimitReport>,
    /// See `limits.maxOutputBytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<LimitReport>,
}

/// `process/output` params.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct OutputNotification {
    /// The handle.
    pub process_id: String,
    /// Sequence number (per process, from 1, shared with exited and closed).
    pub seq: u64,
    /// Which stream.
    pub stream: StreamName,
    /// The bytes, base64.
    pub chunk: String,
}

/// `{}`: the result of methods that return nothing.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EmptyResult {}

/// Result of `process/write` and `process/closeStdin`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WriteResult {
    /// What happened.
    pub status: WriteStatus,
}

/// Result of `process/terminate`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TerminateResult {
    /// The main process had not exited yet.
    pub running: bool,
}

/// Result of `process/signal`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SignalResult {
    /// The signal was sent (false once the process is closed or its group is gone).
    pub delivered: bool,
}

/// Result of `fs/readFile`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct ReadFileResult {
    /// The content, base64.
    pub data_base64: String,
}

/// Result of `fs/readDirectory`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ReadDirectoryResult {
    /// The entries, sorted by name.
    pub entries: Vec<DirEntry>,
}

/// Result of `fs/canonicalize`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CanonicalizeResult {
    /// The path with every symlink resolved, in the form the request used.
    pub path: String,
}

/// Params of `environment/info`: anything (ignored).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct AnyParams(pub Value);

/// Every method: (name, params schema, result schema, params may be missing or null). Params
/// come from `input` (a generator for what the server reads: optional fields are optional),
/// results from `output` (for what it writes: a field it always writes is required).
fn methods(
    input: &mut SchemaGenerator,
    output: &mut SchemaGenerator,
) -> Vec<(&'static str, Schema, Schema, bool)> {
    let (i, o) = (input, output);
    vec![
        (
            "initialize",
            i.subschema_for::<Option<InitializeParams>>(),
            o.subschema_for::<InitializeResult>(),
            true,
        ),
        (
            "environment/info",
            i.subschema_for::<AnyParams>(),
            o.subschema_for::<EnvironmentInfo>(),
            true,
        ),
        (
            "process/start",
            i.subschema_for::<StartParams>(),
            o.subschema_for::<StartResult>(),
            false,
        ),
        (
            "process/read",
            i.subschema_for::<ReadParams>(),
            o.subschema_for::<ReadResult>(),
            false,
        ),
        (
            "process/write",
            i.subschema_for::<WriteParams>(),
            o.subschema_for::<WriteResult>(),
            false,
        ),
        (
            "process/closeStdin",
            i.subschema_for::<ProcessRef>(),
            o.subschema_for::<WriteResult>(),
            false,
        ),
        (
            "process/terminate",
            i.subschema_for::<ProcessRef>(),
            o.subschema_for::<TerminateResult>(),
            false,
        ),
        (
            "process/signal",
            i.subschema_for::<SignalParams>(),
            o.subschema_for::<SignalResult>(),
            false,
        ),
        (
            "process/resize",
            i.subschema_for::<ResizeParams>(),
            o.subschema_for::<EmptyResult>(),
            false,
        ),
        (
            "fs/readFile",
            i.subschema_for::<PathParams>(),
            o.subschema_for::<ReadFileResult>(),
            false,
        ),
        (
            "fs/writeFile",
            i.subschema_for::<WriteFileParams>(),
            o.subschema_for::<EmptyResult>(),
            false,
        ),
        (
            "fs/createDirectory",
            i.subschema_for::<CreateDirectoryParams>(),
            o.subschema_for::<EmptyResult>(),
            false,
        ),
        (
            "fs/getMetadata",
            i.subschema_for::<PathParams>(),
            o.subschema_for::<Metadata>(),
            false,
        ),
        (
            "fs/readDirectory",
            i.subschema_for::<PathParams>(),
            o.subschema_for::<ReadDirectoryResult>(),
            false,
        ),
        (
            "fs/remove",
            i.subschema_for::<RemoveParams>(),
            o.subschema_for::<EmptyResult>(),
            false,
        ),
        (
            "fs/copy",
            i.subschema_for::<CopyParams>(),
            o.subschema_for::<EmptyResult>(),
            false,
        ),
        (
            "fs/canonicalize",
            i.subschema_for::<PathParams>(),
            o.subschema_for::<CanonicalizeResult>(),
            false,
        ),
    ]
}

/// The `$defs` name of a method's message: `process/closeStdin` → `ProcessCloseStdin`.
fn message_name(method: &str) -> String {
    method
        .split(['/', '_'])
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

/// The whole schema document: `$defs` of every wire type and one message definition per
/// request, response and notification; the root accepts any message of either direction.
/// `x-stockade-methods` and `x-stockade-notifications` map each method to its definitions
/// (a response does not name its method, so a client looks its result schema up there).
pub fn protocol_schema() -> Value {
    let mut input = SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator();
    let mut output = SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator();
    let methods = methods(&mut input, &mut output);
    let notifications = [
        (
            "process/output",
            output.subschema_for::<OutputNotification>(),
        ),
        ("process/exited", output.subschema_for::<ExitedParams>()),
        ("process/closed", output.subschema_for::<ClosedParams>()),
    ];
    let error = output.subschema_for::<RpcError>();
    let mut defs: Map<String, Value> = input.take_definitions(true);
    for (name, def) in output.take_definitions(true) {
        // One name, one shape: a type both read and written must read as it is written.
        if let Some(other) = defs.get(&name) {
            assert_eq!(other, &def, "{name} differs between params and results");
        }
        defs.insert(name, def);
    }

    let jsonrpc = json!({"const": "2.0", "description": "Optional on input; mirrored by the server when the first message of the connection carried it"});
    defs.insert(
        "Id".into(),
        json!({"description": "A request id, echoed unchanged in its response; -1 in errors about a message without one", "type": ["integer", "string"]}),
    );
    let codes: Vec<i64> = [
        ErrorCode::InvalidRequest,
        ErrorCode::MethodNotFound,
        ErrorCode::InvalidParams,
        ErrorCode::Internal,
        ErrorCode::NotFound,
        ErrorCode::SessionAttached,
        ErrorCode::PolicyNotAllowed,
        ErrorCode::SandboxUnavailable,
    ]
    .iter()
    .map(|c| c.code())
    .collect();
    if let Some(code) = defs
        .get_mut("RpcError")
        .and_then(|e| e.pointer_mut("/properties/code"))
    {
        code["enum"] = json!(codes);
    }
    defs.insert(
        "ErrorResponse".into(),
        json!({"type": "object", "additionalProperties": false,
               "properties": {"jsonrpc": jsonrpc, "id": {"$ref": "#/$defs/Id"}, "error": error},
               "required": ["id", "error"]}),
    );

    let mut client = vec![json!({"$ref": "#/$defs/InitializedNotification"})];
    let mut server = vec![json!({"$ref": "#/$defs/ErrorResponse"})];
    let mut table = Map::new();
    for (method, params, result, optional) in methods {
        let name = message_name(method);
        let mut required = vec!["id", "method"];
        if !optional {
            required.push("params");
        }
        defs.insert(
            format!("{name}Request"),
            json!({"type": "object",
                   "properties": {"jsonrpc": jsonrpc, "id": {"$ref": "#/$defs/Id"},
                                  "method": {"const": method}, "params": params},
                   "required": required}),
        );
        defs.insert(
            format!("{name}Response"),
            json!({"type": "object", "additionalProperties": false,
                   "properties": {"jsonrpc": jsonrpc, "id": {"$ref": "#/$defs/Id"},
                                  "result": result},
                   "required": ["id", "result"]}),
        );
        client.push(json!({"$ref": format!("#/$defs/{name}Request")}));
        server.push(json!({"$ref": format!("#/$defs/{name}Response")}));
        table.insert(
            method.into(),
            json!({"request": format!("#/$defs/{name}Request"),
                   "params": params, "result": result,
                   "response": format!("#/$defs/{name}Response")}),
        );
    }
    defs.insert(
        "InitializedNotification".into(),
        json!({"type": "object",
               "properties": {"jsonrpc": jsonrpc, "method": {"const": "initialized"}},
               "required": ["method"], "not": {"required": ["id"]}}),
    );
    let mut notes = Map::new();
    for (method, params) in notifications {
        let name = format!("{}Notification", message_name(method));
        defs.insert(
            name.clone(),
            json!({"type": "object", "additionalProperties": false,
                   "properties": {"jsonrpc": jsonrpc, "method": {"const": method},
                                  "params": params},
                   "required": ["method", "params"]}),
        );
        server.push(json!({"$ref": format!("#/$defs/{name}")}));
        notes.insert(method.into(), json!(format!("#/$defs/{name}")));
    }
    defs.insert("ClientMessage".into(), json!({"oneOf": client}));
    defs.insert("ServerMessage".into(), json!({"anyOf": server}));
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "stockade protocol",
        "description": format!(
            "The stockade wire protocol (docs/PROTOCOL.md), version {}: JSON-RPC lite messages \
             in both directions. Generated from the Rust wire types by `stockade schema`; do not \
             edit by hand.",
            env!("CARGO_PKG_VERSION")
        ),
        "anyOf": [{"$ref": "#/$defs/ClientMessage"}, {"$ref": "#/$defs/ServerMessage"}],
        "x-stockade-methods": table,
        "x-stockade-notifications": notes,
        "$defs": defs,
    })
}

/// The schema as the committed file holds it: pretty JSON with a final newline.
pub fn protocol_schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&protocol_schema()).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names() {
        assert_eq!(message_name("process/closeStdin"), "ProcessCloseStdin");
        assert_eq!(message_name("fs/readFile"), "FsReadFile");
        assert_eq!(message_name("environment/info"), "EnvironmentInfo");
    }

    #[test]
    fn every_policy_shape_is_defined() {
        let s = protocol_schema();
        for name in [
            "SandboxPolicyShape",
            "SandboxShape",
            "EnvPolicyShape",
            "Limits",
            "SandboxReport",
            "RpcError",
            "ProcessExitedNotification",
        ] {
            assert!(s["$defs"].get(name).is_some(), "{name} missing");
        }
    }
}
