//! The hashes layout ([`Layout::Hashes`](super::Layout)): one Redis hash per bucket, judged by
//! Lua scripts, how releases before the counters layout kept buckets; and the lease renewal
//! script, which both layouts use (their leases are the same sorted set).
//!
//! # Algorithm and exactness
//!
//! The same sliding-window counter as [`crate::memory`]: each bucket stores the
//! start of its current epoch-aligned window and the counts of that window and
//! of the one before. A check is one Lua script (`src/redis/check.lua`, run
//! with `EVALSHA`) that, atomically for all of a request's checks, rolls each
//! bucket forward to "now", decides whether every bucket admits one more
//! request, and only then charges one unit to each. A refused request writes
//! nothing.
//!
//! The script decides only the yes/no question, with exact integer arithmetic
//! (Lua numbers are doubles, so the products that window.rs takes in `u128` are
//! compared in 24-bit limbs). It returns every bucket as stored afterwards and
//! the instant it used, and the numbers reported to clients (`remaining`,
//! `reset_at_millis`, `retry_after`) are computed here by the very code the
//! memory backend uses (`window.rs`). Given the same clock readings, both
//! backends therefore return identical [`Decision`]s; the conformance suite
//! checks that on scripted and on pseudo-random sequences.
//!
//! The one approximation: limits above 2^53 - 1 are passed to the script as
//! 2^53 - 1, which changes no decision unless a single bucket counts 2^52
//! requests within two periods (at a million requests a second, 142 years).
//!
//! # Keys
//!
//! One Redis hash per bucket and period, fields `s` (window start, Unix ms), `c`
//! and `p` (current and previous counts):
//!
//! ```text
//! {<prefix>:rl}:<BucketKey>:<period ms>ms      e.g. {infergate:rl}:ip:203.0.113.9:60000ms
//! ```
//!
//! - The prefix keeps several deployments (or tests) apart on one server.
//! - `{<prefix>:rl}` is a Cluster hash tag: every rate-limit key hashes to the
//!   same slot, so one script may touch all of a request's buckets (per IP,
//!   per key, per role, per endpoint) on Redis Cluster. The price is a hot
//!   slot: all rate limiting of one prefix lands on one shard. Tagging per
//!   subject instead would spread the load but break multi-bucket atomicity,
//!   because one request's buckets name different subjects; shard by running
//!   several prefixes if one node is not enough.
//! - The period keeps `10/second` and `1000/hour` on the same key apart, as the
//!   memory backend does; milliseconds so that no two periods share a name.
//! - [`BucketKey`](crate::key::BucketKey)'s `Display` percent-escapes `:` and `%` inside ids, roles and
//!   routes, so distinct buckets never share a name.
//!
//! The first write in each window sets a TTL of two periods (after which the
//! window's counts can no longer affect a decision) plus up to
//! [`TTL_JITTER_MAX_MS`](super::TTL_JITTER_MAX_MS) of jitter, so keys written in one burst do not all
//! expire in the same instant; later writes in that window leave it. Idle
//! clients leave nothing behind.
//!
//! # Clock
//!
//! With [`RedisLimiterConfig::clock`](super::RedisLimiterConfig::clock) left `None`, the scripts read Redis's
//! `TIME`: one clock for every replica, so replicas whose clocks disagree still
//! agree on windows. With `Some(clock)`, the limiter passes that clock's
//! reading instead, which is what tests and the conformance suite do.

use super::reply::{integers, stored, unsigned};
use super::wire::{Pipeline, Value};
use super::{RedisLimiter, redis_error, unavailable, view_at};
use crate::decision::Decision;
use crate::key::LimitCheck;
use crate::window::Window;
use crate::{Lease, LeaseStatus, RateLimitError, Settlement};

/// Largest integer every Lua number (a double) represents exactly.
const MAX_EXACT: u64 = (1 << 53) - 1;

/// One of our scripts: its text, and the SHA-1 digest `EVALSHA` names it by.
pub(super) struct Script {
    body: &'static str,
    sha: String,
}

impl Script {
    fn new(body: &'static str) -> Self {
        Self {
            body,
            sha: ::redis::Script::new(body).get_hash().to_owned(),
        }
    }
}

/// Every script, loaded together by [`RedisLimiter::ready`].
pub(super) struct Scripts {
    check: Script,
    peek: Script,
    settle: Script,
    renew: Script,
}

