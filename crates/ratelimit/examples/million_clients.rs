//! What one million tracked clients cost the in-memory limiter: each client is counted as the
//! gateway counts an anonymous request on a route with an endpoint limit (its IP's default
//! bucket and the endpoint's bucket), and the growth of the process's resident size is printed
//! as `key=value` pairs for `make bench` (scripts/bench.sh). Linux only (reads /proc/self).
// An example run by a script: a panic is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use infergate_ratelimit::{BucketKey, LimitCheck, ManualClock, MemoryLimiter, RateSpec, Subject};

const CLIENTS: u32 = 1_000_000;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn main() {
    let limiter = MemoryLimiter::new(Arc::new(ManualClock::new(1_700_000_000_000)));
    let default = RateSpec {
        limit: 100,
        period: Duration::from_secs(60),
    };
    let endpoint = RateSpec {
        limit: 500,
        period: Duration::from_secs(60),
    };
    let route: Arc<str> = Arc::from("/v1/chat/completions");
    let before = rss_kib();
    for n in 0..CLIENTS {
        // 10.0.0.0/8 holds 16 M addresses; every client is a different one.
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n));
        let checks = [
            LimitCheck::new(BucketKey::ip(ip), default),
            LimitCheck::new(
                BucketKey::endpoint(route.clone(), Subject::Ip(ip)),
                endpoint,
            ),
        ];
        let decision = limiter.check_now(&checks);
        assert!(decision.allowed, "client {n} refused");
    }
    let after = rss_kib();
    let growth = after.saturating_sub(before);
    println!(
        "million_clients clients={CLIENTS} buckets={} rss_before_kib={before} rss_after_kib={after} \
         rss_growth_kib={growth} bytes_per_client={}",
        limiter.len(),
        growth * 1024 / u64::from(CLIENTS)
    );
}
