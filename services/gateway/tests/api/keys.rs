//! Hashed API keys in the gateway: verification, caching, revocation, expiry, per-key limits and
//! model allowlists, the wrong-key flood, and JWTs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use infergate_keystore::{KeyPatch, KeyStore, format};
use infergate_policy::Role;
use infergate_testkit::eventually;

use crate::helpers::*;

#[actix_web::test]
async fn hashed_keys_verify_once_then_come_from_the_cache() {
    let (app, store) = app_with_store(&[]).await;
    let (key, id) = mint(&store, Role::User, |_| {}).await;
    for _ in 0..10 {
        let r = app.get("/protected", Some(&key)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["key_id"], id);
    }
    let stats = &app.state.verifier.stats;
    assert_eq!(
        stats.argon2_verifications.load(Ordering::Relaxed),
        1,
        "argon2 runs once per key per process"
    );
    assert!(stats.cache_hits.load(Ordering::Relaxed) >= 9);
    let metrics = app.get("/metrics", Some(ADMIN_KEY)).await.text();
    assert!(
        metrics.contains("infergate_argon2_verifications_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("infergate_key_cache_lookups_total{result=\"hit\"}"),
        "{metrics}"
    );
}

#[actix_web::test]
async fn wrong_secrets_and_typos_are_refused() {
    let (app, store) = app_with_store(&[]).await;
    let (key, _) = mint(&store, Role::User, |_| {}).await;
    // Same id, another secret (with a valid checksum): one argon2 run, then refused.
    let other = format::generate("igk").unwrap();
    let parts: Vec<&str> = key.split('_').collect();
    let forged = format::with_checksum(&format!("igk_{}_{}", parts[1], other.secret()));
    assert!(format::parse(&forged).is_ok());
    let r = app.get("/protected", Some(&forged)).await;
    assert_error_shape(&r, 401, "invalid_credentials");
    // A typo fails the checksum: no store read, no hashing.
    let before = app
        .state
        .verifier
        .stats
        .argon2_verifications
        .load(Ordering::Relaxed);
    let mut typo = key.clone().into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
    let r = app
        .get("/protected", Some(std::str::from_utf8(&typo).unwrap()))
        .await;
    assert_error_shape(&r, 401, "invalid_credentials");
    assert_eq!(
        app.state
            .verifier
            .stats
            .argon2_verifications
            .load(Ordering::Relaxed),
        before
    );
    // The real key still works.
    assert_eq!(app.get("/protected", Some(&key)).await.status, 200);
}

#[actix_web::test]
async fn revocation_is_seen_through_the_change_feed() {
    let (app, store) = app_with_store(&[]).await;
    let (key, id) = mint(&store, Role::User, |_| {}).await;
    assert_eq!(app.get("/protected", Some(&key)).await.status, 200);
    store
        .update(
            &id,
            KeyPatch {
                revoked_at: Some(Some(Utc::now())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let took = eventually(
        Duration::from_secs(10),
        "the revocation is seen",
        || async { app.get("/protected", Some(&key)).await.status == 401 },
    )
    .await;
    let r = app.get("/protected", Some(&key)).await;
    assert_error_shape(&r, 401, "invalid_credentials");
    eprintln!("revocation seen after {took:?}");
}

#[actix_web::test]
async fn expired_keys_are_refused_on_time() {
    let (app, store) = app_with_store(&[]).await;
    let (old, _) = mint(&store, Role::User, |r| {
        r.expires_at = Some(Utc::now() - chrono::Duration::days(1))
    })
    .await;
    assert_error_shape(
        &app.get("/protected", Some(&old)).await,
        401,
        "expired_credentials",
    );
    // A cached key expiring later is refused the moment it expires, cache or not.
    let (soon, _) = mint(&store, Role::User, |r| {
        r.expires_at = Some(Utc::now() + chrono::Duration::milliseconds(600))
    })
    .await;
    assert_eq!(app.get("/protected", Some(&soon)).await.status, 200);
    eventually(
        Duration::from_secs(10),
        "the expired key is refused",
        || async { app.get("/protected", Some(&soon)).await.status == 401 },
    )
    .await;
}

#[actix_web::test]
async fn per_key_model_allowlist() {
    let (app, store) = app_with_store(&[]).await;
    let (key, _) = mint(&store, Role::User, |r| {
        r.models = Some(vec!["echo-1".into()])
    })
    .await;
    let ok = app
        .post(
            "/inference",
            Some(&key),
            r#"{"prompt":"hi","model":"echo-1"}"#,
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let r = app
        .post(
            "/inference",
            Some(&key),
            r#"{"prompt":"hi","model":"echo-large"}"#,
        )
        .await;
    let v = assert_error_shape(&r, 403, "model_not_allowed");
    assert!(v["detail"].as_str().unwrap().contains("echo-large"), "{v}");
    let r = app
        .post("/inference", Some(&key), r#"{"prompt":"hi"}"#)
        .await;
    assert_error_shape(&r, 403, "model_not_allowed");
    let r = app
        .post(
            "/inference/batch",
            Some(&key),
            r#"{"requests":[{"prompt":"a","model":"echo-1"},{"prompt":"b","model":"echo-large"}]}"#,
        )
        .await;
    assert_error_shape(&r, 403, "model_not_allowed");
    let r = app
        .post(
            "/v1/chat/completions",
            Some(&key),
            r#"{"model":"echo-1","messages":[{"role":"user","content":"x"}]}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    // Keys without a list may use any model.
    let (free, _) = mint(&store, Role::User, |_| {}).await;
    assert_eq!(
        app.post(
            "/inference",
            Some(&free),
            r#"{"prompt":"hi","model":"echo-large"}"#
        )
        .await
        .status,
        200
    );
}

#[actix_web::test]
async fn per_key_rate_limit_override() {
    let (app, store) = app_with_store(&[]).await;
    let (key, _) = mint(&store, Role::User, |r| {
        r.rate_limit = Some("2/minute".parse().unwrap())
    })
    .await;
    let statuses = [
        app.get("/protected", Some(&key)).await.status,
        app.get("/protected", Some(&key)).await.status,
        app.get("/protected", Some(&key)).await.status,
    ];
    assert_eq!(statuses, [200, 200, 429]);
}

#[actix_web::test]
async fn a_flood_of_wrong_keys_does_not_stall_other_traffic() {
    // The flood comes through a trusted proxy from many addresses, so per-IP limits do not stop
    // it early: what is tested is that argon2 work cannot take the workers.
    let (app, store) = app_with_store(&[
        ("INFERGATE_TRUSTED_PROXIES", "127.0.0.1"),
        ("INFERGATE_WORKERS", "2"),
    ])
    .await;
    let (good, id) = mint(&store, Role::User, |_| {}).await;
    assert_eq!(app.get("/protected", Some(&good)).await.status, 200);
    // Well-formed keys for an existing id, each with a different secret: every one costs argon2.
    let wrong: Vec<String> = (0..40)
        .map(|_| {
            let k = format::generate("igk").unwrap();
            let mut parts: Vec<String> = k.expose().split('_').map(str::to_string).collect();
            parts[1] = id.clone();
            format::with_checksum(&format!("{}_{}_{}", parts[0], parts[1], parts[2]))
        })
        .collect();
    let port = app.port;
    let flood: Vec<_> = wrong
        .into_iter()
        .enumerate()
        .map(|(i, key)| {
            actix_web::rt::spawn(async move {
                let client = awc::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .finish();
                let res = client
                    .get(format!("http://127.0.0.1:{port}/protected"))
                    .insert_header(("X-API-Key", key))
                    .insert_header(("X-Forwarded-For", format!("198.51.100.{}", i + 1)))
                    .send()
                    .await;
                (
                    res.map(|r| r.status().as_u16()).unwrap_or(0),
                    Instant::now(),
                )
            })
        })
        .collect();
    // Wait until the flood is actually being verified.
    eventually(
        Duration::from_secs(10),
        "the flood is being verified",
        || async {
            app.state
                .verifier
                .stats
                .argon2_verifications
                .load(Ordering::Relaxed)
                >= 3
        },
    )
    .await;
    let mut last_ok = Instant::now();
    for _ in 0..20 {
        assert_eq!(app.get("/protected", Some(&good)).await.status, 200);
        assert_eq!(app.get("/health", None).await.status, 200);
        last_ok = Instant::now();
    }
    let mut finished = Vec::new();
    for f in flood {
        finished.push(f.await.unwrap());
    }
    assert!(
        finished.iter().all(|(s, _)| *s == 401 || *s == 503),
        "{finished:?}"
    );
    let flood_done = finished.iter().map(|(_, t)| *t).max().unwrap();
    assert!(
        last_ok < flood_done,
        "cached and public traffic finished before the flood did"
    );
    let ran = app
        .state
        .verifier
        .stats
        .argon2_verifications
        .load(Ordering::Relaxed);
    eprintln!(
        "flood: {ran} argon2 runs; other traffic done {:?} before the flood",
        flood_done - last_ok
    );
}

#[actix_web::test]
async fn jwts_are_a_second_credential() {
    let dir = tempfile::tempdir().unwrap();
    let env = jwt_env(dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (app, store) = app_with_store(&env).await;
    let issuer = infergate_tokens::TokenIssuer::from_settings(&app.state.cfg.jwt).unwrap();
    let (_, id) = mint(&store, Role::User, |r| {
        r.models = Some(vec!["echo-1".into()])
    })
    .await;
    let record = store.get(&id).await.unwrap().unwrap().record;
    let (token, claims) = issuer.issue(&record, Utc::now()).unwrap();
    assert_eq!(claims.sub, id);

    let bearer = |t: &str| {
        app.client
            .get(app.url("/protected"))
            .insert_header(("Authorization", format!("Bearer {t}")))
    };
    let r = app.send(bearer(&token), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["key_id"], id);
    assert_eq!(r.json()["role"], "user");
    // The key's model allowlist travels with its tokens.
    let req = app
        .client
        .post(app.url("/inference"))
        .insert_header(("Authorization", format!("Bearer {token}")));
    let r = app
        .send(req, Some(r#"{"prompt":"x","model":"echo-large"}"#))
        .await;
    assert_error_shape(&r, 403, "model_not_allowed");

    // Tampered, unsigned and garbage tokens are refused.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[2] = parts[2].chars().rev().collect();
    assert_eq!(app.send(bearer(&parts.join(".")), None).await.status, 401);
    let none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        token.split('.').nth(1).unwrap()
    );
    assert_eq!(app.send(bearer(&none), None).await.status, 401);

    // Revoking the key kills its tokens.
    store
        .update(
            &id,
            KeyPatch {
                revoked_at: Some(Some(Utc::now())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the revoked key's token is refused",
        || async { app.send(bearer(&token), None).await.status == 401 },
    )
    .await;
    let metrics = app.get("/metrics", Some(ADMIN_KEY)).await.text();
    assert!(
        metrics.contains("infergate_auth_failures_total{reason=\"revoked\"}"),
        "{metrics}"
    );
}

/// The default file store: keys written by another process (key-admin, the CLI) and hand edits
/// of the legacy section are picked up without a restart.
#[actix_web::test]
async fn the_file_store_is_reloaded_without_a_restart() {
    use infergate_keystore::FileKeyStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api_keys.yaml");
    std::fs::write(
        &path,
        "keys:\n  seed-key-000000000001:\n    name: seed\n    role: user\n",
    )
    .unwrap();
    let app = spawn_app(&[("INFERGATE_KEYS_FILE", path.to_str().unwrap())]).await;
    assert_eq!(
        app.get("/protected", Some("seed-key-000000000001"))
            .await
            .status,
        200
    );

    // Another writer mints a hashed key into the same file.
    let writer: Arc<dyn KeyStore> = Arc::new(FileKeyStore::open(&path).unwrap());
    let (key, id) = mint(&writer, Role::User, |_| {}).await;
    let took = eventually(
        Duration::from_secs(10),
        "the other writer's key is accepted",
        || async { app.get("/protected", Some(&key)).await.status == 200 },
    )
    .await;
    eprintln!("new key accepted after {took:?}");
    // The legacy section survived the write, and revocation by the other writer propagates.
    assert_eq!(
        app.get("/protected", Some("seed-key-000000000001"))
            .await
            .status,
        200
    );
    writer
        .update(
            &id,
            KeyPatch {
                revoked_at: Some(Some(Utc::now())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the other writer's revocation is seen",
        || async { app.get("/protected", Some(&key)).await.status == 401 },
    )
    .await;
}