const CHECK: &str = concat!(include_str!("common.lua"), include_str!("check.lua"));
const PEEK: &str = concat!(include_str!("common.lua"), include_str!("peek.lua"));
const SETTLE: &str = concat!(include_str!("common.lua"), include_str!("settle.lua"));
const RENEW: &str = concat!(include_str!("common.lua"), include_str!("renew.lua"));

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            check: Script::new(CHECK),
            peek: Script::new(PEEK),
            settle: Script::new(SETTLE),
            renew: Script::new(RENEW),
        }
    }

    /// `SCRIPT LOAD` of each, in one pipeline.
    pub(super) fn load(&self, pipe: &mut Pipeline) {
        for script in self.all() {
            pipe.cmd("SCRIPT").arg("LOAD").arg(script.body);
        }
    }

    /// Whether `replies` (to [`load`](Self::load), in order) are these scripts' digests.
    pub(super) fn loaded(&self, replies: &[Value]) -> bool {
        replies.len() == 4
            && self.all().iter().zip(replies).all(|(script, reply)| {
                matches!(reply, Value::Bulk(sha) if sha.as_slice() == script.sha.as_bytes())
            })
    }

    fn all(&self) -> [&Script; 4] {
        [&self.check, &self.peek, &self.settle, &self.renew]
    }
}

impl RedisLimiter {
    /// The clock argument of the scripts: `None` (sent as `""`) asks for Redis `TIME`.
    fn now_arg(&self) -> Result<Option<u64>, RateLimitError> {
        match &self.clock {
            None => Ok(None),
            Some(clock) => {
                let now = clock.now_millis();
                // Beyond 2^53 the script could not hold it exactly (year 287396).
                if now > MAX_EXACT {
                    return Err(unavailable("clock reading out of range"));
                }
                Ok(Some(now))
            }
        }
    }

    /// Runs `script` and returns its integers ([`integers`]), within the per-call deadline.
    /// `fill` writes the call's key count, keys and arguments after `EVALSHA <sha>`. The script
    /// goes as `EVALSHA`, then as `EVAL` with its text if the server lost its script cache
    /// (restart, `SCRIPT FLUSH`, failover); `EVAL` also caches it again.
    async fn run_script<F>(&self, script: &Script, fill: F) -> Result<Vec<i64>, RateLimitError>
    where
        F: Fn(&mut Pipeline),
    {
        let build = |verb: &str, what: &str| {
            // Sized for the usual call (a check of three buckets: ~330 bytes).
            let mut pipe = Pipeline::with_capacity(384);
            pipe.cmd(verb).arg(what);
            fill(&mut pipe);
            pipe
        };
        let mut reply = self.call(&mut build("EVALSHA", &script.sha)).await?;
        if matches!(reply.first().and_then(Value::error_code), Some("NOSCRIPT")) {
            reply = self.call(&mut build("EVAL", script.body)).await?;
        }
        match reply.first() {
            Some(value @ Value::Error(_)) => Err(redis_error(value.error_code().unwrap_or("ERR"))),
            Some(value) => integers(value).ok_or_else(|| unavailable("unexpected script reply")),
            None => Err(unavailable("unexpected script reply")),
        }
    }

    /// [`decide`](RedisLimiter::decide) in the hashes layout: one run of the check script.
    pub(super) async fn decide_hashes(
        &self,
        guards: usize,
        checks: &[LimitCheck],
        lease: Option<&Lease>,
    ) -> Result<(Decision, Option<LeaseStatus>, u64), RateLimitError> {
        let now = self.now_arg()?;
        let jitter = self.jitter_ms();
        let fill = |pipe: &mut Pipeline| {
            let mut name = Vec::with_capacity(96);
            pipe.arg(checks.len() + usize::from(lease.is_some()));
            for check in checks {
                self.write_key_name(&mut name, check);
                pipe.arg(&name[..]);
            }
            if let Some(lease) = lease {
                self.write_lease_key_name(&mut name, lease);
                pipe.arg(&name[..]);
            }
            arg_now(pipe, now);
            pipe.arg(jitter).arg(guards).arg(checks.len());
            for check in checks {
                pipe.arg(check.spec.period_ms())
                    .arg(check.spec.limit.min(MAX_EXACT))
                    .arg(check.cost.min(MAX_EXACT));
                arg_offset(pipe, check);
                pipe.arg(u8::from(check.shadow));
            }
            if let Some(lease) = lease {
                pipe.arg(lease.cap.min(MAX_EXACT))
                    .arg(lease.id)
                    .arg(lease.ttl_ms())
                    .arg(u8::from(lease.shadow));
            }
        };
        // Before sending, so the cache's estimate of Redis time runs ahead
        // rather than behind: it may then send a request Redis refuses, but
        // never refuses one Redis would admit.
        let sent = std::time::Instant::now();
        let mut reply = self.run_script(&self.scripts.check, fill).await?;
        // The one field that may be negative: in_flight is -1 without a lease.
        let in_flight = match reply.get_mut(2) {
            Some(v) => std::mem::replace(v, 0),
            None => return Err(unavailable("unexpected script reply")),
        };
        let reply = unsigned(&reply)?;

        let (allowed, now_ms, buckets) = match reply.as_slice() {
            [allowed @ (0 | 1), now_ms, _, rest @ ..] if rest.len() == 5 * checks.len() => {
                (*allowed == 1, *now_ms, rest)
            }
            _ => return Err(unavailable("unexpected script reply")),
        };
        let windows = buckets
            .chunks_exact(5)
            .zip(checks)
            .map(|(fields, check)| stored(&fields[..4], check.grid()))
            .collect::<Result<Vec<_>, _>>()?;
        let statuses = checks
            .iter()
            .zip(&windows)
            .zip(buckets.chunks_exact(5))
            .map(|((check, &window), fields)| {
                // A shadow limit reports its own verdict; every other check the request's.
                let would_admit = !check.shadow || fields[4] == 1;
                view_at(window, now_ms, check.grid()).status(check, !allowed || !would_admit)
            })
            .collect();
        let lease_status = match (lease, u64::try_from(in_flight)) {
            (None, _) => None,
            (Some(l), Ok(held)) => Some(LeaseStatus {
                cap: l.cap,
                in_flight: held,
                // As the memory backend reports it: the slot was free (or the cap a shadow).
                acquired: l.shadow || held < l.cap || (allowed && held <= l.cap),
            }),
            (Some(_), Err(_)) => return Err(unavailable("unexpected script reply")),
        };
        // Costed and fixed-window buckets are settled later, which the cache cannot see.
        if lease.is_none()
            && checks
                .iter()
                .all(|c| c.cost == 1 && c.fixed_offset_ms.is_none())
        {
            self.cache.record(checks, &windows, now_ms, sent, !allowed);
        }
        Ok((Decision { allowed, statuses }, lease_status, now_ms))
    }

