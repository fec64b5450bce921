//! Hand-rolled request-body validation.
//!
//! Bodies are parsed into a `serde_json::Value` first and fields are pulled out by hand instead of
//! deriving `Deserialize`: serde's type errors ("invalid type: integer `5`, expected a string") do
//! not say *which* field was wrong, and the contract here is a 422 that names the field, including
//! nested paths such as `messages[2].content`.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::error::ApiError;

pub(crate) type Object = Map<String, Value>;

/// The gateway enforces the real body limits; this only has to be generous enough that the dev
/// upstream never becomes the bottleneck when the gateway's own limits are being tested.
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Parses a request body that must be a JSON object: syntax errors are 400, a well-formed
/// non-object is 422 (the body itself is the "field" at fault).
pub(crate) fn parse_object(body: &Bytes) -> Result<Object, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::invalid_field(
            "body",
            format!("request body must be a JSON object, got {}", kind(&other)),
        )),
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(crate) fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

fn wrong_type(path: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::invalid_field(
        path,
        format!("field `{path}` must be {expected}, got {}", kind(got)),
    )
}

/// Optional fields treat an explicit `null` as absent, because OpenAI SDKs routinely serialise
/// unset options that way.
fn present<'a>(obj: &'a Object, field: &str) -> Option<&'a Value> {
    obj.get(field).filter(|v| !v.is_null())
}

pub(crate) fn req_str<'a>(obj: &'a Object, prefix: &str, field: &str) -> Result<&'a str, ApiError> {
    let path = join(prefix, field);
    match present(obj, field) {
        None => Err(ApiError::missing_field(&path, "a string")),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(wrong_type(&path, "a string", other)),
    }
}

pub(crate) fn opt_str<'a>(
    obj: &'a Object,
    prefix: &str,
    field: &str,
) -> Result<Option<&'a str>, ApiError> {
    match present(obj, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(&join(prefix, field), "a string", other)),
    }
}

pub(crate) fn opt_u64(obj: &Object, prefix: &str, field: &str) -> Result<Option<u64>, ApiError> {
    match present(obj, field) {
        None => Ok(None),
        // JSON Schema's integer: 16 and 16.0 are both 16 (the gateway's rule too).
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e15)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| wrong_type(&join(prefix, field), "a non-negative integer", v)),
    }
}

pub(crate) fn opt_bool(obj: &Object, prefix: &str, field: &str) -> Result<Option<bool>, ApiError> {
    match present(obj, field) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(wrong_type(&join(prefix, field), "a boolean", other)),
    }
}

pub(crate) fn req_array<'a>(
    obj: &'a Object,
    prefix: &str,
    field: &str,
) -> Result<&'a [Value], ApiError> {
    let path = join(prefix, field);
    match present(obj, field) {
        None => Err(ApiError::missing_field(&path, "an array")),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(wrong_type(&path, "an array", other)),
    }
}

pub(crate) fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Object, ApiError> {
    match v {
        Value::Object(map) => Ok(map),
        other => Err(wrong_type(path, "an object", other)),
    }
}

/// A field that OpenAI allows to be either one string or an array of strings (`prompt`, `input`).
pub(crate) fn req_str_or_strs<'a>(
    obj: &'a Object,
    prefix: &str,
    field: &str,
) -> Result<Vec<&'a str>, ApiError> {
    let path = join(prefix, field);
    match present(obj, field) {
        None => Err(ApiError::missing_field(
            &path,
            "a string or an array of strings",
        )),
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(ApiError::invalid_field(
                    &path,
                    format!("field `{path}` must not be an empty array"),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.as_str()),
                    other => Err(wrong_type(&format!("{path}[{i}]"), "a string", other)),
                })
                .collect()
        }
        Some(other) => Err(wrong_type(&path, "a string or an array of strings", other)),
    }
}
