//! Behaviour of the in-memory sliding-window limiter, driven by a manual clock.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use infergate_ratelimit::{
    BucketKey, Clock, Decision, Dimension, LimitCheck, LimitStatus, ManualClock, MemoryLimiter,
    RateLimiter, RateSpec, Subject,
};

/// A Unix-ms instant on a day boundary, hence on a second, minute and hour
/// boundary too.
const T0: u64 = 19_675 * 86_400_000;

fn spec(limit: u64, secs: u64) -> RateSpec {
    RateSpec::new(limit, Duration::from_secs(secs)).unwrap()
}

fn limiter_at(start: u64) -> (ManualClock, MemoryLimiter) {
    let clock = ManualClock::new(start);
    let limiter = MemoryLimiter::new(Arc::new(clock.clone()));
    (clock, limiter)
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

/// How many of `n` back-to-back checks are allowed.
fn allow_count(limiter: &MemoryLimiter, checks: &[LimitCheck], n: usize) -> usize {
    (0..n).filter(|_| limiter.check_now(checks).allowed).count()
}

/// Polls a future that is expected to complete without waiting, as every
/// memory-backend future does.
fn ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("memory backend future was not immediately ready"),
    }
}

/// Deterministic pseudo-random numbers for property-style loops.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        if n == 0 { 0 } else { (self.0 >> 33) % n }
    }
}

#[test]
fn rapid_checks_allow_exactly_the_limit() {
    let (_clock, limiter) = limiter_at(T0 + 1_234);
    let check = [ip_check(9, spec(100, 60))];
    let decisions: Vec<Decision> = (0..150).map(|_| limiter.check_now(&check)).collect();

    assert!(decisions[..100].iter().all(|d| d.allowed));
    assert!(decisions[100..].iter().all(|d| !d.allowed));
    for (i, d) in decisions[..100].iter().enumerate() {
        assert_eq!(d.statuses[0].remaining, 99 - i as u64);
        assert_eq!(d.retry_after(), Duration::ZERO);
        assert_eq!(d.denied_by(), None);
    }
    let last = &decisions[149];
    assert_eq!(last.statuses.len(), 1);
    assert_eq!(last.statuses[0].remaining, 0);
    assert!(last.retry_after() > Duration::ZERO);
    assert_eq!(last.denied_by(), Some(Dimension::Ip));
    assert_eq!(last.statuses[0].limit, 100);
    assert_eq!(last.statuses[0].window, Duration::from_secs(60));
    assert_eq!(last.statuses[0].reset_at_millis, T0 + 60_000);
    // All 100 sit in the current window with nothing before it, so the
    // first free slot appears once the next window has decayed them by one
    // request's worth: 60s to the boundary plus 60s / 100.
    assert_eq!(
        last.retry_after(),
        Duration::from_millis(60_000 - 1_234 + 600)
    );
}

#[test]
fn denied_multi_check_consumes_nothing() {
    let (_clock, limiter) = limiter_at(T0);
    let key = key_check("abc123", spec(10, 60));
    let endpoint = endpoint_check("/inference", "abc123", spec(2, 60));
    let checks = [key.clone(), endpoint.clone()];

    assert!(limiter.check_now(&checks).allowed);
    assert!(limiter.check_now(&checks).allowed);
    let third = limiter.check_now(&checks);
    assert!(!third.allowed);
    assert_eq!(third.denied_by(), Some(Dimension::Endpoint));
    assert_eq!(third.statuses[0].remaining, 8);
    assert_eq!(third.statuses[0].retry_after, Duration::ZERO);
    assert_eq!(third.statuses[1].remaining, 0);
    assert!(third.statuses[1].retry_after > Duration::ZERO);

    // Refusals repeated many times still cost the key bucket nothing.
    assert_eq!(allow_count(&limiter, &checks, 20), 0);
    assert_eq!(limiter.peek_now(&key).remaining, 8);
    assert_eq!(limiter.peek_now(&endpoint).remaining, 0);
    // The key limit on its own is still usable.
    assert_eq!(allow_count(&limiter, std::slice::from_ref(&key), 20), 8);
}

