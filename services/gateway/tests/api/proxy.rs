//! The reverse proxy: pass-through, streaming, header hygiene and failure classes.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use infergate_dev_upstream::UpstreamConfig;

use crate::helpers::*;

#[actix_web::test]
async fn bodies_pass_through() {
    let app = spawn_app(&[]).await;
    let r = app
        .post(
            "/inference",
            Some(USER_KEY),
            r#"{"prompt":"hello world","model":"echo-1"}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["output"], "echo: hello world");
    assert_eq!(v["model"], "echo-1");

    let r = app
        .post(
            "/v1/chat/completions",
            Some(USER_KEY),
            r#"{"model":"echo-1","messages":[{"role":"user","content":"ping"}]}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "echo: ping");

    let r = app
        .post(
            "/v1/embeddings",
            Some(USER_KEY),
            r#"{"model":"echo-1","input":"abc"}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["data"][0]["embedding"].as_array().unwrap().len(),
        16
    );

    // Upstream error statuses and bodies pass through untouched.
    let req = app
        .client
        .post(app.url("/inference"))
        .insert_header(("X-API-Key", USER_KEY))
        .insert_header(("X-Dev-Status", "418"));
    let r = app.send(req, Some(r#"{"prompt":"x"}"#)).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.json()["error"], "dev_forced_status");
}

/// Keep-alive toward the upstream: requests reuse pooled connections instead of opening one
/// each, counted by the upstream itself.
#[actix_web::test]
async fn upstream_connections_are_reused() {
    let app = spawn_app(&[]).await;
    let upstream = app.upstream.as_ref().unwrap();
    let chat = r#"{"model":"echo-1","messages":[{"role":"user","content":"ping"}]}"#;
    assert_eq!(
        app.post("/v1/chat/completions", Some(USER_KEY), chat)
            .await
            .status,
        200
    );
    let first = upstream.connections_accepted();
    assert!(first >= 1, "the upstream saw the request");
    for _ in 0..200 {
        let r = app.post("/v1/chat/completions", Some(USER_KEY), chat).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        upstream.connections_accepted(),
        first,
        "200 requests one after another ride the first connection"
    );
    // Eight at a time: at most eight connections in all (one worker, one pool).
    for _ in 0..25 {
        let batch = (0..8).map(|_| app.post("/v1/chat/completions", Some(USER_KEY), chat));
        for r in futures_util::future::join_all(batch).await {
            assert_eq!(r.status, 200);
        }
    }
    let total = upstream.connections_accepted();
    assert!(
        total <= first + 7,
        "{total} upstream connections for 401 requests, at most 8 at once"
    );
}

/// An upstream that closes a kept-alive connection while it sits in the pool (its own idle
/// timeout) costs the next request nothing: the gateway notices before writing to it and sends
/// the request on a fresh connection. The upstream here answers one request per connection,
/// without `Connection: close`, and reports each close.
#[actix_web::test]
async fn a_pooled_connection_the_upstream_closed_is_replaced_not_failed() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (closed_tx, closed_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // The request head and its body (Content-Length of the chat body below).
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") || !buf.ends_with(b"}") {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = br#"{"id":"x","object":"chat.completion","choices":[]}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            drop(stream);
            let _ = closed_tx.send(());
        }
    });
    let app = spawn_app_with(
        &[],
        Opts {
            upstream_url: Some(format!("http://127.0.0.1:{port}")),
            ..Default::default()
        },
    )
    .await;
    let chat = r#"{"model":"echo-1","messages":[{"role":"user","content":"ping"}]}"#;
    for i in 0..3 {
        let r = app.post("/v1/chat/completions", Some(USER_KEY), chat).await;
        assert_eq!(
            r.status,
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&r.body)
        );
        // The upstream has closed the connection the gateway just pooled.
        closed_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    }
}

#[actix_web::test]
async fn sse_streams_through_unbuffered() {
    let upstream = UpstreamConfig {
        token_delay: Duration::from_millis(150),
        ..Default::default()
    };
    let app = spawn_app_with(
        &[],
        Opts {
            upstream: Some(upstream),
            ..Default::default()
        },
    )
    .await;
    let body = r#"{"model":"echo-1","stream":true,"messages":[{"role":"user","content":"one two three four"}]}"#;
    let mut res = app
        .client
        .post(app.url("/v1/chat/completions"))
        .insert_header(("X-API-Key", USER_KEY))
        .insert_header(("Content-Type", "application/json"))
        .send_body(body)
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    assert!(res.headers().get("x-frame-options").is_some());
    let mut arrivals = Vec::new();
    let mut all = Vec::new();
    while let Some(chunk) = res.next().await {
        let chunk = chunk.unwrap();
        if chunk.windows(5).any(|w| w == b"data:") {
            arrivals.push(Instant::now());
        }
        all.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(all).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.matches("data: ").count() >= 6, "{text}");
    // Chunks arrived spread out as the upstream produced them, not in one buffered lump.
    assert!(
        arrivals.len() >= 4,
        "only {} reads: buffered?",
        arrivals.len()
    );
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(
        spread >= Duration::from_millis(300),
        "first and last chunk {spread:?} apart: buffered?"
    );
}

