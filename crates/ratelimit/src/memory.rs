//! In-process rate limiting with a sliding-window counter.
//!
//! # Algorithm
//!
//! Time is cut into fixed windows aligned to multiples of the period since the
//! Unix epoch (`start = now - now % period`), so every instance, and a future
//! shared backend reading the same clock, agrees on the boundaries, and a
//! window's end is a meaningful `X-RateLimit-Reset`. Each bucket keeps three
//! numbers: the start of its current window, the count in that window and the
//! count in the window before. The number of requests in the trailing period is
//! estimated as
//!
//! ```text
//! estimate = previous * (period - elapsed) / period + current
//! ```
//!
//! where `elapsed` is the time since the current window started: the previous
//! window contributes in proportion to how much of it still overlaps the
//! trailing period. A request is allowed iff `estimate + 1 <= limit`; it then
//! adds one to `current`, and `remaining = floor(limit - estimate)` afterwards.
//! All of it is computed exactly in integers (see `window.rs`), so decisions
//! are deterministic to the millisecond. When refused, `retry_after` is the
//! smallest whole number of milliseconds after which the decaying estimate
//! admits one request, solved in closed form; it may run into the next window,
//! where today's count becomes the decaying previous one.
//!
//! This is the sliding-window estimate Cloudflare described for its rate
//! limiting (pingora-limits' `Rate` keeps the same two interval counts). It
//! assumes the previous window's requests were spread evenly across it. Since
//! no more than `limit` requests are ever admitted within one aligned window,
//! any trailing interval of one period holds at most `2 * limit`; approaching
//! that takes a client that bunches a full allowance at the very end of one
//! window and then paces the next one to the decaying estimate. On real traffic
//! the error is tiny: Cloudflare measured, over 400 million requests, 0.003% of
//! requests wrongly allowed or rate-limited.
//!
//! # Storage and atomicity
//!
//! Buckets live in [`SHARDS`] shards, each a `std::sync::Mutex` around a
//! `HashMap` keyed by a 128-bit keyed fingerprint of bucket key and period (so
//! `10/second` and `1000/hour` on the same key are separate buckets; 48 bytes
//! a bucket, see `Fingerprint`). A std mutex rather than an async one is
//! right here: critical sections are a few hash lookups and never span an
//! `.await`. A check touching several buckets locks every shard involved, in
//! ascending shard order so two checks can never deadlock, evaluates every
//! bucket, and consumes from all of them only if all allow: concurrent requests
//! cannot both slip through, and a refused request costs nothing. A poisoned
//! mutex is recovered rather than propagated, since a panic elsewhere cannot
//! leave a bucket's three integers half-written.
//!
//! Buckets that can no longer affect a decision (their windows are two or more
//! periods old) are dropped by [`MemoryLimiter::sweep`], typically run by
//! [`MemoryLimiter::spawn_sweeper`].

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use async_trait::async_trait;
use siphasher::sip128::{Hash128, Hasher128, SipHasher13};

use crate::decision::{Decision, LimitStatus};
use crate::key::{BucketKey, LimitCheck};
use crate::window::{Grid, View, Window};
use crate::{Admission, Admitted, Guarded, Lease, LeaseStatus, Settlement};
use crate::{Clock, SystemClock};
use crate::{RateLimitError, RateLimiter};

/// Number of shards. 64 keeps contention low on any realistic core count and
/// lets a check record the shards it touches in one `u64` bitmask.
pub const SHARDS: usize = 64;

/// Checks with at most this many limits find their shards without allocating.
const INLINE_CHECKS: usize = 16;

/// A bucket's identity in the map: a keyed 128-bit hash of its key and period (the
/// fingerprint; SipHash-1-3 with its 128-bit output), not the key itself. A key with its route
/// scope and client takes 56 bytes and the table's spare capacity multiplies that; the
/// fingerprint takes 16, which is what keeps a million tracked clients under 256 MiB. The hash
/// is keyed at random per process, so nobody can aim two buckets at one fingerprint; by chance,
/// two of a million buckets share one with odds below 2^-88.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint([u64; 2]);

