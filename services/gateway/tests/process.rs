//! The `infergate-gateway` binary as an operator runs it: startup errors and exit codes,
//! check-config, logs that never hold a key, TLS, and a graceful drain on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use infergate_dev_upstream::{DevUpstream, UpstreamConfig};

const BIN: &str = env!("CARGO_BIN_EXE_infergate-gateway");
const USER_KEY: &str = "proc-user-key-7f3a9c1e5b2d4f60";
const ADMIN_KEY: &str = "proc-admin-key-0c9e8d7f6a5b4c3d";

fn command(env: &[(&str, &str)], dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .current_dir(dir)
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

struct Gateway {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Gateway {
    /// Starts the binary and waits for its "listening" log line (its readiness signal).
    fn start(env: &[(&str, &str)], dir: &std::path::Path) -> Gateway {
        let mut child = command(env, dir)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                {
                    let mut l = sink.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
                if let Some(i) = line.find("://127.0.0.1:") {
                    let port: String = line[i + 13..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    let _ = tx.send(port.parse::<u16>().unwrap_or(0));
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("gateway did not start: {}", log.lock().unwrap()));
        Gateway { child, port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "gateway did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn help_answers() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("check-config") && text.contains("--config"),
        "{text}"
    );
}

#[test]
fn each_bad_setting_exits_64_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("RATE_LIMIT_DEFAULT", "100/fortnight"),
        ("RATE_LIMIT_AUTHENTICATED", "-1/minute"),
        ("RATE_LIMIT_STORAGE", "carrier-pigeon"),
        ("API_KEY_AUTH_ENABLED", "perhaps"),
        ("CORS_ORIGINS", "*"),
        ("API_KEYS", "k1:superuser"),
        ("TRUSTED_HOSTS", "bad host"),
        ("INFERGATE_LISTEN", "nowhere"),
        ("INFERGATE_TLS_CERT", "/nonexistent/cert.pem"),
    ];
    for (name, value) in cases {
        let mut env = vec![(name, value)];
        if name == "CORS_ORIGINS" {
            env.push(("CORS_ALLOW_CREDENTIALS", "true"));
        }
        if name == "INFERGATE_TLS_CERT" {
            env.push(("INFERGATE_TLS_KEY", "/nonexistent/key.pem"));
        }
        for sub in [&["check-config"][..], &[][..]] {
            let out = command(&env, dir.path()).args(sub).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{name}={value} {sub:?}: {err}");
            assert!(
                err.contains(name),
                "{name}={value}: message does not name it: {err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
            assert!(!err.contains("k1:"), "must not echo keys: {err}");
        }
    }
    // A YAML file with a typo names the file and the field.
    let cfg = dir.path().join("gw.yaml");
    std::fs::write(&cfg, "rate_limit:\n  defualt: 5/second\n").unwrap();
    let out = command(&[], dir.path())
        .args(["--config", cfg.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("defualt"));
}

#[test]
fn check_config_prints_effective_settings_masked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "RATE_LIMIT_DEFAULT=7/minute\nAPI_KEY=from-dotenv-key-123456\n",
    )
    .unwrap();
    let out = command(
        &[
            ("API_KEYS", &format!("{USER_KEY}:user")),
            ("API_KEY", ADMIN_KEY),
            ("RATE_LIMIT_ADMIN", "9/hour"),
        ],
        dir.path(),
    )
    .arg("check-config")
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("\"default\": \"7/minute\""),
        ".env applies: {stdout}"
    );
    assert!(stdout.contains("\"admin\": \"9/hour\""), "{stdout}");
    assert!(
        !stdout.contains(USER_KEY) && !stdout.contains(ADMIN_KEY),
        "{stdout}"
    );
    assert!(
        !stdout.contains("from-dotenv-key-123456"),
        "environment wins over .env, and is masked: {stdout}"
    );
    assert!(stdout.contains("2 static key(s)"), "{stdout}");
}

async fn get(url: &str, key: Option<(&str, &str)>) -> (u16, String) {
    let client = awc::Client::default();
    let mut req = client.get(url);
    if let Some(h) = key {
        req = req.insert_header(h);
    }
    let mut res = req.send().await.unwrap();
    let body = res.body().await.unwrap();
    (
        res.status().as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[actix_web::test]
async fn logs_never_contain_a_full_key() {
    let upstream = DevUpstream::start("127.0.0.1:0", UpstreamConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let up = upstream.base_url();
    let keys = format!("{USER_KEY}:user");
    for format in ["text", "json"] {
        let gw = Gateway::start(
            &[
                ("INFERGATE_LISTEN", "127.0.0.1:0"),
                ("INFERGATE_UPSTREAM", &up),
                ("API_KEYS", &keys),
                ("API_KEY", ADMIN_KEY),
                ("LOG_LEVEL", "debug"),
                ("LOG_FORMAT", format),
            ],
            dir.path(),
        );
        let wrong = "wrong-key-aaaabbbbccccdddd";
        assert_eq!(
            get(&gw.url("/protected"), Some(("X-API-Key", USER_KEY)))
                .await
                .0,
            200
        );
        assert_eq!(
            get(
                &gw.url("/models"),
                Some(("Authorization", &format!("Bearer {ADMIN_KEY}")))
            )
            .await
            .0,
            200
        );
        assert_eq!(
            get(&gw.url(&format!("/models?api_key={USER_KEY}")), None)
                .await
                .0,
            200
        );
        assert_eq!(
            get(&gw.url("/protected"), Some(("X-API-Key", wrong)))
                .await
                .0,
            401
        );
        assert_eq!(
            get(
                &gw.url("/protected"),
                Some(("Authorization", &format!("Bearer {wrong}")))
            )
            .await
            .0,
            401
        );
        gw.signal("-TERM");
        let mut gw = gw;
        assert!(gw.wait(Duration::from_secs(10)).success());
        let logs = gw.logs();
        assert!(logs.contains("unknown API key"), "{logs}");
        assert!(
            logs.contains("wrong-ke..."),
            "the masked prefix is logged: {logs}"
        );
        for secret in [USER_KEY, ADMIN_KEY, wrong] {
            assert!(
                !logs.contains(secret),
                "{format} logs contain a key: {logs}"
            );
            assert!(
                !logs.contains(&secret[..12]),
                "{format} logs contain more than 8 chars of a key: {logs}"
            );
        }
        if format == "json" {
            let line = logs
                .lines()
                .find(|l| l.contains("\"request\""))
                .expect("an access log line");
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(
                v["request_id"].is_string() && v["status"].is_number(),
                "{line}"
            );
        }
    }
}

#[actix_web::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let upstream = DevUpstream::start("127.0.0.1:0", UpstreamConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let up = upstream.base_url();
    let mut gw = Gateway::start(
        &[
            ("INFERGATE_LISTEN", "127.0.0.1:0"),
            ("INFERGATE_UPSTREAM", &up),
            ("API_KEY", ADMIN_KEY),
        ],
        dir.path(),
    );
    let url = gw.url("/inference");
    let slow = actix_web::rt::spawn(async move {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(20))
            .finish();
        let mut res = client
            .post(url)
            .insert_header(("X-API-Key", ADMIN_KEY))
            .insert_header(("X-Dev-Delay-Ms", "1500"))
            .send_body(r#"{"prompt":"drain me"}"#)
            .await
            .unwrap();
        let body = res.body().await.unwrap();
        (
            res.status().as_u16(),
            String::from_utf8_lossy(&body).into_owned(),
        )
    });
    // Readiness, not a sleep: wait until the gateway reports the slow request in flight.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = get(&gw.url("/metrics"), Some(("X-API-Key", ADMIN_KEY))).await;
        if metrics.contains("infergate_http_requests_in_flight 2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slow request never arrived: {metrics}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    gw.signal("-TERM");
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200, "in-flight request must complete: {body}");
    assert!(body.contains("echo: drain me"), "{body}");
    let exit = gw.wait(Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0), "{}", gw.logs());
    assert!(gw.logs().contains("draining"), "{}", gw.logs());
}

#[actix_web::test]
async fn serves_tls_with_rustls() {
    let upstream = DevUpstream::start("127.0.0.1:0", UpstreamConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let up = upstream.base_url();
    let gw = Gateway::start(
        &[
            ("INFERGATE_LISTEN", "127.0.0.1:0"),
            ("INFERGATE_UPSTREAM", &up),
            ("INFERGATE_TLS_CERT", cert_path.to_str().unwrap()),
            ("INFERGATE_TLS_KEY", key_path.to_str().unwrap()),
            ("HTTPS_ONLY", "true"),
        ],
        dir.path(),
    );
    assert!(gw.logs().contains("https://127.0.0.1:"), "{}", gw.logs());
    let out = Command::new("curl")
        .args([
            "-sk",
            "-i",
            &format!("https://127.0.0.1:{}/health", gw.port),
        ])
        .output()
        .expect("curl is installed by .ci/run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/2 200"),
        "{text}"
    );
    assert!(text.contains("\"status\":\"healthy\""), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{text}"
    );
}

/// Two gateway processes share one Redis key store: a key minted once works on both, and a
/// revocation is refused by both within a second.
#[actix_web::test]
async fn revocation_reaches_every_replica_within_a_second() {
    use infergate_keystore::redis::RedisKeyStore;
    use infergate_keystore::{HashParams, KeyPatch, KeyRecord, KeyStore, StoredKey, format, hash};

    let redis = infergate_testkit::RedisServer::start();
    let upstream = DevUpstream::start("127.0.0.1:0", UpstreamConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let up = upstream.base_url();
    let url = redis.url();
    let env = [
        ("INFERGATE_LISTEN", "127.0.0.1:0"),
        ("INFERGATE_UPSTREAM", up.as_str()),
        ("KEY_STORE", "redis"),
        ("KEY_STORE_REDIS_URL", url.as_str()),
    ];
    let a = Gateway::start(&env, dir.path());
    let b = Gateway::start(&env, dir.path());

    let store = RedisKeyStore::connect(&url, "infergate").await.unwrap();
    let key = format::generate("igk").unwrap();
    let secret_hash = hash::hash_secret(key.secret(), HashParams::default()).unwrap();
    let record = KeyRecord::new(
        key.id.clone(),
        "replicated",
        infergate_policy::Role::User,
        "test",
    );
    store
        .create(StoredKey {
            record,
            secret_hash,
        })
        .await
        .unwrap();
    let header = ("X-API-Key", key.expose());
    assert_eq!(get(&a.url("/protected"), Some(header)).await.0, 200);
    assert_eq!(get(&b.url("/protected"), Some(header)).await.0, 200);

    store
        .update(
            &key.id,
            KeyPatch {
                revoked_at: Some(Some(chrono::Utc::now())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let revoked_at = Instant::now();
    let mut refused = [None, None];
    while refused.iter().any(Option::is_none) {
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "not refused everywhere within 1 s: {refused:?}"
        );
        for (i, gw) in [&a, &b].iter().enumerate() {
            if refused[i].is_none() && get(&gw.url("/protected"), Some(header)).await.0 == 401 {
                refused[i] = Some(revoked_at.elapsed());
            }
        }
    }
    eprintln!("revocation refused by both replicas after {refused:?}");
    for gw in [&a, &b] {
        assert!(
            !gw.logs().contains(key.expose()),
            "a replica logged the key"
        );
    }
}
