//! The key lifecycle over HTTP: create, read, list (pages and filters), update, revoke, delete.

use chrono::{DateTime, Utc};
use infergate_keystore::format;
use serde_json::{Value, json};

use crate::helpers::{assert_error_shape, spawn_app};

#[actix_web::test]
async fn create_returns_the_key_once_and_the_record_without_it() {
    let app = spawn_app(&[]).await;
    let body = json!({
        "name": "ci-pipeline",
        "role": "user",
        "expires_in_days": 30,
        "rate_limit": "50/minute",
        "models": ["llama-3-8b", "mistral-7b"],
        "metadata": {"team": "ml", "ticket": 42},
    });
    let r = app.admin_post("/v1/keys", &body.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    let key = v["key"].as_str().unwrap();
    let parsed = format::parse(key).expect("a well-formed key");
    let rec = &v["record"];
    assert_eq!(rec["id"], parsed.id);
    assert_eq!(rec["name"], "ci-pipeline");
    assert_eq!(rec["role"], "user");
    assert_eq!(rec["prefix"], "igk");
    assert_eq!(rec["state"], "active");
    assert_eq!(rec["rate_limit"], "50/minute");
    assert_eq!(rec["models"], json!(["llama-3-8b", "mistral-7b"]));
    assert_eq!(rec["metadata"]["ticket"], 42);
    assert_eq!(rec["created_by"], app.admin_id);
    let exp: DateTime<Utc> = rec["expires_at"].as_str().unwrap().parse().unwrap();
    let days = (exp - Utc::now()).num_hours();
    assert!((29 * 24..=30 * 24).contains(&days), "{exp}");
    assert!(!rec.to_string().contains(parsed.secret));

    let got = app.admin_get(&format!("/v1/keys/{}", parsed.id)).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["name"], "ci-pipeline");
    assert!(
        !got.text().contains(parsed.secret),
        "the secret is never returned again"
    );
    let list = app.admin_get("/v1/keys").await.text();
    assert!(!list.contains(parsed.secret));

    // A custom prefix, and no expiry when neither field is given.
    let (key, rec) = app
        .create(json!({"name": "rx", "role": "readonly", "prefix": "rx580"}))
        .await;
    assert!(key.starts_with("rx580_"), "{key}");
    assert_eq!(rec["prefix"], "rx580");
    assert_eq!(rec["expires_at"], Value::Null);
    let (_, rec) = app
        .create(json!({"name": "dated", "role": "user", "expires_at": "2031-01-01T00:00:00Z"}))
        .await;
    assert_eq!(rec["expires_at"], "2031-01-01T00:00:00Z");
}

