//! The conformance suite every rate-limit backend must pass.
//!
//! A backend conforms when, fed the same requests at the same clock readings,
//! it returns exactly the [`Decision`]s and [`LimitStatus`]es of
//! [`MemoryLimiter`], the reference. Every scenario therefore drives the
//! backend under test and a fresh `MemoryLimiter` side by side on one
//! [`ManualClock`], asserts that each answer is identical, and also asserts
//! the absolute numbers the algorithm promises (100 of 150 rapid requests
//! allowed, a `retry_after` that is exactly the minimal wait, ...), so the
//! suite means something for the memory backend as well.
//!
//! Usage, from a test (any async runtime; the suite never sleeps):
//!
//! ```ignore
//! infergate_ratelimit::conformance::run_all(|clock: ManualClock| async move {
//!     Arc::new(MyLimiter::new(clock)) as Arc<dyn RateLimiter>
//! })
//! .await;
//! ```
//!
//! `make` is called once per scenario (and per case of some scenarios) and
//! must return a limiter that reads time from the given clock and holds no
//! buckets yet: a shared backend needs a fresh key prefix per call. A
//! backend error, a divergence or a broken promise panics with the scenario's
//! name, the clock reading and the checks involved.
//!
//! Time is only ever moved by the suite, so clock-dependent backends need the
//! clock injected (the Redis backend's `RedisLimiterConfig::clock`).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use crate::{
    Adjustment, Admission, Admitted, BucketKey, Clock, Decision, Dimension, Lease, LeaseStatus,
    LimitCheck, LimitStatus, ManualClock, MemoryLimiter, RateLimiter, RateSpec, Settlement,
    Subject,
};

/// A Unix-ms instant on a day boundary, hence on a second, minute and hour
/// boundary too.
pub const T0: u64 = 19_675 * 86_400_000;

/// Whether a backend is held to the reference when its clock steps back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Time {
    /// Every scenario, the clock stepping back included (judged at the stored window's start).
    MayStepBack,
    /// The clock only moves forward: for a backend that reads a clock stepping back as the
    /// latest instant it used (the Redis counters layout, whose windows are keys of their own).
    Forward,
}

/// Runs every scenario below, then [`differential`] with 2,000 checks.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    run(make, Time::MayStepBack).await;
}

/// [`run_all`], with or without the scenarios whose clock steps back.
pub async fn run<F, Fut>(make: F, time: Time)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    rapid_checks_allow_exactly_the_limit(&make).await;
    denied_multi_check_consumes_nothing(&make).await;
    sliding_window_estimates_at_exact_offsets(&make).await;
    retry_after_is_exactly_the_minimal_wait(&make).await;
    buckets_are_independent(&make).await;
    same_key_with_two_periods_keeps_two_buckets(&make).await;
    repeated_bucket_in_one_request_is_charged_once(&make).await;
    peek_reports_without_consuming(&make).await;
    if time == Time::MayStepBack {
        clock_behind_the_stored_window(&make).await;
    }
    empty_request_is_allowed(&make).await;
    token_reservations_fit_whole_and_settle_back(&make).await;
    daily_quota_resets_at_its_hour(&make).await;
    concurrency_leases_cap_expire_and_renew(&make).await;
    shadow_limits_count_and_report_but_never_refuse(&make).await;
    differential_in(&make, 0x5eed_cafe, 2_000, time).await;
}

/// The backend under test and the reference, on one clock.
struct Pair {
    scenario: &'static str,
    clock: ManualClock,
    subject: Arc<dyn RateLimiter>,
    reference: MemoryLimiter,
}

