//! JSON bodies against each route's schema, and the models a body names against a key's
//! allowlist (see [`super`]).
//!
//! The checks read the borrowed document ([`crate::json::Json`]) and name an offending field by
//! its path (`messages[2].content[0].text`); the path is only rendered for an error, so a valid
//! body is checked without an allocation.

use serde_json::Value;

use crate::error::GatewayError;
use crate::json::{Json, Object};
use infergate_policy::Schema;

/// Where a checked value stands in the body.
#[derive(Clone, Copy)]
enum At<'p> {
    Body,
    /// Item `index` of the array `name` inside `parent`.
    Item(&'p At<'p>, &'static str, usize),
}

impl At<'_> {
    fn render(&self, out: &mut String) {
        if let At::Item(parent, name, index) = self {
            parent.render(out);
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(name);
            out.push('[');
            out.push_str(&index.to_string());
            out.push(']');
        }
    }

    /// The path of the member `field` of the value here.
    fn field(&self, field: &str) -> String {
        let mut out = String::new();
        self.render(&mut out);
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(field);
        out
    }

    /// The path of the value here; the body itself is `body`.
    fn whole(&self) -> String {
        let mut out = String::new();
        self.render(&mut out);
        if out.is_empty() {
            out.push_str("body");
        }
        out
    }
}

fn field_err(field: impl Into<String>, detail: impl Into<String>) -> GatewayError {
    GatewayError::Validation {
        field: field.into(),
        detail: detail.into(),
    }
}

fn req_string<'a>(obj: &'a Object<'_>, at: At<'_>, field: &str) -> Result<&'a str, GatewayError> {
    match obj.get(field) {
        None | Some(Json::Null) => Err(field_err(at.field(field), "is required (a string)")),
        Some(Json::String(s)) if s.trim().is_empty() => {
            Err(field_err(at.field(field), "must not be empty"))
        }
        Some(Json::String(s)) => Ok(s),
        Some(_) => Err(field_err(at.field(field), "must be a string")),
    }
}

fn opt_string(obj: &Object<'_>, at: At<'_>, field: &str) -> Result<(), GatewayError> {
    match obj.get(field) {
        None | Some(Json::Null) | Some(Json::String(_)) => Ok(()),
        Some(_) => Err(field_err(at.field(field), "must be a string")),
    }
}

fn opt_int(
    obj: &Object<'_>,
    at: At<'_>,
    field: &str,
    min: i64,
    max: i64,
) -> Result<(), GatewayError> {
    match obj.get(field) {
        None | Some(Json::Null) => Ok(()),
        // One rule for every integer field, in every service: JSON Schema's `integer`, any
        // number with no fractional part (16 and 16.0 are both 16; 16.5 is not).
        Some(Json::Number(n)) if whole(n).is_some_and(|v| (min..=max).contains(&v)) => Ok(()),
        Some(_) => Err(field_err(
            at.field(field),
            format!("must be an integer from {min} to {max}"),
        )),
    }
}

/// The value of an integer field under the one rule (see `opt_int`).
pub fn whole(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

/// [`whole`] for a `serde_json::Value` (the metered path's document).
pub fn whole_number(v: &Value) -> Option<i64> {
    v.as_number().and_then(whole)
}

fn opt_num(
    obj: &Object<'_>,
    at: At<'_>,
    field: &str,
    min: f64,
    max: f64,
) -> Result<(), GatewayError> {
    match obj.get(field) {
        None | Some(Json::Null) => Ok(()),
        Some(Json::Number(n)) if n.as_f64().is_some_and(|v| v >= min && v <= max) => Ok(()),
        Some(_) => Err(field_err(
            at.field(field),
            format!("must be a number from {min} to {max}"),
        )),
    }
}

fn opt_bool(obj: &Object<'_>, at: At<'_>, field: &str) -> Result<(), GatewayError> {
    match obj.get(field) {
        None | Some(Json::Null) | Some(Json::Bool(_)) => Ok(()),
        Some(_) => Err(field_err(at.field(field), "must be true or false")),
    }
}

fn sampling(obj: &Object<'_>, at: At<'_>) -> Result<(), GatewayError> {
    opt_int(obj, at, "max_tokens", 1, 1_000_000)?;
    opt_num(obj, at, "temperature", 0.0, 2.0)?;
    opt_num(obj, at, "top_p", 0.0, 1.0)?;
    opt_bool(obj, at, "stream")
}

fn object<'a, 'b>(v: &'a Json<'b>, at: At<'_>) -> Result<&'a Object<'b>, GatewayError> {
    v.as_object()
        .ok_or_else(|| field_err(at.whole(), "must be a JSON object"))
}

fn inference(v: &Json<'_>, at: At<'_>) -> Result<(), GatewayError> {
    let obj = object(v, at)?;
    req_string(obj, at, "prompt")?;
    opt_string(obj, at, "model")?;
    sampling(obj, at)
}

fn string_or_strings(obj: &Object<'_>, field: &str) -> Result<(), GatewayError> {
    match obj.get(field) {
        Some(Json::String(_)) => Ok(()),
        Some(Json::Array(items)) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                if !(item.is_string() || item.is_array() || item.is_number()) {
                    return Err(field_err(
                        format!("{field}[{i}]"),
                        "must be a string or a token array",
                    ));
                }
            }
            Ok(())
        }
        Some(Json::Array(_)) => Err(field_err(field, "must not be empty")),
        None | Some(Json::Null) => Err(field_err(
            field,
            "is required (a string or an array of strings)",
        )),
        Some(_) => Err(field_err(field, "must be a string or an array of strings")),
    }
}

