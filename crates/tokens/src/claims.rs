//! What a token says: the strict claims handed to callers and the lenient shape parsed from the
//! wire.

use infergate_policy::Role;
use serde::{Deserialize, Deserializer, Serialize};

/// The claims of a verified (or freshly issued) token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The key id the token was issued for (for external tokens: the issuer's subject).
    pub sub: String,
    pub role: Role,
    /// The key's model allowlist, copied at issue time; none = every model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// A UUID v4 for own tokens; whatever the issuer sent (or empty) for external ones.
    pub jti: String,
    pub iss: String,
    pub aud: String,
}

/// `aud` as RFC 7519 allows it: one string or an array of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Every claim optional and unknown claims ignored, so that one parse serves both own tokens
/// (checked strictly afterwards) and external ones (defaults filled in). Parsing leniently also
/// keeps the error order meaningful: a token with a bad signature reports the signature, not a
/// missing field.
#[derive(Debug, Deserialize)]
pub(crate) struct RawClaims {
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub iat: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub nbf: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub exp: Option<i64>,
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub aud: Option<Audience>,
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, which some issuers write with a
/// fraction. Fractions are floored; values no clock will reach are refused rather than wrapped.
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    // Ten thousand years of seconds: far beyond any real token, far below i64 overflow in the
    // leeway arithmetic.
    const LIMIT: i64 = 315_569_520_000;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let secs = match n.as_i64() {
        Some(i) => i,
        None => match n.as_f64() {
            Some(f) if f.is_finite() && f.abs() < LIMIT as f64 => f.floor() as i64,
            _ => return Err(serde::de::Error::custom("NumericDate out of range")),
        },
    };
    if secs.abs() > LIMIT {
        return Err(serde::de::Error::custom("NumericDate out of range"));
    }
    Ok(Some(secs))
}
