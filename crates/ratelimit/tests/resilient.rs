//! The breaker and failure modes, driven by a primary that can be switched to fail. (The same
//! behaviour against a real Redis that is killed, paused and restarted is tested end to end in the
//! gateway's tests.)
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use infergate_ratelimit::resilient::{FailureMode, ResilienceConfig, ResilientLimiter};
use infergate_ratelimit::{
    BucketKey, Decision, LimitCheck, LimitStatus, ManualClock, MemoryLimiter, RateLimitError,
    RateLimiter,
};

/// A real memory limiter standing in for the shared backend, with an outage switch.
#[derive(Debug)]
struct Switchable {
    inner: MemoryLimiter,
    down: AtomicBool,
    timeouts: bool,
}

#[async_trait::async_trait]
impl RateLimiter for Switchable {
    async fn check(&self, checks: &[LimitCheck]) -> Result<Decision, RateLimitError> {
        if self.down.load(Ordering::SeqCst) {
            let msg = if self.timeouts {
                "timeout"
            } else {
                "connection refused"
            };
            return Err(RateLimitError::Unavailable(msg.into()));
        }
        Ok(self.inner.check_now(checks))
    }
    async fn peek(&self, check: &LimitCheck) -> Result<LimitStatus, RateLimitError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(RateLimitError::Unavailable("down".into()));
        }
        Ok(self.inner.peek_now(check))
    }
    fn backend(&self) -> &'static str {
        "switchable"
    }
}

fn setup(mode: FailureMode, replicas: u64) -> (Arc<Switchable>, ResilientLimiter) {
    let (primary, r, _) = setup_with_clock(mode, replicas);
    (primary, r)
}

/// The limiter, its switchable backend, and the clock both read (the breaker's too).
fn setup_with_clock(
    mode: FailureMode,
    replicas: u64,
) -> (Arc<Switchable>, ResilientLimiter, ManualClock) {
    let manual = ManualClock::new(1_800_000_000_000);
    let clock = Arc::new(manual.clone());
    let primary = Arc::new(Switchable {
        inner: MemoryLimiter::new(clock.clone()),
        down: AtomicBool::new(false),
        timeouts: true,
    });
    let fallback = Arc::new(MemoryLimiter::new(clock));
    let r = ResilientLimiter::new(
        primary.clone(),
        fallback,
        ResilienceConfig {
            mode,
            expected_replicas: replicas,
            failure_threshold: 3,
            cooldown: Duration::from_millis(50),
        },
    );
    (primary, r, manual)
}

fn check(limit: &str) -> LimitCheck {
    LimitCheck::new(
        BucketKey::ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
        limit.parse().unwrap(),
    )
}

#[tokio::test]
async fn breaker_opens_after_consecutive_failures_and_closes_after_a_probe() {
    let (primary, r, clock) = setup_with_clock(FailureMode::Local, 1);
    assert_eq!(r.breaker_state(), "closed");
    assert!(!r.degraded());
    primary.down.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        r.check(&[check("100/minute")]).await.unwrap();
    }
    assert_eq!(r.breaker_state(), "open");
    assert!(r.degraded());
    assert_eq!(r.stats.backend_timeouts.load(Ordering::Relaxed), 3);
    // While open, the backend is not called at all.
    r.check(&[check("100/minute")]).await.unwrap();
    assert_eq!(r.stats.backend_timeouts.load(Ordering::Relaxed), 3);
    // Back up: not probed before the cooldown (50 ms on the injected clock) is over ...
    primary.down.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_millis(49));
    r.check(&[check("100/minute")]).await.unwrap();
    assert_eq!(r.breaker_state(), "open");
    // ... and once it is, one probe closes the breaker.
    clock.advance(Duration::from_millis(1));
    r.check(&[check("100/minute")]).await.unwrap();
    assert_eq!(r.breaker_state(), "closed");
    assert!(!r.degraded());
}

#[tokio::test]
async fn local_mode_enforces_each_replicas_share() {
    let (primary, r) = setup(FailureMode::Local, 3);
    primary.down.store(true, Ordering::SeqCst);
    let mut allowed = 0;
    for _ in 0..20 {
        if r.check(&[check("30/minute")]).await.unwrap().allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10, "30/minute over 3 replicas is 10 each");
    assert!(r.stats.fallback_decisions.load(Ordering::Relaxed) >= 20);
}

#[tokio::test]
async fn open_mode_allows_everything_and_closed_mode_refuses() {
    let (primary, open) = setup(FailureMode::Open, 1);
    primary.down.store(true, Ordering::SeqCst);
    for _ in 0..50 {
        assert!(open.check(&[check("1/minute")]).await.unwrap().allowed);
    }
    let (primary, closed) = setup(FailureMode::Closed, 1);
    primary.down.store(true, Ordering::SeqCst);
    assert!(matches!(
        closed.check(&[check("1/minute")]).await,
        Err(RateLimitError::Unavailable(_))
    ));
    assert!(closed.peek(&check("1/minute")).await.is_err());
}

#[tokio::test]
async fn healthy_backend_decides() {
    let (_primary, r) = setup(FailureMode::Closed, 1);
    let mut allowed = 0;
    for _ in 0..5 {
        if r.check(&[check("3/minute")]).await.unwrap().allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3);
    assert_eq!(r.stats.fallback_decisions.load(Ordering::Relaxed), 0);
}
