//! Request bodies and query strings, parsed field by field so every refusal names its field
//! (`422 {"field": "expires_at", …}`). Unknown fields are refused too: a typo in `expires_at`
//! must not silently mint a key that never expires.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use infergate_keystore::{KeyState, format};
use infergate_policy::Role;
use infergate_ratelimit::{RATE_SPEC_ACCEPTED, RateSpec};
use serde_json::{Map, Value};

use crate::error::AdminError;

pub const NAME_MAX_CHARS: usize = 100;
pub const EXPIRES_IN_DAYS_MAX: i64 = 3650;
pub const MODELS_MAX: usize = 100;
pub const MODEL_NAME_MAX_CHARS: usize = 200;
pub const METADATA_MAX_BYTES: usize = 16 * 1024;
pub const GRACE_SECONDS_MAX: i64 = 7 * 24 * 3600;
pub const LIST_LIMIT_DEFAULT: usize = 50;
pub const LIST_LIMIT_MAX: usize = 500;
pub const AUDIT_LIMIT_DEFAULT: usize = 100;
pub const AUDIT_LIMIT_MAX: usize = 1000;

fn invalid(field: &str, detail: impl Into<String>) -> AdminError {
    AdminError::validation(field, detail)
}

/// The body as a JSON object. An empty body is `{}` when `empty_ok`.
pub fn object(body: &[u8], empty_ok: bool) -> Result<Map<String, Value>, AdminError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if empty_ok {
            Ok(Map::new())
        } else {
            Err(AdminError::MalformedJson("the body is empty".into()))
        };
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(invalid("body", "must be a JSON object")),
        Err(e) => Err(AdminError::MalformedJson(e.to_string())),
    }
}

/// Refuses fields outside `allowed`.
pub fn only(body: &Map<String, Value>, allowed: &[&str]) -> Result<(), AdminError> {
    match body.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(
            k,
            format!("unknown field (accepted: {})", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

pub fn name(v: &Value) -> Result<String, AdminError> {
    let Value::String(s) = v else {
        return Err(invalid("name", "must be a string"));
    };
    let s = s.trim();
    let n = s.chars().count();
    if n == 0 || n > NAME_MAX_CHARS {
        return Err(invalid(
            "name",
            format!("must be 1-{NAME_MAX_CHARS} characters (got {n})"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid("name", "must not contain control characters"));
    }
    Ok(s.to_string())
}

pub fn role(v: &Value) -> Result<Role, AdminError> {
    let Value::String(s) = v else {
        return Err(invalid("role", "must be a string: admin, user or readonly"));
    };
    s.parse::<Role>()
        .map_err(|e| invalid("role", e.to_string()))
}

/// An integer field's value: the one rule of every infergate service, JSON Schema's `integer` —
/// any number with no fractional part, so `482` and `482.0` are both 482; `482.5` is not.
pub fn whole_number(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

/// `expires_in_days` from `now`.
pub fn expires_in_days(v: &Value, now: DateTime<Utc>) -> Result<DateTime<Utc>, AdminError> {
    match whole_number(v) {
        Some(d) if (1..=EXPIRES_IN_DAYS_MAX).contains(&d) => Ok(now + ChronoDuration::days(d)),
        _ => Err(invalid(
            "expires_in_days",
            format!("must be a whole number of days from 1 to {EXPIRES_IN_DAYS_MAX}"),
        )),
    }
}

/// `expires_at` (RFC 3339). In the past only when `allow_past` (PATCH may expire a key now).
pub fn expires_at(
    v: &Value,
    now: DateTime<Utc>,
    allow_past: bool,
) -> Result<DateTime<Utc>, AdminError> {
    let Some(s) = v.as_str() else {
        return Err(invalid(
            "expires_at",
            "must be an RFC 3339 timestamp, e.g. 2027-01-19T00:00:00Z",
        ));
    };
    let at = DateTime::parse_from_rfc3339(s.trim())
        .map_err(|_| {
            invalid(
                "expires_at",
                "must be an RFC 3339 timestamp with a zone, e.g. 2027-01-19T00:00:00Z",
            )
        })?
        .with_timezone(&Utc);
    if !allow_past && at <= now {
        return Err(invalid("expires_at", "must be in the future"));
    }
    if at > now + ChronoDuration::days(EXPIRES_IN_DAYS_MAX) {
        return Err(invalid(
            "expires_at",
            format!("must be at most {EXPIRES_IN_DAYS_MAX} days from now"),
        ));
    }
    Ok(at)
}

/// The expiry a body asks for: `Ok(None)` when it names neither field. `patch` allows a past
/// `expires_at` and `null` (returned as `Some(None)`: clear the expiry).
pub fn expiry(
    body: &Map<String, Value>,
    now: DateTime<Utc>,
    patch: bool,
) -> Result<Option<Option<DateTime<Utc>>>, AdminError> {
    match (body.get("expires_in_days"), body.get("expires_at")) {
        (Some(_), Some(_)) => Err(invalid(
            "expires_at",
            "give expires_in_days or expires_at, not both",
        )),
        (Some(d), None) => Ok(Some(Some(expires_in_days(d, now)?))),
        (None, Some(Value::Null)) if patch => Ok(Some(None)),
        (None, Some(at)) => Ok(Some(Some(expires_at(at, now, patch)?))),
        (None, None) => Ok(None),
    }
}

/// `rate_limit`: `"N/minute"`-style spec, or `null` for the role's default.
pub fn rate_limit(v: &Value) -> Result<Option<RateSpec>, AdminError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => s
            .parse::<RateSpec>()
            .map(Some)
            .map_err(|e| invalid("rate_limit", format!("{e}; accepted: {RATE_SPEC_ACCEPTED}"))),
        _ => Err(invalid(
            "rate_limit",
            format!("must be a string; accepted: {RATE_SPEC_ACCEPTED}"),
        )),
    }
}

/// A per-key budget (`tokens_per_minute`, `tokens_per_day`, `max_concurrent`): a whole number
/// from 1 to 10^12 (written as 16 or 16.0, as every integer field here), or `null` for the
/// role's default.
pub fn limit(field: &str, v: &Value) -> Result<Option<u64>, AdminError> {
    const MAX: u64 = 1_000_000_000_000;
    let whole = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= MAX as f64)
                .map(|f| f as u64)
        }),
        _ => None,
    };
    match whole {
        Some(n) if (1..=MAX).contains(&n) => Ok(Some(n)),
        _ => Err(invalid(
            field,
            format!("must be an integer from 1 to {MAX}, or null for the role's default"),
        )),
    }
}

