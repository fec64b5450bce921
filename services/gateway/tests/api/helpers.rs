//! One way to start the real gateway for a test: `spawn_app` binds 127.0.0.1:0, starts a dev
//! upstream beside it, and returns typed helpers. Set `TEST_LOG=1` to see the gateway's logs.

use std::sync::{Arc, Once};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use awc::http::header::HeaderMap;
use infergate_config::{GatewayConfig, MapSource, load_gateway};
use infergate_dev_upstream::{DevUpstream, UpstreamConfig};
use infergate_gateway::{AppState, Application, Overrides};
use infergate_keystore::memory::MemoryKeyStore;
use infergate_keystore::{HashParams, KeyRecord, KeyStore, StoredKey, format, hash};
use infergate_policy::Role;
use infergate_ratelimit::ManualClock;
use serde_json::Value;

pub const USER_KEY: &str = "test-user-key-0000000001";
pub const READONLY_KEY: &str = "test-readonly-key-000001";
pub const ADMIN_KEY: &str = "test-admin-key-000000001";

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
    pub clock: Option<ManualClock>,
    pub upstream: Option<UpstreamConfig>,
    /// Point the gateway at this URL instead of a started dev upstream.
    pub upstream_url: Option<String>,
    /// Extra YAML written to a config file (for settings with no environment variable).
    pub yaml: Option<String>,
    /// A hashed-key store to use instead of the configured one.
    pub key_store: Option<Arc<dyn infergate_keystore::KeyStore>>,
    /// A shared limiter (e.g. Redis with a manual clock) to put behind the breaker.
    pub shared_limiter: Option<Arc<dyn infergate_ratelimit::RateLimiter>>,
}