impl Hash for Fingerprint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The first half is already a keyed hash: the map uses it as is ([`PassThrough`]).
        state.write_u64(self.0[0]);
    }
}

/// The hasher of a map keyed by [`Fingerprint`]: hands the fingerprint's first half through
/// instead of hashing it again.
#[derive(Clone, Copy, Default)]
struct PassThrough;

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;
    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is ever called (see `Fingerprint::hash`); folding keeps any other
        // use correct, if slower.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A fresh secret fingerprint key, from the OS (std's per-process hasher keys, themselves from
/// the OS, should that fail: a limiter is never left without a secret key).
fn fingerprint_key() -> [u64; 2] {
    let mut bytes = [0u8; 16];
    match getrandom::fill(&mut bytes) {
        Ok(()) => {
            let (a, b) = bytes.split_at(8);
            [a, b].map(|half| u64::from_le_bytes(half.try_into().unwrap_or_default()))
        }
        Err(_) => [0u64, 1].map(|i| RandomState::new().hash_one(i)),
    }
}

/// A bucket's counts and the period they are counted over (the sweeper needs it).
#[derive(Clone, Copy, Debug)]
struct Bucket {
    window: Window,
    period_ms: u64,
}

type ShardMap = HashMap<Fingerprint, Bucket, PassThrough>;

fn lock(shard: &Mutex<ShardMap>) -> MutexGuard<'_, ShardMap> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

fn view_in(map: &ShardMap, id: Fingerprint, grid: Grid, now_ms: u64) -> View {
    match map.get(&id) {
        Some(bucket) => View::of(&bucket.window, now_ms, grid),
        None => View::fresh(now_ms, grid),
    }
}

fn consume_in(map: &mut ShardMap, id: Fingerprint, grid: Grid, cost: u64, now_ms: u64) -> View {
    if let Some(bucket) = map.get_mut(&id) {
        let view = View::of(&bucket.window, now_ms, grid).consumed(cost);
        bucket.window = view.window();
        return view;
    }
    let view = View::fresh(now_ms, grid).consumed(cost);
    map.insert(
        id,
        Bucket {
            window: view.window(),
            period_ms: grid.period_ms,
        },
    );
    view
}

/// The in-memory backend: exact within one process, nothing shared between
/// gateway instances.
pub struct MemoryLimiter {
    clock: Arc<dyn Clock>,
    // The secret key of bucket [`Fingerprint`]s (SipHash-1-3 with a 128-bit
    // output, one pass over key and period). The shard comes from the second
    // half, placement in the map from the first: the halves are independent
    // outputs of the one hash, so no map sees keys whose hashes share the
    // bits hashbrown uses for its control bytes.
    fingerprint_key: [u64; 2],
    shards: Box<[Mutex<ShardMap>]>,
    /// Concurrency slots held: per key, each lease's id and expiry. One mutex, taken before any
    /// shard (so never in the opposite order), and only by requests with a concurrency cap.
    leases: Mutex<HashMap<BucketKey, Vec<(u64, u64)>>>,
}