#[test]
fn sliding_window_weights_the_previous_window() {
    let (clock, limiter) = limiter_at(T0);
    let check = [ip_check(1, spec(10, 60))];

    // t = 0: a full window's worth, then refusal.
    assert_eq!(allow_count(&limiter, &check, 15), 10);

    // t = 60s: the previous window counts fully: estimate 10, refused.
    clock.set(T0 + 60_000);
    let d = limiter.check_now(&check);
    assert!(!d.allowed);
    assert_eq!(d.statuses[0].remaining, 0);
    assert_eq!(d.statuses[0].reset_at_millis, T0 + 120_000);
    // 10 * (60000 - t) / 60000 <= 9  ->  t = 6000ms.
    assert_eq!(d.retry_after(), Duration::from_millis(6_000));

    // t = 90s: half weight: estimate 5, so exactly 5 more fit.
    clock.set(T0 + 90_000);
    assert_eq!(limiter.peek_now(&check[0]).remaining, 5);
    assert_eq!(allow_count(&limiter, &check, 10), 5);

    // t = 120s: the 5 made at 90s are now the previous window, at full
    // weight, and the 10 from t = 0 no longer count: 5 fit.
    clock.set(T0 + 120_000);
    assert_eq!(limiter.peek_now(&check[0]).remaining, 5);
    assert_eq!(allow_count(&limiter, &check, 10), 5);

    // t = 240s: the window before (180s..240s) was empty: all 10 fit again.
    clock.set(T0 + 240_000);
    assert_eq!(limiter.peek_now(&check[0]).remaining, 10);
    assert_eq!(allow_count(&limiter, &check, 15), 10);
}

#[test]
fn window_resets_fully_after_an_idle_window() {
    let (clock, limiter) = limiter_at(T0 + 59_999);
    let check = [ip_check(1, spec(10, 60))];
    assert_eq!(allow_count(&limiter, &check, 12), 10);
    clock.set(T0 + 120_000);
    assert_eq!(allow_count(&limiter, &check, 12), 10);
}

#[test]
fn retry_after_is_exactly_the_minimal_wait() {
    let mut rng = Lcg(0x5eed);
    // (limit, period in seconds)
    type Rate = (u64, u64);
    let single: &[Rate] = &[
        (1, 1),
        (2, 1),
        (3, 7),
        (1, 60),
        (7, 60),
        (10, 60),
        (100, 60),
        (5, 3_600),
        (999, 3_600),
        (1_000, 86_400),
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
        let shortest_ms = specs.iter().map(|&(_, s)| s * 1_000).min().unwrap();
        let (clock, limiter) = limiter_at(T0 + rng.below(shortest_ms * 3));
        let checks: Vec<LimitCheck> = specs
            .iter()
            .enumerate()
            .map(|(i, &(limit, secs))| ip_check(i as u8, spec(limit, secs)))
            .collect();

        for _round in 0..25 {
            // Mix bursts with spread-out requests until refused.
            let mut attempts = 0;
            let d = loop {
                let d = limiter.check_now(&checks);
                if !d.allowed {
                    break d;
                }
                attempts += 1;
                assert!(attempts < 100_000, "{specs:?}: never refused");
                if rng.below(2) == 0 {
                    let gap = shortest_ms * 2 / specs[0].0 + 1;
                    clock.advance(Duration::from_millis(rng.below(gap)));
                }
            };

            let wait = d.retry_after();
            assert!(wait > Duration::ZERO, "{specs:?}: refused with no wait");
            let wait_ms = u64::try_from(wait.as_millis()).unwrap();
            let now = clock.now_millis();

            clock.set(now + wait_ms - 1);
            assert!(
                !limiter.check_now(&checks).allowed,
                "{specs:?}: allowed 1ms before retry_after {wait_ms}ms at {now}"
            );
            clock.set(now + wait_ms);
            assert!(
                limiter.check_now(&checks).allowed,
                "{specs:?}: still refused after retry_after {wait_ms}ms at {now}"
            );
            denials += 1;
            clock.advance(Duration::from_millis(rng.below(shortest_ms)));
        }
    }
    assert!(denials >= 300);
}

