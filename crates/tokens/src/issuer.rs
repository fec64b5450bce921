//! Minting tokens for key records (key-admin's side).

use std::fmt;

use chrono::{DateTime, Utc};
use infergate_config::{JwtAlgorithm, JwtSettings};
use infergate_keystore::{KeyRecord, KeyState};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::keys::{self, VerifyKey};
use crate::{TokenClaims, TokenError, settings};

/// Signs tokens with the key from the settings. Holds the private key or secret: its `Debug`
/// shows neither.
pub struct TokenIssuer {
    algorithm: Algorithm,
    key: EncodingKey,
    issuer: String,
    audience: String,
    ttl_seconds: i64,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl_seconds", &self.ttl_seconds)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// Needs `private_key_file` (EdDSA/ES256) or `secret` (HS256). Errors name the setting.
    ///
    /// The key signs a probe message here, so a key that cannot sign fails at startup, and
    /// when `public_key_file` is set too, the probe must verify with it: a private/public pair
    /// that does not match would otherwise mint tokens the gateway refuses.
    pub fn from_settings(s: &JwtSettings) -> Result<Self, TokenError> {
        settings::check_identity(&s.issuer, &s.audience)?;
        let algorithm = settings::algorithm(s.algorithm);
        let key = match s.algorithm {
            JwtAlgorithm::HS256 => EncodingKey::from_secret(settings::hs256_secret(s)?),
            JwtAlgorithm::EdDSA | JwtAlgorithm::ES256 => {
                let path = s.private_key_file.as_deref().ok_or_else(|| {
                    TokenError::Config(format!(
                        "{} is required to issue {:?} tokens",
                        settings::PRIVATE_KEY_SETTING,
                        s.algorithm
                    ))
                })?;
                keys::signing_key_from_pem(path, algorithm, settings::PRIVATE_KEY_SETTING)?
            }
        };

        let probe = b"infergate-tokens key probe";
        let signature = jsonwebtoken::crypto::sign(probe, &key, algorithm).map_err(|_| {
            TokenError::Config(format!(
                "{}: the key cannot sign {:?} tokens",
                settings::signing_setting(s.algorithm),
                s.algorithm
            ))
        })?;
        if let (JwtAlgorithm::EdDSA | JwtAlgorithm::ES256, Some(public)) =
            (s.algorithm, s.public_key_file.as_deref())
        {
            let VerifyKey { key: public, .. } =
                keys::own_public_key(public, algorithm, settings::PUBLIC_KEY_SETTING)?;
            if !jsonwebtoken::crypto::verify(&signature, probe, &public, algorithm).unwrap_or(false)
            {
                return Err(TokenError::Config(format!(
                    "{} and {} are not a key pair",
                    settings::PRIVATE_KEY_SETTING,
                    settings::PUBLIC_KEY_SETTING
                )));
            }
        }

        let ttl_seconds = i64::try_from(s.ttl.as_secs())
            .ok()
            .filter(|t| (1..=settings::MAX_TTL_SECONDS).contains(t))
            .ok_or_else(|| {
                TokenError::Config(format!(
                    "{} must be between 1 second and {} seconds",
                    settings::TTL_SETTING,
                    settings::MAX_TTL_SECONDS
                ))
            })?;

        Ok(Self {
            algorithm,
            key,
            issuer: s.issuer.clone(),
            audience: s.audience.clone(),
            ttl_seconds,
        })
    }

    /// Mints a token for `record`, valid from `now`.
    ///
    /// `exp = min(now + ttl, record.expires_at)`; a scheduled revocation (`revoked_at` in the
    /// future, e.g. a rotation grace period) caps it too, so no token outlives its key.
    /// `nbf = iat = now`. Fails with [`TokenError::KeyExpired`] when the record is expired or
    /// revoked at `now`, or would expire within the current second (a token with `exp <= iat`
    /// could never be used).
    pub fn issue(
        &self,
        record: &KeyRecord,
        now: DateTime<Utc>,
    ) -> Result<(String, TokenClaims), TokenError> {
        if record.state(now) != KeyState::Active {
            return Err(TokenError::KeyExpired);
        }
        let iat = now.timestamp();
        // Flooring the key's deadlines to whole seconds keeps `exp` at or before them.
        let exp = [record.expires_at, record.revoked_at]
            .into_iter()
            .flatten()
            .map(|t| t.timestamp())
            .fold(iat.saturating_add(self.ttl_seconds), i64::min);
        if exp <= iat {
            return Err(TokenError::KeyExpired);
        }
        let claims = TokenClaims {
            sub: record.id.to_string(),
            role: record.role,
            models: record.models.clone(),
            iat,
            nbf: iat,
            exp,
            jti: uuid::Uuid::new_v4().to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key)
            .map_err(|e| TokenError::Internal(format!("signing failed: {e}")))?;
        Ok((token, claims))
    }
}
