//! Who may call what: admin keys only on /v1/keys, /v1/audit and /metrics; any active key on
//! /v1/tokens; every refusal a JSON 401/403.

use infergate_keystore::format;
use std::sync::Arc;

use infergate_keystore::{KeyRecord, KeyStore, MemoryKeyStore, StoredKey, hash};
use infergate_policy::Role;

use crate::helpers::{Opts, assert_error_shape, spawn_app, spawn_app_with};

#[actix_web::test]
async fn missing_malformed_and_unknown_keys_get_401() {
    let app = spawn_app(&[]).await;
    let r = app.get("/v1/keys", None).await;
    assert_error_shape(&r, 401, "missing_credentials");
    assert!(r.header("www-authenticate").is_some());
    for bad in [
        "not-a-key",
        "igk_short_x_y",
        &app.admin_key[..app.admin_key.len() - 1],
    ] {
        let v = assert_error_shape(
            &app.get("/v1/keys", Some(bad)).await,
            401,
            "invalid_credentials",
        );
        assert!(v["detail"].as_str().unwrap().contains("well-formed"), "{v}");
    }
    // Well formed, unknown id: refused after one store read, no hashing.
    let unknown = format::generate("igk").unwrap();
    assert_error_shape(
        &app.get("/v1/keys", Some(unknown.expose())).await,
        401,
        "invalid_credentials",
    );
    let r = app
        .send(
            app.client
                .get(app.url("/v1/keys"))
                .insert_header(("Authorization", "Basic abc")),
            None,
        )
        .await;
    assert_error_shape(&r, 401, "invalid_credentials");
}

#[actix_web::test]
async fn admin_keys_pass_as_header_or_bearer_and_user_keys_get_403() {
    let app = spawn_app(&[]).await;
    assert_eq!(app.admin_get("/v1/keys").await.status, 200);
    let r = app
        .send(
            app.client
                .get(app.url("/v1/keys"))
                .insert_header(("Authorization", format!("Bearer {}", app.admin_key))),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    for role in ["user", "readonly"] {
        let (key, _) = app.create_key(role, role).await;
        let v = assert_error_shape(&app.get("/v1/keys", Some(&key)).await, 403, "forbidden");
        assert!(v["detail"].as_str().unwrap().contains(role), "{v}");
        assert_eq!(
            app.post("/v1/keys", Some(&key), r#"{"name":"x","role":"admin"}"#)
                .await
                .status,
            403
        );
        assert_eq!(app.get("/v1/audit", Some(&key)).await.status, 403);
    }
}

#[actix_web::test]
async fn revoked_and_expired_admin_keys_get_401() {
    let app = spawn_app(&[]).await;
    let (second, id) = app.create_key("second-admin", "admin").await;
    assert_eq!(
        app.get("/v1/keys", Some(&second)).await.status,
        200,
        "cached as valid now"
    );
    assert_eq!(
        app.admin_post(&format!("/v1/keys/{id}/revoke"), "")
            .await
            .status,
        200
    );
    assert_error_shape(
        &app.get("/v1/keys", Some(&second)).await,
        401,
        "invalid_credentials",
    );

    let (third, id) = app.create_key("third-admin", "admin").await;
    assert_eq!(app.get("/v1/keys", Some(&third)).await.status, 200);
    let r = app
        .admin_patch(
            &format!("/v1/keys/{id}"),
            r#"{"expires_at": "2001-01-01T00:00:00Z"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_error_shape(
        &app.get("/v1/keys", Some(&third)).await,
        401,
        "expired_credentials",
    );

    // Demoted admin: 403 at once, not after the cache's lifetime.
    let (fourth, id) = app.create_key("fourth-admin", "admin").await;
    assert_eq!(app.get("/v1/keys", Some(&fourth)).await.status, 200);
    assert_eq!(
        app.admin_patch(&format!("/v1/keys/{id}"), r#"{"role": "user"}"#)
            .await
            .status,
        200
    );
    assert_error_shape(&app.get("/v1/keys", Some(&fourth)).await, 403, "forbidden");
}

#[actix_web::test]
async fn repeated_admin_calls_do_not_rehash() {
    let app = spawn_app(&[]).await;
    use std::sync::atomic::Ordering;
    let stats = &app.state.verifier.stats;
    assert_eq!(app.admin_get("/v1/keys").await.status, 200);
    let after_first = stats.argon2_verifications.load(Ordering::Relaxed);
    for _ in 0..5 {
        assert_eq!(app.admin_get("/v1/keys").await.status, 200);
    }
    assert_eq!(
        stats.argon2_verifications.load(Ordering::Relaxed),
        after_first
    );
    assert!(stats.cache_hits.load(Ordering::Relaxed) >= 5);
}

#[actix_web::test]
async fn a_legacy_plaintext_admin_key_works_with_actor_bootstrap_admin() {
    let legacy = "legacy-admin-plaintext-key-0123456789";
    let app = spawn_app_with(&[("ADMIN_API_KEY", legacy)], Opts::default()).await;
    let r = app.get("/v1/keys", Some(legacy)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Nothing was stored for it, and with a legacy admin key no key is minted either.
    assert_eq!(r.json()["total"], 0);
    let r = app
        .post(
            "/v1/keys",
            Some(legacy),
            r#"{"name": "made-by-legacy", "role": "user"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["record"]["created_by"], "bootstrap-admin");
    let entries = app.audit_as(legacy, "action=create").await;
    assert_eq!(entries[0]["actor"], "bootstrap-admin");
    assert_error_shape(
        &app.get("/v1/keys", Some("legacy-admin-plaintext-key-012345678"))
            .await,
        401,
        "invalid_credentials",
    );
    // It is not a key: no token for it.
    assert_error_shape(
        &app.post("/v1/tokens", Some(legacy), "").await,
        403,
        "forbidden",
    );
}

#[actix_web::test]
async fn a_known_id_with_the_wrong_secret_gets_401() {
    let store = Arc::new(MemoryKeyStore::new());
    let presented = format::generate("igk").unwrap();
    let other = format::generate("igk").unwrap();
    let mut record = KeyRecord::new(presented.id.as_str(), "same-id", Role::Admin, "test");
    record.prefix = "igk".into();
    store
        .create(StoredKey {
            record,
            secret_hash: hash::hash_secret(other.secret(), Default::default()).unwrap(),
        })
        .await
        .unwrap();
    let app = spawn_app_with(
        &[],
        Opts {
            store: Some(store),
            ..Opts::default()
        },
    )
    .await;
    let r = app.get("/v1/keys", Some(presented.expose())).await;
    assert_error_shape(&r, 401, "invalid_credentials");
}
