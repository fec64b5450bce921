//! Checking presented tokens (the gateway's side).
//!
//! The order is fixed: shape and header (refusing `alg: none` before anything else), issuer
//! (chosen from the unverified `iss`, which only picks the key set), key and pinned algorithm,
//! signature, then time, audience and the remaining claims. Nothing of the payload is trusted
//! before the signature is checked except the issuer name used to pick the keys.

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use infergate_config::{JwtAlgorithm, JwtSettings};
use infergate_policy::Role;
use jsonwebtoken::Algorithm;

use crate::claims::{Audience, RawClaims};
use crate::keys::{self, VerifyKey};
use crate::{TokenClaims, TokenError, settings};

/// Longest token accepted. Own tokens are ~400 bytes; external ones rarely exceed 2 KiB. The
/// cap bounds the base64/JSON work an unauthenticated client can cause.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub claims: TokenClaims,
    /// true for tokens from an external issuer (no key record behind them)
    pub external: bool,
}

/// One trusted issuer: the keys that may sign its tokens and the audience they must name.
struct Trusted {
    audience: String,
    keys: Vec<VerifyKey>,
    default_role: Option<Role>,
    external: bool,
}

/// Verifies own tokens and those of the configured external issuers.
pub struct TokenVerifier {
    /// Keyed by the exact `iss` value.
    issuers: HashMap<String, Trusted>,
    leeway_seconds: i64,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut issuers: Vec<_> = self
            .issuers
            .iter()
            .map(|(iss, t)| {
                let algs: Vec<Algorithm> = t.keys.iter().map(|k| k.alg).collect();
                (iss.as_str(), t.audience.as_str(), t.external, algs)
            })
            .collect();
        issuers.sort_by(|a, b| a.0.cmp(b.0));
        f.debug_struct("TokenVerifier")
            .field("issuers", &issuers)
            .field("leeway_seconds", &self.leeway_seconds)
            .finish()
    }
}

/// Just what is needed from the JOSE header. Parsed by hand rather than with jsonwebtoken's
/// `Header`, whose algorithm enum cannot even represent `none`: refusing it must be explicit.
#[derive(serde::Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

impl TokenVerifier {
    /// Own tokens: `public_key_file` (EdDSA/ES256) or `secret` (HS256), pinned to
    /// `settings.algorithm`; plus every external issuer (keys from PEM files or a JWKS file;
    /// RS256/ES256/EdDSA; `kid` matching for JWKS). Errors name the setting and file.
    pub fn from_settings(s: &JwtSettings) -> Result<Self, TokenError> {
        settings::check_identity(&s.issuer, &s.audience)?;
        let alg = settings::algorithm(s.algorithm);
        let own_key = match s.algorithm {
            JwtAlgorithm::HS256 => VerifyKey {
                alg,
                kid: None,
                key: jsonwebtoken::DecodingKey::from_secret(settings::hs256_secret(s)?),
            },
            JwtAlgorithm::EdDSA | JwtAlgorithm::ES256 => {
                let path = s.public_key_file.as_deref().ok_or_else(|| {
                    TokenError::Config(format!(
                        "{} is required to verify {:?} tokens",
                        settings::PUBLIC_KEY_SETTING,
                        s.algorithm
                    ))
                })?;
                keys::own_public_key(path, alg, settings::PUBLIC_KEY_SETTING)?
            }
        };
        let mut issuers = HashMap::new();
        issuers.insert(
            s.issuer.clone(),
            Trusted {
                audience: s.audience.clone(),
                keys: vec![own_key],
                default_role: None,
                external: false,
            },
        );

        for (i, ext) in s.external_issuers.iter().enumerate() {
            let name = format!("jwt.external_issuers[{i}] ({})", ext.issuer);
            if ext.issuer.trim().is_empty() || ext.audience.trim().is_empty() {
                return Err(TokenError::Config(format!(
                    "jwt.external_issuers[{i}]: issuer and audience must not be empty"
                )));
            }
            // One `iss` maps to one key set; a clash would make the choice of keys arbitrary.
            if issuers.contains_key(&ext.issuer) {
                return Err(TokenError::Config(format!(
                    "{name}: the issuer is already configured (as jwt.issuer or an earlier external issuer)"
                )));
            }
            let mut keys = Vec::new();
            for (j, path) in ext.public_key_files.iter().enumerate() {
                keys.push(keys::external_pem_key(
                    path,
                    &format!("{name}.public_key_files[{j}]"),
                )?);
            }
            if let Some(path) = &ext.jwks_file {
                keys.extend(keys::jwks_keys(path, &format!("{name}.jwks_file"))?);
            }
            if keys.is_empty() {
                return Err(TokenError::Config(format!(
                    "{name}: no usable RS256, ES256 or EdDSA signing key in its public_key_files or jwks_file"
                )));
            }
            issuers.insert(
                ext.issuer.clone(),
                Trusted {
                    audience: ext.audience.clone(),
                    keys,
                    default_role: ext.default_role,
                    external: true,
                },
            );
        }

        Ok(Self {
            issuers,
            // Leeway is a few seconds of clock skew; clamping keeps the arithmetic in range.
            leeway_seconds: i64::try_from(s.leeway.as_secs())
                .unwrap_or(i64::MAX)
                .min(86_400),
        })
    }