impl fmt::Debug for MemoryLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No bucket count: that would lock every shard just to print.
        f.debug_struct("MemoryLimiter")
            .field("clock", &self.clock)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl MemoryLimiter {
    /// The clock this limiter reads (the fallback limiter's is the breaker's too).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// An empty limiter reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            fingerprint_key: fingerprint_key(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(PassThrough)))
                .collect(),
            leases: Mutex::new(HashMap::new()),
        }
    }

    fn lock_leases(&self) -> MutexGuard<'_, HashMap<BucketKey, Vec<(u64, u64)>>> {
        // Entries are pushed and removed whole, so a panic elsewhere cannot tear one.
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Synchronous form of [`RateLimiter::admit`].
    pub fn admit_now(&self, admission: &Admission<'_>) -> Admitted {
        let Admission {
            guards,
            checks,
            lease,
        } = *admission;
        let mut leases = lease.map(|_| self.lock_leases());
        let now = self.clock.now_millis();
        let mut lease_status = None;
        if let (Some(lease), Some(map)) = (lease, leases.as_mut()) {
            let held = map.entry(lease.key.clone()).or_default();
            held.retain(|&(_, expires)| expires > now);
            lease_status = Some(LeaseStatus {
                cap: lease.cap,
                in_flight: held.len() as u64,
                acquired: lease.shadow || (held.len() as u64) < lease.cap,
            });
        }
        let slot = lease_status.is_none_or(|l| l.acquired);
        let all: std::borrow::Cow<'_, [LimitCheck]> = if guards.is_empty() {
            std::borrow::Cow::Borrowed(checks)
        } else {
            std::borrow::Cow::Owned(guards.iter().chain(checks).cloned().collect())
        };
        let mut decision = self.decide_now_with(guards.len(), &all, slot);
        if !decision.allowed
            && let Some(refused) = decision.statuses[..guards.len()]
                .iter()
                .find(|s| s.is_exceeded())
        {
            return Admitted::GuardRefused(*refused);
        }
        let mut statuses = decision.statuses.split_off(guards.len());
        std::mem::swap(&mut decision.statuses, &mut statuses);
        if let (Some(lease), Some(map), Some(status)) =
            (lease, leases.as_mut(), lease_status.as_mut())
        {
            if decision.allowed {
                map.entry(lease.key.clone())
                    .or_default()
                    .push((lease.id, now.saturating_add(lease.ttl_ms())));
                status.in_flight += 1;
            } else if !status.acquired {
                status.in_flight = status.in_flight.max(status.cap);
            }
        }
        Admitted::Decided {
            decision,
            lease: lease_status,
            at_ms: now,
            local: false,
        }
    }

    /// Synchronous form of [`RateLimiter::settle`].
    pub fn settle_now(&self, settlement: &Settlement<'_>) {
        for a in settlement.adjustments {
            let (id, shard) = self.locate(&a.check.key, a.check.spec.period_ms());
            if let Some(bucket) = lock(&self.shards[shard]).get_mut(&id) {
                bucket
                    .window
                    .adjust(a.check.grid(), a.charged_at_ms, a.delta);
            }
        }
        if let Some(lease) = settlement.release {
            let mut map = self.lock_leases();
            if let Some(held) = map.get_mut(&lease.key) {
                held.retain(|&(id, _)| id != lease.id);
                if held.is_empty() {
                    map.remove(&lease.key);
                }
            }
        }
    }

    /// Synchronous form of [`RateLimiter::renew`]. A lease that expired meanwhile is not
    /// brought back (its slot may be someone else's now).
    pub fn renew_now(&self, lease: &Lease) {
        let now = self.clock.now_millis();
        if let Some(held) = self.lock_leases().get_mut(&lease.key) {
            for (id, expires) in held.iter_mut() {
                if *id == lease.id && *expires > now {
                    *expires = now.saturating_add(lease.ttl_ms());
                }
            }
        }
    }

    /// Concurrency slots held now for `key` (for status pages and tests).
    pub fn in_flight(&self, key: &BucketKey) -> u64 {
        let now = self.clock.now_millis();
        self.lock_leases().get(key).map_or(0, |held| {
            held.iter().filter(|&&(_, e)| e > now).count() as u64
        })
    }

    /// The bucket's fingerprint and the shard that holds it.
    fn locate(&self, key: &BucketKey, period_ms: u64) -> (Fingerprint, usize) {
        let [k0, k1] = self.fingerprint_key;
        let mut hasher = SipHasher13::new_with_keys(k0, k1);
        (key, period_ms).hash(&mut hasher);
        let Hash128 { h1, h2 } = hasher.finish128();
        let id = Fingerprint([h1, h2]);
        // SHARDS is 64, so the top six bits select a shard uniformly.
        let shard = (id.0[1] >> (u64::BITS - SHARDS.trailing_zeros())) as usize;
        (id, shard)
    }

    /// Number of buckets held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| lock(s).is_empty())
    }

    /// Removes buckets that can no longer affect a decision: those whose
    /// current window is two or more periods old, which includes every bucket
    /// idle for longer than two periods. Returns how many were removed.
    ///
    /// Shards are locked one at a time, so requests keep flowing meanwhile.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_millis();
        self.shards
            .iter()
            .map(|shard| {
                let mut map = lock(shard);
                let before = map.len();
                map.retain(|_, bucket| !bucket.window.is_expired(now, bucket.period_ms));
                before - map.len()
            })
            .sum()
    }

    /// Runs [`sweep`](Self::sweep) every `every` (at least 1ms) on a
    /// dedicated OS thread, so it works under any async runtime or none.
    ///
    /// The thread holds only a `Weak` reference, so it never keeps the limiter
    /// alive, and exits when the limiter is gone. Dropping the returned guard
    /// wakes and stops the thread immediately and waits for it to finish.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) -> std::io::Result<SweeperGuard> {
        let limiter = Arc::downgrade(self);
        let every = every.max(Duration::from_millis(1));
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = thread::Builder::new()
            .name("ratelimit-sweeper".into())
            .spawn(move || {
                // The guard never sends; its sender being dropped is the stop
                // signal, which also interrupts the wait at once.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let Some(limiter) = limiter.upgrade() else {
                        return;
                    };
                    limiter.sweep();
                }
            })?;
        Ok(SweeperGuard {
            stop: Some(stop),
            handle: Some(handle),
        })
    }

    /// Synchronous form of [`RateLimiter::check`]: evaluates every check and
    /// consumes one unit from each bucket only if all allow. Never blocks on
    /// anything but the shard mutexes.
    ///
    /// Checks that name the same bucket (same key and period) share it: it is
    /// charged once per request, and each such check is judged against its own limit.
    pub fn check_now(&self, checks: &[LimitCheck]) -> Decision {
        self.decide_now_with(0, checks, true)
    }

    /// [`check_now`](Self::check_now) where the first `guards` checks must admit like the others
    /// but are never charged (the failed-auth guard folded into the same decision), and `slot`
    /// says whether whatever else the admission needs (a concurrency slot) is available: without
    /// it nothing is charged.
    fn decide_now_with(&self, guards: usize, checks: &[LimitCheck], slot: bool) -> Decision {
        let mut statuses = Vec::with_capacity(checks.len());
        if checks.is_empty() {
            return Decision {
                allowed: true,
                statuses,
            };
        }

        let mut inline = [(Fingerprint([0; 2]), 0u8); INLINE_CHECKS];
        let mut spilled = Vec::new();
        let located: &mut [(Fingerprint, u8)] = if checks.len() <= INLINE_CHECKS {
            &mut inline[..checks.len()]
        } else {
            spilled.resize(checks.len(), (Fingerprint([0; 2]), 0));
            &mut spilled
        };
        let mut touched = 0u64;
        for (slot, check) in located.iter_mut().zip(checks) {
            let (id, shard) = self.locate(&check.key, check.spec.period_ms());
            // SHARDS is 64, so a shard index always fits a u8.
            *slot = (id, shard as u8);
            touched |= 1 << shard;
        }

        let mut locked = Locked::ascending(&self.shards, touched);
        // Read under the locks, so every bucket sees non-decreasing times
        // from successive checks (short of the clock itself stepping back).
        let now = self.clock.now_millis();

        let allowed = slot
            && checks
                .iter()
                .zip(located.iter())
                .all(|(check, &(id, shard))| {
                    check.shadow
                        || view_in(locked.map(shard), id, check.grid(), now)
                            .admits(check.spec.limit, check.cost)
                });

        for (i, (check, &(id, shard))) in checks.iter().zip(located.iter()).enumerate() {
            // A shadow limit counts like the others but only reports whether it would refuse.
            let would_admit = !check.shadow
                || view_in(locked.map(shard), id, check.grid(), now)
                    .admits(check.spec.limit, check.cost);
            let view = if allowed && i >= guards && !shares_earlier_bucket(checks, located, i) {
                consume_in(locked.map(shard), id, check.grid(), check.cost, now)
            } else {
                view_in(locked.map(shard), id, check.grid(), now)
            };
            statuses.push(view.status(check, !allowed || !would_admit));
        }
        Decision { allowed, statuses }
    }

    /// Synchronous form of [`RateLimiter::peek`]: the bucket's status without
    /// consuming, and without creating a bucket that does not exist.
    pub fn peek_now(&self, check: &LimitCheck) -> LimitStatus {
        let (id, shard) = self.locate(&check.key, check.spec.period_ms());
        let map = lock(&self.shards[shard]);
        let view = view_in(&map, id, check.grid(), self.clock.now_millis());
        drop(map);
        view.status(check, true)
    }
}

