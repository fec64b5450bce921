//! Input validation: signatures in path/query/headers, body limits, JSON and schemas.

use bytes::Bytes;
use futures_util::stream;

use crate::helpers::*;

#[actix_web::test]
async fn attack_signatures_in_query_path_and_headers_are_refused() {
    let app = spawn_app(&[]).await;
    for path in [
        "/models?id=1%27%20OR%20%271%27=%271",
        "/models?q=1%20UNION%20SELECT%20password%20FROM%20users",
        "/models?name=%3Cscript%3Ealert(1)%3C/script%3E",
        "/models?next=javascript:alert(1)",
    ] {
        let r = app.get(path, Some(USER_KEY)).await;
        let v = assert_error_shape(&r, 400, "suspicious_input");
        assert!(
            v["detail"].as_str().unwrap().contains("query string"),
            "{path}: {v}"
        );
        assert_security_headers(&r);
    }
    for path in [
        "/v1/%2e%2e%2f%2e%2e%2fetc/passwd",
        "/v1/..%2f..%2fsecret",
        "/v1/%252e%252e%252fx",
    ] {
        let r = app.get(path, Some(USER_KEY)).await;
        let v = assert_error_shape(&r, 400, "suspicious_input");
        assert!(
            v["detail"].as_str().unwrap().contains("path traversal"),
            "{path}: {v}"
        );
    }
    let req = app
        .client
        .get(app.url("/models"))
        .insert_header(("X-API-Key", USER_KEY))
        .insert_header(("User-Agent", "sqlmap'; DROP TABLE users; --"));
    let r = app.send(req, None).await;
    assert!(
        assert_error_shape(&r, 400, "suspicious_input")["detail"]
            .as_str()
            .unwrap()
            .contains("headers")
    );
    // Ordinary queries pass.
    assert_eq!(
        app.get("/v1/models?limit=10&order=desc", Some(USER_KEY))
            .await
            .status,
        200
    );
}

#[actix_web::test]
async fn prompts_are_not_pattern_filtered() {
    let app = spawn_app(&[]).await;
    let prompt =
        "Explain: '; DROP TABLE users; -- and <script>alert(1)</script> and ../../etc/passwd";
    let body = serde_json::json!({"prompt": prompt, "model": "echo-1"}).to_string();
    let r = app.post("/inference", Some(USER_KEY), &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["received_prompt"], prompt);
    // And the bytes reach the upstream untouched.
    let r = app.post("/v1/debug/request", Some(ADMIN_KEY), &body).await;
    assert_eq!(r.json()["body"], body);
}

#[actix_web::test]
async fn oversize_bodies_are_413() {
    let app = spawn_app(&[]).await;
    let big = format!(r#"{{"prompt":"{}"}}"#, "a".repeat(1024 * 1024 + 10));
    let r = app.post("/inference", Some(USER_KEY), &big).await;
    let v = assert_error_shape(&r, 413, "payload_too_large");
    assert_eq!(v["limit_bytes"], 1024 * 1024);
    // The batch route allows 10 MiB.
    let items: Vec<String> = (0..4)
        .map(|_| format!(r#"{{"prompt":"{}"}}"#, "b".repeat(512 * 1024)))
        .collect();
    let batch = format!(r#"{{"requests":[{}]}}"#, items.join(","));
    assert!(batch.len() > 1024 * 1024);
    let r = app.post("/inference/batch", Some(USER_KEY), &batch).await;
    assert_eq!(r.status, 200, "{}", &r.text()[..200.min(r.text().len())]);

    // Chunked (no Content-Length): counted while reading, refused once past the limit.
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..40)
        .map(|_| Ok(Bytes::from(vec![b' '; 64 * 1024])))
        .collect();
    let req = app
        .client
        .post(app.url("/inference"))
        .insert_header(("X-API-Key", USER_KEY))
        .insert_header(("Content-Type", "application/json"));
    let mut res = req.send_stream(stream::iter(chunks)).await.unwrap();
    assert_eq!(res.status().as_u16(), 413);
    let body: serde_json::Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
    assert_eq!(body["code"], "payload_too_large");
}

#[actix_web::test]
async fn malformed_json_is_400_and_schema_errors_are_422_naming_the_field() {
    let app = spawn_app(&[]).await;
    let r = app
        .post("/inference", Some(USER_KEY), r#"{"prompt": "unterminated"#)
        .await;
    assert_error_shape(&r, 400, "malformed_json");
    let r = app.post("/inference", Some(USER_KEY), "").await;
    assert_error_shape(&r, 400, "malformed_json");
    let cases = [
        ("/inference", r#"{"model":"echo-1"}"#, "prompt"),
        (
            "/inference",
            r#"{"prompt":"x","max_tokens":0}"#,
            "max_tokens",
        ),
        (
            "/inference",
            r#"{"prompt":"x","temperature":"hot"}"#,
            "temperature",
        ),
        ("/inference", r#"["prompt"]"#, "body"),
        ("/inference/batch", r#"{"requests":[]}"#, "requests"),
        (
            "/inference/batch",
            r#"{"requests":[{"prompt":"a"},{"prompt":7}]}"#,
            "requests[1].prompt",
        ),
        ("/v1/chat/completions", r#"{"model":"m"}"#, "messages"),
        (
            "/v1/chat/completions",
            r#"{"model":"m","messages":[{"role":"user"}]}"#,
            "messages[0].content",
        ),
        ("/v1/embeddings", r#"{"model":"m"}"#, "input"),
        ("/v1/completions", r#"{"prompt":"x"}"#, "model"),
    ];
    for (path, body, field) in cases {
        let key = if path == "/models/load" {
            ADMIN_KEY
        } else {
            USER_KEY
        };
        let r = app.post(path, Some(key), body).await;
        let v = assert_error_shape(&r, 422, "validation_error");
        assert_eq!(v["field"], field, "{path} {body}: {v}");
    }
    let r = app
        .post("/models/load", Some(ADMIN_KEY), r#"{"model":""}"#)
        .await;
    assert_eq!(
        assert_error_shape(&r, 422, "validation_error")["field"],
        "model"
    );
}
