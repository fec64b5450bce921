//! `POST /v1/tokens`: any active key exchanges itself for a JWT the gateway's verifier accepts.

use chrono::Utc;
use infergate_tokens::TokenVerifier;
use serde_json::json;

use crate::helpers::{assert_error_shape, spawn_app, spawn_jwt_app};

#[actix_web::test]
async fn any_active_key_gets_a_token_the_verifier_accepts() {
    let keys = tempfile::tempdir().unwrap();
    let app = spawn_jwt_app(keys.path()).await;
    let (key, rec) = app
        .create(json!({"name": "reader", "role": "readonly", "models": ["llama-3-8b"], "expires_in_days": 1}))
        .await;
    let r = app.post("/v1/tokens", Some(&key), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    assert_eq!(v["token_type"], "Bearer");
    let expires_in = v["expires_in"].as_i64().unwrap();
    assert!((890..=900).contains(&expires_in), "default ttl 900 s: {v}");
    assert!(v["expires_at"].is_string());
    let verifier = TokenVerifier::from_settings(&app.state.cfg.jwt).unwrap();
    let verified = verifier.verify(v["token"].as_str().unwrap()).unwrap();
    let c = &verified.claims;
    assert!(!verified.external);
    assert_eq!(c.sub, rec["id"].as_str().unwrap());
    assert_eq!(c.role.as_str(), "readonly");
    assert_eq!(c.models.as_deref(), Some(&["llama-3-8b".to_string()][..]));
    assert_eq!(
        (c.iss.as_str(), c.aud.as_str()),
        ("infergate", "infergate-gateway")
    );
    assert!(c.exp - Utc::now().timestamp() <= 900);
    assert_eq!(v["claims"]["sub"], rec["id"]);
    assert_eq!(v["claims"]["jti"].as_str(), Some(c.jti.as_str()));
    // Bearer works too, and an admin key gets one as well.
    let r = app
        .send(
            app.client
                .post(app.url("/v1/tokens"))
                .insert_header(("Authorization", format!("Bearer {}", app.admin_key))),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains(&app.admin_key));
    // The audit names the key, never the token.
    let entries = app
        .audit(&format!(
            "action=token&target={}",
            rec["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["outcome"], "success");
    assert!(
        !entries[0]
            .to_string()
            .contains(v["token"].as_str().unwrap())
    );
}

#[actix_web::test]
async fn revoked_and_unknown_keys_get_no_token() {
    let keys = tempfile::tempdir().unwrap();
    let app = spawn_jwt_app(keys.path()).await;
    let (key, id) = app.create_key("short-lived", "user").await;
    assert_eq!(app.post("/v1/tokens", Some(&key), "").await.status, 200);
    assert_eq!(
        app.admin_post(&format!("/v1/keys/{id}/revoke"), "")
            .await
            .status,
        200
    );
    assert_error_shape(
        &app.post("/v1/tokens", Some(&key), "").await,
        401,
        "invalid_credentials",
    );
    assert_error_shape(
        &app.post("/v1/tokens", None, "").await,
        401,
        "missing_credentials",
    );
    let entries = app.audit("action=token").await;
    let outcomes: Vec<&str> = entries
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["success", "failure", "failure"], "{entries:?}");
    assert_eq!(entries[1]["actor"], "anonymous");
    assert_eq!(entries[1]["detail"]["claimed_key_id"], id.as_str());
}

#[actix_web::test]
async fn disabled_jwt_is_a_404_jwt_disabled() {
    let app = spawn_app(&[]).await;
    let (key, _) = app.create_key("no-jwt", "user").await;
    let v = assert_error_shape(
        &app.post("/v1/tokens", Some(&key), "").await,
        404,
        "jwt_disabled",
    );
    assert!(v["detail"].as_str().unwrap().contains("jwt.enabled"), "{v}");
    // Still authenticated first: an anonymous caller learns nothing.
    assert_error_shape(
        &app.post("/v1/tokens", None, "").await,
        401,
        "missing_credentials",
    );
    // Enabled without a usable signing key: the same answer (the reason is logged at startup).
    let app = spawn_app(&[
        ("INFERGATE_JWT_ENABLED", "true"),
        ("INFERGATE_JWT_PRIVATE_KEY_FILE", "/nonexistent/jwt.pem"),
    ])
    .await;
    let (key, _) = app.create_key("no-jwt", "user").await;
    assert_error_shape(
        &app.post("/v1/tokens", Some(&key), "").await,
        404,
        "jwt_disabled",
    );
}
