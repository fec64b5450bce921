//! Request bodies: duplicate keys, empty bodies, content encodings, uploads, and the false
//! refusals real clients hit (URLs in query values, the seed's `model_name`, integers).

use std::io::Write;

use infergate_policy::Role;

use crate::helpers::*;

async fn allowlisted() -> (TestApp, String) {
    let (app, store) = app_with_store(&[]).await;
    let (key, _) = mint(&store, Role::User, |r| {
        r.models = Some(vec!["echo-1".into()])
    })
    .await;
    (app, key)
}

#[actix_web::test]
async fn duplicate_keys_anywhere_are_refused() {
    let (app, key) = allowlisted().await;
    let r = app
        .post(
            "/inference",
            Some(&key),
            r#"{"prompt":"hi","model":"echo-large","model":"echo-1"}"#,
        )
        .await;
    let v = assert_error_shape(&r, 400, "duplicate_key");
    assert_eq!(v["field"], "model");
    let r = app
        .post(
            "/inference/batch",
            Some(&key),
            r#"{"requests":[{"prompt":"a","model":"echo-1"},{"prompt":"b","model":"echo-1","model":"echo-large"}]}"#,
        )
        .await;
    let v = assert_error_shape(&r, 400, "duplicate_key");
    assert_eq!(v["field"], "requests[1].model");
    // Escaped spellings of one key are one key.
    let r = app
        .post(
            "/v1/chat/completions",
            Some(USER_KEY),
            r#"{"model":"echo-1","mod\u0065l":"echo-large","messages":[{"role":"user","content":"x"}]}"#,
        )
        .await;
    assert_error_shape(&r, 400, "duplicate_key");
}

