//! End-to-end tests over real HTTP on 127.0.0.1:0, using `awc` the way the gateway does.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use futures_util::StreamExt;
use infergate_dev_upstream::{DevUpstream, UpstreamConfig};
use serde_json::{Value, json};

fn start(cfg: UpstreamConfig) -> DevUpstream {
    DevUpstream::start("127.0.0.1:0", cfg).expect("start dev upstream")
}

fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish()
}

async fn get(up: &DevUpstream, path: &str) -> (StatusCode, Value) {
    let mut resp = client().get(up.url(path)).send().await.expect("send");
    let body = resp.json::<Value>().await.expect("json body");
    (resp.status(), body)
}

async fn post(up: &DevUpstream, path: &str, body: &Value) -> (StatusCode, Value) {
    let mut resp = client()
        .post(up.url(path))
        .send_json(body)
        .await
        .expect("send");
    let body = resp.json::<Value>().await.expect("json body");
    (resp.status(), body)
}

async fn post_raw(up: &DevUpstream, path: &str, body: &'static str) -> (StatusCode, Value) {
    let mut resp = client()
        .post(up.url(path))
        .insert_header(("content-type", "application/json"))
        .send_body(body)
        .await
        .expect("send");
    let body = resp.json::<Value>().await.expect("json body");
    (resp.status(), body)
}

/// Splits an SSE body into its `data:` payloads.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data event: {e:?}"))
                .to_owned()
        })
        .collect()
}

#[actix_web::test]
async fn health() {
    let up = start(UpstreamConfig::default());
    assert!(up.base_url().starts_with("http://127.0.0.1:"));
    assert_ne!(up.port(), 0);
    let (status, body) = get(&up, "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "status": "ok" }));
}

#[actix_web::test]
async fn models_list_and_load() {
    let up = start(UpstreamConfig::default());
    let (status, body) = get(&up, "/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "models": [
            { "id": "echo-1", "loaded": true },
            { "id": "echo-large", "loaded": true },
        ]})
    );

    let (status, body) = post(&up, "/models/load", &json!({ "model": "echo-xl" })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "status": "loaded", "model": "echo-xl" }));
    let (_, body) = get(&up, "/models").await;
    assert_eq!(
        body["models"][2],
        json!({ "id": "echo-xl", "loaded": true })
    );

    let (status, body) = post(&up, "/models/load", &json!({ "model": 7 })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "model");

    let (status, body) = get(&up, "/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["object"], "list");
    assert_eq!(
        body["data"][0],
        json!({ "id": "echo-1", "object": "model", "created": 0, "owned_by": "infergate-dev" })
    );
    assert_eq!(body["data"].as_array().map(Vec::len), Some(3));
}

#[actix_web::test]
async fn inference_echo_is_deterministic() {
    let up = start(UpstreamConfig::default());
    let req = json!({ "prompt": "  hello   wide world ", "model": "echo-large" });
    let (status, first) = post(&up, "/inference", &req).await;
    assert_eq!(status, StatusCode::OK);
    let (_, second) = post(&up, "/inference", &req).await;
    assert_eq!(first, second);
    assert_eq!(
        first,
        json!({
            "model": "echo-large",
            "output": "echo:   hello   wide world ",
            "tokens": 4,
            "received_prompt": "  hello   wide world ",
        })
    );

    let (_, truncated) = post(
        &up,
        "/inference",
        &json!({ "prompt": "a b c d e", "max_tokens": 3 }),
    )
    .await;
    assert_eq!(truncated["output"], "echo: a b");
    assert_eq!(truncated["tokens"], 3);
    assert_eq!(truncated["model"], "echo-1");
}

