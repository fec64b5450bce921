//! Security headers, CORS and trusted hosts.

use crate::helpers::*;

#[actix_web::test]
async fn security_headers_on_every_kind_of_response() {
    let app = spawn_app(&[("RATE_LIMIT_AUTHENTICATED", "1/minute")]).await;
    let ok = app.get("/health", None).await;
    assert_eq!(ok.status, 200);
    assert_security_headers(&ok);
    let unauthorized = app.get("/protected", None).await;
    assert_eq!(unauthorized.status, 401);
    assert_security_headers(&unauthorized);
    let not_found = app.get("/nope", None).await;
    assert_eq!(not_found.status, 404);
    assert_security_headers(&not_found);
    let proxied = app.get("/models", Some(USER_KEY)).await;
    assert_eq!(proxied.status, 200);
    assert_security_headers(&proxied);
    let limited = app.get("/models", Some(USER_KEY)).await;
    assert_eq!(limited.status, 429);
    assert_security_headers(&limited);
    // Upstream error passed through still gets them.
    let req = app
        .client
        .get(app.url("/v1/models"))
        .insert_header(("X-API-Key", ADMIN_KEY))
        .insert_header(("X-Dev-Status", "503"));
    let upstream_err = app.send(req, None).await;
    assert_eq!(upstream_err.status, 503);
    assert_security_headers(&upstream_err);
}

#[actix_web::test]
async fn security_headers_can_be_switched_off() {
    let app = spawn_app(&[("SECURITY_HEADERS_ENABLED", "false")]).await;
    let r = app.get("/health", None).await;
    assert!(r.header("x-frame-options").is_none());
    assert!(r.header("content-security-policy").is_none());
}

#[actix_web::test]
async fn cors_allows_only_configured_origins() {
    let app = spawn_app(&[("CORS_ORIGINS", "https://app.example.com")]).await;
    let req = app
        .client
        .get(app.url("/health"))
        .insert_header(("Origin", "https://app.example.com"));
    let r = app.send(req, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(r.header("access-control-allow-credentials").is_none());
    // A browser script may read the request id and the rate-limit state.
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap()
        .to_string();
    for h in [
        "x-request-id",
        "ratelimit",
        "retry-after",
        "x-ratelimit-remaining",
    ] {
        assert!(exposed.contains(h), "{h} not exposed: {exposed}");
    }
    assert_eq!(
        r.header("vary"),
        Some("Origin"),
        "a cache must key on the origin"
    );

    let req = app
        .client
        .get(app.url("/health"))
        .insert_header(("Origin", "https://evil.example.net"));
    let r = app.send(req, None).await;
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(r.header("access-control-expose-headers").is_none());
    assert_eq!(r.header("vary"), Some("Origin"));

    let preflight = app
        .client
        .request(awc::http::Method::OPTIONS, app.url("/inference"))
        .insert_header(("Origin", "https://app.example.com"))
        .insert_header(("Access-Control-Request-Method", "POST"))
        .insert_header(("Access-Control-Request-Headers", "x-api-key, content-type"));
    let r = app.send(preflight, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    let methods = r
        .header("access-control-allow-methods")
        .unwrap()
        .to_string();
    for m in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m), "{m} not in {methods}");
    }
    let allowed_headers = r
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed_headers.contains("x-api-key"), "{allowed_headers}");
    assert_security_headers(&r);

    let preflight = app
        .client
        .request(awc::http::Method::OPTIONS, app.url("/inference"))
        .insert_header(("Origin", "https://evil.example.net"))
        .insert_header(("Access-Control-Request-Method", "POST"));
    let r = app.send(preflight, None).await;
    assert!(r.header("access-control-allow-origin").is_none());
    assert_error_shape(&r, 400, "cors_origin_not_allowed");
}

/// A preflight from a foreign origin gets one answer whatever the configuration: with no
/// origins configured (the CORS layer left out) as with a list that does not name it.
#[actix_web::test]
async fn foreign_preflights_get_one_answer_with_or_without_cors_configured() {
    for env in [&[][..], &[("CORS_ORIGINS", "https://app.example.com")][..]] {
        let app = spawn_app(env).await;
        for path in ["/inference", "/v1/chat/completions", "/no/such/route"] {
            let preflight = app
                .client
                .request(awc::http::Method::OPTIONS, app.url(path))
                .insert_header(("Origin", "https://elsewhere.example.org"))
                .insert_header(("Access-Control-Request-Method", "POST"));
            let r = app.send(preflight, None).await;
            assert_error_shape(&r, 400, "cors_origin_not_allowed");
            assert_security_headers(&r);
        }
        // A plain OPTIONS (no preflight) is still the router's business.
        let r = app
            .send(
                app.client
                    .request(awc::http::Method::OPTIONS, app.url("/inference"))
                    .insert_header(("X-API-Key", USER_KEY)),
                None,
            )
            .await;
        assert_eq!(r.status, 405, "{env:?}");
    }
}

#[actix_web::test]
async fn cors_credentials_when_configured() {
    let app = spawn_app(&[
        ("CORS_ORIGINS", "https://app.example.com"),
        ("CORS_ALLOW_CREDENTIALS", "true"),
    ])
    .await;
    let req = app
        .client
        .get(app.url("/health"))
        .insert_header(("Origin", "https://app.example.com"));
    let r = app.send(req, None).await;
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
}

#[actix_web::test]
async fn untrusted_host_is_400() {
    let app = spawn_app(&[("TRUSTED_HOSTS", "api.example.com,*.internal.example")]).await;
    for (host, want) in [
        ("api.example.com", 200),
        ("api.example.com:8443", 200),
        ("gw.internal.example", 200),
        ("evil.example.com", 400),
        ("internal.example", 400),
    ] {
        let req = app
            .client
            .get(app.url("/health"))
            .insert_header(("Host", host));
        let r = app.send(req, None).await;
        assert_eq!(r.status, want, "host {host}");
        if want == 400 {
            assert_error_shape(&r, 400, "invalid_host");
            assert_security_headers(&r);
        }
    }
}

#[actix_web::test]
async fn https_only_redirects_or_refuses_plain_http() {
    let app = spawn_app(&[("HTTPS_ONLY", "true")]).await;
    let r = app.get("/health?x=1", None).await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://127.0.0.1:{}/health?x=1", app.port).as_str())
    );
    // X-Forwarded-Proto from an untrusted peer is ignored.
    let req = app
        .client
        .get(app.url("/health"))
        .insert_header(("X-Forwarded-Proto", "https"));
    assert_eq!(app.send(req, None).await.status, 308);

    let app = spawn_app(&[
        ("HTTPS_ONLY", "true"),
        ("INFERGATE_TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    let req = app
        .client
        .get(app.url("/health"))
        .insert_header(("X-Forwarded-Proto", "https"));
    assert_eq!(app.send(req, None).await.status, 200);

    let app = spawn_app(&[
        ("HTTPS_ONLY", "true"),
        ("INFERGATE_HTTPS_REDIRECT", "false"),
    ])
    .await;
    let r = app.get("/health", None).await;
    assert_error_shape(&r, 403, "https_required");
}
