//! A rate-limit backend shared by every gateway replica, kept in Redis.
//!
//! Two layouts ([`Layout`]): [`Layout::Counters`], the default, one integer per bucket and
//! window judged by the gateway (redis/counters.rs), and [`Layout::Hashes`], one hash per
//! bucket judged by Lua scripts (redis/hashes.rs); each file's doc describes its keys,
//! algorithm and clock. Connections (redis/conn.rs, speaking the RESP of redis/wire.rs, one
//! per thread from redis/pool.rs), deadlines, retries and the local deny cache are this
//! module's and serve both.
//!
//! # Local deny cache
//!
//! Once Redis has refused a bucket, nothing can make it admit again before its
//! `retry_after` has passed: time only decays the estimate, and other requests
//! (from any replica) can only add to it. The limiter keeps the last state it
//! saw of every bucket of a refused request, and later requests whose buckets
//! are all known and one of which is still over its limit are refused locally,
//! with no round trip, and with the same numbers Redis would have led to (the
//! refusing bucket's numbers are exact; other buckets of the request are
//! reported as last seen, which lags behind what other replicas consumed since).
//! States seen in later replies refresh the cache; it holds at most
//! [`RedisLimiterConfig::local_cache_capacity`] buckets.
//!
//! # Failure
//!
//! Every call has one deadline ([`RedisLimiterConfig::timeout`]) covering
//! taking a connection and the round trip; missing it, any connection error, or
//! a server that cannot count (an error no foreign data explains: `LOADING`,
//! `OOM`, `READONLY`, …) is [`RateLimitError::Unavailable`], and the caller
//! decides whether to fail open or closed. A connection that failed or timed
//! out is dropped from the pool. A connection found dead when a call starts
//! (Redis restarted while it sat idle) is replaced and the call retried within
//! the same deadline; the only cost is that a call that did run before its
//! connection dropped may be charged once more. Errors never include the URL
//! (it may carry a password).

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::Clock;
use crate::decision::{Decision, LimitStatus};
use crate::key::LimitCheck;
use crate::window::{Grid, View, Window};
use crate::{Guarded, RateLimitError, RateLimiter};

mod clock;
mod conn;
mod counters;
mod deny;
mod hashes;
mod pool;
mod reply;
mod wire;

use self::conn::ConnError;
use self::deny::LocalCache;
use self::pool::Manager;
use self::wire::{Pipeline, Value};

/// The reply parser the limiter's connections read Redis with, for the fuzz target
/// (fuzz/fuzz_targets/resp_reply.rs): how many bytes the first whole reply in `buf` takes,
/// `Ok(None)` while `buf` holds only part of one. Not part of the crate's API; compiled always,
/// so `make test` keeps it building.
#[doc(hidden)]
pub fn parse_reply(buf: &[u8]) -> Result<Option<usize>, String> {
    wire::parse(buf)
        .map(|reply| reply.map(|(_, used)| used))
        .map_err(|e| e.to_string())
}

/// Upper bound of the random extra TTL given to a bucket when its window starts.
pub const TTL_JITTER_MAX_MS: u64 = 1_000;

/// How the buckets are kept in Redis. Replicas sharing a prefix must agree: two layouts count
/// apart (see docs/ratelimit.md, "Redis layouts", for a rolling upgrade).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// One counter per bucket and window, charged with `INCRBY` and judged by the gateway
    /// (redis/counters.rs): a quarter of the script's cost to redis-server.
    #[default]
    Counters,
    /// One hash per bucket, judged by a Lua script (this module's doc): how releases before
    /// the counters layout kept them.
    Hashes,
}

/// Settings of a [`RedisLimiter`].
#[derive(Clone, Debug)]
pub struct RedisLimiterConfig {
    /// Start of every key name (see the module doc). Must not contain `{` or
    /// `}`, which would move the Cluster hash tag.
    pub prefix: String,
    /// Deadline of one check or peek, taking a connection included. Well under
    /// a request's budget: a slow limiter is treated as an unavailable one.
    pub timeout: Duration,
    /// Most connections held per calling thread. One is multiplexed and shared
    /// by the thread's calls in flight; with more, calls that start while none
    /// is ready (at start-up, or after a connection failed) each make their
    /// own instead of waiting for the one being made, and keep them.
    pub pool_size: usize,
    /// `None`: the scripts read Redis `TIME` (one clock for all replicas).
    /// `Some`: this clock's reading is sent with every call (tests).
    pub clock: Option<Arc<dyn Clock>>,
    /// Deadline for establishing a connection: in [`RedisLimiter::connect`],
    /// and for connections that a call started but could not finish within
    /// [`timeout`](Self::timeout), which are completed in the background.
    pub connect_timeout: Duration,
    /// Most buckets remembered by the local deny cache; 0 turns it off.
    pub local_cache_capacity: usize,
    /// Where each connection's driver task runs (see [`SpawnDriver`]); `None`: `tokio::spawn`.
    pub spawn_driver: Option<SpawnDriver>,
    /// How buckets are kept (see [`Layout`]).
    pub layout: Layout,
}

