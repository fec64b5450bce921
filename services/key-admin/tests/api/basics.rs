//! Routes every client sees: health, docs, the OpenAPI description, metrics, JSON errors and the
//! headers on every response.

use std::collections::BTreeSet;

use infergate_key_admin::app::ROUTES;

use crate::helpers::{assert_error_shape, assert_security_headers, spawn_app};

#[actix_web::test]
async fn health_is_public_and_carries_the_headers() {
    let app = spawn_app(&[]).await;
    let r = app.get("/health", None).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["key_store"], "memory");
    assert_security_headers(&r);
    let head = app.send(app.client.head(app.url("/health")), None).await;
    assert_eq!(head.status, 200);
}

#[actix_web::test]
async fn openapi_describes_every_route_and_method() {
    let app = spawn_app(&[]).await;
    let r = app.get("/openapi.json", None).await;
    assert_eq!(r.status, 200);
    let spec = r.json();
    let paths = spec["paths"].as_object().expect("paths");
    let described: BTreeSet<String> = paths.keys().cloned().collect();
    let registered: BTreeSet<String> = ROUTES.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(
        described, registered,
        "openapi.json paths vs the route table"
    );
    for (path, methods) in ROUTES {
        for m in *methods {
            assert!(
                paths[*path][m.to_ascii_lowercase()].is_object(),
                "{m} {path} is not described"
            );
        }
    }
    // Every $ref resolves.
    let text = r.text();
    for part in text
        .split("\"$ref\": \"#/")
        .skip(1)
        .chain(text.split("\"$ref\":\"#/").skip(1))
    {
        let pointer = format!("/{}", &part[..part.find('"').unwrap()]);
        assert!(spec.pointer(&pointer).is_some(), "dangling $ref {pointer}");
    }
}

#[actix_web::test]
async fn docs_page_is_offline_under_a_strict_csp() {
    let app = spawn_app(&[]).await;
    let r = app.get("/docs", None).await;
    assert_eq!(r.status, 200);
    let html = r.text();
    assert!(html.contains("/docs/docs.js") && html.contains("/docs/docs.css"));
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "no inline code"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external URLs"
    );
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    for asset in ["docs.js", "docs.css"] {
        let a = app.get(&format!("/docs/{asset}"), None).await;
        assert_eq!(a.status, 200, "{asset}");
        assert!(
            !a.text().contains("https://"),
            "{asset} loads nothing external"
        );
    }
    assert_error_shape(&app.get("/docs/evil.js", None).await, 404, "not_found");
}

#[actix_web::test]
async fn unknown_paths_and_methods_are_json_errors() {
    let app = spawn_app(&[]).await;
    let r = app.get("/nope", None).await;
    assert_error_shape(&r, 404, "not_found");
    assert_security_headers(&r);
    let r = app
        .send(app.client.put(app.url("/v1/keys")), Some("{}"))
        .await;
    assert_error_shape(&r, 405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, POST"));
}

#[actix_web::test]
async fn untrusted_hosts_are_refused() {
    let app = spawn_app(&[]).await;
    let r = app
        .send(
            app.client
                .get(app.url("/health"))
                .insert_header(("Host", "evil.example")),
            None,
        )
        .await;
    assert_error_shape(&r, 400, "invalid_host");
    assert_security_headers(&r);
}

#[actix_web::test]
async fn request_ids_are_kept_when_well_formed() {
    let app = spawn_app(&[]).await;
    let r = app
        .send(
            app.client
                .get(app.url("/health"))
                .insert_header(("X-Request-ID", "abc-123")),
            None,
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let r = app
        .send(
            app.client
                .get(app.url("/health"))
                .insert_header(("X-Request-ID", "bad id<script>")),
            None,
        )
        .await;
    assert_ne!(r.header("x-request-id"), Some("bad id<script>"));
}

#[actix_web::test]
async fn metrics_are_admin_only_and_count_actions_and_keys() {
    let app = spawn_app(&[]).await;
    assert_error_shape(&app.get("/metrics", None).await, 401, "missing_credentials");
    let (user, _) = app.create_key("metrics-user", "user").await;
    assert_error_shape(&app.get("/metrics", Some(&user)).await, 403, "forbidden");
    let (_, id) = app.create_key("to-revoke", "readonly").await;
    assert_eq!(
        app.admin_post(&format!("/v1/keys/{id}/revoke"), "")
            .await
            .status,
        200
    );
    app.admin_post("/v1/keys", r#"{"name": "", "role": "user"}"#)
        .await;
    let r = app.admin_get("/metrics").await;
    assert_eq!(r.status, 200);
    let text = r.text();
    for line in [
        "infergate_admin_actions_total{action=\"create\",outcome=\"success\"} 2",
        "infergate_admin_actions_total{action=\"create\",outcome=\"failure\"} 1",
        "infergate_admin_actions_total{action=\"revoke\",outcome=\"success\"} 1",
        "infergate_admin_keys{state=\"active\"} 2",
        "infergate_admin_keys{state=\"revoked\"} 1",
        "infergate_admin_keys{state=\"expired\"} 0",
    ] {
        assert!(text.contains(line), "missing {line}:\n{text}");
    }
    assert!(
        text.contains(
            "infergate_admin_http_requests_total{method=\"POST\",route=\"/v1/keys\",status=\"201\"}"
        ),
        "{text}"
    );
    assert!(
        !text.contains(&app.admin_key) && !text.contains(&app.admin_id),
        "no keys or ids in labels"
    );
}
