//! A shared limiter that degrades gracefully: a circuit breaker in front of the shared backend
//! (Redis), and a configured behaviour while it is unusable.
//!
//! - **Breaker**: after `failure_threshold` consecutive failures or timeouts the shared backend is
//!   not called for `cooldown`; then one request probes it (half-open). Success closes the breaker,
//!   so shared limits resume within `cooldown` plus one request after the backend returns.
//! - **Failure modes** while the backend is failing or the breaker is open:
//!   - `local` (default): the in-memory limiter decides, each replica taking its share of every
//!     limit (`limit / expected_replicas`, rounded up), so the fleet stays near the configured
//!     limit instead of multiplying it;
//!   - `open`: allow everything, count nothing;
//!   - `closed`: refuse ([`RateLimitError::Unavailable`]; the gateway answers 503 + Retry-After).
//!
//! No mode turns a backend failure into a 500.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{
    Admission, Admitted, Decision, Guarded, Lease, LimitCheck, LimitStatus, MemoryLimiter,
    RateLimitError, RateLimiter, RateSpec, Settlement,
};

pub use infergate_types::FailureMode;

#[derive(Debug, Clone, Copy)]
pub struct ResilienceConfig {
    pub mode: FailureMode,
    /// How many replicas share the limits (for `local` mode's per-replica share).
    pub expected_replicas: u64,
    pub failure_threshold: u32,
    pub cooldown: Duration,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            mode: FailureMode::Local,
            expected_replicas: 1,
            failure_threshold: 3,
            cooldown: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breaker {
    Closed {
        failures: u32,
    },
    /// Until this reading of the limiter's clock (milliseconds).
    Open {
        until_ms: u64,
    },
    /// One probe is in flight; everyone else uses the fallback until it reports.
    HalfOpen,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct ResilienceStats {
    pub backend_errors: AtomicU64,
    pub backend_timeouts: AtomicU64,
    pub fallback_decisions: AtomicU64,
    pub breaker_opened: AtomicU64,
}

#[derive(Debug)]
pub struct ResilientLimiter {
    primary: Arc<dyn RateLimiter>,
    fallback: Arc<MemoryLimiter>,
    cfg: ResilienceConfig,
    breaker: Mutex<Breaker>,
    pub stats: ResilienceStats,
}

impl ResilientLimiter {
    pub fn new(
        primary: Arc<dyn RateLimiter>,
        fallback: Arc<MemoryLimiter>,
        cfg: ResilienceConfig,
    ) -> Self {
        Self {
            primary,
            fallback,
            cfg,
            breaker: Mutex::new(Breaker::Closed { failures: 0 }),
            stats: ResilienceStats::default(),
        }
    }

    pub fn mode(&self) -> FailureMode {
        self.cfg.mode
    }

    /// Calls sent to the shared backend so far (each one round trip).
    pub fn backend_calls(&self) -> u64 {
        self.primary.backend_calls()
    }

    /// `closed`, `open` or `half_open`.
    pub fn breaker_state(&self) -> &'static str {
        match *self.lock() {
            Breaker::Closed { .. } => "closed",
            Breaker::Open { .. } => "open",
            Breaker::HalfOpen => "half_open",
        }
    }

    /// True while decisions are not made by the shared backend.
    pub fn degraded(&self) -> bool {
        !matches!(*self.lock(), Breaker::Closed { failures: 0 })
    }

    /// The breaker's time: the fallback limiter's clock, so tests move it like the windows.
    fn now_ms(&self) -> u64 {
        self.fallback.clock().now_millis()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May this call go to the shared backend?
    fn admit(&self) -> bool {
        let mut b = self.lock();
        match *b {
            Breaker::Closed { .. } => true,
            Breaker::Open { until_ms } if self.now_ms() >= until_ms => {
                *b = Breaker::HalfOpen;
                true
            }
            Breaker::Open { .. } | Breaker::HalfOpen => false,
        }
    }

    fn succeeded(&self) {
        *self.lock() = Breaker::Closed { failures: 0 };
    }

    fn failed(&self, err: &RateLimitError) {
        let RateLimitError::Unavailable(msg) = err;
        if msg.contains("timeout") || msg.contains("timed out") {
            self.stats.backend_timeouts.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.backend_errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut b = self.lock();
        let open = match *b {
            Breaker::Closed { failures } if failures + 1 < self.cfg.failure_threshold => {
                *b = Breaker::Closed {
                    failures: failures + 1,
                };
                false
            }
            _ => true,
        };
        if open {
            let cooldown = u64::try_from(self.cfg.cooldown.as_millis()).unwrap_or(u64::MAX);
            *b = Breaker::Open {
                until_ms: self.now_ms().saturating_add(cooldown),
            };
            self.stats.breaker_opened.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn share(&self, spec: RateSpec) -> RateSpec {
        let n = self.cfg.expected_replicas.max(1);
        RateSpec::new(spec.limit.div_ceil(n).max(1), spec.period).unwrap_or(spec)
    }

    fn fallback_check(&self, checks: &[LimitCheck]) -> Result<Decision, RateLimitError> {
        self.stats
            .fallback_decisions
            .fetch_add(1, Ordering::Relaxed);
        match self.cfg.mode {
            FailureMode::Local => {
                let scaled: Vec<LimitCheck> = checks
                    .iter()
                    .map(|c| c.with_spec(self.share(c.spec)))
                    .collect();
                Ok(self.fallback.check_now(&scaled))
            }
            FailureMode::Open => Ok(Decision {
                allowed: true,
                statuses: checks.iter().map(|c| self.unlimited(c)).collect(),
            }),
            FailureMode::Closed => Err(RateLimitError::Unavailable(
                "rate-limit backend unavailable and failure mode is closed".into(),
            )),
        }
    }

    fn unlimited(&self, c: &LimitCheck) -> LimitStatus {
        let mut s = self.fallback.peek_now(c);
        s.remaining = c.spec.limit;
        s.retry_after = Duration::ZERO;
        s
    }
}

#[async_trait::async_trait]
impl RateLimiter for ResilientLimiter {
    async fn check(&self, checks: &[LimitCheck]) -> Result<Decision, RateLimitError> {
        if self.admit() {
            match self.primary.check(checks).await {
                Ok(d) => {
                    self.succeeded();
                    return Ok(d);
                }
                Err(e) => self.failed(&e),
            }
        }
        self.fallback_check(checks)
    }

    async fn check_guarded(
        &self,
        guards: &[LimitCheck],
        checks: &[LimitCheck],
    ) -> Result<Guarded, RateLimitError> {
        if self.admit() {
            match self.primary.check_guarded(guards, checks).await {
                Ok(g) => {
                    self.succeeded();
                    return Ok(g);
                }
                Err(e) => self.failed(&e),
            }
        }
        for guard in guards {
            let status = self.fallback_peek(guard)?;
            if status.is_exceeded() {
                return Ok(Guarded::Refused(status));
            }
        }
        self.fallback_check(checks).map(Guarded::Decided)
    }

    async fn peek(&self, check: &LimitCheck) -> Result<LimitStatus, RateLimitError> {
        if self.admit() {
            match self.primary.peek(check).await {
                Ok(s) => {
                    self.succeeded();
                    return Ok(s);
                }
                Err(e) => self.failed(&e),
            }
        }
        self.fallback_peek(check)
    }

    fn backend(&self) -> &'static str {
        self.primary.backend()
    }

    async fn admit(&self, admission: &Admission<'_>) -> Result<Admitted, RateLimitError> {
        if self.admit() {
            match self.primary.admit(admission).await {
                Ok(a) => {
                    self.succeeded();
                    return Ok(a);
                }
                Err(e) => self.failed(&e),
            }
        }
        self.fallback_admit(admission)
    }

    /// To the backend that decided the admission. A shared backend that cannot be reached is
    /// an error for the caller to retry: a settlement is never dropped here.
    async fn settle(&self, settlement: &Settlement<'_>) -> Result<(), RateLimitError> {
        if settlement.local {
            self.fallback.settle_now(settlement);
            return Ok(());
        }
        let result = self.primary.settle(settlement).await;
        match &result {
            Ok(()) => self.succeeded(),
            Err(e) => self.failed(e),
        }
        result
    }

    async fn renew(&self, lease: &Lease) -> Result<(), RateLimitError> {
        // Renewing both is cheaper than knowing which holds the lease: an unknown lease is
        // left alone by either.
        self.fallback.renew_now(lease);
        let result = self.primary.renew(lease).await;
        if let Err(e) = &result {
            self.failed(e);
        }
        result
    }
}

impl ResilientLimiter {
    /// An admission while the shared backend cannot answer, by the failure mode: `local` shares
    /// every limit and cap among the expected replicas, `open` admits, `closed` refuses.
    fn fallback_admit(&self, admission: &Admission<'_>) -> Result<Admitted, RateLimitError> {
        self.stats
            .fallback_decisions
            .fetch_add(1, Ordering::Relaxed);
        match self.cfg.mode {
            FailureMode::Local => {
                let share = |list: &[LimitCheck]| -> Vec<LimitCheck> {
                    list.iter()
                        .map(|c| c.with_spec(self.share(c.spec)))
                        .collect()
                };
                let (guards, checks) = (share(admission.guards), share(admission.checks));
                let lease = admission.lease.map(|l| Lease {
                    cap: l.cap.div_ceil(self.cfg.expected_replicas.max(1)).max(1),
                    ..l.clone()
                });
                let mut admitted = self.fallback.admit_now(&Admission {
                    guards: &guards,
                    checks: &checks,
                    lease: lease.as_ref(),
                });
                if let Admitted::Decided { local, .. } = &mut admitted {
                    *local = true;
                }
                Ok(admitted)
            }
            FailureMode::Open => Ok(Admitted::Decided {
                decision: Decision {
                    allowed: true,
                    statuses: admission.checks.iter().map(|c| self.unlimited(c)).collect(),
                },
                lease: None,
                at_ms: self.now_ms(),
                local: true,
            }),
            FailureMode::Closed => Err(RateLimitError::Unavailable(
                "rate-limit backend unavailable and failure mode is closed".into(),
            )),
        }
    }

    /// A peek while the shared backend cannot answer, by the failure mode.
    fn fallback_peek(&self, check: &LimitCheck) -> Result<LimitStatus, RateLimitError> {
        match self.cfg.mode {
            FailureMode::Local => Ok(self
                .fallback
                .peek_now(&check.with_spec(self.share(check.spec)))),
            FailureMode::Open => Ok(self.unlimited(check)),
            FailureMode::Closed => Err(RateLimitError::Unavailable(
                "rate-limit backend unavailable and failure mode is closed".into(),
            )),
        }
    }
}
