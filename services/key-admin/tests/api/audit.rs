//! The audit trail: one entry per admin action, failures included, filterable, never a secret.

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::helpers::spawn_app;

fn actions(entries: &[Value]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[actix_web::test]
async fn every_action_is_audited_with_its_outcome() {
    let app = spawn_app(&[]).await;
    let start = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let (key, id) = app.create_key("audited", "user").await;
    app.admin_patch(
        &format!("/v1/keys/{id}"),
        r#"{"name": "renamed", "models": ["m"]}"#,
    )
    .await;
    app.admin_post(&format!("/v1/keys/{id}/rotate"), r#"{"grace_seconds": 60}"#)
        .await;
    app.admin_post(&format!("/v1/keys/{id}/revoke"), "").await;
    app.delete(&format!("/v1/keys/{id}"), Some(&app.admin_key))
        .await;
    // Failures: validation, unknown id, a user key on an admin route, no key at all.
    app.admin_post("/v1/keys", r#"{"name": "x", "role": "root"}"#)
        .await;
    app.admin_patch("/v1/keys/zzzzzzzzzzzz", r#"{"name": "x"}"#)
        .await;
    let (user, user_id) = app.create_key("forbidden", "user").await;
    app.post("/v1/keys", Some(&user), r#"{"name": "x", "role": "admin"}"#)
        .await;
    app.post("/v1/keys", None, r#"{"name": "x", "role": "admin"}"#)
        .await;
    // Reads are not audited.
    app.admin_get("/v1/keys").await;

    let all = app
        .audit(&format!("since={}", start.replace('+', "%2B")))
        .await;
    let expect: Vec<(String, String)> = [
        ("create", "success"),
        ("update", "success"),
        ("rotate", "success"),
        ("revoke", "success"),
        ("delete", "success"),
        ("create", "failure"),
        ("update", "failure"),
        ("create", "success"),
        ("create", "failure"),
        ("create", "failure"),
    ]
    .iter()
    .map(|(a, o)| (a.to_string(), o.to_string()))
    .collect();
    assert_eq!(actions(&all), expect, "{all:#?}");
    for e in &all[..5] {
        assert_eq!(e["actor"], app.admin_id.as_str());
        assert_eq!(e["target"], id.as_str());
        assert_eq!(e["client_ip"], "127.0.0.1");
        assert!(e["id"].is_string() && e["at"].is_string());
    }
    assert_eq!(all[1]["detail"]["fields"], json!(["models", "name"]));
    assert_eq!(all[2]["detail"]["grace_seconds"], 60);
    // Deleting a key revoked just before.
    assert_eq!(all[4]["detail"]["was_revoked"], true);
    assert_eq!(all[5]["detail"]["field"], "role");
    assert_eq!(all[6]["detail"]["error"], "key_not_found");
    assert_eq!(all[6]["target"], "zzzzzzzzzzzz");
    assert_eq!(
        all[8]["actor"],
        user_id.as_str(),
        "a verified but forbidden key is named"
    );
    assert_eq!(all[8]["detail"]["error"], "forbidden");
    assert_eq!(all[9]["actor"], "anonymous");
    let text = serde_json::to_string(&all).unwrap();
    assert!(
        !text.contains(&key) && !text.contains(&app.admin_key),
        "no secrets in the audit log"
    );
    let secret = key.split('_').nth(2).unwrap();
    assert!(!text.contains(secret));
}

#[actix_web::test]
async fn the_audit_log_filters_and_pages() {
    let app = spawn_app(&[]).await;
    let (_, a) = app.create_key("a", "user").await;
    let (_, b) = app.create_key("b", "user").await;
    app.admin_post(&format!("/v1/keys/{a}/revoke"), "").await;
    let bootstrap = app.audit("action=bootstrap").await;
    assert_eq!(bootstrap.len(), 1, "the stored ADMIN_API_KEY is audited");
    assert_eq!(bootstrap[0]["actor"], "bootstrap");
    assert_eq!(bootstrap[0]["target"], app.admin_id.as_str());
    assert_eq!(app.audit(&format!("target={a}")).await.len(), 2);
    assert_eq!(app.audit(&format!("target={b}")).await.len(), 1);
    assert_eq!(app.audit("action=revoke").await.len(), 1);
    assert_eq!(app.audit(&format!("actor={}", app.admin_id)).await.len(), 3);
    assert_eq!(app.audit("actor=nobody").await.len(), 0);
    let page = app.audit("offset=1&limit=2").await;
    assert_eq!(
        actions(&page),
        [
            ("create".into(), "success".into()),
            ("create".into(), "success".into())
        ]
    );
    let future =
        (Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    assert!(app.audit(&format!("since={future}")).await.is_empty());
    assert_eq!(app.audit(&format!("until={future}")).await.len(), 4);
}

/// Started where the keys file's directory does not exist yet (the default `config/...` is
/// relative), key-admin creates it on first write, private; and an audit append that fails fails
/// the request, and readiness, instead of losing the entry.
#[actix_web::test]
async fn a_missing_directory_is_created_and_a_failing_audit_log_fails_loudly() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("fresh/config/api_keys.yaml");
    let app = crate::helpers::spawn_app(&[
        ("KEY_STORE", "file"),
        ("INFERGATE_KEYS_FILE", file.to_str().unwrap()),
    ])
    .await;
    let body = r#"{"name": "svc", "role": "user"}"#;
    let r = app.admin_post("/v1/keys", body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let mode = std::fs::metadata(file.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    assert_eq!(app.get("/health/ready", None).await.status, 200);

    // The audit log cannot be appended to: a directory stands where the file should be.
    let audit = root.path().join("fresh/config/api_keys.yaml.audit.jsonl");
    std::fs::remove_file(&audit).unwrap();
    std::fs::create_dir(&audit).unwrap();
    let r = app.admin_post("/v1/keys", body).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["code"], "audit_unavailable");
    let ready = app.get("/health/ready", None).await;
    assert_eq!(ready.status, 503);
    let reason = ready.json()["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("append to the audit log"), "{reason}");
    assert!(reason.contains("api_keys.yaml.audit.jsonl"), "{reason}");
    assert_eq!(app.get("/health", None).await.json()["status"], "degraded");

    // Fixed: the next action is audited again and readiness recovers.
    std::fs::remove_dir(&audit).unwrap();
    let r = app.admin_post("/v1/keys", body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(app.get("/health/ready", None).await.status, 200);
    assert_eq!(app.get("/health", None).await.json()["status"], "healthy");
}
