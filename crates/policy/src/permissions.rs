//! Role → allowed `METHOD /path` rules, and the authorization decision.
//!
//! Rules are written `GET /models` (one method), `* /v1/*` or just `/v1/*` (any method; a trailing
//! `*` makes a prefix). Matching is done against the request's real path, so a rule can be finer than
//! a route template (`POST /v1/embeddings`).

use std::collections::HashMap;

use crate::role::{Role, UnknownRole};
use crate::routes::PathPattern;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Upper-case method, or `None` for any method.
    pub method: Option<String>,
    pub pattern: PathPattern,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    #[error(
        "rule {0:?} is not of the form \"[METHOD] /path\" (METHOD is GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or *; /path may end with *)"
    )]
    BadRule(String),
    #[error(transparent)]
    UnknownRole(#[from] UnknownRole),
}

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

impl Rule {
    pub fn parse(s: &str) -> Result<Self, PermissionError> {
        let s = s.trim();
        let (method, path) = match s.split_once(char::is_whitespace) {
            Some((m, p)) => (Some(m), p.trim()),
            None => (None, s),
        };
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            return Err(PermissionError::BadRule(s.to_string()));
        }
        let method = match method {
            None | Some("*") => None,
            Some(m) => {
                let upper = m.to_ascii_uppercase();
                if !METHODS.contains(&upper.as_str()) {
                    return Err(PermissionError::BadRule(s.to_string()));
                }
                Some(upper)
            }
        };
        Ok(Rule {
            method,
            pattern: PathPattern::parse(path),
        })
    }

    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method) && self.pattern.matches(path)
    }
}

/// The rules of every role.
#[derive(Debug, Clone)]
pub struct Permissions {
    by_role: [Vec<Rule>; 3],
}

fn rules(list: &[&str]) -> Vec<Rule> {
    list.iter()
        .map(|r| Rule::parse(r).unwrap_or_else(|e| panic!("built-in rule {r:?}: {e}")))
        .collect()
}

/// The `user` role: the inference surface, and nothing else. Everything else under `/v1/*`
/// (vLLM's `load_lora_adapter`, `DELETE /v1/models/{id}`, files, fine-tuning, batches, …) is
/// admin-only unless configuration says otherwise: an allowlist fails closed when an upstream
/// adds an endpoint.
pub const USER_RULES: &[&str] = &[
    "GET /models",
    "POST /inference",
    "POST /inference/batch",
    "GET /protected",
    "POST /api/test",
    "GET /api/status",
    "GET /health/detailed",
    "GET /health",
    "HEAD /health",
    "POST /v1/chat/completions",
    "POST /v1/completions",
    "POST /v1/embeddings",
    "POST /v1/responses",
    "GET /v1/responses/*",
    "GET /v1/models",
    "GET /v1/models/*",
    "POST /v1/audio/transcriptions",
    "POST /v1/audio/translations",
    "POST /v1/audio/speech",
    "POST /v1/images/generations",
    "POST /v1/images/edits",
    "POST /v1/images/variations",
    "POST /v1/moderations",
    "POST /v1/rerank",
    "POST /v1/score",
    "POST /v1/tokenize",
    "POST /v1/detokenize",
];

impl Default for Permissions {
    fn default() -> Self {
        Self::defaults()
    }
}

impl Permissions {
    /// The documented defaults: `admin` everything; `user` the inference surface; `readonly`
    /// health, metrics and listing models.
    pub fn defaults() -> Self {
        Self {
            by_role: [
                rules(&["* /*"]),
                rules(USER_RULES),
                rules(&[
                    "GET /health",
                    "HEAD /health",
                    "GET /health/detailed",
                    "GET /metrics",
                    "GET /models",
                    "GET /protected",
                    "GET /api/status",
                ]),
            ],
        }
    }

    /// Defaults with some roles' rules replaced, as configured (`role → ["GET /models", …]`).
    pub fn with_overrides(
        overrides: &HashMap<String, Vec<String>>,
    ) -> Result<Self, PermissionError> {
        let mut p = Self::defaults();
        for (role, list) in overrides {
            let role: Role = role.parse()?;
            p.by_role[role.index()] = list
                .iter()
                .map(|r| Rule::parse(r))
                .collect::<Result<_, _>>()?;
        }
        Ok(p)
    }

    pub fn rules(&self, role: Role) -> &[Rule] {
        &self.by_role[role.index()]
    }

    /// May `role` call `method path`?
    pub fn allows(&self, role: Role, method: &str, path: &str) -> bool {
        self.by_role[role.index()]
            .iter()
            .any(|r| r.matches(method, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_matrix() {
        let p = Permissions::defaults();
        let cases = [
            (Role::Admin, "POST", "/models/load", true),
            (Role::User, "POST", "/models/load", false),
            (Role::Readonly, "POST", "/models/load", false),
            (Role::User, "GET", "/models", true),
            (Role::Readonly, "GET", "/models", true),
            (Role::User, "POST", "/inference", true),
            (Role::Readonly, "POST", "/inference", false),
            (Role::User, "POST", "/v1/chat/completions", true),
            (Role::User, "GET", "/v1/models", true),
            (Role::User, "GET", "/v1/models/llama", true),
            (Role::User, "DELETE", "/v1/models/llama", false),
            (Role::User, "POST", "/v1/load_lora_adapter", false),
            (Role::User, "POST", "/v1/unload_lora_adapter", false),
            (Role::User, "POST", "/v1/files", false),
            (Role::User, "GET", "/v1/fine_tuning/jobs", false),
            (Role::User, "POST", "/v1/batches", false),
            (Role::User, "POST", "/v1/audio/transcriptions", true),
            (Role::User, "POST", "/v1/chat/completions/extra", false),
            (Role::Admin, "POST", "/v1/load_lora_adapter", true),
            (Role::Readonly, "POST", "/v1/chat/completions", false),
            (Role::User, "GET", "/metrics", false),
            (Role::Readonly, "GET", "/metrics", true),
            (Role::Readonly, "POST", "/api/test", false),
            (Role::User, "POST", "/api/test", true),
            (Role::Readonly, "GET", "/api/status", true),
        ];
        for (role, method, path, want) in cases {
            assert_eq!(p.allows(role, method, path), want, "{role} {method} {path}");
        }
    }

    #[test]
    fn overrides_replace_a_role_and_validate() {
        let mut o = HashMap::new();
        o.insert("readonly".to_string(), vec!["GET /models".to_string()]);
        let p = Permissions::with_overrides(&o).unwrap();
        assert!(p.allows(Role::Readonly, "GET", "/models"));
        assert!(!p.allows(Role::Readonly, "GET", "/metrics"));
        assert!(p.allows(Role::User, "POST", "/inference"));

        o.insert("root".to_string(), vec![]);
        assert!(matches!(
            Permissions::with_overrides(&o),
            Err(PermissionError::UnknownRole(_))
        ));
        let mut bad = HashMap::new();
        bad.insert("user".to_string(), vec!["FETCH /x".to_string()]);
        assert!(matches!(
            Permissions::with_overrides(&bad),
            Err(PermissionError::BadRule(_))
        ));
    }
}