/// `models`: an allowlist of model names, or `null` for every model.
pub fn models(v: &Value) -> Result<Option<Vec<String>>, AdminError> {
    let items = match v {
        Value::Null => return Ok(None),
        Value::Array(items) => items,
        _ => {
            return Err(invalid(
                "models",
                "must be an array of model names (or null)",
            ));
        }
    };
    if items.len() > MODELS_MAX {
        return Err(invalid("models", format!("at most {MODELS_MAX} entries")));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item.as_str().map(str::trim) {
            Some(s)
                if !s.is_empty()
                    && s.chars().count() <= MODEL_NAME_MAX_CHARS
                    && !s.chars().any(char::is_control) =>
            {
                if !out.iter().any(|m: &String| m == s) {
                    out.push(s.to_string());
                }
            }
            _ => {
                return Err(invalid(
                    "models",
                    format!(
                        "every entry must be a non-blank string of at most {MODEL_NAME_MAX_CHARS} characters, without control characters"
                    ),
                ));
            }
        }
    }
    Ok(Some(out))
}

/// `metadata`: a JSON object of at most 16 KiB serialized (`null` is an empty one).
pub fn metadata(v: &Value) -> Result<Map<String, Value>, AdminError> {
    let m = match v {
        Value::Null => return Ok(Map::new()),
        Value::Object(m) => m,
        _ => return Err(invalid("metadata", "must be a JSON object")),
    };
    let size = serde_json::to_vec(m).map_or(usize::MAX, |b| b.len());
    if size > METADATA_MAX_BYTES {
        return Err(invalid(
            "metadata",
            format!("must be at most {METADATA_MAX_BYTES} bytes serialized (got {size})"),
        ));
    }
    Ok(m.clone())
}

pub fn prefix(v: &Value) -> Result<String, AdminError> {
    let s = v.as_str().unwrap_or_default();
    format::validate_prefix(s).map_err(|e| invalid("prefix", e.to_string()))?;
    Ok(s.to_string())
}

pub fn grace_seconds(v: Option<&Value>) -> Result<i64, AdminError> {
    let Some(v) = v else { return Ok(0) };
    match whole_number(v) {
        Some(s) if (0..=GRACE_SECONDS_MAX).contains(&s) => Ok(s),
        _ => Err(invalid(
            "grace_seconds",
            format!("must be a whole number of seconds from 0 to {GRACE_SECONDS_MAX}"),
        )),
    }
}

