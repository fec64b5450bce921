//! The Redis backend against real `redis-server` processes: conformance with
//! the memory backend, round trips, key layout, and failure behaviour.
//! Every test starts its own server.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use infergate_ratelimit::redis::{
    Layout, RedisLimiter, RedisLimiterConfig, SpawnDriver, TTL_JITTER_MAX_MS,
};
use infergate_ratelimit::{
    Adjustment, BucketKey, Clock, Dimension, Guarded, LimitCheck, ManualClock, MemoryLimiter,
    RateLimitError, RateLimiter, RateSpec, Settlement, Subject, conformance, conformance::Time,
};
use infergate_testkit::RedisServer;
use redis::aio::MultiplexedConnection;

const T0: u64 = conformance::T0;

fn spec(limit: u64, secs: u64) -> RateSpec {
    RateSpec::new(limit, Duration::from_secs(secs)).unwrap()
}

fn key_check(id: &str, spec: RateSpec) -> LimitCheck {
    LimitCheck::new(BucketKey::key(Arc::from(id)), spec)
}

/// Settings for tests about decisions rather than latency: a deadline no
/// loaded CI machine misses.
fn patient(prefix: &str, clock: Option<ManualClock>) -> RedisLimiterConfig {
    RedisLimiterConfig {
        prefix: prefix.into(),
        timeout: Duration::from_secs(30),
        clock: clock.map(|c| Arc::new(c) as Arc<dyn Clock>),
        ..RedisLimiterConfig::default()
    }
}