#[actix_web::test]
async fn unknown_ids_are_404() {
    let app = spawn_app(&[]).await;
    let id = "zzzzzzzzzzzz";
    for r in [
        app.admin_get(&format!("/v1/keys/{id}")).await,
        app.admin_patch(&format!("/v1/keys/{id}"), r#"{"name": "x"}"#)
            .await,
        app.admin_post(&format!("/v1/keys/{id}/revoke"), "").await,
        app.admin_post(&format!("/v1/keys/{id}/rotate"), "{}").await,
        app.delete(&format!("/v1/keys/{id}"), Some(&app.admin_key))
            .await,
    ] {
        let v = assert_error_shape(&r, 404, "key_not_found");
        assert!(v["detail"].as_str().unwrap().contains(id));
    }
    // Ids that cannot name a key never reach the store.
    for weird in ["NOT_AN_ID", "a%20b", &"x".repeat(65)] {
        let r = app.admin_get(&format!("/v1/keys/{weird}")).await;
        assert_error_shape(&r, 404, "key_not_found");
    }
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[actix_web::test]
async fn pages_are_ordered_and_counted() {
    let app = spawn_app(&[]).await;
    let mut created = vec![app.admin_id.clone()];
    for i in 0..7 {
        let role = if i % 2 == 0 { "user" } else { "readonly" };
        created.push(app.create_key(&format!("k{i}"), role).await.1);
    }
    // Newest last; the bootstrap admin first.
    let mut seen = Vec::new();
    for (offset, expect_len) in [(0, 3), (3, 3), (6, 2), (9, 0)] {
        let r = app
            .admin_get(&format!("/v1/keys?offset={offset}&limit=3"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["total"], 8);
        assert_eq!(v["offset"], offset);
        assert_eq!(v["limit"], 3);
        let page = ids(&v);
        assert_eq!(page.len(), expect_len, "offset {offset}: {v}");
        seen.extend(page);
    }
    assert_eq!(seen, created, "pages in creation order, no gaps or repeats");
    let v = app.admin_get("/v1/keys").await.json();
    assert_eq!(v["limit"], 50, "default limit");

    let users = app.admin_get("/v1/keys?role=user").await.json();
    assert_eq!(users["total"], 4);
    assert!(
        users["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["role"] == "user")
    );
    let ro = app.admin_get("/v1/keys?role=readonly&limit=2").await.json();
    assert_eq!((ro["total"].as_u64(), ids(&ro).len()), (Some(3), 2));
}

#[actix_web::test]
async fn state_filters_see_expired_and_revoked_keys() {
    let app = spawn_app(&[]).await;
    let (_, expiring) = app.create_key("expiring", "user").await;
    let (_, revoked) = app.create_key("revoked", "user").await;
    let (_, active) = app.create_key("active", "user").await;
    // Creation refuses a past expiry; an update may set one (to expire a key now).
    let r = app
        .admin_patch(
            &format!("/v1/keys/{expiring}"),
            r#"{"expires_at": "2020-01-01T00:00:00Z"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "expired");
    assert_eq!(
        app.admin_post(&format!("/v1/keys/{revoked}/revoke"), "")
            .await
            .status,
        200
    );
    let by_state = |s: &'static str| {
        let app = &app;
        async move {
            ids(&app
                .admin_get(&format!("/v1/keys?state={s}&role=user"))
                .await
                .json())
        }
    };
    assert_eq!(by_state("expired").await, [expiring.as_str()]);
    assert_eq!(by_state("revoked").await, [revoked.as_str()]);
    assert_eq!(by_state("active").await, [active.as_str()]);
}

#[actix_web::test]
async fn update_changes_only_the_named_fields_and_null_clears() {
    let app = spawn_app(&[]).await;
    let (_, rec) = app
        .create(json!({
            "name": "before", "role": "user", "expires_in_days": 5,
            "rate_limit": "10/second", "models": ["a"], "metadata": {"k": "v"}
        }))
        .await;
    let id = rec["id"].as_str().unwrap();
    let r = app
        .admin_patch(
            &format!("/v1/keys/{id}"),
            r#"{"name": "after", "role": "readonly"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["name"].as_str(), v["role"].as_str()),
        (Some("after"), Some("readonly"))
    );
    assert_eq!(v["rate_limit"], "10/second");
    assert_eq!(v["models"], json!(["a"]));
    assert_eq!(v["expires_at"], rec["expires_at"]);
    let v = app
        .admin_patch(
            &format!("/v1/keys/{id}"),
            r#"{"expires_at": null, "rate_limit": null, "models": null, "metadata": {"n": 1}}"#,
        )
        .await
        .json();
    assert_eq!(v["expires_at"], Value::Null);
    assert_eq!(v["rate_limit"], Value::Null);
    assert_eq!(v["models"], Value::Null);
    assert_eq!(v["metadata"], json!({"n": 1}));
    let v = app
        .admin_patch(&format!("/v1/keys/{id}"), r#"{"expires_in_days": 2}"#)
        .await
        .json();
    assert!(v["expires_at"].is_string());
    assert_eq!(
        app.admin_get(&format!("/v1/keys/{id}")).await.json()["name"],
        "after"
    );
}

#[actix_web::test]
async fn revoke_and_delete_are_soft_and_idempotent() {
    let app = spawn_app(&[]).await;
    let (_, id) = app.create_key("gone", "user").await;
    let r = app.admin_post(&format!("/v1/keys/{id}/revoke"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["already_revoked"], false);
    assert_eq!(v["record"]["state"], "revoked");
    let first_at = v["record"]["revoked_at"].clone();
    let v = app
        .admin_post(&format!("/v1/keys/{id}/revoke"), "")
        .await
        .json();
    assert_eq!(v["already_revoked"], true);
    assert!(
        v["detail"].as_str().unwrap().contains("already revoked"),
        "{v}"
    );
    assert_eq!(v["record"]["revoked_at"], first_at, "unchanged");

    // DELETE revokes the key and removes it from the API (a DELETE that left the resource
    // readable is what schemathesis's use-after-free check rightly flags); the audit log keeps
    // its history.
    let (_, id) = app.create_key("deleted", "user").await;
    let r = app
        .delete(&format!("/v1/keys/{id}"), Some(&app.admin_key))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (
            r.json()["deleted"].as_bool(),
            r.json()["was_revoked"].as_bool()
        ),
        (Some(true), Some(false))
    );
    for gone in [
        app.delete(&format!("/v1/keys/{id}"), Some(&app.admin_key))
            .await,
        app.admin_get(&format!("/v1/keys/{id}")).await,
        app.admin_patch(&format!("/v1/keys/{id}"), r#"{"name": "x"}"#)
            .await,
        app.admin_post(&format!("/v1/keys/{id}/rotate"), "{}").await,
    ] {
        assert_error_shape(&gone, 404, "key_not_found");
    }
    let listed = app.admin_get("/v1/keys?state=revoked").await.json();
    assert!(!listed.to_string().contains(&id), "{listed}");
    let audit = app
        .admin_get(&format!("/v1/audit?target={id}"))
        .await
        .json();
    assert!(audit.to_string().contains("\"delete\""), "{audit}");
}

#[actix_web::test]
async fn token_budgets_and_concurrency_caps_are_set_changed_and_cleared() {
    let app = spawn_app(&[]).await;
    let (_, rec) = app
        .create(json!({
            "name": "budgeted", "role": "user",
            "tokens_per_minute": 10000, "tokens_per_day": 500000.0, "max_concurrent": 4
        }))
        .await;
    assert_eq!(
        (
            &rec["tokens_per_minute"],
            &rec["tokens_per_day"],
            &rec["max_concurrent"]
        ),
        (&json!(10000), &json!(500000), &json!(4))
    );
    let id = rec["id"].as_str().unwrap();
    let v = app
        .admin_patch(
            &format!("/v1/keys/{id}"),
            r#"{"tokens_per_minute": 20000, "max_concurrent": null}"#,
        )
        .await
        .json();
    assert_eq!(v["tokens_per_minute"], 20000);
    assert_eq!(v["tokens_per_day"], 500000, "untouched");
    assert_eq!(v["max_concurrent"], Value::Null, "null: the role's default");
    // A key without budgets shows them as null.
    let (_, plain) = app.create(json!({"name": "plain", "role": "user"})).await;
    assert_eq!(plain["tokens_per_minute"], Value::Null);
    for bad in [json!(0), json!(-5), json!(1.5), json!("100"), json!(1e13)] {
        let r = app
            .admin_post(
                "/v1/keys",
                &json!({"name": "x", "role": "user", "tokens_per_minute": bad}).to_string(),
            )
            .await;
        let v = assert_error_shape(&r, 422, "validation_error");
        assert_eq!(v["field"], "tokens_per_minute", "{bad}: {v}");
    }
}

#[actix_web::test]
async fn usage_reports_the_days_flushed_their_totals_and_the_last_use() {
    let app = spawn_app(&[]).await;
    let (_, rec) = app.create(json!({"name": "used", "role": "user"})).await;
    let id = rec["id"].as_str().unwrap().to_string();
    let empty = app.admin_get(&format!("/v1/keys/{id}/usage")).await;
    assert_eq!(empty.status, 200, "{}", empty.text());
    let v = empty.json();
    assert_eq!(v["last_used_at"], Value::Null);
    assert_eq!(v["days"], json!([]));
    assert_eq!(v["totals"]["requests"], 0);

    let today = Utc::now().date_naive();
    let last = Utc::now();
    let delta = |date, requests| infergate_keystore::UsageDelta {
        id: id.clone(),
        date,
        minute: infergate_keystore::usage::minute_of(last),
        requests,
        input_tokens: requests * 40,
        output_tokens: requests * 8,
        refused: Default::default(),
        last_used_at: last,
    };
    app.state
        .store
        .record_usage(&[delta(today, 12), delta(today.pred_opt().unwrap(), 28)])
        .await
        .unwrap();
    let v = app.admin_get(&format!("/v1/keys/{id}/usage")).await.json();
    assert_eq!(v["days"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["today"]["requests"], 12);
    // Both deltas were flushed this minute (the test's clock): the current window holds them.
    let minute = v["current_minute"]["requests"].as_u64().unwrap()
        + v["previous_minute"]["requests"].as_u64().unwrap();
    assert_eq!(minute, 40, "{v}");
    assert_eq!(v["totals"]["requests"], 40);
    assert_eq!(v["totals"]["input_tokens"], 1600);
    assert_eq!(v["days"][0]["date"], today.pred_opt().unwrap().to_string());
    assert!(v["last_used_at"].is_string());
    let one = app
        .admin_get(&format!("/v1/keys/{id}/usage?days=1"))
        .await
        .json();
    assert_eq!(one["days"].as_array().unwrap().len(), 1);
    for bad in ["0", "32", "x"] {
        let r = app
            .admin_get(&format!("/v1/keys/{id}/usage?days={bad}"))
            .await;
        assert!(
            r.status == 400 || r.status == 422,
            "days={bad}: {}",
            r.status
        );
    }
    let r = app.admin_get("/v1/keys/nosuchkey/usage").await;
    assert_error_shape(&r, 404, "key_not_found");
}

#[actix_web::test]
async fn a_search_finds_keys_by_name_or_id_and_deleted_keys_are_not_counted() {
    let app = spawn_app(&[]).await;
    let (_, a) = app
        .create(json!({"name": "Billing Service", "role": "user"}))
        .await;
    let (_, b) = app
        .create(json!({"name": "search-ci", "role": "user"}))
        .await;
    let (_, gone) = app
        .create(json!({"name": "billing-old", "role": "user"}))
        .await;
    let gone_id = gone["id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/v1/keys/{gone_id}"), Some(&app.admin_key))
            .await
            .status,
        200
    );
    let names = |v: Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["name"].as_str().unwrap().to_string())
            .collect()
    };
    let v = app.admin_get("/v1/keys?q=billing").await.json();
    assert_eq!(
        names(v.clone()),
        ["Billing Service"],
        "case-insensitive, deleted left out"
    );
    assert_eq!(v["total"], 1, "the total counts what is listed");
    let prefix = &b["id"].as_str().unwrap()[..6];
    let v = app.admin_get(&format!("/v1/keys?q={prefix}")).await.json();
    assert!(names(v).contains(&"search-ci".to_string()));
    let all = app.admin_get("/v1/keys").await.json();
    let total = all["total"].as_u64().unwrap();
    assert_eq!(total as usize, all["items"].as_array().unwrap().len());
    assert!(!all.to_string().contains(gone_id));
    let r = app
        .admin_get(&format!("/v1/keys?q={}", "x".repeat(201)))
        .await;
    assert_error_shape(&r, 422, "validation_error");
    let _ = a;
}

#[actix_web::test]
async fn the_most_used_keys_come_first() {
    let app = spawn_app(&[]).await;
    let today = Utc::now().date_naive();
    let mut ids = Vec::new();
    for (name, requests) in [("quiet", 1u64), ("busy", 50), ("idle", 0)] {
        let (_, rec) = app.create(json!({"name": name, "role": "user"})).await;
        let id = rec["id"].as_str().unwrap().to_string();
        if requests > 0 {
            app.state
                .store
                .record_usage(&[infergate_keystore::UsageDelta {
                    id: id.clone(),
                    date: today,
                    minute: infergate_keystore::usage::minute_of(Utc::now()),
                    requests,
                    input_tokens: requests * 10,
                    output_tokens: 0,
                    refused: Default::default(),
                    last_used_at: Utc::now(),
                }])
                .await
                .unwrap();
        }
        ids.push(id);
    }
    let v = app.admin_get("/v1/usage?days=7&limit=5").await.json();
    let names: Vec<&str> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["busy", "quiet"], "{v}");
    assert_eq!(v["keys"][0]["requests"], 50);
    assert_eq!(v["keys"][0]["input_tokens"], 500);
    let one = app.admin_get("/v1/usage?limit=1").await.json();
    assert_eq!(one["keys"].as_array().unwrap().len(), 1);
    assert!(app.admin_get("/v1/usage?limit=0").await.status >= 400);
}