impl Pair {
    async fn new<F, Fut>(make: &F, scenario: &'static str, start_ms: u64) -> Self
    where
        F: Fn(ManualClock) -> Fut,
        Fut: Future<Output = Arc<dyn RateLimiter>>,
    {
        let clock = ManualClock::new(start_ms);
        let subject = make(clock.clone()).await;
        let reference = MemoryLimiter::new(Arc::new(clock.clone()));
        Self {
            scenario,
            clock,
            subject,
            reference,
        }
    }

    fn now(&self) -> u64 {
        self.clock.now_millis()
    }

    /// Checks on both and asserts identical decisions.
    async fn check(&self, checks: &[LimitCheck]) -> Decision {
        let want = self.reference.check_now(checks);
        let got = self.subject.check(checks).await.unwrap_or_else(|e| {
            panic!(
                "{}: {} backend failed at t=T0+{}ms: {e}",
                self.scenario,
                self.subject.backend(),
                self.now().wrapping_sub(T0)
            )
        });
        assert_eq!(
            got,
            want,
            "{}: {} backend diverged from memory at t=T0+{}ms on {checks:?}",
            self.scenario,
            self.subject.backend(),
            self.now().wrapping_sub(T0)
        );
        got
    }

    /// Peeks on both and asserts identical statuses.
    async fn peek(&self, check: &LimitCheck) -> LimitStatus {
        let want = self.reference.peek_now(check);
        let got = self.subject.peek(check).await.unwrap_or_else(|e| {
            panic!(
                "{}: {} backend failed to peek: {e}",
                self.scenario,
                self.subject.backend()
            )
        });
        assert_eq!(
            got,
            want,
            "{}: {} backend's peek diverged from memory at t=T0+{}ms on {check:?}",
            self.scenario,
            self.subject.backend(),
            self.now().wrapping_sub(T0)
        );
        got
    }

    /// Admits on both and asserts identical answers.
    async fn admit(&self, admission: Admission<'_>) -> Admitted {
        let want = self.reference.admit_now(&admission);
        let got = self.subject.admit(&admission).await.unwrap_or_else(|e| {
            panic!(
                "{}: {} backend failed to admit: {e}",
                self.scenario,
                self.subject.backend()
            )
        });
        assert_eq!(
            got,
            want,
            "{}: {} backend's admission diverged from memory at t=T0+{}ms on {admission:?}",
            self.scenario,
            self.subject.backend(),
            self.now().wrapping_sub(T0)
        );
        got
    }

    async fn settle(&self, settlement: Settlement<'_>) {
        self.reference.settle_now(&settlement);
        self.subject.settle(&settlement).await.unwrap_or_else(|e| {
            panic!(
                "{}: {} backend failed to settle: {e}",
                self.scenario,
                self.subject.backend()
            )
        });
    }

    async fn renew(&self, lease: &Lease) {
        self.reference.renew_now(lease);
        self.subject.renew(lease).await.unwrap_or_else(|e| {
            panic!(
                "{}: {} backend failed to renew: {e}",
                self.scenario,
                self.subject.backend()
            )
        });
    }

    /// How many of `n` back-to-back requests are allowed.
    async fn allow_count(&self, checks: &[LimitCheck], n: usize) -> usize {
        let mut allowed = 0;
        for _ in 0..n {
            allowed += usize::from(self.check(checks).await.allowed);
        }
        allowed
    }
}

fn spec(limit: u64, secs: u64) -> RateSpec {
    RateSpec {
        limit,
        period: Duration::from_secs(secs),
    }
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(203, 0, 113, last))
}

fn ip_check(last: u8, spec: RateSpec) -> LimitCheck {
    LimitCheck::new(BucketKey::ip(ip(last)), spec)
}

fn key_check(id: &str, spec: RateSpec) -> LimitCheck {
    LimitCheck::new(BucketKey::key(Arc::from(id)), spec)
}

fn endpoint_check(route: &str, id: &str, spec: RateSpec) -> LimitCheck {
    LimitCheck::new(
        BucketKey::endpoint(Arc::from(route), Subject::Key(Arc::from(id))),
        spec,
    )
}

fn tokens_check(id: &str, limit: u64, cost: u64) -> LimitCheck {
    LimitCheck::new(
        BucketKey::new(Dimension::Tokens, Subject::Key(Arc::from(id))),
        spec(limit, 60),
    )
    .costing(cost)
}