/// A connection's driver: the task that writes the queued commands and hands the replies back.
pub type DriverTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Spawns a new connection's driver, on the thread that made the connection (its pool is that
/// thread's). A server that runs its request tasks in a `LocalSet` (actix) should spawn it there
/// too: a task outside the set that wakes one inside goes through the runtime's `eventfd`, a
/// `write` and an extra `epoll_wait` for every batch of replies (docs/performance.md).
#[derive(Clone)]
pub struct SpawnDriver(pub Arc<dyn Fn(DriverTask) + Send + Sync>);

impl fmt::Debug for SpawnDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpawnDriver(..)")
    }
}

impl Default for RedisLimiterConfig {
    fn default() -> Self {
        Self {
            prefix: "infergate".into(),
            timeout: Duration::from_millis(50),
            pool_size: 1,
            clock: None,
            connect_timeout: Duration::from_secs(2),
            local_cache_capacity: 10_000,
            spawn_driver: None,
            layout: Layout::default(),
        }
    }
}

/// The Redis backend; see the module documentation.
pub struct RedisLimiter {
    /// One pool per thread that calls the limiter (see redis/pool.rs).
    pools: thread_local::ThreadLocal<self::pool::ThreadPool>,
    manager: Manager,
    pool_size: usize,
    /// `{<prefix>:rl}:`, the start of every key name.
    key_prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    clock: Option<Arc<dyn Clock>>,
    scripts: self::hashes::Scripts,
    round_trips: AtomicU64,
    cache: LocalCache,
    jitter_seed: RandomState,
    jitter_counter: AtomicU64,
    layout: Layout,
    /// Redis's clock as estimated here (the counters layout without an injected clock).
    server_clock: self::clock::ServerClock,
    /// The latest instant a counters call was judged at: time never steps back.
    latest_ms: AtomicU64,
    /// Window counters known to exist (redis/counters.rs).
    known: self::counters::KnownWindows,
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No URL: it may carry a password.
        f.debug_struct("RedisLimiter")
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("pool_size", &self.pool_size)
            .field("layout", &self.layout)
            .field("clock", &self.clock)
            .field("round_trips", &self.round_trips())
            .finish_non_exhaustive()
    }
}

/// What a `rediss://` URL gets from a build without the `tls` feature.
const NO_TLS: &str = "rediss:// needs infergate-ratelimit's `tls` feature, which this build lacks";

fn unavailable(msg: impl Into<String>) -> RateLimitError {
    RateLimitError::Unavailable(msg.into())
}

/// A server's error reply, by its code only (`OOM`, `NOSCRIPT`, …): the text may quote data.
fn redis_error(code: &str) -> RateLimitError {
    unavailable(format!("redis error {code}"))
}

fn timeout_error() -> RateLimitError {
    unavailable("timeout")
}

/// Whether `url` asks for TLS (`rediss://`, or valkey's `valkeys://`).
fn wants_tls(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("valkeys")
}

impl RedisLimiter {
    /// Builds the limiter, connects, and loads the scripts (so the first
    /// check of the hashes layout already runs by `EVALSHA`). Fails if Redis
    /// cannot be reached within [`RedisLimiterConfig::connect_timeout`].
    ///
    /// `url` is `redis://[user:password@]host[:port][/db]`, `unix:///path`, or
    /// `rediss://…` with the crate's `tls` feature. Like every call of the limiter, this
    /// must run on a Tokio runtime (actix-web's is one).
    pub async fn connect(url: &str, cfg: RedisLimiterConfig) -> Result<Self, RateLimitError> {
        let limiter = Self::connect_lazy(url, cfg)?;
        limiter.ready().await?;
        Ok(limiter)
    }