async fn raw(server: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// `calls` of one command in `INFO commandstats` (0 if never called).
async fn calls(conn: &mut MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Script calls the server ran (the hash layout's decisions).
async fn script_calls(conn: &mut MultiplexedConnection) -> u64 {
    calls(conn, "evalsha").await + calls(conn, "eval").await
}

/// Decision calls the server ran in either layout: scripts, or (counters) `INCRBY`s of `buckets`
/// charged buckets a call.
async fn decision_calls(conn: &mut MultiplexedConnection, layout: Layout, buckets: u64) -> u64 {
    match layout {
        Layout::Hashes => script_calls(conn).await,
        Layout::Counters => calls(conn, "incrby").await / buckets,
    }
}

/// [`patient`] in the given layout.
fn patient_in(layout: Layout, prefix: &str, clock: Option<ManualClock>) -> RedisLimiterConfig {
    RedisLimiterConfig {
        layout,
        ..patient(prefix, clock)
    }
}

/// A limiter in `layout` on `server`, judging at `clock`, and a plain connection to read the
/// server with.
async fn clocked(
    server: &RedisServer,
    layout: Layout,
    prefix: &str,
    clock: &ManualClock,
) -> (RedisLimiter, MultiplexedConnection) {
    let cfg = patient_in(layout, prefix, Some(clock.clone()));
    let limiter = RedisLimiter::connect(&server.url(), cfg).await.unwrap();
    (limiter, raw(server).await)
}

/// Connects to `url` and checks one request against a fresh limit of one: it must be admitted.
async fn connect_and_admit(url: &str, cfg: RedisLimiterConfig) -> RedisLimiter {
    let limiter = RedisLimiter::connect(url, cfg).await.unwrap();
    let decision = limiter.check(&[key_check("k", spec(1, 60))]).await.unwrap();
    assert!(decision.allowed, "{decision:?}");
    limiter
}

fn assert_unavailable(result: Result<impl std::fmt::Debug, RateLimitError>, what: &str) -> String {
    match result {
        Err(RateLimitError::Unavailable(msg)) => msg,
        Ok(v) => panic!("{what}: expected Unavailable, got {v:?}"),
    }
}

/// Every key on the server, sorted.
async fn all_keys(conn: &mut MultiplexedConnection) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(conn).await.unwrap();
    keys.sort();
    keys
}

/// Waits for `key` to expire, polling; fails after `limit_ms` (a TTL is what is tested: the wait
/// is the point, not a synchronisation).
async fn expires_within(conn: &mut MultiplexedConnection, key: &str, limit_ms: u64) {
    let deadline = Instant::now() + Duration::from_millis(limit_ms);
    loop {
        let exists: bool = redis::cmd("EXISTS")
            .arg(key)
            .query_async(conn)
            .await
            .unwrap();
        if !exists {
            return;
        }
        assert!(Instant::now() < deadline, "{key} never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Redis's hash-tag rule: the part between the first `{` and the next `}`.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')? + open + 1;
    (close > open + 1).then(|| &key[open + 1..close])
}

fn redis_conformance_factory(
    url: String,
    local_cache_capacity: usize,
    layout: Layout,
) -> impl Fn(ManualClock) -> std::pin::Pin<Box<dyn Future<Output = Arc<dyn RateLimiter>>>> {
    let n = Arc::new(AtomicUsize::new(0));
    move |clock| {
        let url = url.clone();
        // Apart per factory too: a test may run several on one server.
        let prefix = format!(
            "conf-{layout:?}-{local_cache_capacity}-{}",
            n.fetch_add(1, Ordering::Relaxed)
        );
        Box::pin(async move {
            let cfg = RedisLimiterConfig {
                local_cache_capacity,
                layout,
                ..patient(&prefix, Some(clock))
            };
            Arc::new(RedisLimiter::connect(&url, cfg).await.unwrap()) as Arc<dyn RateLimiter>
        })
    }
}

/// Both layouts, with and without the local deny cache (every decision going to Redis).
#[tokio::test]
async fn redis_backend_conforms() {
    let server = RedisServer::start();
    for cache in [10_000, 0] {
        let make = redis_conformance_factory(server.url(), cache, Layout::Hashes);
        conformance::run(make, Time::MayStepBack).await;
        let make = redis_conformance_factory(server.url(), cache, Layout::Counters);
        conformance::run(make, Time::Forward).await;
    }
}

#[tokio::test]
async fn redis_backend_differential_with_other_seeds() {
    let server = RedisServer::start();
    for (layout, time) in [
        (Layout::Hashes, Time::MayStepBack),
        (Layout::Counters, Time::Forward),
    ] {
        let make = redis_conformance_factory(server.url(), 10_000, layout);
        for seed in [1, 2] {
            conformance::differential_in(&make, seed, 2_000, time).await;
        }
    }
}

#[tokio::test]
async fn one_round_trip_per_decision_and_none_for_a_cached_refusal() {
    let server = RedisServer::start();
    // (allowed, calls sent) of five checks against a limit of 2: the counters layout gives the
    // first refusal's charge back in a second call.
    for (layout, refusal) in [(Layout::Hashes, 1), (Layout::Counters, 2)] {
        let expect = [
            (true, 1),
            (true, 1),
            (false, refusal),
            // Known over the limit: refused without asking Redis.
            (false, 0),
            (false, 0),
        ];
        round_trips_in(&server, layout, expect).await;
    }
}

async fn round_trips_in(server: &RedisServer, layout: Layout, expect: [(bool, u64); 5]) {
    let clock = ManualClock::new(T0);
    let prefix = format!("rt-{layout:?}");
    let cfg = patient_in(layout, &prefix, Some(clock.clone()));
    let limiter = RedisLimiter::connect(&server.url(), cfg).await.unwrap();
    let mut conn = raw(server).await;
    let evals = calls(&mut conn, "eval").await;
    let checks = [
        key_check("k", spec(2, 60)),
        LimitCheck::new(
            BucketKey::endpoint(Arc::from("/inference"), Subject::Key(Arc::from("k"))),
            spec(10, 60),
        ),
    ];
    for (i, (allowed, sent)) in expect.into_iter().enumerate() {
        let (before, trips) = (
            decision_calls(&mut conn, layout, 2).await,
            limiter.round_trips(),
        );
        let d = limiter.check(&checks).await.unwrap();
        assert_eq!(d.allowed, allowed, "{layout:?} check {i}");
        // The server decided once (the give-back is not a decision), the limiter sent `sent`.
        assert_eq!(
            decision_calls(&mut conn, layout, 2).await - before,
            sent.min(1),
            "{layout:?} check {i}"
        );
        assert_eq!(limiter.round_trips() - trips, sent, "{layout:?} check {i}");
    }
    // Only EVALSHA: the scripts were loaded by `connect`.
    assert_eq!(calls(&mut conn, "eval").await, evals);

    // A peek is one round trip, or none when the bucket is known to refuse.
    let trips = limiter.round_trips();
    assert_eq!(limiter.peek(&checks[1]).await.unwrap().remaining, 8);
    assert_eq!(limiter.round_trips() - trips, 1);
    assert!(limiter.peek(&checks[0]).await.unwrap().is_exceeded());
    assert_eq!(limiter.round_trips() - trips, 1);

    // Once the wait is over, the next check asks Redis again and is allowed.
    let wait = limiter.check(&checks).await.unwrap().retry_after();
    clock.advance(wait);
    let (before, trips) = (
        decision_calls(&mut conn, layout, 2).await,
        limiter.round_trips(),
    );
    assert!(limiter.check(&checks).await.unwrap().allowed);
    assert_eq!(decision_calls(&mut conn, layout, 2).await - before, 1);
    assert_eq!(limiter.round_trips() - trips, 1);
}

/// A guarded check (the gateway's "key limit, unless the client IP is out of failed-auth
/// budget") decides as peek-then-check does on the memory backend, charges only the checks, and
/// costs one round trip.
/// `total_connections_received` of `INFO stats`.
async fn connections_received(conn: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Concurrent calls share the limiter's connection (their commands are pipelined on it) instead
/// of each taking one of its own, and sharing changes no decision.
#[tokio::test]
async fn concurrent_calls_share_one_connection_and_stay_exact() {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0);
    let limiter = RedisLimiter::connect(&server.url(), patient("share", Some(clock.clone())))
        .await
        .unwrap();
    let mut conn = raw(&server).await;
    let before = connections_received(&mut conn).await;
    let check = [key_check("k", spec(150, 60))];
    let decisions = futures_util::future::join_all((0..200).map(|_| limiter.check(&check))).await;
    let admitted = decisions
        .iter()
        .filter(|d| d.as_ref().unwrap().allowed)
        .count();
    assert_eq!(admitted, 150, "exactly the limit admitted");
    // One call per decision until the bucket is full; the refusals after it come from the
    // local deny cache or Redis, never more than two calls each (the counters layout gives a
    // refused request's charge back in a second).
    assert!(limiter.round_trips() <= 1 + 150 + 2 * 50);
    // The one connection `connect` made served all 200 (our raw one was counted before).
    let made = connections_received(&mut conn).await - before;
    assert_eq!(made, 0, "200 concurrent calls opened {made} connection(s)");
}

/// Each thread calling the limiter (an actix worker, each on its own single-threaded runtime)
/// gets its own connection, driven on its own runtime, and the threads still share the buckets.
#[test]
fn each_calling_thread_has_its_own_connection() {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0);
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let main = runtime();
    let limiter = Arc::new(
        main.block_on(RedisLimiter::connect(
            &server.url(),
            patient("threads", Some(clock.clone())),
        ))
        .unwrap(),
    );
    let mut conn = main.block_on(raw(&server));
    let before = main.block_on(connections_received(&mut conn));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let limiter = Arc::clone(&limiter);
            std::thread::spawn(move || {
                let check = [key_check("k", spec(60, 60))];
                runtime().block_on(async {
                    futures_util::future::join_all((0..50).map(|_| limiter.check(&check)))
                        .await
                        .iter()
                        .filter(|d| d.as_ref().unwrap().allowed)
                        .count()
                })
            })
        })
        .collect();
    let admitted: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(admitted, 60, "the two threads share the bucket");
    let made = main.block_on(connections_received(&mut conn)) - before;
    assert_eq!(made, 2, "one connection per calling thread");
}

/// A connection's driver runs where the `spawn_driver` hook puts it, here in a `LocalSet` as the
/// gateway's actix workers have (a `spawn_local` outside one would panic): the hook is called once
/// for the thread's one connection, and the calls it drives decide exactly.
#[test]
fn drivers_run_where_the_hook_spawns_them() {
    let server = RedisServer::start();
    let spawned = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&spawned);
    let cfg = RedisLimiterConfig {
        spawn_driver: Some(SpawnDriver(Arc::new(move |driver| {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::task::spawn_local(driver);
        }))),
        ..patient("hook", Some(ManualClock::new(T0)))
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let admitted = local.block_on(&runtime, async {
        let limiter = RedisLimiter::connect(&server.url(), cfg).await.unwrap();
        let check = [key_check("k", spec(10, 60))];
        futures_util::future::join_all((0..25).map(|_| limiter.check(&check)))
            .await
            .iter()
            .filter(|d| d.as_ref().unwrap().allowed)
            .count()
    });
    assert_eq!(admitted, 10);
    assert_eq!(
        spawned.load(Ordering::SeqCst),
        1,
        "one connection, one driver"
    );
}

#[tokio::test]
async fn guarded_checks_are_one_round_trip_and_never_charge_the_guard() {
    let server = RedisServer::start();
    for layout in [Layout::Hashes, Layout::Counters] {
        guarded_checks_in(&server, layout).await;
    }
}

async fn guarded_checks_in(server: &RedisServer, layout: Layout) {
    let clock = ManualClock::new(T0);
    let prefix = format!("guard-{layout:?}");
    let redis = RedisLimiter::connect(
        &server.url(),
        patient_in(layout, &prefix, Some(clock.clone())),
    )
    .await
    .unwrap();
    let memory = MemoryLimiter::new(Arc::new(clock.clone()));
    let mut conn = raw(server).await;
    let ip = LimitCheck::new(BucketKey::ip("10.0.0.9".parse().unwrap()), spec(3, 60));
    let key = [key_check("g", spec(100, 60))];
    for backend in [&redis as &dyn RateLimiter, &memory] {
        let name = backend.backend();
        // Under budget: admitted, the key charged, the guard not.
        for i in 0..2 {
            let before = decision_calls(&mut conn, layout, 1).await;
            match backend
                .check_guarded(std::slice::from_ref(&ip), &key)
                .await
                .unwrap()
            {
                Guarded::Decided(d) => {
                    assert!(d.allowed, "{name} {i}");
                    assert_eq!(d.statuses.len(), 1);
                    assert_eq!(d.statuses[0].remaining, 99 - i, "{name} {i}");
                }
                Guarded::Refused(s) => panic!("{name} {i}: refused {s:?}"),
            }
            if name == "redis" {
                assert_eq!(
                    decision_calls(&mut conn, layout, 1).await - before,
                    1,
                    "{layout:?}: one round trip"
                );
            }
        }
        assert_eq!(
            backend.peek(&ip).await.unwrap().remaining,
            3,
            "{name}: guard charged"
        );
        // Spend the guard's budget as failed authentications do; then the guard refuses and
        // the key is not charged.
        for _ in 0..3 {
            assert!(
                backend
                    .check(std::slice::from_ref(&ip))
                    .await
                    .unwrap()
                    .allowed
            );
        }
        match backend
            .check_guarded(std::slice::from_ref(&ip), &key)
            .await
            .unwrap()
        {
            Guarded::Refused(s) => {
                assert_eq!(s.dimension, Dimension::Ip, "{name}");
                assert!(s.is_exceeded());
            }
            Guarded::Decided(d) => panic!("{name}: decided {d:?}"),
        }
        assert_eq!(
            backend.peek(&key[0]).await.unwrap().remaining,
            98,
            "{name}: key charged"
        );
        clock.advance(Duration::from_secs(121));
    }
}

/// A bucket's TTL is set when its window starts (two periods from then is how long its counts
/// matter), not on every charge: a charge in the same window leaves it, one in the next window
/// sets it again. Saves the server a command on nearly every check. And a charge in the window
/// the bucket holds writes its count alone; the stored fields are checked after each charge.
/// The hash layout; `counters_keys_ttls_and_give_backs` is the counters layout's.
#[tokio::test]
async fn a_bucket_ttl_and_fields_are_set_when_its_window_starts_count_alone_after() {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0 + 1_500);
    let (limiter, mut conn) = clocked(&server, Layout::Hashes, "ttl", &clock).await;
    let check = key_check("id:ttl", spec(100, 60));
    let key = limiter.key_name(&check);
    // Charges the bucket once, then reads its PTTL.
    let charge = |mut conn: MultiplexedConnection| {
        let (limiter, check, key) = (&limiter, &check, &key);
        async move {
            let decision = limiter.check(std::slice::from_ref(check)).await.unwrap();
            assert!(decision.allowed);
            redis::cmd("PTTL")
                .arg(key)
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    // The bucket as stored: a charge in the window it holds writes only the count.
    let stored = |mut conn: MultiplexedConnection| {
        let key = &key;
        async move {
            redis::cmd("HMGET")
                .arg(key)
                .arg(&["s", "c", "p"][..])
                .query_async::<(u64, u64, u64)>(&mut conn)
                .await
                .unwrap()
        }
    };
    let window = (T0 + 1_500) / 60_000 * 60_000;
    let first = charge(conn.clone()).await;
    assert!(first > 100_000, "a new bucket gets its TTL: PTTL {first}");
    assert_eq!(stored(conn.clone()).await, (window, 1, 0));

    // Marked short; a charge in the same window leaves the mark.
    let _: () = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(30_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(10));
    let kept = charge(conn.clone()).await;
    assert!(kept > 0 && kept <= 30_000, "same window: PTTL {kept}");
    assert_eq!(stored(conn.clone()).await, (window, 2, 0));

    // The next window starts: two periods again.
    clock.advance(Duration::from_secs(60));
    let renewed = charge(conn.clone()).await;
    assert!(renewed > 100_000, "next window: PTTL {renewed}");
    assert_eq!(stored(conn.clone()).await, (window + 60_000, 1, 2));
    // And once more in that window: the count alone moves, the previous one stays.
    clock.advance(Duration::from_secs(1));
    charge(conn.clone()).await;
    assert_eq!(stored(conn.clone()).await, (window + 60_000, 2, 2));
}

/// The hash layout's keys; `counters_keys_ttls_and_give_backs` is the counters layout's.
#[tokio::test]
async fn key_names_hash_tags_and_ttls() {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0 + 1_500);
    let (limiter, mut conn) = clocked(&server, Layout::Hashes, "igw", &clock).await;
    let ip = LimitCheck::new(BucketKey::ip("203.0.113.9".parse().unwrap()), spec(10, 60));
    let burst = key_check("id:1", spec(5, 1));
    let hourly = key_check("id:1", spec(1, 3_600));
    assert!(
        limiter
            .check(&[ip.clone(), burst.clone(), hourly.clone()])
            .await
            .unwrap()
            .allowed
    );

    let keys = all_keys(&mut conn).await;
    assert_eq!(
        keys,
        [
            "{igw:rl}:ip:203.0.113.9:60000ms",
            "{igw:rl}:key:id%3A1:1000ms",
            "{igw:rl}:key:id%3A1:3600000ms",
        ]
    );
    for (check, key) in [(&ip, &keys[0]), (&burst, &keys[1]), (&hourly, &keys[2])] {
        assert_eq!(&limiter.key_name(check), key);
        assert_eq!(hash_tag(key), Some("igw:rl"), "{key}");
        let period_ms = u64::try_from(check.spec.period.as_millis()).unwrap();
        let pttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let pttl = u64::try_from(pttl).unwrap_or_else(|_| panic!("{key} has no TTL"));
        // Two periods plus jitter, minus what elapsed since the write.
        assert!(
            pttl > 2 * period_ms - 1_000 && pttl <= 2 * period_ms + TTL_JITTER_MAX_MS,
            "{key}: PTTL {pttl}"
        );
        let ttl: i64 = redis::cmd("TTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{key}: TTL {ttl}");
        let (s, c, p): (u64, u64, u64) = redis::cmd("HMGET")
            .arg(key)
            .arg(&["s", "c", "p"][..])
            .query_async(&mut conn)
            .await
            .unwrap();
        let now = clock.now_millis();
        assert_eq!((s, c, p), (now - now % period_ms, 1, 0), "{key}");
    }

    // A refused request writes nothing, not even for its unused buckets.
    let full = [hourly.clone(), key_check("fresh", spec(10, 60))];
    assert!(!limiter.check(&full).await.unwrap().allowed);
    let count: usize = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(count, 3);
    // Peeks write nothing either.
    limiter
        .peek(&key_check("peeked", spec(1, 60)))
        .await
        .unwrap();
    let count: usize = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(count, 3);

    // Keys really expire: the 1-second bucket is gone after two seconds and jitter.
    expires_within(&mut conn, &keys[1], 2 * 1_000 + TTL_JITTER_MAX_MS + 2_000).await;
}

#[tokio::test]
async fn paused_server_times_out_instead_of_hanging() {
    let server = RedisServer::start();
    let cfg = RedisLimiterConfig {
        prefix: "pause".into(),
        ..RedisLimiterConfig::default()
    };
    let timeout = cfg.timeout;
    let limiter = RedisLimiter::connect(&server.url(), cfg).await.unwrap();
    let check = [key_check("k", spec(100, 60))];
    assert!(limiter.check(&check).await.unwrap().allowed);

    // Long enough to outlast all three calls below even on a loaded machine.
    server.pause(Duration::from_secs(3));
    // The first call waits on a pooled connection, the second on a new one.
    for attempt in 0..2 {
        let started = Instant::now();
        let msg = assert_unavailable(limiter.check(&check).await, "check while paused");
        let elapsed = started.elapsed();
        assert_eq!(msg, "timeout", "attempt {attempt}");
        assert!(
            elapsed >= timeout - Duration::from_millis(5)
                // Bounded by the timeout, not by the 3 s pause.
                && elapsed < timeout + Duration::from_secs(2),
            "attempt {attempt}: gave up after {elapsed:?}"
        );
    }
    let started = Instant::now();
    assert_unavailable(limiter.peek(&check[0]).await, "peek while paused");
    assert!(started.elapsed() < timeout + Duration::from_secs(2));

    // Once the pause ends, the limiter works again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match limiter.check(&check).await {
            Ok(d) => {
                assert!(d.allowed);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "never recovered: {e}"),
        }
    }
}

