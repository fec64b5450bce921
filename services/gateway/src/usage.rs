//! Each key's use, counted in memory and flushed to the key store in coalesced batches (every
//! [`FLUSH_EVERY`] and on shutdown), never a write per request: key-admin's
//! `GET /v1/keys/{id}/usage` reads what was flushed.
//!
//! Counting is a few hash operations under one of [`SHARDS`] mutexes chosen by the key id, so
//! workers serving different keys rarely meet. A flush the store refuses is put back and tried
//! again with the next one.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use infergate_keystore::usage::Refusals;
use infergate_keystore::{KeyStore, UsageDelta};

/// How often counts are flushed to the key store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

const SHARDS: usize = 16;
const MINUTE_MS: u64 = 60_000;

#[derive(Debug, Default, Clone, Copy)]
struct Pending {
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    refused: Refusals,
    last_ms: u64,
}

/// Keyed by key id and Unix minute (the day follows from the minute).
type Shard = HashMap<(Arc<str>, u64), Pending>;

/// The counts not yet flushed, by key id and UTC day.
#[derive(Debug)]
pub struct UsageRecorder {
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl Default for UsageRecorder {
    fn default() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Entries are plain counters: a panic elsewhere cannot leave one half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl UsageRecorder {
    fn with(&self, id: &Arc<str>, now_ms: u64, f: impl FnOnce(&mut Pending)) {
        let shard = (self.hasher.hash_one(&**id) as usize) % SHARDS;
        let mut map = lock(&self.shards[shard]);
        let p = map.entry((id.clone(), now_ms / MINUTE_MS)).or_default();
        p.last_ms = p.last_ms.max(now_ms);
        f(p);
    }

    /// One request made with key `id`.
    pub fn request(&self, id: &Arc<str>, now_ms: u64) {
        self.with(id, now_ms, |p| p.requests += 1);
    }

    /// Tokens a request of key `id` was charged at settlement.
    pub fn tokens(&self, id: &Arc<str>, input: u64, output: u64, now_ms: u64) {
        self.with(id, now_ms, |p| {
            p.input_tokens = p.input_tokens.saturating_add(input);
            p.output_tokens = p.output_tokens.saturating_add(output);
        });
    }

    /// A request of key `id` the gateway refused, for `error`'s reason (other errors are not
    /// refusals of the key: they are not counted).
    pub fn refusal(&self, id: &Arc<str>, error: &crate::error::GatewayError, now_ms: u64) {
        use crate::error::GatewayError as E;
        let field: fn(&mut Refusals) -> &mut u64 = match error {
            E::RateLimited { .. } => |r| &mut r.rate_limited,
            E::TokenLimited { .. } => |r| &mut r.token_limited,
            E::ConcurrencyLimited { .. } => |r| &mut r.concurrency_limited,
            E::Forbidden { .. } | E::ModelNotAllowed { .. } => |r| &mut r.forbidden,
            _ => return,
        };
        self.with(id, now_ms, |p| *field(&mut p.refused) += 1);
    }

    /// Takes everything counted so far.
    fn drain(&self) -> Vec<UsageDelta> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let taken = std::mem::take(&mut *lock(shard));
            out.extend(taken.into_iter().filter_map(|((id, minute), p)| {
                let date = i64::try_from(minute)
                    .ok()
                    .and_then(|m| DateTime::from_timestamp(m * 60, 0))
                    .map(|t| t.date_naive())?;
                Some(UsageDelta {
                    id: id.to_string(),
                    date,
                    minute,
                    requests: p.requests,
                    input_tokens: p.input_tokens,
                    output_tokens: p.output_tokens,
                    refused: p.refused,
                    last_used_at: i64::try_from(p.last_ms)
                        .ok()
                        .and_then(DateTime::from_timestamp_millis)
                        .unwrap_or_else(Utc::now),
                })
            }));
        }
        out
    }

    /// Puts a batch the store refused back, to go with the next flush.
    fn restore(&self, batch: Vec<UsageDelta>) {
        for d in batch {
            let id: Arc<str> = Arc::from(d.id.as_str());
            let shard = (self.hasher.hash_one(&*id) as usize) % SHARDS;
            let mut map = lock(&self.shards[shard]);
            let p = map.entry((id, d.minute)).or_default();
            p.requests += d.requests;
            p.input_tokens += d.input_tokens;
            p.output_tokens += d.output_tokens;
            p.refused.add(&d.refused);
            p.last_ms = p
                .last_ms
                .max(u64::try_from(d.last_used_at.timestamp_millis()).unwrap_or(0));
        }
    }

    /// Writes what was counted to `store` in one call; on failure keeps it for the next flush.
    pub async fn flush(&self, store: &dyn KeyStore) {
        let batch = self.drain();
        if batch.is_empty() {
            return;
        }
        if let Err(e) = store.record_usage(&batch).await {
            tracing::warn!(error = %e, keys = batch.len(), "usage flush failed; kept for the next one");
            self.restore(batch);
        }
    }
}

/// Flushes `recorder` into `store` every [`FLUSH_EVERY`] until the returned handle is aborted
/// (the application flushes once more itself when it stops).
pub fn spawn_flusher(
    recorder: Arc<UsageRecorder>,
    store: Arc<dyn KeyStore>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            recorder.flush(&*store).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 86_400_000;
    use infergate_keystore::MemoryKeyStore;

    #[tokio::test]
    async fn counts_are_coalesced_per_key_and_day_and_survive_a_failed_flush() {
        let r = UsageRecorder::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let t = u64::try_from(Utc::now().timestamp_millis()).unwrap() / DAY_MS * DAY_MS + 5_000;
        for _ in 0..3 {
            r.request(&a, t);
        }
        r.tokens(&a, 10, 2, t + 1);
        r.request(&b, t - DAY_MS);
        r.request(&a, t + MINUTE_MS);
        let mut batch = r.drain();
        batch.sort_by(|x, y| (&x.id, x.minute).cmp(&(&y.id, y.minute)));
        assert_eq!(batch.len(), 3, "a's two minutes and b's");
        assert_eq!(batch[1].requests, 1, "a's next minute");
        batch.remove(1);
        assert_eq!(
            (
                batch[0].requests,
                batch[0].input_tokens,
                batch[0].output_tokens
            ),
            (3, 10, 2)
        );
        assert_eq!(batch[0].last_used_at.timestamp_millis() as u64, t + 1);
        assert_eq!(batch[1].date, batch[0].date.pred_opt().unwrap());
        assert!(r.drain().is_empty(), "drained");
        r.restore(batch.clone());
        let store = MemoryKeyStore::new();
        r.flush(&store).await;
        assert!(r.drain().is_empty(), "flushed");
        let usage = store.usage("a", batch[0].date, 30).await.unwrap();
        assert_eq!(usage.days[0].totals.requests, 3);
    }
}
