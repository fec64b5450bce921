//! The counters layout ([`Layout::Counters`](super::Layout), the default): one integer per bucket
//! and window, charged with `INCRBY` and judged here by window.rs, instead of by a Lua script.
//!
//! # Keys
//!
//! ```text
//! {<prefix>:rl}:<BucketKey>:<period ms>ms:<window start ms>
//!     e.g. {infergate:rl}:ip:203.0.113.9:60000ms:1699920000000
//! ```
//!
//! A key is created by the first charge of its window with a TTL of two periods plus up to
//! [`TTL_JITTER_MAX_MS`](super::TTL_JITTER_MAX_MS) (`SET key 0 NX PX ttl`, then `INCRBY`: a key
//! never exists without its TTL, and no Redis 7 option is needed), after which its count can no
//! longer weigh in any estimate.
//!
//! # Known windows
//!
//! Once a reply has shown a window's counter (its `INCRBY` counted), the key exists with its TTL
//! for the rest of the window, so later charges of that window send the `INCRBY` alone: two
//! commands fewer for redis-server to parse, run and answer on every request of a busy bucket
//! (six commands a request of three buckets become four). What the limiter has seen is a fixed
//! table of the window keys' fingerprints ([`KnownWindows`]), lock-free and lossy: a slot taken
//! by another key only costs the `SET … NX` again. A key that vanished inside its window anyway
//! (`FLUSHDB`, eviction under `maxmemory`, a failover that lost writes) is recreated by that
//! `INCRBY` without a TTL; its reply then shows a count of zero before the charge, and the
//! follow-up call gives the key its TTL (`PEXPIRE`). Only a call cut short between the two, after
//! such a loss, leaves a counter without one: a key of a past window, never read again. A
//! settlement's adjustment of a known window is its `INCRBY` alone in the same way.
//!
//! # Previous windows
//!
//! A sliding window's estimate weighs the previous window's count, which the call reads with its
//! `MGET`. Once that window has been over for [`SETTLED_AFTER_MS`] plus the call deadline, its
//! count no longer moves (every replica's clock, kept within [`STEP_BACK_MS`] of Redis's, charges
//! the new window; a refused request's give-back lands within a deadline of its charge), so each
//! thread remembers the count it read, by the key's fingerprint, and later calls of that window
//! leave the key out of the `MGET` (the whole command, once every bucket's is remembered: three
//! commands a request of three buckets, down from six). Only buckets charged one unit a request
//! are remembered: a costed charge (tokens) is settled when its request ends, possibly minutes
//! later, into the window it was charged in.
//!
//! # A check
//!
//! One pipelined call: per bucket, `SET … NX` (unless the window is known) + `INCRBY` of the
//! current window's count by the check's cost (a guard, which is never charged, reads it with
//! `GET`), then one `MGET` of the previous windows' counts (sliding windows only; those this
//! thread remembers are left out); with a concurrency lease, the sorted set's sweep, `ZADD`,
//! `PEXPIRE` and `ZCARD`, and then the call is a `MULTI` block (the `ZADD` and the `PEXPIRE`
//! giving its key a TTL go together). Without a lease no block is needed: the `SET … NX` comes
//! before its `INCRBY` (or the window is known, its key made with a TTL), so a call cut short
//! never leaves a counter without a TTL, and what other clients' commands interleave changes
//! only which counts are seen, as a different arrival order would. redis-server spends about a
//! quarter of the check script's instructions on it (docs/performance.md), and the gateway
//! parses no `QUEUED` replies. The reply holds every bucket's count *including this request's
//! charge*; the decision is window.rs's exact arithmetic on the counts before it, so a request
//! decides exactly as the memory backend would on the same counts.
//!
//! A request refused by any bucket (or finding no free slot) gives everything back in a second
//! call: `DECRBY` of each charge (after the same `SET … NX`, so a give-back landing after its
//! key expired leaves no key without a TTL) and `ZREM` of its lease. Only refused requests that
//! reach Redis pay it; the local deny cache answers most refusals without any call.
//!
//! Between the charge and the give-back, other requests see the refused one's charge: two
//! requests racing for the last unit may both be refused where one would have fitted. The
//! layout can refuse a little early under contention, never admit past a limit. A give-back that
//! never lands (the replica died between the calls) over-counts until its window rolls out. A
//! count below zero (only a give-back after expiry writes one, into a window nobody reads) reads
//! as zero.
//!
//! # Time
//!
//! The instant is the caller's: an injected clock, or Redis's estimated by redis/clock.rs. A
//! clock stepping back by up to a second is read as the latest instant already used, so a
//! window once left is not charged again (unlike the hash layout, this one keeps no record of a
//! later window to judge a lagging clock by); a larger step is a clock corrected, and believed.
//!
//! # Foreign data
//!
//! A count that is not an integer, or below zero before a charge (another program wrote the
//! key), reads as zero. A charge that fails on one, or lands on one, is written over with the
//! request's cost once the request is admitted, as the scripts overwrite a bucket they cannot
//! read.
//!
//! Only the errors such data explains are read that way (`WRONGTYPE`, `ERR value is not an
//! integer…`, `ERR increment or decrement would overflow`). Any other error of a command
//! (`LOADING`, `READONLY` after a failover, `OOM` at `maxmemory`, `NOPERM`, `MOVED`, a renamed
//! command) says the server cannot count now: the call fails as an unreachable server's does, and
//! the configured failure mode decides, instead of every count reading zero and every request
//! being admitted.