    /// Verifies `token` against the system clock.
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        self.verify_at(token, Utc::now())
    }

    /// Verifies `token` as of `now` (tests and replays inject the time).
    pub fn verify_at(&self, token: &str, now: DateTime<Utc>) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(malformed("token is longer than 8 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("not three dot-separated parts"));
        };

        let header: RawHeader = decode_json(header_b64, "header")?;
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(TokenError::DisallowedAlgorithm("none".into()));
        }
        // RFC 7515 §4.1.11: extensions listed in `crit` must be understood; we understand none.
        if header.crit.is_some() {
            return Err(malformed("crit header parameters are not supported"));
        }
        let alg: Algorithm = header
            .alg
            .parse()
            .map_err(|_| TokenError::DisallowedAlgorithm(printable(&header.alg)))?;

        let claims: RawClaims = decode_json(payload_b64, "payload")?;
        let trusted = claims
            .iss
            .as_deref()
            .and_then(|iss| self.issuers.get(iss))
            .ok_or(TokenError::InvalidIssuer)?;

        // Own tokens have one key; `kid` only narrows an external issuer's set. Keys without a
        // kid (PEM files) stay candidates whatever the token names.
        let candidates: Vec<&VerifyKey> = match (&header.kid, trusted.external) {
            (Some(kid), true) => trusted
                .keys
                .iter()
                .filter(|k| k.kid.as_deref().is_none_or(|k| k == kid))
                .collect(),
            _ => trusted.keys.iter().collect(),
        };
        if candidates.is_empty() {
            return Err(TokenError::UnknownKey);
        }
        // The algorithm comes from the key, never from the token: a token whose header names
        // another one (HS256 "signed" with a public key as the secret, say) is refused here.
        let pinned: Vec<&VerifyKey> = candidates.into_iter().filter(|k| k.alg == alg).collect();
        if pinned.is_empty() {
            return Err(TokenError::DisallowedAlgorithm(printable(&header.alg)));
        }

        if URL_SAFE_NO_PAD.decode(signature_b64).is_err() {
            return Err(malformed("signature is not base64url"));
        }
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        let signed = pinned.iter().any(|k| {
            jsonwebtoken::crypto::verify(signature_b64, signing_input.as_bytes(), &k.key, alg)
                .unwrap_or(false)
        });
        if !signed {
            return Err(TokenError::InvalidSignature);
        }

        let claims = self.check_claims(claims, trusted, now)?;
        Ok(VerifiedToken {
            claims,
            external: trusted.external,
        })
    }

    /// Time, audience and the claims the gateway relies on; runs on signed claims only.
    fn check_claims(
        &self,
        c: RawClaims,
        trusted: &Trusted,
        now: DateTime<Utc>,
    ) -> Result<TokenClaims, TokenError> {
        let now = now.timestamp();
        let exp = c.exp.ok_or_else(|| malformed("no exp claim"))?;
        // RFC 7519 §4.1.4: valid only while now < exp; the leeway absorbs clock skew.
        if now >= exp.saturating_add(self.leeway_seconds) {
            return Err(TokenError::Expired);
        }
        if c.nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway_seconds))
        {
            return Err(TokenError::NotYetValid);
        }
        // Exact string equality. Own tokens carry one string; an external issuer may send the
        // RFC 7519 array form, which must then contain our audience exactly.
        let aud_ok = match &c.aud {
            Some(Audience::One(a)) => *a == trusted.audience,
            Some(Audience::Many(list)) => trusted.external && list.contains(&trusted.audience),
            None => false,
        };
        if !aud_ok {
            return Err(TokenError::InvalidAudience);
        }
        let sub = c
            .sub
            .filter(|s| !s.is_empty())
            .ok_or_else(|| malformed("no sub claim"))?;
        let role = match c.role.as_deref() {
            Some(r) => r
                .parse::<Role>()
                .map_err(|_| malformed("role claim is not admin, user or readonly"))?,
            None => trusted.default_role.ok_or(TokenError::MissingRole)?,
        };
        let iss = c.iss.unwrap_or_default();
        let aud = trusted.audience.clone();

        if trusted.external {
            // External issuers need not send jti, iat or nbf: fill what the gateway expects.
            let iat = c.iat.or(c.nbf).unwrap_or(now);
            Ok(TokenClaims {
                sub,
                role,
                models: c.models,
                iat,
                nbf: c.nbf.unwrap_or(iat),
                exp,
                jti: c.jti.unwrap_or_default(),
                iss,
                aud,
            })
        } else {
            // Own tokens always carry every claim; a gap means the token was not minted here.
            Ok(TokenClaims {
                sub,
                role,
                models: c.models,
                iat: c.iat.ok_or_else(|| malformed("no iat claim"))?,
                nbf: c.nbf.ok_or_else(|| malformed("no nbf claim"))?,
                exp,
                jti: c
                    .jti
                    .filter(|j| !j.is_empty())
                    .ok_or_else(|| malformed("no jti claim"))?,
                iss,
                aud,
            })
        }
    }
}

fn malformed(why: &str) -> TokenError {
    TokenError::Malformed(why.to_owned())
}

/// Decodes one base64url JSON segment. Errors say which segment and where, never what it held.
fn decode_json<T: serde::de::DeserializeOwned>(segment: &str, what: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed(format!("{what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        TokenError::Malformed(format!(
            "{what} is not the expected JSON object (column {})",
            e.column()
        ))
    })
}

/// An attacker-chosen algorithm name, cut to something safe to put in a log line or a metric.
fn printable(alg: &str) -> String {
    alg.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+'))
        .take(16)
        .collect()
}