#[tokio::test]
async fn stopped_server_is_unavailable_and_restart_recovers() {
    let mut server = RedisServer::start();
    let clock = ManualClock::new(T0);
    let cfg = patient_in(Layout::Hashes, "restart", Some(clock.clone()));
    let limiter = RedisLimiter::connect(&server.url(), cfg).await.unwrap();
    let check = [key_check("k", spec(3, 60))];
    assert!(limiter.check(&check).await.unwrap().allowed);

    server.stop();
    let started = Instant::now();
    let msg = assert_unavailable(limiter.check(&check).await, "check on a stopped server");
    assert!(msg.starts_with("connection failed"), "{msg}");
    // A refused connection fails at once, not at the 30 s timeout.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_unavailable(limiter.peek(&check[0]).await, "peek on a stopped server");
    assert_unavailable(
        RedisLimiter::connect(&server.url(), patient("restart", None)).await,
        "connect to a stopped server",
    );

    // A new, empty server: no data, no script cache.
    server.restart();
    let trips = limiter.round_trips();
    let d = limiter.check(&check).await.unwrap();
    assert!(d.allowed);
    assert_eq!(
        d.statuses[0].remaining, 2,
        "the restarted server starts empty"
    );
    // EVALSHA met NOSCRIPT; EVAL ran the body and cached it again.
    assert_eq!(limiter.round_trips() - trips, 2);
    let mut conn = raw(&server).await;
    assert_eq!(calls(&mut conn, "evalsha").await, 1);
    assert_eq!(calls(&mut conn, "eval").await, 1);
    assert!(limiter.check(&check).await.unwrap().allowed);
    assert_eq!(calls(&mut conn, "evalsha").await, 2);
    assert_eq!(calls(&mut conn, "eval").await, 1);
}