    /// Builds the limiter without any I/O: connections are made by the first
    /// calls. Fails only on a bad URL or setting.
    pub fn connect_lazy(url: &str, cfg: RedisLimiterConfig) -> Result<Self, RateLimitError> {
        if cfg.prefix.contains(['{', '}']) {
            return Err(unavailable(
                "invalid rate-limit key prefix: `{` and `}` are reserved for the hash tag",
            ));
        }
        if cfg.pool_size == 0 {
            return Err(unavailable("rate-limit pool size must be at least 1"));
        }
        if cfg.timeout.is_zero() || cfg.connect_timeout.is_zero() {
            return Err(unavailable("rate-limit timeouts must be positive"));
        }
        if wants_tls(url) && !cfg!(feature = "tls") {
            return Err(unavailable(NO_TLS));
        }
        // redis-rs parses the URL (and only that; redis/conn.rs connects). Not the parser's
        // message: it may quote the URL.
        let info = ::redis::Client::open(url)
            .map_err(|_| {
                unavailable("invalid Redis URL: expected redis://[user:password@]host[:port][/db]")
            })?
            .get_connection_info()
            .clone();
        if let ::redis::ConnectionAddr::TcpTls { insecure: true, .. } = info.addr() {
            // It skips checking that the certificate names the host: anyone on the path could
            // then count (and refuse) every request. Not offered.
            return Err(unavailable(
                "rediss:// with #insecure is not supported: give Redis a certificate for its name",
            ));
        }
        let manager = Manager {
            info,
            connect_timeout: cfg.connect_timeout,
            spawn_driver: cfg.spawn_driver.clone(),
        };
        // Built once here so that a bad setting fails now, not in the first call of each thread.
        pool::build(manager.clone(), cfg.pool_size)?;
        Ok(Self {
            pools: thread_local::ThreadLocal::new(),
            manager,
            pool_size: cfg.pool_size,
            key_prefix: format!("{{{}:rl}}:", cfg.prefix),
            timeout: cfg.timeout,
            connect_timeout: cfg.connect_timeout,
            clock: cfg.clock,
            scripts: self::hashes::Scripts::new(),
            round_trips: AtomicU64::new(0),
            cache: LocalCache::new(cfg.local_cache_capacity),
            jitter_seed: RandomState::new(),
            jitter_counter: AtomicU64::new(0),
            layout: cfg.layout,
            server_clock: self::clock::ServerClock::new(),
            latest_ms: AtomicU64::new(0),
            known: self::counters::KnownWindows::new(cfg.timeout),
        })
    }

    /// Connects if needed and loads every script, in one round trip, within
    /// [`RedisLimiterConfig::connect_timeout`]: a readiness probe.
    pub async fn ready(&self) -> Result<(), RateLimitError> {
        let deadline = Instant::now() + self.connect_timeout;
        let mut pipe = Pipeline::with_capacity(8192);
        self.scripts.load(&mut pipe);
        // The counters layout learns Redis's clock in the same round trip.
        let sync = self.layout == Layout::Counters && self.clock.is_none();
        let reply = self.call_synced(&mut pipe, sync, deadline).await?;
        if let Some(code) = reply.iter().find_map(Value::error_code) {
            return Err(redis_error(code));
        }
        if !self.scripts.loaded(&reply) {
            return Err(unavailable("Redis returned unexpected script hashes"));
        }
        Ok(())
    }

    /// Commands sent to Redis so far (each a network round trip; commands of
    /// one pipeline count once). Local refusals send nothing.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// The Redis key holding `check`'s bucket.
    pub fn key_name(&self, check: &LimitCheck) -> String {
        let mut name = Vec::new();
        self.write_key_name(&mut name, check);
        String::from_utf8_lossy(&name).into_owned()
    }

    /// [`key_name`](Self::key_name) written into `buf` (cleared first): the hot path reuses
    /// one buffer for all of a call's keys instead of a `String` each, and writes bytes, not
    /// `core::fmt` (docs/performance.md).
    fn write_key_name(&self, buf: &mut Vec<u8>, check: &LimitCheck) {
        buf.clear();
        buf.extend_from_slice(self.key_prefix.as_bytes());
        check.key.write_name(buf);
        buf.push(b':');
        buf.extend_from_slice(
            itoa::Buffer::new()
                .format(check.spec.period_ms())
                .as_bytes(),
        );
        buf.extend_from_slice(b"ms");
    }

