//! Prometheus metrics. One registry per application instance (not the global default), so several
//! gateways in one test process do not share counters. Labels are bounded: route *templates*,
//! methods from a fixed set, status codes, and small enums — never a path, key or address.

use std::time::Duration;

use actix_web::HttpMessage;
use infergate_service::metrics::{HttpMetrics, LATENCY_BUCKETS, must};
use std::sync::{Arc, OnceLock};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
};

/// What the gateway itself adds is usually well under a millisecond; a first-time argon2
/// verification or a slow limiter backend moves it into the tens of milliseconds.
const ADDED_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Label values created at startup, so rates and alerts see a zero instead of no series at all.
const AUTH_REASONS: &[&str] = &[
    "missing",
    "malformed",
    "unknown",
    "expired",
    "revoked",
    "forbidden",
];
const DIMENSIONS: &[&str] = &["ip", "key", "role", "endpoint"];
const UPSTREAM_ERROR_KINDS: &[&str] = &["connect", "timeout", "protocol", "body", "idle_timeout"];

#[derive(Clone)]
pub struct Metrics {
    /// Requests, latency, in flight and build info, shared with every service.
    pub http: HttpMetrics,
    pub auth_failures: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub upstream_latency: HistogramVec,
    pub gateway_added: HistogramVec,
    pub rate_decisions: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub key_cache: IntCounterVec,
    pub argon2: IntCounter,
    pub verify_busy: IntCounter,
    pub limiter_backend_errors: IntCounterVec,
    pub limiter_fallback: IntCounter,
    pub limiter_breaker: IntGaugeVec,
    pub limiter_breaker_opened: IntCounter,
    pub limiter_backend_calls: IntCounter,
    /// Token reservations, settlements, refusals and streams cut ([`crate::metering`]).
    pub tokens: TokenMetrics,
    /// The children the hot path counts into, looked up in their vectors once, on first use
    /// (a lookup hashes the labels and reads a lock every worker shares).
    children: Arc<Children>,
}

/// See [`Metrics::children`]: `rate_decisions` by dimension and outcome, and per route-table
/// index the `upstream_latency` and `gateway_added` histograms.
#[derive(Default)]
struct Children {
    decisions: [[OnceLock<IntCounter>; 2]; 7],
    upstream_latency: Vec<OnceLock<Histogram>>,
    gateway_added: Vec<OnceLock<Histogram>>,
}

/// Observes `value` in route `index`'s child of `vec`, looked up once into `cells`; a request
/// without a route index (none reaches here today) is looked up by its template.
fn observe_route(
    cells: &[OnceLock<Histogram>],
    vec: &HistogramVec,
    index: Option<usize>,
    template: &str,
    value: f64,
) {
    match index.and_then(|i| cells.get(i)) {
        Some(cell) => cell
            .get_or_init(|| vec.with_label_values(&[template]))
            .observe(value),
        None => vec.with_label_values(&[template]).observe(value),
    }
}

/// The index of a dimension in [`Children::decisions`]; exhaustive, so a new dimension is a
/// compile error here rather than an index out of bounds.
fn dimension_index(d: infergate_ratelimit::Dimension) -> usize {
    use infergate_ratelimit::Dimension::*;
    match d {
        Ip => 0,
        Key => 1,
        Role => 2,
        Endpoint => 3,
        Tokens => 4,
        TokensDaily => 5,
        Concurrency => 6,
    }
}

/// The metrics of token limits and concurrency caps. Labels: the metered `operation` (six names,
/// `chat_completions` … `inference_batch`: route *templates* lump the OpenAI paths into `/v1/*`),
/// the role (three), the limit (`tokens`, `tokens_daily`, `concurrency`) — never a key id.
#[derive(Clone)]
pub struct TokenMetrics {
    pub reserved: IntCounterVec,
    pub consumed: IntCounterVec,
    pub refunded: IntCounterVec,
    pub refusals: IntCounterVec,
    pub shadow_refusals: IntCounterVec,
    pub streams_cut: IntCounter,
    pub settlement_retries: IntCounter,
    pub settlements: IntCounter,
    pub settlements_dropped: IntCounter,
    pub in_flight: prometheus::IntGauge,
}

