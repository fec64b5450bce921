//! Rate limiting for the infergate gateway.
//!
//! The gateway limits requests per client IP, per API key, per role and per
//! endpoint. This crate holds everything about those limits that does not
//! depend on HTTP: how a limit is written, how a bucket is named, the
//! backend-neutral [`RateLimiter`] trait the gateway holds as
//! `Arc<dyn RateLimiter>`, the in-process backend and the Redis one.
//!
//! Layout:
//! - [`RateSpec`] (`100/minute`) and [`Clock`] come from `infergate-types` (re-exported here),
//!   so configuration can parse rates without depending on this crate and Redis.
//! - [`key`]: [`Dimension`], [`Subject`], [`BucketKey`] and [`LimitCheck`],
//!   built per request without heap allocation.
//! - [`decision`]: [`Decision`] and [`LimitStatus`], shaped for
//!   `X-RateLimit-*` and `Retry-After` headers.
//! - [`memory`]: [`MemoryLimiter`], the sliding-window counter backend; its
//!   module doc describes the algorithm and its accuracy.
//! - [`redis`]: [`redis::RedisLimiter`], the same algorithm in Redis (one call per decision:
//!   counters charged and judged here, or a Lua script), shared by every gateway replica.
//! - `conformance` (feature `conformance`): scripted and differential checks
//!   that any backend decides exactly as the memory backend does.
//! - `window` (private): the window arithmetic, kept storage-free so other
//!   backends can reach identical decisions from the same counts.
//!
//! A crate of its own so the limiting algorithm and its backends are tested (and benchmarked)
//! without HTTP, and so a new backend has one trait and one conformance suite to meet.

#![forbid(unsafe_code)]

pub mod decision;
pub mod key;
pub mod memory;
pub mod redis;
pub mod resilient;
mod window;

#[cfg(feature = "conformance")]
pub mod conformance;

// How a rate is written and injected time are the shared vocabulary of `infergate-types`.
pub use decision::{Decision, LimitStatus};
pub use infergate_types::{Clock, FailureMode, ManualClock, SystemClock, clock, rate as spec};
pub use infergate_types::{RATE_SPEC_ACCEPTED, RateSpec, RateSpecError};
pub use key::{BucketKey, Dimension, LimitCheck, Subject};
pub use memory::{MemoryLimiter, SweeperGuard};

/// A rate-limit backend.
///
/// Async so a networked backend can sit behind the same interface; the
/// in-memory backend completes without yielding.
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    /// Checks every limit; consumes one unit from every bucket only if ALL
    /// allow (a denied request consumes nothing). `statuses` has one entry
    /// per check, in order.
    async fn check(&self, checks: &[LimitCheck]) -> Result<Decision, RateLimitError>;

    /// Reports the status of one bucket without consuming (used to refuse
    /// key-guessing before any key lookup). `retry_after` is non-zero exactly
    /// when a check of this bucket would be refused now.
    async fn peek(&self, check: &LimitCheck) -> Result<LimitStatus, RateLimitError>;

    /// [`check`](Self::check), refused without consuming anything when one of `guards` is
    /// already over its limit (as [`peek`](Self::peek) would report it). The gateway guards a
    /// known key's request with the client IP's failed-auth budget this way. A networked backend
    /// decides it in one round trip; this default peeks first, then checks.
    async fn check_guarded(
        &self,
        guards: &[LimitCheck],
        checks: &[LimitCheck],
    ) -> Result<Guarded, RateLimitError> {
        peek_then_check(self, guards, checks).await
    }

    /// Backend name for metrics and status pages, e.g. `"memory"`.
    fn backend(&self) -> &'static str;

    /// Calls sent to a networked backend so far, each one round trip (0 for one in process).
    fn backend_calls(&self) -> u64 {
        0
    }

    /// Everything a request is limited by, decided at once: `guards` only checked, `checks`
    /// charged their cost (request counts and token reservations alike), and a concurrency
    /// slot taken when `lease` is given. All or nothing: a refusal for any reason charges
    /// nothing and takes no slot. A networked backend decides it in one round trip.
    async fn admit(&self, admission: &Admission<'_>) -> Result<Admitted, RateLimitError> {
        let _ = admission;
        Err(RateLimitError::Unavailable(format!(
            "the {} backend does not admit token or concurrency limits",
            self.backend()
        )))
    }

    /// Settles an admission once its real cost is known: each [`Adjustment`] lands in the window
    /// its charge went to, and `release` gives the concurrency slot back. One round trip.
    async fn settle(&self, settlement: &Settlement<'_>) -> Result<(), RateLimitError> {
        let _ = settlement;
        Err(RateLimitError::Unavailable(format!(
            "the {} backend does not settle",
            self.backend()
        )))
    }

    /// Extends a held concurrency slot by its TTL from now (a long stream renews it).
    async fn renew(&self, lease: &Lease) -> Result<(), RateLimitError> {
        let _ = lease;
        Err(RateLimitError::Unavailable(format!(
            "the {} backend holds no leases",
            self.backend()
        )))
    }
}

