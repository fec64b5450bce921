//! Nothing a client sends produces a 5xx or a panic.

use crate::helpers::*;

fn status_of(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[actix_web::test]
async fn garbage_requests_never_produce_5xx() {
    let app = spawn_app(&[]).await;
    let key = USER_KEY;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let long_path = format!("/{}", "a".repeat(20_000));
    let requests: Vec<String> = vec![
        "GET /%ff%fe%00 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".into(),
        "FOO /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".into(),
        "GET http://evil.example/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".into(),
        "GET /health HTTP/1.0\r\n\r\n".into(),
        format!("GET {long_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        format!("POST /inference HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\nContent-Length: abc\r\nConnection: close\r\n\r\n"),
        format!(
            "POST /inference HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{deep}",
            deep.len()
        ),
        format!("POST /inference HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{{\"\u{1}\"}}"),
        "GET /protected HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: \r\nConnection: close\r\n\r\n".into(),
        "GET /protected HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer\r\nConnection: close\r\n\r\n".into(),
        "GET /protected?api_key=%ZZ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".into(),
        "GET /protected?api_key=%C3%28 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".into(),
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: \u{e9}t\u{e9}\r\nConnection: close\r\n\r\n".into(),
        format!("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nZZ\r\n"),
        format!("DELETE /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"),
        format!("POST /v1/unknown HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nnope!"),
    ];
    for req in &requests {
        let raw = app.raw(req).await;
        let status = status_of(&raw);
        let shown: String = req.chars().take(80).collect();
        assert!(
            (100..500).contains(&status) || raw.is_empty(),
            "{shown:?} → {status}: {}",
            &raw[..raw.len().min(400)]
        );
    }
    // Still serving.
    assert_eq!(app.get("/health", None).await.status, 200);
    // Invalid UTF-8 in a header value is read lossily, not a failure.
    let raw_bytes =
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Odd: \xff\xfe\r\nConnection: close\r\n\r\n";
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    s.write_all(raw_bytes).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&out)), 200);
}
