//! Credentials: the guessing oracle, weak static keys, the `user` allowlist, and secrets in every
//! output the gateway produces.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use infergate_gateway::{Application, Overrides};

use crate::helpers::*;
use crate::raw::{get, send_from, status};

#[actix_web::test]
async fn no_guess_succeeds_once_the_failed_auth_budget_is_spent() {
    // A stopped clock: no window boundary falls inside the 1,000 requests.
    let app = spawn_app_with(
        &[
            ("API_KEY", ""),
            ("API_KEYS", "pin-4821:admin"),
            ("RATE_LIMIT_DEFAULT", "100/minute"),
        ],
        stopped_clock(),
    )
    .await;
    // The legitimate client uses its key once, so it is in the verifier's cache.
    assert_eq!(app.get("/protected", Some("pin-4821")).await.status, 200);
    let mut counts = std::collections::BTreeMap::new();
    for n in 4000..5000 {
        let key = format!("X-API-Key: pin-{n}");
        let raw = send_from("127.0.0.9", app.port, &get("/protected", &[&key])).await;
        *counts.entry(status(&raw)).or_insert(0) += 1;
    }
    assert_eq!(
        counts,
        [(401, 100), (429, 900)].into_iter().collect(),
        "the real key among the guesses must get the same 429 as every other"
    );
    // The owner, from its own address, is unaffected.
    assert_eq!(app.get("/protected", Some("pin-4821")).await.status, 200);
}

async fn build_error(env: &[(&str, &str)]) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(env, None, dir.path());
    Application::build_with(cfg, Overrides::default())
        .await
        .err()
        .map(|e| e.to_string())
}

#[actix_web::test]
async fn weak_static_keys_are_refused_or_flagged_without_showing_them() {
    let e = build_error(&[("API_KEY", "short1")])
        .await
        .expect("a 6-character key is refused");
    assert!(e.contains("API_KEY is 6 characters"), "{e}");
    assert!(e.contains("INFERGATE_ALLOW_WEAK_KEYS"), "{e}");
    assert!(!e.contains("short1"), "{e}");
    let e = build_error(&[("API_KEYS", "aaaaaaaaaaaaaaaaaaaa:user,tiny:readonly")])
        .await
        .expect("refused");
    assert!(e.contains("API_KEYS entry 2"), "{e}");
    assert!(!e.contains("tiny"), "{e}");
    assert!(
        build_error(&[("API_KEY", "short1"), ("INFERGATE_ALLOW_WEAK_KEYS", "true")])
            .await
            .is_none()
    );
    // 8 to 15 characters: accepted, with a warning that names the position only.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("API_KEY", "pin-4821")], None, dir.path());
    let keys = infergate_gateway::state::env_keys(&cfg).unwrap();
    let warnings = infergate_gateway::state::check_static_keys(&cfg, &keys).unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("API_KEY is 8 characters")),
        "{warnings:?}"
    );
    assert!(warnings.iter().all(|w| !w.contains("pin-4821")));
}

#[actix_web::test]
async fn user_keys_reach_the_inference_surface_only() {
    let app = spawn_app(&[]).await;
    for (method, path) in [
        ("POST", "/v1/load_lora_adapter"),
        ("POST", "/v1/unload_lora_adapter"),
        ("DELETE", "/v1/models/echo-1"),
        ("POST", "/v1/files"),
        ("GET", "/v1/files"),
        ("POST", "/v1/fine_tuning/jobs"),
        ("POST", "/v1/batches"),
        ("GET", "/v1/debug/request"),
        ("POST", "/v1/chat/completions/../../load_lora_adapter"),
    ] {
        let req = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .insert_header(("X-API-Key", USER_KEY))
            .insert_header(("Content-Type", "application/json"));
        let r = app.send(req, Some(r#"{"lora_name":"x"}"#)).await;
        assert!(
            r.status == 403 || r.status == 400,
            "{method} {path}: {} {}",
            r.status,
            r.text()
        );
    }
    let ok = app
        .post(
            "/v1/chat/completions",
            Some(USER_KEY),
            r#"{"model":"echo-1","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(app.get("/v1/models", Some(USER_KEY)).await.status, 200);
    // Admins keep everything.
    assert_eq!(
        app.get("/v1/debug/request", Some(ADMIN_KEY)).await.status,
        200
    );
}

/// Every log line the gateway writes in this test binary, as JSON.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter("info")
            .with_writer(move || SharedWriter(writer.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[actix_web::test]
async fn no_key_appears_in_logs_error_bodies_or_metrics() {
    let logs = captured_logs();
    let app = spawn_app(&[("RATE_LIMIT_DEFAULT", "5/minute")]).await;
    let wrong = "wrong-secret-key-7f3a9c2e41d8";
    let mut bodies = Vec::new();
    for (key, path) in [
        (USER_KEY, "/protected"),
        (USER_KEY, "/metrics"),
        (USER_KEY, "/v1/load_lora_adapter"),
        (wrong, "/protected"),
        (wrong, "/protected?x=%3Cscript%3E"),
    ] {
        bodies.push(app.get(path, Some(key)).await.text());
    }
    let req = app
        .client
        .get(app.url(&format!("/v1/models?api_key={USER_KEY}")))
        .insert_header(("Authorization", format!("Bearer {wrong}")));
    bodies.push(app.send(req, None).await.text());
    for i in 0..8 {
        bodies.push(
            app.get("/protected", Some(&format!("{wrong}{i}")))
                .await
                .text(),
        );
    }
    let metrics = app.get("/metrics", Some(ADMIN_KEY)).await.text();
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logs.contains("unknown API key"),
        "logs were captured: {logs}"
    );
    for secret in [USER_KEY, ADMIN_KEY, wrong] {
        for (what, text) in bodies
            .iter()
            .map(|b| ("an error body", b.as_str()))
            .chain([("/metrics", metrics.as_str()), ("the log", logs.as_str())])
        {
            assert!(!text.contains(secret), "{what} carries a key: {text}");
        }
    }
}

/// The failed-auth budget is checked on every request, yet a known key's request still costs
/// one Redis round trip: the budget rides along in the key's own limiter call.
#[actix_web::test]
async fn the_budget_check_costs_no_extra_redis_round_trip() {
    use infergate_ratelimit::redis::{RedisLimiter, RedisLimiterConfig};
    let server = infergate_testkit::RedisServer::start();
    let redis = Arc::new(
        RedisLimiter::connect(
            &server.url(),
            RedisLimiterConfig {
                prefix: "adv".into(),
                timeout: std::time::Duration::from_secs(5),
                ..RedisLimiterConfig::default()
            },
        )
        .await
        .unwrap(),
    );
    let app = spawn_app_with(
        &[],
        Opts {
            shared_limiter: Some(redis.clone()),
            ..Default::default()
        },
    )
    .await;
    // First use: the budget is peeked before the key is looked up, then the key is limited.
    let before = redis.round_trips();
    assert_eq!(app.get("/protected", Some(USER_KEY)).await.status, 200);
    assert_eq!(redis.round_trips() - before, 2);
    // Known key: one round trip each.
    for _ in 0..5 {
        let before = redis.round_trips();
        assert_eq!(app.get("/protected", Some(USER_KEY)).await.status, 200);
        assert_eq!(redis.round_trips() - before, 1);
    }
}
