//! One way to start the real key-admin service for a test: `spawn_app` binds 127.0.0.1:0 with a
//! memory store (or the one given), an `ADMIN_API_KEY` of our format that the bootstrap stores,
//! and returns typed helpers. Set `TEST_LOG=1` to see the service's logs.

use std::sync::{Arc, Once};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use awc::http::header::HeaderMap;
use infergate_config::{AdminConfig, MapSource, load_admin};
use infergate_key_admin::{AppState, Application, Overrides};
use infergate_keystore::KeyStore;
use serde_json::{Value, json};

static LOG: Once = Once::new();

fn init_log() {
    LOG.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("info")
                .with_test_writer()
                .try_init();
        }
    });
}

#[derive(Default)]
pub struct Opts {
    /// Use this store instead of the configured one.
    pub store: Option<Arc<dyn KeyStore>>,
    /// Extra YAML written to a config file (for settings with no environment variable).
    pub yaml: Option<String>,
    /// Start without an `ADMIN_API_KEY` (the bootstrap then mints one, which is not returned).
    pub no_admin_key: bool,
}

pub struct TestApp {
    pub addr: String,
    #[allow(dead_code)]
    pub port: u16,
    #[allow(dead_code)]
    pub handle: ServerHandle,
    pub client: awc::Client,
    #[allow(dead_code)]
    pub state: Arc<AppState>,
    /// The admin key the bootstrap stored (our format).
    pub admin_key: String,
    pub admin_id: String,
    #[allow(dead_code)]
    pub dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn config(env: &[(&str, &str)], yaml: Option<&str>, dir: &std::path::Path) -> AdminConfig {
    let mut pairs: Vec<(String, String)> = vec![
        ("INFERGATE_ADMIN_LISTEN".into(), "127.0.0.1:0".into()),
        ("INFERGATE_ADMIN_WORKERS".into(), "1".into()),
        (
            "INFERGATE_ADMIN_SHUTDOWN_TIMEOUT_SECONDS".into(),
            "2".into(),
        ),
        ("KEY_STORE".into(), "memory".into()),
        (
            "INFERGATE_KEYS_FILE".into(),
            dir.join("keys.yaml").display().to_string(),
        ),
    ];
    for (k, v) in env {
        pairs.retain(|(pk, _)| pk != k);
        pairs.push((k.to_string(), v.to_string()));
    }
    let path = yaml.map(|y| {
        let p = dir.join("key-admin.yaml");
        std::fs::write(&p, y).unwrap();
        p
    });
    load_admin(path.as_deref(), &MapSource::new(pairs))
        .unwrap_or_else(|e| panic!("test config: {e}"))
}

pub async fn spawn_app(env: &[(&str, &str)]) -> TestApp {
    spawn_app_with(env, Opts::default()).await
}

pub async fn spawn_app_with(env: &[(&str, &str)], opts: Opts) -> TestApp {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let generated = infergate_keystore::format::generate("igk").unwrap();
    let admin_key = generated.expose().to_string();
    let mut env: Vec<(&str, &str)> = env.to_vec();
    if !opts.no_admin_key && !env.iter().any(|(k, _)| *k == "ADMIN_API_KEY") {
        env.push(("ADMIN_API_KEY", &admin_key));
    }
    let cfg = config(&env, opts.yaml.as_deref(), dir.path());
    let app = Application::build_with(cfg, Overrides { store: opts.store })
        .await
        .unwrap_or_else(|e| panic!("key-admin builds: {e}"));
    let port = app.served().port();
    let handle = app.served().handle();
    let state = app.served().state();
    actix_web::rt::spawn(app.run_until(std::future::pending()));
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .disable_redirects()
        .finish();
    TestApp {
        addr: format!("http://127.0.0.1:{port}"),
        port,
        handle,
        client,
        state,
        admin_id: generated.id.clone(),
        admin_key,
        dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.addr)
    }

    pub async fn send(&self, req: awc::ClientRequest, body: Option<&str>) -> Resp {
        let mut res = match body {
            Some(b) => req.send_body(b.to_string()).await,
            None => req.send().await,
        }
        .unwrap_or_else(|e| panic!("request failed: {e}"));
        let body = res.body().limit(16 * 1024 * 1024).await.unwrap().to_vec();
        Resp {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body,
        }
    }