fn decided(a: &Admitted) -> (&Decision, Option<LeaseStatus>, u64) {
    match a {
        Admitted::Decided {
            decision,
            lease,
            at_ms,
            ..
        } => (decision, *lease, *at_ms),
        Admitted::GuardRefused(s) => panic!("refused by a guard: {s:?}"),
    }
}

fn only(checks: &[LimitCheck]) -> Admission<'_> {
    Admission {
        guards: &[],
        checks,
        lease: None,
    }
}

/// Deterministic pseudo-random numbers (Knuth's MMIX LCG, high bits).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        if n == 0 { 0 } else { (self.0 >> 33) % n }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let n = u64::try_from(items.len()).unwrap_or(u64::MAX);
        let i = usize::try_from(self.below(n)).unwrap_or(0);
        &items[i]
    }
}

/// 150 back-to-back requests against 100/minute: exactly the first 100 pass,
/// with the promised `remaining`, reset and wait.
pub async fn rapid_checks_allow_exactly_the_limit<F, Fut>(make: &F)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    let pair = Pair::new(make, "rapid checks", T0 + 1_234).await;
    let check = [ip_check(9, spec(100, 60))];
    let mut decisions = Vec::with_capacity(150);
    for _ in 0..150 {
        decisions.push(pair.check(&check).await);
    }
    assert!(decisions[..100].iter().all(|d| d.allowed));
    assert!(decisions[100..].iter().all(|d| !d.allowed));
    for (i, d) in decisions[..100].iter().enumerate() {
        assert_eq!(d.statuses[0].remaining, 99 - i as u64);
        assert_eq!(d.retry_after(), Duration::ZERO);
    }
    let last = &decisions[149];
    assert_eq!(last.denied_by(), Some(Dimension::Ip));
    assert_eq!(last.statuses[0].remaining, 0);
    assert_eq!(last.statuses[0].reset_at_millis, T0 + 60_000);
    // Free once the next window has decayed the 100 by one request's worth.
    assert_eq!(
        last.retry_after(),
        Duration::from_millis(60_000 - 1_234 + 600)
    );
}

/// A request refused by one limit consumes nothing from the others.
pub async fn denied_multi_check_consumes_nothing<F, Fut>(make: &F)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    let pair = Pair::new(make, "all or nothing", T0).await;
    let key = key_check("abc123", spec(10, 60));
    let endpoint = endpoint_check("/inference", "abc123", spec(2, 60));
    let checks = [key.clone(), endpoint.clone()];

    assert_eq!(pair.allow_count(&checks, 2).await, 2);
    let third = pair.check(&checks).await;
    assert!(!third.allowed);
    assert_eq!(third.denied_by(), Some(Dimension::Endpoint));
    assert_eq!(third.statuses[0].remaining, 8);
    assert_eq!(third.statuses[0].retry_after, Duration::ZERO);
    assert_eq!(third.statuses[1].remaining, 0);

    assert_eq!(pair.allow_count(&checks, 20).await, 0);
    assert_eq!(pair.peek(&key).await.remaining, 8);
    assert_eq!(pair.peek(&endpoint).await.remaining, 0);
    assert_eq!(pair.allow_count(std::slice::from_ref(&key), 20).await, 8);
    // The refused pair now reports the key bucket as the other requests left it.
    let again = pair.check(&checks).await;
    assert_eq!(again.statuses[0].remaining, 0);
}

