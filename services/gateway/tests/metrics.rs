//! Metrics, end to end over HTTP: every event the gateway counts moves its series when driven by
//! real requests; label cardinality stays bounded whatever paths, methods and keys clients send;
//! no key, key id or secret reaches `/metrics`; and the Grafana dashboard and Prometheus alert rules
//! in `deploy/monitoring/` name only metrics a live gateway exposes.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use awc::http::Method;
use chrono::Utc;
use infergate_keystore::format;
use infergate_policy::Role;
use infergate_ratelimit::{
    Decision, LimitCheck, LimitStatus, ManualClock, MemoryLimiter, RateLimitError, RateLimiter,
    SystemClock,
};

use helpers::*;
use infergate_testkit::prometheus::Scrape;

// ------------------------------------------------------------------------------------------------
// Reading the exposition (the parser is testkit's)

async fn scrape(app: &TestApp) -> Scrape {
    let r = app.get("/metrics", Some(ADMIN_KEY)).await;
    assert_eq!(r.status, 200, "/metrics: {}", r.text());
    Scrape::parse(r.text())
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A shared rate-limit backend that is down, like Redis refusing connections.
#[derive(Debug)]
struct DownBackend;

#[async_trait::async_trait]
impl RateLimiter for DownBackend {
    async fn check(&self, _: &[LimitCheck]) -> Result<Decision, RateLimitError> {
        Err(RateLimitError::Unavailable("connection refused".into()))
    }

    async fn peek(&self, _: &LimitCheck) -> Result<LimitStatus, RateLimitError> {
        Err(RateLimitError::Unavailable("connection refused".into()))
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

const INFERENCE: &str = r#"{"prompt":"hello","model":"echo-1"}"#;

// ------------------------------------------------------------------------------------------------
// Each event moves its series

#[actix_web::test]
async fn requests_latency_and_build_info_are_recorded_by_route_method_and_status() {
    let app = spawn_app(&[]).await;
    let before = scrape(&app).await;
    assert_eq!(
        before.get(
            "infergate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0,
        "{}",
        before.text
    );
    for _ in 0..3 {
        assert_eq!(app.get("/api/status", Some(READONLY_KEY)).await.status, 200);
    }
    assert_eq!(app.get("/nowhere", Some(USER_KEY)).await.status, 404);
    let r = app
        .send(app.client.delete(app.url("/api/status")), None)
        .await;
    assert_eq!(r.status, 405);
    let after = scrape(&app).await;
    let moved =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let status = [
        ("route", "/api/status"),
        ("method", "GET"),
        ("status", "200"),
    ];
    assert_eq!(moved("infergate_http_requests_total", &status), 3.0);
    assert_eq!(
        moved(
            "infergate_http_requests_total",
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(
        moved(
            "infergate_http_requests_total",
            &[
                ("route", "/api/status"),
                ("method", "DELETE"),
                ("status", "405")
            ]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "infergate_http_request_duration_seconds_count",
            &[("route", "/api/status")]
        ),
        4.0
    );
    assert!(after.has(
        "infergate_http_request_duration_seconds_bucket",
        &[("route", "/api/status"), ("le", "+Inf")]
    ));
    // Local routes have no upstream, so no gateway-added sample.
    assert!(!after.has(
        "infergate_gateway_added_seconds_count",
        &[("route", "/api/status")]
    ));
}

#[actix_web::test]
async fn gateway_added_latency_is_total_minus_upstream_time() {
    let app = spawn_app(&[]).await;
    let delay = Duration::from_millis(400);
    for _ in 0..2 {
        let req = app
            .client
            .post(app.url("/inference"))
            .insert_header(("X-API-Key", USER_KEY))
            .insert_header(("Content-Type", "application/json"))
            .insert_header(("X-Dev-Delay-Ms", delay.as_millis().to_string()));
        let r = app.send(req, Some(INFERENCE)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let m = scrape(&app).await;
    let route = [("route", "/inference")];
    assert_eq!(m.get("infergate_gateway_added_seconds_count", &route), 2.0);
    assert_eq!(
        m.get("infergate_upstream_duration_seconds_count", &route),
        2.0
    );
    let total = m.get("infergate_http_request_duration_seconds_sum", &route);
    let upstream = m.get("infergate_upstream_duration_seconds_sum", &route);
    let added = m.get("infergate_gateway_added_seconds_sum", &route);
    assert!(upstream >= 2.0 * delay.as_secs_f64(), "upstream {upstream}");
    assert!(total >= upstream, "total {total} < upstream {upstream}");
    assert!(added >= 0.0);
    // Measured at slightly different instants, so allow a millisecond per request.
    assert!(
        (total - upstream - added).abs() < 0.002,
        "added {added} is not total {total} minus upstream {upstream}"
    );
    assert!(
        added < delay.as_secs_f64(),
        "the upstream delay leaked into added: {added}"
    );
    assert!(m.has(
        "infergate_gateway_added_seconds_bucket",
        &[("route", "/inference"), ("le", "0.0001")]
    ));
}

#[actix_web::test]
async fn in_flight_counts_requests_being_served() {
    let app = spawn_app(&[]).await;
    let idle = scrape(&app).await;
    // The scrape itself is in flight while it renders.
    assert_eq!(idle.get("infergate_http_requests_in_flight", &[]), 1.0);

    let slow = {
        let req = app
            .client
            .post(app.url("/inference"))
            .insert_header(("X-API-Key", USER_KEY))
            .insert_header(("Content-Type", "application/json"))
            .insert_header(("X-Dev-Delay-Ms", "1500"));
        actix_web::rt::spawn(async move { req.send_body(INFERENCE).await.map(|r| r.status()) })
    };
    let started = Instant::now();
    loop {
        let m = scrape(&app).await;
        if m.get("infergate_http_requests_in_flight", &[]) == 2.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the slow request never showed as in flight: {}",
            m.text
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(slow.await.unwrap().unwrap().as_u16(), 200);
    let done = scrape(&app).await;
    assert_eq!(done.get("infergate_http_requests_in_flight", &[]), 1.0);
}

#[actix_web::test]
async fn auth_failures_are_counted_by_reason() {
    let (app, store) = app_with_store(&[]).await;
    let (expired, _) = mint(&store, Role::User, |r| {
        r.expires_at = Some(Utc::now() - chrono::Duration::hours(1));
    })
    .await;
    let (revoked, _) = mint(&store, Role::User, |r| {
        r.revoked_at = Some(Utc::now() - chrono::Duration::minutes(1));
    })
    .await;
    let before = scrape(&app).await;

    // missing
    assert_eq!(app.get("/protected", None).await.status, 401);
    // malformed: not a bearer scheme
    let req = app
        .client
        .get(app.url("/protected"))
        .insert_header(("Authorization", "Basic dXNlcjpwYXNz"));
    assert_eq!(app.send(req, None).await.status, 401);
    // unknown
    assert_eq!(
        app.get("/protected", Some("guess-0000000000000000"))
            .await
            .status,
        401
    );
    // expired, revoked
    assert_eq!(app.get("/protected", Some(&expired)).await.status, 401);
    assert_eq!(app.get("/protected", Some(&revoked)).await.status, 401);
    // forbidden: a user key on the metrics endpoint
    assert_eq!(app.get("/metrics", Some(USER_KEY)).await.status, 403);

    let after = scrape(&app).await;
    for reason in [
        "missing",
        "malformed",
        "unknown",
        "expired",
        "revoked",
        "forbidden",
    ] {
        let labels = [("reason", reason)];
        assert_eq!(
            after.get("infergate_auth_failures_total", &labels)
                - before.get("infergate_auth_failures_total", &labels),
            1.0,
            "{reason}: {}",
            after.text
        );
    }
}

#[actix_web::test]
async fn key_cache_hits_misses_and_argon2_are_counted() {
    let (app, store) = app_with_store(&[]).await;
    let (key, _) = mint(&store, Role::User, |_| {}).await;
    let before = scrape(&app).await;
    for _ in 0..5 {
        assert_eq!(app.get("/protected", Some(&key)).await.status, 200);
    }
    let after = scrape(&app).await;
    let moved =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    assert_eq!(
        moved("infergate_argon2_verifications_total", &[]),
        1.0,
        "argon2 runs once per key: {}",
        after.text
    );
    assert!(moved("infergate_key_cache_lookups_total", &[("result", "miss")]) >= 1.0);
    assert!(moved("infergate_key_cache_lookups_total", &[("result", "hit")]) >= 4.0);
    // A wrong secret for the same id is remembered as a failure.
    let other = format::generate("igk").unwrap();
    let id = key.split('_').nth(1).unwrap();
    let forged = format::with_checksum(&format!("igk_{id}_{}", other.secret()));
    for _ in 0..2 {
        assert_eq!(app.get("/protected", Some(&forged)).await.status, 401);
    }
    let last = scrape(&app).await;
    assert!(
        last.get(
            "infergate_key_cache_lookups_total",
            &[("result", "negative_hit")]
        ) >= 1.0,
        "{}",
        last.text
    );
    assert_eq!(
        last.get("infergate_key_verifications_refused_busy_total", &[]),
        0.0
    );
}

#[actix_web::test]
async fn rate_limit_decisions_are_counted_by_dimension_and_outcome() {
    // A stopped clock, so no window boundary falls inside the test.
    let app = spawn_app_with(
        &[
            ("RATE_LIMIT_AUTHENTICATED", "3/minute"),
            ("RATE_LIMIT_DEFAULT", "5/minute"),
            // The guesses come through a trusted proxy from another address, so the admin's
            // scrapes (from 127.0.0.1 itself) are not refused with the guesser's spent budget.
            ("INFERGATE_TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
        Opts {
            clock: Some(ManualClock::new(1_700_000_000_000)),
            ..Default::default()
        },
    )
    .await;
    let before = scrape(&app).await;
    for i in 0..4 {
        let r = app.get("/protected", Some(USER_KEY)).await;
        assert_eq!(r.status, if i < 3 { 200 } else { 429 }, "request {i}");
    }
    // Key guessing exhausts the IP's anonymous budget.
    let mut refused = 0;
    for i in 0..8 {
        let req = app
            .client
            .get(app.url("/protected"))
            .insert_header(("X-API-Key", format!("guess-{i:016}")))
            .insert_header(("X-Forwarded-For", "203.0.113.50"));
        let r = app.send(req, None).await;
        if r.status == 429 {
            refused += 1;
        }
    }
    assert!(refused >= 1);
    let after = scrape(&app).await;
    let moved =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let decisions = "infergate_ratelimit_decisions_total";
    assert_eq!(
        moved(decisions, &[("dimension", "key"), ("outcome", "allowed")]),
        3.0,
        "{}",
        after.text
    );
    assert_eq!(
        moved(decisions, &[("dimension", "key"), ("outcome", "denied")]),
        1.0
    );
    // The scrape is counted against the (tighter) /metrics endpoint limit.
    assert_eq!(
        moved(
            decisions,
            &[("dimension", "endpoint"), ("outcome", "allowed")]
        ),
        1.0
    );
    assert_eq!(
        moved(decisions, &[("dimension", "ip"), ("outcome", "allowed")]),
        5.0,
        "guesses within the anonymous budget"
    );
    assert!(moved(decisions, &[("dimension", "ip"), ("outcome", "denied")]) >= 1.0);
    assert_eq!(
        moved(
            "infergate_ratelimit_rejections_total",
            &[("dimension", "key")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "infergate_ratelimit_rejections_total",
            &[("dimension", "ip")]
        ),
        f64::from(refused)
    );
    assert!(
        moved(
            "infergate_http_requests_total",
            &[("route", "/protected"), ("status", "429")]
        ) >= 2.0
    );
}

#[actix_web::test]
async fn redis_errors_fallback_and_breaker_state_are_exposed() {
    let app = spawn_app_with(
        &[("RATE_LIMIT_FAILURE_MODE", "local")],
        Opts {
            shared_limiter: Some(Arc::new(DownBackend)),
            ..Default::default()
        },
    )
    .await;
    for _ in 0..5 {
        // The local failure mode decides: requests keep being served.
        assert_eq!(app.get("/protected", Some(USER_KEY)).await.status, 200);
    }
    let m = scrape(&app).await;
    assert!(
        m.get(
            "infergate_ratelimit_backend_errors_total",
            &[("kind", "error")]
        ) >= 3.0,
        "{}",
        m.text
    );
    assert!(m.get("infergate_ratelimit_fallback_decisions_total", &[]) >= 5.0);
    assert!(m.get("infergate_ratelimit_breaker_opened_total", &[]) >= 1.0);
    assert_eq!(
        m.get("infergate_ratelimit_breaker_state", &[("state", "open")]),
        1.0
    );
    assert_eq!(
        m.get("infergate_ratelimit_breaker_state", &[("state", "closed")]),
        0.0
    );
}

#[actix_web::test]
async fn a_healthy_shared_backend_shows_a_closed_breaker() {
    let app = spawn_app_with(
        &[],
        Opts {
            shared_limiter: Some(Arc::new(MemoryLimiter::new(Arc::new(SystemClock)))),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(app.get("/protected", Some(USER_KEY)).await.status, 200);
    let m = scrape(&app).await;
    assert_eq!(
        m.get("infergate_ratelimit_breaker_state", &[("state", "closed")]),
        1.0
    );
    assert_eq!(m.get("infergate_ratelimit_breaker_opened_total", &[]), 0.0);
    assert_eq!(
        m.get("infergate_ratelimit_fallback_decisions_total", &[]),
        0.0
    );
    assert_eq!(m.get("infergate_ratelimit_backend_errors_total", &[]), 0.0);
}

/// Every call to the shared Redis limiter is counted (operators read round trips per request
/// from it, and so does `make bench`): one per limited request.
#[actix_web::test]
async fn calls_to_the_shared_backend_are_counted() {
    use infergate_ratelimit::redis::{RedisLimiter, RedisLimiterConfig};
    let server = infergate_testkit::RedisServer::start();
    let cfg = RedisLimiterConfig {
        timeout: Duration::from_secs(30),
        ..RedisLimiterConfig::default()
    };
    let redis = RedisLimiter::connect(&server.url(), cfg).await.unwrap();
    let app = spawn_app_with(
        &[],
        Opts {
            shared_limiter: Some(Arc::new(redis)),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(app.get("/protected", Some(USER_KEY)).await.status, 200);
    let before = scrape(&app)
        .await
        .get("infergate_ratelimit_backend_calls_total", &[]);
    assert!(before >= 1.0, "{before}");
    for _ in 0..5 {
        assert_eq!(app.get("/protected", Some(USER_KEY)).await.status, 200);
    }
    let after = scrape(&app)
        .await
        .get("infergate_ratelimit_backend_calls_total", &[]);
    // Five requests, and the second scrape's own limit check.
    assert!(
        (5.0..=6.0).contains(&(after - before)),
        "{before} -> {after}"
    );
}

#[actix_web::test]
async fn unreachable_upstream_counts_a_connect_error() {
    let app = spawn_app_with(
        &[],
        Opts {
            upstream_url: Some(format!("http://127.0.0.1:{}", dead_port())),
            ..Default::default()
        },
    )
    .await;
    let r = app.post("/inference", Some(USER_KEY), INFERENCE).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let m = scrape(&app).await;
    assert_eq!(
        m.get("infergate_upstream_errors_total", &[("kind", "connect")]),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.get(
            "infergate_http_requests_total",
            &[("route", "/inference"), ("status", "502")]
        ),
        1.0
    );
    assert_eq!(
        m.get(
            "infergate_upstream_duration_seconds_count",
            &[("route", "/inference")]
        ),
        1.0
    );
    assert_eq!(
        m.get(
            "infergate_gateway_added_seconds_count",
            &[("route", "/inference")]
        ),
        1.0
    );
}

#[actix_web::test]
async fn slow_upstream_counts_a_timeout() {
    let app = spawn_app(&[("INFERGATE_UPSTREAM_TIMEOUT_SECONDS", "1")]).await;
    let req = app
        .client
        .post(app.url("/inference"))
        .insert_header(("X-API-Key", USER_KEY))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("X-Dev-Delay-Ms", "3000"));
    let r = app.send(req, Some(INFERENCE)).await;
    assert_eq!(r.status, 504, "{}", r.text());
    let m = scrape(&app).await;
    assert_eq!(
        m.get("infergate_upstream_errors_total", &[("kind", "timeout")]),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.get(
            "infergate_http_requests_total",
            &[("route", "/inference"), ("status", "504")]
        ),
        1.0
    );
}

// ------------------------------------------------------------------------------------------------
// Bounded labels, no secrets

/// One round of hostile traffic: random paths (unmatched, under proxied and local wildcards),
/// random non-standard methods, random query strings, request ids and keys. Returns every random
/// string sent.
async fn hostile_round(app: &TestApp, n: usize) -> Vec<String> {
    let mut sent = Vec::new();
    for i in 0..n {
        let id = uuid::Uuid::new_v4().to_string();
        let path = match i % 6 {
            0 => format!("/random/{id}"),
            1 => format!("/v1/{id}"),
            2 => format!("/{id}"),
            3 => format!("/docs/{id}"),
            4 => format!("/v1/models/{id}?q={id}"),
            _ => format!("/health/{id}"),
        };
        let method = match (i / 18) % 5 {
            0 => Method::GET,
            1 => Method::POST,
            2 => Method::DELETE,
            3 => Method::from_bytes(format!("X{}", &id[..8].to_uppercase()).as_bytes()).unwrap(),
            _ => Method::PUT,
        };
        let mut req = app
            .client
            .request(method, app.url(&path))
            .insert_header(("X-Request-ID", id.as_str()));
        req = match (i / 6) % 3 {
            0 => req.insert_header(("X-API-Key", USER_KEY)),
            1 => req.insert_header(("X-API-Key", format!("guess-{id}"))),
            _ => req,
        };
        let r = app.send(req, None).await;
        assert!(
            (200..600).contains(&r.status),
            "{path}: status {}",
            r.status
        );
        sent.push(id);
    }
    sent
}

#[actix_web::test]
async fn label_cardinality_stays_bounded_under_random_paths_methods_and_keys() {
    let app = spawn_app(&[("RATE_LIMIT_DEFAULT", "100000/minute")]).await;
    // Every combination of path, key and method once (6 × 3 × 5), then scrape twice so the
    // scrapes' own series exist too.
    let mut sent = hostile_round(&app, 90).await;
    scrape(&app).await;
    let first = scrape(&app).await;
    sent.extend(hostile_round(&app, 410).await);
    let last = scrape(&app).await;

    let (a, b) = (first.label_sets(), last.label_sets());
    eprintln!(
        "{} label sets ({} samples) after 500 random requests",
        b.len(),
        last.samples.len()
    );
    let grown: Vec<_> = b.difference(&a).collect();
    assert!(
        grown.is_empty(),
        "500 random requests created new series: {grown:#?}"
    );
    // Most are created at startup so alerts see zeros: among them 54 token series (6 metered
    // routes × 3 roles × reserved/consumed/refunded).
    assert!(
        b.len() < 160,
        "{} label sets is not a small bound:\n{}",
        b.len(),
        last.text
    );
    for id in &sent {
        assert!(!last.text.contains(id.as_str()), "{id} leaked into metrics");
    }
    let routes: BTreeSet<&str> = last
        .samples
        .iter()
        .filter_map(|s| s.labels.get("route").map(String::as_str))
        .collect();
    let templates: Vec<String> = app
        .state
        .routes
        .routes()
        .iter()
        .map(|r| r.template.to_string())
        .collect();
    for route in &routes {
        assert!(
            *route == "unmatched" || templates.iter().any(|t| t == route),
            "route label {route:?} is not a template"
        );
    }
    let methods: BTreeSet<&str> = last
        .samples
        .iter()
        .filter_map(|s| s.labels.get("method").map(String::as_str))
        .collect();
    assert!(methods.contains("_OTHER"), "{methods:?}");
    for m in &methods {
        assert!(
            [
                "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
                "_OTHER"
            ]
            .contains(m),
            "method label {m:?}"
        );
    }
    for s in &last.samples {
        if let Some(status) = s.labels.get("status") {
            assert!(
                status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit()),
                "{status}"
            );
        }
        for key in s.labels.keys() {
            assert!(
                ![
                    "path",
                    "ip",
                    "client_ip",
                    "key",
                    "key_id",
                    "api_key",
                    "user"
                ]
                .contains(&key.as_str()),
                "label {key} on {}",
                s.name
            );
        }
    }
}

#[actix_web::test]
async fn no_key_key_id_or_secret_appears_in_metrics() {
    let (app, store) = app_with_store(&[]).await;
    let (good, good_id) = mint(&store, Role::User, |_| {}).await;
    let (revoked, revoked_id) = mint(&store, Role::User, |r| {
        r.revoked_at = Some(Utc::now());
    })
    .await;
    let bogus = "sk-live-not-a-real-key-0123456789abcdef";
    for key in [
        good.as_str(),
        revoked.as_str(),
        bogus,
        USER_KEY,
        READONLY_KEY,
    ] {
        app.get("/protected", Some(key)).await;
        app.post("/inference", Some(key), INFERENCE).await;
        let bearer = app
            .client
            .get(app.url("/protected"))
            .insert_header(("Authorization", format!("Bearer {key}")));
        app.send(bearer, None).await;
        app.get(&format!("/protected?api_key={key}"), None).await;
        app.get(&format!("/v1/{key}"), Some(key)).await;
    }
    let m = scrape(&app).await;
    for secret in [
        good.as_str(),
        good_id.as_str(),
        revoked.as_str(),
        revoked_id.as_str(),
        bogus,
        USER_KEY,
        READONLY_KEY,
        ADMIN_KEY,
        "upstream-secret",
    ] {
        assert!(!m.text.contains(secret), "{secret} appears in /metrics");
    }
    assert!(m.get("infergate_argon2_verifications_total", &[]) >= 2.0);
}

// ------------------------------------------------------------------------------------------------
// Dashboards and alerts

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/monitoring")
}

/// Every `infergate_*` metric name in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\binfergate_[a-zA-Z0-9_]+").unwrap();
    re.find_iter(expr).map(|m| m.as_str().to_string()).collect()
}

/// Every Prometheus expression in the dashboard: panel targets (rows included) and variable
/// queries, with the panel title for messages.
fn dashboard_exprs(dash: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(panels: &[serde_json::Value], out: &mut Vec<(String, String)>) {
        for p in panels {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            if p["type"] != "row" {
                let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                assert!(!targets.is_empty(), "panel {title:?} has no targets");
                for t in targets {
                    let expr = t["expr"]
                        .as_str()
                        .unwrap_or_else(|| panic!("panel {title:?}: target without expr"));
                    out.push((title.clone(), expr.to_string()));
                }
            }
            if let Some(inner) = p["panels"].as_array() {
                walk(inner, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dash["panels"].as_array().expect("panels"), &mut out);
    for v in dash["templating"]["list"].as_array().expect("templating") {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .expect("variable query");
            out.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }
    out
}

fn alert_rules(rules: &serde_yaml::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let groups = rules["groups"].as_sequence().expect("groups");
    assert!(!groups.is_empty());
    for g in groups {
        assert!(g["name"].as_str().is_some(), "group without a name");
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"].as_str().expect("alert name").to_string();
            let expr = r["expr"].as_str().unwrap_or_else(|| panic!("{name}: expr"));
            assert!(r["for"].as_str().is_some(), "{name}: for");
            assert!(
                matches!(
                    r["labels"]["severity"].as_str(),
                    Some("critical" | "warning" | "info")
                ),
                "{name}: labels.severity"
            );
            for a in ["summary", "description"] {
                assert!(
                    r["annotations"][a].as_str().is_some_and(|s| !s.is_empty()),
                    "{name}: annotations.{a}"
                );
            }
            out.push((name, expr.to_string()));
        }
    }
    out
}

/// A gateway with every family populated: proxied and local traffic, refusals, an upstream
/// error, and a shared limiter behind the breaker.
async fn busy_gateway() -> (TestApp, Scrape) {
    // A stopped clock, so the third request is refused whenever the test runs.
    let clock = ManualClock::new(1_700_000_000_000);
    let app = spawn_app_with(
        &[("RATE_LIMIT_AUTHENTICATED", "2/minute")],
        Opts {
            shared_limiter: Some(Arc::new(MemoryLimiter::new(Arc::new(clock.clone())))),
            clock: Some(clock),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        app.post("/inference", Some(USER_KEY), INFERENCE)
            .await
            .status,
        200
    );
    assert_eq!(app.get("/api/status", Some(USER_KEY)).await.status, 200);
    assert_eq!(app.get("/api/status", Some(USER_KEY)).await.status, 429);
    assert_eq!(app.get("/protected", None).await.status, 401);
    scrape(&app).await;
    let m = scrape(&app).await;
    (app, m)
}

fn assert_known(m: &Scrape, source: &str, expr: &str) {
    let names = metric_names(expr);
    assert!(!names.is_empty(), "{source}: no infergate metric in {expr}");
    for name in names {
        let family = m.family_of(&name);
        assert!(
            m.families.contains_key(family),
            "{source}: {name} is not exposed by the gateway (families: {:?})",
            m.families.keys().collect::<Vec<_>>()
        );
        if family != name {
            assert_eq!(m.families[family], "histogram", "{source}: {name}");
        }
    }
}

#[actix_web::test]
async fn dashboard_panels_name_only_exposed_metrics() {
    let path = monitoring_dir().join("grafana/infergate-gateway.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"),
        "no DS_PROMETHEUS datasource variable"
    );
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id {}",
            p["id"]
        );
        if p["type"] != "row" {
            assert_eq!(
                p["datasource"]["uid"], "${DS_PROMETHEUS}",
                "panel {}",
                p["title"]
            );
        }
    }
    let exprs = dashboard_exprs(&dash);
    // The areas the dashboard must cover.
    let all: String = exprs.iter().map(|(_, e)| e.as_str()).collect();
    for needed in [
        "infergate_http_requests_total",
        "infergate_gateway_added_seconds_bucket",
        "infergate_auth_failures_total",
        "infergate_ratelimit_decisions_total",
        "infergate_ratelimit_breaker_state",
        "infergate_ratelimit_backend_errors_total",
        "infergate_upstream_errors_total",
        "infergate_upstream_duration_seconds_bucket",
        "infergate_http_requests_in_flight",
    ] {
        assert!(all.contains(needed), "no panel uses {needed}");
    }
    let (_app, m) = busy_gateway().await;
    for (title, expr) in &exprs {
        assert_known(&m, &format!("panel {title:?}"), expr);
    }
}

#[actix_web::test]
async fn alert_rules_name_only_exposed_metrics() {
    let path = monitoring_dir().join("prometheus/infergate-alerts.yaml");
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let rules = alert_rules(&rules);
    let names: BTreeSet<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), rules.len(), "duplicate alert names");
    for needed in [
        "InfergateHigh5xxRatio",
        "InfergateUpstreamErrors",
        "InfergateRedisBreakerOpen",
        "InfergateRateLimitFallback",
        "InfergateAuthFailureSpike",
        "InfergateRateLimitSpike",
        "InfergateHighAddedLatency",
    ] {
        assert!(names.contains(needed), "no {needed} alert");
    }
    let (_app, m) = busy_gateway().await;
    for (name, expr) in &rules {
        assert_known(&m, name, expr);
    }
}

#[test]
fn alert_rules_pass_promtool_when_installed() {
    let dir = monitoring_dir().join("prometheus");
    let promtool = std::process::Command::new("promtool")
        .arg("--version")
        .output();
    if promtool.is_err() {
        eprintln!(
            "note: promtool not on PATH (Debian package `prometheus`); rules checked by the \
             parser test only"
        );
        return;
    }
    for args in [
        vec!["check", "rules", "infergate-alerts.yaml"],
        vec!["test", "rules", "infergate-alerts.test.yaml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
