//! Validation of protocol messages against the committed JSON Schema
//! (`schema/stockade-protocol.json`). A small validator for the keywords that schema uses
//! (`$ref` to `#/$defs/...`, `type`, `const`, `enum`, `properties`, `required`,
//! `additionalProperties`, `items`, `anyOf`, `oneOf`, `not`, `minimum`, `maximum`; `format`,
//! `default` and `description` are annotations): a maintained validator crate would bring
//! dozens of dependencies for this. An unknown keyword is an error, so the validator cannot
//! silently check less than the schema says.

use std::sync::OnceLock;

use serde_json::Value;

/// The committed schema, embedded at build time (the unprivileged pass cannot read the
/// checkout).
pub const SCHEMA_TEXT: &str = include_str!("../../schema/stockade-protocol.json");

/// The parsed schema.
pub fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| serde_json::from_str(SCHEMA_TEXT).expect("schema is valid JSON"))
}

const ANNOTATIONS: [&str; 5] = ["description", "default", "format", "title", "$schema"];

/// Resolves a `#/$defs/Name` reference.
pub fn resolve(reference: &str) -> &'static Value {
    let name = reference
        .strip_prefix("#/$defs/")
        .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
    schema()["$defs"]
        .get(name)
        .unwrap_or_else(|| panic!("$ref to a missing definition {reference}"))
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        other => panic!("unsupported type {other}"),
    }
}

/// Checks `v` against `schema`; the error names the path of the first violation.
pub fn check(schema: &Value, v: &Value, path: &str) -> Result<(), String> {
    let obj = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return Err(format!("{path}: not allowed here")),
        Value::Object(o) => o,
        other => panic!("invalid schema {other}"),
    };
    for (key, sub) in obj {
        match key.as_str() {
            k if ANNOTATIONS.contains(&k) => {}
            "$ref" => check(resolve(sub.as_str().unwrap()), v, path)?,
            "type" => {
                let ok = match sub {
                    Value::String(t) => type_matches(t, v),
                    Value::Array(ts) => ts.iter().any(|t| type_matches(t.as_str().unwrap(), v)),
                    _ => panic!("invalid type {sub}"),
                };
                if !ok {
                    return Err(format!("{path}: expected type {sub}, got {v}"));
                }
            }
            "const" if sub != v => return Err(format!("{path}: expected {sub}, got {v}")),
            "const" => {}
            "enum" if !sub.as_array().unwrap().contains(v) => {
                return Err(format!("{path}: {v} is not one of {sub}"));
            }
            "enum" => {}
            "minimum" => {
                if let Some(n) = v.as_f64()
                    && n < sub.as_f64().unwrap()
                {
                    return Err(format!("{path}: {v} is below the minimum {sub}"));
                }
            }
            "maximum" => {
                if let Some(n) = v.as_f64()
                    && n > sub.as_f64().unwrap()
                {
                    return Err(format!("{path}: {v} is above the maximum {sub}"));
                }
            }
            "properties" => {
                if let Value::Object(m) = v {
                    for (name, s) in sub.as_object().unwrap() {
                        if let Some(x) = m.get(name) {
                            check(s, x, &format!("{path}.{name}"))?;
                        }
                    }
                }
            }
            "required" => {
                if let Value::Object(m) = v {
                    for name in sub.as_array().unwrap() {
                        let name = name.as_str().unwrap();
                        if !m.contains_key(name) {
                            return Err(format!("{path}: missing required field {name}"));
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Value::Object(m) = v {
                    let known = obj.get("properties").and_then(Value::as_object);
                    for (name, x) in m {
                        if known.is_some_and(|k| k.contains_key(name)) {
                            continue;
                        }
                        check(sub, x, &format!("{path}.{name}")).map_err(|_| {
                            format!("{path}.{name}: field not in the schema (value {x})")
                        })?;
                    }
                }
            }
            "items" => {
                if let Value::Array(items) = v {
                    for (i, x) in items.iter().enumerate() {
                        check(sub, x, &format!("{path}[{i}]"))?;
                    }
                }
            }
            "anyOf" => {
                let alts = sub.as_array().unwrap();
                let mut errors = Vec::new();
                for alt in alts {
                    match check(alt, v, path) {
                        Ok(()) => {
                            errors.clear();
                            break;
                        }
                        Err(e) => errors.push(e),
                    }
                }
                if !errors.is_empty() {
                    return Err(format!(
                        "{path}: matches none of anyOf: {}",
                        errors.join(" | ")
                    ));
                }
            }
            "oneOf" => {
                let alts = sub.as_array().unwrap();
                let results: Vec<_> = alts.iter().map(|alt| check(alt, v, path)).collect();
                let matched = results.iter().filter(|r| r.is_ok()).count();
                if matched != 1 {
                    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
                    return Err(format!(
                        "{path}: matches {matched} of oneOf (exactly 1 needed): {}",
                        errors.join(" | ")
                    ));
                }
            }
            "not" => {
                if check(sub, v, path).is_ok() {
                    return Err(format!("{path}: matches a `not` schema {sub}"));
                }
            }
            other => panic!("the schema validator does not know the keyword {other}"),
        }
    }
    Ok(())
}

/// The schema of `part` (`params`, `result`) of `method` (from `x-stockade-methods`).
pub fn method_part(method: &str, part: &str) -> Option<&'static Value> {
    schema()["x-stockade-methods"].get(method).map(|m| &m[part])
}

/// Checks a request the server answered with a result: its params and the result. A message
/// the server accepts that the schema refuses, or a result it does not describe, is a bug in
/// one of them.
pub fn check_exchange(method: &str, request: &Value, response: &Value) -> Result<(), String> {
    if response.get("error").is_some() {
        return check(resolve("#/$defs/ErrorResponse"), response, "error response");
    }
    let Some(entry) = schema()["x-stockade-methods"].get(method) else {
        return Err(format!(
            "{method} answered with a result but is not in the schema: {response}"
        ));
    };
    check(
        resolve(entry["request"].as_str().unwrap()),
        request,
        &format!("{method} request"),
    )?;
    check(
        resolve(entry["response"].as_str().unwrap()),
        response,
        &format!("{method} response"),
    )
}

/// Checks one message the server sent: a notification or an error whole, a response's envelope
/// (its result is checked by [`check_exchange`], which knows the method).
pub fn check_server_message(msg: &Value) -> Result<(), String> {
    if let Some(method) = msg.get("method").and_then(Value::as_str) {
        let Some(def) = schema()["x-stockade-notifications"].get(method) else {
            return Err(format!("notification {method} is not in the schema: {msg}"));
        };
        return check(resolve(def.as_str().unwrap()), msg, method);
    }
    if msg.get("error").is_some() {
        return check(resolve("#/$defs/ErrorResponse"), msg, "error response");
    }
    // A response does not name its method: its result is checked by `check_exchange`.
    match (msg.get("id"), msg.get("result")) {
        (Some(id), Some(_)) => check(resolve("#/$defs/Id"), id, "response.id"),
        _ => Err(format!(
            "neither a notification, an error nor a response: {msg}"
        )),
    }
}