/// The previous window's count weighs in proportion to its overlap.
pub async fn sliding_window_estimates_at_exact_offsets<F, Fut>(make: &F)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    let pair = Pair::new(make, "sliding estimates", T0).await;
    let check = [ip_check(1, spec(10, 60))];
    assert_eq!(pair.allow_count(&check, 15).await, 10);

    pair.clock.set(T0 + 60_000);
    let d = pair.check(&check).await;
    assert!(!d.allowed);
    assert_eq!(d.statuses[0].reset_at_millis, T0 + 120_000);
    assert_eq!(d.retry_after(), Duration::from_millis(6_000));
    // One millisecond short of the wait, then exactly at it.
    pair.clock.set(T0 + 65_999);
    assert!(!pair.check(&check).await.allowed);
    pair.clock.set(T0 + 66_000);
    assert!(pair.check(&check).await.allowed);

    pair.clock.set(T0 + 90_000);
    // 10 * 0.5 + 1 = 6 of 10 used.
    assert_eq!(pair.peek(&check[0]).await.remaining, 4);
    assert_eq!(pair.allow_count(&check, 10).await, 4);

    pair.clock.set(T0 + 120_000);
    assert_eq!(pair.peek(&check[0]).await.remaining, 5);
    assert_eq!(pair.allow_count(&check, 10).await, 5);

    // An idle window in between: everything is forgotten.
    pair.clock.set(T0 + 240_000);
    assert_eq!(pair.peek(&check[0]).await.remaining, 10);
    assert_eq!(pair.allow_count(&check, 15).await, 10);

    // Bunched at the end of a window, then just after the boundary.
    pair.clock.set(T0 + 359_999);
    let edge = [ip_check(2, spec(10, 60))];
    assert_eq!(pair.allow_count(&edge, 12).await, 10);
    pair.clock.set(T0 + 360_001);
    assert_eq!(pair.allow_count(&edge, 3).await, 0);
    pair.clock.set(T0 + 366_000);
    assert_eq!(pair.allow_count(&edge, 3).await, 1);
}

/// `retry_after` is the smallest wait after which a request is allowed:
/// refused one millisecond earlier, allowed exactly then.
pub async fn retry_after_is_exactly_the_minimal_wait<F, Fut>(make: &F)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    type Rate = (u64, u64);
    let mut rng = Lcg(0x5eed);
    let single: &[Rate] = &[
        (1, 1),
        (2, 1),
        (3, 7),
        (1, 60),
        (7, 60),
        (10, 60),
        (5, 3_600),
        (40, 86_400),
    ];
    let pairs: &[(Rate, Rate)] = &[
        ((10, 60), (2, 60)),
        ((5, 1), (100, 3_600)),
        ((3, 60), (50, 86_400)),
    ];
    let mut cases: Vec<Vec<Rate>> = single.iter().map(|&s| vec![s]).collect();
    cases.extend(pairs.iter().map(|&(a, b)| vec![a, b]));

    let mut denials = 0;
    for specs in cases {
        let shortest_ms = specs.iter().map(|&(_, s)| s * 1_000).min().unwrap_or(1_000);
        let pair = Pair::new(make, "retry_after", T0 + rng.below(shortest_ms * 3)).await;
        let checks: Vec<LimitCheck> = specs
            .iter()
            .zip(1u8..)
            .map(|(&(limit, secs), i)| ip_check(i, spec(limit, secs)))
            .collect();
        for _round in 0..10 {
            let mut attempts = 0;
            let d = loop {
                let d = pair.check(&checks).await;
                if !d.allowed {
                    break d;
                }
                attempts += 1;
                assert!(attempts < 10_000, "{specs:?}: never refused");
                if rng.below(2) == 0 {
                    let gap = shortest_ms * 2 / specs[0].0 + 1;
                    pair.clock.advance(Duration::from_millis(rng.below(gap)));
                }
            };
            let wait_ms = u64::try_from(d.retry_after().as_millis()).unwrap_or(u64::MAX);
            assert!(wait_ms > 0, "{specs:?}: refused with no wait");
            let now = pair.now();
            pair.clock.set(now + wait_ms - 1);
            assert!(
                !pair.check(&checks).await.allowed,
                "{specs:?}: allowed 1ms before retry_after {wait_ms}ms"
            );
            pair.clock.set(now + wait_ms);
            assert!(
                pair.check(&checks).await.allowed,
                "{specs:?}: still refused after retry_after {wait_ms}ms"
            );
            denials += 1;
            pair.clock
                .advance(Duration::from_millis(rng.below(shortest_ms)));
        }
    }
    assert_eq!(denials, 110);
}

