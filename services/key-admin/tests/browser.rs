//! The operator console in a real Chromium, driven over WebDriver (chromedriver): sign in, mint
//! a key and read it once, find it in the list, use it at a running gateway and see the call in
//! its usage, rotate it, revoke the new one and watch the gateway refuse it, filter the audit
//! log, sign out and find the session gone; a wrong key at sign-in is refused. Screenshots of
//! every page, at 1280×800 and phone size, go to `target/console-screenshots/` (look at them:
//! what a person sees is part of the test).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`make test` installs them).
// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
#[allow(dead_code, unused_imports)]
mod helpers;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use infergate_keystore::KeyStore;
use infergate_keystore::memory::MemoryKeyStore;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver on a free port, once it answers `/status`.
async fn chromedriver() -> (Driver, String) {
    let port = infergate_testkit::free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed (apt-get install chromium-driver)");
    let url = format!("http://127.0.0.1:{port}");
    let status = format!("{url}/status");
    infergate_testkit::eventually(WAIT, "chromedriver answers", || {
        let status = status.clone();
        async move {
            awc::Client::new()
                .get(status)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    (Driver(child), url)
}

async fn browser(webdriver: &str) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"]}),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(webdriver)
        .await
        .expect("a Chromium session")
}

fn shots_dir() -> std::path::PathBuf {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A screenshot at desktop size and at phone size.
async fn shoot(c: &Client, name: &str) {
    let dir = shots_dir();
    c.set_window_size(1280, 800).await.unwrap();
    std::fs::write(
        dir.join(format!("{name}.png")),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
    c.set_window_size(390, 844).await.unwrap();
    std::fs::write(
        dir.join(format!("{name}-phone.png")),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
    c.set_window_size(1280, 800).await.unwrap();
}

async fn text_of(c: &Client, id: &str) -> String {
    c.find(Locator::Id(id)).await.unwrap().text().await.unwrap()
}

/// Waits until the status line (or another element) says `needle`.
async fn until_text(c: &Client, id: &str, needle: &str) -> String {
    let mut last = String::new();
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        last = text_of(c, id).await;
        if last.contains(needle) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("#{id} never said {needle:?}; it says {last:?}");
}

/// The element, once the page shows it (views appear after their data arrived).
async fn shown(c: &Client, locator: Locator<'_>) -> fantoccini::elements::Element {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Ok(e) = c.find(locator).await
            && e.is_displayed().await.unwrap_or(false)
        {
            return e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{locator:?} never shown"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn fill(c: &Client, id: &str, value: &str) {
    let e = shown(c, Locator::Id(id)).await;
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    shown(c, Locator::Css(css)).await.click().await.unwrap();
}

/// A gateway on the same key store, on loopback.
async fn gateway(
    store: Arc<dyn KeyStore>,
    dir: &std::path::Path,
) -> (String, Arc<infergate_gateway::AppState>) {
    let upstream =
        infergate_dev_upstream::DevUpstream::start("127.0.0.1:0", Default::default()).unwrap();
    let env = infergate_config::MapSource::new([
        ("INFERGATE_LISTEN", "127.0.0.1:0".to_string()),
        ("INFERGATE_WORKERS", "1".to_string()),
        ("INFERGATE_UPSTREAM", upstream.base_url()),
        (
            "INFERGATE_KEYS_FILE",
            dir.join("none.yaml").display().to_string(),
        ),
    ]);
    let cfg = infergate_config::load_gateway(None, &env).unwrap();
    let app = infergate_gateway::Application::build_with(
        cfg,
        infergate_gateway::Overrides {
            key_store: Some(store),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let url = format!("http://127.0.0.1:{}", app.served().port());
    let state = app.served().state();
    actix_web::rt::spawn(app.run_until(std::future::pending()));
    std::mem::forget(upstream);
    (url, state)
}

async fn status_with(url: &str, key: &str) -> u16 {
    awc::Client::new()
        .get(url)
        .insert_header(("X-API-Key", key))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[actix_web::test]
async fn an_operator_manages_a_key_through_the_console() {
    let store: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
    let admin = helpers::spawn_app_with(
        &[],
        helpers::Opts {
            store: Some(store.clone()),
            ..Default::default()
        },
    )
    .await;
    let (gw, gw_state) = gateway(store.clone(), admin.dir.path()).await;
    let (_driver, webdriver) = chromedriver().await;
    let c = browser(&webdriver).await;
    let console = admin.url("/console");

    // A wrong key is refused at sign-in.
    c.goto(&console).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("admin-key"))
        .await
        .unwrap();
    shoot(&c, "01-sign-in").await;
    fill(
        &c,
        "admin-key",
        "igk_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb_cccccc",
    )
    .await;
    click(&c, "#sign-in-form button[type=submit]").await;
    until_text(&c, "status", "Sign-in refused").await;
    shoot(&c, "02-sign-in-refused").await;

    // Sign in; the key is neither kept in the field nor anywhere the page can reach.
    fill(&c, "admin-key", &admin.admin_key).await;
    click(&c, "#sign-in-form button[type=submit]").await;
    until_text(&c, "who", "signed in as").await;
    let field = c
        .find(Locator::Id("admin-key"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(
        field.as_deref(),
        Some(""),
        "the key does not stay in the field"
    );
    let stored = c
        .execute(
            "return JSON.stringify([Object.keys(localStorage), Object.keys(sessionStorage), document.cookie, location.href]);",
            vec![],
        )
        .await
        .unwrap();
    let stored = stored.as_str().unwrap().to_string();
    assert!(!stored.contains(&admin.admin_key), "{stored}");
    assert!(
        !stored.contains("ig_console"),
        "the session cookie is HttpOnly: {stored}"
    );
    shoot(&c, "03-keys").await;

    // Mint a key: shown once, with the warning.
    click(&c, "nav [data-view=mint]").await;
    fill(&c, "m-name", "console-made").await;
    fill(&c, "m-models", "echo-1").await;
    click(&c, "#mint-form button[type=submit]").await;
    until_text(&c, "status", "Minted key").await;
    let key = c
        .find(Locator::Id("minted-key"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(key.starts_with("igk_"), "{key}");
    assert!(
        text_of(&c, "minted")
            .await
            .contains("will not be shown again")
    );
    shoot(&c, "04-minted").await;
    let id = key.split('_').nth(1).unwrap().to_string();

    // It is in the list (searched by name).
    click(&c, "nav [data-view=keys]").await;
    fill(&c, "f-search", "console-made").await;
    click(&c, "#key-filters button[type=submit]").await;
    until_text(&c, "keys-table", &id).await;
    assert!(
        !text_of(&c, "keys-table").await.contains(&key),
        "the key is never listed"
    );

    // Used at the gateway, the call shows in its usage once the gateway flushed.
    infergate_testkit::eventually(WAIT, "the gateway accepts the new key", || async {
        status_with(&format!("{gw}/models"), &key).await == 200
    })
    .await;
    gw_state.usage.as_ref().unwrap().flush(&*store).await;
    click(&c, &format!("a[href='#key/{id}']")).await;
    let summary = until_text(&c, "usage-summary", "requests").await;
    assert!(summary.contains("today 1 requests"), "{summary}");
    shoot(&c, "05-key-page").await;

    // Edit a field through the same API (a concurrency cap), and see it in the record.
    fill(&c, "e-conc", "3").await;
    click(&c, "#edit-form button[type=submit]").await;
    until_text(&c, "status", "Saved").await;
    let record = text_of(&c, "key-record").await;
    assert!(
        record.contains("max_concurrent\n3") || record.contains("max_concurrent 3"),
        "{record}"
    );

    // The keys page names it among the most used.
    click(&c, "nav [data-view=keys]").await;
    until_text(&c, "top-keys", "console-made (1 requests)").await;
    fill(&c, "f-search", &id).await;
    click(&c, "#key-filters button[type=submit]").await;
    until_text(&c, "keys-table", &id).await;
    click(&c, &format!("a[href='#key/{id}']")).await;
    until_text(&c, "key-title", &id).await;

    // Rotate: the new key is shown once.
    fill(&c, "grace", "0").await;
    click(&c, "#rotate").await;
    let rotated = until_text(&c, "status", "Rotated").await;
    let new_key = c
        .find(Locator::Id("minted-key"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(new_key, key, "{rotated}");
    let new_id = new_key.split('_').nth(1).unwrap().to_string();

    // Revoke the new key (confirming by name), and the gateway refuses it.
    click(&c, "nav [data-view=keys]").await;
    fill(&c, "f-search", &new_id).await;
    click(&c, "#key-filters button[type=submit]").await;
    until_text(&c, "keys-table", &new_id).await;
    click(&c, &format!("a[href='#key/{new_id}']")).await;
    until_text(&c, "key-title", &new_id).await;
    click(&c, "#revoke").await;
    let prompt = c.get_alert_text().await.unwrap();
    assert!(
        prompt.contains(&new_id),
        "the confirmation names the key: {prompt}"
    );
    c.accept_alert().await.unwrap();
    until_text(&c, "status", "Revoked").await;
    infergate_testkit::eventually(WAIT, "the gateway refuses the revoked key", || async {
        status_with(&format!("{gw}/models"), &new_key).await == 401
    })
    .await;
    shoot(&c, "06-revoked").await;

    // The audit log, filtered, shows the revocation by this operator.
    click(&c, "nav [data-view=audit]").await;
    fill(&c, "a-action", "revoke").await;
    fill(&c, "a-target", &new_id).await;
    click(&c, "#audit-filters button[type=submit]").await;
    let audit = until_text(&c, "audit-table", &new_id).await;
    assert!(
        audit.contains(&admin.admin_id) && audit.contains("success"),
        "{audit}"
    );
    shoot(&c, "07-audit").await;

    // Sign out: the page shows the sign-in form, and reloading finds no session.
    click(&c, "#sign-out").await;
    until_text(&c, "status", "Signed out").await;
    c.goto(&console).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#view-sign-in:not([hidden])"))
        .await
        .unwrap();
    shoot(&c, "08-signed-out").await;

    c.close().await.unwrap();
}