/// A restart while the limiter is idle: its pooled connection is dead, and
/// the next check must still succeed.
#[tokio::test]
async fn restart_while_idle_is_invisible() {
    let mut server = RedisServer::start();
    let limiter = RedisLimiter::connect(&server.url(), patient("idle", None))
        .await
        .unwrap();
    let check = [key_check("k", spec(3, 60))];
    assert!(limiter.check(&check).await.unwrap().allowed);
    server.restart();
    let d = limiter.check(&check).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.statuses[0].remaining, 2);
}

/// Two gateway replicas on Redis `TIME`: a limit of N admits exactly N of 3N
/// concurrent requests, however they interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_redis_time_admit_exactly_the_limit() {
    const N: usize = 40;
    let server = RedisServer::start();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let limiter = RedisLimiter::connect(&server.url(), patient("replicas", None))
            .await
            .unwrap();
        replicas.push(Arc::new(limiter));
    }
    let shared = [key_check("tenant", spec(N as u64, 86_400))];
    let tasks: Vec<_> = (0..3 * N)
        .map(|i| {
            let limiter = Arc::clone(&replicas[i % 2]);
            let checks = shared.clone();
            tokio::spawn(async move { limiter.check(&checks).await.unwrap() })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        let d = task.await.unwrap();
        if d.allowed {
            allowed += 1;
        } else {
            assert_eq!(d.denied_by(), Some(Dimension::Key));
            assert!(d.retry_after() > Duration::ZERO);
        }
    }
    assert_eq!(allowed, N);
    for replica in &replicas {
        assert_eq!(replica.peek(&shared[0]).await.unwrap().remaining, 0);
    }
}

