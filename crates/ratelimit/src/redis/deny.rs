//! The Redis limiter's local deny cache (see the limiter's module doc): the last state seen of
//! every bucket of a refused request, so a request that would certainly be refused again is
//! refused here, with no round trip.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::Clock;
use crate::decision::{Decision, LimitStatus};
use crate::key::{BucketKey, LimitCheck};
use crate::window::{View, Window};

use super::view_at;

/// The last state seen of one bucket.
#[derive(Clone, Copy, Debug)]
pub(super) struct Snapshot {
    /// `None`: the bucket did not exist.
    pub(super) window: Option<Window>,
    /// Backend clock reading of the reply.
    pub(super) at_ms: u64,
    /// Local instant just before the call was sent.
    pub(super) sent: std::time::Instant,
}

impl Snapshot {
    /// Whether the snapshot, of a bucket of `period_ms`, is too old at `now` to refuse anything:
    /// taken two periods before, every count it holds has rolled out of its window.
    fn expired(&self, period_ms: u64, now: std::time::Instant) -> bool {
        now.saturating_duration_since(self.sent)
            >= Duration::from_millis(period_ms.saturating_mul(2))
    }

    /// Estimated backend time now, without an injected clock.
    fn backend_now(&self) -> u64 {
        let elapsed = u64::try_from(self.sent.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at_ms.saturating_add(elapsed)
    }
}

pub(super) type CacheKey = (BucketKey, u64);

/// The local deny cache; see the module doc. One std mutex: every critical
/// section is a few hash operations and never spans an `.await`.
///
/// Only refused requests add entries, so on a gateway refusing nothing the map stays empty, and
/// its size, read without the lock, lets every decision skip it: no lock shared by all workers
/// and no hashing of the request's buckets on the path of traffic within its limits. A size read
/// just before another worker's insertion only sends one more request to Redis. Snapshots that
/// can no longer refuse anything are swept out (at most once every [`SWEEP_EVERY`]), so the
/// map empties again once refusals stop.
pub(super) struct LocalCache {
    capacity: usize,
    entries: Mutex<Entries>,
    /// The map's size, written under the lock after every change.
    held: AtomicUsize,
}

/// How often the snapshots too old to refuse are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Entries {
    map: HashMap<CacheKey, Snapshot>,
    /// When the map was last swept.
    swept: std::time::Instant,
}