#[actix_web::test]
async fn empty_and_modelless_bodies_do_not_skip_validation() {
    let (app, key) = allowlisted().await;
    for path in ["/v1/chat/completions", "/v1/responses", "/v1/embeddings"] {
        let r = app.post(path, Some(USER_KEY), "").await;
        assert_error_shape(&r, 400, "malformed_json");
    }
    // A key with an allowlist must name one of its models, on any route, those whose schema
    // does not require a model too.
    let r = app
        .post("/v1/moderations", Some(&key), r#"{"input":"hi"}"#)
        .await;
    assert_error_shape(&r, 403, "model_not_allowed");
    let r = app
        .post(
            "/v1/moderations",
            Some(&key),
            r#"{"input":"hi","model":"echo-large"}"#,
        )
        .await;
    assert_error_shape(&r, 403, "model_not_allowed");
    // Where the schema requires one, its absence is a validation error for every key.
    let r = app
        .post("/v1/responses", Some(&key), r#"{"input":"hi"}"#)
        .await;
    assert_error_shape(&r, 422, "validation_error");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn post_encoded(app: &TestApp, path: &str, key: &str, encoding: &str, body: Vec<u8>) -> Resp {
    let req = app
        .client
        .post(app.url(path))
        .insert_header(("X-API-Key", key))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Content-Encoding", encoding));
    app.finish(req.send_body(body)).await
}

#[actix_web::test]
async fn encoded_bodies_are_decoded_checked_and_forwarded_decoded() {
    let (app, key) = allowlisted().await;
    let plain = br#"{"prompt":"hi","model":"echo-1"}"#;
    let r = post_encoded(&app, "/v1/debug/request", ADMIN_KEY, "gzip", gzip(plain)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["body"], std::str::from_utf8(plain).unwrap());
    assert!(seen["headers"].get("content-encoding").is_none(), "{seen}");
    // What is inside is checked: the allowlist and duplicate keys.
    let r = post_encoded(
        &app,
        "/inference",
        &key,
        "gzip",
        gzip(br#"{"prompt":"hi","model":"echo-large"}"#),
    )
    .await;
    assert_error_shape(&r, 403, "model_not_allowed");
    let r = post_encoded(
        &app,
        "/inference",
        &key,
        "gzip",
        gzip(br#"{"prompt":"hi","model":"echo-large","model":"echo-1"}"#),
    )
    .await;
    assert_error_shape(&r, 400, "duplicate_key");
    // A zip bomb stops at the decoded limit (1 MiB); it is not inflated in memory.
    let bomb = gzip(&vec![b' '; 64 * 1024 * 1024]);
    assert!(bomb.len() < 1024 * 1024);
    let r = post_encoded(&app, "/inference", &key, "gzip", bomb).await;
    assert_error_shape(&r, 413, "payload_too_large");
    let r = post_encoded(&app, "/inference", &key, "zstd", plain.to_vec()).await;
    let v = assert_error_shape(&r, 415, "unsupported_content_encoding");
    assert!(v["detail"].as_str().unwrap().contains("gzip, deflate, br"));
    let r = post_encoded(&app, "/inference", &key, "gzip", b"not gzip".to_vec()).await;
    assert_error_shape(&r, 400, "invalid_content_encoding");
    let r = post_encoded(
        &app,
        "/inference",
        &key,
        "gzip, gzip, gzip",
        gzip(&gzip(&gzip(plain))),
    )
    .await;
    assert_error_shape(&r, 415, "unsupported_content_encoding");
}

fn multipart(boundary: &str, fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        if *name == "file" {
            out.extend_from_slice(
                b"Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n",
            );
        } else {
            out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            );
        }
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

async fn upload(app: &TestApp, key: &str, content_type: &str, body: Vec<u8>) -> Resp {
    let req = app
        .client
        .post(app.url("/v1/audio/transcriptions"))
        .insert_header(("X-API-Key", key))
        .insert_header(("Content-Type", content_type));
    // Streamed in chunks, as a client uploading a file would.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = body
        .chunks(64 * 1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    app.finish(req.send_stream(futures_util::stream::iter(chunks)))
        .await
}

#[actix_web::test]
async fn multipart_uploads_stream_through_and_their_model_is_checked() {
    let (app, key) = allowlisted().await;
    let b = "----infergate-test-boundary";
    let ct = format!("multipart/form-data; boundary={b}");
    // 3 MiB of audio: three times the JSON body limit, so it can only pass streamed.
    let audio: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let form = multipart(b, &[("model", b"whisper-1"), ("file", &audio)]);
    let r = upload(&app, USER_KEY, &ct, form.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["bytes"], form.len());
    // The allowlist applies to the form's `model` field, wherever it stands.
    let r = upload(&app, &key, &ct, form).await;
    let v = assert_error_shape(&r, 403, "model_not_allowed");
    assert!(v["detail"].as_str().unwrap().contains("whisper-1"));
    let late = multipart(b, &[("file", &audio), ("model", b"whisper-1")]);
    let r = upload(&app, &key, &ct, late).await;
    assert_error_shape(&r, 403, "model_not_allowed");
    let none = multipart(b, &[("file", &audio)]);
    let r = upload(&app, &key, &ct, none).await;
    assert_error_shape(&r, 403, "model_not_allowed");
    let ok = multipart(b, &[("file", &audio), ("model", b"echo-1")]);
    let r = upload(&app, &key, &ct, ok.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["bytes"], ok.len());
    // With a Content-Length (as the OpenAI SDK sends uploads) the upload limit applies too,
    // not the JSON one.
    let req = app
        .client
        .post(app.url("/v1/audio/transcriptions"))
        .insert_header(("X-API-Key", USER_KEY))
        .insert_header(("Content-Type", ct.as_str()));
    let sized = multipart(b, &[("model", b"whisper-1"), ("file", &audio)]);
    let r = app.finish(req.send_body(sized.clone())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["bytes"], sized.len());
    // A raw binary body passes for a key without an allowlist.
    let r = upload(&app, USER_KEY, "application/octet-stream", audio.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The route's own limit (25 MiB) holds.
    let huge = vec![0u8; 26 * 1024 * 1024];
    let r = upload(&app, USER_KEY, "application/octet-stream", huge).await;
    assert_error_shape(&r, 413, "payload_too_large");
}

#[actix_web::test]
async fn urls_in_query_values_and_referers_pass_but_signatures_still_do_not() {
    let app = spawn_app(&[]).await;
    let req = app
        .client
        .get(app.url("/v1/models?url=https://example.com/docs/../index.html&next=..%2F..%2Fhome"))
        .insert_header(("X-API-Key", USER_KEY))
        .insert_header(("Referer", "https://app.example.com/a/../b/"));
    let r = app.send(req, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app
        .get("/v1/models?q=1%27%20OR%20%271%27=%271", Some(USER_KEY))
        .await;
    assert_error_shape(&r, 400, "suspicious_input");
    let r = app
        .get(
            "/v1/models?x=%3Cscript%3Ealert(1)%3C/script%3E",
            Some(USER_KEY),
        )
        .await;
    assert_error_shape(&r, 400, "suspicious_input");
}

#[actix_web::test]
async fn the_seeds_model_name_is_accepted() {
    let app = spawn_app(&[]).await;
    let r = app
        .post("/models/load", Some(ADMIN_KEY), r#"{"model_name": "test"}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app
        .post(
            "/models/load",
            Some(ADMIN_KEY),
            r#"{"model_name": "a", "model": "b"}"#,
        )
        .await;
    assert_error_shape(&r, 422, "validation_error");
}

#[actix_web::test]
async fn integer_fields_follow_one_rule_everywhere() {
    // JSON Schema's integer, as the OpenAPI documents say: 16 and 16.0 are 16, 16.5 is refused.
    let app = spawn_app(&[]).await;
    let r = app
        .post(
            "/v1/completions",
            Some(USER_KEY),
            r#"{"model":"echo-1","prompt":"x","max_tokens":16.0}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app
        .post(
            "/v1/completions",
            Some(USER_KEY),
            r#"{"model":"echo-1","prompt":"x","max_tokens":16.5}"#,
        )
        .await;
    let v = assert_error_shape(&r, 422, "validation_error");
    assert_eq!(v["field"], "max_tokens");
    // `/api/test` used to accept 5.0 and silently use 1.
    let r = app
        .post(
            "/api/test",
            Some(USER_KEY),
            r#"{"test_name":"t","iterations":5.0}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["received_data"]["iterations"], 5);
    let r = app
        .post(
            "/api/test",
            Some(USER_KEY),
            r#"{"test_name":"t","iterations":5}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["received_data"]["iterations"], 5);
}