/// Real `TIME` and the memory backend on the system clock agree on a
/// window's reset instant (both align windows to the Unix epoch).
#[tokio::test]
async fn redis_time_aligns_windows_like_the_system_clock() {
    let server = RedisServer::start();
    let limiter = RedisLimiter::connect(&server.url(), patient("time", None))
        .await
        .unwrap();
    let memory = MemoryLimiter::default();
    let check = [key_check("k", spec(5, 86_400))];
    let from_redis = limiter.check(&check).await.unwrap().statuses[0];
    let from_memory = memory.check_now(&check).statuses[0];
    // Equal unless the test straddles midnight UTC.
    assert!(
        from_redis.reset_at_millis == from_memory.reset_at_millis
            || from_redis
                .reset_at_millis
                .abs_diff(from_memory.reset_at_millis)
                == 86_400_000
    );
    assert_eq!(from_redis.remaining, 4);
}

#[tokio::test]
async fn password_in_url_is_used_and_never_echoed() {
    let server = RedisServer::start();
    let mut conn = raw(&server).await;
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "requirepass", "s3cret-pw"][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let port = server.port();

    let good = format!("redis://:s3cret-pw@127.0.0.1:{port}");
    let limiter = connect_and_admit(&good, patient("auth", None)).await;
    assert!(!format!("{limiter:?}").contains("s3cret"));

    let bad = format!("redis://:wrong-pw-123@127.0.0.1:{port}");
    let msg = assert_unavailable(
        RedisLimiter::connect(&bad, patient("auth", None)).await,
        "wrong password",
    );
    assert!(!msg.contains("wrong-pw-123"), "{msg}");
    let unreachable = format!(
        "redis://:s3cret-pw@127.0.0.1:{}",
        infergate_testkit::free_port()
    );
    let msg = assert_unavailable(
        RedisLimiter::connect(&unreachable, patient("auth", None)).await,
        "unreachable",
    );
    assert!(!msg.contains("s3cret"), "{msg}");
}

/// A server that cannot count (here: at `maxmemory` with nothing to evict, so every write is
/// refused `OOM`) fails the call, in both layouts, so the caller's failure mode decides: the
/// counters layout must not read the refused charges as another program's data (zero) and admit.
#[tokio::test]
async fn a_server_refusing_writes_fails_the_call_instead_of_admitting() {
    let server = RedisServer::start();
    let mut conn = raw(&server).await;
    let mut limiters = Vec::new();
    for layout in [Layout::Counters, Layout::Hashes] {
        limiters.push(connect_and_admit(&server.url(), patient_in(layout, "oom", None)).await);
    }
    let _: () = redis::pipe()
        .cmd("CONFIG")
        .arg(&["SET", "maxmemory-policy", "noeviction"][..])
        .ignore()
        .cmd("CONFIG")
        .arg(&["SET", "maxmemory", "1"][..])
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    for limiter in &limiters {
        let refused = limiter.check(&[key_check("k", spec(100, 60))]).await;
        let msg = assert_unavailable(refused, "writes refused");
        assert!(msg.contains("OOM"), "{msg}");
    }
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "0"][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    for limiter in &limiters {
        assert!(
            limiter
                .check(&[key_check("k", spec(100, 60))])
                .await
                .unwrap()
                .allowed
        );
    }
}

