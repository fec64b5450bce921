//! The `infergate-gateway` binary as an operator runs it: startup errors and exit codes,
//! check-config, logs that never hold a key, TLS, and a graceful drain on SIGTERM.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use infergate_dev_upstream::{DevUpstream, UpstreamConfig};
use infergate_testkit::process::Service as Gateway;

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

/// Starts the binary and waits until it has written its ready file (testkit's harness).
fn start_gateway(env: &[(&str, &str)], dir: &std::path::Path) -> Gateway {
    Gateway::start(command(env, dir), "INFERGATE_READY_FILE")
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
    assert!(
        text.contains(".env") && text.contains("docs/configuration.md"),
        "--help says where settings come from and where they are documented: {text}"
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
        // Found while building the app state: check-config runs the same code, so it fails too.
        ("INFERGATE_UPSTREAM_API_KEY", "bad\u{7f}key"),
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
    // A keys file with an unknown role is caught by check-config as by a start.
    let keys = dir.path().join("keys.yaml");
    std::fs::write(&keys, "keys:\n  some-key-0123456789:\n    role: wizard\n").unwrap();
    for sub in [&["check-config"][..], &[][..]] {
        let out = command(
            &[("INFERGATE_KEYS_FILE", keys.to_str().unwrap())],
            dir.path(),
        )
        .args(sub)
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{sub:?}: {err}");
        assert!(
            err.contains("INFERGATE_KEYS_FILE") && err.contains("wizard"),
            "{err}"
        );
        assert!(!err.contains("some-key-0123456789"), "{err}");
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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2 static key(s)"),
        "the summary on stderr: {stderr}"
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON alone ({e}): {stdout}"));
}

/// `check-config` prints every setting of the shipped YAML under the YAML's own names, in its
/// units, with its values: JSON alone on stdout (so `| jq` works), the summary on stderr.
#[test]
fn check_config_speaks_the_yamls_names_and_units() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/gateway.yaml");
    let dir = tempfile::tempdir().unwrap();
    let out = command(&[], dir.path())
        .args(["--config", shipped, "check-config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let yaml: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(shipped).unwrap()).unwrap();
    fn walk(yaml: &serde_json::Value, printed: &serde_json::Value, path: &str) {
        match (yaml, printed) {
            (serde_json::Value::Object(y), serde_json::Value::Object(p)) => {
                for (k, v) in y {
                    let at = format!("{path}.{k}");
                    let Some(pv) = p.get(k) else {
                        panic!(
                            "{at} is not in check-config's output (it has {:?})",
                            p.keys()
                        );
                    };
                    walk(v, pv, &at);
                }
            }
            (serde_json::Value::Object(_), other) => {
                panic!("{path}: an object in the YAML, {other} in check-config")
            }
            (serde_json::Value::Null, _) | (_, serde_json::Value::Null) => {}
            (y, p) if y.is_number() && p.is_number() => {
                assert_eq!(
                    y.as_f64(),
                    p.as_f64(),
                    "{path}: the same value, in the same unit"
                )
            }
            // A relative path is printed resolved against the file's directory.
            (serde_json::Value::String(y), serde_json::Value::String(p))
                if p.ends_with(&format!("/{y}")) => {}
            (y, p) => assert_eq!(y, p, "{path}"),
        }
    }
    walk(&yaml, &printed, "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("# configuration OK"), "{stderr}");
    assert!(stderr.contains("workers: 0 means one per CPU"), "{stderr}");
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
        let gw = start_gateway(
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
        let logs = gw.stderr();
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

/// A `POST /inference` the dev upstream holds for `delay_ms` before answering: (status, body).
fn slow_inference(
    url: String,
    prompt: &'static str,
    delay_ms: &'static str,
) -> actix_web::rt::task::JoinHandle<(u16, String)> {
    actix_web::rt::spawn(async move {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(20))
            .finish();
        let mut res = client
            .post(url)
            .insert_header(("X-API-Key", ADMIN_KEY))
            .insert_header(("X-Dev-Delay-Ms", delay_ms))
            .send_body(format!(r#"{{"prompt":"{prompt}"}}"#))
            .await
            .unwrap();
        let body = res.body().await.unwrap();
        (
            res.status().as_u16(),
            String::from_utf8_lossy(&body).into_owned(),
        )
    })
}

/// Readiness, not a sleep: polls `/metrics` until the gateway counts the slow request in flight
/// (it and the poll itself). Returns how many polls it took (each is a request of its own).
async fn wait_until_in_flight(gw: &Gateway) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut polls = 0;
    loop {
        let (_, metrics) = get(&gw.url("/metrics"), Some(("X-API-Key", ADMIN_KEY))).await;
        polls += 1;
        if metrics.contains("infergate_http_requests_in_flight 2") {
            return polls;
        }
        assert!(
            Instant::now() < deadline,
            "slow request never arrived: {metrics}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let upstream = DevUpstream::start("127.0.0.1:0", UpstreamConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let up = upstream.base_url();
    let mut gw = start_gateway(
        &[
            ("INFERGATE_LISTEN", "127.0.0.1:0"),
            ("INFERGATE_UPSTREAM", &up),
            ("API_KEY", ADMIN_KEY),
        ],
        dir.path(),
    );
    let slow = slow_inference(gw.url("/inference"), "drain me", "1500");
    wait_until_in_flight(&gw).await;
    gw.signal("-TERM");
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200, "in-flight request must complete: {body}");
    assert!(body.contains("echo: drain me"), "{body}");
    let exit = gw.wait(Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0), "{}", gw.stderr());
    assert!(gw.stderr().contains("draining"), "{}", gw.stderr());
}

/// The log writer is a background thread with a queue: a clean shutdown must still write the
/// line of every request served, the last one (in flight at SIGTERM) included.
#[actix_web::test]
async fn every_access_log_line_is_written_before_a_clean_exit() {
    let upstream = DevUpstream::start("127.0.0.1:0", UpstreamConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let up = upstream.base_url();
    let mut gw = start_gateway(
        &[
            ("INFERGATE_LISTEN", "127.0.0.1:0"),
            ("INFERGATE_UPSTREAM", &up),
            ("API_KEY", ADMIN_KEY),
            ("RATE_LIMIT_ENABLED", "false"),
            ("LOG_FORMAT", "json"),
            ("LOG_LEVEL", "info"),
        ],
        dir.path(),
    );
    // Requests sent, each of which must have its line.
    let mut sent = 0usize;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let url = gw.url("/health");
            actix_web::rt::spawn(async move {
                let client = awc::Client::default();
                for _ in 0..250 {
                    let res = client.get(&url).send().await.unwrap();
                    assert_eq!(res.status().as_u16(), 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
        sent += 250;
    }
    let slow = slow_inference(gw.url("/inference"), "the last line", "1000");
    sent += 1;
    sent += wait_until_in_flight(&gw).await;
    gw.signal("-TERM");
    assert_eq!(slow.await.unwrap().0, 200);
    let exit = gw.wait(Duration::from_secs(15));
    assert_eq!(exit.code(), Some(0), "{}", gw.stderr());
    let log = gw.stderr();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(r#""message":"request""#))
        .collect();
    assert_eq!(lines.len(), sent, "access-log lines for {sent} requests");
    assert!(
        lines.iter().any(|l| l.contains(r#""route":"/inference""#)),
        "the request in flight at SIGTERM has its line"
    );
    // The process's last line comes after the drain, so nothing was cut off.
    assert!(
        log.lines()
            .last()
            .is_some_and(|l| l.contains(r#""message":"stopped""#)),
        "{}",
        &log[log.len().saturating_sub(2000)..]
    );
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
    let gw = start_gateway(
        &[
            ("INFERGATE_LISTEN", "127.0.0.1:0"),
            ("INFERGATE_UPSTREAM", &up),
            ("INFERGATE_TLS_CERT", cert_path.to_str().unwrap()),
            ("INFERGATE_TLS_KEY", key_path.to_str().unwrap()),
            ("HTTPS_ONLY", "true"),
        ],
        dir.path(),
    );
    gw.wait_for_log("https://127.0.0.1:", Duration::from_secs(10));
    let out = Command::new("curl")
        .args([
            "-sk",
            "-i",
            &format!("https://127.0.0.1:{}/health", gw.port()),
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

/// Two gateway processes share one Redis key store with key-admin: a key minted through
/// key-admin works on both, and revoked through key-admin it is refused by both within a second.
#[actix_web::test]
async fn revocation_reaches_every_replica() {
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
    let mut a = start_gateway(&env, dir.path());
    let mut b = start_gateway(&env, dir.path());

    // key-admin, in process, on the same Redis store.
    let admin_env = infergate_config::MapSource::new([
        ("INFERGATE_ADMIN_LISTEN", "127.0.0.1:0"),
        ("INFERGATE_ADMIN_WORKERS", "1"),
        ("KEY_STORE", "redis"),
        ("KEY_STORE_REDIS_URL", url.as_str()),
        ("ADMIN_API_KEY", ADMIN_KEY),
    ]);
    let admin_cfg = infergate_config::load_admin(None, &admin_env).unwrap();
    let admin = infergate_key_admin::Application::build(admin_cfg)
        .await
        .unwrap();
    let admin_url = format!("http://127.0.0.1:{}", admin.served().port());
    actix_web::rt::spawn(admin.run_until(std::future::pending()));

    let client = awc::Client::default();
    let mut res = client
        .post(format!("{admin_url}/v1/keys"))
        .insert_header(("X-API-Key", ADMIN_KEY))
        .send_json(&serde_json::json!({"name": "replicated", "role": "user", "expires_in_days": 1}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let minted: serde_json::Value = res.json().await.unwrap();
    let key = minted["key"].as_str().unwrap().to_string();
    let id = minted["record"]["id"].as_str().unwrap().to_string();
    let header = ("X-API-Key", key.as_str());
    assert_eq!(get(&a.url("/protected"), Some(header)).await.0, 200);
    assert_eq!(get(&b.url("/protected"), Some(header)).await.0, 200);

    let res = client
        .post(format!("{admin_url}/v1/keys/{id}/revoke"))
        .insert_header(("X-API-Key", ADMIN_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let revoked_at = Instant::now();
    let mut refused = [None, None];
    while refused.iter().any(Option::is_none) {
        assert!(
            // Far below the cache TTL (60 s) that would hide a missed change; generous for a
            // loaded machine.
            revoked_at.elapsed() < Duration::from_secs(10),
            "not refused everywhere within 10 s: {refused:?}"
        );
        for (i, gw) in [&a, &b].iter().enumerate() {
            if refused[i].is_none() && get(&gw.url("/protected"), Some(header)).await.0 == 401 {
                refused[i] = Some(revoked_at.elapsed());
            }
        }
    }
    eprintln!("revocation refused by both replicas after {refused:?}");
    // After a clean exit every line the replicas logged is in.
    for gw in [&mut a, &mut b] {
        gw.terminate();
        assert!(!gw.stderr().contains(&key), "a replica logged the key");
    }
}

async fn status_of(url: &str, key: &str) -> (u16, Duration) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let start = Instant::now();
    let status = match client
        .get(url)
        .insert_header(("X-API-Key", key))
        .send()
        .await
    {
        Ok(mut r) => {
            let _ = r.body().await;
            r.status().as_u16()
        }
        Err(_) => 0,
    };
    (status, start.elapsed())
}

fn redis_env<'a>(
    up: &'a str,
    redis: &'a str,
    keys: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("INFERGATE_LISTEN", "127.0.0.1:0"),
        ("INFERGATE_UPSTREAM", up),
        ("API_KEYS", keys),
        ("API_KEY", ADMIN_KEY),
        ("RATE_LIMIT_STORAGE", "redis"),
        ("RATE_LIMIT_REDIS_URL", redis),
    ];
    env.extend_from_slice(extra);
    env
}

/// Three replicas, one Redis, one key limited to N per window, 3N concurrent requests spread over
/// the replicas: exactly N pass.
#[actix_web::test]
async fn limits_hold_across_three_replicas() {
    let redis = infergate_testkit::RedisServer::start();
    let upstream = DevUpstream::start("127.0.0.1:0", UpstreamConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (up, url) = (upstream.base_url(), redis.url());
    let keys = format!("{USER_KEY}:user");
    const N: usize = 30;
    // A generous Redis deadline and the `closed` failure mode: on a loaded machine a slow answer
    // must not silently move decisions to the per-replica fallback (it would show up as a 503).
    let env = redis_env(
        &up,
        &url,
        &keys,
        &[
            ("RATE_LIMIT_AUTHENTICATED", "30/hour"),
            ("RATE_LIMIT_REDIS_TIMEOUT_MS", "5000"),
            ("RATE_LIMIT_FAILURE_MODE", "closed"),
        ],
    );
    let replicas: Vec<Gateway> = (0..3).map(|_| start_gateway(&env, dir.path())).collect();
    let urls: Vec<String> = replicas.iter().map(|g| g.url("/protected")).collect();
    let tasks: Vec<_> = (0..3 * N)
        .map(|i| {
            let url = urls[i % 3].clone();
            actix_web::rt::spawn(async move { status_of(&url, USER_KEY).await.0 })
        })
        .collect();
    let mut passed = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => passed += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    eprintln!(
        "3 replicas, limit {N}: {passed} passed (over/under: {:+}), {limited} limited",
        passed as i64 - N as i64
    );
    assert_eq!(
        passed, N,
        "the shared limit must hold exactly across replicas"
    );
    assert_eq!(limited, 2 * N);
}

/// Redis goes away under load: no 5xx, bounded latency, fallback limits enforced, readiness
/// degraded; Redis comes back: shared limits again within 2 s.
#[actix_web::test]
async fn redis_outage_falls_back_locally_and_recovers() {
    let mut redis = infergate_testkit::RedisServer::start();
    let upstream = DevUpstream::start("127.0.0.1:0", UpstreamConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (up, url) = (upstream.base_url(), redis.url());
    let keys = format!("{USER_KEY}:user");
    let env = redis_env(
        &up,
        &url,
        &keys,
        &[
            ("RATE_LIMIT_AUTHENTICATED", "10/hour"),
            ("RATE_LIMIT_EXPECTED_REPLICAS", "2"),
        ],
    );
    let gw = start_gateway(&env, dir.path());
    let protected = gw.url("/protected");
    assert_eq!(status_of(&protected, USER_KEY).await.0, 200);

    redis.stop();
    let mut latencies = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let (s, d) = status_of(&protected, USER_KEY).await;
        statuses.push(s);
        latencies.push(d);
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "no 5xx in local mode: {statuses:?}"
    );
    // Local mode: this replica's share of 10/hour over 2 replicas is 5.
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    assert!(
        p99 < Duration::from_secs(2),
        "p99 {p99:?} is not bounded by the Redis timeout"
    );
    let (_, ready) = get(&gw.url("/health/ready"), None).await;
    assert!(ready.contains("\"degraded\""), "{ready}");
    let (_, metrics) = get(&gw.url("/metrics"), Some(("X-API-Key", ADMIN_KEY))).await;
    assert!(
        metrics.contains("infergate_ratelimit_breaker_state{state=\"open\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("infergate_ratelimit_fallback_decisions_total"),
        "{metrics}"
    );

    redis.restart();
    let back = Instant::now();
    loop {
        let _ = status_of(&gw.url("/protected"), ADMIN_KEY).await;
        let (_, ready) = get(&gw.url("/health/ready"), None).await;
        if ready.contains("\"ready\"") {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "shared limits did not resume within 10 s: {ready}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "shared limits resumed {:?} after Redis returned",
        back.elapsed()
    );
    // Decided by Redis again: the restarted Redis is empty, so the shared 10/hour starts afresh.
    let mut ok = 0;
    for _ in 0..12 {
        if status_of(&protected, USER_KEY).await.0 == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 10, "the full shared limit applies again");
}

#[actix_web::test]
async fn failure_modes_open_and_closed() {
    let mut redis = infergate_testkit::RedisServer::start();
    let upstream = DevUpstream::start("127.0.0.1:0", UpstreamConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (up, url) = (upstream.base_url(), redis.url());
    let keys = format!("{USER_KEY}:user");
    let open_env = redis_env(
        &up,
        &url,
        &keys,
        &[
            ("RATE_LIMIT_AUTHENTICATED", "2/hour"),
            ("RATE_LIMIT_FAILURE_MODE", "open"),
        ],
    );
    let closed_env = redis_env(
        &up,
        &url,
        &keys,
        &[
            ("RATE_LIMIT_AUTHENTICATED", "2/hour"),
            ("RATE_LIMIT_FAILURE_MODE", "closed"),
        ],
    );
    let open = start_gateway(&open_env, dir.path());
    let closed = start_gateway(&closed_env, dir.path());
    redis.stop();
    for _ in 0..6 {
        assert_eq!(
            status_of(&open.url("/protected"), USER_KEY).await.0,
            200,
            "open mode allows all"
        );
    }
    let client = awc::Client::default();
    let mut res = client
        .get(closed.url("/protected"))
        .insert_header(("X-API-Key", USER_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 503);
    assert_eq!(res.headers().get("retry-after").unwrap(), "1");
    let body: serde_json::Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
    assert_eq!(body["code"], "unavailable");
    // Liveness stays up; readiness reports that this replica cannot serve in closed mode, while
    // the open-mode replica is degraded but ready.
    assert_eq!(get(&closed.url("/health"), None).await.0, 200);
    let (status, body) = get(&closed.url("/health/ready"), None).await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = get(&open.url("/health/ready"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"degraded\""), "{body}");
}

#[actix_web::test]
async fn stalled_redis_times_out_and_requests_keep_flowing() {
    let redis = infergate_testkit::RedisServer::start();
    let upstream = DevUpstream::start("127.0.0.1:0", UpstreamConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (up, url) = (upstream.base_url(), redis.url());
    let keys = format!("{USER_KEY}:user");
    let env = redis_env(&up, &url, &keys, &[("RATE_LIMIT_REDIS_TIMEOUT_MS", "50")]);
    let gw = start_gateway(&env, dir.path());
    assert_eq!(status_of(&gw.url("/protected"), USER_KEY).await.0, 200);
    redis.pause(Duration::from_secs(3));
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let (s, d) = status_of(&gw.url("/protected"), USER_KEY).await;
        assert_eq!(s, 200);
        worst = worst.max(d);
    }
    assert!(
        // Bounded by the 50 ms Redis timeout, not by the 3 s stall.
        worst < Duration::from_secs(2),
        "a stalled Redis held a request for {worst:?}"
    );
    let (_, metrics) = get(&gw.url("/metrics"), Some(("X-API-Key", ADMIN_KEY))).await;
    assert!(
        metrics.contains("infergate_ratelimit_backend_errors_total{kind=\"timeout\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("infergate_ratelimit_breaker_state{state=\"open\"} 1"),
        "{metrics}"
    );
}

/// A gateway configuration file giving `user` keys `budget` (YAML flow map), with `extra` YAML
/// under `rate_limit`.
fn budget_config(dir: &std::path::Path, budget: &str, extra: &str) -> String {
    let path = dir.join("budgets.yaml");
    std::fs::write(
        &path,
        format!("rate_limit:\n  roles:\n    user: {budget}\n{extra}"),
    )
    .unwrap();
    path.display().to_string()
}

/// Sums one metric over the replicas' `/metrics`.
async fn metric_sum(replicas: &[Gateway], name: &str) -> u64 {
    let mut sum = 0;
    for gw in replicas {
        let (_, text) = get(&gw.url("/metrics"), Some(("X-API-Key", ADMIN_KEY))).await;
        sum += text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
    }
    sum
}

/// One chat call: (status, its usage's total tokens, the refusal's reserved tokens).
async fn budgeted_call(client: &awc::Client, url: &str) -> (u16, u64, u64) {
    let body =
        r#"{"model":"echo-1","messages":[{"role":"user","content":"a b c d"}],"max_tokens":20}"#;
    let mut res = client
        .post(url)
        .insert_header(("X-API-Key", USER_KEY))
        .insert_header(("Content-Type", "application/json"))
        .send_body(body)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
    (
        res.status().as_u16(),
        v["usage"]["total_tokens"].as_u64().unwrap_or(0),
        v["reserved_tokens"].as_u64().unwrap_or(0),
    )
}

/// Three replicas, one Redis, one key with a daily token budget (a fixed window, so nothing
/// decays while the test runs), many concurrent clients: the tokens admitted never exceed the
/// budget by more than one reservation, and once demand exceeds it, fall short of it by less
/// than one. The figures are printed.
#[actix_web::test]
async fn token_budgets_hold_across_three_replicas() {
    let redis = infergate_testkit::RedisServer::start();
    let upstream = DevUpstream::start("127.0.0.1:0", UpstreamConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (up, url) = (upstream.base_url(), redis.url());
    let keys = format!("{USER_KEY}:user");
    const BUDGET: u64 = 3_000;
    // The quota day resets twelve hours from now: the whole test runs inside one day.
    let hour = (chrono_hour() + 12) % 24;
    let config = budget_config(
        dir.path(),
        &format!("{{tokens_per_day: {BUDGET}}}"),
        &format!("  tokens:\n    day_resets_at_utc_hour: {hour}\n"),
    );
    let env = redis_env(
        &up,
        &url,
        &keys,
        &[
            ("RATE_LIMIT_AUTHENTICATED", "100000/minute"),
            ("RATE_LIMIT_REDIS_TIMEOUT_MS", "5000"),
            ("RATE_LIMIT_FAILURE_MODE", "closed"),
        ],
    );
    let replicas: Vec<Gateway> = (0..3)
        .map(|_| {
            let mut c = command(&env, dir.path());
            c.args(["--config", &config]);
            Gateway::start(c, "INFERGATE_READY_FILE")
        })
        .collect();
    let urls: Vec<String> = replicas
        .iter()
        .map(|g| g.url("/v1/chat/completions"))
        .collect();
    let client = || {
        awc::Client::builder()
            .timeout(Duration::from_secs(20))
            .finish()
    };
    // 24 clients, each calling until refused.
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let url = urls[i % 3].clone();
            actix_web::rt::spawn(async move {
                let c = client();
                let (mut used, mut admitted) = (0, 0);
                loop {
                    match budgeted_call(&c, &url).await {
                        (200, u, _) => {
                            used += u;
                            admitted += 1;
                        }
                        (429, _, reserved) => return (used, admitted, reserved),
                        other => panic!("unexpected answer {other:?}"),
                    }
                }
            })
        })
        .collect();
    let (mut used, mut admitted, mut reservation) = (0, 0, 0);
    for t in tasks {
        let (u, a, r) = t.await.unwrap();
        used += u;
        admitted += a;
        reservation = reservation.max(r);
    }
    // Reservations still in flight when the others were refused are given back: once every
    // settlement landed, one client takes what is left.
    let c = client();
    loop {
        infergate_testkit::eventually(Duration::from_secs(20), "every call settled", || async {
            metric_sum(&replicas, "infergate_token_settlements_total").await == admitted
        })
        .await;
        match budgeted_call(&c, &urls[0]).await {
            (200, u, _) => {
                used += u;
                admitted += 1;
            }
            (429, _, r) => {
                reservation = reservation.max(r);
                break;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    eprintln!(
        "3 replicas, 24 clients, budget {BUDGET} tokens/day, reservation {reservation}: \
         {admitted} calls admitted using {used} tokens ({:+} against the budget)",
        used as i64 - BUDGET as i64
    );
    assert!(reservation > 0);
    assert!(
        used <= BUDGET + reservation,
        "overshoot: {used} > {BUDGET} + {reservation}"
    );
    assert!(
        used + reservation >= BUDGET,
        "undershoot: {used} + {reservation} < {BUDGET}"
    );
}

/// The current UTC hour, from the system clock.
fn chrono_hour() -> u64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    secs / 3600 % 24
}

/// Starts a chat stream of `tokens` tokens on `url` and returns it once its first chunk arrived
/// (so it holds its concurrency slot), or the refusal's status.
async fn open_stream(
    url: &str,
    tokens: &str,
) -> Result<awc::ClientResponse<impl futures_util::Stream + Unpin>, u16> {
    use futures_util::StreamExt;
    let body = r#"{"model":"echo-1","messages":[{"role":"user","content":"x"}],"stream":true}"#;
    let mut res = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish()
        .post(url)
        .insert_header(("X-API-Key", USER_KEY))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("x-dev-output-tokens", tokens))
        .send_body(body)
        .await
        .unwrap();
    if res.status().as_u16() != 200 {
        return Err(res.status().as_u16());
    }
    res.next().await.unwrap().unwrap();
    Ok(res)
}

/// `max_concurrent` across two replicas sharing Redis: slots held on one refuse the other; a
/// running stream renews its lease past the lease's life; a replica killed mid-stream leaks its
/// slots no longer than the lease.
#[actix_web::test]
async fn concurrency_caps_hold_across_replicas_and_a_dead_replicas_slots_expire() {
    let redis = infergate_testkit::RedisServer::start();
    let upstream = DevUpstream::start(
        "127.0.0.1:0",
        UpstreamConfig {
            token_delay: Duration::from_millis(100),
            ..UpstreamConfig::default()
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (up, url) = (upstream.base_url(), redis.url());
    let keys = format!("{USER_KEY}:user");
    const LEASE: u64 = 2;
    let config = budget_config(
        dir.path(),
        "{max_concurrent: 2}",
        &format!("  concurrency:\n    lease_seconds: {LEASE}\n"),
    );
    let env = redis_env(
        &up,
        &url,
        &keys,
        &[
            ("RATE_LIMIT_REDIS_TIMEOUT_MS", "5000"),
            ("RATE_LIMIT_FAILURE_MODE", "closed"),
        ],
    );
    let start = || {
        let mut c = command(&env, dir.path());
        c.args(["--config", &config]);
        Gateway::start(c, "INFERGATE_READY_FILE")
    };
    let (mut a, b) = (start(), start());
    let on_a = a.url("/v1/chat/completions");
    let on_b = b.url("/v1/chat/completions");
    // Two streams of 30 s each on A hold both slots.
    let s1 = open_stream(&on_a, "300").await.unwrap();
    let s2 = open_stream(&on_a, "300").await.unwrap();
    assert_eq!(open_stream(&on_b, "1").await.err(), Some(429));
    // Past the lease's life, the running streams still hold their slots: they were renewed.
    // (Time itself is what is tested here, so the test waits for it.)
    actix_web::rt::time::sleep(Duration::from_millis(LEASE * 1000 + 1500)).await;
    assert_eq!(
        open_stream(&on_b, "1").await.err(),
        Some(429),
        "a renewed lease outlives its first expiry"
    );
    // A dies mid-stream: nothing releases its slots; they expire.
    a.signal("-KILL");
    let killed = Instant::now();
    drop((s1, s2));
    let freed = infergate_testkit::eventually(
        Duration::from_secs(20),
        "a dead replica's slots expire",
        || async { open_stream(&on_b, "1").await.is_ok() },
    )
    .await;
    let leaked = killed.elapsed().min(freed + Duration::from_secs(1));
    eprintln!("a killed replica's slots were free again after {leaked:?} (lease {LEASE} s)");
    assert!(
        leaked <= Duration::from_secs(LEASE + 2),
        "slots leaked for {leaked:?}"
    );
    a.wait(Duration::from_secs(10));
}
