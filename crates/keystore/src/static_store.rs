//! Keys held in memory as SHA-256 digests.
//!
//! Lookup is by digest: the map's (variable-time) comparison works on digests, which tell an
//! attacker nothing about the key, and the final equality is checked in constant time. The
//! plaintext is dropped once the store is built.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{KeyRecord, KeyStoreError, StaticKey, Verification};

type KeyDigest = [u8; 32];

fn digest(secret: &str) -> KeyDigest {
    Sha256::digest(secret.as_bytes()).into()
}

/// A public id for a configured key: a short digest prefix that identifies it in logs and
/// rate-limit buckets without revealing it.
fn key_id(d: &KeyDigest) -> String {
    let hex: String = d[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("static-{hex}")
}

#[derive(Debug, Default)]
pub struct StaticKeyStore {
    by_digest: HashMap<KeyDigest, Arc<KeyRecord>>,
}

impl StaticKeyStore {
    /// Builds the store. The same key configured twice is an error (it would be ambiguous which
    /// role it has).
    pub fn new(keys: Vec<StaticKey>) -> Result<Self, KeyStoreError> {
        let mut by_digest: HashMap<KeyDigest, Arc<KeyRecord>> = HashMap::with_capacity(keys.len());
        for key in keys {
            let d = digest(&key.secret);
            let mut record = KeyRecord::new(key_id(&d), key.name, key.role, key.origin);
            record.expires_at = key.expires_at;
            record.rate_limit = key.rate_limit;
            let record = Arc::new(record);
            if let Some(existing) = by_digest.get(&d) {
                return Err(KeyStoreError::Duplicate {
                    first: existing.name.clone(),
                    second: record.name.clone(),
                });
            }
            by_digest.insert(d, record);
        }
        Ok(Self { by_digest })
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The synchronous lookup behind [`KeyStore::verify`].
    pub fn verify_now(&self, presented: &str, now: DateTime<Utc>) -> Verification {
        let d = digest(presented);
        match self.by_digest.get_key_value(&d) {
            Some((stored, record)) if bool::from(stored.ct_eq(&d)) => {
                if record.is_expired(now) {
                    Verification::Expired(record.clone())
                } else {
                    Verification::Valid(record.clone())
                }
            }
            _ => Verification::Unknown,
        }
    }
}

impl StaticKeyStore {
    /// Every record (for status pages); never includes secrets.
    pub fn records(&self) -> Vec<Arc<KeyRecord>> {
        let mut all: Vec<_> = self.by_digest.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}