    /// The Redis key holding a lease's slots (a sorted set of lease ids scored by expiry),
    /// written into `buf` (cleared first) as [`write_key_name`](Self::write_key_name) writes a
    /// bucket's.
    fn write_lease_key_name(&self, buf: &mut Vec<u8>, lease: &crate::Lease) {
        buf.clear();
        buf.extend_from_slice(self.key_prefix.as_bytes());
        lease.key.write_name(buf);
    }

    fn jitter_ms(&self) -> u64 {
        let n = self.jitter_counter.fetch_add(1, Ordering::Relaxed);
        self.jitter_seed.hash_one(n) % (TTL_JITTER_MAX_MS + 1)
    }

    /// Sends `pipe` and returns its commands' replies (a command's error is its reply), within
    /// the per-call deadline; see the module doc for retries.
    async fn call(&self, pipe: &mut Pipeline) -> Result<Vec<Value>, RateLimitError> {
        self.call_until(pipe, Instant::now() + self.timeout).await
    }

    /// [`call`](Self::call) with a `TIME` at the end of `pipe` when `sync`, fed to the server
    /// clock (redis/clock.rs) and taken off the replies.
    async fn call_synced(
        &self,
        pipe: &mut Pipeline,
        sync: bool,
        deadline: Instant,
    ) -> Result<Vec<Value>, RateLimitError> {
        // The clock is read only for a call that carries a `TIME` (one a second).
        let sent = sync.then(|| {
            pipe.cmd("TIME");
            self::clock::ServerClock::local_ms()
        });
        let mut reply = self.call_until(pipe, deadline).await?;
        if let Some(sent) = sent
            && let Some(time) = reply.pop()
        {
            let received = self::clock::ServerClock::local_ms();
            self.server_clock.observe(sent, received, &time);
        }
        Ok(reply)
    }

    /// [`call`](Self::call) by `deadline`.
    async fn call_until(
        &self,
        pipe: &mut Pipeline,
        deadline: Instant,
    ) -> Result<Vec<Value>, RateLimitError> {
        let replies = pipe.finish();
        loop {
            let mut conn = self.take_connection(deadline).await?;
            let reused = conn.reused();
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            // The deadline is kept by the connection's driver (redis/conn.rs).
            match conn.conn().send(pipe.bytes(), replies, deadline).await {
                Ok(values) => {
                    conn.healthy = true;
                    return pipe.replies(values).map_err(|aborted| {
                        redis_error(aborted.error_code().unwrap_or("EXECABORT"))
                    });
                }
                // A timed-out connection is left unhealthy, so the pool discards it: a late
                // reply is not worth keeping a possibly wedged socket.
                Err(ConnError::Timeout) => return Err(timeout_error()),
                // A connection that sat in the pool may have died with a restarted server; a
                // fresh one gets another try. Each retry drops a connection, so this ends.
                Err(_) if reused => continue,
                Err(e) => return Err(unavailable(e.to_string())),
            }
        }
    }

    /// The injected clock, if any; without one the local cache estimates
    /// Redis's clock from the replies it saw.
    fn local_clock(&self) -> Option<&dyn Clock> {
        self.clock.as_deref()
    }
}