#[actix_web::test]
async fn credentials_are_stripped_and_forwarding_headers_set() {
    let app = spawn_app(&[("INFERGATE_UPSTREAM_API_KEY", "upstream-secret-token")]).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = app
        .client
        .post(app.url(&format!(
            "/v1/debug/request?keep=1&api_key={ADMIN_KEY}&also=2"
        )))
        .insert_header(("X-API-Key", ADMIN_KEY))
        .insert_header(("X-Request-ID", "trace-me-1"))
        .insert_header(("traceparent", traceparent))
        .insert_header(("X-Forwarded-For", "198.51.100.9"))
        .insert_header(("X-Custom", "keep-me"));
    let r = app.send(req, Some("{}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    let headers = &seen["headers"];
    assert!(headers.get("x-api-key").is_none(), "{headers}");
    assert_eq!(headers["authorization"], "Bearer upstream-secret-token");
    assert_eq!(seen["query"], "keep=1&also=2");
    assert!(!seen.to_string().contains(ADMIN_KEY));
    assert_eq!(headers["x-request-id"], "trace-me-1");
    assert_eq!(headers["traceparent"], traceparent);
    // The client's own claim is dropped: it is not a trusted proxy.
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-custom"], "keep-me");

    // Hop-by-hop headers, and those the Connection header names, stay on this hop.
    let raw = app
        .raw(&format!(
            "GET /v1/debug/request HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {ADMIN_KEY}\r\nConnection: close, X-Hop\r\nX-Hop: drop-me\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n"
        ))
        .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let lower = raw.to_ascii_lowercase();
    assert!(lower.contains("\"x-kept\":\"yes\""), "{raw}");
    for hop in ["x-hop", "keep-alive", "\"te\""] {
        assert!(
            !lower.split("\r\n\r\n").nth(1).unwrap_or("").contains(hop),
            "{hop} forwarded: {raw}"
        );
    }

    // Bearer credentials are stripped too, and a traceparent is created when missing.
    let req = app
        .client
        .get(app.url("/v1/debug/request"))
        .insert_header(("Authorization", format!("Bearer {ADMIN_KEY}")));
    let seen = app.send(req, None).await.json();
    assert_eq!(
        seen["headers"]["authorization"],
        "Bearer upstream-secret-token"
    );
    let tp = seen["headers"]["traceparent"].as_str().unwrap();
    assert_eq!(tp.len(), 55, "{tp}");
    assert!(!seen.to_string().contains(ADMIN_KEY));
}

#[actix_web::test]
async fn unreachable_upstream_is_502() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app_with(
        &[],
        Opts {
            upstream_url: Some(format!("http://127.0.0.1:{port}")),
            ..Default::default()
        },
    )
    .await;
    let r = app
        .post("/inference", Some(USER_KEY), r#"{"prompt":"x"}"#)
        .await;
    assert_error_shape(&r, 502, "upstream_unavailable");
    assert_security_headers(&r);
    let metrics = app.get("/metrics", Some(ADMIN_KEY)).await.text();
    assert!(
        metrics.contains("infergate_upstream_errors_total{kind=\"connect\"} 1"),
        "{metrics}"
    );
}

#[actix_web::test]
async fn slow_upstream_is_504() {
    let app = spawn_app(&[("INFERGATE_UPSTREAM_TIMEOUT_SECONDS", "1")]).await;
    let req = app
        .client
        .post(app.url("/inference"))
        .insert_header(("X-API-Key", USER_KEY))
        .insert_header(("X-Dev-Delay-Ms", "30000"));
    let started = Instant::now();
    let r = app.send(req, Some(r#"{"prompt":"x"}"#)).await;
    assert_error_shape(&r, 504, "upstream_timeout");
    // The 1 s timeout answered, not the upstream's 30 s; generous for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[actix_web::test]
async fn spoofed_forwarding_headers_and_disabled_query_keys_do_not_reach_upstream() {
    let app = spawn_app(&[("INFERGATE_API_KEY_QUERY_ENABLED", "false")]).await;
    let req = app
        .client
        .get(app.url(&format!("/v1/debug/request?api_key={ADMIN_KEY}&x=1")))
        .insert_header(("X-API-Key", ADMIN_KEY))
        .insert_header(("X-Forwarded-Proto", "https"))
        .insert_header(("X-Real-IP", "203.0.113.66"));
    let seen = app.send(req, None).await.json();
    assert_eq!(seen["query"], "x=1");
    assert!(!seen.to_string().contains(ADMIN_KEY));
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["x-real-ip"], "127.0.0.1");
}
