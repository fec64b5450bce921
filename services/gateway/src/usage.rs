//! Each key's use, counted in memory and flushed to the key store in coalesced batches (every
//! [`FLUSH_EVERY`] and on shutdown), never a write per request: key-admin's
//! `GET /v1/keys/{id}/usage` reads what was flushed.
//!
//! Each worker thread counts into its own map (a `ThreadLocal`), under a mutex only the flush
//! ever contends for: requests of one hot key on every worker meet no shared lock and no shared
//! counter. A hit clones nothing (the map is looked up by the id's `&str`). The flush merges the
//! threads' counts per key and minute; a flush the store refuses is put back and tried again with
//! the next one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use infergate_keystore::usage::{DayTotals, Refusals};
use infergate_keystore::{KeyStore, UsageDelta};
use thread_local::ThreadLocal;

/// How often counts are flushed to the key store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

const MINUTE_MS: u64 = 60_000;

/// A key's counts in one minute: the store's own totals, and when it was last used.
#[derive(Debug, Default, Clone, Copy)]
struct Pending {
    totals: DayTotals,
    last_ms: u64,
}

impl Pending {
    fn merge(&mut self, o: &Pending) {
        self.totals.sum(&o.totals);
        self.last_ms = self.last_ms.max(o.last_ms);
    }
}

/// One thread's counts: per key id, per Unix minute (the day follows from the minute; between
/// two flushes a key has one or two minutes). hashbrown's map for its `entry_ref` (one lookup a
/// request, by `&str`) and its foldhash hasher: key ids are the key store's, not a client's, so
/// SipHash's flood resistance buys nothing here.
type Counts = hashbrown::HashMap<Arc<str>, Vec<(u64, Pending)>>;

/// The counts not yet flushed, by key id and UTC day.
#[derive(Debug, Default)]
pub struct UsageRecorder {
    local: ThreadLocal<Mutex<Counts>>,
}

/// A key's counts in `minute`, added when the key has none for it yet.
fn minute_of(minutes: &mut Vec<(u64, Pending)>, minute: u64) -> &mut Pending {
    let i = match minutes.iter().position(|(m, _)| *m == minute) {
        Some(i) => i,
        None => {
            minutes.push((minute, Pending::default()));
            minutes.len() - 1
        }
    };
    &mut minutes[i].1
}

fn lock(m: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    // Entries are plain counters: a panic elsewhere cannot leave one half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl UsageRecorder {
    fn with(&self, id: &Arc<str>, now_ms: u64, f: impl FnOnce(&mut Pending)) {
        let mut map = lock(self.local.get_or_default());
        // One lookup, by the id's text; the key is stored (a copy of the text) only the first
        // time a key is counted after a flush.
        let p = minute_of(map.entry_ref(&**id).or_default(), now_ms / MINUTE_MS);
        p.last_ms = p.last_ms.max(now_ms);
        f(p);
    }

    /// One request made with key `id`.
    pub fn request(&self, id: &Arc<str>, now_ms: u64) {
        self.with(id, now_ms, |p| p.totals.requests += 1);
    }

    /// Tokens a request of key `id` was charged at settlement.
    pub fn tokens(&self, id: &Arc<str>, input: u64, output: u64, now_ms: u64) {
        self.with(id, now_ms, |p| {
            let t = &mut p.totals;
            t.input_tokens = t.input_tokens.saturating_add(input);
            t.output_tokens = t.output_tokens.saturating_add(output);
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
        self.with(id, now_ms, |p| *field(&mut p.totals.refused) += 1);
    }

    /// Takes everything counted so far, every thread's, merged per key and minute.
    fn drain(&self) -> Vec<UsageDelta> {
        let mut merged: HashMap<(Arc<str>, u64), Pending> = HashMap::new();
        for cell in self.local.iter() {
            let taken = std::mem::take(&mut *lock(cell));
            for (id, minutes) in taken {
                for (minute, p) in minutes {
                    merged.entry((id.clone(), minute)).or_default().merge(&p);
                }
            }
        }
        merged
            .into_iter()
            .filter_map(|((id, minute), p)| {
                let date = i64::try_from(minute)
                    .ok()
                    .and_then(|m| DateTime::from_timestamp(m * 60, 0))
                    .map(|t| t.date_naive())?;
                Some(UsageDelta {
                    id: id.to_string(),
                    date,
                    minute,
                    requests: p.totals.requests,
                    input_tokens: p.totals.input_tokens,
                    output_tokens: p.totals.output_tokens,
                    refused: p.totals.refused,
                    last_used_at: i64::try_from(p.last_ms)
                        .ok()
                        .and_then(DateTime::from_timestamp_millis)
                        .unwrap_or_else(Utc::now),
                })
            })
            .collect()
    }

    /// Puts a batch the store refused back (into the calling thread's counts), to go with the
    /// next flush.
    fn restore(&self, batch: Vec<UsageDelta>) {
        let mut map = lock(self.local.get_or_default());
        for d in batch {
            let back = Pending {
                totals: DayTotals {
                    requests: d.requests,
                    input_tokens: d.input_tokens,
                    output_tokens: d.output_tokens,
                    refused: d.refused,
                },
                last_ms: u64::try_from(d.last_used_at.timestamp_millis()).unwrap_or(0),
            };
            minute_of(map.entry_ref(d.id.as_str()).or_default(), d.minute).merge(&back);
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

    #[test]
    fn counts_from_every_thread_are_merged_per_key_and_minute() {
        let r = Arc::new(UsageRecorder::default());
        let a: Arc<str> = Arc::from("a");
        let t = u64::try_from(Utc::now().timestamp_millis()).unwrap() / MINUTE_MS * MINUTE_MS;
        let threads: Vec<_> = (0..4u64)
            .map(|n| {
                let (r, a) = (r.clone(), a.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        r.request(&a, t + n);
                    }
                    r.tokens(&a, 1, 2, t + 10 + n);
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        r.request(&a, t + MINUTE_MS);
        let mut batch = r.drain();
        batch.sort_by_key(|d| d.minute);
        assert_eq!(batch.len(), 2, "one delta a minute, whatever the threads");
        assert_eq!(
            (
                batch[0].requests,
                batch[0].input_tokens,
                batch[0].output_tokens
            ),
            (400, 4, 8)
        );
        assert_eq!(batch[0].last_used_at.timestamp_millis() as u64, t + 13);
        assert_eq!(batch[1].requests, 1);
        assert!(r.drain().is_empty());
    }
}