#[test]
fn buckets_are_independent() {
    let (_clock, limiter) = limiter_at(T0);
    let s = spec(3, 60);

    assert_eq!(allow_count(&limiter, &[ip_check(1, s)], 5), 3);
    assert_eq!(allow_count(&limiter, &[ip_check(2, s)], 5), 3);
    let v6 = LimitCheck::new(BucketKey::ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), s);
    assert_eq!(allow_count(&limiter, &[v6], 5), 3);

    assert_eq!(allow_count(&limiter, &[key_check("a", s)], 5), 3);
    assert_eq!(allow_count(&limiter, &[key_check("b", s)], 5), 3);

    assert_eq!(
        allow_count(&limiter, &[endpoint_check("/inference", "a", s)], 5),
        3
    );
    assert_eq!(
        allow_count(&limiter, &[endpoint_check("/embeddings", "a", s)], 5),
        3
    );
    assert_eq!(
        allow_count(&limiter, &[endpoint_check("/inference", "b", s)], 5),
        3
    );

    let role = LimitCheck::new(BucketKey::role(Arc::from("admin")), s);
    assert_eq!(allow_count(&limiter, &[role], 5), 3);

    // The same subject under another dimension is another bucket.
    let key_as_role = LimitCheck::new(
        BucketKey::new(Dimension::Role, Subject::Key(Arc::from("a"))),
        s,
    );
    assert_eq!(allow_count(&limiter, &[key_as_role], 5), 3);

    assert_eq!(limiter.len(), 10);
}

#[test]
fn same_key_with_two_periods_keeps_two_buckets() {
    let (clock, limiter) = limiter_at(T0);
    let burst = key_check("k", spec(2, 1));
    let sustained = key_check("k", spec(5, 3_600));
    let checks = [burst.clone(), sustained.clone()];

    assert_eq!(allow_count(&limiter, &checks, 5), 2);
    for _ in 0..5 {
        clock.advance(Duration::from_secs(2));
        allow_count(&limiter, &checks, 5);
    }
    assert_eq!(limiter.peek_now(&sustained).remaining, 0);
    let d = limiter.check_now(&checks);
    assert!(!d.allowed);
    assert_eq!(d.denied_by(), Some(Dimension::Key));
    assert_eq!(d.statuses[0].retry_after, Duration::ZERO);
    assert!(d.statuses[1].retry_after > Duration::from_secs(60));
    assert_eq!(limiter.len(), 2);
}

#[test]
fn repeated_bucket_in_one_request_is_charged_once() {
    let (_clock, limiter) = limiter_at(T0);
    let check = ip_check(1, spec(4, 60));
    let tighter = ip_check(1, spec(3, 60));
    let d = limiter.check_now(&[check.clone(), check.clone(), tighter.clone()]);
    assert!(d.allowed);
    assert_eq!(d.statuses[0].remaining, 3);
    assert_eq!(d.statuses[1].remaining, 3);
    assert_eq!(d.statuses[2].remaining, 2);
    assert_eq!(limiter.peek_now(&check).remaining, 3);
    assert_eq!(limiter.len(), 1);
}

