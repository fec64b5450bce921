//! Short-lived JWTs for infergate.
//!
//! key-admin exchanges an API key for a token ([`TokenIssuer`]); the gateway accepts that token,
//! and tokens from configured external issuers, as a second kind of credential
//! ([`TokenVerifier`]). Both read the shared `jwt:` settings ([`infergate_config::JwtSettings`]).
//!
//! Layout:
//! - `claims`: [`TokenClaims`], and the lenient wire shape both own and external tokens are
//!   parsed into before they are checked.
//! - `issuer`: [`TokenIssuer`] — `exp` never beyond the key's own expiry.
//! - `verifier`: [`TokenVerifier`] — every key is pinned to one algorithm (EdDSA, ES256 or HS256
//!   for own tokens; RS256, ES256 or EdDSA for external ones) and the token's `alg` must equal
//!   it, which refuses `alg: none` and HS/RS key confusion.
//! - `keys`: PEM and JWKS loading, checked at startup; [`generate_ed25519_pem`].
//! - [`TokenError`]: one error type with a stable [`TokenError::reason`] for metrics.
//! - `identity`: [`identify`] — from a verified token to the key record it stands for. A token
//!   proves who it was issued to, not that the key is still live: an own token's key is looked
//!   up (a revoked key's tokens die with it), and its model list is cut to what the key still
//!   allows; an external issuer's token gets a record of its own.
//!
//! A crate of its own because the issuer (key-admin) and the verifier (gateway) must agree on
//! claims, algorithms and key handling exactly; one crate holds both sides.
//!
//! Cryptography is jsonwebtoken's `rust_crypto` backend. The workspace must enable exactly one
//! backend; with none or both, jsonwebtoken compiles but panics at the first signature.
#![forbid(unsafe_code)]

mod claims;
mod error;
mod identity;
mod issuer;
mod keys;
mod settings;
mod verifier;

pub use claims::TokenClaims;
pub use error::TokenError;
pub use identity::identify;
pub use issuer::TokenIssuer;
pub use verifier::{MAX_TOKEN_LEN, TokenVerifier, VerifiedToken};

/// Cheap shape test (3 base64url segments, header starts "eyJ") so the gateway can route a
/// Bearer value to JWT or API-key handling without parsing.
///
/// The signature segment may be empty so that an unsigned (`alg: none`) token is routed to JWT
/// handling and refused there with a precise reason, instead of failing as an unknown API key.
/// API keys (`igk_…`) contain no dots and never match.
pub fn looks_like_jwt(s: &str) -> bool {
    fn b64url(seg: &str) -> bool {
        seg.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }
    if !s.starts_with("eyJ") {
        return false;
    }
    let mut parts = s.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(sig), None) => {
            !p.is_empty() && b64url(h) && b64url(p) && b64url(sig)
        }
        _ => false,
    }
}

/// A fresh Ed25519 key pair as (private PKCS#8 PEM, public SPKI PEM), from the OS CSPRNG — for
/// the admin CLI and tests.
///
/// The DER is assembled from the fixed RFC 8410 prefixes and 32 random bytes; the public half
/// is derived through jsonwebtoken's own Ed25519 backend, so this adds no crypto dependency.
pub fn generate_ed25519_pem() -> Result<(String, String), TokenError> {
    keys::generate_ed25519_pem()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use infergate_config::{JwtAlgorithm, JwtSettings, Secret};

    use super::*;

    fn settings(algorithm: JwtAlgorithm) -> JwtSettings {
        JwtSettings {
            enabled: true,
            algorithm,
            private_key_file: None,
            public_key_file: None,
            secret: None,
            secret_file: None,
            issuer: "infergate".into(),
            audience: "infergate-gateway".into(),
            ttl: Duration::from_secs(900),
            leeway: Duration::from_secs(5),
            external_issuers: Vec::new(),
        }
    }

    fn config_message(r: Result<impl std::fmt::Debug, TokenError>) -> String {
        match r {
            Err(TokenError::Config(m)) => m,
            other => panic!("expected a Config error, got {other:?}"),
        }
    }

    #[test]
    fn missing_private_key_file_names_the_setting() {
        let m = config_message(TokenIssuer::from_settings(&settings(JwtAlgorithm::EdDSA)));
        assert!(m.contains("INFERGATE_JWT_PRIVATE_KEY_FILE"), "{m}");
        assert!(m.contains("jwt.private_key_file"), "{m}");
    }

    #[test]
    fn unreadable_private_key_file_names_the_setting_and_file() {
        let mut s = settings(JwtAlgorithm::ES256);
        s.private_key_file = Some(PathBuf::from("/nonexistent/infergate-test/jwt.pem"));
        let m = config_message(TokenIssuer::from_settings(&s));
        assert!(m.contains("jwt.private_key_file"), "{m}");
        assert!(m.contains("/nonexistent/infergate-test/jwt.pem"), "{m}");
    }

    #[test]
    fn missing_public_key_file_names_the_setting() {
        let m = config_message(TokenVerifier::from_settings(&settings(JwtAlgorithm::EdDSA)));
        assert!(m.contains("INFERGATE_JWT_PUBLIC_KEY_FILE"), "{m}");
    }

    #[test]
    fn short_or_missing_hs256_secret_names_the_setting_without_showing_it() {
        let m = config_message(TokenIssuer::from_settings(&settings(JwtAlgorithm::HS256)));
        assert!(m.contains("INFERGATE_JWT_SECRET"), "{m}");
        let mut s = settings(JwtAlgorithm::HS256);
        s.secret = Some(Secret::new("too-short-secret-value"));
        let m = config_message(TokenVerifier::from_settings(&s));
        assert!(m.contains("INFERGATE_JWT_SECRET"), "{m}");
        assert!(!m.contains("too-short-secret-value"), "{m}");
    }

    #[test]
    fn reasons_are_stable_snake_case() {
        let all = [
            TokenError::Config(String::new()),
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::InvalidSignature,
            TokenError::InvalidIssuer,
            TokenError::InvalidAudience,
            TokenError::Malformed(String::new()),
            TokenError::DisallowedAlgorithm(String::new()),
            TokenError::MissingRole,
            TokenError::KeyExpired,
            TokenError::UnknownKey,
            TokenError::Internal(String::new()),
        ];
        let reasons: Vec<&str> = all.iter().map(TokenError::reason).collect();
        assert_eq!(
            reasons,
            [
                "config",
                "expired",
                "not_yet_valid",
                "bad_signature",
                "bad_issuer",
                "bad_audience",
                "malformed",
                "disallowed_algorithm",
                "missing_role",
                "key_expired",
                "unknown_key",
                "internal"
            ]
        );
    }

    #[test]
    fn generated_pem_has_the_rfc8410_shape() {
        let (private, public) = generate_ed25519_pem().expect("generate");
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI"));
        assert!(private.ends_with("-----END PRIVATE KEY-----\n"));
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"));
        assert!(public.ends_with("-----END PUBLIC KEY-----\n"));
        let (other, _) = generate_ed25519_pem().expect("generate");
        assert_ne!(private, other, "two calls must give two keys");
    }
}