/// The shards one check holds, locked in ascending index order, which is the
/// deadlock-avoidance rule shared by every check.
struct Locked<'a> {
    shards: &'a [Mutex<ShardMap>],
    guards: [Option<MutexGuard<'a, ShardMap>>; SHARDS],
}

impl<'a> Locked<'a> {
    fn ascending(shards: &'a [Mutex<ShardMap>], mask: u64) -> Self {
        let mut guards = [const { None }; SHARDS];
        let mut pending = mask;
        while pending != 0 {
            let shard = pending.trailing_zeros() as usize;
            guards[shard] = Some(lock(&shards[shard]));
            pending &= pending - 1;
        }
        Self { shards, guards }
    }

    fn map(&mut self, shard: u8) -> &mut ShardMap {
        let shard = usize::from(shard);
        // Every shard a check names was locked in `ascending`; the fallback
        // only spares an unwrap and never runs.
        self.guards[shard].get_or_insert_with(|| lock(&self.shards[shard]))
    }
}

/// Whether check `i` names a bucket an earlier check in the same request
/// already charged. Quadratic, but a request carries a handful of checks and
/// the fingerprint comparison rejects almost every pair without touching the keys.
fn shares_earlier_bucket(checks: &[LimitCheck], located: &[(Fingerprint, u8)], i: usize) -> bool {
    let check = &checks[i];
    checks[..i]
        .iter()
        .zip(&located[..i])
        .any(|(earlier, &(id, _))| {
            id == located[i].0
                && earlier.spec.period_ms() == check.spec.period_ms()
                && earlier.key == check.key
        })
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn check(&self, checks: &[LimitCheck]) -> Result<Decision, RateLimitError> {
        Ok(self.check_now(checks))
    }

    async fn peek(&self, check: &LimitCheck) -> Result<LimitStatus, RateLimitError> {
        Ok(self.peek_now(check))
    }

    /// The default's peek-then-check, without boxing a future for each step (every key's
    /// request is guarded by its IP's failed-auth budget).
    async fn check_guarded(
        &self,
        guards: &[LimitCheck],
        checks: &[LimitCheck],
    ) -> Result<Guarded, RateLimitError> {
        let refused = Guarded::by_first_exceeded(guards.iter().map(|g| self.peek_now(g)));
        Ok(refused.unwrap_or_else(|| Guarded::Decided(self.check_now(checks))))
    }

    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn admit(&self, admission: &Admission<'_>) -> Result<Admitted, RateLimitError> {
        Ok(self.admit_now(admission))
    }

    async fn settle(&self, settlement: &Settlement<'_>) -> Result<(), RateLimitError> {
        self.settle_now(settlement);
        Ok(())
    }

    async fn renew(&self, lease: &Lease) -> Result<(), RateLimitError> {
        self.renew_now(lease);
        Ok(())
    }
}

/// Stops the sweeper thread started by [`MemoryLimiter::spawn_sweeper`] when dropped.
#[derive(Debug)]
#[must_use = "dropping the guard stops the sweeper at once"]
pub struct SweeperGuard {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for SweeperGuard {
    fn drop(&mut self) {
        // Closing the channel wakes the thread out of its wait immediately.
        drop(self.stop.take());
        if let Some(handle) = self.handle.take() {
            // A panic in the sweeper has nothing left to clean up; ignoring it
            // keeps a drop from panicking in turn.
            let _ = handle.join();
        }
    }
}
