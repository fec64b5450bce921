//! The conformance suite is only worth something if it fails broken stores: each test here
//! wraps the memory store with one realistic bug and checks that the right check panics.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use infergate_keystore::{
    AuditEntry, AuditQuery, KeyChange, KeyPatch, KeyRecord, KeyStore, KeyStoreError, ListQuery,
    MemoryKeyStore, Page, StoredKey, conformance,
};
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Bug {
    /// Judges states by the wall clock instead of `query.now`.
    WallClockStates,
    /// Lists in insertion order.
    Unsorted,
    /// Keeps timestamps to the second.
    SecondsOnly,
    /// `create` overwrites an existing key.
    NoConflict,
    /// `update` reads, waits, then writes the whole record back.
    ReadModifyWrite,
    /// Stores `Some([])` model lists as `None`.
    EmptyModelsLost,
    /// Never announces changes.
    SilentFeed,
    /// Returns the audit log newest first.
    AuditNewestFirst,
    /// Ignores the audit offset.
    AuditNoOffset,
    /// Reports the page length as the total.
    PageTotal,
}

#[derive(Debug)]
struct Buggy {
    inner: MemoryKeyStore,
    bug: Bug,
}

#[async_trait::async_trait]
impl KeyStore for Buggy {
    async fn get(&self, id: &str) -> Result<Option<StoredKey>, KeyStoreError> {
        let mut got = self.inner.get(id).await?;
        if let Some(k) = got.as_mut() {
            if self.bug == Bug::SecondsOnly {
                k.record.created_at = k.record.created_at.trunc_subsecs(0);
                k.record.expires_at = k.record.expires_at.map(|t| t.trunc_subsecs(0));
            }
            if self.bug == Bug::EmptyModelsLost
                && k.record.models.as_ref().is_some_and(Vec::is_empty)
            {
                k.record.models = None;
            }
        }
        Ok(got)
    }

    async fn create(&self, key: StoredKey) -> Result<(), KeyStoreError> {
        if self.bug == Bug::NoConflict && self.inner.get(&key.record.id).await?.is_some() {
            let r = key.record;
            let patch = KeyPatch {
                name: Some(r.name),
                role: Some(r.role),
                ..KeyPatch::default()
            };
            return self.inner.update(&r.id, patch).await.map(|_| ());
        }
        self.inner.create(key).await
    }

    async fn update(&self, id: &str, patch: KeyPatch) -> Result<KeyRecord, KeyStoreError> {
        if self.bug != Bug::ReadModifyWrite {
            return self.inner.update(id, patch).await;
        }
        let mut record = self
            .inner
            .get(id)
            .await?
            .ok_or_else(|| KeyStoreError::NotFound(id.to_string()))?
            .record;
        tokio::time::sleep(Duration::from_millis(5)).await;
        patch.apply(&mut record);
        let whole = KeyPatch {
            name: Some(record.name),
            role: Some(record.role),
            expires_at: Some(record.expires_at),
            revoked_at: Some(record.revoked_at),
            rate_limit: Some(record.rate_limit),
            tokens_per_minute: Some(record.tokens_per_minute),
            tokens_per_day: Some(record.tokens_per_day),
            max_concurrent: Some(record.max_concurrent),
            models: Some(record.models),
            metadata: Some(record.metadata),
            rotated_to: Some(record.rotated_to),
            deleted_at: Some(record.deleted_at),
        };
        self.inner.update(id, whole).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, KeyStoreError> {
        match self.bug {
            Bug::WallClockStates => {
                let q = ListQuery {
                    now: Utc::now(),
                    ..query.clone()
                };
                let mut page = self.inner.list(&q).await?;
                page.limit = query.limit;
                Ok(page)
            }
            Bug::Unsorted => {
                let mut page = self.inner.list(query).await?;
                page.items.reverse();
                Ok(page)
            }
            Bug::PageTotal => {
                let mut page = self.inner.list(query).await?;
                page.total = page.items.len();
                Ok(page)
            }
            _ => self.inner.list(query).await,
        }
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<(), KeyStoreError> {
        self.inner.append_audit(entry).await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, KeyStoreError> {
        match self.bug {
            Bug::AuditNewestFirst => {
                let mut v = self.inner.audit(query).await?;
                v.reverse();
                Ok(v)
            }
            Bug::AuditNoOffset => {
                let q = AuditQuery {
                    offset: 0,
                    ..query.clone()
                };
                self.inner.audit(&q).await
            }
            _ => self.inner.audit(query).await,
        }
    }

    fn changes(&self) -> broadcast::Receiver<KeyChange> {
        if self.bug == Bug::SilentFeed {
            // A sender that is kept alive but never used: the receiver waits forever.
            let (tx, rx) = broadcast::channel(1);
            std::mem::forget(tx);
            return rx;
        }
        self.inner.changes()
    }

    fn backend(&self) -> &'static str {
        "buggy"
    }
}

/// Runs the whole suite on a store with `bug` and expects it to fail in `check`.
async fn fails_in(bug: Bug, check: &str) {
    let store: Arc<dyn KeyStore> = Arc::new(Buggy {
        inner: MemoryKeyStore::new(),
        bug,
    });
    let outcome = tokio::spawn(conformance::run_all(store)).await;
    let Err(e) = outcome else {
        panic!("the suite passed a store with {bug:?}");
    };
    let payload = e.into_panic();
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        msg.contains("[buggy backend]") && msg.contains(check),
        "{bug:?} should fail {check}, failed with: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bug_is_caught_by_its_check() {
    let cases = [
        (Bug::WallClockStates, "list_filters_by_state_at_query_now"),
        (Bug::Unsorted, "list_filters_by_role"),
        (Bug::PageTotal, "list_paginates_in_created_order"),
        (Bug::SecondsOnly, "create_then_get_round_trips"),
        (Bug::EmptyModelsLost, "create_then_get_round_trips"),
        (Bug::NoConflict, "create_existing_id_conflicts"),
        (
            Bug::ReadModifyWrite,
            "concurrent_updates_to_different_fields_all_land",
        ),
        (Bug::AuditNewestFirst, "audit_filters_orders_and_pages"),
        (Bug::AuditNoOffset, "audit_filters_orders_and_pages"),
        (Bug::SilentFeed, "changes_reported_for_create_and_update"),
    ];
    for (bug, check) in cases {
        fails_in(bug, check).await;
    }
}