#[test]
fn peek_reports_without_consuming_or_creating() {
    let (_clock, limiter) = limiter_at(T0 + 30_000);
    let check = ip_check(1, spec(5, 60));

    let status = limiter.peek_now(&check);
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
    assert!(limiter.is_empty());

    assert_eq!(allow_count(&limiter, std::slice::from_ref(&check), 5), 5);
    for _ in 0..10 {
        let status = limiter.peek_now(&check);
        assert_eq!(status.remaining, 0);
        assert!(status.is_exceeded());
    }
    assert_eq!(limiter.len(), 1);
}

#[test]
fn refused_checks_create_no_buckets() {
    let (_clock, limiter) = limiter_at(T0);
    let full = ip_check(1, spec(1, 60));
    assert!(limiter.check_now(std::slice::from_ref(&full)).allowed);
    assert_eq!(limiter.len(), 1);

    for n in 0..50u8 {
        let other = key_check(&format!("key-{n}"), spec(10, 60));
        let d = limiter.check_now(&[other, full.clone()]);
        assert!(!d.allowed);
        assert_eq!(d.statuses[0].remaining, 10);
    }
    assert_eq!(limiter.len(), 1);
}

#[test]
fn empty_request_is_allowed() {
    let (_clock, limiter) = limiter_at(T0);
    let d = limiter.check_now(&[]);
    assert!(d.allowed);
    assert!(d.statuses.is_empty());
    assert_eq!(d.tightest(), None);
    assert_eq!(d.retry_after(), Duration::ZERO);
}

#[test]
fn tightest_picks_the_status_to_advertise() {
    let status = |dimension, limit, remaining, retry_ms| LimitStatus {
        dimension,
        limit,
        remaining,
        window: Duration::from_secs(60),
        reset_at_millis: T0,
        retry_after: Duration::from_millis(retry_ms),
    };
    let allowed = Decision {
        allowed: true,
        statuses: vec![
            status(Dimension::Ip, 100, 7, 0),
            status(Dimension::Key, 50, 7, 0),
            status(Dimension::Role, 10, 9, 0),
        ],
    };
    assert_eq!(
        allowed.tightest().map(|s| s.dimension),
        Some(Dimension::Key)
    );
    assert_eq!(allowed.denied_by(), None);

    let denied = Decision {
        allowed: false,
        statuses: vec![
            status(Dimension::Ip, 100, 40, 0),
            status(Dimension::Key, 50, 0, 2_000),
            status(Dimension::Endpoint, 5, 0, 9_000),
        ],
    };
    assert_eq!(
        denied.tightest().map(|s| s.dimension),
        Some(Dimension::Endpoint)
    );
    assert_eq!(denied.denied_by(), Some(Dimension::Endpoint));
    assert_eq!(denied.retry_after(), Duration::from_millis(9_000));
}

#[test]
fn sweep_removes_only_buckets_that_can_no_longer_matter() {
    let (clock, limiter) = limiter_at(T0);
    let minute = spec(10, 60);
    let hour = spec(10, 3_600);
    for n in 0..20 {
        limiter.check_now(&[ip_check(n, minute)]);
    }
    limiter.check_now(&[key_check("hourly", hour)]);
    assert_eq!(limiter.len(), 21);
    assert_eq!(limiter.sweep(), 0);

    // 90s later a minute bucket still weighs in through the previous window.
    clock.set(T0 + 90_000);
    limiter.check_now(&[ip_check(0, minute)]);
    assert_eq!(limiter.sweep(), 0);

    // Idle for more than two periods: the 19 untouched minute buckets go;
    // the one used at 90s and the hourly one stay.
    clock.set(T0 + 150_000);
    assert_eq!(limiter.sweep(), 19);
    assert_eq!(limiter.len(), 2);
    assert_eq!(limiter.peek_now(&ip_check(0, minute)).remaining, 9);

    clock.set(T0 + 2 * 3_600_000);
    assert_eq!(limiter.sweep(), 2);
    assert!(limiter.is_empty());
}