/// Different subjects, dimensions and scopes never share a bucket.
pub async fn buckets_are_independent<F, Fut>(make: &F)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    let pair = Pair::new(make, "independent buckets", T0).await;
    let s = spec(3, 60);
    let checks = [
        ip_check(1, s),
        ip_check(2, s),
        LimitCheck::new(BucketKey::ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), s),
        key_check("a", s),
        key_check("b", s),
        // Ids that need escaping must not collide with their escaped forms.
        key_check("a:b", s),
        key_check("a%3Ab", s),
        endpoint_check("/inference", "a", s),
        endpoint_check("/embeddings", "a", s),
        endpoint_check("/inference", "b", s),
        LimitCheck::new(BucketKey::role(Arc::from("admin")), s),
        LimitCheck::new(
            BucketKey::new(Dimension::Role, Subject::Key(Arc::from("a"))),
            s,
        ),
    ];
    for check in &checks {
        assert_eq!(
            pair.allow_count(std::slice::from_ref(check), 5).await,
            3,
            "{check:?}"
        );
    }
}

/// `2/second` and `5/hour` on one key are separate buckets.
pub async fn same_key_with_two_periods_keeps_two_buckets<F, Fut>(make: &F)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    let pair = Pair::new(make, "two periods", T0).await;
    let burst = key_check("k", spec(2, 1));
    let sustained = key_check("k", spec(5, 3_600));
    let checks = [burst.clone(), sustained.clone()];

    assert_eq!(pair.allow_count(&checks, 5).await, 2);
    for _ in 0..5 {
        pair.clock.advance(Duration::from_secs(2));
        pair.allow_count(&checks, 5).await;
    }
    assert_eq!(pair.peek(&sustained).await.remaining, 0);
    let d = pair.check(&checks).await;
    assert!(!d.allowed);
    assert_eq!(d.denied_by(), Some(Dimension::Key));
    assert_eq!(d.statuses[0].retry_after, Duration::ZERO);
    assert!(d.statuses[1].retry_after > Duration::from_secs(60));
    // The burst bucket alone is still usable.
    pair.clock.advance(Duration::from_secs(2));
    assert_eq!(pair.allow_count(std::slice::from_ref(&burst), 3).await, 2);
}

/// Two checks naming one bucket charge it once; each is judged by its own limit.
pub async fn repeated_bucket_in_one_request_is_charged_once<F, Fut>(make: &F)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    let pair = Pair::new(make, "repeated bucket", T0).await;
    let check = ip_check(1, spec(4, 60));
    let tighter = ip_check(1, spec(3, 60));
    let d = pair
        .check(&[check.clone(), check.clone(), tighter.clone()])
        .await;
    assert!(d.allowed);
    assert_eq!(
        [
            d.statuses[0].remaining,
            d.statuses[1].remaining,
            d.statuses[2].remaining
        ],
        [3, 3, 2]
    );
    assert_eq!(pair.peek(&check).await.remaining, 3);
    // The tighter limit refuses first; the looser one alone still admits.
    assert_eq!(pair.allow_count(&[check.clone(), tighter], 5).await, 2);
    assert_eq!(pair.allow_count(std::slice::from_ref(&check), 5).await, 1);
}

