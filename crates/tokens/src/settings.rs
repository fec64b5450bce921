//! Shared reading of [`JwtSettings`]: setting names for error messages and the checks both the
//! issuer and the verifier apply.

use infergate_config::{JwtAlgorithm, JwtSettings};
use jsonwebtoken::Algorithm;

use crate::TokenError;

pub(crate) const PRIVATE_KEY_SETTING: &str =
    "INFERGATE_JWT_PRIVATE_KEY_FILE (jwt.private_key_file)";
pub(crate) const PUBLIC_KEY_SETTING: &str = "INFERGATE_JWT_PUBLIC_KEY_FILE (jwt.public_key_file)";
pub(crate) const SECRET_SETTING: &str =
    "INFERGATE_JWT_SECRET / INFERGATE_JWT_SECRET_FILE (jwt.secret_file)";
pub(crate) const TTL_SETTING: &str = "INFERGATE_JWT_TTL_SECONDS (jwt.ttl_seconds)";
const ISSUER_SETTING: &str = "INFERGATE_JWT_ISSUER (jwt.issuer)";
const AUDIENCE_SETTING: &str = "INFERGATE_JWT_AUDIENCE (jwt.audience)";

/// Tokens are meant to be short-lived; a month is far beyond any sensible TTL and keeps the
/// timestamp arithmetic trivially in range.
pub(crate) const MAX_TTL_SECONDS: i64 = 31 * 24 * 3600;

/// Same floor as the config crate applies when JWTs are enabled, repeated here because this
/// crate may be handed settings that were never validated with `enabled: true`.
const MIN_SECRET_BYTES: usize = 32;

pub(crate) fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::HS256 => Algorithm::HS256,
    }
}

/// The setting that holds the signing key for `a`.
pub(crate) fn signing_setting(a: JwtAlgorithm) -> &'static str {
    match a {
        JwtAlgorithm::HS256 => SECRET_SETTING,
        JwtAlgorithm::EdDSA | JwtAlgorithm::ES256 => PRIVATE_KEY_SETTING,
    }
}

pub(crate) fn hs256_secret(s: &JwtSettings) -> Result<&[u8], TokenError> {
    match &s.secret {
        Some(secret) if secret.expose().len() >= MIN_SECRET_BYTES => Ok(secret.expose().as_bytes()),
        Some(_) => Err(TokenError::Config(format!(
            "{SECRET_SETTING}: the HS256 secret must be at least {MIN_SECRET_BYTES} bytes"
        ))),
        None => Err(TokenError::Config(format!(
            "{SECRET_SETTING} is required for HS256 tokens"
        ))),
    }
}

pub(crate) fn check_identity(issuer: &str, audience: &str) -> Result<(), TokenError> {
    if issuer.trim().is_empty() {
        return Err(TokenError::Config(format!(
            "{ISSUER_SETTING} must not be empty"
        )));
    }
    if audience.trim().is_empty() {
        return Err(TokenError::Config(format!(
            "{AUDIENCE_SETTING} must not be empty"
        )));
    }
    Ok(())
}
