//! Rate limiting over HTTP, with a manual clock so windows are exact.

use std::time::Duration;

use infergate_ratelimit::ManualClock;

use crate::helpers::*;

/// A window-aligned instant (a multiple of an hour), so tests start at the top of every window.
const T0: u64 = 1_800_000_000_000;

async fn app_with_clock(env: &[(&str, &str)]) -> TestApp {
    spawn_app_with(
        env,
        Opts {
            clock: Some(ManualClock::new(T0)),
            ..Default::default()
        },
    )
    .await
}

async fn from_ip(app: &TestApp, path: &str, ip: &str, key: Option<&str>) -> Resp {
    let mut req = app
        .client
        .get(app.url(path))
        .insert_header(("X-Forwarded-For", ip));
    if let Some(k) = key {
        req = req.insert_header(("X-API-Key", k));
    }
    app.send(req, None).await
}

#[actix_web::test]
async fn first_hundred_pass_then_429_with_headers() {
    let app = app_with_clock(&[("API_KEY_AUTH_ENABLED", "false")]).await;
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..150 {
        let r = app.get("/api/status", None).await;
        statuses.push(r.status);
        last = Some(r);
    }
    assert!(statuses[..100].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(statuses[100..].iter().all(|s| *s == 429), "{statuses:?}");
    let r = last.unwrap();
    let v = assert_error_shape(&r, 429, "rate_limited");
    assert_eq!(v["error"], "Rate limit exceeded");
    // All 100 fell at the window start, so they weigh fully until the next window begins and then
    // decay: one more fits 0.6 s into it, 60.6 s from now, rounded up.
    assert_eq!(v["retry_after"], "61 seconds");
    assert_eq!(v["dimension"], "ip");
    assert_eq!(r.header("retry-after"), Some("61"));
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(
        r.header("x-ratelimit-reset"),
        Some((T0 / 1000 + 60).to_string().as_str())
    );
    assert_eq!(r.header("ratelimit-policy"), Some("\"ip\";q=100;w=60"));
    assert_eq!(r.header("ratelimit"), Some("\"ip\";r=0;t=60"));
    // OpenAI's names for the same limit, the reset as a duration.
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("100"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(r.header("x-ratelimit-reset-requests"), Some("1m0s"));
    assert_security_headers(&r);
}

#[actix_web::test]
async fn allowed_responses_carry_the_tightest_limit() {
    let app = app_with_clock(&[]).await;
    let r = app.get("/models", Some(USER_KEY)).await;
    assert_eq!(r.status, 200);
    // key 1000/minute and endpoint /models 200/minute: the endpoint is tighter.
    assert_eq!(r.header("x-ratelimit-limit"), Some("200"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("199"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("199"));
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"endpoint\";q=200;w=60")
    );
    let r = app.get("/protected", Some(USER_KEY)).await;
    assert_eq!(r.header("x-ratelimit-limit"), Some("1000"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("998"));
}

#[actix_web::test]
async fn per_ip_buckets_and_forwarded_for_only_from_trusted_proxies() {
    let env = [
        ("API_KEY_AUTH_ENABLED", "false"),
        ("RATE_LIMIT_DEFAULT", "3/minute"),
        ("INFERGATE_TRUSTED_PROXIES", "127.0.0.1"),
    ];
    let app = app_with_clock(&env).await;
    for _ in 0..3 {
        assert_eq!(
            from_ip(&app, "/api/status", "203.0.113.1", None)
                .await
                .status,
            200
        );
    }
    assert_eq!(
        from_ip(&app, "/api/status", "203.0.113.1", None)
            .await
            .status,
        429
    );
    assert_eq!(
        from_ip(&app, "/api/status", "203.0.113.2", None)
            .await
            .status,
        200
    );
    // A client prepending a fake address still lands on the address the proxy saw.
    assert_eq!(
        from_ip(&app, "/api/status", "198.51.100.7, 203.0.113.1", None)
            .await
            .status,
        429
    );

    // Without trusted proxies, X-Forwarded-For cannot buy a fresh bucket.
    let app = app_with_clock(&[
        ("API_KEY_AUTH_ENABLED", "false"),
        ("RATE_LIMIT_DEFAULT", "3/minute"),
    ])
    .await;
    for i in 0..3 {
        assert_eq!(
            from_ip(&app, "/api/status", &format!("10.0.0.{i}"), None)
                .await
                .status,
            200
        );
    }
    assert_eq!(
        from_ip(&app, "/api/status", "10.0.0.99", None).await.status,
        429
    );
}

#[actix_web::test]
async fn per_key_limits_are_independent() {
    let app = app_with_clock(&[("RATE_LIMIT_AUTHENTICATED", "3/minute")]).await;
    for _ in 0..3 {
        assert_eq!(app.get("/protected", Some(USER_KEY)).await.status, 200);
    }
    let r = app.get("/protected", Some(USER_KEY)).await;
    assert_eq!(
        assert_error_shape(&r, 429, "rate_limited")["dimension"],
        "key"
    );
    assert_eq!(app.get("/protected", Some(READONLY_KEY)).await.status, 200);
}

#[actix_web::test]
async fn per_role_limits() {
    let app = app_with_clock(&[
        ("RATE_LIMIT_AUTHENTICATED", "2/minute"),
        ("RATE_LIMIT_ADMIN", "4/minute"),
    ])
    .await;
    let count = |key: &'static str| {
        let app = &app;
        async move {
            let mut ok = 0;
            for _ in 0..6 {
                if app.get("/protected", Some(key)).await.status == 200 {
                    ok += 1;
                }
            }
            ok
        }
    };
    assert_eq!(count(USER_KEY).await, 2);
    assert_eq!(count(READONLY_KEY).await, 2);
    assert_eq!(count(ADMIN_KEY).await, 4);
}

#[actix_web::test]
async fn per_key_override_from_the_keys_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.yaml");
    std::fs::write(&path, "keys:\n  slow-key-000000000001:\n    name: slow\n    role: user\n    rate_limit: 2/minute\n").unwrap();
    let app = app_with_clock(&[("INFERGATE_KEYS_FILE", path.to_str().unwrap())]).await;
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(
                app.get("/protected", Some("slow-key-000000000001"))
                    .await
                    .status,
            );
        }
        v
    };
    assert_eq!(statuses, [200, 200, 429]);
}