/// Peek reports without consuming, including on refusing buckets.
pub async fn peek_reports_without_consuming<F, Fut>(make: &F)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    let pair = Pair::new(make, "peek", T0 + 30_000).await;
    let check = ip_check(1, spec(5, 60));
    let status = pair.peek(&check).await;
    assert_eq!(
        status,
        LimitStatus {
            dimension: Dimension::Ip,
            limit: 5,
            remaining: 5,
            window: Duration::from_secs(60),
            reset_at_millis: T0 + 60_000,
            retry_after: Duration::ZERO,
        }
    );
    assert_eq!(pair.allow_count(std::slice::from_ref(&check), 7).await, 5);
    for _ in 0..5 {
        let status = pair.peek(&check).await;
        assert_eq!(status.remaining, 0);
        assert!(status.is_exceeded());
    }
    pair.clock.advance(Duration::from_secs(45));
    assert_eq!(pair.peek(&check).await.remaining, 1);
    assert_eq!(pair.allow_count(std::slice::from_ref(&check), 3).await, 1);
}

/// A clock that steps back behind a bucket's window is judged at the
/// window's start, and waits grow by the gap.
pub async fn clock_behind_the_stored_window<F, Fut>(make: &F)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    let pair = Pair::new(make, "clock behind", T0 + 60_000).await;
    let check = [key_check("lagging", spec(3, 60))];
    assert_eq!(pair.allow_count(&check, 3).await, 3);
    pair.clock.set(T0 + 59_500);
    let d = pair.check(&check).await;
    assert!(!d.allowed);
    assert_eq!(
        d.retry_after(),
        Duration::from_millis(500 + 60_000 + 20_000)
    );
    let other = [key_check("lagging-2", spec(3, 60))];
    pair.clock.set(T0 + 120_000);
    assert_eq!(pair.allow_count(&other, 2).await, 2);
    pair.clock.set(T0 + 60_000);
    assert_eq!(pair.allow_count(&other, 2).await, 1);
}

/// No checks: allowed, no statuses.
pub async fn empty_request_is_allowed<F, Fut>(make: &F)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    let pair = Pair::new(make, "empty request", T0).await;
    let d = pair.check(&[]).await;
    assert!(d.allowed);
    assert!(d.statuses.is_empty());
}

/// A pseudo-random but deterministic (`seed`) sequence of `checks` requests
/// of one to three checks over a handful of buckets and limits, with peeks
/// and clock moves (mostly small, some across windows, a few backwards) in
/// between; every answer must equal the memory backend's.
pub async fn differential<F, Fut>(make: &F, seed: u64, checks: usize)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    differential_in(make, seed, checks, Time::MayStepBack).await;
}

/// [`differential`], the clock stepping back only with [`Time::MayStepBack`] (the sequence is
/// otherwise the same).
pub async fn differential_in<F, Fut>(make: &F, seed: u64, checks: usize, time: Time)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    let pair = Pair::new(make, "differential", T0 + 12_345).await;
    let mut rng = Lcg(seed);
    let buckets = [
        BucketKey::ip(ip(1)),
        BucketKey::ip(ip(2)),
        BucketKey::key(Arc::from("a")),
        BucketKey::key(Arc::from("b")),
        BucketKey::role(Arc::from("r")),
        BucketKey::endpoint(Arc::from("/x"), Subject::Key(Arc::from("a"))),
    ];
    // Periods of ten seconds or more: a shared backend's keys expire on its
    // own clock, which barely moves while this runs.
    let specs = [
        spec(3, 10),
        spec(2, 10),
        spec(5, 60),
        spec(20, 60),
        spec(40, 3_600),
    ];
    let mut outcomes = [0usize; 2];
    let mut done = 0;
    while done < checks {
        match rng.below(100) {
            0..60 => {}
            60..85 => pair.clock.advance(Duration::from_millis(rng.below(2_000))),
            85..97 => pair.clock.advance(Duration::from_millis(rng.below(30_000))),
            97..99 => pair
                .clock
                .advance(Duration::from_millis(rng.below(200_000))),
            _ => {
                let back = rng.below(5_000);
                if time == Time::MayStepBack {
                    pair.clock.set(pair.now().saturating_sub(back));
                }
            }
        }
        if rng.below(20) == 0 {
            let check = LimitCheck::new(rng.pick(&buckets).clone(), *rng.pick(&specs));
            pair.peek(&check).await;
            continue;
        }
        let n = 1 + rng.below(3);
        let request: Vec<LimitCheck> = (0..n)
            .map(|_| LimitCheck::new(rng.pick(&buckets).clone(), *rng.pick(&specs)))
            .collect();
        let d = pair.check(&request).await;
        outcomes[usize::from(d.allowed)] += 1;
        done += 1;
    }
    // The sequence is only worth something if both answers were common.
    assert!(
        outcomes[0] >= checks / 10 && outcomes[1] >= checks / 10,
        "differential: too one-sided (refused, allowed) = {outcomes:?}"
    );
}

