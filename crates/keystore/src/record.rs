//! Key records.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use infergate_policy::Role;
use infergate_ratelimit::RateSpec;
use serde::Serialize;

/// What is known about a key. Holds no secret: safe to log, serialize and return.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyRecord {
    /// Stable, public identifier: used for rate-limit buckets, logs and metrics instead of the key.
    pub id: Arc<str>,
    pub name: String,
    pub role: Role,
    pub expires_at: Option<DateTime<Utc>>,
    /// Overrides the role's rate limit for this key.
    pub rate_limit: Option<RateSpec>,
    /// Where the key was configured (`API_KEY`, `API_KEYS`, `file`).
    pub origin: &'static str,
}

impl KeyRecord {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|exp| exp <= now)
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