fn view_at(window: Option<Window>, now_ms: u64, grid: Grid) -> View {
    match window {
        Some(w) => View::of(&w, now_ms, grid),
        None => View::fresh(now_ms, grid),
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, checks: &[LimitCheck]) -> Result<Decision, RateLimitError> {
        if checks.is_empty() {
            return Ok(Decision {
                allowed: true,
                statuses: Vec::new(),
            });
        }
        if let Some(decision) = self.cache.refuse(checks, self.local_clock()) {
            return Ok(decision);
        }
        self.decide(0, checks, None)
            .await
            .map(|(decision, _, _)| decision)
    }

    async fn check_guarded(
        &self,
        guards: &[LimitCheck],
        checks: &[LimitCheck],
    ) -> Result<Guarded, RateLimitError> {
        let cached = guards
            .iter()
            .filter_map(|g| self.cache.peek(g, self.local_clock()));
        if let Some(refused) = Guarded::by_first_exceeded(cached) {
            return Ok(refused);
        }
        if guards.is_empty() || checks.is_empty() {
            // Nothing to fold together: the plain calls are as cheap.
            return crate::peek_then_check(self, guards, checks).await;
        }
        if let Some(decision) = self.cache.refuse(checks, self.local_clock()) {
            return Ok(Guarded::Decided(decision));
        }
        let all: Vec<LimitCheck> = guards.iter().chain(checks).cloned().collect();
        let (mut decision, _, _) = self.decide(guards.len(), &all, None).await?;
        let rest = decision.statuses.split_off(guards.len());
        if !decision.allowed
            && let Some(refused) = decision.statuses.iter().find(|s| s.is_exceeded())
        {
            return Ok(Guarded::Refused(*refused));
        }
        Ok(Guarded::Decided(Decision {
            allowed: decision.allowed,
            statuses: rest,
        }))
    }

    async fn peek(&self, check: &LimitCheck) -> Result<LimitStatus, RateLimitError> {
        self.peek_bucket(check).await
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    fn backend_calls(&self) -> u64 {
        self.round_trips()
    }

    /// One script call. The local deny cache is neither consulted nor fed: settlements give
    /// tokens back, so a bucket refused once may admit before its `retry_after`.
    async fn admit(
        &self,
        admission: &crate::Admission<'_>,
    ) -> Result<crate::Admitted, RateLimitError> {
        let guards = admission.guards.len();
        let all: std::borrow::Cow<'_, [LimitCheck]> = if guards == 0 {
            std::borrow::Cow::Borrowed(admission.checks)
        } else {
            std::borrow::Cow::Owned(
                admission
                    .guards
                    .iter()
                    .chain(admission.checks)
                    .cloned()
                    .collect(),
            )
        };
        let (mut decision, lease, at_ms) = self.decide(guards, &all, admission.lease).await?;
        if !decision.allowed
            && let Some(refused) = decision.statuses[..guards].iter().find(|s| s.is_exceeded())
        {
            return Ok(crate::Admitted::GuardRefused(*refused));
        }
        decision.statuses.drain(..guards);
        Ok(crate::Admitted::Decided {
            decision,
            lease,
            at_ms,
            local: false,
        })
    }

    async fn settle(&self, settlement: &crate::Settlement<'_>) -> Result<(), RateLimitError> {
        if settlement.adjustments.is_empty() && settlement.release.is_none() {
            return Ok(());
        }
        if self.layout == Layout::Counters {
            return self.settle_counters(settlement).await;
        }
        self.settle_hashes(settlement).await
    }

    async fn renew(&self, lease: &crate::Lease) -> Result<(), RateLimitError> {
        self.renew_lease(lease).await
    }
}

impl RedisLimiter {
    /// One run of the check script over `checks`, of which the first `guards` are only
    /// required to admit, never charged, and a concurrency slot taken when `lease` is given. Returns the decision, the lease's
    /// status and the instant the script judged at.
    async fn decide(
        &self,
        guards: usize,
        checks: &[LimitCheck],
        lease: Option<&crate::Lease>,
    ) -> Result<(Decision, Option<crate::LeaseStatus>, u64), RateLimitError> {
        if self.layout == Layout::Counters {
            return self.decide_counters(guards, checks, lease).await;
        }
        self.decide_hashes(guards, checks, lease).await
    }