/// A `unix://` URL: the limiter's connection over the server's Unix socket, both layouts.
#[tokio::test]
async fn a_unix_socket_url_connects() {
    let server = RedisServer::start();
    for layout in [Layout::Counters, Layout::Hashes] {
        connect_and_admit(&server.unix_url(), patient_in(layout, "unix", None)).await;
    }
    // Both layouts' keys, written through the socket, are on the server TCP clients see.
    let mut conn = raw(&server).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("{unix:rl}:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
}

/// An ACL user and a database number from the URL: the limiter's own connection sends `AUTH
/// user password` and `SELECT`, and its keys land in that database only.
#[tokio::test]
async fn acl_user_and_database_from_the_url() {
    let server = RedisServer::start();
    let mut conn = raw(&server).await;
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "gateway", "on", ">gw-pw-9", "~*", "+@all"][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let port = server.port();
    let url = format!("redis://gateway:gw-pw-9@127.0.0.1:{port}/3");
    for layout in [Layout::Counters, Layout::Hashes] {
        connect_and_admit(&url, patient_in(layout, "acl", None)).await;
    }
    let in_db = |db: i64| {
        let mut conn = conn.clone();
        async move {
            let (_, keys): ((), Vec<String>) = redis::pipe()
                .cmd("SELECT")
                .arg(db)
                .cmd("KEYS")
                .arg("{acl:rl}:*")
                .query_async(&mut conn)
                .await
                .unwrap();
            keys.len()
        }
    };
    // One key per layout (the counters layout's first window has no previous one to read).
    assert_eq!(in_db(3).await, 2);
    assert_eq!(in_db(0).await, 0);

    let wrong_user = format!("redis://nobody:gw-pw-9@127.0.0.1:{port}/3");
    let msg = assert_unavailable(
        RedisLimiter::connect(&wrong_user, patient("acl", None)).await,
        "unknown user",
    );
    assert!(msg.contains("WRONGPASS"), "{msg}");
    assert!(!msg.contains("gw-pw-9"), "{msg}");
}

#[tokio::test]
async fn backend_name_is_redis() {
    let limiter =
        RedisLimiter::connect_lazy("redis://127.0.0.1:1", RedisLimiterConfig::default()).unwrap();
    assert_eq!(limiter.backend(), "redis");
    assert_eq!(limiter.round_trips(), 0);
}

/// Keys written by something else: garbage fields read as an empty bucket
/// (and are overwritten); a key of the wrong type is an error, not a panic,
/// and the connection stays usable.
#[tokio::test]
async fn foreign_data_in_a_bucket_is_survived() {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0 + 5_000);
    let (limiter, mut conn) = clocked(&server, Layout::Hashes, "junk", &clock).await;
    // (s, c, p) as something else wrote them. In the current window each stored count is read
    // too, so each is judged: garbage in `c` or `p` makes the bucket empty as well (a `c` of -1
    // taken as it is would leave 3).
    let now_start = ((T0 + 5_000) / 60_000 * 60_000).to_string();
    let junk: [(&str, &str, &str); 13] = [
        ("abc", "1", "0"),
        ("-60000", "1", "0"),
        ("1.5", "1", "0"),
        // Off the minute grid.
        ("1700000000001", "1", "0"),
        ("1e300", "1", "0"),
        ("0", "99999999999999999999", "0"),
        (&now_start, "-1", "0"),
        (&now_start, "1.5", "0"),
        (&now_start, "x", "0"),
        (&now_start, "0", "x"),
        (&now_start, "0", "2.5"),
        (&now_start, "0", "-7"),
        (&now_start, "0", "1e300"),
    ];
    for (i, &(s, c, p)) in junk.iter().enumerate() {
        let check = key_check(&format!("junk{i}"), spec(3, 60));
        let _: () = redis::cmd("HSET")
            .arg(limiter.key_name(&check))
            .arg(&["s", s, "c", c, "p", p][..])
            .query_async(&mut conn)
            .await
            .unwrap();
        let d = limiter.check(std::slice::from_ref(&check)).await.unwrap();
        assert!(d.allowed, "s={s} c={c} p={p}");
        assert_eq!(d.statuses[0].remaining, 2, "s={s} c={c} p={p}");
        assert_eq!(limiter.peek(&check).await.unwrap().remaining, 2);
    }

    let wrong_type = key_check("string", spec(3, 60));
    let _: () = redis::cmd("SET")
        .arg(limiter.key_name(&wrong_type))
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let msg = assert_unavailable(
        limiter.check(std::slice::from_ref(&wrong_type)).await,
        "bucket key of the wrong type",
    );
    assert!(
        msg.contains("WRONGTYPE") || msg.contains("redis error"),
        "{msg}"
    );
    assert!(
        limiter
            .check(&[key_check("fine", spec(3, 60))])
            .await
            .unwrap()
            .allowed
    );
}

/// The counters layout's foreign data: a count that is not an integer, in the previous or the
/// current window's key, reads as zero; a current one is written over by the admitted charge.
#[tokio::test]
async fn counters_survive_foreign_data() {
    let server = RedisServer::start();
    let now = T0 + 5_000;
    let cfg = patient_in(Layout::Counters, "junk", Some(ManualClock::new(now)));
    let limiter = RedisLimiter::connect(&server.url(), cfg).await.unwrap();
    let mut conn = raw(&server).await;
    let start = now - now % 60_000;
    let junk = [
        "abc",
        "1.5",
        "-7",
        "1e300",
        "99999999999999999999",
        "",
        "a hash",
    ];
    let mut case = 0;
    for (window, label) in [(start - 60_000, "previous"), (start, "current")] {
        for value in junk {
            case += 1;
            let check = key_check(&format!("junk{case}"), spec(3, 60));
            let key = format!("{}:{window}", limiter.key_name(&check));
            let mut write = if value == "a hash" {
                redis::cmd("HSET")
            } else {
                redis::cmd("SET")
            };
            if value == "a hash" {
                write.arg(&key).arg("c").arg(1);
            } else {
                write.arg(&key).arg(value);
            }
            let _: () = write.query_async(&mut conn).await.unwrap();
            let d = limiter.check(std::slice::from_ref(&check)).await.unwrap();
            assert!(d.allowed, "{label} {value:?}");
            assert_eq!(d.statuses[0].remaining, 2, "{label} {value:?}");
            assert_eq!(
                limiter.peek(&check).await.unwrap().remaining,
                2,
                "{label} {value:?}: the charge was kept"
            );
        }
    }
}

