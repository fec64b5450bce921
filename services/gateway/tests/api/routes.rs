//! The route table is the only list of routes: every route in it is served (by its own handler,
//! or forwarded), with every method it names and no other, and no path outside it is served.

use awc::http::Method;
use infergate_policy::{PathPattern, Schema, Serve};

use crate::helpers::{ADMIN_KEY, Opts, assert_error_shape, spawn_app_with};

/// A body each schema accepts, so what answers is the route's server, not validation.
fn valid_body(schema: Schema) -> &'static str {
    match schema {
        Schema::Any => "{}",
        Schema::Inference => r#"{"prompt": "hi"}"#,
        Schema::InferenceBatch => r#"{"requests": [{"prompt": "hi"}]}"#,
        Schema::ModelsLoad => r#"{"model": "m"}"#,
        Schema::ApiTest => r#"{"test_name": "t"}"#,
        Schema::ChatCompletions => {
            r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}"#
        }
        Schema::Completions => r#"{"model": "m", "prompt": "hi"}"#,
        Schema::Embeddings => r#"{"model": "m", "input": "hi"}"#,
        Schema::Responses => r#"{"model": "m", "input": "hi"}"#,
    }
}

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

#[actix_web::test]
async fn every_route_in_the_table_is_served_and_nothing_else_is() {
    // An upstream that refuses connections: a forwarded route answers 502, a local one does not.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let app = spawn_app_with(
        &[("RATE_LIMIT_ENABLED", "false")],
        Opts {
            upstream_url: Some(dead),
            ..Opts::default()
        },
    )
    .await;
    let routes = app.state.routes.routes().to_vec();
    assert!(routes.len() >= 15, "{} routes", routes.len());
    for route in &routes {
        let path = match &route.pattern {
            PathPattern::Exact(p) => p.clone(),
            PathPattern::Prefix(p) if route.serve == Serve::DocsAsset => format!("{p}docs.js"),
            PathPattern::Prefix(p) => format!("{p}anything/else"),
        };
        for method in METHODS {
            let mut req = app
                .client
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    app.url(&path),
                )
                .insert_header(("X-API-Key", ADMIN_KEY));
            let body = (*method == "POST").then(|| valid_body(route.schema));
            if body.is_some() {
                req = req.insert_header(("Content-Type", "application/json"));
            }
            let r = app.send(req, body).await;
            let what = format!("{method} {path} ({:?})", route.serve);
            if !route.methods.contains(method) {
                assert_eq!(r.status, 405, "{what}: {}", r.text());
                if *method != "HEAD" {
                    assert_error_shape(&r, 405, "method_not_allowed");
                }
                assert_eq!(
                    r.header("allow"),
                    Some(route.methods.join(", ").as_str()),
                    "{what}"
                );
            } else if route.serve == Serve::Upstream {
                assert_eq!(r.status, 502, "{what} is forwarded: {}", r.text());
                if *method != "HEAD" {
                    assert_eq!(r.json()["code"], "upstream_unavailable", "{what}");
                }
            } else {
                assert_eq!(
                    r.status,
                    200,
                    "{what} is served by the gateway: {}",
                    r.text()
                );
            }
        }
    }
    for path in [
        "/",
        "/healthz",
        "/health/",
        "/v1",
        "/v2/models",
        "/models/",
        "/api",
        "/docsx",
        "/metrics/x",
        "/inference/batch/x",
        "/openapi.yaml",
    ] {
        for method in ["GET", "POST"] {
            let req = app
                .client
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    app.url(path),
                )
                .insert_header(("X-API-Key", ADMIN_KEY));
            let r = app.send(req, None).await;
            assert_error_shape(&r, 404, "not_found");
        }
    }
}