    async fn peek_bucket(&self, check: &LimitCheck) -> Result<LimitStatus, RateLimitError> {
        if let Some(status) = self.cache.peek(check, self.local_clock()) {
            return Ok(status);
        }
        let grid = check.grid();
        let sent = std::time::Instant::now();
        let (window, now_ms) = match self.layout {
            Layout::Counters => self.peek_counters(check).await?,
            Layout::Hashes => self.peek_hash(check).await?,
        };
        let status = view_at(window, now_ms, grid).status(check, true);
        self.cache.record(
            std::slice::from_ref(check),
            &[window],
            now_ms,
            sent,
            status.is_exceeded(),
        );
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RateSpec;
    use crate::key::BucketKey;
    use crate::{ManualClock, MemoryLimiter};
    use std::net::{IpAddr, Ipv4Addr};

    const T0: u64 = 19_675 * 86_400_000;

    fn spec(limit: u64, secs: u64) -> RateSpec {
        RateSpec::new(limit, Duration::from_secs(secs)).unwrap()
    }

    fn lazy(prefix: &str) -> RedisLimiter {
        let cfg = RedisLimiterConfig {
            prefix: prefix.into(),
            ..RedisLimiterConfig::default()
        };
        RedisLimiter::connect_lazy("redis://127.0.0.1:1", cfg).unwrap()
    }

    #[test]
    fn key_names_carry_prefix_hash_tag_bucket_and_period() {
        let limiter = lazy("infergate");
        let ip = LimitCheck::new(
            BucketKey::ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))),
            spec(10, 60),
        );
        assert_eq!(
            limiter.key_name(&ip),
            "{infergate:rl}:ip:203.0.113.9:60000ms"
        );
        let endpoint = LimitCheck::new(
            BucketKey::endpoint(Arc::from("/v1:chat"), crate::Subject::Key(Arc::from("a:b"))),
            spec(5, 3_600),
        );
        assert_eq!(
            limiter.key_name(&endpoint),
            "{infergate:rl}:endpoint:/v1%3Achat:key:a%3Ab:3600000ms"
        );
        let other = lazy("staging:eu");
        assert_eq!(
            other.key_name(&ip),
            "{staging:eu:rl}:ip:203.0.113.9:60000ms"
        );
        // A lease's slots: the prefix and the key's name, no period.
        let lease = crate::Lease {
            key: BucketKey::new(
                crate::Dimension::Concurrency,
                crate::Subject::Key(Arc::from("k:1")),
            ),
            cap: 2,
            id: 7,
            ttl: std::time::Duration::from_secs(30),
            shadow: false,
        };
        let mut name = vec![b'x'];
        limiter.write_lease_key_name(&mut name, &lease);
        assert_eq!(name, b"{infergate:rl}:concurrency:key:k%3A1");
    }

    #[test]
    fn bad_settings_are_refused_without_io() {
        let bad = |cfg: RedisLimiterConfig, url: &str| {
            RedisLimiter::connect_lazy(url, cfg)
                .unwrap_err()
                .to_string()
        };
        let base = RedisLimiterConfig::default;
        let msg = bad(
            RedisLimiterConfig {
                prefix: "a{b}".into(),
                ..base()
            },
            "redis://127.0.0.1",
        );
        assert!(msg.contains("prefix"), "{msg}");
        let msg = bad(
            RedisLimiterConfig {
                pool_size: 0,
                ..base()
            },
            "redis://127.0.0.1",
        );
        assert!(msg.contains("pool"), "{msg}");
        let msg = bad(
            RedisLimiterConfig {
                timeout: Duration::ZERO,
                ..base()
            },
            "redis://127.0.0.1",
        );
        assert!(msg.contains("timeout"), "{msg}");
        let msg = bad(base(), "http://user:hunter2@127.0.0.1");
        assert!(msg.contains("invalid Redis URL"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        if !cfg!(feature = "tls") {
            let msg = bad(base(), "rediss://user:hunter2@127.0.0.1");
            assert!(msg.contains("`tls` feature"), "{msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        } else {
            // Skipping the certificate's name check is refused before any I/O.
            let msg = bad(base(), "rediss://user:hunter2@127.0.0.1/#insecure");
            assert!(msg.contains("#insecure"), "{msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    /// The script's yes/no answer on states no ordinary test reaches: counts
    /// and limits whose products overflow a double's exact range, long
    /// periods and arbitrary offsets. Each state is written straight into
    /// Redis, then one check decides; the expectation is window.rs itself.
    #[tokio::test]
    async fn script_arithmetic_is_exact_on_large_values() {
        let server = infergate_testkit::RedisServer::start();
        for layout in [Layout::Hashes, Layout::Counters] {
            arithmetic_is_exact_in(&server, layout).await;
        }
    }

    /// Both layouts: the script's limbs, and the counters layout's reading of the counts.
    async fn arithmetic_is_exact_in(server: &infergate_testkit::RedisServer, layout: Layout) {
        let clock = ManualClock::new(T0);
        let cfg = RedisLimiterConfig {
            layout,
            prefix: format!("exact-{layout:?}"),
            timeout: Duration::from_secs(5),
            clock: Some(Arc::new(clock.clone())),
            local_cache_capacity: 0,
            ..RedisLimiterConfig::default()
        };
        let limiter = RedisLimiter::connect(&server.url(), cfg).await.unwrap();
        let client = ::redis::Client::open(server.url()).unwrap();
        let mut raw = client.get_multiplexed_async_connection().await.unwrap();

        let mut seed = 0x0123_4567_89ab_cdefu64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 11) % n.max(1)
        };
        let periods = [1u64, 7, 3_600, 86_400, 365 * 86_400];
        // (period in seconds, previous, current, limit, elapsed ms)
        let mut cases: Vec<(u64, u64, u64, u64, u64)> = Vec::new();
        // Products a double cannot tell apart: with p a year and elapsed 1 ms,
        // prev * (p - 1) and slack * p are near 2^70 and differ by -1, 0 or 1.
        for secs in [86_400u64, 365 * 86_400] {
            let p = secs * 1_000;
            for cur in [0, 1 << 40] {
                // slack = limit - cur - 1
                cases.push((secs, p - 1, cur, cur + 1 + (p - 2), 1)); // +1: refused
                cases.push((secs, p, cur, cur + 1 + (p - 1), 1)); // equal: allowed
                cases.push((secs, p - 1, cur, cur + 1 + (p - 1), 1)); // -(p-1): allowed
                cases.push((secs, p + 1, cur, cur + 1 + p, 1)); // +1: refused
            }
        }
        for _ in 0..400 {
            let secs = periods[usize::try_from(next(5)).unwrap()];
            // Mostly limits near the counts, so answers fall on both sides.
            let magnitude = 1u64 << next(50);
            let previous = next(magnitude) + 1;
            let current = next(magnitude);
            let limit = match next(4) {
                0 => u64::MAX,
                1 => current + 1 + next(previous + 1),
                _ => current + 1 + previous - next(previous / 2 + 1).min(previous),
            };
            cases.push((secs, previous, current, limit, next(secs * 1_000)));
        }

        let mut allowed = [0usize; 2];
        let mut last = T0;
        for (round, &(secs, previous, current, limit, elapsed)) in cases.iter().enumerate() {
            let p = secs * 1_000;
            // On the period's grid, as every stored start is, and after the previous round's
            // instant: the counters layout never steps back in time.
            let start = (last + 1).div_ceil(p) * p + next(3) * p;
            let now = start + elapsed;
            last = now;
            clock.set(now);
            // Every third round charges a token-sized cost: `cur + cost` against the same
            // limit moves the answer by exactly `cost - 1`, so take it off the current count.
            let cost = if round % 3 == 2 {
                1 + current.min(1 << 20) / 2
            } else {
                1
            };
            let current = current - (cost - 1);
            let check = LimitCheck::new(
                BucketKey::key(Arc::from(format!("r{round}"))),
                RateSpec {
                    limit,
                    period: Duration::from_secs(secs),
                },
            )
            .costing(cost);
            let key = limiter.key_name(&check);
            let mut write = ::redis::pipe();
            match layout {
                Layout::Hashes => {
                    write
                        .cmd("HSET")
                        .arg(&key)
                        .arg("s")
                        .arg(start)
                        .arg("c")
                        .arg(current)
                        .arg("p")
                        .arg(previous);
                }
                Layout::Counters => {
                    write
                        .cmd("SET")
                        .arg(format!("{key}:{start}"))
                        .arg(current)
                        .cmd("SET")
                        .arg(format!("{key}:{}", start - p))
                        .arg(previous);
                }
            }
            let _: () = write.query_async(&mut raw).await.unwrap();

            let window = Window {
                start_ms: start,
                current,
                previous,
            };
            let view = View::of(&window, now, check.grid());
            let want_allowed = view.admits(limit, cost);
            let want = if want_allowed {
                view.consumed(cost).status(&check, false)
            } else {
                view.status(&check, true)
            };
            let got = limiter.check(std::slice::from_ref(&check)).await.unwrap();
            assert_eq!(
                (got.allowed, got.statuses[0]),
                (want_allowed, want),
                "p={p} prev={previous} cur={current} limit={limit} elapsed={}",
                now - start
            );
            allowed[usize::from(want_allowed)] += 1;
        }
        // Both answers were exercised.
        assert!(allowed[0] > 50 && allowed[1] > 50, "{allowed:?}");

        // The memory backend agrees on an ordinary sequence too (sanity check
        // that the harness above compares like with like).
        let memory = MemoryLimiter::new(Arc::new(clock.clone()));
        let check = LimitCheck::new(BucketKey::key(Arc::from("plain")), spec(3, 60));
        for _ in 0..5 {
            assert_eq!(
                limiter.check(std::slice::from_ref(&check)).await.unwrap(),
                memory.check_now(std::slice::from_ref(&check))
            );
        }
    }
}
