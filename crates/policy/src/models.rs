//! A key's model allowlist, applied to what a request body names: the top-level `model` (or the
//! FastAPI seed's `model_name`), and each item of a batch. A body naming no model is refused
//! too: the upstream's default model may not be one the key may use.

use serde_json::Value;

/// The model a body named (none, when it named none) that its key may not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRefused {
    pub model: Option<String>,
}

/// Whether `model` is on the allowlist (exact names: an allowlist is not a pattern language).
pub fn model_allowed(allowed: &[String], model: &str) -> bool {
    allowed.iter().any(|a| a == model)
}

/// Checks every model `body` names against `allowed`.
pub fn check_models(body: &Value, allowed: &[String]) -> Result<(), ModelRefused> {
    match body.get("requests").and_then(Value::as_array) {
        Some(items) => items.iter().try_for_each(|i| check_model(i, allowed)),
        None => check_model(body, allowed),
    }
}

/// One body's (or batch item's) `model`; `model_name` is the seed's name for it (`POST
/// /models/load`; body validation allows one of the two, never both).
fn check_model(v: &Value, allowed: &[String]) -> Result<(), ModelRefused> {
    let named = v
        .get("model")
        .or_else(|| v.get("model_name"))
        .and_then(Value::as_str);
    match named {
        Some(model) if model_allowed(allowed, model) => Ok(()),
        other => Err(ModelRefused {
            model: other.map(str::to_string),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn allowed() -> Vec<String> {
        vec!["llama".into(), "qwen".into()]
    }

    #[test]
    fn every_named_model_must_be_allowed() {
        assert!(check_models(&json!({"model": "llama"}), &allowed()).is_ok());
        assert!(check_models(&json!({"model_name": "qwen"}), &allowed()).is_ok());
        assert_eq!(
            check_models(&json!({"model": "gpt"}), &allowed()),
            Err(ModelRefused {
                model: Some("gpt".into())
            })
        );
        assert_eq!(
            check_models(&json!({"prompt": "hi"}), &allowed()),
            Err(ModelRefused { model: None })
        );
        let batch = json!({"requests": [{"model": "llama"}, {"model": "gpt"}]});
        assert_eq!(
            check_models(&batch, &allowed()),
            Err(ModelRefused {
                model: Some("gpt".into())
            })
        );
        assert!(check_models(&json!({"requests": [{"model": "qwen"}]}), &allowed()).is_ok());
        // Names are exact: no prefix, case or pattern matching.
        assert!(!model_allowed(&allowed(), "Llama"));
        assert!(!model_allowed(&allowed(), "llama-70b"));
    }
}
