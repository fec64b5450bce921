//! Paths and framing: traversal forms, smuggling, oversized and slow requests, stalled bodies,
//! connection caps, protocol upgrades and `Expect: 100-continue`.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use crate::raw::{connect_from, get, json_body, read_all, send_from, status};

const TRAVERSALS: &[&str] = &[
    "/v1/..;/models/load",
    "/v1/%2e%2e;/models/load",
    "/v1/..%3b/models/load",
    "/v1/%2e%2e/models/load",
    "/v1/%c0%ae%c0%ae/models/load",
    "/v1/%e0%80%ae%e0%80%ae/models/load",
    "/v1/%ef%bc%8e%ef%bc%8e/models/load",
    "/v1/%u002e%u002e/models/load",
    "/v1/..%20/models/load",
    "/v1/%25252e%25252e/models/load",
    "/v1/%2525252e%2525252e/models/load",
    "/v1/..%2fmodels/load",
    "/v1/..%5cmodels/load",
    "/v1/..\\models/load",
    "/v1/chat/completions/../../load_lora_adapter",
    "/v1/./load_lora_adapter",
    "/v1/models;x=1",
];

#[actix_web::test]
async fn every_traversal_form_is_refused_before_the_upstream() {
    let app = spawn_app(&[]).await;
    let key = format!("X-API-Key: {ADMIN_KEY}");
    for path in TRAVERSALS {
        let raw = send_from("127.0.0.1", app.port, &get(path, &[&key])).await;
        assert_eq!(status(&raw), 400, "{path}: {raw}");
        assert_eq!(json_body(&raw)["code"], "suspicious_input", "{path}");
    }
}

#[actix_web::test]
async fn the_upstream_receives_exactly_the_path_that_was_authorised() {
    let app = spawn_app(&[]).await;
    let key = format!("X-API-Key: {ADMIN_KEY}");
    for path in [
        "/v1/debug/request",
        "/v1/debug/request/a%20b",
        "/v1/debug/request/%61bc",
        "/v1/debug/request/caf%C3%A9",
        "/v1/debug/request/x.y",
    ] {
        let raw = send_from("127.0.0.1", app.port, &get(path, &[&key])).await;
        assert_eq!(status(&raw), 200, "{path}: {raw}");
        assert_eq!(json_body(&raw)["path"], *path, "bytes changed on the way");
    }
    // The decoded path is what is authorised: an encoded admin-only path is still admin-only.
    let user = format!("X-API-Key: {USER_KEY}");
    let raw = send_from("127.0.0.1", app.port, &get("/v1/debug/%72equest", &[&user])).await;
    assert_eq!(status(&raw), 403, "{raw}");
}