/// The counters layout's keys: one per bucket, period and window start, under the hash tag,
/// created by a window's first charge with two periods' TTL (a later charge leaves it); a
/// refused request's charges are given back (its keys stay, at zero, until they expire); peeks
/// write nothing; keys really expire.
#[tokio::test]
async fn counters_keys_ttls_and_give_backs() {
    let server = RedisServer::start();
    let now = T0 + 1_500;
    let clock = ManualClock::new(now);
    let (limiter, mut conn) = clocked(&server, Layout::Counters, "igw", &clock).await;
    let ip = LimitCheck::new(BucketKey::ip("203.0.113.9".parse().unwrap()), spec(10, 60));
    let burst = key_check("id:1", spec(5, 1));
    let hourly = key_check("id:1", spec(1, 3_600));
    let checks = [ip.clone(), burst.clone(), hourly.clone()];
    assert!(limiter.check(&checks).await.unwrap().allowed);

    let keys = all_keys(&mut conn).await;
    assert_eq!(
        keys,
        [
            format!("{{igw:rl}}:ip:203.0.113.9:60000ms:{T0}"),
            format!("{{igw:rl}}:key:id%3A1:1000ms:{}", T0 + 1_000),
            format!("{{igw:rl}}:key:id%3A1:3600000ms:{T0}"),
        ]
    );
    let reader = conn.clone();
    let pttl = |key: String| {
        let mut conn = reader.clone();
        async move {
            let pttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            u64::try_from(pttl).unwrap_or_else(|_| panic!("{key} has no TTL"))
        }
    };
    let value = |key: String| {
        let mut conn = reader.clone();
        async move {
            redis::cmd("GET")
                .arg(&key)
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    for (check, key) in checks.iter().zip(&keys) {
        assert_eq!(hash_tag(key), Some("igw:rl"), "{key}");
        let period_ms = u64::try_from(check.spec.period.as_millis()).unwrap();
        let pttl = pttl(key.clone()).await;
        // Two periods plus jitter, minus what elapsed since the write.
        assert!(
            pttl > 2 * period_ms - 1_000 && pttl <= 2 * period_ms + TTL_JITTER_MAX_MS,
            "{key}: PTTL {pttl}"
        );
        assert_eq!(value(key.clone()).await, 1, "{key}");
    }

    // Marked short; a charge in the same window leaves the mark.
    let _: () = redis::cmd("PEXPIRE")
        .arg(&keys[0])
        .arg(30_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        limiter
            .check(std::slice::from_ref(&ip))
            .await
            .unwrap()
            .allowed
    );
    assert!(pttl(keys[0].clone()).await <= 30_000);
    assert_eq!(value(keys[0].clone()).await, 2);

    // Refused by the hourly limit: both charges given back, in a second call.
    let fresh = key_check("fresh", spec(10, 60));
    let trips = limiter.round_trips();
    let refused = limiter
        .check(&[hourly.clone(), fresh.clone()])
        .await
        .unwrap();
    assert!(!refused.allowed);
    assert_eq!(limiter.round_trips() - trips, 2);
    assert_eq!(
        value(keys[2].clone()).await,
        1,
        "the hourly count given back"
    );
    let fresh_key = format!("{}:{T0}", limiter.key_name(&fresh));
    assert_eq!(value(fresh_key.clone()).await, 0, "fresh count given back");
    assert!(pttl(fresh_key).await > 100_000, "and expiring");
    assert_eq!(limiter.peek(&fresh).await.unwrap().remaining, 10);
    // Peeks write nothing.
    let count = |mut conn: MultiplexedConnection| async move {
        redis::cmd("DBSIZE")
            .query_async::<usize>(&mut conn)
            .await
            .unwrap()
    };
    let before = count(conn.clone()).await;
    limiter
        .peek(&key_check("peeked", spec(1, 60)))
        .await
        .unwrap();
    assert_eq!(count(conn.clone()).await, before);

    // Keys really expire: the 1-second window's is gone after two seconds and jitter.
    expires_within(&mut conn, &keys[1], 2 * 1_000 + TTL_JITTER_MAX_MS + 2_000).await;
}

/// The counters layout sends a window's `SET … NX` once: later charges of a window a reply has
/// shown send the `INCRBY` alone (two commands fewer a bucket). A counter that vanished inside its
/// window (here `DEL`; `FLUSHDB`, eviction or a failover in production) is recreated by that
/// `INCRBY` and given its TTL by a follow-up call, so no key is left without one.
#[tokio::test]
async fn counters_known_windows_skip_the_set_and_restore_a_lost_ttl() {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0 + 1_500);
    let (limiter, mut conn) = clocked(&server, Layout::Counters, "known", &clock).await;
    let check = key_check("k", spec(100, 60));
    let one = std::slice::from_ref(&check);
    for _ in 0..5 {
        assert!(limiter.check(one).await.unwrap().allowed);
    }
    assert_eq!(
        calls(&mut conn, "set").await,
        1,
        "one SET NX for the window"
    );
    assert_eq!(calls(&mut conn, "incrby").await, 5);
    // A settlement into a known window is its INCRBY alone too.
    let settle = |delta: i64| Adjustment {
        check: check.clone(),
        charged_at_ms: T0 + 1_500,
        delta,
    };
    fn settlement(adjustments: &[Adjustment]) -> Settlement<'_> {
        Settlement {
            adjustments,
            release: None,
            local: false,
        }
    }
    limiter.settle(&settlement(&[settle(3)])).await.unwrap();
    assert_eq!(calls(&mut conn, "set").await, 1);
    assert_eq!(calls(&mut conn, "incrby").await, 6);

    let key = format!("{}:{T0}", limiter.key_name(&check));
    let pttl = |mut conn: MultiplexedConnection, key: String| async move {
        redis::cmd("PTTL")
            .arg(&key)
            .query_async::<i64>(&mut conn)
            .await
            .unwrap()
    };
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let trips = limiter.round_trips();
    let decision = limiter.check(one).await.unwrap();
    assert!(decision.allowed);
    assert_eq!(
        decision.statuses[0].remaining, 99,
        "counted from the new key"
    );
    assert_eq!(limiter.round_trips() - trips, 2, "the charge, then its TTL");
    let ttl = pttl(conn.clone(), key.clone()).await;
    assert!(
        ttl > 2 * 60_000 - 1_000 && ttl <= 2 * 60_000 + i64::try_from(TTL_JITTER_MAX_MS).unwrap(),
        "the recreated counter's PTTL: {ttl}"
    );
    assert_eq!(calls(&mut conn, "set").await, 1, "still one SET NX");
    assert_eq!(calls(&mut conn, "pexpire").await, 1);

    // Known again: the next charge is one command, one round trip.
    let trips = limiter.round_trips();
    assert!(limiter.check(one).await.unwrap().allowed);
    assert_eq!(limiter.round_trips() - trips, 1);
    assert_eq!(calls(&mut conn, "pexpire").await, 1);

    // A settlement that recreates a vanished counter gives it its TTL too.
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    limiter.settle(&settlement(&[settle(2)])).await.unwrap();
    assert_eq!(calls(&mut conn, "pexpire").await, 2);
    let ttl = pttl(conn.clone(), key.clone()).await;
    assert!(ttl > 100_000, "the recreated counter's PTTL: {ttl}");

    // A new window is a new key: its first charge sends the SET NX again.
    clock.set(T0 + 60_000 + 1_500);
    assert!(limiter.check(one).await.unwrap().allowed);
    assert_eq!(calls(&mut conn, "set").await, 2);
    let next = format!("{}:{}", limiter.key_name(&check), T0 + 60_000);
    assert!(pttl(conn.clone(), next).await > 100_000);
}

