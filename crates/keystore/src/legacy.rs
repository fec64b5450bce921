//! Legacy plaintext keys: the `API_KEYS` variable and the keys file's `keys:` section.
//!
//! The keys file keeps the FastAPI seed's shape, in YAML or JSON:
//! `{"keys": {"<key>": {"name": "…", "role": "user", "expires": "2027-01-19T00:00:00"}}}`.
//! `expires` may be a naive timestamp (read as UTC), RFC 3339, or a date.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use infergate_policy::Role;
use infergate_types::RateSpec;
use serde::Deserialize;

use crate::KeyStoreError;

/// A key as configured, secret included. Lives only until the store digests it.
#[derive(Clone, PartialEq)]
pub struct StaticKey {
    pub secret: String,
    pub name: String,
    pub role: Role,
    pub expires_at: Option<DateTime<Utc>>,
    pub rate_limit: Option<RateSpec>,
    pub origin: &'static str,
}

impl std::fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKey")
            .field("secret", &infergate_policy::mask_secret(&self.secret))
            .field("name", &self.name)
            .field("role", &self.role)
            .field("expires_at", &self.expires_at)
            .field("rate_limit", &self.rate_limit)
            .field("origin", &self.origin)
            .finish()
    }
}

/// Parses `API_KEYS`: `key:role,key:role`. A key without `:role` gets the `user` role.
pub fn parse_api_keys(value: &str, origin: &'static str) -> Result<Vec<StaticKey>, KeyStoreError> {
    let mut keys = Vec::new();
    for (i, item) in value.split(',').map(str::trim).enumerate() {
        if item.is_empty() {
            continue;
        }
        let (secret, role) = match item.rsplit_once(':') {
            Some((secret, role)) => {
                let role = role.parse::<Role>().map_err(|e| KeyStoreError::Invalid {
                    origin: origin.to_string(),
                    name: format!("#{}", i + 1),
                    detail: e.to_string(),
                })?;
                (secret.trim(), role)
            }
            None => (item, Role::User),
        };
        if secret.is_empty() {
            return Err(KeyStoreError::Invalid {
                origin: origin.to_string(),
                name: format!("#{}", i + 1),
                detail: "the key is empty".to_string(),
            });
        }
        keys.push(StaticKey {
            secret: secret.to_string(),
            name: format!("{}#{}", origin.to_ascii_lowercase(), i + 1),
            role,
            expires_at: None,
            rate_limit: None,
            origin,
        });
    }
    Ok(keys)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    /// The file store's version-2 document (see `crate::file`) shares this file; its version
    /// and hashed keys are accepted and skipped here, so the legacy section of a v2 file loads
    /// exactly as a seed file does.
    #[serde(default, rename = "version")]
    _version: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    keys: BTreeMap<String, FileEntry>,
    #[serde(default, rename = "hashed_keys")]
    _hashed_keys: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct FileEntry {
    #[serde(default)]
    name: Option<String>,
    role: String,
    #[serde(default, alias = "expires_at")]
    expires: Option<String>,
    #[serde(default)]
    rate_limit: Option<String>,
}

/// Parses a timestamp the way the seed wrote them.
pub fn parse_expiry(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(naive.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|naive| naive.and_utc())
}

/// Reads a keys file (YAML, of which JSON is a subset).
pub fn load_keys_file(path: &Path) -> Result<Vec<StaticKey>, KeyStoreError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeyStoreError::Io {
        op: "read keys file",
        path: shown.clone(),
        source,
    })?;
    parse_keys_document(&text, &shown)
}

/// Parses the text of a keys file; `origin` names it in errors.
pub fn parse_keys_document(text: &str, origin: &str) -> Result<Vec<StaticKey>, KeyStoreError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let shape: FileShape = serde_yaml::from_str(text).map_err(|e| KeyStoreError::Parse {
        path: origin.to_string(),
        detail: e.to_string(),
    })?;
    let mut keys = Vec::with_capacity(shape.keys.len());
    for (secret, entry) in shape.keys {
        let name = entry
            .name
            .clone()
            .unwrap_or_else(|| infergate_policy::mask_secret(&secret));
        let invalid = |detail: String| KeyStoreError::Invalid {
            origin: origin.to_string(),
            name: name.clone(),
            detail,
        };
        if secret.trim().is_empty() {
            return Err(invalid("the key is empty".to_string()));
        }
        let role = entry
            .role
            .parse::<Role>()
            .map_err(|e| invalid(e.to_string()))?;
        let expires_at = match entry.expires.as_deref() {
            None | Some("") => None,
            Some(s) => Some(parse_expiry(s).ok_or_else(|| {
                invalid(format!(
                    "expires {s:?} is not a timestamp (accepted: 2027-01-19T00:00:00, RFC 3339, or 2027-01-19)"
                ))
            })?),
        };
        let rate_limit = match entry.rate_limit.as_deref() {
            None | Some("") => None,
            Some(s) => Some(s.parse::<RateSpec>().map_err(|e| {
                invalid(format!(
                    "rate_limit {s:?}: {e} (accepted: {})",
                    infergate_types::RATE_SPEC_ACCEPTED
                ))
            })?),
        };
        keys.push(StaticKey {
            secret,
            name,
            role,
            expires_at,
            rate_limit,
            origin: "file",
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_variable() {
        let keys = parse_api_keys("k1:admin, k2:user,k3:readonly,k4", "API_KEYS").unwrap();
        let roles: Vec<_> = keys.iter().map(|k| k.role).collect();
        assert_eq!(roles, [Role::Admin, Role::User, Role::Readonly, Role::User]);
        assert_eq!(keys[1].secret, "k2");
        let err = parse_api_keys("k1:root", "API_KEYS")
            .unwrap_err()
            .to_string();
        assert!(err.contains("root"), "{err}");
        assert!(!err.contains("k1"), "error must not echo the key: {err}");
    }

    #[test]
    fn seed_json_shape_loads() {
        let json = r#"{"keys": {"sk-abc": {"name": "ci", "role": "user", "expires": "2027-01-19T00:00:00"}}}"#;
        let keys = parse_keys_document(json, "keys.json").unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].name, "ci");
        assert_eq!(
            keys[0].expires_at.map(|d| d.to_rfc3339()),
            Some("2027-01-19T00:00:00+00:00".to_string())
        );
    }

    #[test]
    fn yaml_with_rate_limit_and_bad_values() {
        let yaml = "keys:\n  sk-1:\n    name: a\n    role: admin\n    rate_limit: 5/second\n";
        let keys = parse_keys_document(yaml, "k.yaml").unwrap();
        assert_eq!(keys[0].rate_limit.map(|r| r.limit), Some(5));
        let bad_role = "keys:\n  sk-1:\n    role: wizard\n";
        assert!(
            parse_keys_document(bad_role, "k.yaml")
                .unwrap_err()
                .to_string()
                .contains("wizard")
        );
        let bad_exp = "keys:\n  sk-1:\n    role: user\n    expires: tomorrow\n";
        assert!(parse_keys_document(bad_exp, "k.yaml").is_err());
    }
}