use std::cell::RefCell;
use std::hash::{BuildHasher, DefaultHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use super::wire::{Pipeline, Value};

use super::{RedisLimiter, redis_error, unavailable};
use crate::decision::{Decision, LimitStatus};
use crate::key::LimitCheck;
use crate::window::{Grid, View, Window};
use crate::{Lease, LeaseStatus, RateLimitError, Settlement};

/// The largest step back in time read as no step at all (see `counters_now`).
const STEP_BACK_MS: u64 = 1_000;

/// How long after a window has ended, beyond the call deadline, its count is taken as final (see
/// the module doc, "Previous windows"): twice the largest clock step [`STEP_BACK_MS`] absorbs.
const SETTLED_AFTER_MS: u64 = 2 * STEP_BACK_MS;

/// Slots of each thread's table of previous windows' counts: 64 KiB a thread.
const SETTLED_COUNTS: usize = 4_096;

/// A thread's table of previous windows' final counts: (fingerprint, count) a slot.
type SettledCounts = Box<[(u64, u64)]>;

/// Slots of [`KnownWindows`]: 64 KiB a limiter. A busy bucket charges its window many times;
/// one charged once a window gains nothing from a slot.
const KNOWN_WINDOWS: usize = 8_192;

/// The window counters a reply has shown to exist (see the module doc, "Known windows"): each
/// slot holds the fingerprint of the last key stored there. Shared by every thread without a
/// lock; a lost or overwritten entry only sends a `SET … NX` that was not needed, and a
/// fingerprint collision (a key taken for known that is not) is the vanished key's case.
///
/// It also holds each thread's table of previous windows' final counts (the module doc,
/// "Previous windows"), by the same fingerprints: a pair of words a slot, which one atomic cannot
/// hold, so one table a thread instead of a lock.
pub(super) struct KnownWindows {
    slots: Box<[AtomicU64]>,
    seed: RandomState,
    settled: thread_local::ThreadLocal<RefCell<SettledCounts>>,
    /// How long into a window its previous one's count is final: [`SETTLED_AFTER_MS`] plus the
    /// call deadline.
    settled_after_ms: u64,
}

impl KnownWindows {
    /// For a limiter whose calls have `timeout` (a give-back lands within it).
    pub(super) fn new(timeout: std::time::Duration) -> Self {
        Self {
            slots: (0..KNOWN_WINDOWS).map(|_| AtomicU64::new(0)).collect(),
            seed: RandomState::new(),
            settled: thread_local::ThreadLocal::new(),
            settled_after_ms: u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .saturating_add(SETTLED_AFTER_MS),
        }
    }

    fn settled_table(&self) -> &RefCell<SettledCounts> {
        self.settled
            .get_or(|| RefCell::new(vec![(0, 0); SETTLED_COUNTS].into_boxed_slice()))
    }

    /// The final count this thread remembers for the window key of `fingerprint`.
    fn settled_count(&self, fingerprint: u64) -> Option<u64> {
        let table = self.settled_table().borrow();
        #[allow(clippy::cast_possible_truncation)]
        let (held, count) = table[fingerprint as usize % SETTLED_COUNTS];
        (held == fingerprint).then_some(count)
    }

    fn remember_settled(&self, fingerprint: u64, count: u64) {
        let mut table = self.settled_table().borrow_mut();
        #[allow(clippy::cast_possible_truncation)]
        let slot = &mut table[fingerprint as usize % SETTLED_COUNTS];
        *slot = (fingerprint, count);
    }

    /// A bucket's part of its window keys' fingerprints: `name`, the key up to the window's start
    /// (the limiter's prefix, common to every key, may be left out), hashed once for both of a
    /// call's windows. SipHash, keyed per limiter: a fingerprint picks a remembered count, and an
    /// attacker able to make two buckets collide could have one read the other's.
    fn bucket(&self, name: &[u8]) -> DefaultHasher {
        let mut hasher = self.seed.build_hasher();
        hasher.write(name);
        hasher
    }

    /// The fingerprint of `bucket`'s key for the window starting at `start_ms`: never 0, which
    /// marks an empty slot.
    fn fingerprint(bucket: &DefaultHasher, start_ms: u64) -> u64 {
        let mut hasher = bucket.clone();
        hasher.write_u64(start_ms);
        hasher.finish() | 1
    }

    fn slot(&self, fingerprint: u64) -> &AtomicU64 {
        // Lossless on 64-bit targets; on narrower ones the low bits pick the slot all the same.
        #[allow(clippy::cast_possible_truncation)]
        &self.slots[fingerprint as usize % KNOWN_WINDOWS]
    }

    fn contains(&self, fingerprint: u64) -> bool {
        self.slot(fingerprint).load(Ordering::Relaxed) == fingerprint
    }

    fn insert(&self, fingerprint: u64) {
        self.slot(fingerprint).store(fingerprint, Ordering::Relaxed);
    }
}

/// One distinct bucket of a check call: where its replies are and who charges it.
struct Slot {
    /// The first check naming it.
    first: usize,
    /// The window holding the call's instant.
    start_ms: u64,
    /// Where the previous window's count comes from; `None` for a fixed window (or the epoch's
    /// first window), which has none that counts.
    previous: Option<Previous>,
    /// Reply index of the current window's count: `INCRBY`'s when charged, else a `GET`'s.
    current: usize,
    /// The cost charged (its first check's, unless that is a guard: memory.rs's rule).
    cost: Option<u64>,
    /// The fingerprint of the window's key when charged (see [`KnownWindows`]).
    fingerprint: Option<u64>,
    /// The window was known, and its `INCRBY` went without the `SET … NX`.
    known: bool,
}

/// Where a slot's previous window's count comes from.
enum Previous {
    /// The call's `MGET`, at this index; `remember`: the key's fingerprint, when its count is
    /// final and is to be remembered once read.
    Read { at: usize, remember: Option<u64> },
    /// This thread's table, read before the call.
    Settled(u64),
}

/// A bucket's counts as the call found them, before its own charge.
struct Counts {
    window: Window,
    /// The charge was made (it fails on a key holding something else than an integer).
    charged: bool,
    /// The charge, sent without `SET … NX`, found no count: it may have created the key
    /// without a TTL, which the follow-up gives it.
    needs_ttl: bool,
}

/// The code of an error reply that another program's data in our key does not explain (see the
/// module doc, "Foreign data"); `None` for any other reply.
fn server_error(value: &Value) -> Option<&str> {
    let Value::Error(text) = value else {
        return None;
    };
    let foreign = text.starts_with("WRONGTYPE ")
        || text.starts_with("ERR value is not an integer")
        || text.starts_with("ERR increment or decrement would overflow");
    (!foreign).then(|| value.error_code().unwrap_or("ERR"))
}

/// A count as the arithmetic takes it: below zero is zero.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A charge as `INCRBY` takes it. A cost above `i64::MAX` never fits any limit's window anyway.
fn charge(cost: u64) -> i64 {
    i64::try_from(cost).unwrap_or(i64::MAX)
}

/// A window key's TTL: two periods (after which its count weighs nothing) and the jitter.
fn ttl_ms(grid: Grid, jitter: u64) -> u64 {
    grid.period_ms.saturating_mul(2).saturating_add(jitter)
}

/// Turns `buf`, a bucket's name and `:` up to `base`, into its counter for the window starting
/// at `start_ms`: a bucket's two keys share the name, written once.
fn window_key(buf: &mut Vec<u8>, base: usize, start_ms: u64) -> &[u8] {
    buf.truncate(base);
    buf.extend_from_slice(itoa::Buffer::new().format(start_ms).as_bytes());
    buf
}

/// `SET key 0 NX PX ttl`, then `verb` (`INCRBY` or `DECRBY`) of `amount`: the key gets its TTL
/// when this call creates it, and a call cut short between the two leaves a zero with a TTL,
/// never a count without one (so no `MULTI` is needed). Every change to a counter goes this way.
fn add(pipe: &mut Pipeline, key: &[u8], ttl_ms: u64, verb: &str, amount: i64) {
    // `SET key 0 NX PX ttl`: the same command (options go in any order), its constant middle
    // written once.
    pipe.cmd("SET")
        .arg(key)
        .encoded(3, b"$1\r\n0\r\n$2\r\nNX\r\n$2\r\nPX\r\n")
        .arg(ttl_ms);
    pipe.cmd(verb).arg(key).arg(amount);
}

/// Whether two checks count the same bucket (memory.rs compares key and period).
fn same_bucket(a: &LimitCheck, b: &LimitCheck) -> bool {
    a.spec.period_ms() == b.spec.period_ms() && a.key == b.key
}

impl RedisLimiter {
    /// The instant a counters call is judged at, and whether it should carry a `TIME` (see
    /// redis/clock.rs). A step back of up to [`STEP_BACK_MS`] (a refreshed offset, two threads
    /// racing) is read as the latest instant already used; a larger one is a clock corrected,
    /// and believed: held at a reading from the future, the limiter would charge one window
    /// until the real time caught up with it.
    fn counters_now(&self) -> (u64, bool) {
        let (now, sync) = match &self.clock {
            Some(clock) => (clock.now_millis(), false),
            None => self.server_clock.read(),
        };
        let latest = self.latest_ms.load(Ordering::Relaxed);
        if now == latest {
            // No store: the instant is shared by every worker, and most calls repeat it.
            (now, sync)
        } else if now > latest || latest - now > STEP_BACK_MS {
            // A plain store: two racing calls leave either reading, both fine.
            self.latest_ms.store(now, Ordering::Relaxed);
            (now, sync)
        } else {
            (latest, sync)
        }
    }

    /// The counter of `check`'s bucket in the window starting at `start_ms`, written into `buf`.
    /// Returns where the window's start begins in it.
    fn write_window_key(&self, buf: &mut Vec<u8>, check: &LimitCheck, start_ms: u64) -> usize {
        self.write_key_name(buf, check);
        buf.push(b':');
        let base = buf.len();
        window_key(buf, base, start_ms);
        base
    }

    /// The bucket part of the fingerprints of `name`'s window keys (`name`: a key up to `base`,
    /// where its window's start begins).
    fn bucket_hasher(&self, name: &[u8], base: usize) -> DefaultHasher {
        self.known.bucket(&name[self.key_prefix.len()..base])
    }

    /// [`add`]'s `INCRBY` of `amount` on `key` (whose fingerprint is `fingerprint`), without its
    /// `SET … NX` when the window is known (the module doc, "Known windows"). Returns whether it
    /// was known: a known key whose reply equals `amount` found no count, and its caller sends a
    /// `PEXPIRE`.
    fn add_counted(
        &self,
        pipe: &mut Pipeline,
        key: &[u8],
        fingerprint: u64,
        ttl_ms: u64,
        amount: i64,
    ) -> bool {
        let known = self.known.contains(fingerprint);
        if known {
            pipe.cmd("INCRBY").arg(key).arg(amount);
        } else {
            add(pipe, key, ttl_ms, "INCRBY", amount);
        }
        known
    }

    /// Sends `pipe` (with a `TIME` when `sync`) and returns its commands' replies, one each; a
    /// command's error that no foreign data explains fails the call (the module doc).
    async fn counters_call(
        &self,
        pipe: &mut Pipeline,
        sync: bool,
    ) -> Result<Vec<Value>, RateLimitError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let reply = self.call_synced(pipe, sync, deadline).await?;
        match reply.iter().find_map(server_error) {
            Some(code) => Err(redis_error(code)),
            None => Ok(reply),
        }
    }

    /// [`decide`](RedisLimiter::decide) in the counters layout (see the module doc).
    pub(super) async fn decide_counters(
        &self,
        guards: usize,
        checks: &[LimitCheck],
        lease: Option<&Lease>,
    ) -> Result<(Decision, Option<LeaseStatus>, u64), RateLimitError> {
        let (now, sync) = self.counters_now();
        let jitter = self.jitter_ms();
        // Per bucket two commands naming its key (~70 bytes), the `MGET`'s, a lease's four.
        let mut pipe = Pipeline::with_capacity(256 * checks.len() + 128);
        if lease.is_some() {
            // `ZADD` may create the slots' key, which only the `PEXPIRE` after it gives a TTL:
            // both or neither. (A bucket's `SET … NX` comes before its `INCRBY`, so a call
            // cut short never leaves a counter without a TTL, and needs no block.)
            pipe.atomic();
        }
        let mut slots: Vec<Slot> = Vec::with_capacity(checks.len());
        let mut slot_of: Vec<usize> = Vec::with_capacity(checks.len());
        let mut name = Vec::with_capacity(96);
        // The previous windows' counts, all in one command after the charges (which never touch
        // them): one reply to parse and one command for the server instead of one a bucket.
        let mut mget = Pipeline::with_capacity(96 * checks.len());
        mget.cmd("MGET");
        let mut previous_keys = 0;
        for (i, check) in checks.iter().enumerate() {
            if let Some(j) = checks[..i].iter().position(|c| same_bucket(c, check)) {
                slot_of.push(slot_of[j]);
                continue;
            }
            let grid = check.grid();
            let start_ms = grid.start(now);
            self.write_key_name(&mut name, check);
            name.push(b':');
            let base = name.len();
            let bucket = self.bucket_hasher(&name, base);
            let previous = match grid.fixed_offset_ms {
                None if start_ms >= grid.period_ms => {
                    let previous_ms = start_ms - grid.period_ms;
                    let key = window_key(&mut name, base, previous_ms);
                    let settled = check.cost == 1
                        && now >= start_ms.saturating_add(self.known.settled_after_ms);
                    let fingerprint =
                        settled.then(|| KnownWindows::fingerprint(&bucket, previous_ms));
                    match fingerprint.and_then(|f| self.known.settled_count(f)) {
                        Some(count) => Some(Previous::Settled(count)),
                        None => {
                            mget.arg(key);
                            previous_keys += 1;
                            Some(Previous::Read {
                                at: previous_keys - 1,
                                remember: fingerprint,
                            })
                        }
                    }
                }
                _ => None,
            };
            let key = window_key(&mut name, base, start_ms);
            let cost = (i >= guards).then_some(check.cost);
            // A guard's key is only read: whether it exists does not matter.
            let (fingerprint, known) = match cost {
                Some(cost) => {
                    let f = KnownWindows::fingerprint(&bucket, start_ms);
                    let known =
                        self.add_counted(&mut pipe, key, f, ttl_ms(grid, jitter), charge(cost));
                    (Some(f), known)
                }
                None => {
                    pipe.cmd("GET").arg(key);
                    (None, false)
                }
            };
            slots.push(Slot {
                first: i,
                start_ms,
                previous,
                current: pipe.len() - 1,
                cost,
                fingerprint,
                known,
            });
            slot_of.push(slots.len() - 1);
        }
        let previous_at = (previous_keys > 0).then(|| {
            pipe.append(&mut mget);
            pipe.len() - 1
        });
        if let Some(lease) = lease {
            self.write_lease_key_name(&mut name, lease);
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&name[..])
                .arg("-inf")
                .arg(now);
            pipe.cmd("ZADD")
                .arg(&name[..])
                .arg(now.saturating_add(lease.ttl_ms()))
                .arg(lease.id);
            pipe.cmd("PEXPIRE")
                .arg(&name[..])
                .arg(lease.ttl_ms().saturating_add(jitter));
            pipe.cmd("ZCARD").arg(&name[..]);
        }
        // Before sending, so the cache's estimate of Redis time runs ahead rather than behind.
        let sent = std::time::Instant::now();
        let reply = self.counters_call(&mut pipe, sync).await?;

        let previous_counts: &[Value] = match previous_at.map(|k| &reply[k]) {
            None => &[],
            Some(Value::Array(values)) if values.len() == previous_keys => values,
            Some(_) => return Err(unavailable("unexpected reply")),
        };
        let counts: Vec<Counts> = slots
            .iter()
            .map(|slot| {
                let previous = match slot.previous {
                    None => 0,
                    Some(Previous::Settled(n)) => n,
                    Some(Previous::Read { at, remember }) => {
                        let n = previous_counts[at].integer().map_or(0, count);
                        if let Some(fingerprint) = remember {
                            self.known.remember_settled(fingerprint, n);
                        }
                        n
                    }
                };
                let current = reply[slot.current].integer();
                // A count below zero before the charge was not ours either: the charge is
                // written over like one that failed.
                let (current, charged) = match (slot.cost, current) {
                    (Some(cost), Some(after)) if after >= charge(cost) => {
                        (count(after - charge(cost)), true)
                    }
                    (None, Some(n)) => (count(n), false),
                    _ => (0, false),
                };
                // Stored only when it was not there: a slot every worker rewrote on every charge
                // would move its cache line between their cores.
                if let (true, false, Some(fingerprint)) = (charged, slot.known, slot.fingerprint) {
                    self.known.insert(fingerprint);
                }
                Counts {
                    window: Window {
                        start_ms: slot.start_ms,
                        current,
                        previous,
                    },
                    charged,
                    needs_ttl: slot.known && charged && current == 0,
                }
            })
            .collect();
        // The slots held once this request's was added (ids are random: ZADD added one).
        let held = match lease {
            None => None,
            Some(_) => match reply.last().and_then(Value::integer).map(count) {
                Some(held) if held >= 1 => Some(held),
                _ => return Err(unavailable("unexpected reply")),
            },
        };
        let slot_free = match (lease, held) {
            (Some(lease), Some(held)) => lease.shadow || held - 1 < lease.cap,
            _ => true,
        };
        let view = |i: usize, window: &Window| View::of(window, now, checks[i].grid());
        let admits = |i: usize| {
            let check = &checks[i];
            view(i, &counts[slot_of[i]].window).admits(check.spec.limit, check.cost)
        };
        let allowed = slot_free && (0..checks.len()).all(|i| checks[i].shadow || admits(i));

        // Costed and fixed-window buckets are settled later, which the cache cannot see.
        let cached = lease.is_none()
            && checks
                .iter()
                .all(|c| c.cost == 1 && c.fixed_offset_ms.is_none());
        let mut windows = Vec::with_capacity(if cached { checks.len() } else { 0 });
        let statuses: Vec<LimitStatus> = checks
            .iter()
            .enumerate()
            .map(|(i, check)| {
                let slot = &slots[slot_of[i]];
                let found = &counts[slot_of[i]];
                // As memory.rs reports it: every check of an admitted request sees its bucket's
                // charge (made by the bucket's first check, which precedes it).
                let mut window = found.window;
                if allowed && let Some(cost) = slot.cost {
                    window.current = window.current.saturating_add(cost);
                }
                if cached {
                    windows.push(Some(window));
                }
                let would_admit = !check.shadow || admits(i);
                view(i, &window).status(check, !allowed || !would_admit)
            })
            .collect();
        let lease_status = match (lease, held) {
            (Some(lease), Some(held)) => Some(LeaseStatus {
                cap: lease.cap,
                in_flight: if allowed { held } else { held - 1 },
                acquired: slot_free,
            }),
            _ => None,
        };

        self.counters_follow_up(checks, &slots, &counts, allowed, lease, jitter)
            .await;
        if cached {
            self.cache.record(checks, &windows, now, sent, !allowed);
        }
        Ok((Decision { allowed, statuses }, lease_status, now))
    }

    /// What a check call leaves to do: a refused request's charges and slot given back, an
    /// admitted one's charge written over another program's data, a TTL for a counter that a
    /// charge without `SET … NX` may have created. One more call, only then.
    /// Best effort: a give-back that fails over-counts until its window rolls out.
    async fn counters_follow_up(
        &self,
        checks: &[LimitCheck],
        slots: &[Slot],
        counts: &[Counts],
        allowed: bool,
        lease: Option<&Lease>,
        jitter: u64,
    ) {
        // An admitted request whose charges all landed (nearly every one) has nothing to do.
        if allowed
            && slots
                .iter()
                .zip(counts)
                .all(|(slot, found)| (slot.cost.is_none() || found.charged) && !found.needs_ttl)
        {
            return;
        }
        let mut pipe = Pipeline::with_capacity(256 * slots.len() + 64);
        let mut name = Vec::with_capacity(96);
        for (slot, found) in slots.iter().zip(counts) {
            let Some(cost) = slot.cost else { continue };
            let check = &checks[slot.first];
            let ttl = ttl_ms(check.grid(), jitter);
            self.write_window_key(&mut name, check, slot.start_ms);
            match (allowed, found.charged) {
                (false, true) => add(&mut pipe, &name, ttl, "DECRBY", charge(cost)),
                (true, false) => {
                    pipe.cmd("SET")
                        .arg(&name[..])
                        .arg(charge(cost))
                        .arg("PX")
                        .arg(ttl);
                }
                _ => {}
            }
            if found.needs_ttl {
                pipe.cmd("PEXPIRE").arg(&name[..]).arg(ttl);
            }
        }
        if let (false, Some(lease)) = (allowed, lease) {
            self.write_lease_key_name(&mut name, lease);
            pipe.cmd("ZREM").arg(&name[..]).arg(lease.id);
        }
        if !pipe.is_empty() {
            let _ = self.call(&mut pipe).await;
        }
    }

    /// The bucket's counts now, for a peek: a plain pipeline of `GET`s.
    pub(super) async fn peek_counters(
        &self,
        check: &LimitCheck,
    ) -> Result<(Option<Window>, u64), RateLimitError> {
        let (now, sync) = self.counters_now();
        let grid = check.grid();
        let start_ms = grid.start(now);
        let mut pipe = Pipeline::with_capacity(256);
        let mut name = Vec::with_capacity(96);
        let with_previous = grid.fixed_offset_ms.is_none() && start_ms >= grid.period_ms;
        if with_previous {
            self.write_window_key(&mut name, check, start_ms - grid.period_ms);
            pipe.cmd("GET").arg(&name[..]);
        }
        self.write_window_key(&mut name, check, start_ms);
        pipe.cmd("GET").arg(&name[..]);
        let reply = self.counters_call(&mut pipe, sync).await?;
        let read = |v: &Value| v.integer().map_or(0, count);
        let (previous, current) = match reply.as_slice() {
            [previous, current] => (read(previous), read(current)),
            [current] => (0, read(current)),
            _ => return Err(unavailable("unexpected reply")),
        };
        let window = Window {
            start_ms,
            current,
            previous,
        };
        Ok((Some(window), now))
    }

    /// [`settle`](crate::RateLimiter::settle) in the counters layout: each adjustment an
    /// `INCRBY` of the window its charge went to (after the same `SET … NX` as a charge, unless
    /// the window is known, when a count that is the adjustment alone gets a `PEXPIRE` after),
    /// the lease's `ZREM`. A charge whose window no longer weighs in any estimate is left alone, as
    /// window.rs's `adjust` leaves it.
    pub(super) async fn settle_counters(
        &self,
        settlement: &Settlement<'_>,
    ) -> Result<(), RateLimitError> {
        let (now, sync) = self.counters_now();
        let jitter = self.jitter_ms();
        let mut pipe = Pipeline::with_capacity(256 * settlement.adjustments.len() + 64);
        let mut name = Vec::with_capacity(96);
        // Adjustments of a known window, sent without `SET … NX`: (reply index, adjustment,
        // window start, TTL), for the vanished key's follow-up (the module doc, "Known windows").
        let mut unsure = Vec::new();
        for a in settlement.adjustments {
            let grid = a.check.grid();
            let charged = grid.start(a.charged_at_ms);
            let current = grid.start(now);
            let weighs = current == charged
                || (grid.fixed_offset_ms.is_none()
                    && current == charged.saturating_add(grid.period_ms));
            if !weighs {
                continue;
            }
            let base = self.write_window_key(&mut name, &a.check, charged);
            let fingerprint = KnownWindows::fingerprint(&self.bucket_hasher(&name, base), charged);
            let ttl = ttl_ms(grid, jitter);
            if self.add_counted(&mut pipe, &name, fingerprint, ttl, a.delta) {
                unsure.push((pipe.len() - 1, a, charged, ttl));
            }
        }
        if let Some(lease) = settlement.release {
            self.write_lease_key_name(&mut name, lease);
            pipe.cmd("ZREM").arg(&name[..]).arg(lease.id);
        }
        if pipe.is_empty() && !sync {
            return Ok(());
        }
        let reply = self.counters_call(&mut pipe, sync).await?;
        // A count that is the adjustment alone found no key: the `INCRBY` may have made it.
        let mut follow_up = Pipeline::with_capacity(128 * unsure.len());
        for (at, a, charged, ttl) in unsure {
            if reply.get(at).and_then(Value::integer) == Some(a.delta) {
                self.write_window_key(&mut name, &a.check, charged);
                follow_up.cmd("PEXPIRE").arg(&name[..]).arg(ttl);
            }
        }
        if !follow_up.is_empty() {
            // Best effort, as a give-back is.
            let _ = self.call(&mut follow_up).await;
        }
        Ok(())
    }
}