/// A query string's parameters, refusing unknown and repeated ones.
pub fn query(raw: &str, allowed: &[&str]) -> Result<BTreeMap<String, String>, AdminError> {
    let pairs: Vec<(String, String)> =
        actix_web::web::Query::<Vec<(String, String)>>::from_query(raw)
            .map_err(|e| invalid("query", e.to_string()))?
            .into_inner();
    let mut out = BTreeMap::new();
    for (k, v) in pairs {
        if !allowed.contains(&k.as_str()) {
            return Err(invalid(
                &k,
                format!("unknown query parameter (accepted: {})", allowed.join(", ")),
            ));
        }
        if out.contains_key(&k) {
            return Err(invalid(&k, "given more than once"));
        }
        // An empty value (`?role=`, as forms send) means "not given".
        if !v.trim().is_empty() {
            out.insert(k, v);
        }
    }
    Ok(out)
}

pub fn usize_param(
    q: &BTreeMap<String, String>,
    field: &str,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, AdminError> {
    match q.get(field) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(invalid(
                field,
                format!("must be a whole number from {min} to {max}"),
            )),
        },
    }
}

pub fn role_param(q: &BTreeMap<String, String>) -> Result<Option<Role>, AdminError> {
    q.get("role")
        .map(|r| {
            r.parse::<Role>()
                .map_err(|e| invalid("role", e.to_string()))
        })
        .transpose()
}

pub fn state_param(q: &BTreeMap<String, String>) -> Result<Option<KeyState>, AdminError> {
    q.get("state")
        .map(|s| {
            s.trim()
                .parse::<KeyState>()
                .map_err(|e| invalid("state", e))
        })
        .transpose()
}

pub fn time_param(
    q: &BTreeMap<String, String>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, AdminError> {
    q.get(field)
        .map(|s| {
            DateTime::parse_from_rfc3339(s.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| invalid(field, "must be an RFC 3339 timestamp"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_refuse_what_they_should() {
        let now = Utc::now();
        assert!(name(&json!("ok")).is_ok());
        assert!(name(&json!("")).is_err());
        assert!(name(&json!("x".repeat(101))).is_err());
        assert!(name(&json!("é".repeat(100))).is_ok());
        assert!(role(&json!("superuser")).is_err());
        assert!(expires_in_days(&json!(0), now).is_err());
        assert!(expires_in_days(&json!(3651), now).is_err());
        assert!(expires_in_days(&json!(1.5), now).is_err());
        assert!(expires_in_days(&json!(3650), now).is_ok());
        assert!(expires_at(&json!("2001-01-01T00:00:00Z"), now, false).is_err());
        assert!(expires_at(&json!("2001-01-01T00:00:00Z"), now, true).is_ok());
        assert!(expires_at(&json!("tomorrow"), now, true).is_err());
        assert!(rate_limit(&json!("5/fortnight")).is_err());
        assert_eq!(rate_limit(&json!("5/minute")).unwrap().unwrap().limit, 5);
        assert!(models(&json!(["a", 1])).is_err());
        assert!(models(&json!(["a", ""])).is_err());
        assert!(models(&json!("a")).is_err());
        assert_eq!(models(&json!(["a", "a"])).unwrap().unwrap(), ["a"]);
        assert!(metadata(&json!({"a": "x".repeat(17 * 1024)})).is_err());
        assert!(metadata(&json!([1])).is_err());
        assert!(grace_seconds(Some(&json!(604_801))).is_err());
        assert_eq!(grace_seconds(None).unwrap(), 0);
        let both = json!({"expires_at": "2030-01-01T00:00:00Z", "expires_in_days": 3});
        let err = expiry(both.as_object().unwrap(), now, false).unwrap_err();
        assert_eq!(err.field(), Some("expires_at"));
    }

    #[test]
    fn queries_are_strict() {
        let q = query("role=user&limit=3", &["role", "limit"]).unwrap();
        assert_eq!(q["role"], "user");
        assert!(query("rol=user", &["role"]).is_err());
        assert!(query("role=a&role=b", &["role"]).is_err());
        assert!(
            query("role=&limit=", &["role", "limit"])
                .unwrap()
                .is_empty()
        );
        assert!(usize_param(&q, "limit", 50, 1, 500).is_ok());
        let q = query("limit=501", &["limit"]).unwrap();
        assert!(usize_param(&q, "limit", 50, 1, 500).is_err());
    }
}