#[actix_web::test]
async fn per_endpoint_limits_and_denials_consume_nothing() {
    let yaml = "rate_limit:\n  endpoints:\n    /models/load: 2/minute\n";
    let app = spawn_app_with(
        &[("RATE_LIMIT_ADMIN", "6/minute")],
        Opts {
            clock: Some(ManualClock::new(T0)),
            yaml: Some(yaml.into()),
            ..Default::default()
        },
    )
    .await;
    let body = r#"{"model":"echo-1"}"#;
    assert_eq!(
        app.post("/models/load", Some(ADMIN_KEY), body).await.status,
        200
    );
    assert_eq!(
        app.post("/models/load", Some(ADMIN_KEY), body).await.status,
        200
    );
    let r = app.post("/models/load", Some(ADMIN_KEY), body).await;
    assert_eq!(
        assert_error_shape(&r, 429, "rate_limited")["dimension"],
        "endpoint"
    );
    // The refused request took nothing from the key's 6/minute: 2 used, this one makes 3.
    let r = app.get("/protected", Some(ADMIN_KEY)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("3"));
    // Other endpoints are unaffected.
    assert_eq!(app.get("/models", Some(ADMIN_KEY)).await.status, 200);
}

#[actix_web::test]
async fn health_is_exempt_from_the_per_ip_default() {
    let app = app_with_clock(&[("RATE_LIMIT_DEFAULT", "2/minute")]).await;
    for _ in 0..2 {
        assert_eq!(app.get("/protected", None).await.status, 401);
    }
    assert_eq!(app.get("/protected", None).await.status, 429);
    for _ in 0..10 {
        let r = app.get("/health", None).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-ratelimit-limit"),
            Some("1000"),
            "health keeps its endpoint limit"
        );
    }
}

