//! Key records: what is known about a key, never the key itself.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use infergate_policy::Role;
use infergate_types::RateSpec;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What is known about a key. Holds no secret: safe to log, serialize and return.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Stable, public identifier (the second field of a key): used for rate-limit buckets, logs,
    /// metrics and the admin API instead of the key.
    pub id: Arc<str>,
    pub name: String,
    pub role: Role,
    /// The key's prefix (`igk`), so a listing shows what a leaked key would look like.
    #[serde(default)]
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    /// Who minted it: an admin key id, `cli`, `bootstrap`, or where a legacy key came from
    /// (`API_KEY`, `API_KEYS`, `file`).
    pub created_by: String,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Overrides the role's rate limit for this key.
    #[serde(default)]
    pub rate_limit: Option<RateSpec>,
    /// Overrides the role's token budget per minute (sliding window) for this key.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// Overrides the role's daily token quota (resetting at the configured UTC hour).
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    /// Overrides the role's cap on requests in flight at once (streams included).
    #[serde(default)]
    pub max_concurrent: Option<u64>,
    /// When set, the gateway refuses requests whose `model` is not in this list.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// The id of the key that replaced this one in a rotation.
    #[serde(default)]
    pub rotated_to: Option<String>,
    /// Set by `DELETE /v1/keys/{id}`: the key is revoked and gone from the admin API; the record
    /// stays in the store as a tombstone (the audit log keeps its history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// Where a key stands at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Active,
    Expired,
    Revoked,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Expired => "expired",
            KeyState::Revoked => "revoked",
        }
    }
}

impl std::str::FromStr for KeyState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(KeyState::Active),
            "expired" => Ok(KeyState::Expired),
            "revoked" => Ok(KeyState::Revoked),
            other => Err(format!(
                "unknown key state {other:?} (accepted: active, expired, revoked)"
            )),
        }
    }
}

impl KeyRecord {
    /// A new record with the given identity and no limits, expiry or metadata.
    pub fn new(
        id: impl Into<Arc<str>>,
        name: impl Into<String>,
        role: Role,
        created_by: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            role,
            prefix: String::new(),
            created_at: Utc::now(),
            created_by: created_by.into(),
            expires_at: None,
            revoked_at: None,
            rate_limit: None,
            tokens_per_minute: None,
            tokens_per_day: None,
            max_concurrent: None,
            models: None,
            metadata: Map::new(),
            rotated_to: None,
            deleted_at: None,
        }
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|exp| exp <= now)
    }

    pub fn is_revoked(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_some_and(|at| at <= now)
    }

    /// Revocation wins over expiry.
    pub fn state(&self, now: DateTime<Utc>) -> KeyState {
        if self.is_revoked(now) {
            KeyState::Revoked
        } else if self.is_expired(now) {
            KeyState::Expired
        } else {
            KeyState::Active
        }
    }

    /// May this key use `model`? (No allowlist means every model.)
    pub fn allows_model(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == model))
    }
}

/// A record with the argon2id PHC string of its secret: what a store keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredKey {
    #[serde(flatten)]
    pub record: KeyRecord,
    /// `$argon2id$v=19$m=…,t=…,p=…$salt$hash` — never the secret.
    pub secret_hash: String,
}

/// A partial update. `None` leaves a field alone; `Some(None)` clears an optional field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub role: Option<Role>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub revoked_at: Option<Option<DateTime<Utc>>>,
    pub rate_limit: Option<Option<RateSpec>>,
    pub tokens_per_minute: Option<Option<u64>>,
    pub tokens_per_day: Option<Option<u64>>,
    pub max_concurrent: Option<Option<u64>>,
    pub models: Option<Option<Vec<String>>>,
    pub metadata: Option<Map<String, Value>>,
    pub rotated_to: Option<Option<String>>,
    pub deleted_at: Option<Option<DateTime<Utc>>>,
}

impl KeyPatch {
    /// Applies the patch to a record.
    pub fn apply(&self, r: &mut KeyRecord) {
        if let Some(v) = &self.name {
            r.name = v.clone();
        }
        if let Some(v) = self.role {
            r.role = v;
        }
        if let Some(v) = self.tokens_per_minute {
            r.tokens_per_minute = v;
        }
        if let Some(v) = self.tokens_per_day {
            r.tokens_per_day = v;
        }
        if let Some(v) = self.max_concurrent {
            r.max_concurrent = v;
        }
        if let Some(v) = self.expires_at {
            r.expires_at = v;
        }
        if let Some(v) = self.revoked_at {
            r.revoked_at = v;
        }
        if let Some(v) = self.rate_limit {
            r.rate_limit = v;
        }
        if let Some(v) = &self.models {
            r.models = v.clone();
        }
        if let Some(v) = &self.metadata {
            r.metadata = v.clone();
        }
        if let Some(v) = &self.rotated_to {
            r.rotated_to = v.clone();
        }
        if let Some(v) = self.deleted_at {
            r.deleted_at = v;
        }
    }
}

/// The answer to "what is this presented credential?".
#[derive(Debug, Clone, PartialEq)]
pub enum Verification {
    Valid(Arc<KeyRecord>),
    Expired(Arc<KeyRecord>),
    Revoked(Arc<KeyRecord>),
    Unknown,
}

/// One admin action, kept forever (append-only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unique id of the entry.
    pub id: String,
    pub at: DateTime<Utc>,
    /// Who acted: an admin key id, `cli`, or `bootstrap`. Never a key.
    pub actor: String,
    /// `create`, `update`, `revoke`, `delete`, `rotate`, `token`, `bootstrap`, …
    pub action: String,
    /// The key id acted upon, if any.
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub client_ip: Option<String>,
    /// `success` or `failure`.
    pub outcome: String,
    /// Action-specific facts (changed fields, grace period). Never a secret.
    #[serde(default)]
    pub detail: Value,
}