    fn with_key(req: awc::ClientRequest, key: Option<&str>) -> awc::ClientRequest {
        match key {
            Some(k) => req.insert_header(("X-API-Key", k)),
            None => req,
        }
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> Resp {
        let req = Self::with_key(self.client.get(self.url(path)), key);
        self.send(req, None).await
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: &str) -> Resp {
        let req = Self::with_key(
            self.client
                .post(self.url(path))
                .insert_header(("Content-Type", "application/json")),
            key,
        );
        self.send(req, Some(body)).await
    }

    pub async fn patch(&self, path: &str, key: Option<&str>, body: &str) -> Resp {
        let req = Self::with_key(
            self.client
                .patch(self.url(path))
                .insert_header(("Content-Type", "application/json")),
            key,
        );
        self.send(req, Some(body)).await
    }

    pub async fn delete(&self, path: &str, key: Option<&str>) -> Resp {
        let req = Self::with_key(self.client.delete(self.url(path)), key);
        self.send(req, None).await
    }

    /// As admin.
    pub async fn admin_get(&self, path: &str) -> Resp {
        self.get(path, Some(&self.admin_key)).await
    }

    pub async fn admin_post(&self, path: &str, body: &str) -> Resp {
        self.post(path, Some(&self.admin_key), body).await
    }

    pub async fn admin_patch(&self, path: &str, body: &str) -> Resp {
        self.patch(path, Some(&self.admin_key), body).await
    }

    /// Creates a key as admin from a JSON body; returns (full key, record).
    pub async fn create(&self, body: Value) -> (String, Value) {
        let r = self.admin_post("/v1/keys", &body.to_string()).await;
        assert_eq!(r.status, 201, "create: {}", r.text());
        let v = r.json();
        (v["key"].as_str().unwrap().to_string(), v["record"].clone())
    }

    /// Creates a key with `role`; returns (full key, id).
    pub async fn create_key(&self, name: &str, role: &str) -> (String, String) {
        let (key, record) = self.create(json!({"name": name, "role": role})).await;
        (key, record["id"].as_str().unwrap().to_string())
    }

    /// The audit entries matching a query string (`action=create&target=…`).
    pub async fn audit(&self, query: &str) -> Vec<Value> {
        let key = self.admin_key.clone();
        self.audit_as(&key, query).await
    }

    pub async fn audit_as(&self, key: &str, query: &str) -> Vec<Value> {
        let r = self.get(&format!("/v1/audit?{query}"), Some(key)).await;
        assert_eq!(r.status, 200, "audit: {}", r.text());
        r.json()["items"].as_array().unwrap().clone()
    }
}

/// Asserts the stable error shape and returns the body.
pub fn assert_error_shape(r: &Resp, status: u16, code: &str) -> Value {
    assert_eq!(r.status, status, "status; body: {}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "content-type"
    );
    let v = r.json();
    assert_eq!(v["code"], code, "code; body: {v}");
    for field in ["error", "detail", "request_id", "timestamp"] {
        assert!(v[field].is_string(), "{field} missing in {v}");
    }
    assert_eq!(
        Some(v["request_id"].as_str().unwrap()),
        r.header("x-request-id")
    );
    v
}

/// Asserts a 422 naming `field`.
pub fn assert_invalid(r: &Resp, field: &str) {
    let v = assert_error_shape(r, 422, "validation_error");
    assert_eq!(v["field"], field, "field; body: {v}");
}

pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("x-xss-protection", "1; mode=block"),
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    (
        "permissions-policy",
        "geolocation=(), microphone=(), camera=()",
    ),
];

pub fn assert_security_headers(r: &Resp) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(
            r.header(name),
            Some(*value),
            "{name} on a {} response",
            r.status
        );
    }
    let csp = r.header("content-security-policy").expect("CSP present");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(r.header("x-request-id").is_some(), "x-request-id");
}

pub use infergate_testkit::eventually;

/// Writes a fresh Ed25519 key pair into `dir` and returns the environment that enables JWTs
/// with it.
pub fn jwt_env(dir: &std::path::Path) -> Vec<(String, String)> {
    let (private, public) = infergate_tokens::generate_ed25519_pem().unwrap();
    let private_path = dir.join("jwt-private.pem");
    let public_path = dir.join("jwt-public.pem");
    std::fs::write(&private_path, private).unwrap();
    std::fs::write(&public_path, public).unwrap();
    vec![
        ("INFERGATE_JWT_ENABLED".into(), "true".into()),
        ("INFERGATE_JWT_ALGORITHM".into(), "EdDSA".into()),
        (
            "INFERGATE_JWT_PRIVATE_KEY_FILE".into(),
            private_path.display().to_string(),
        ),
        (
            "INFERGATE_JWT_PUBLIC_KEY_FILE".into(),
            public_path.display().to_string(),
        ),
    ]
}

/// Starts an app that issues JWTs (the key files live in `keys_dir`).
pub async fn spawn_jwt_app(keys_dir: &std::path::Path) -> TestApp {
    let env = jwt_env(keys_dir);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    spawn_app(&pairs).await
}