/// A message's content parts: objects with a string `type`; `text` parts carry a string `text`.
fn content_parts(parts: &[Json<'_>], message: At<'_>) -> Result<(), GatewayError> {
    for (j, part) in parts.iter().enumerate() {
        let at = At::Item(&message, "content", j);
        let po = object(part, at)?;
        let kind = req_string(po, at, "type")?;
        if kind == "text" && !po.get("text").is_some_and(Json::is_string) {
            return Err(field_err(at.field("text"), "is required (a string)"));
        }
    }
    Ok(())
}

const CHAT_ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Checks a parsed body against the schema of the route it was sent to (the route table names
/// it: [`infergate_policy::Route::schema`]).
pub fn check_body(schema: Schema, body: &Json<'_>) -> Result<(), GatewayError> {
    let root = At::Body;
    match schema {
        Schema::Any => Ok(()),
        Schema::Inference => inference(body, root),
        Schema::InferenceBatch => {
            let obj = object(body, root)?;
            match obj.get("requests") {
                Some(Json::Array(items)) if items.is_empty() => {
                    Err(field_err("requests", "must not be empty"))
                }
                Some(Json::Array(items)) if items.len() > 256 => {
                    Err(field_err("requests", "must hold at most 256 requests"))
                }
                Some(Json::Array(items)) => items
                    .iter()
                    .enumerate()
                    .try_for_each(|(i, item)| inference(item, At::Item(&root, "requests", i))),
                None | Some(Json::Null) => Err(field_err(
                    "requests",
                    "is required (an array of inference requests)",
                )),
                Some(_) => Err(field_err(
                    "requests",
                    "must be an array of inference requests",
                )),
            }
        }
        Schema::ModelsLoad => {
            // The FastAPI seed names the field `model_name`; `model` is the OpenAI-style name.
            let obj = object(body, root)?;
            match (obj.get("model"), obj.get("model_name")) {
                (Some(_), Some(_)) => Err(field_err(
                    "model_name",
                    "give either model or model_name, not both",
                )),
                (None, Some(_)) => req_string(obj, root, "model_name").map(|_| ()),
                _ => req_string(obj, root, "model").map(|_| ()),
            }
        }
        Schema::ApiTest => {
            let obj = object(body, root)?;
            let name = req_string(obj, root, "test_name")?;
            if name.chars().count() > 100 {
                return Err(field_err("test_name", "must be at most 100 characters"));
            }
            opt_int(obj, root, "iterations", 1, 1000)?;
            opt_num(obj, root, "timeout", 0.001, 300.0)
        }
        Schema::Responses => {
            let obj = object(body, root)?;
            req_string(obj, root, "model")?;
            opt_int(obj, root, "max_output_tokens", 1, 1_000_000)?;
            opt_string(obj, root, "instructions")?;
            opt_num(obj, root, "temperature", 0.0, 2.0)?;
            opt_num(obj, root, "top_p", 0.0, 1.0)?;
            opt_bool(obj, root, "stream")?;
            match obj.get("input") {
                Some(Json::String(_)) => Ok(()),
                Some(Json::Array(items)) if !items.is_empty() => Ok(()),
                Some(Json::Array(_)) => Err(field_err("input", "must not be empty")),
                None | Some(Json::Null) => Err(field_err(
                    "input",
                    "is required (a string or an array of input items)",
                )),
                Some(_) => Err(field_err(
                    "input",
                    "must be a string or an array of input items",
                )),
            }
        }
        Schema::ChatCompletions => {
            let obj = object(body, root)?;
            req_string(obj, root, "model")?;
            opt_int(obj, root, "n", 1, 16)?;
            opt_int(obj, root, "max_completion_tokens", 1, 1_000_000)?;
            sampling(obj, root)?;
            match obj.get("messages") {
                Some(Json::Array(msgs)) if !msgs.is_empty() => {
                    for (i, m) in msgs.iter().enumerate() {
                        let at = At::Item(&root, "messages", i);
                        let mo = object(m, at)?;
                        let role = req_string(mo, at, "role")?;
                        if !CHAT_ROLES.contains(&role) {
                            return Err(field_err(
                                at.field("role"),
                                format!("must be one of {}", CHAT_ROLES.join(", ")),
                            ));
                        }
                        match mo.get("content") {
                            Some(Json::Array(parts)) => content_parts(parts, at)?,
                            Some(Json::String(_)) | Some(Json::Null) => {}
                            None if role == "assistant" => {}
                            None => {
                                return Err(field_err(at.field("content"), "is required"));
                            }
                            Some(_) => {
                                return Err(field_err(
                                    at.field("content"),
                                    "must be a string or an array of content parts",
                                ));
                            }
                        }
                    }
                    Ok(())
                }
                Some(Json::Array(_)) => Err(field_err("messages", "must not be empty")),
                None | Some(Json::Null) => {
                    Err(field_err("messages", "is required (an array of messages)"))
                }
                Some(_) => Err(field_err("messages", "must be an array of messages")),
            }
        }
        Schema::Completions => {
            let obj = object(body, root)?;
            req_string(obj, root, "model")?;
            sampling(obj, root)?;
            string_or_strings(obj, "prompt")
        }
        Schema::Embeddings => {
            let obj = object(body, root)?;
            req_string(obj, root, "model")?;
            string_or_strings(obj, "input")
        }
    }
}

/// Every model `body` names, checked against a key's allowlist: the top-level `model` (or the
/// FastAPI seed's `model_name`), or each item's in a batch (`requests`). A body or item naming
/// none is refused ([`infergate_policy::check_models`]).
pub fn check_models(body: &Json<'_>, allowed: &[String]) -> Result<(), GatewayError> {
    fn named<'a>(v: &'a Json<'_>) -> Option<&'a str> {
        v.get("model")
            .or_else(|| v.get("model_name"))
            .and_then(Json::as_str)
    }
    let result = match body.get("requests").and_then(Json::as_array) {
        Some(items) => infergate_policy::check_models(items.iter().map(named), allowed),
        None => infergate_policy::check_models([named(body)], allowed),
    };
    result.map_err(|refused| GatewayError::ModelNotAllowed {
        model: refused.model,
        allowed: allowed.join(", "),
    })
}

/// Parses a JSON body: malformed → 400, empty → 400, a repeated object key → 400
/// `duplicate_key` (see [`crate::json`]).
pub fn parse_json(bytes: &[u8]) -> Result<Json<'_>, GatewayError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::MalformedJson(
            "the body is empty; send a JSON object".into(),
        ));
    }
    crate::json::parse_strict(bytes).map_err(|e| match e {
        crate::json::JsonError::Malformed(m) => GatewayError::MalformedJson(m),
        crate::json::JsonError::DuplicateKey(path) => GatewayError::DuplicateKey { path },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `check_body` on a `json!` document, through the borrowed parser as a body would go.
    fn check(schema: Schema, body: serde_json::Value) -> Result<(), GatewayError> {
        let bytes = serde_json::to_vec(&body).unwrap();
        check_body(schema, &parse_json(&bytes).unwrap())
    }

    fn field_of(e: GatewayError) -> String {
        match e {
            GatewayError::Validation { field, .. } => field,
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn nested_fields_are_named_by_their_path() {
        let chat = |messages| json!({"model": "m", "messages": messages});
        let cases = [
            (chat(json!([{"role": "user"}])), "messages[0].content"),
            (chat(json!(["hi"])), "messages[0]"),
            (
                chat(
                    json!([{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "text"}]}]),
                ),
                "messages[1].content[1].text",
            ),
            (
                chat(json!([{"role": "user", "content": [{"type": "text", "text": "x"}, 7]}])),
                "messages[0].content[1]",
            ),
            (
                chat(json!([{"role": "user", "content": [{"type": ""}]}])),
                "messages[0].content[0].type",
            ),
            (json!({"model": "m", "messages": [], "n": 17}), "n"),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2.5}),
                "n",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 2}),
                "top_p",
            ),
            (
                json!({"requests": [{"prompt": "a", "max_tokens": 0}]}),
                "requests[0].max_tokens",
            ),
            (json!({"requests": [1]}), "requests[0]"),
            (json!([1]), "body"),
            (json!({"model": "m", "input": [1, {}]}), "input[1]"),
        ];
        for (body, field) in cases {
            let schema = if body.get("requests").is_some() {
                Schema::InferenceBatch
            } else if body.get("input").is_some() {
                Schema::Embeddings
            } else {
                Schema::ChatCompletions
            };
            let got = check(schema, body.clone()).map_err(field_of);
            assert_eq!(got, Err(field.to_string()), "{body}");
        }
        // Whole numbers written with a fraction part are integers; 16.0 is 16.
        assert!(
            check(
                Schema::Inference,
                json!({"prompt": "p", "max_tokens": 16.0})
            )
            .is_ok()
        );
        assert!(
            check(
                Schema::ChatCompletions,
                json!({"model": "m", "messages": [{"role": "assistant"}, {"role": "user", "content": [{"type": "image_url"}]}]})
            )
            .is_ok()
        );
    }

    #[test]
    fn every_model_a_body_names_is_checked_against_the_allowlist() {
        let allowed = vec!["llama".to_string(), "qwen".to_string()];
        let models = |body: serde_json::Value| {
            let bytes = serde_json::to_vec(&body).unwrap();
            match check_models(&parse_json(&bytes).unwrap(), &allowed) {
                Ok(()) => Ok(()),
                Err(GatewayError::ModelNotAllowed { model, .. }) => Err(model),
                Err(other) => panic!("{other:?}"),
            }
        };
        assert_eq!(models(json!({"model": "llama"})), Ok(()));
        assert_eq!(models(json!({"model_name": "qwen"})), Ok(()));
        assert_eq!(models(json!({"model": "gpt"})), Err(Some("gpt".into())));
        assert_eq!(models(json!({"prompt": "hi"})), Err(None));
        assert_eq!(models(json!({"model": 5})), Err(None));
        assert_eq!(
            models(json!({"requests": [{"model": "llama"}, {"model": "gpt"}]})),
            Err(Some("gpt".into()))
        );
        assert_eq!(
            models(json!({"requests": [{"model": "qwen"}, {"prompt": "x"}]})),
            Err(None)
        );
        assert_eq!(models(json!({"requests": [{"model": "qwen"}]})), Ok(()));
        // An escaped name is compared as the string it spells.
        let bytes = br#"{"model":"ll\u0061ma"}"#;
        assert!(check_models(&parse_json(bytes).unwrap(), &allowed).is_ok());
    }

    #[test]
    fn schemas_name_the_field() {
        let e = check(Schema::Inference, json!({"model": "m"})).unwrap_err();
        assert!(matches!(e, GatewayError::Validation { ref field, .. } if field == "prompt"));
        let e = check(
            Schema::InferenceBatch,
            json!({"requests": [{"prompt": "a"}, {"prompt": 5}]}),
        )
        .unwrap_err();
        assert!(
            matches!(e, GatewayError::Validation { ref field, .. } if field == "requests[1].prompt")
        );
        let e = check(
            Schema::ChatCompletions,
            json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
        )
        .unwrap_err();
        assert!(
            matches!(e, GatewayError::Validation { ref field, .. } if field == "messages[0].role")
        );
        assert!(
            check(
                Schema::Inference,
                json!({"prompt": "DROP TABLE users; <script>"})
            )
            .is_ok()
        );
        let e = check(Schema::ApiTest, json!({"test_name": "t", "iterations": 0})).unwrap_err();
        assert!(matches!(e, GatewayError::Validation { ref field, .. } if field == "iterations"));
    }
}