/// A token reservation is admitted only when it fits whole, is charged whole, and settling it
/// gives the unused part back to the window that took it.
pub async fn token_reservations_fit_whole_and_settle_back<F, Fut>(make: &F)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    let pair = Pair::new(make, "token reservations", T0 + 10_000).await;
    let request = key_check("tk", spec(100, 60));
    let big = tokens_check("tk", 1_000, 600);
    let first = pair.admit(only(&[request.clone(), big.clone()])).await;
    let (d, _, charged_at) = decided(&first);
    assert!(d.allowed);
    assert_eq!(d.statuses[1].remaining, 400);
    // 600 more do not fit in the 400 left: refused, and the request count is not charged.
    let second = pair.admit(only(&[request.clone(), big.clone()])).await;
    let (d, _, _) = decided(&second);
    assert!(!d.allowed);
    assert_eq!(d.denied_by(), Some(Dimension::Tokens));
    assert_eq!(d.statuses[0].remaining, 99);
    assert!(d.statuses[1].retry_after > Duration::ZERO);
    // The first call used 150 tokens: 450 come back, and 600 fit again.
    pair.clock.advance(Duration::from_millis(5));
    pair.settle(Settlement {
        adjustments: &[Adjustment {
            check: big.clone(),
            charged_at_ms: charged_at,
            delta: -450,
        }],
        release: None,
        local: false,
    })
    .await;
    let third = pair.admit(only(&[request.clone(), big.clone()])).await;
    let (d, _, at) = decided(&third);
    assert!(d.allowed);
    assert_eq!(d.statuses[1].remaining, 250);
    // Settled in the next window, the give-back lands in the previous slot it now occupies.
    pair.clock.set(T0 + 60_000 + 1);
    pair.settle(Settlement {
        adjustments: &[Adjustment {
            check: big.clone(),
            charged_at_ms: at,
            delta: -600,
        }],
        release: None,
        local: false,
    })
    .await;
    let fourth = pair.admit(only(&[tokens_check("tk", 1_000, 1_000)])).await;
    assert!(!decided(&fourth).0.allowed, "150 still weigh in");
    // A reservation above the limit itself never fits.
    let never = pair
        .admit(only(&[tokens_check("other", 1_000, 1_001)]))
        .await;
    assert!(!decided(&never).0.allowed);
}

/// A daily quota is a fixed window: it resets whole at its configured hour and does not decay.
pub async fn daily_quota_resets_at_its_hour<F, Fut>(make: &F)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    const HOUR: u64 = 3_600_000;
    // 05:00 UTC, with the quota day starting at 06:00.
    let pair = Pair::new(make, "daily quota", T0 + 5 * HOUR).await;
    let day = |cost| {
        LimitCheck::new(
            BucketKey::new(Dimension::TokensDaily, Subject::Key(Arc::from("dq"))),
            spec(10_000, 86_400),
        )
        .costing(cost)
        .fixed(6 * HOUR)
    };
    assert!(decided(&pair.admit(only(&[day(9_000)])).await).0.allowed);
    let refused = pair.admit(only(&[day(2_000)])).await;
    let (d, _, _) = decided(&refused);
    assert!(!d.allowed);
    assert_eq!(d.statuses[0].retry_after, Duration::from_millis(HOUR));
    assert_eq!(d.statuses[0].reset_at_millis, T0 + 6 * HOUR);
    pair.clock.set(T0 + 6 * HOUR);
    let next_day = pair.admit(only(&[day(10_000)])).await;
    assert!(decided(&next_day).0.allowed, "a new quota day starts empty");
}

