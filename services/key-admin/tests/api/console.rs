//! The operator console's sessions over HTTP: the cookie's attributes, CSRF on state-changing
//! calls, sign-out, sessions dying with their key, refused and rate-limited sign-ins (audited),
//! and the page's headers. (A real browser drives the page in `tests/browser.rs`.)

use serde_json::{Value, json};

use crate::helpers::{Opts, TestApp, assert_error_shape, spawn_app, spawn_app_with};

/// Signs in with `key`: (the cookie to send back, the CSRF token, the raw Set-Cookie).
async fn sign_in(app: &TestApp, key: &str) -> (String, String, String) {
    let r = app
        .post("/console/session", None, &json!({"key": key}).to_string())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    let pair = set.split(';').next().unwrap().to_string();
    let v = r.json();
    assert!(!r.text().contains(key), "the key is not echoed");
    (pair, v["csrf_token"].as_str().unwrap().to_string(), set)
}

async fn with_session(
    app: &TestApp,
    method: awc::http::Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<&str>,
) -> crate::helpers::Resp {
    let mut req = app
        .client
        .request(method, app.url(path))
        .insert_header(("Cookie", cookie))
        .insert_header(("Content-Type", "application/json"));
    if let Some(t) = csrf {
        req = req.insert_header(("X-CSRF-Token", t));
    }
    app.send(req, body).await
}

#[actix_web::test]
async fn a_session_is_a_strict_httponly_cookie_and_state_changes_need_its_csrf_token() {
    let app = spawn_app(&[]).await;
    let (cookie, csrf, set) = sign_in(&app, &app.admin_key).await;
    let attrs = set.to_ascii_lowercase();
    for a in ["httponly", "samesite=strict", "path=/", "max-age=900"] {
        assert!(attrs.contains(a), "{a} missing from {set}");
    }
    assert!(
        !attrs.contains("secure"),
        "not Secure over plain HTTP by default: {set}"
    );
    use awc::http::Method;
    let list = with_session(&app, Method::GET, "/v1/keys", &cookie, None, None).await;
    assert_eq!(
        list.status,
        200,
        "a session reads like a key: {}",
        list.text()
    );
    let body = json!({"name": "from-console", "role": "user"}).to_string();
    let r = with_session(&app, Method::POST, "/v1/keys", &cookie, None, Some(&body)).await;
    assert_error_shape(&r, 403, "csrf_token_invalid");
    let r = with_session(
        &app,
        Method::POST,
        "/v1/keys",
        &cookie,
        Some("0".repeat(64).as_str()),
        Some(&body),
    )
    .await;
    assert_error_shape(&r, 403, "csrf_token_invalid");
    let r = with_session(
        &app,
        Method::POST,
        "/v1/keys",
        &cookie,
        Some(&csrf),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // The action is the admin key's, in the audit log.
    let entries = app.audit("action=create").await;
    assert!(
        entries
            .iter()
            .any(|e| e["actor"] == app.admin_id.as_str() && e["outcome"] == "success"),
        "{entries:?}"
    );
    // The page reloaded finds its session (and the token) again.
    let me = with_session(&app, Method::GET, "/console/session", &cookie, None, None).await;
    assert_eq!(me.json()["csrf_token"], csrf.as_str());
    assert_eq!(me.json()["actor"], app.admin_id.as_str());
}

#[actix_web::test]
async fn sign_out_ends_the_session_on_the_server() {
    let app = spawn_app(&[]).await;
    let (cookie, csrf, _) = sign_in(&app, &app.admin_key).await;
    use awc::http::Method;
    let r = with_session(
        &app,
        Method::DELETE,
        "/console/session",
        &cookie,
        None,
        None,
    )
    .await;
    assert_error_shape(&r, 403, "csrf_token_invalid");
    let r = with_session(
        &app,
        Method::DELETE,
        "/console/session",
        &cookie,
        Some(&csrf),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("set-cookie").unwrap().contains("ig_console=;"));
    // The old cookie, replayed, is refused.
    let r = with_session(&app, Method::GET, "/v1/keys", &cookie, None, None).await;
    assert_error_shape(&r, 401, "session_expired");
    let entries = app.audit("action=console_sign_out").await;
    assert_eq!(entries.len(), 1);
}

#[actix_web::test]
async fn a_session_dies_with_the_key_that_opened_it() {
    let app = spawn_app(&[]).await;
    let (other_key, other_id) = app.create_key("second-admin", "admin").await;
    let (cookie, _, _) = sign_in(&app, &other_key).await;
    use awc::http::Method;
    assert_eq!(
        with_session(&app, Method::GET, "/v1/keys", &cookie, None, None)
            .await
            .status,
        200
    );
    let r = app
        .admin_post(&format!("/v1/keys/{other_id}/revoke"), "{}")
        .await;
    assert_eq!(r.status, 200);
    let r = with_session(&app, Method::GET, "/v1/keys", &cookie, None, None).await;
    assert_error_shape(&r, 401, "session_expired");
}

#[actix_web::test]
async fn wrong_and_non_admin_keys_are_refused_audited_and_rate_limited() {
    let app = spawn_app_with(
        &[],
        Opts {
            yaml: Some("console:\n  failed_sign_ins_per_minute: 3\n".into()),
            ..Default::default()
        },
    )
    .await;
    let (user_key, _) = app.create_key("a-user", "user").await;
    let r = app.post("/console/session", None, "{}").await;
    assert_error_shape(&r, 422, "validation_error");
    let r = app
        .post(
            "/console/session",
            None,
            &json!({"key": user_key}).to_string(),
        )
        .await;
    assert_error_shape(&r, 403, "forbidden");
    assert!(r.header("set-cookie").is_none());
    let wrong =
        json!({"key": "igk_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb_cccccc"})
            .to_string();
    for _ in 0..2 {
        let r = app.post("/console/session", None, &wrong).await;
        assert!(r.status == 401, "{}", r.text());
    }
    // Three failures spent the budget: even the right key waits now.
    let r = app
        .post(
            "/console/session",
            None,
            &json!({"key": app.admin_key}).to_string(),
        )
        .await;
    let v = assert_error_shape(&r, 429, "rate_limited");
    assert!(r.header("retry-after").is_some(), "{v}");
    let failures: Vec<Value> = app
        .audit("action=console_sign_in")
        .await
        .into_iter()
        .filter(|e| e["outcome"] == "failure")
        .collect();
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(
        !serde_json::to_string(&failures)
            .unwrap()
            .contains(&user_key)
    );
}

#[actix_web::test]
async fn the_page_and_its_assets_allow_no_inline_script_and_no_other_origin() {
    let app = spawn_app(&[]).await;
    for path in ["/console", "/console/console.js", "/console/console.css"] {
        let r = app.get(path, None).await;
        assert_eq!(r.status, 200, "{path}");
        let csp = r.header("content-security-policy").unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert!(
            !r.text().contains("http://") && !r.text().contains("https://") || path != "/console"
        );
    }
    let page = app.get("/console", None).await.text();
    assert!(
        !page.contains("<script>") && !page.contains("onclick="),
        "no inline script"
    );
    assert_eq!(app.get("/console/nope.js", None).await.status, 404);
}