#[test]
fn sweeper_thread_sweeps_and_stops_when_guard_dropped() {
    let (clock, limiter) = limiter_at(T0);
    let limiter = Arc::new(limiter);
    for n in 0..10 {
        limiter.check_now(&[ip_check(n, spec(1, 1))]);
    }
    let guard = limiter.spawn_sweeper(Duration::from_millis(1)).unwrap();
    clock.advance(Duration::from_secs(5));

    // The sweeper runs on real time, so wait for it, with a generous deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !limiter.is_empty() {
        assert!(Instant::now() < deadline, "sweeper never ran");
        std::thread::yield_now();
    }

    let started = Instant::now();
    drop(guard);
    // The sweeper sleeps for an hour between sweeps; a drop must not wait for it.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn dropping_the_guard_interrupts_a_long_sleep() {
    let limiter = Arc::new(MemoryLimiter::default());
    let guard = limiter.spawn_sweeper(Duration::from_secs(3_600)).unwrap();
    let started = Instant::now();
    drop(guard);
    // The sweeper sleeps for an hour between sweeps; a drop must not wait for it.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn sweeper_does_not_keep_the_limiter_alive() {
    let limiter = Arc::new(MemoryLimiter::default());
    let weak = Arc::downgrade(&limiter);
    let guard = limiter.spawn_sweeper(Duration::from_millis(1)).unwrap();
    drop(limiter);
    // The thread only upgrades for the length of one sweep.
    let deadline = Instant::now() + Duration::from_secs(10);
    while weak.upgrade().is_some() {
        assert!(Instant::now() < deadline);
        std::thread::yield_now();
    }
    drop(guard);
}

#[test]
fn concurrent_checks_never_overshoot() {
    let (_clock, limiter) = limiter_at(T0 + 1);
    let limiter = Arc::new(limiter);
    let check = [key_check("shared", spec(5_000, 3_600))];
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let limiter = Arc::clone(&limiter);
            let check = check.clone();
            std::thread::spawn(move || allow_count(&limiter, &check, 1_000))
        })
        .collect();
    let allowed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(allowed, 5_000);
    assert_eq!(limiter.peek_now(&check[0]).remaining, 0);
}

#[test]
fn concurrent_multi_checks_stay_all_or_nothing() {
    let (_clock, limiter) = limiter_at(T0);
    let limiter = Arc::new(limiter);
    // Every thread shares the endpoint bucket and has its own key bucket,
    // so checks lock overlapping shard sets in different combinations.
    let endpoint = endpoint_check("/inference", "shared", spec(300, 60));
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let limiter = Arc::clone(&limiter);
            let checks = [ip_check(t, spec(1_000, 60)), endpoint.clone()];
            std::thread::spawn(move || allow_count(&limiter, &checks, 500))
        })
        .collect();
    let per_thread: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(per_thread.iter().sum::<usize>(), 300);
    for (t, &n) in per_thread.iter().enumerate() {
        let ip_bucket = ip_check(t as u8, spec(1_000, 60));
        assert_eq!(limiter.peek_now(&ip_bucket).remaining, 1_000 - n as u64);
    }
}

#[test]
fn clock_going_backwards_stays_conservative() {
    let (clock, limiter) = limiter_at(T0 + 60_000);
    let check = [ip_check(1, spec(3, 60))];
    assert_eq!(allow_count(&limiter, &check, 5), 3);
    clock.set(T0 + 59_000);
    let d = limiter.check_now(&check);
    assert!(!d.allowed);
    let wait = d.retry_after();
    clock.set(T0 + 59_000 + u64::try_from(wait.as_millis()).unwrap());
    assert!(limiter.check_now(&check).allowed);
}