#[actix_web::test]
async fn failed_authentication_counts_and_is_refused_before_lookup() {
    let app = app_with_clock(&[("RATE_LIMIT_DEFAULT", "3/minute")]).await;
    for i in 0..3u64 {
        let r = app.get("/protected", Some(&format!("guess-{i:016}"))).await;
        assert_eq!(r.status, 401);
        // The refusal was charged, and says so.
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some((2 - i).to_string().as_str())
        );
    }
    let before = app
        .state
        .metrics
        .auth_failures
        .with_label_values(&["unknown"])
        .get();
    let r = app.get("/protected", Some("guess-9999999999999999")).await;
    assert_eq!(
        assert_error_shape(&r, 429, "rate_limited")["dimension"],
        "ip"
    );
    let after = app
        .state
        .metrics
        .auth_failures
        .with_label_values(&["unknown"])
        .get();
    assert_eq!(
        before, after,
        "a refused guess must not reach the key store"
    );
}

#[actix_web::test]
async fn window_slides_with_the_clock() {
    let app = app_with_clock(&[
        ("API_KEY_AUTH_ENABLED", "false"),
        ("RATE_LIMIT_DEFAULT", "10/minute"),
    ])
    .await;
    let clock = app.clock.clone().unwrap();
    let ok = |n: usize| {
        let app = &app;
        async move {
            let mut allowed = 0;
            for _ in 0..n {
                if app.get("/api/status", None).await.status == 200 {
                    allowed += 1;
                }
            }
            allowed
        }
    };
    assert_eq!(ok(12).await, 10);
    // Next window starts: the previous 10 still weigh fully.
    clock.advance(Duration::from_secs(60));
    assert_eq!(ok(3).await, 0);
    // Half-way through, they weigh half.
    clock.advance(Duration::from_secs(30));
    assert_eq!(ok(8).await, 5);
    // Retry-After is exact: waiting that long admits one more.
    let r = app.get("/api/status", None).await;
    assert_eq!(r.status, 429);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    clock.advance(Duration::from_secs(wait));
    assert_eq!(app.get("/api/status", None).await.status, 200);
    // After two idle windows everything is forgotten.
    clock.advance(Duration::from_secs(180));
    assert_eq!(ok(12).await, 10);
}

#[actix_web::test]
async fn idle_buckets_are_swept() {
    let env = [
        ("API_KEY_AUTH_ENABLED", "false"),
        ("INFERGATE_TRUSTED_PROXIES", "127.0.0.1"),
    ];
    let app = app_with_clock(&env).await;
    for i in 0..20 {
        assert_eq!(
            from_ip(&app, "/api/status", &format!("192.0.2.{i}"), None)
                .await
                .status,
            200
        );
    }
    let limiter = &app.state.memory_limiter;
    assert!(limiter.len() >= 20, "{}", limiter.len());
    assert_eq!(limiter.sweep(), 0, "nothing is idle yet");
    app.clock
        .as_ref()
        .unwrap()
        .advance(Duration::from_secs(300));
    assert!(limiter.sweep() >= 20);
    assert_eq!(limiter.len(), 0);
}

#[actix_web::test]
async fn rate_limiting_can_be_disabled() {
    let app = app_with_clock(&[
        ("API_KEY_AUTH_ENABLED", "false"),
        ("RATE_LIMIT_ENABLED", "false"),
        ("RATE_LIMIT_DEFAULT", "1/minute"),
    ])
    .await;
    for _ in 0..5 {
        let r = app.get("/api/status", None).await;
        assert_eq!(r.status, 200);
        assert!(r.header("x-ratelimit-limit").is_none());
    }
}

#[actix_web::test]
async fn forbidden_calls_still_cost_the_key() {
    let app = app_with_clock(&[("RATE_LIMIT_AUTHENTICATED", "3/minute")]).await;
    let body = r#"{"model":"echo-1"}"#;
    for _ in 0..3 {
        assert_eq!(
            app.post("/models/load", Some(READONLY_KEY), body)
                .await
                .status,
            403
        );
    }
    let r = app.post("/models/load", Some(READONLY_KEY), body).await;
    assert_eq!(
        assert_error_shape(&r, 429, "rate_limited")["dimension"],
        "key"
    );
}
