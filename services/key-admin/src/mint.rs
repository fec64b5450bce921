//! Minting keys: generate (OS CSPRNG), hash with argon2id off the async workers, build the
//! record. Shared by the HTTP API, the bootstrap and the CLI, so every key is made the same way.

use chrono::{DateTime, Utc};
use infergate_keystore::{GeneratedKey, HashParams, KeyRecord, format, hash};
use serde_json::{Value, json};

use crate::error::AdminError;

/// Hashes `secret` on the blocking pool.
pub async fn hash_off_thread(secret: String, params: HashParams) -> Result<String, AdminError> {
    tokio::task::spawn_blocking(move || hash::hash_secret(&secret, params))
        .await
        .map_err(|e| AdminError::Internal(format!("hashing task failed: {e}")))?
        .map_err(|e| AdminError::Internal(e.to_string()))
}

/// A new key with `prefix` and the argon2id PHC string of its secret.
pub async fn mint(prefix: &str, params: HashParams) -> Result<(GeneratedKey, String), AdminError> {
    let key = format::generate(prefix).map_err(|e| match e {
        infergate_keystore::KeyFormatError::Prefix => {
            AdminError::validation("prefix", e.to_string())
        }
        other => AdminError::Internal(other.to_string()),
    })?;
    let phc = hash_off_thread(key.secret().to_string(), params).await?;
    Ok((key, phc))
}

/// A record as the API shows it: every field of [`KeyRecord`] plus its `state` at `now`.
pub fn record_json(r: &KeyRecord, now: DateTime<Utc>) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or_else(|_| json!({"id": r.id}));
    v["state"] = json!(r.state(now).as_str());
    v
}
