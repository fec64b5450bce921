//! Host and absolute-form tricks, CORS origin reflection, and JWT attacks, over HTTP.

use chrono::Utc;
use infergate_policy::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::helpers::*;
use crate::raw::{json_body, send_from, status};

async fn raw(app: &TestApp, request: &str) -> String {
    send_from("127.0.0.1", app.port, request.as_bytes()).await
}

#[actix_web::test]
async fn host_tricks_are_refused() {
    let app = spawn_app(&[]).await;
    for (name, req) in [
        (
            "two Host headers",
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "absolute form naming another host",
            "GET http://evil.example/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        ),
        (
            "userinfo in Host",
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1@evil.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "untrusted Host",
            "GET /health HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "no Host in HTTP/1.1",
            "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
        ),
    ] {
        let r = raw(&app, req).await;
        assert_eq!(status(&r), 400, "{name}: {r}");
        // The HTTP parser refuses some of these itself, with an empty 400, before the gateway's
        // own check could; every one the gateway answers is its JSON `invalid_host`.
        if !r.to_ascii_lowercase().contains("content-length: 0") {
            assert_eq!(json_body(&r)["code"], "invalid_host", "{name}");
        }
    }
    // The trusted forms pass: absolute form naming a trusted host, a port on the Host.
    for req in [
        "GET http://127.0.0.1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: localhost:8000\r\nConnection: close\r\n\r\n",
    ] {
        let r = raw(&app, req).await;
        assert_eq!(status(&r), 200, "{req}: {r}");
    }
}

#[actix_web::test]
async fn cors_never_reflects_an_unlisted_origin() {
    let app = spawn_app(&[("CORS_ORIGINS", "https://app.example.com")]).await;
    for origin in [
        "https://evil.example",
        "https://app.example.com.evil.net",
        "https://evilapp.example.com",
        "http://app.example.com",
        "null",
        "https://APP.example.com.",
    ] {
        let req = app
            .client
            .get(app.url("/v1/models"))
            .insert_header(("X-API-Key", USER_KEY))
            .insert_header(("Origin", origin));
        let r = app.send(req, None).await;
        assert!(
            r.header("access-control-allow-origin").is_none(),
            "{origin} reflected"
        );
        assert!(r.header("access-control-allow-credentials").is_none());
        let pre = app
            .client
            .request(actix_web::http::Method::OPTIONS, app.url("/v1/models"))
            .insert_header(("Origin", origin))
            .insert_header(("Access-Control-Request-Method", "GET"));
        let r = app.send(pre, None).await;
        assert!(
            r.header("access-control-allow-origin").is_none(),
            "{origin} reflected on a preflight"
        );
    }
    let req = app
        .client
        .get(app.url("/v1/models"))
        .insert_header(("X-API-Key", USER_KEY))
        .insert_header(("Origin", "https://app.example.com"));
    let r = app.send(req, None).await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
}

fn b64(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    // base64url without padding, by hand: the one encoder this test needs.
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = v.to_string().into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            let _ = out.write_char(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[actix_web::test]
async fn forged_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let env = jwt_env(dir.path());
    let public = std::fs::read_to_string(dir.path().join("jwt.pub")).unwrap();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (app, store) = app_with_store(&env).await;
    let issuer = infergate_tokens::TokenIssuer::from_settings(&app.state.cfg.jwt).unwrap();
    let (_, id) = mint(&store, Role::User, |_| {}).await;
    let record = store.get(&id).await.unwrap().unwrap().record;
    let (token, _) = issuer.issue(&record, Utc::now()).unwrap();
    let claims: serde_json::Value = {
        let payload = token.split('.').nth(1).unwrap();
        let mut padded = payload.to_string();
        while padded.len() % 4 != 0 {
            padded.push('=');
        }
        let std = padded.replace('-', "+").replace('_', "/");
        serde_json::from_slice(&decode_b64(&std)).unwrap()
    };
    let get = |t: String| {
        app.client
            .get(app.url("/metrics"))
            .insert_header(("Authorization", format!("Bearer {t}")))
    };
    // The genuine token is a user's: /metrics is not for it.
    assert_eq!(app.send(get(token.clone()), None).await.status, 403);

    let mut admin = claims.clone();
    admin["role"] = json!("admin");
    let forged = [
        // alg none, claiming admin.
        format!(
            "{}.{}.",
            b64(&json!({"alg":"none","typ":"JWT"})),
            b64(&admin)
        ),
        // HS256 "signed" with the public key as the secret (algorithm confusion).
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &admin,
            &EncodingKey::from_secret(public.as_bytes()),
        )
        .unwrap(),
        // The genuine header and signature over an edited payload.
        {
            let parts: Vec<&str> = token.split('.').collect();
            format!("{}.{}.{}", parts[0], b64(&admin), parts[2])
        },
        // A kid pointing somewhere else.
        {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("../../../../dev/null".into());
            jsonwebtoken::encode(&h, &admin, &EncodingKey::from_secret(b"")).unwrap()
        },
        // Oversized.
        format!(
            "{}.{}.x",
            b64(&json!({"alg":"EdDSA"})),
            "A".repeat(64 * 1024)
        ),
    ];
    for (i, t) in forged.into_iter().enumerate() {
        let r = app.send(get(t), None).await;
        assert!(
            r.status == 401 || r.status == 400 || r.status == 431,
            "forgery {i}: {} {}",
            r.status,
            r.text()
        );
        assert_ne!(r.status, 200, "forgery {i} accepted");
    }
}

fn decode_b64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            _ => 63,
        }
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let real: Vec<u8> = chunk.iter().copied().filter(|c| *c != b'=').collect();
        let n = real.iter().fold(0u32, |n, c| n << 6 | val(*c)) << (6 * (4 - real.len()));
        for i in 0..real.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i) & 0xff) as u8);
        }
    }
    out
}
