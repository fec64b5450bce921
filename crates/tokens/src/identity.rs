//! From a verified token to the identity it stands for. Own tokens name a key (`sub` is its id)
//! that must still be active, so a revoked key's tokens die with it, and may narrow the key's
//! model allowlist, never widen it. An external issuer's tokens stand for an identity of their
//! own, a key record made from the claims.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use infergate_keystore::{KeyRecord, KeyState, KeyVerifier, Verification};

use crate::VerifiedToken;

/// The key record a verified token stands for, with the key's current state. Errors are stable
/// reasons for metrics and logs.
pub async fn identify(
    token: VerifiedToken,
    keys: &KeyVerifier,
    now: DateTime<Utc>,
) -> Result<Verification, &'static str> {
    let claims = token.claims;
    if token.external {
        let mut record = KeyRecord::new(
            format!("jwt:{}:{}", claims.iss, claims.sub),
            claims.iss.clone(),
            claims.role,
            claims.iss,
        );
        record.models = claims.models;
        return Ok(Verification::Valid(Arc::new(record)));
    }
    let record = keys
        .record(&claims.sub)
        .await
        .map_err(|_| "store_unavailable")?
        .ok_or("unknown_subject")?;
    Ok(match record.state(now) {
        KeyState::Active => {
            let models = effective_models(record.models.as_deref(), claims.models);
            if models == record.models {
                Verification::Valid(record)
            } else {
                let mut narrowed = (*record).clone();
                narrowed.models = models;
                Verification::Valid(Arc::new(narrowed))
            }
        }
        KeyState::Expired => Verification::Expired(record),
        KeyState::Revoked => Verification::Revoked(record),
    })
}

/// The models an own token may use: the token's list within the key's (`None` is every model).
/// A token minted before its key's allowlist was narrowed keeps only what the key still allows.
fn effective_models(key: Option<&[String]>, token: Option<Vec<String>>) -> Option<Vec<String>> {
    match (key, token) {
        (key, None) => key.map(<[String]>::to_vec),
        (None, Some(token)) => Some(token),
        (Some(key), Some(token)) => Some(token.into_iter().filter(|m| key.contains(m)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::effective_models;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_token_narrows_its_keys_models_and_never_widens_them() {
        assert_eq!(effective_models(None, None), None);
        assert_eq!(
            effective_models(Some(&list(&["a"])), None),
            Some(list(&["a"]))
        );
        assert_eq!(
            effective_models(None, Some(list(&["a"]))),
            Some(list(&["a"]))
        );
        assert_eq!(
            effective_models(Some(&list(&["a", "b"])), Some(list(&["b"]))),
            Some(list(&["b"]))
        );
        // Minted when the key allowed "b" too; the key has since been narrowed to "a".
        assert_eq!(
            effective_models(Some(&list(&["a"])), Some(list(&["a", "b"]))),
            Some(list(&["a"]))
        );
        assert_eq!(
            effective_models(Some(&list(&["a"])), Some(list(&["c"]))),
            Some(vec![])
        );
    }
}