pub const METERED_ROUTES: &[&str] = &[
    "chat_completions",
    "completions",
    "responses",
    "embeddings",
    "inference",
    "inference_batch",
];
const ROLES: &[&str] = &["admin", "user", "readonly"];
const BUDGET_LIMITS: &[&str] = &["tokens", "tokens_daily", "concurrency"];

impl TokenMetrics {
    fn new(registry: &prometheus::Registry) -> Self {
        let per_route = |name: &str, help: &str| {
            must(IntCounterVec::new(
                Opts::new(name, help),
                &["operation", "role"],
            ))
        };
        let t = Self {
            reserved: per_route(
                "tokens_reserved_total",
                "Tokens reserved before requests were admitted, by metered operation and role",
            ),
            consumed: per_route(
                "tokens_consumed_total",
                "Tokens charged once requests settled (usage, or the metered count)",
            ),
            refunded: per_route(
                "tokens_refunded_total",
                "Reserved tokens given back at settlement",
            ),
            refusals: must(IntCounterVec::new(
                Opts::new(
                    "budget_refusals_total",
                    "Requests refused by a token limit or concurrency cap, by limit",
                ),
                &["limit"],
            )),
            shadow_refusals: must(IntCounterVec::new(
                Opts::new(
                    "budget_shadow_refusals_total",
                    "Requests a shadow limit would have refused (and let through), by limit",
                ),
                &["limit"],
            )),
            streams_cut: must(IntCounter::new(
                "streams_cut_total",
                "Streams ended by the gateway because the upstream produced more than reserved",
            )),
            settlement_retries: must(IntCounter::new(
                "token_settlement_retries_total",
                "Settlements retried because the shared limiter could not be reached",
            )),
            settlements: must(IntCounter::new(
                "token_settlements_total",
                "Reservations settled (real cost charged, the rest given back, the slot released)",
            )),
            settlements_dropped: must(IntCounter::new(
                "token_settlements_dropped_total",
                "Settlements given up after every retry failed",
            )),
            in_flight: must(prometheus::IntGauge::new(
                "budgeted_requests_in_flight",
                "Requests holding a reservation or concurrency slot on this replica",
            )),
        };
        for route in METERED_ROUTES {
            for role in ROLES {
                for c in [&t.reserved, &t.consumed, &t.refunded] {
                    c.with_label_values(&[route, role]);
                }
            }
        }
        for limit in BUDGET_LIMITS {
            t.refusals.with_label_values(&[limit]);
            t.shadow_refusals.with_label_values(&[limit]);
        }
        for c in [
            Box::new(t.reserved.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(t.consumed.clone()),
            Box::new(t.refunded.clone()),
            Box::new(t.refusals.clone()),
            Box::new(t.shadow_refusals.clone()),
            Box::new(t.streams_cut.clone()),
            Box::new(t.settlement_retries.clone()),
            Box::new(t.settlements.clone()),
            Box::new(t.settlements_dropped.clone()),
            Box::new(t.in_flight.clone()),
        ] {
            must(registry.register(c));
        }
        t
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let http = HttpMetrics::new("infergate", env!("CARGO_PKG_VERSION"));
        let auth_failures = must(IntCounterVec::new(
            Opts::new("auth_failures_total", "Refused credentials by reason"),
            &["reason"],
        ));
        let rate_limited = must(IntCounterVec::new(
            Opts::new(
                "ratelimit_rejections_total",
                "Requests refused by a rate limit, by dimension",
            ),
            &["dimension"],
        ));
        let upstream_latency = must(HistogramVec::new(
            HistogramOpts::new(
                "upstream_duration_seconds",
                "Upstream time until response headers",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        ));
        let gateway_added = must(HistogramVec::new(
            HistogramOpts::new(
                "gateway_added_seconds",
                "Latency the gateway adds to proxied requests (total minus upstream time), by \
                 route template",
            )
            .buckets(ADDED_BUCKETS.to_vec()),
            &["route"],
        ));
        let rate_decisions = must(IntCounterVec::new(
            Opts::new(
                "ratelimit_decisions_total",
                "Rate-limit decisions by dimension (the tightest limit) and outcome \
                 (allowed, denied)",
            ),
            &["dimension", "outcome"],
        ));
        let upstream_errors = must(IntCounterVec::new(
            Opts::new("upstream_errors_total", "Upstream failures by kind"),
            &["kind"],
        ));
        let key_cache = must(IntCounterVec::new(
            Opts::new(
                "key_cache_lookups_total",
                "Verified-key cache lookups by result (hit, miss, negative_hit)",
            ),
            &["result"],
        ));
        let argon2 = must(IntCounter::new(
            "argon2_verifications_total",
            "argon2id verifications run",
        ));
        let verify_busy = must(IntCounter::new(
            "key_verifications_refused_busy_total",
            "Key verifications refused because too many were queued",
        ));
        let limiter_backend_errors = must(IntCounterVec::new(
            Opts::new(
                "ratelimit_backend_errors_total",
                "Shared rate-limit backend failures by kind (error, timeout)",
            ),
            &["kind"],
        ));
        let limiter_fallback = must(IntCounter::new(
            "ratelimit_fallback_decisions_total",
            "Rate-limit decisions made without the shared backend (failure mode)",
        ));
        let limiter_breaker = must(IntGaugeVec::new(
            Opts::new(
                "ratelimit_breaker_state",
                "Circuit breaker in front of the shared backend (1 = current state)",
            ),
            &["state"],
        ));
        let limiter_backend_calls = must(IntCounter::new(
            "ratelimit_backend_calls_total",
            "Calls sent to the shared rate-limit backend, each one round trip",
        ));
        let limiter_breaker_opened = must(IntCounter::new(
            "ratelimit_breaker_opened_total",
            "Times the breaker in front of the shared backend opened",
        ));
        for reason in AUTH_REASONS {
            auth_failures.with_label_values(&[reason]);
        }
        for d in DIMENSIONS {
            rate_limited.with_label_values(&[d]);
            for outcome in ["allowed", "denied"] {
                rate_decisions.with_label_values(&[d, outcome]);
            }
        }
        for kind in UPSTREAM_ERROR_KINDS {
            upstream_errors.with_label_values(&[kind]);
        }
        for result in ["hit", "miss", "negative_hit"] {
            key_cache.with_label_values(&[result]);
        }
        for kind in ["error", "timeout"] {
            limiter_backend_errors.with_label_values(&[kind]);
        }
        for c in [
            Box::new(auth_failures.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(rate_limited.clone()),
            Box::new(upstream_latency.clone()),
            Box::new(gateway_added.clone()),
            Box::new(rate_decisions.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(key_cache.clone()),
            Box::new(argon2.clone()),
            Box::new(verify_busy.clone()),
            Box::new(limiter_backend_errors.clone()),
            Box::new(limiter_fallback.clone()),
            Box::new(limiter_breaker.clone()),
            Box::new(limiter_breaker_opened.clone()),
            Box::new(limiter_backend_calls.clone()),
        ] {
            must(http.registry().register(c));
        }
        let tokens = TokenMetrics::new(http.registry());
        Self {
            tokens,
            http,
            auth_failures,
            rate_limited,
            upstream_latency,
            gateway_added,
            rate_decisions,
            upstream_errors,
            key_cache,
            argon2,
            verify_busy,
            limiter_backend_errors,
            limiter_fallback,
            limiter_breaker,
            limiter_breaker_opened,
            limiter_backend_calls,
            children: Arc::default(),
        }
    }

    /// Sizes the per-route children for a route table of `routes` entries.
    pub fn with_routes(mut self, routes: usize) -> Self {
        self.children = Arc::new(Children {
            upstream_latency: (0..routes).map(|_| OnceLock::new()).collect(),
            gateway_added: (0..routes).map(|_| OnceLock::new()).collect(),
            ..Children::default()
        });
        self
    }

    /// Records a proxied request's upstream time (to response headers) under its route.
    pub fn observe_upstream(&self, route: Option<usize>, template: &str, elapsed: Duration) {
        observe_route(
            &self.children.upstream_latency,
            &self.upstream_latency,
            route,
            template,
            elapsed.as_secs_f64(),
        );
    }

    /// Counts one rate-limit decision under the dimension of its tightest status (the refusing
    /// one when denied). A decision with no status (no checks) is not counted.
    pub fn rate_decision(
        &self,
        tightest: Option<&infergate_ratelimit::LimitStatus>,
        allowed: bool,
    ) {
        if let Some(s) = tightest {
            self.children.decisions[dimension_index(s.dimension)][usize::from(allowed)]
                .get_or_init(|| {
                    let outcome = if allowed { "allowed" } else { "denied" };
                    self.rate_decisions
                        .with_label_values(&[s.dimension.as_str(), outcome])
                })
                .inc();
        }
    }

    /// Records the gateway's own share of a proxied request's latency: `total` (until response
    /// headers) minus the upstream time the proxy left in the request. Local routes and requests
    /// refused before the proxy have no upstream time and are not recorded.
    pub fn observe_added(&self, route: &str, total: Duration, req: &actix_web::HttpRequest) {
        let proxied = req
            .extensions()
            .get::<crate::pipeline::RequestCtx>()
            .and_then(|c| Some((c.upstream_time?, c.route)));
        if let Some((upstream, index)) = proxied {
            observe_route(
                &self.children.gateway_added,
                &self.gateway_added,
                index,
                route,
                total.saturating_sub(upstream).as_secs_f64(),
            );
        }
    }

    /// Brings the key verifier's counters (plain atomics in a framework-free crate) into the
    /// registry; called at scrape time.
    pub fn sync_verifier(&self, stats: &infergate_keystore::VerifierStats) {
        use std::sync::atomic::Ordering::Relaxed;
        let set = |c: &IntCounter, v: u64| {
            let cur = c.get();
            if v > cur {
                c.inc_by(v - cur);
            }
        };
        set(
            &self.key_cache.with_label_values(&["hit"]),
            stats.cache_hits.load(Relaxed),
        );
        set(
            &self.key_cache.with_label_values(&["miss"]),
            stats.cache_misses.load(Relaxed),
        );
        set(
            &self.key_cache.with_label_values(&["negative_hit"]),
            stats.negative_hits.load(Relaxed),
        );
        set(&self.argon2, stats.argon2_verifications.load(Relaxed));
        set(&self.verify_busy, stats.rejected_busy.load(Relaxed));
    }

    /// Brings the resilient limiter's counters and breaker state into the registry (scrape time).
    pub fn sync_limiter(&self, r: &infergate_ratelimit::resilient::ResilientLimiter) {
        use std::sync::atomic::Ordering::Relaxed;
        let set = |c: &IntCounter, v: u64| {
            let cur = c.get();
            if v > cur {
                c.inc_by(v - cur);
            }
        };
        set(
            &self.limiter_backend_errors.with_label_values(&["error"]),
            r.stats.backend_errors.load(Relaxed),
        );
        set(
            &self.limiter_backend_errors.with_label_values(&["timeout"]),
            r.stats.backend_timeouts.load(Relaxed),
        );
        set(
            &self.limiter_fallback,
            r.stats.fallback_decisions.load(Relaxed),
        );
        set(
            &self.limiter_breaker_opened,
            r.stats.breaker_opened.load(Relaxed),
        );
        set(&self.limiter_backend_calls, r.backend_calls());
        let current = r.breaker_state();
        for s in ["closed", "open", "half_open"] {
            self.limiter_breaker
                .with_label_values(&[s])
                .set(i64::from(s == current));
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        self.http.render()
    }
}
