//! The [`KeyStore`] trait every backend implements, and its query types.

use chrono::{DateTime, Utc};
use infergate_policy::Role;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::usage::{KeyUsage, UsageDelta};
use crate::{AuditEntry, KeyPatch, KeyRecord, KeyState, KeyStoreError, StoredKey};

/// A filter and window over the key records, newest last (ordered by `created_at`, then `id`).
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub role: Option<Role>,
    pub state: Option<KeyState>,
    /// Only keys whose name contains this (case-insensitively) or whose id starts with it.
    pub search: Option<String>,
    /// Deleted keys (tombstones) too; they are left out by default.
    pub include_deleted: bool,
    pub offset: usize,
    pub limit: usize,
    /// The instant states are judged at.
    pub now: DateTime<Utc>,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            role: None,
            state: None,
            search: None,
            include_deleted: false,
            offset: 0,
            limit: 100,
            now: Utc::now(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub items: Vec<KeyRecord>,
    /// How many records match the filter in all.
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
}

/// A filter over the audit log, oldest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub offset: usize,
    /// 0 means the backend's default (100).
    pub limit: usize,
}

impl AuditQuery {
    pub fn matches(&self, e: &AuditEntry) -> bool {
        self.actor.as_ref().is_none_or(|a| *a == e.actor)
            && self.action.as_ref().is_none_or(|a| *a == e.action)
            && self
                .target
                .as_ref()
                .is_none_or(|t| e.target.as_ref() == Some(t))
            && self.since.is_none_or(|s| e.at >= s)
            && self.until.is_none_or(|u| e.at <= u)
    }
}

/// What changed in a store, for caches to drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    /// One key's record changed (updated, revoked, rotated, deleted).
    Key(String),
    /// Anything may have changed (a file reloaded, a feed reconnected): drop everything.
    All,
}

/// A store of hashed API keys.
///
/// Every method is atomic with respect to the others: two concurrent `update`s of one key both
/// land, one after the other. Implementations never log or return a secret, and emit a
/// [`KeyChange`] on [`KeyStore::changes`] after every successful write (from any process, where
/// the backend is shared).
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// The stored key with this id.
    async fn get(&self, id: &str) -> Result<Option<StoredKey>, KeyStoreError>;

    /// Adds a key; [`KeyStoreError::Conflict`] if the id exists.
    async fn create(&self, key: StoredKey) -> Result<(), KeyStoreError>;

    /// Changes a key's record; [`KeyStoreError::NotFound`] if there is none. Returns the result.
    async fn update(&self, id: &str, patch: KeyPatch) -> Result<KeyRecord, KeyStoreError>;

    async fn list(&self, query: &ListQuery) -> Result<Page, KeyStoreError>;

    /// Appends to the audit log (never rewritten).
    async fn append_audit(&self, entry: AuditEntry) -> Result<(), KeyStoreError>;

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, KeyStoreError>;

    /// Adds usage a gateway counted since its last flush (one call per flush: coalesced, never
    /// a write per request). Stores that keep no usage accept and drop it.
    async fn record_usage(&self, batch: &[UsageDelta]) -> Result<(), KeyStoreError> {
        let _ = batch;
        Ok(())
    }

    /// A key's usage: the last `days` days up to `today` (at most
    /// [`crate::usage::RETAINED_DAYS`]), and when it was last used.
    async fn usage(
        &self,
        id: &str,
        today: chrono::NaiveDate,
        days: u64,
    ) -> Result<KeyUsage, KeyStoreError> {
        let _ = (id, today, days);
        Ok(KeyUsage::default())
    }

    /// The change feed.
    fn changes(&self) -> broadcast::Receiver<KeyChange>;

    /// Backend name for status and metrics: `memory`, `file`, `redis`.
    fn backend(&self) -> &'static str;
}

/// Applies a [`ListQuery`] to records (for backends that filter in process).
pub fn page_of(mut all: Vec<KeyRecord>, q: &ListQuery) -> Page {
    let needle = q.search.as_deref().map(str::to_lowercase);
    all.retain(|r| {
        q.role.is_none_or(|role| r.role == role)
            && q.state.is_none_or(|s| r.state(q.now) == s)
            && (q.include_deleted || r.deleted_at.is_none())
            && needle
                .as_deref()
                .is_none_or(|n| r.id.starts_with(n) || r.name.to_lowercase().contains(n))
    });
    all.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then_with(|| a.id.cmp(&b.id))
    });
    let total = all.len();
    let limit = if q.limit == 0 { 100 } else { q.limit };
    let items = all.into_iter().skip(q.offset).take(limit).collect();
    Page {
        items,
        total,
        offset: q.offset,
        limit,
    }
}