/// A concurrency cap admits up to `cap` leases; a refused one charges nothing; a released or
/// expired lease frees its slot; a renewed one outlives its first TTL.
pub async fn concurrency_leases_cap_expire_and_renew<F, Fut>(make: &F)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    let pair = Pair::new(make, "concurrency leases", T0).await;
    let lease = |id| Lease {
        key: BucketKey::new(Dimension::Concurrency, Subject::Key(Arc::from("cc"))),
        cap: 2,
        id,
        ttl: Duration::from_secs(30),
        shadow: false,
    };
    let request = [key_check("cc", spec(100, 60))];
    let leased = |l| Admission {
        guards: &[],
        checks: &request,
        lease: Some(l),
    };
    let (a, b, c) = (lease(1), lease(2), lease(3));
    let first = pair.admit(leased(&a)).await;
    assert_eq!(
        decided(&first).1,
        Some(LeaseStatus {
            cap: 2,
            in_flight: 1,
            acquired: true
        })
    );
    assert!(decided(&pair.admit(leased(&b)).await).0.allowed);
    let third = pair.admit(leased(&c)).await;
    let (d, l, _) = decided(&third);
    assert!(!d.allowed);
    assert_eq!(l.map(|l| (l.acquired, l.in_flight)), Some((false, 2)));
    assert_eq!(
        d.statuses[0].remaining, 98,
        "a refused slot charges nothing"
    );
    pair.settle(Settlement {
        adjustments: &[],
        release: Some(&a),
        local: false,
    })
    .await;
    assert!(
        decided(&pair.admit(leased(&c)).await).0.allowed,
        "a released slot is free"
    );
    // b renewed at +20s outlives its first TTL; c, never renewed, expires at +30s.
    pair.clock.advance(Duration::from_secs(20));
    pair.renew(&b).await;
    pair.clock.advance(Duration::from_secs(15));
    let (d4, d5) = (lease(4), lease(5));
    let after = pair.admit(leased(&d4)).await;
    assert_eq!(
        decided(&after).1.map(|l| (l.acquired, l.in_flight)),
        Some((true, 2)),
        "c expired, b still held"
    );
    let full = pair.admit(leased(&d5)).await;
    assert!(!decided(&full).0.allowed);
}

/// A shadow limit is charged like an enforced one and reports when it would refuse, but the
/// request passes; a shadow cap takes a slot past the cap and says so.
pub async fn shadow_limits_count_and_report_but_never_refuse<F, Fut>(make: &F)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn RateLimiter>>,
{
    let pair = Pair::new(make, "shadow limits", T0).await;
    let shadow = tokens_check("sh", 1_000, 700).shadowed(true);
    let lease = |id| Lease {
        key: BucketKey::new(Dimension::Concurrency, Subject::Key(Arc::from("sh"))),
        cap: 1,
        id,
        ttl: Duration::from_secs(30),
        shadow: true,
    };
    let (l1, l2) = (lease(1), lease(2));
    let checks = [key_check("sh", spec(10, 60)), shadow];
    let admit = |l| Admission {
        guards: &[],
        checks: &checks,
        lease: Some(l),
    };
    let first = pair.admit(admit(&l1)).await;
    let (d, _, _) = decided(&first);
    assert!(d.allowed && !d.statuses[1].is_exceeded());
    let second = pair.admit(admit(&l2)).await;
    let (d, l, _) = decided(&second);
    assert!(d.allowed, "shadow limits never refuse");
    assert!(
        d.statuses[1].is_exceeded(),
        "but report that they would have"
    );
    assert_eq!(d.statuses[0].remaining, 8, "the request was counted");
    assert_eq!(l.map(|l| l.in_flight), Some(2), "past the shadow cap of 1");
}
