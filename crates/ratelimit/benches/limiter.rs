//! Cost of one rate-limit decision on warm buckets.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use infergate_ratelimit::{BucketKey, LimitCheck, ManualClock, MemoryLimiter, RateSpec};

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

criterion_group!(benches, two_check_decision);
criterion_main!(benches);
