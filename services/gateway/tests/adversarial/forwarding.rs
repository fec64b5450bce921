//! Client address and scheme through proxy chains, and what the upstream is told.

use crate::helpers::*;
use crate::raw::{get, json_body, send_from, status};

const PROXY: &str = "127.0.0.2";

fn wrong_key(i: usize) -> String {
    format!("X-API-Key: wrong-key-{i:020}")
}

#[actix_web::test]
async fn several_forwarded_for_lines_are_one_list_read_right_to_left() {
    let app = spawn_app_with(
        &[
            ("INFERGATE_TRUSTED_PROXIES", "127.0.0.2/32"),
            ("RATE_LIMIT_DEFAULT", "20/minute"),
        ],
        stopped_clock(),
    )
    .await;
    // HAProxy's `option forwardfor` appends its own line after the one the client sent: the
    // client rotating its own line must still land in one bucket, 5.5.5.5's.
    let (mut unauthorized, mut limited) = (0, 0);
    for i in 0..150 {
        let key = wrong_key(i);
        let fake = format!("X-Forwarded-For: 10.9.{}.{}", i / 250, i % 250);
        let raw = send_from(
            PROXY,
            app.port,
            &get("/protected", &[&key, &fake, "X-Forwarded-For: 5.5.5.5"]),
        )
        .await;
        match status(&raw) {
            401 => unauthorized += 1,
            429 => limited += 1,
            other => panic!("unexpected {other}: {raw}"),
        }
    }
    assert_eq!((unauthorized, limited), (20, 130));
}

#[actix_web::test]
async fn forwarded_entries_with_ports_are_separate_clients() {
    let app = spawn_app_with(
        &[
            ("INFERGATE_TRUSTED_PROXIES", "127.0.0.2/32"),
            ("RATE_LIMIT_DEFAULT", "3/minute"),
        ],
        stopped_clock(),
    )
    .await;
    for i in 0..5 {
        let raw = send_from(
            PROXY,
            app.port,
            &get(
                "/protected",
                &[&wrong_key(i), "X-Forwarded-For: 10.1.1.1:5000"],
            ),
        )
        .await;
        assert_eq!(status(&raw), if i < 3 { 401 } else { 429 }, "{raw}");
    }
    // Another client behind the same proxy, and an IPv6 one with a port: their own buckets, not
    // the proxy's (which is what every client shared before).
    for xff in ["10.1.1.2:5000", "[2001:db8::7]:443"] {
        let raw = send_from(
            PROXY,
            app.port,
            &get(
                "/protected",
                &[&wrong_key(9), &format!("X-Forwarded-For: {xff}")],
            ),
        )
        .await;
        assert_eq!(status(&raw), 401, "{xff}: {raw}");
    }
}

#[actix_web::test]
async fn forwarded_proto_is_read_right_to_left_under_https_only() {
    let app = spawn_app(&[
        ("INFERGATE_TRUSTED_PROXIES", "127.0.0.2/32"),
        ("HTTPS_ONLY", "true"),
        ("INFERGATE_HTTPS_REDIRECT", "false"),
    ])
    .await;
    for (lines, want) in [
        (&["X-Forwarded-Proto: https"][..], 200),
        (&["X-Forwarded-Proto: https, http"][..], 403),
        (
            &["X-Forwarded-Proto: https", "X-Forwarded-Proto: http"][..],
            403,
        ),
        (&["X-Forwarded-Proto: http, https"][..], 200),
    ] {
        let raw = send_from(PROXY, app.port, &get("/health", lines)).await;
        assert_eq!(status(&raw), want, "{lines:?}: {raw}");
    }
    // From anyone but a trusted proxy the header means nothing.
    let raw = send_from(
        "127.0.0.3",
        app.port,
        &get("/health", &["X-Forwarded-Proto: https"]),
    )
    .await;
    assert_eq!(status(&raw), 403, "{raw}");
}

const CLIENT_PROXY_HEADERS: &[&str] = &[
    "Forwarded: for=6.6.6.6;proto=https;host=evil.example",
    "X-Forwarded-Host: evil.example",
    "X-Forwarded-Port: 443",
    "X-Forwarded-Prefix: /admin",
    "True-Client-IP: 6.6.6.6",
    "X-Real-IP: 6.6.6.6",
    "X-Forwarded-Proto: https",
];

const OVERRIDE_HEADERS: &[&str] = &[
    "X-HTTP-Method-Override: DELETE",
    "X-Original-URL: /v1/load_lora_adapter",
    "X-Rewrite-URL: /v1/load_lora_adapter",
];

#[actix_web::test]
async fn client_sent_proxy_headers_never_reach_the_upstream() {
    let app = spawn_app(&[("INFERGATE_TRUSTED_PROXIES", "127.0.0.2/32")]).await;
    let key = format!("X-API-Key: {ADMIN_KEY}");
    let mut lines: Vec<&str> = vec![&key, "X-Forwarded-For: 6.6.6.6"];
    lines.extend_from_slice(CLIENT_PROXY_HEADERS);
    lines.extend_from_slice(OVERRIDE_HEADERS);

    // From an ordinary client: every claim is dropped, the chain rebuilt from what was seen.
    let raw = send_from("127.0.0.3", app.port, &get("/v1/debug/request", &lines)).await;
    assert_eq!(status(&raw), 200, "{raw}");
    let seen = json_body(&raw);
    let h = &seen["headers"];
    for name in [
        "forwarded",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "true-client-ip",
        "x-http-method-override",
        "x-original-url",
        "x-rewrite-url",
    ] {
        assert!(h.get(name).is_none(), "{name} forwarded: {h}");
    }
    assert_eq!(h["x-forwarded-for"], "127.0.0.3");
    assert_eq!(h["x-real-ip"], "127.0.0.3");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(!seen.to_string().contains("6.6.6.6"), "{seen}");

    // From the trusted proxy: its description of the connection passes; the method and path
    // overrides never do (they would change what was authorised).
    let raw = send_from(PROXY, app.port, &get("/v1/debug/request", &lines)).await;
    assert_eq!(status(&raw), 200, "{raw}");
    let h = &json_body(&raw)["headers"];
    assert_eq!(h["x-forwarded-host"], "evil.example");
    assert_eq!(h["x-forwarded-for"], "6.6.6.6, 127.0.0.2");
    assert_eq!(h["x-real-ip"], "6.6.6.6");
    assert_eq!(h["x-forwarded-proto"], "https");
    for name in ["x-http-method-override", "x-original-url", "x-rewrite-url"] {
        assert!(h.get(name).is_none(), "{name} forwarded: {h}");
    }
}

#[actix_web::test]
async fn client_entries_left_of_the_client_are_dropped_from_the_chain() {
    let app = spawn_app(&[("INFERGATE_TRUSTED_PROXIES", "127.0.0.2/32, 10.0.0.0/8")]).await;
    let key = format!("X-API-Key: {ADMIN_KEY}");
    let raw = send_from(
        PROXY,
        app.port,
        &get(
            "/v1/debug/request",
            &[&key, "X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.5"],
        ),
    )
    .await;
    let h = &json_body(&raw)["headers"];
    assert_eq!(h["x-forwarded-for"], "2.2.2.2, 10.0.0.5, 127.0.0.2");
    assert_eq!(h["x-real-ip"], "2.2.2.2");
}