/// A sliding window's previous count, once final (that window over for two seconds plus the call
/// deadline), is read once and remembered: later calls of the window leave it out of the `MGET`.
/// Until then it is read on every call; a costed bucket's (tokens, settled when their request
/// ends) always is.
#[tokio::test]
async fn counters_remember_a_settled_previous_window() {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0 + 1_000);
    let (limiter, mut conn) = clocked(&server, Layout::Counters, "settled", &clock).await;
    let check = key_check("k", spec(10, 60));
    let costed = key_check("tokens", spec(1_000, 60)).costing(2);
    let both = [check.clone(), costed.clone()];
    for _ in 0..8 {
        assert!(limiter.check(&both).await.unwrap().allowed);
    }
    let mgets = |conn: MultiplexedConnection| async move {
        let mut conn = conn;
        calls(&mut conn, "mget").await
    };

    // A second into the next window the previous counts may still move: read on every call.
    clock.set(T0 + 61_000);
    let before = mgets(conn.clone()).await;
    assert!(limiter.check(&both).await.unwrap().allowed);
    assert!(limiter.check(&both).await.unwrap().allowed);
    assert_eq!(mgets(conn.clone()).await - before, 2);

    // 45 s into it (past two seconds and the 30 s deadline): read once more, then remembered.
    clock.set(T0 + 105_000);
    let one = std::slice::from_ref(&check);
    let first = limiter.check(one).await.unwrap();
    assert!(first.allowed);
    // What is remembered is what was read: had the count moved (it cannot, but here it is
    // written over), the next calls would refuse on it (100 weighs 25 against a limit of 10).
    let previous = format!("{}:{T0}", limiter.key_name(&check));
    let _: () = redis::cmd("SET")
        .arg(&previous)
        .arg(100)
        .query_async(&mut conn)
        .await
        .unwrap();
    let before = mgets(conn.clone()).await;
    let second = limiter.check(one).await.unwrap();
    assert!(second.allowed, "{second:?}");
    assert_eq!(
        second.statuses[0].remaining + 1,
        first.statuses[0].remaining,
        "decided on the remembered count"
    );
    assert_eq!(mgets(conn.clone()).await, before, "no MGET");
    // The costed bucket's previous count is read on every call.
    let costed_one = std::slice::from_ref(&costed);
    assert!(limiter.check(costed_one).await.unwrap().allowed);
    assert!(limiter.check(costed_one).await.unwrap().allowed);
    assert_eq!(mgets(conn.clone()).await - before, 2);
}

/// The counters layout judges a clock that steps back by up to a second at the latest instant it
/// used: a window once left is not charged again (the hash layout judges at the stored window's start, the
/// memory backend's way; `conformance::Time`).
#[tokio::test]
async fn counters_never_step_back_in_time() {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0 + 60_000);
    let cfg = patient_in(Layout::Counters, "back", Some(clock.clone()));
    let limiter = RedisLimiter::connect(&server.url(), cfg).await.unwrap();
    let check = [key_check("lagging", spec(3, 60))];
    for _ in 0..3 {
        assert!(limiter.check(&check).await.unwrap().allowed);
    }
    clock.set(T0 + 59_500);
    let d = limiter.check(&check).await.unwrap();
    assert!(!d.allowed, "the window of T0+60s still counts");
    assert_eq!(d.statuses[0].reset_at_millis, T0 + 120_000);
    // A clock corrected by more than a second is believed: a reading from the future does not
    // hold the limiter in its window.
    clock.set(T0 + 3_600_000);
    assert!(limiter.check(&check).await.unwrap().allowed);
    clock.set(T0 + 180_000);
    let d = limiter.check(&check).await.unwrap();
    assert!(d.allowed, "the hour-ahead window is left behind");
    assert_eq!(d.statuses[0].reset_at_millis, T0 + 240_000);
}
