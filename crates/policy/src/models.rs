//! A key's model allowlist, applied to what a request body names: the top-level `model` (or the
//! FastAPI seed's `model_name`), and each item of a batch. A body naming no model is refused
//! too: the upstream's default model may not be one the key may use.

/// The model a body named (none, when it named none) that its key may not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRefused {
    pub model: Option<String>,
}

/// Whether `model` is on the allowlist (exact names: an allowlist is not a pattern language).
pub fn model_allowed(allowed: &[String], model: &str) -> bool {
    allowed.iter().any(|a| a == model)
}

/// Checks the models a body names against `allowed`: one entry per request the body holds (the
/// body itself, or each item of a batch), `None` for one that names no model. Reading the names
/// out of the body is the caller's (the gateway reads them from the borrowed document it
/// validated, `model` or else the FastAPI seed's `model_name`).
pub fn check_models<'a>(
    named: impl IntoIterator<Item = Option<&'a str>>,
    allowed: &[String],
) -> Result<(), ModelRefused> {
    named.into_iter().try_for_each(|name| match name {
        Some(model) if model_allowed(allowed, model) => Ok(()),
        other => Err(ModelRefused {
            model: other.map(str::to_string),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["llama".into(), "qwen".into()]
    }

    #[test]
    fn every_named_model_must_be_allowed() {
        assert!(check_models([Some("llama")], &allowed()).is_ok());
        assert!(check_models([Some("llama"), Some("qwen")], &allowed()).is_ok());
        assert_eq!(
            check_models([Some("gpt")], &allowed()),
            Err(ModelRefused {
                model: Some("gpt".into())
            })
        );
        // A request naming no model is refused: the upstream's default may not be allowed.
        assert_eq!(
            check_models([None], &allowed()),
            Err(ModelRefused { model: None })
        );
        assert_eq!(
            check_models([Some("llama"), Some("gpt"), None], &allowed()),
            Err(ModelRefused {
                model: Some("gpt".into())
            })
        );
        // Names are exact: no prefix, case or pattern matching.
        assert!(!model_allowed(&allowed(), "Llama"));
        assert!(!model_allowed(&allowed(), "llama-70b"));
    }
}