pub struct TestApp {
    pub addr: String,
    pub port: u16,
    #[allow(dead_code)]
    pub handle: ServerHandle,
    #[allow(dead_code)]
    pub upstream: Option<DevUpstream>,
    pub client: awc::Client,
    pub clock: Option<ManualClock>,
    #[allow(dead_code)]
    pub metrics_port: Option<u16>,
    pub state: Arc<AppState>,
    _dir: tempfile::TempDir,
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

pub fn config(env: &[(&str, &str)], yaml: Option<&str>, dir: &std::path::Path) -> GatewayConfig {
    let mut pairs: Vec<(String, String)> = vec![
        ("INFERGATE_LISTEN".into(), "127.0.0.1:0".into()),
        ("INFERGATE_WORKERS".into(), "1".into()),
        ("INFERGATE_SHUTDOWN_TIMEOUT_SECONDS".into(), "2".into()),
        ("API_KEY".into(), ADMIN_KEY.into()),
        (
            "API_KEYS".into(),
            format!("{USER_KEY}:user,{READONLY_KEY}:readonly"),
        ),
        (
            "INFERGATE_KEYS_FILE".into(),
            dir.join("no-such-keys.yaml").display().to_string(),
        ),
    ];
    for (k, v) in env {
        pairs.retain(|(pk, _)| pk != k);
        pairs.push((k.to_string(), v.to_string()));
    }
    let path = yaml.map(|y| {
        let p = dir.join("gateway.yaml");
        std::fs::write(&p, y).unwrap();
        p
    });
    load_gateway(path.as_deref(), &MapSource::new(pairs))
        .unwrap_or_else(|e| panic!("test config: {e}"))
}

pub async fn spawn_app(env: &[(&str, &str)]) -> TestApp {
    spawn_app_with(env, Opts::default()).await
}

pub async fn spawn_app_with(env: &[(&str, &str)], opts: Opts) -> TestApp {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let upstream = match &opts.upstream_url {
        Some(_) => None,
        None => Some(
            DevUpstream::start("127.0.0.1:0", opts.upstream.clone().unwrap_or_default()).unwrap(),
        ),
    };
    let url = opts
        .upstream_url
        .clone()
        .or_else(|| upstream.as_ref().map(|u| u.base_url()))
        .unwrap();
    let mut env: Vec<(&str, &str)> = env.to_vec();
    if !env.iter().any(|(k, _)| *k == "INFERGATE_UPSTREAM") {
        env.push(("INFERGATE_UPSTREAM", &url));
    }
    let cfg = config(&env, opts.yaml.as_deref(), dir.path());
    let overrides = Overrides {
        clock: opts
            .clock
            .clone()
            .map(|c| Arc::new(c) as Arc<dyn infergate_ratelimit::Clock>),
        key_store: opts.key_store.clone(),
        shared_limiter: opts.shared_limiter.clone(),
    };
    let app = Application::build_with(cfg, overrides)
        .await
        .expect("gateway builds");
    let port = app.served().port();
    let metrics_port = app.metrics_port();
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
        upstream,
        client,
        clock: opts.clock,
        metrics_port,
        state,
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.addr)
    }

    pub async fn send(&self, req: awc::ClientRequest, body: Option<&str>) -> Resp {
        match body {
            Some(b) => self.finish(req.send_body(b.to_string())).await,
            None => self.finish(req.send()).await,
        }
    }

    /// Awaits a request sent any way (a body, a stream, none) and reads the whole answer.
    pub async fn finish(&self, sent: awc::SendClientRequest) -> Resp {
        let mut res = sent.await.unwrap_or_else(|e| panic!("request failed: {e}"));
        let body = res.body().limit(64 * 1024 * 1024).await.unwrap().to_vec();
        Resp {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body,
        }
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> Resp {
        let mut req = self.client.get(self.url(path));
        if let Some(k) = key {
            req = req.insert_header(("X-API-Key", k));
        }
        self.send(req, None).await
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: &str) -> Resp {
        let mut req = self
            .client
            .post(self.url(path))
            .insert_header(("Content-Type", "application/json"));
        if let Some(k) = key {
            req = req.insert_header(("X-API-Key", k));
        }
        self.send(req, Some(body)).await
    }

    /// Sends raw bytes on a fresh connection and returns everything the server answers (for what
    /// a well-behaved client library will not send, like custom `Connection` tokens).
    pub async fn raw(&self, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        // A server may keep a connection open after an unparseable request; what it said is
        // what counts, so stop reading after a quiet spell.
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
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
}

/// Mints a key straight into `store`; returns (full key, id).
pub async fn mint(
    store: &Arc<dyn KeyStore>,
    role: Role,
    edit: impl FnOnce(&mut KeyRecord),
) -> (String, String) {
    let key = format::generate("igk").unwrap();
    let mut record = KeyRecord::new(key.id.clone(), "test", role, "test");
    record.prefix = "igk".into();
    edit(&mut record);
    let secret_hash = hash::hash_secret(key.secret(), HashParams::default()).unwrap();
    store
        .create(StoredKey {
            record,
            secret_hash,
        })
        .await
        .unwrap();
    (key.expose().to_string(), key.id.clone())
}

pub async fn app_with_store(env: &[(&str, &str)]) -> (TestApp, Arc<dyn KeyStore>) {
    let store: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
    let app = spawn_app_with(
        env,
        Opts {
            key_store: Some(store.clone()),
            ..Default::default()
        },
    )
    .await;
    (app, store)
}

/// Gateway settings that turn on JWTs with a fresh Ed25519 key pair written into `dir`.
pub fn jwt_env(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let (private, public) = infergate_tokens::generate_ed25519_pem().unwrap();
    let private_path = dir.join("jwt.key");
    let public_path = dir.join("jwt.pub");
    std::fs::write(&private_path, private).unwrap();
    std::fs::write(&public_path, public).unwrap();
    vec![
        ("INFERGATE_JWT_ENABLED", "true".to_string()),
        (
            "INFERGATE_JWT_PRIVATE_KEY_FILE",
            private_path.display().to_string(),
        ),
        (
            "INFERGATE_JWT_PUBLIC_KEY_FILE",
            public_path.display().to_string(),
        ),
    ]
}

/// Options with a stopped limiter clock, so no window boundary falls inside a test that counts
/// exact admissions.
#[allow(dead_code)] // not every test target that shares these helpers counts admissions
pub fn stopped_clock() -> Opts {
    Opts {
        clock: Some(ManualClock::new(1_700_000_000_000)),
        ..Default::default()
    }
}