#[actix_web::test]
async fn inference_batch() {
    let up = start(UpstreamConfig::default());
    let (status, body) = post(
        &up,
        "/inference/batch",
        &json!({ "requests": [
            { "prompt": "one" },
            { "prompt": "two three", "model": "echo-large", "max_tokens": 2 },
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "results": [
            { "model": "echo-1", "output": "echo: one", "tokens": 2, "received_prompt": "one" },
            { "model": "echo-large", "output": "echo: two", "tokens": 2, "received_prompt": "two three" },
        ]})
    );

    let (status, body) = post(
        &up,
        "/inference/batch",
        &json!({ "requests": [{ "prompt": "ok" }, { "prompt": false }] }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "requests[1].prompt");
}

#[actix_web::test]
async fn chat_completion_non_stream_shape() {
    let up = start(UpstreamConfig::default());
    let req = json!({
        "model": "echo-1",
        "messages": [
            { "role": "system", "content": "be brief" },
            { "role": "user", "content": "first question" },
            { "role": "assistant", "content": "answer" },
            { "role": "user", "content": [{ "type": "text", "text": "hello there" }] },
        ],
    });
    let (status, body) = post(&up, "/v1/chat/completions", &req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "echo-1");
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
    assert!(body["created"].is_i64());
    assert_eq!(body["choices"][0]["index"], 0);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "echo: hello there"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert_eq!(body["usage"]["prompt_tokens"], 7);
    assert_eq!(body["usage"]["total_tokens"], 10);

    // Determinism: everything but `created` is identical.
    let (_, mut again) = post(&up, "/v1/chat/completions", &req).await;
    again["created"] = body["created"].clone();
    assert_eq!(again, body);
}

#[actix_web::test]
async fn chat_streaming_is_incremental() {
    let token_delay = Duration::from_millis(50);
    let up = start(UpstreamConfig {
        token_delay,
        ..UpstreamConfig::default()
    });
    let mut resp = client()
        .post(up.url("/v1/chat/completions"))
        .send_json(&json!({
            "model": "echo-1",
            "stream": true,
            "messages": [{ "role": "user", "content": "one two three" }],
        }))
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(header("cache-control").as_deref(), Some("no-cache"));

    // Arrival instant of every network read, to show the body was not buffered server-side.
    let mut reads: Vec<(Instant, bytes::Bytes)> = Vec::new();
    while let Some(chunk) = resp.next().await {
        reads.push((Instant::now(), chunk.expect("stream chunk")));
    }
    assert!(
        reads.len() > 1,
        "expected several reads, got {}",
        reads.len()
    );

    // Instant at which each content-bearing event arrived.
    let mut buffered = String::new();
    let mut content = String::new();
    let mut content_arrivals = Vec::new();
    let mut events = Vec::new();
    for (at, chunk) in &reads {
        buffered.push_str(std::str::from_utf8(chunk).expect("utf-8 SSE"));
        while let Some(end) = buffered.find("\n\n") {
            let event: String = buffered.drain(..end + 2).collect();
            let data = sse_data(&event).remove(0);
            if data != "[DONE]" {
                let v: Value = serde_json::from_str(&data).expect("chunk json");
                assert_eq!(v["object"], "chat.completion.chunk");
                if let Some(piece) = v["choices"][0]["delta"]["content"].as_str() {
                    content.push_str(piece);
                    content_arrivals.push(*at);
                }
            }
            events.push(data);
        }
    }
    assert!(buffered.is_empty(), "trailing partial event: {buffered:?}");
    assert_eq!(content, "echo: one two three");
    assert_eq!(content_arrivals.len(), 4);
    let first = content_arrivals[0];
    let last = content_arrivals[3];
    assert!(
        last.duration_since(first) >= token_delay * 2,
        "first and last chunk arrived {:?} apart",
        last.duration_since(first)
    );
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let finish: Value = serde_json::from_str(&events[events.len() - 2]).expect("finish chunk");
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
}

#[actix_web::test]
async fn completions_plain_and_streamed() {
    let up = start(UpstreamConfig::default());
    let (status, body) = post(
        &up,
        "/v1/completions",
        &json!({ "model": "echo-1", "prompt": ["a b", "c"], "max_tokens": 2 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "echo: a");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["choices"][1]["text"], "echo: c");
    assert_eq!(body["choices"][1]["index"], 1);
    assert_eq!(body["choices"][1]["finish_reason"], "stop");

    let mut resp = client()
        .post(up.url("/v1/completions"))
        .send_json(&json!({ "prompt": "x y", "stream": true }))
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let raw = resp.body().await.expect("body");
    let events = sse_data(std::str::from_utf8(&raw).expect("utf-8"));
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).expect("chunk json"))
        .filter_map(|v| v["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "echo: x y");

    let (status, body) = post(&up, "/v1/completions", &json!({ "prompt": [1, 2] })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "prompt[0]");
}

#[actix_web::test]
async fn embeddings_are_deterministic_unit_vectors() {
    let up = start(UpstreamConfig::default());
    let req = json!({ "model": "echo-1", "input": ["alpha", "beta"] });
    let (status, first) = post(&up, "/v1/embeddings", &req).await;
    assert_eq!(status, StatusCode::OK);
    let (_, second) = post(&up, "/v1/embeddings", &req).await;
    assert_eq!(first, second);
    assert_eq!(first["object"], "list");
    assert_eq!(first["model"], "echo-1");
    assert_eq!(
        first["usage"],
        json!({ "prompt_tokens": 2, "total_tokens": 2 })
    );

    let vector = |i: usize| -> Vec<f64> {
        first["data"][i]["embedding"]
            .as_array()
            .expect("embedding array")
            .iter()
            .map(|x| x.as_f64().expect("float"))
            .collect()
    };
    assert_eq!(first["data"][1]["index"], 1);
    assert_eq!(first["data"][0]["object"], "embedding");
    let (a, b) = (vector(0), vector(1));
    assert_eq!(a.len(), 16);
    assert_eq!(b.len(), 16);
    assert_ne!(a, b);
    let norm = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");

    // A single string gives the same vector as the same string inside an array.
    let (_, single) = post(&up, "/v1/embeddings", &json!({ "input": "alpha" })).await;
    assert_eq!(
        single["data"][0]["embedding"],
        first["data"][0]["embedding"]
    );

    // base64 is 16 little-endian f32s = 64 bytes = 88 base64 characters.
    let (_, b64) = post(
        &up,
        "/v1/embeddings",
        &json!({ "input": "alpha", "encoding_format": "base64" }),
    )
    .await;
    assert_eq!(b64["data"][0]["embedding"].as_str().map(str::len), Some(88));
}

#[actix_web::test]
async fn debug_echo_shows_headers_and_body() {
    let up = start(UpstreamConfig::default());
    let mut resp = client()
        .put(up.url("/v1/debug/request?b=2&a=1"))
        .insert_header(("X-Custom", "first"))
        .append_header(("x-custom", "second"))
        .insert_header(("Authorization", "Bearer upstream-key"))
        .send_body("raw body ✓")
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.json::<Value>().await.expect("json");
    assert_eq!(body["method"], "PUT");
    assert_eq!(body["path"], "/v1/debug/request");
    assert_eq!(body["query"], "b=2&a=1");
    assert_eq!(body["headers"]["x-custom"], "first, second");
    assert_eq!(body["headers"]["authorization"], "Bearer upstream-key");
    assert_eq!(body["body"], "raw body ✓");

    let (status, body) = get(&up, "/debug/request/sub/path").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["method"], "GET");
    assert_eq!(body["path"], "/debug/request/sub/path");
    assert_eq!(body["body"], "");
}

#[actix_web::test]
async fn x_dev_status_forces_status() {
    let up = start(UpstreamConfig::default());
    let mut resp = client()
        .post(up.url("/v1/chat/completions"))
        .insert_header(("X-Dev-Status", "503"))
        .send_json(&json!({ "messages": [{ "role": "user", "content": "hi" }] }))
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = resp.json::<Value>().await.expect("json");
    assert_eq!(body["error"], "dev_forced_status");
    assert!(body["detail"].is_string());

    let mut resp = client()
        .get(up.url("/health"))
        .insert_header(("X-Dev-Status", "abc"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = resp.json::<Value>().await.expect("json");
    assert_eq!(body["error"], "invalid_dev_header");
}

#[actix_web::test]
async fn x_dev_delay_and_configured_latency_delay_the_response() {
    let up = start(UpstreamConfig::default());
    let delay = Duration::from_millis(300);
    let started = Instant::now();
    let resp = client()
        .get(up.url("/health"))
        .insert_header(("X-Dev-Delay-Ms", "300"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        started.elapsed() >= delay,
        "elapsed {:?}",
        started.elapsed()
    );

    let latency = Duration::from_millis(150);
    let slow = start(UpstreamConfig {
        latency,
        ..UpstreamConfig::default()
    });
    let started = Instant::now();
    let (status, _) = get(&slow, "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() >= latency,
        "elapsed {:?}",
        started.elapsed()
    );
}

#[actix_web::test]
async fn bad_json_is_400() {
    let up = start(UpstreamConfig::default());
    let (status, body) = post_raw(&up, "/inference", "{\"prompt\": ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_json");
    assert!(body["detail"].is_string());
}

#[actix_web::test]
async fn missing_or_mistyped_field_is_422_naming_it() {
    let up = start(UpstreamConfig::default());
    let (status, body) = post(&up, "/inference", &json!({ "model": "echo-1" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "missing_field");
    assert_eq!(body["field"], "prompt");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("prompt"))
    );

    let (status, body) = post(
        &up,
        "/inference",
        &json!({ "prompt": "x", "max_tokens": -1 }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "max_tokens");

    let (status, body) = post(
        &up,
        "/v1/chat/completions",
        &json!({ "messages": [{ "role": "user", "content": 5 }] }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "messages[0].content");

    let (status, body) = post_raw(&up, "/v1/embeddings", "[1, 2]").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "body");
}

#[actix_web::test]
async fn unknown_route_and_wrong_method_are_json() {
    let up = start(UpstreamConfig::default());
    let (status, body) = get(&up, "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");

    let (status, body) = get(&up, "/v1/chat/completions").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"], "method_not_allowed");
}

#[actix_web::test]
async fn stopping_refuses_new_connections() {
    let up = start(UpstreamConfig::default());
    let (status, _) = get(&up, "/health").await;
    assert_eq!(status, StatusCode::OK);
    up.handle().stop(false).await;
    let err = awc::Client::default().get(up.url("/health")).send().await;
    assert!(err.is_err(), "request after stop should fail to connect");
}

/// The gateway's tests may use plain tokio runtimes; `start` must not need an actix System.
#[tokio::test]
async fn starts_under_plain_tokio_runtime() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = start(UpstreamConfig::default());
    let mut stream = tokio::net::TcpStream::connect(up.local_addr())
        .await
        .expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("{\"status\":\"ok\"}"), "{response}");
    up.handle().stop(true).await;
}
