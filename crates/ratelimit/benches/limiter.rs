//! Cost of one rate-limit decision on warm buckets.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use infergate_ratelimit::redis::{RedisLimiter, RedisLimiterConfig};
use infergate_ratelimit::{
    BucketKey, LimitCheck, ManualClock, MemoryLimiter, RateLimiter, RateSpec,
};

fn two_check_decision(c: &mut Criterion) {
    // A frozen clock and a huge limit keep every iteration on the same
    // allowed path instead of drifting into refusals.
    let clock = ManualClock::new(1_700_000_000_000);
    let limiter = MemoryLimiter::new(Arc::new(clock));
    let spec = RateSpec {
        limit: u64::MAX / 2,
        period: std::time::Duration::from_secs(60),
    };
    let checks = [
        LimitCheck::new(
            BucketKey::ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))),
            spec,
        ),
        LimitCheck::new(BucketKey::key(Arc::from("abc123")), spec),
    ];
    limiter.check_now(&checks);

    c.bench_function("memory/check_now 2 checks, warm", |b| {
        b.iter(|| black_box(limiter.check_now(black_box(&checks))))
    });
    c.bench_function("memory/peek_now warm", |b| {
        b.iter(|| black_box(limiter.peek_now(black_box(&checks[1]))))
    });
}

/// The same decision through Redis (a local `redis-server`, so the cost is
/// mostly one loopback round trip and the script), and a refusal answered by
/// the local deny cache without any round trip. Skipped when `redis-server`
/// is not installed.
fn redis_decision(c: &mut Criterion) {
    let installed = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("redis-server not installed: skipping the Redis benchmarks");
        return;
    }
    let server = infergate_testkit::RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cfg = RedisLimiterConfig {
        prefix: "bench".into(),
        timeout: Duration::from_secs(5),
        ..RedisLimiterConfig::default()
    };
    let limiter = rt
        .block_on(RedisLimiter::connect(&server.url(), cfg))
        .unwrap();
    let roomy = RateSpec {
        limit: u64::MAX / 2,
        period: Duration::from_secs(60),
    };
    let checks = [
        LimitCheck::new(
            BucketKey::ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))),
            roomy,
        ),
        LimitCheck::new(BucketKey::key(Arc::from("abc123")), roomy),
    ];
    let over = [
        checks[0].clone(),
        LimitCheck::new(
            BucketKey::key(Arc::from("over")),
            RateSpec {
                limit: 1,
                period: Duration::from_secs(3_600),
            },
        ),
    ];
    rt.block_on(async {
        limiter.check(&checks).await.unwrap();
        limiter.check(&over).await.unwrap();
        assert!(!limiter.check(&over).await.unwrap().allowed);
    });

    c.bench_function("redis/check 2 checks, allowed (1 round trip)", |b| {
        b.iter(|| black_box(rt.block_on(limiter.check(black_box(&checks))).unwrap()))
    });
    let before = limiter.round_trips();
    c.bench_function(
        "redis/check 2 checks, refused from deny cache (0 round trips)",
        |b| b.iter(|| black_box(rt.block_on(limiter.check(black_box(&over))).unwrap())),
    );
    assert_eq!(
        limiter.round_trips(),
        before,
        "cached refusals reached Redis"
    );
    drop(server);
}

criterion_group!(benches, two_check_decision, redis_decision);
criterion_main!(benches);
