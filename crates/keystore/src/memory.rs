//! A key store held in process memory: for tests, and for gateways that mint keys only for
//! their own lifetime.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;

use crate::{
    AuditEntry, AuditQuery, KeyChange, KeyPatch, KeyRecord, KeyStore, KeyStoreError, ListQuery,
    Page, StoredKey, page_of,
};

/// Room for this many unread changes per subscriber before it lags (and must drop its cache).
pub(crate) const CHANGE_CAPACITY: usize = 1024;

/// Applies an [`AuditQuery`] to entries (for backends that filter in process): matching
/// entries, oldest first (entries with the same instant keep their append order), then the
/// offset/limit window, a limit of 0 meaning 100.
pub fn audit_page_of(mut entries: Vec<AuditEntry>, q: &AuditQuery) -> Vec<AuditEntry> {
    entries.retain(|e| q.matches(e));
    // Stable, so appends within one instant stay in append order.
    entries.sort_by_key(|e| e.at);
    let limit = if q.limit == 0 { 100 } else { q.limit };
    entries.into_iter().skip(q.offset).take(limit).collect()
}

/// Locks, recovering from poisoning: every critical section below leaves the maps consistent
/// even if it panics half-way (each does at most one insert or one in-place patch), so the data
/// is still good.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct MemoryKeyStore {
    keys: Mutex<HashMap<String, StoredKey>>,
    audit: Mutex<Vec<AuditEntry>>,
    usage: Mutex<HashMap<String, crate::usage::UsageBook>>,
    changes: broadcast::Sender<KeyChange>,
}

impl MemoryKeyStore {
    pub fn new() -> Self {
        Self {
            keys: Mutex::new(HashMap::new()),
            audit: Mutex::new(Vec::new()),
            usage: Mutex::new(HashMap::new()),
            changes: broadcast::channel(CHANGE_CAPACITY).0,
        }
    }

    fn notify(&self, id: &str) {
        // No subscriber is not an error: nobody has a cache to drop.
        let _ = self.changes.send(KeyChange::Key(id.to_string()));
    }
}

impl Default for MemoryKeyStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryKeyStore {
    // Counts only: records are safe to show, but a whole store is noise in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryKeyStore")
            .field("keys", &lock(&self.keys).len())
            .field("audit_entries", &lock(&self.audit).len())
            .finish()
    }
}

#[async_trait::async_trait]
impl KeyStore for MemoryKeyStore {
    async fn get(&self, id: &str) -> Result<Option<StoredKey>, KeyStoreError> {
        Ok(lock(&self.keys).get(id).cloned())
    }

    async fn create(&self, key: StoredKey) -> Result<(), KeyStoreError> {
        let id = key.record.id.to_string();
        {
            let mut keys = lock(&self.keys);
            if keys.contains_key(&id) {
                return Err(KeyStoreError::Conflict(id));
            }
            keys.insert(id.clone(), key);
        }
        self.notify(&id);
        Ok(())
    }

    async fn update(&self, id: &str, patch: KeyPatch) -> Result<KeyRecord, KeyStoreError> {
        let record = {
            let mut keys = lock(&self.keys);
            let key = keys
                .get_mut(id)
                .ok_or_else(|| KeyStoreError::NotFound(id.to_string()))?;
            patch.apply(&mut key.record);
            key.record.clone()
        };
        self.notify(id);
        Ok(record)
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, KeyStoreError> {
        let records: Vec<KeyRecord> = lock(&self.keys)
            .values()
            .map(|k| k.record.clone())
            .collect();
        Ok(page_of(records, query))
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<(), KeyStoreError> {
        lock(&self.audit).push(entry);
        Ok(())
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, KeyStoreError> {
        let entries: Vec<AuditEntry> = lock(&self.audit)
            .iter()
            .filter(|e| query.matches(e))
            .cloned()
            .collect();
        Ok(audit_page_of(entries, query))
    }

    async fn record_usage(&self, batch: &[crate::UsageDelta]) -> Result<(), KeyStoreError> {
        let now = chrono::Utc::now();
        let mut usage = lock(&self.usage);
        for d in batch {
            usage.entry(d.id.clone()).or_default().add(d, now);
        }
        Ok(())
    }

    async fn usage(
        &self,
        id: &str,
        today: chrono::NaiveDate,
        days: u64,
    ) -> Result<crate::KeyUsage, KeyStoreError> {
        Ok(lock(&self.usage)
            .get(id)
            .map(|b| b.report(today, days, crate::usage::minute_of(chrono::Utc::now())))
            .unwrap_or_default())
    }

    fn changes(&self) -> broadcast::Receiver<KeyChange> {
        self.changes.subscribe()
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