impl LocalCache {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                swept: std::time::Instant::now(),
            }),
            held: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // Snapshots are replaced whole, so a panic elsewhere cannot leave one torn.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the cache holds nothing (a request finds none of its buckets).
    fn is_empty(&self) -> bool {
        self.held.load(Ordering::Relaxed) == 0
    }

    fn snapshots(&self, checks: &[LimitCheck]) -> Option<Vec<Snapshot>> {
        if self.capacity == 0 || self.is_empty() {
            return None;
        }
        let entries = self.lock();
        checks
            .iter()
            .map(|c| {
                entries
                    .map
                    .get(&(c.key.clone(), c.spec.period_ms()))
                    .copied()
            })
            .collect()
    }

    /// The backend time to judge snapshots at.
    fn now(snapshots: &[Snapshot], clock: Option<&dyn Clock>) -> Option<u64> {
        match clock {
            Some(clock) => Some(clock.now_millis()),
            // The most advanced estimate: the one least likely to refuse.
            None => snapshots.iter().map(Snapshot::backend_now).max(),
        }
    }

    /// A refusal decided from memory, when every bucket of the request was
    /// seen before and one of them still cannot admit a request.
    pub(super) fn refuse(
        &self,
        checks: &[LimitCheck],
        clock: Option<&dyn Clock>,
    ) -> Option<Decision> {
        let snapshots = self.snapshots(checks)?;
        let now = Self::now(&snapshots, clock)?;
        let views: Vec<View> = checks
            .iter()
            .zip(&snapshots)
            .map(|(c, s)| view_at(s.window, now, c.grid()))
            .collect();
        let refused = checks
            .iter()
            .zip(&views)
            .any(|(c, v)| !v.admits(c.spec.limit, c.cost));
        if !refused {
            return None;
        }
        let statuses = checks
            .iter()
            .zip(&views)
            .map(|(c, v)| v.status(c, true))
            .collect();
        Some(Decision {
            allowed: false,
            statuses,
        })
    }

    /// `check`'s status from memory, if it is known to refuse.
    pub(super) fn peek(
        &self,
        check: &LimitCheck,
        clock: Option<&dyn Clock>,
    ) -> Option<LimitStatus> {
        let snapshots = self.snapshots(std::slice::from_ref(check))?;
        let now = Self::now(&snapshots, clock)?;
        let status = view_at(snapshots[0].window, now, check.grid()).status(check, true);
        status.is_exceeded().then_some(status)
    }

    /// Remembers what a reply showed: every bucket of a refused request is
    /// stored; other replies only refresh buckets already held.
    pub(super) fn record(
        &self,
        checks: &[LimitCheck],
        windows: &[Option<Window>],
        at_ms: u64,
        sent: std::time::Instant,
        refused: bool,
    ) {
        if self.capacity == 0 || (!refused && self.is_empty()) {
            return;
        }
        // `sent` is the reply's call's instant: now, give or take a round trip, read once.
        let mut entries = self.lock();
        if sent.saturating_duration_since(entries.swept) >= SWEEP_EVERY {
            entries.swept = sent;
            entries
                .map
                .retain(|&(_, period_ms), s| !s.expired(period_ms, sent));
        }
        let map = &mut entries.map;
        for (check, &window) in checks.iter().zip(windows) {
            let key = (check.key.clone(), check.spec.period_ms());
            let snapshot = Snapshot {
                window,
                at_ms,
                sent,
            };
            if let Some(held) = map.get_mut(&key) {
                *held = snapshot;
            } else if refused {
                if map.len() >= self.capacity {
                    Self::make_room(map, self.capacity, sent);
                }
                map.insert(key, snapshot);
            }
        }
        self.held.store(map.len(), Ordering::Relaxed);
    }

    /// Drops snapshots older than two periods (they can no longer refuse
    /// anything), then arbitrary ones down to 7/8 of the capacity, so a flood
    /// of refused clients costs amortised O(1) per insertion.
    fn make_room(map: &mut HashMap<CacheKey, Snapshot>, capacity: usize, now: std::time::Instant) {
        map.retain(|&(_, period_ms), s| !s.expired(period_ms, now));
        let target = capacity - capacity / 8 - 1;
        if map.len() > target {
            let excess = map.len() - target;
            let victims: Vec<CacheKey> = map.keys().take(excess).cloned().collect();
            for key in victims {
                map.remove(&key);
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::{ManualClock, RateSpec};

    const T0: u64 = 19_675 * 86_400_000;

    fn spec(limit: u64, secs: u64) -> RateSpec {
        RateSpec::new(limit, Duration::from_secs(secs)).unwrap()
    }

    /// A cache of 16, a clock at `T0`, a bucket of 2 a minute, and a window of it holding 2.
    fn full_bucket() -> (LocalCache, ManualClock, LimitCheck, Window) {
        let full = LimitCheck::new(BucketKey::key(Arc::from("k")), spec(2, 60));
        let window = Window {
            start_ms: T0,
            current: 2,
            previous: 0,
        };
        (LocalCache::new(16), ManualClock::new(T0), full, window)
    }

    #[test]
    fn local_cache_refuses_only_known_buckets_and_stays_bounded() {
        let (cache, clock, full, window) = full_bucket();
        let other = LimitCheck::new(BucketKey::key(Arc::from("other")), spec(2, 60));
        let sent = std::time::Instant::now();
        // Seen in an allowed reply: not stored.
        cache.record(
            std::slice::from_ref(&full),
            &[Some(window)],
            T0,
            sent,
            false,
        );
        assert_eq!(cache.len(), 0);
        cache.record(std::slice::from_ref(&full), &[Some(window)], T0, sent, true);
        let d = cache
            .refuse(std::slice::from_ref(&full), Some(&clock))
            .unwrap();
        assert!(!d.allowed);
        assert_eq!(d.statuses[0].remaining, 0);
        // 2 in this window: free at the next one, plus half a period of decay.
        assert_eq!(d.retry_after(), Duration::from_millis(60_000 + 30_000));
        // An unknown sibling sends the request to Redis.
        assert!(cache.refuse(&[full.clone(), other], Some(&clock)).is_none());
        // Once the wait has passed, the bucket is no longer refused locally.
        clock.set(T0 + 90_000);
        assert!(
            cache
                .refuse(std::slice::from_ref(&full), Some(&clock))
                .is_none()
        );

        for n in 0..100 {
            let c = LimitCheck::new(BucketKey::key(Arc::from(format!("k{n}"))), spec(1, 60));
            cache.record(std::slice::from_ref(&c), &[Some(window)], T0, sent, true);
            assert!(cache.len() <= 16);
        }
        assert!(
            LocalCache::new(0)
                .snapshots(std::slice::from_ref(&full))
                .is_none()
        );
    }

    #[test]
    fn snapshots_too_old_to_refuse_are_swept_and_an_empty_cache_is_skipped() {
        let (cache, clock, full, window) = full_bucket();
        let now = std::time::Instant::now();
        let record = |check: &LimitCheck, sent, refused| {
            cache.record(
                std::slice::from_ref(check),
                &[Some(window)],
                T0,
                sent,
                refused,
            );
        };
        let refuses = |check: &LimitCheck| {
            cache
                .refuse(std::slice::from_ref(check), Some(&clock))
                .is_some()
        };
        // Nothing refused yet: a reply of an admitted request stores nothing, and a check finds
        // the cache empty without looking.
        record(&full, now, false);
        assert!(cache.is_empty());
        assert!(cache.snapshots(std::slice::from_ref(&full)).is_none());

        // A refusal seen two periods (120 s) ago and more: its counts have rolled out.
        record(
            &full,
            now.checked_sub(Duration::from_secs(130)).unwrap(),
            true,
        );
        assert!(!cache.is_empty());
        assert!(refuses(&full));
        // Another bucket's admitted reply, a sweep interval later, sweeps it out.
        let other = LimitCheck::new(BucketKey::key(Arc::from("other")), spec(2, 60));
        let later = now + SWEEP_EVERY + Duration::from_millis(1);
        record(&other, later, false);
        assert_eq!(cache.len(), 0);
        assert!(cache.is_empty());
        assert!(!refuses(&full));

        // A recent refusal stays through sweeps.
        record(&full, now, true);
        record(
            &other,
            later + SWEEP_EVERY + Duration::from_millis(1),
            false,
        );
        assert_eq!(cache.len(), 1);
        assert!(refuses(&full));
    }
}
