//! Every refused input is a 422 naming its field (or a 400 for a body that is not JSON at all).

use serde_json::json;

use crate::helpers::{assert_error_shape, assert_invalid, spawn_app};

#[actix_web::test]
async fn create_refuses_each_bad_field_by_name() {
    let app = spawn_app(&[]).await;
    let long = "x".repeat(101);
    let big = "y".repeat(17 * 1024);
    let cases = [
        (json!({"role": "user"}), "name"),
        (json!({"name": "", "role": "user"}), "name"),
        (json!({"name": "   ", "role": "user"}), "name"),
        (json!({"name": long, "role": "user"}), "name"),
        (json!({"name": 5, "role": "user"}), "name"),
        (json!({"name": "n"}), "role"),
        (json!({"name": "n", "role": "superuser"}), "role"),
        (
            json!({"name": "n", "role": "user", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"name": "n", "role": "user", "expires_at": "next tuesday"}),
            "expires_at",
        ),
        (
            json!({"name": "n", "role": "user", "expires_at": "2099-01-01T00:00:00Z", "expires_in_days": 3}),
            "expires_at",
        ),
        (
            json!({"name": "n", "role": "user", "expires_in_days": 0}),
            "expires_in_days",
        ),
        (
            json!({"name": "n", "role": "user", "expires_in_days": 3651}),
            "expires_in_days",
        ),
        (
            json!({"name": "n", "role": "user", "expires_in_days": "7"}),
            "expires_in_days",
        ),
        (
            json!({"name": "n", "role": "user", "rate_limit": "100/fortnight"}),
            "rate_limit",
        ),
        (
            json!({"name": "n", "role": "user", "rate_limit": "0/minute"}),
            "rate_limit",
        ),
        (
            json!({"name": "n", "role": "user", "rate_limit": 100}),
            "rate_limit",
        ),
        (
            json!({"name": "n", "role": "user", "models": "llama"}),
            "models",
        ),
        (
            json!({"name": "n", "role": "user", "models": ["llama", 3]}),
            "models",
        ),
        (
            json!({"name": "n", "role": "user", "models": [""]}),
            "models",
        ),
        (
            json!({"name": "n", "role": "user", "models": vec!["m"; 101]}),
            "models",
        ),
        (
            json!({"name": "n", "role": "user", "metadata": ["not", "an", "object"]}),
            "metadata",
        ),
        (
            json!({"name": "n", "role": "user", "metadata": {"blob": big}}),
            "metadata",
        ),
        (
            json!({"name": "n", "role": "user", "prefix": "Bad_Prefix"}),
            "prefix",
        ),
        (
            json!({"name": "n", "role": "user", "expires": 30}),
            "expires",
        ),
        (
            json!({"name": "n", "role": "user", "revoked_at": null}),
            "revoked_at",
        ),
    ];
    for (body, field) in cases {
        let r = app.admin_post("/v1/keys", &body.to_string()).await;
        assert_invalid(&r, field);
    }
    assert_invalid(&app.admin_post("/v1/keys", "[1, 2]").await, "body");
    assert_error_shape(
        &app.admin_post("/v1/keys", "{not json").await,
        400,
        "malformed_json",
    );
    assert_error_shape(&app.admin_post("/v1/keys", "").await, 400, "malformed_json");
    // Nothing was created by any of them.
    assert_eq!(app.admin_get("/v1/keys").await.json()["total"], 1);
}

#[actix_web::test]
async fn update_refuses_unknown_and_bad_fields() {
    let app = spawn_app(&[]).await;
    let (_, id) = app.create_key("patch-me", "user").await;
    let path = format!("/v1/keys/{id}");
    for (body, field) in [
        (json!({"nmae": "typo"}), "nmae"),
        (json!({"revoked_at": null}), "revoked_at"),
        (json!({"prefix": "abc"}), "prefix"),
        (json!({"role": "root"}), "role"),
        (json!({"name": ""}), "name"),
        (
            json!({"expires_at": "2030-01-01T00:00:00Z", "expires_in_days": 1}),
            "expires_at",
        ),
        (json!({"expires_in_days": null}), "expires_in_days"),
        (json!({"rate_limit": "fast"}), "rate_limit"),
        (json!({"models": [null]}), "models"),
        (json!({"metadata": "x"}), "metadata"),
        (json!({}), "body"),
    ] {
        assert_invalid(&app.admin_patch(&path, &body.to_string()).await, field);
    }
    assert_eq!(
        app.admin_get(&path).await.json()["name"],
        "patch-me",
        "unchanged"
    );
}

#[actix_web::test]
async fn queries_and_rotation_bodies_are_checked_too() {
    let app = spawn_app(&[]).await;
    for (q, field) in [
        ("role=god", "role"),
        ("state=sleeping", "state"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("offset=-1", "offset"),
        ("colour=blue", "colour"),
    ] {
        assert_invalid(&app.admin_get(&format!("/v1/keys?{q}")).await, field);
    }
    assert_eq!(app.admin_get("/v1/keys?limit=500").await.status, 200);
    for (q, field) in [
        ("since=yesterday", "since"),
        ("limit=1001", "limit"),
        ("who=me", "who"),
    ] {
        assert_invalid(&app.admin_get(&format!("/v1/audit?{q}")).await, field);
    }
    let (_, id) = app.create_key("rotate-me", "user").await;
    let path = format!("/v1/keys/{id}/rotate");
    for body in [
        r#"{"grace_seconds": -1}"#,
        r#"{"grace_seconds": 604801}"#,
        r#"{"grace_seconds": "1"}"#,
    ] {
        assert_invalid(&app.admin_post(&path, body).await, "grace_seconds");
    }
    assert_invalid(&app.admin_post(&path, r#"{"grace": 5}"#).await, "grace");
}

#[actix_web::test]
async fn oversized_bodies_are_refused() {
    let app = spawn_app(&[]).await;
    let body = json!({"name": "n", "role": "user", "metadata": {"x": "z".repeat(70 * 1024)}});
    let r = app.admin_post("/v1/keys", &body.to_string()).await;
    assert_error_shape(&r, 413, "payload_too_large");
}