#[test]
fn works_behind_the_trait_object() {
    let (_clock, limiter) = limiter_at(T0);
    let limiter: Arc<dyn RateLimiter> = Arc::new(limiter);
    assert_eq!(limiter.backend(), "memory");
    let check = ip_check(1, spec(2, 60));
    let checks = [check.clone()];
    assert!(ready(limiter.check(&checks)).unwrap().allowed);
    assert!(ready(limiter.check(&checks)).unwrap().allowed);
    assert!(!ready(limiter.check(&checks)).unwrap().allowed);
    let status = ready(limiter.peek(&check)).unwrap();
    assert_eq!(status.remaining, 0);
    assert!(format!("{limiter:?}").contains("MemoryLimiter"));
}

#[test]
fn bucket_keys_render_as_backend_names() {
    assert_eq!(BucketKey::ip(ip(9)).to_string(), "ip:203.0.113.9");
    assert_eq!(
        BucketKey::ip(IpAddr::V6(Ipv6Addr::LOCALHOST)).to_string(),
        "ip:::1"
    );
    assert_eq!(
        BucketKey::key(Arc::from("abc123")).to_string(),
        "key:abc123"
    );
    assert_eq!(
        BucketKey::role(Arc::from("admin")).to_string(),
        "role:admin"
    );
    assert_eq!(
        BucketKey::endpoint(Arc::from("/inference"), Subject::Key(Arc::from("abc123"))).to_string(),
        "endpoint:/inference:key:abc123"
    );
    assert_eq!(
        BucketKey::endpoint(Arc::from("/inference"), Subject::Ip(ip(9))).to_string(),
        "endpoint:/inference:ip:203.0.113.9"
    );
    // Separators inside names are escaped so distinct keys never collide.
    assert_eq!(
        BucketKey::new(Dimension::Key, Subject::Role(Arc::from("admin"))).to_string(),
        "key:role:admin"
    );
    assert_eq!(
        BucketKey::key(Arc::from("role:admin")).to_string(),
        "key:role%3Aadmin"
    );
    assert_eq!(
        BucketKey::endpoint(Arc::from("/a:key"), Subject::Key(Arc::from("50%"))).to_string(),
        "endpoint:/a%3Akey:key:50%25"
    );
    assert_eq!(
        BucketKey::key(Arc::from("%:%::")).to_string(),
        "key:%25%3A%25%3A%3A"
    );
    assert_eq!(Dimension::Endpoint.as_str(), "endpoint");
    assert_eq!(Dimension::Ip.to_string(), "ip");
}

/// Addresses are written digit by digit, not by `core::fmt`: every octet width in every
/// position, and IPv6's compressed and IPv4-mapped forms, read as `IpAddr` writes them (the
/// names are shared with replicas of earlier versions through Redis).
#[test]
fn addresses_in_bucket_names_read_as_std_writes_them() {
    let octets = [0u8, 1, 9, 10, 42, 99, 100, 199, 200, 255];
    for (i, &a) in octets.iter().enumerate() {
        for &b in &octets[i..] {
            for addr in [[a, b, b, a], [b, a, a, b], [a, a, b, b], [b, b, a, a]] {
                let ip = IpAddr::from(addr);
                assert_eq!(BucketKey::ip(ip).to_string(), format!("ip:{ip}"));
            }
        }
    }
    for text in [
        "::",
        "::1",
        "2001:db8::8:800:200c:417a",
        "::ffff:192.0.2.128",
        "fe80::1:2:3:4",
    ] {
        let ip: IpAddr = text.parse().unwrap();
        let mut name = Vec::new();
        BucketKey::ip(ip).write_name(&mut name);
        assert_eq!(String::from_utf8(name).unwrap(), format!("ip:{ip}"));
    }
}

#[test]
fn manual_clock_moves_only_when_told() {
    let clock = ManualClock::new(1_000);
    let shared = clock.clone();
    clock.advance(Duration::from_millis(1_500));
    assert_eq!(shared.now_millis(), 2_500);
    shared.set(10);
    assert_eq!(clock.now_millis(), 10);
    clock.set(u64::MAX - 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(clock.now_millis(), u64::MAX);
    assert!(infergate_ratelimit::SystemClock.now_millis() > T0);
}