/// A concurrency slot asked for with a request: held from admission to settlement, and
/// expiring after `ttl` unless renewed, so a replica that dies mid-request leaks it no longer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Whose slots (`Dimension::Concurrency`, per key).
    pub key: BucketKey,
    /// Slots the key may hold at once.
    pub cap: u64,
    /// This request's slot; random, so two replicas never name the same one.
    pub id: u64,
    pub ttl: std::time::Duration,
    /// Over the cap, a shadow lease is still taken; its status reports `in_flight > cap`.
    pub shadow: bool,
}

impl Lease {
    pub(crate) fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// What [`RateLimiter::admit`] decides.
#[derive(Clone, Copy, Debug)]
pub struct Admission<'a> {
    pub guards: &'a [LimitCheck],
    pub checks: &'a [LimitCheck],
    pub lease: Option<&'a Lease>,
}

/// A concurrency cap as one admission found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseStatus {
    pub cap: u64,
    /// Slots held once the admission was decided (this request's included when it got one).
    pub in_flight: u64,
    /// A slot was free (always, for a shadow cap). The request holds it only when the
    /// decision allowed it.
    pub acquired: bool,
}

/// [`RateLimiter::admit`]'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// A guard was over its limit (its status); nothing was charged.
    GuardRefused(LimitStatus),
    Decided {
        /// `allowed` only when every check admitted and the slot, if asked for, was taken.
        decision: Decision,
        lease: Option<LeaseStatus>,
        /// The instant the checks were judged at, which names the windows charged.
        at_ms: u64,
        /// Decided by the in-process fallback while the shared backend was unreachable: the
        /// settlement goes there too.
        local: bool,
    },
}

/// A change to an earlier charge: `delta` units (negative gives back) on `check`'s bucket, in
/// the window that held `charged_at_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adjustment {
    pub check: LimitCheck,
    pub charged_at_ms: u64,
    pub delta: i64,
}

/// What [`RateLimiter::settle`] applies.
#[derive(Clone, Copy, Debug)]
pub struct Settlement<'a> {
    pub adjustments: &'a [Adjustment],
    pub release: Option<&'a Lease>,
    /// The admission was decided locally ([`Admitted::Decided::local`]).
    pub local: bool,
}

/// [`RateLimiter::check_guarded`] as separate calls: each guard peeked, then the checks.
pub async fn peek_then_check<L: RateLimiter + ?Sized>(
    limiter: &L,
    guards: &[LimitCheck],
    checks: &[LimitCheck],
) -> Result<Guarded, RateLimitError> {
    for guard in guards {
        let status = limiter.peek(guard).await?;
        if status.is_exceeded() {
            return Ok(Guarded::Refused(status));
        }
    }
    limiter.check(checks).await.map(Guarded::Decided)
}

/// What [`RateLimiter::check_guarded`] decided.
#[derive(Debug, Clone)]
pub enum Guarded {
    /// A guard was over its limit (its status); nothing was consumed.
    Refused(LimitStatus),
    /// The guards admitted; the checks' decision.
    Decided(Decision),
}

impl Guarded {
    /// The refusal of the first guard status over its limit, read in order and no further: how
    /// a backend that can see its guards' counts without a call refuses before making one.
    pub(crate) fn by_first_exceeded(
        statuses: impl IntoIterator<Item = LimitStatus>,
    ) -> Option<Self> {
        statuses
            .into_iter()
            .find(LimitStatus::is_exceeded)
            .map(Guarded::Refused)
    }
}

/// Why a backend could not decide. The caller chooses whether to fail open
/// or closed; the memory backend never returns it. The message never holds
/// a backend URL (it may carry a password).
#[derive(thiserror::Error, Debug)]
pub enum RateLimitError {
    /// The backend could not be reached or answered nonsense.
    #[error("rate-limit backend unavailable: {0}")]
    Unavailable(String),
}