    /// The bucket as the peek script reads it, and the instant it read it at.
    pub(super) async fn peek_hash(
        &self,
        check: &LimitCheck,
    ) -> Result<(Option<Window>, u64), RateLimitError> {
        let grid = check.grid();
        let now = self.now_arg()?;
        let fill = |pipe: &mut Pipeline| {
            let mut name = Vec::with_capacity(96);
            self.write_key_name(&mut name, check);
            pipe.arg(1).arg(&name[..]);
            arg_now(pipe, now);
            pipe.arg(grid.period_ms);
            arg_offset(pipe, check);
        };
        let reply = unsigned(&self.run_script(&self.scripts.peek, fill).await?)?;
        let Some((&now_ms, fields)) = reply.split_first() else {
            return Err(unavailable("unexpected script reply"));
        };
        Ok((stored(fields, grid)?, now_ms))
    }

    /// [`settle`](crate::RateLimiter::settle) in the hashes layout: the settle script.
    pub(super) async fn settle_hashes(
        &self,
        settlement: &Settlement<'_>,
    ) -> Result<(), RateLimitError> {
        let now = self.now_arg()?;
        let fill = |pipe: &mut Pipeline| {
            let mut name = Vec::with_capacity(96);
            pipe.arg(settlement.adjustments.len() + usize::from(settlement.release.is_some()));
            for a in settlement.adjustments {
                self.write_key_name(&mut name, &a.check);
                pipe.arg(&name[..]);
            }
            if let Some(lease) = settlement.release {
                self.write_lease_key_name(&mut name, lease);
                pipe.arg(&name[..]);
            }
            arg_now(pipe, now);
            pipe.arg(settlement.adjustments.len());
            for a in settlement.adjustments {
                let grid = a.check.grid();
                pipe.arg(grid.period_ms);
                arg_offset(pipe, &a.check);
                pipe.arg(grid.start(a.charged_at_ms)).arg(a.delta);
            }
            if let Some(lease) = settlement.release {
                pipe.arg(lease.id);
            }
        };
        self.run_script(&self.scripts.settle, fill)
            .await
            .map(|_| ())
    }

    /// [`renew`](crate::RateLimiter::renew) in either layout: the renew script pushes the
    /// lease's expiry in its sorted set.
    pub(super) async fn renew_lease(&self, lease: &Lease) -> Result<(), RateLimitError> {
        let now = self.now_arg()?;
        let fill = |pipe: &mut Pipeline| {
            let mut name = Vec::with_capacity(96);
            self.write_lease_key_name(&mut name, lease);
            pipe.arg(1).arg(&name[..]);
            arg_now(pipe, now);
            pipe.arg(lease.id).arg(lease.ttl_ms());
        };
        self.run_script(&self.scripts.renew, fill).await.map(|_| ())
    }
}

/// Appends the clock argument (see [`RedisLimiter::now_arg`]).
fn arg_now(pipe: &mut Pipeline, now: Option<u64>) {
    match now {
        Some(ms) => pipe.arg(ms),
        None => pipe.arg(""),
    };
}

/// Appends a check's fixed-window offset, `-1` for a sliding window.
fn arg_offset(pipe: &mut Pipeline, check: &LimitCheck) {
    match check.fixed_offset_ms {
        Some(offset) => pipe.arg(offset),
        None => pipe.arg(-1i64),
    };
}
