//! Health, request ids, errors, local routes.

use crate::helpers::*;

#[actix_web::test]
async fn health_is_public_and_has_its_shape() {
    let app = spawn_app(&[]).await;
    let r = app.get("/health", None).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).is_ok());
}

#[actix_web::test]
async fn request_id_is_echoed_or_generated_and_process_time_is_set() {
    let app = spawn_app(&[]).await;
    let req = app
        .client
        .get(app.url("/health"))
        .insert_header(("X-Request-ID", "client-id_1.2-3"));
    let r = app.send(req, None).await;
    assert_eq!(r.header("x-request-id"), Some("client-id_1.2-3"));
    let t: f64 = r.header("x-process-time").unwrap().parse().unwrap();
    assert!((0.0..10.0).contains(&t));

    // Malformed ids (bad characters, too long) are replaced, not echoed.
    for bad in ["has space", "a<b>", &"x".repeat(129)] {
        let req = app
            .client
            .get(app.url("/health"))
            .insert_header(("X-Request-ID", bad));
        let r = app.send(req, None).await;
        let id = r.header("x-request-id").unwrap();
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
    // Every response carries them, errors included.
    let r = app.get("/nope", Some(USER_KEY)).await;
    assert!(r.header("x-request-id").is_some() && r.header("x-process-time").is_some());
}

#[actix_web::test]
async fn unknown_route_is_404_and_wrong_method_is_405_as_json() {
    let app = spawn_app(&[]).await;
    let r = app.get("/does/not/exist", Some(ADMIN_KEY)).await;
    assert_error_shape(&r, 404, "not_found");
    let r = app.get("/does/not/exist", None).await;
    assert_error_shape(&r, 404, "not_found");
    let r = app.send(app.client.delete(app.url("/health")), None).await;
    let v = assert_error_shape(&r, 405, "method_not_allowed");
    assert!(r.header("allow").unwrap().contains("GET"), "{v}");
    let r = app.get("/inference", Some(USER_KEY)).await;
    assert_error_shape(&r, 405, "method_not_allowed");
}

#[actix_web::test]
async fn protected_echoes_only_the_masked_key() {
    let app = spawn_app(&[]).await;
    let r = app.get("/protected", Some(USER_KEY)).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["key"], "test-use...");
    assert_eq!(v["role"], "user");
    assert!(!r.text().contains(USER_KEY));
}

#[actix_web::test]
async fn api_test_validates_and_answers() {
    let app = spawn_app(&[]).await;
    let r = app
        .post(
            "/api/test",
            Some(USER_KEY),
            r#"{"test_name":"smoke","iterations":3,"timeout":5}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["success"], true);
    assert_eq!(v["received_data"]["test_name"], "smoke");
    assert_eq!(v["received_data"]["iterations"], 3);
    assert!(uuid::Uuid::parse_str(v["test_id"].as_str().unwrap()).is_ok());
    assert!(v["timestamp"].is_string());

    let r = app
        .post("/api/test", Some(USER_KEY), r#"{"iterations":3}"#)
        .await;
    let v = assert_error_shape(&r, 422, "validation_error");
    assert_eq!(v["field"], "test_name");
    let r = app
        .post(
            "/api/test",
            Some(USER_KEY),
            r#"{"test_name":"x","timeout":-1}"#,
        )
        .await;
    assert_eq!(
        assert_error_shape(&r, 422, "validation_error")["field"],
        "timeout"
    );
    let r = app.post("/api/test", Some(USER_KEY), "{not json").await;
    assert_error_shape(&r, 400, "malformed_json");
}

#[actix_web::test]
async fn status_metrics_and_docs() {
    let app = spawn_app(&[("CORS_ORIGINS", "https://app.example.com")]).await;
    let r = app.get("/api/status", Some(READONLY_KEY)).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["authentication"]["enabled"], true);
    assert_eq!(v["rate_limiting"]["default"], "100/minute");
    assert_eq!(v["cors"]["origins"][0], "https://app.example.com");
    assert_eq!(v["caller"]["role"], "readonly");

    // Generate some traffic to see in the metrics.
    app.get("/protected", None).await;
    let r = app.get("/metrics", Some(READONLY_KEY)).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    for needle in [
        "infergate_http_requests_total{method=\"GET\",route=\"/api/status\",status=\"200\"} 1",
        "infergate_auth_failures_total{reason=\"missing\"} 1",
        "infergate_http_request_duration_seconds_bucket",
        "infergate_build_info",
    ] {
        assert!(text.contains(needle), "{needle} not in metrics:\n{text}");
    }
    assert!(!text.contains(READONLY_KEY));
    // user may not read metrics
    assert_eq!(app.get("/metrics", Some(USER_KEY)).await.status, 403);

    let r = app.get("/openapi.json", None).await;
    assert_eq!(r.status, 200);
    let spec = r.json();
    for path in [
        "/health",
        "/inference",
        "/inference/batch",
        "/models/load",
        "/v1/chat/completions",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from openapi.json"
        );
    }
    // Every route of the table, with every method it answers, is documented.
    for route in app.state.routes.routes() {
        let path = match &route.pattern {
            infergate_policy::PathPattern::Exact(p) => p.clone(),
            infergate_policy::PathPattern::Prefix(p) if p == "/docs/" => "/docs/{asset}".into(),
            infergate_policy::PathPattern::Prefix(_) => continue,
        };
        for method in route.methods {
            assert!(
                spec["paths"][&path][method.to_ascii_lowercase()].is_object(),
                "{method} {path} is served but not in openapi.json"
            );
        }
    }
    let r = app.get("/docs", None).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(
        !r.text().contains("http://") && !r.text().contains("https://"),
        "docs page must work offline"
    );
    assert_eq!(app.get("/docs/docs.js", None).await.status, 200);
    assert_eq!(app.get("/docs/docs.css", None).await.status, 200);
    assert_eq!(app.get("/docs/other.js", None).await.status, 404);
}

#[actix_web::test]
async fn health_detailed_reports_components() {
    let app = spawn_app(&[]).await;
    assert_eq!(app.get("/health/detailed", None).await.status, 401);
    let r = app.get("/health/detailed", Some(READONLY_KEY)).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["components"]["upstream"]["status"], "healthy", "{v}");
    assert_eq!(v["components"]["rate_limiter"]["backend"], "memory");
    assert_eq!(v["components"]["key_store"]["legacy_keys"], 3);
    assert_eq!(v["components"]["key_store"]["backend"], "file");
}

#[actix_web::test]
async fn metrics_can_be_served_on_an_internal_port() {
    let app = spawn_app(&[("INFERGATE_METRICS_LISTEN", "127.0.0.1:0")]).await;
    let port = app.metrics_port.expect("metrics listener started");
    app.get("/health", None).await;
    let internal = |path: &str| app.client.get(format!("http://127.0.0.1:{port}{path}"));
    let r = app.send(internal("/metrics"), None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("infergate_http_requests_total"),
        "{}",
        r.text()
    );
    assert_eq!(
        app.send(internal("/protected"), None).await.status,
        404,
        "only /metrics there"
    );
    // The main port keeps it behind readonly.
    assert_eq!(app.get("/metrics", None).await.status, 401);
    assert_eq!(app.get("/metrics", Some(READONLY_KEY)).await.status, 200);
}
