//! Authentication and authorization.

use crate::helpers::*;

#[actix_web::test]
async fn missing_invalid_and_valid_keys() {
    let app = spawn_app(&[]).await;
    let r = app.get("/protected", None).await;
    assert_error_shape(&r, 401, "missing_credentials");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));

    let r = app.get("/protected", Some("wrong-key-1234567890")).await;
    assert_error_shape(&r, 401, "invalid_credentials");
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );

    let r = app.get("/protected", Some(USER_KEY)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["credential_source"], "header");
}

#[actix_web::test]
async fn header_bearer_and_query_are_accepted() {
    let app = spawn_app(&[]).await;
    let r = app
        .send(
            app.client
                .get(app.url("/protected"))
                .insert_header(("Authorization", format!("Bearer {USER_KEY}"))),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["credential_source"], "bearer");

    let r = app
        .get(&format!("/protected?api_key={USER_KEY}"), None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["credential_source"], "query");

    let r = app
        .send(
            app.client
                .get(app.url("/protected"))
                .insert_header(("Authorization", "Basic dXNlcjpwdw==")),
            None,
        )
        .await;
    assert_error_shape(&r, 401, "invalid_credentials");
}

#[actix_web::test]
async fn query_parameter_can_be_switched_off() {
    let app = spawn_app(&[("INFERGATE_API_KEY_QUERY_ENABLED", "false")]).await;
    let r = app
        .get(&format!("/protected?api_key={USER_KEY}"), None)
        .await;
    assert_error_shape(&r, 401, "missing_credentials");
}

#[actix_web::test]
async fn custom_header_name() {
    let app = spawn_app(&[("INFERGATE_API_KEY_HEADER", "X-Gateway-Token")]).await;
    let r = app
        .send(
            app.client
                .get(app.url("/protected"))
                .insert_header(("X-Gateway-Token", USER_KEY)),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    // The default header name no longer carries a key.
    assert_eq!(app.get("/protected", Some(USER_KEY)).await.status, 401);
}

#[actix_web::test]
async fn expired_keys_from_the_seed_json_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    std::fs::write(
        &path,
        r#"{"keys": {"old-key-00000000000001": {"name": "old", "role": "user", "expires": "2020-01-01T00:00:00"},
                      "new-key-00000000000001": {"name": "new", "role": "user", "expires": "2999-01-19T00:00:00"}}}"#,
    )
    .unwrap();
    let app = spawn_app(&[("INFERGATE_KEYS_FILE", path.to_str().unwrap())]).await;
    let r = app.get("/protected", Some("old-key-00000000000001")).await;
    let v = assert_error_shape(&r, 401, "expired_credentials");
    assert!(v["detail"].as_str().unwrap().contains("expired"));
    assert_eq!(
        app.get("/protected", Some("new-key-00000000000001"))
            .await
            .status,
        200
    );
    // Keys from the environment keep working beside the file.
    assert_eq!(app.get("/protected", Some(USER_KEY)).await.status, 200);
}

#[actix_web::test]
async fn rbac_matrix() {
    let app = spawn_app(&[]).await;
    let load = r#"{"model":"echo-large"}"#;
    let r = app.post("/models/load", Some(READONLY_KEY), load).await;
    assert_error_shape(&r, 403, "forbidden");
    assert_eq!(
        app.post("/models/load", Some(USER_KEY), load).await.status,
        403
    );
    assert_eq!(
        app.post("/models/load", Some(ADMIN_KEY), load).await.status,
        200
    );

    let infer = r#"{"prompt":"hi"}"#;
    let cases: &[(&str, &str, Option<&str>, u16)] = &[
        (USER_KEY, "GET /models", None, 200),
        (READONLY_KEY, "GET /models", None, 200),
        (USER_KEY, "POST /inference", Some(infer), 200),
        (READONLY_KEY, "POST /inference", Some(infer), 403),
        (ADMIN_KEY, "POST /inference", Some(infer), 200),
        (
            USER_KEY,
            "POST /inference/batch",
            Some(r#"{"requests":[{"prompt":"a"}]}"#),
            200,
        ),
        (
            READONLY_KEY,
            "POST /inference/batch",
            Some(r#"{"requests":[{"prompt":"a"}]}"#),
            403,
        ),
        (USER_KEY, "GET /v1/models", None, 200),
        (READONLY_KEY, "GET /v1/models", None, 403),
        (USER_KEY, "GET /metrics", None, 403),
        (READONLY_KEY, "GET /metrics", None, 200),
        (ADMIN_KEY, "GET /metrics", None, 200),
        (
            USER_KEY,
            "POST /api/test",
            Some(r#"{"test_name":"t"}"#),
            200,
        ),
        (
            READONLY_KEY,
            "POST /api/test",
            Some(r#"{"test_name":"t"}"#),
            403,
        ),
        (READONLY_KEY, "GET /api/status", None, 200),
        (READONLY_KEY, "GET /health/detailed", None, 200),
        (USER_KEY, "GET /health/detailed", None, 200),
        (READONLY_KEY, "GET /protected", None, 200),
    ];
    for (key, route, body, want) in cases {
        let (method, path) = route.split_once(' ').unwrap();
        let r = match (method, body) {
            ("GET", _) => app.get(path, Some(key)).await,
            (_, Some(b)) => app.post(path, Some(key), b).await,
            _ => unreachable!(),
        };
        assert_eq!(r.status, *want, "{key} {route}: {}", r.text());
    }
}

#[actix_web::test]
async fn authentication_can_be_disabled() {
    let app = spawn_app(&[("API_KEY_AUTH_ENABLED", "false")]).await;
    assert_eq!(
        app.post("/inference", None, r#"{"prompt":"hi"}"#)
            .await
            .status,
        200
    );
    assert_eq!(
        app.get("/protected", None).await.json()["authenticated"],
        false
    );
}

#[actix_web::test]
async fn permissions_can_be_overridden_in_config() {
    let yaml = "auth:\n  permissions:\n    readonly: [\"GET /models\", \"POST /inference\"]\n";
    let app = spawn_app_with(
        &[],
        Opts {
            yaml: Some(yaml.into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        app.post("/inference", Some(READONLY_KEY), r#"{"prompt":"x"}"#)
            .await
            .status,
        200
    );
    assert_eq!(app.get("/metrics", Some(READONLY_KEY)).await.status, 403);
}
