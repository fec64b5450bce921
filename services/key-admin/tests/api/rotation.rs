//! Rotation: a new key with the same settings; the old one keeps working for the grace period.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{assert_error_shape, eventually, spawn_app, spawn_jwt_app};

#[actix_web::test]
async fn the_old_key_works_until_the_grace_period_ends() {
    let keys = tempfile::tempdir().unwrap();
    let app = spawn_jwt_app(keys.path()).await;
    let (old_key, rec) = app
        .create(json!({
            "name": "svc", "role": "user", "expires_in_days": 10, "rate_limit": "5/second",
            "tokens_per_minute": 5000, "tokens_per_day": 90000, "max_concurrent": 3,
            "models": ["m1"], "metadata": {"owner": "team-a"}
        }))
        .await;
    let old_id = rec["id"].as_str().unwrap().to_string();
    assert_eq!(app.post("/v1/tokens", Some(&old_key), "").await.status, 200);

    let r = app
        .admin_post(
            &format!("/v1/keys/{old_id}/rotate"),
            r#"{"grace_seconds": 1}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    let new_key = v["key"].as_str().unwrap().to_string();
    let new = &v["record"];
    let previous = &v["previous"];
    assert_ne!(new["id"], rec["id"]);
    for field in [
        "name",
        "role",
        "expires_at",
        "rate_limit",
        "tokens_per_minute",
        "tokens_per_day",
        "max_concurrent",
        "models",
        "metadata",
        "prefix",
    ] {
        assert_eq!(new[field], rec[field], "{field} copied");
    }
    assert_eq!(previous["rotated_to"], new["id"]);
    assert_ne!(
        previous["expires_at"], rec["expires_at"],
        "shortened to the grace period"
    );

    assert_eq!(app.post("/v1/tokens", Some(&new_key), "").await.status, 200);
    // Inside a long grace period both keys work.
    let r = app
        .admin_post(
            &format!("/v1/keys/{}/rotate", new["id"].as_str().unwrap()),
            r#"{"grace_seconds": 3600}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let newest_key = r.json()["key"].as_str().unwrap().to_string();
    assert_eq!(
        app.post("/v1/tokens", Some(&new_key), "").await.status,
        200,
        "in grace"
    );
    assert_eq!(
        app.post("/v1/tokens", Some(&newest_key), "").await.status,
        200
    );
    // ...and is refused once it ends.
    eventually(
        Duration::from_secs(10),
        "old key refused after the grace period",
        || {
            let (app, old_key) = (&app, &old_key);
            async move { app.post("/v1/tokens", Some(old_key), "").await.status == 401 }
        },
    )
    .await;
    assert_eq!(
        app.post("/v1/tokens", Some(&newest_key), "").await.status,
        200
    );
    // (Tokens stop in the last fraction of a second already: a token's `exp` is whole seconds.)
    eventually(Duration::from_secs(5), "old key listed as expired", || {
        let (app, old_id) = (&app, &old_id);
        async move { app.admin_get(&format!("/v1/keys/{old_id}")).await.json()["state"] == "expired" }
    })
    .await;

    let audit = app.audit(&format!("action=rotate&target={old_id}")).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["detail"]["grace_seconds"], 1);
    assert_eq!(audit[0]["detail"]["new_key_id"], new["id"]);
}

#[actix_web::test]
async fn a_long_grace_keeps_both_keys_and_zero_grace_ends_the_old_key_at_once() {
    let app = spawn_app(&[]).await;
    let (old, id) = app.create_key("admin-two", "admin").await;
    let r = app
        .admin_post(
            &format!("/v1/keys/{id}/rotate"),
            r#"{"grace_seconds": 3600}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let new = r.json()["key"].as_str().unwrap().to_string();
    assert_eq!(
        app.get("/v1/keys", Some(&old)).await.status,
        200,
        "old admin key in grace"
    );
    assert_eq!(app.get("/v1/keys", Some(&new)).await.status, 200);
    // Rotating it again is refused: rotate its successor instead.
    let v = assert_error_shape(
        &app.admin_post(&format!("/v1/keys/{id}/rotate"), "").await,
        409,
        "conflict",
    );
    assert!(
        v["detail"].as_str().unwrap().contains("already rotated"),
        "{v}"
    );

    let (_, id) = app.create_key("instant", "user").await;
    let r = app.admin_post(&format!("/v1/keys/{id}/rotate"), "").await;
    assert_eq!(r.status, 201, "an empty body means grace 0: {}", r.text());
    assert_eq!(r.json()["previous"]["state"], "expired");
    let check = app.admin_get(&format!("/v1/keys/{id}")).await.json();
    assert_eq!(check["state"], "expired");
    // Revoked keys cannot be rotated.
    let (_, id) = app.create_key("revoked", "user").await;
    app.admin_post(&format!("/v1/keys/{id}/revoke"), "").await;
    assert_error_shape(
        &app.admin_post(&format!("/v1/keys/{id}/rotate"), "{}").await,
        409,
        "conflict",
    );
}