#[actix_web::test]
async fn smuggling_and_malformed_framing_never_reach_the_upstream_as_two_requests() {
    let app = spawn_app(&[]).await;
    let k = ADMIN_KEY;
    let cases: Vec<(&str, String)> = vec![
        (
            "CL+TE",
            format!(
                "POST /inference HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {k}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/debug/request HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            ),
        ),
        (
            "duplicate CL",
            format!(
                "POST /inference HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {k}\r\nContent-Length: 15\r\nContent-Length: 0\r\nConnection: close\r\n\r\n{{\"prompt\":\"a\"}}"
            ),
        ),
        (
            "obs-fold",
            format!(
                "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Folded: a\r\n b\r\nX-API-Key: {k}\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "TE not chunked",
            format!(
                "POST /inference HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {k}\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "space before colon",
            "GET /health HTTP/1.1\r\nHost : 127.0.0.1\r\nConnection: close\r\n\r\n".to_string(),
        ),
    ];
    for (name, req) in cases {
        let raw = send_from("127.0.0.1", app.port, req.as_bytes()).await;
        let answers = raw.matches("HTTP/1.1 ").count();
        assert!(answers <= 1, "{name}: two answers: {raw}");
        let s = status(&raw);
        assert!(s == 0 || (400..500).contains(&s), "{name}: {s}: {raw}");
    }
    // Bare LF line endings: one request, one answer, never a second one smuggled behind it.
    let raw = send_from(
        "127.0.0.1",
        app.port,
        b"GET /health HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n\n",
    )
    .await;
    assert!(raw.matches("HTTP/1.1 ").count() <= 1, "{raw}");
    assert!(status(&raw) < 500, "{raw}");
}

#[actix_web::test]
async fn oversized_and_numerous_headers_are_refused() {
    let app = spawn_app(&[]).await;
    let big = format!("X-Big: {}", "a".repeat(128 * 1024));
    let raw = send_from("127.0.0.1", app.port, &get("/health", &[&big])).await;
    let s = status(&raw);
    assert!(
        s == 431 || s == 400 || s == 0,
        "{s}: {}",
        &raw[..raw.len().min(200)]
    );
    let many: Vec<String> = (0..200).map(|i| format!("X-H{i}: v")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let raw = send_from("127.0.0.1", app.port, &get("/health", &many)).await;
    let s = status(&raw);
    assert!(s == 431 || s == 400 || s == 0, "{s}: {raw}");
    // The gateway is still there.
    assert_eq!(app.get("/health", None).await.status, 200);
}

#[actix_web::test]
async fn slow_headers_are_cut_off() {
    let app = spawn_app(&[]).await;
    let mut s = connect_from("127.0.0.1", app.port).await;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    // actix's client request timeout (5 s) ends a request whose headers never finish.
    let started = Instant::now();
    let raw = read_all(&mut s).await;
    // Well past the 5 s timeout, yet far from "held open for ever".
    assert!(started.elapsed() < Duration::from_secs(30), "held open");
    let st = status(&raw);
    assert!(st == 408 || st == 0, "{raw}");
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[actix_web::test]
async fn stalled_bodies_are_closed_by_the_deadline() {
    let app = spawn_app(&[("INFERGATE_BODY_TIMEOUT_SECONDS", "1")]).await;
    let baseline = open_fds();
    let head = format!(
        "POST /inference HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {USER_KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    let mut conns = Vec::new();
    for _ in 0..300 {
        let mut s = connect_from("127.0.0.1", app.port).await;
        s.write_all(head.as_bytes()).await.unwrap();
        conns.push(s);
    }
    // Every one is answered 408 in the JSON shape and closed by the server.
    let started = Instant::now();
    let answers = futures_util::future::join_all(conns.iter_mut().map(|s| async move {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }))
    .await;
    assert!(started.elapsed() < Duration::from_secs(30));
    for raw in &answers {
        assert_eq!(status(raw), 408, "{raw}");
        assert!(
            raw.to_ascii_lowercase().contains("connection: close"),
            "{raw}"
        );
        assert_eq!(json_body(raw)["code"], "request_timeout");
    }
    drop(conns);
    // The gateway's sockets are gone too: its own count of open connections drops to zero, and
    // the process's open-file count returns to its baseline (with some slack, since the other
    // tests of this binary open and close sockets meanwhile; 300 leaked ones would show).
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.state.connections.total() > 0 || open_fds() > baseline + 50 {
        assert!(
            Instant::now() < deadline,
            "{} gateway connections and {} files open, baseline {baseline}",
            app.state.connections.total(),
            open_fds()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.get("/health", None).await.status, 200);
}

#[actix_web::test]
async fn connections_per_address_are_capped() {
    let app = spawn_app(&[("INFERGATE_MAX_CONNECTIONS_PER_IP", "4")]).await;
    let keepalive = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = connect_from("127.0.0.5", app.port).await;
        s.write_all(keepalive).await.unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let raw = send_from("127.0.0.5", app.port, &get("/health", &[])).await;
    assert_eq!(status(&raw), 429, "{raw}");
    assert_eq!(json_body(&raw)["code"], "too_many_connections");
    // Other addresses are unaffected; a closed connection frees its place.
    let raw = send_from("127.0.0.6", app.port, &get("/health", &[])).await;
    assert_eq!(status(&raw), 200, "{raw}");
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let raw = send_from("127.0.0.5", app.port, &get("/health", &[])).await;
        if status(&raw) == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the place was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn upgrades_are_refused_both_ways() {
    let app = spawn_app(&[]).await;
    let key = format!("X-API-Key: {ADMIN_KEY}");
    let raw = send_from(
        "127.0.0.1",
        app.port,
        &get(
            "/v1/debug/request",
            &[&key, "Upgrade: websocket", "Sec-WebSocket-Version: 13"],
        ),
    )
    .await;
    assert_eq!(status(&raw), 400, "{raw}");
    assert_eq!(json_body(&raw)["code"], "upgrade_not_allowed");
    // An h2c offer is ignored, as a server may (RFC 7540 §3.2), not refused.
    let raw = send_from(
        "127.0.0.1",
        app.port,
        &get("/v1/debug/request", &[&key, "Upgrade: h2c"]),
    )
    .await;
    assert_eq!(status(&raw), 200, "{raw}");
    assert!(json_body(&raw)["headers"].get("upgrade").is_none());

    // An upstream that answers 101 is not relayed.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", upstream.local_addr().unwrap());
    actix_web::rt::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                .await;
        }
    });
    let app = spawn_app_with(
        &[],
        Opts {
            upstream_url: Some(url),
            ..Default::default()
        },
    )
    .await;
    let r = app.get("/v1/models", Some(USER_KEY)).await;
    assert_error_shape(&r, 502, "upstream_unavailable");
}

/// Sends headers announcing `Expect: 100-continue` and returns the first thing the gateway says.
async fn expect_answer(app: &TestApp, key: &str, length: usize) -> (tokio::net::TcpStream, String) {
    let mut s = connect_from("127.0.0.1", app.port).await;
    s.write_all(
        format!(
            "POST /v1/debug/request HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the gateway answers before any body is sent")
        .unwrap();
    (s, String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[actix_web::test]
async fn expect_100_continue_is_decided_before_the_body_is_sent() {
    let app = spawn_app_with(&[("RATE_LIMIT_ADMIN", "10/minute")], stopped_clock()).await;
    // Refusals come as the final status, never as `100`: the client need not upload anything.
    let (_, first) = expect_answer(&app, "wrong-key-000000000000000000", 10).await;
    assert!(first.starts_with("HTTP/1.1 401"), "{first}");
    assert!(!first.contains("100 Continue"), "{first}");
    assert_eq!(json_body(&first)["code"], "invalid_credentials");
    assert!(
        first.to_ascii_lowercase().contains("x-request-id:"),
        "{first}"
    );
    let (_, first) = expect_answer(&app, USER_KEY, 10).await;
    assert!(first.starts_with("HTTP/1.1 403"), "{first}");
    let (_, first) = expect_answer(&app, ADMIN_KEY, 5 * 1024 * 1024).await;
    assert!(first.starts_with("HTTP/1.1 413"), "{first}");
    assert_eq!(json_body(&first)["code"], "payload_too_large");

    // Admitted: `100`, then the body, then the answer; the limit is charged once, not twice.
    let body = r#"{"prompt":"hi"}"#;
    let (mut s, first) = expect_answer(&app, ADMIN_KEY, body.len()).await;
    assert!(first.starts_with("HTTP/1.1 100 Continue"), "{first}");
    s.write_all(body.as_bytes()).await.unwrap();
    let raw = read_all(&mut s).await;
    assert_eq!(status(&raw), 200, "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("x-ratelimit-remaining: 9"),
        "{raw}"
    );
    let seen = json_body(&raw);
    assert!(seen["headers"].get("expect").is_none(), "{seen}");
    assert_eq!(seen["body"], body);
}

#[actix_web::test]
async fn expect_100_continue_is_answered_by_the_gateway_and_not_forwarded() {
    let app = spawn_app(&[]).await;
    let body = r#"{"prompt":"hi"}"#;
    let mut s = connect_from("127.0.0.1", app.port).await;
    s.write_all(
        format!(
            "POST /v1/debug/request HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {ADMIN_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the gateway answers 100 itself")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(body.as_bytes()).await.unwrap();
    let raw = read_all(&mut s).await;
    assert_eq!(status(&raw), 200, "{raw}");
    let seen = json_body(&raw);
    assert!(seen["headers"].get("expect").is_none(), "{seen}");
    assert_eq!(seen["body"], body);
}

/// Every admin-only route, reached with a user key by every path and method trick: none gets
/// through, and what an admin sends arrives at the upstream byte for byte.
#[actix_web::test]
async fn path_and_method_tricks_never_reach_an_admin_only_route() {
    let app = spawn_app(&[("RATE_LIMIT_AUTHENTICATED", "100000/minute")]).await;
    let user = format!("X-API-Key: {USER_KEY}");
    let admin_routes = [
        ("POST", "/models/load"),
        ("GET", "/metrics"),
        ("POST", "/v1/load_lora_adapter"),
        ("POST", "/v1/unload_lora_adapter"),
        ("DELETE", "/v1/models/echo-1"),
        ("POST", "/v1/files"),
        ("POST", "/v1/fine_tuning/jobs"),
        ("GET", "/v1/debug/request"),
    ];
    for (method, path) in admin_routes {
        let (head, tail) = path.rsplit_once('/').unwrap();
        let variants = [
            path.to_string(),
            format!("{path}/"),
            format!("{head}//{tail}"),
            format!("{head}/./{tail}"),
            format!("{head}/x/../{tail}"),
            format!("{head}/%2e/{tail}"),
            format!("{head}/{}", tail.replace('a', "%61").replace('o', "%6F")),
            format!("{head}%2f{tail}"),
            format!("{path};.css"),
            format!("{path}%00"),
            format!("{path}%20"),
            format!("{path}?x=1"),
            path.to_uppercase(),
        ];
        for p in &variants {
            for m in [
                method, "POST", "GET", "PUT", "PATCH", "HEAD", "OPTIONS", "post",
            ] {
                let req = format!(
                    "{m} {p} HTTP/1.1\r\nHost: 127.0.0.1\r\n{user}\r\nX-HTTP-Method-Override: {method}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                );
                let raw = send_from("127.0.0.1", app.port, req.as_bytes()).await;
                let st = status(&raw);
                assert!(
                    !(200..300).contains(&st) || !is_admin_answer(&raw, path),
                    "{m} {p} reached {path}: {raw}"
                );
                assert!(st < 500 || st == 502 || st == 503, "{m} {p}: {raw}");
            }
        }
    }
}

/// Whether a 2xx answer is the admin route's own (and not, say, a public route's).
fn is_admin_answer(raw: &str, path: &str) -> bool {
    match path {
        "/metrics" => raw.contains("infergate_"),
        "/models/load" => raw.contains("\"loaded\""),
        _ => true,
    }
}
