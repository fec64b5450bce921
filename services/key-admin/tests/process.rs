//! The `infergate-admin` binary as an operator runs it: help, exit codes, the bootstrap banner,
//! `ADMIN_API_KEY`, the `keys` commands against a keys file, and logs that never hold a key.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use infergate_keystore::{FileKeyStore, KeyRecord, KeyStore, StoredKey, format, hash};
use infergate_policy::Role;
use infergate_testkit::process::Service;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_infergate-admin");
const KEY_PATTERN_PARTS: usize = 4;

fn command(env: &[(&str, &str)], dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .current_dir(dir)
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Every infergate-format key in `text`.
fn keys_in(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.split('_').count() == KEY_PATTERN_PARTS && format::parse(w).is_ok())
        .map(str::to_string)
        .collect()
}

/// `infergate-admin serve` under testkit's harness.
struct Server(Service);

impl Server {
    /// Starts `serve`, ready once it wrote its ready file.
    fn start(env: &[(&str, &str)], dir: &Path) -> Server {
        let mut env = env.to_vec();
        env.push(("INFERGATE_ADMIN_LISTEN", "127.0.0.1:0"));
        env.push(("INFERGATE_ADMIN_WORKERS", "1"));
        let mut cmd = command(&env, dir);
        cmd.arg("serve");
        Server(Service::start(cmd, "INFERGATE_ADMIN_READY_FILE"))
    }

    /// The key in the bootstrap banner (stdout is read by its own thread, so it may trail the
    /// ready file by a moment).
    fn banner_key(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let keys = keys_in(&self.stdout());
            if let Some(k) = keys.first() {
                assert_eq!(keys.len(), 1, "{}", self.stdout());
                return k.clone();
            }
            assert!(Instant::now() < deadline, "no banner: {}", self.stdout());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn url(&self, path: &str) -> String {
        self.0.url(path)
    }

    fn stdout(&self) -> String {
        self.0.stdout()
    }

    fn stderr(&self) -> String {
        self.0.stderr()
    }

    /// SIGTERM, then wait (bounded) for a clean exit; the output is complete afterwards.
    fn terminate(&mut self) {
        self.0.terminate();
    }
}

async fn call(method: &str, url: &str, key: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish();
    let mut req = match method {
        "GET" => client.get(url),
        "POST" => client.post(url),
        "DELETE" => client.delete(url),
        other => panic!("{other}"),
    };
    if let Some(k) = key {
        req = req.insert_header(("X-API-Key", k));
    }
    let mut res = match body {
        Some(b) => {
            req.insert_header(("Content-Type", "application/json"))
                .send_body(b.to_string())
                .await
        }
        None => req.send().await,
    }
    .unwrap();
    let bytes = res.body().await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (res.status().as_u16(), v)
}

#[test]
fn help_answers_for_every_command() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["check-config", "--help"],
        &["keys", "--help"],
        &["keys", "generate", "--help"],
        &["keys", "list", "--help"],
        &["keys", "revoke", "--help"],
        &["keys", "rotate", "--help"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage"), "{args:?}: {text}");
    }
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("serve") && text.contains("keys") && text.contains("--config"),
        "{text}"
    );
    let out = Command::new(BIN)
        .args(["keys", "generate", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--count",
        "--roles",
        "--expires",
        "--prefix",
        "--output",
        "--name",
    ] {
        assert!(text.contains(flag), "{flag}: {text}");
    }
}

#[test]
fn each_bad_setting_exits_64_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("INFERGATE_ADMIN_LISTEN", "nowhere"),
        ("KEY_STORE", "etcd"),
        ("INFERGATE_KEY_PREFIX", "Nope"),
        ("TRUSTED_HOSTS", "bad host"),
        ("LOG_FORMAT", "xml"),
        ("ADMIN_API_KEY", "tiny"),
        ("ADMIN_API_KEY_FILE", "/nonexistent/admin.key"),
    ];
    for (name, value) in cases {
        for sub in [&["check-config"][..], &["serve"], &["keys", "list"]] {
            let out = command(&[(name, value)], dir.path())
                .args(sub)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{name}={value} {sub:?}: {err}");
            assert!(err.contains(name), "{name}={value}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
            if name == "ADMIN_API_KEY" {
                assert!(!err.contains("tiny"), "never echo the key: {err}");
            }
        }
    }
    let cfg = dir.path().join("admin.yaml");
    std::fs::write(&cfg, "hashing:\n  memory_kib: 1024\n").unwrap();
    let out = command(&[], dir.path())
        .args(["--config", cfg.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hashing.memory_kib"));
    // Usage errors of the key commands are 64 too; failures are 1.
    let keys = dir.path().join("keys.yaml");
    let out = command(
        &[("INFERGATE_KEYS_FILE", keys.to_str().unwrap())],
        dir.path(),
    )
    .args(["keys", "generate", "--roles", "superuser"])
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = command(
        &[("INFERGATE_KEYS_FILE", keys.to_str().unwrap())],
        dir.path(),
    )
    .args(["keys", "revoke", "zzzzzzzzzzzz"])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("zzzzzzzzzzzz") && err.trim().lines().count() == 1,
        "{err}"
    );
}

#[test]
fn check_config_prints_effective_settings_masked() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = "legacy-admin-key-for-check-config";
    let out = command(
        &[("ADMIN_API_KEY", legacy), ("KEY_STORE", "memory")],
        dir.path(),
    )
    .arg("check-config")
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("\"listen\": \"127.0.0.1:8001\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"backend\": \"memory\""), "{stdout}");
    assert!(!stdout.contains(legacy), "{stdout}");
}

#[actix_web::test]
async fn an_empty_store_mints_a_first_admin_key_shown_once_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.yaml");
    let env = [("INFERGATE_KEYS_FILE", file.to_str().unwrap())];
    let mut server = Server::start(&env, dir.path());
    let key = &server.banner_key();
    let stdout = server.stdout();
    assert!(
        stdout.contains("infergate admin key (shown once, store it now):"),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l.starts_with("=====")), "{stdout}");
    let (status, v) = call("GET", &server.url("/v1/keys"), Some(key), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["items"][0]["name"], "bootstrap-admin");
    let (_, audit) = call(
        "GET",
        &server.url("/v1/audit?action=bootstrap"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(audit["items"][0]["actor"], "bootstrap");
    server.terminate();
    assert!(!server.stderr().contains(key.as_str()), "never in the log");
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(!stored.contains(key.as_str()) && !stored.contains(key.split('_').nth(2).unwrap()));

    // Next start: an active admin exists, so nothing is minted.
    let mut again = Server::start(&env, dir.path());
    again.terminate();
    assert!(keys_in(&again.stdout()).is_empty(), "{}", again.stdout());
    assert!(!again.stdout().contains("shown once"));
}

#[actix_web::test]
async fn admin_api_key_in_our_format_is_stored_and_a_clashing_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.yaml");
    let key = format::generate("igk").unwrap();
    let env = [
        ("INFERGATE_KEYS_FILE", file.to_str().unwrap()),
        ("ADMIN_API_KEY", key.expose()),
    ];
    let mut server = Server::start(&env, dir.path());
    let (status, v) = call(
        "GET",
        &server.url(&format!("/v1/keys/{}", key.id)),
        Some(key.expose()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["name"].as_str(), v["role"].as_str()),
        (Some("bootstrap-admin"), Some("admin"))
    );
    server.terminate();
    assert!(keys_in(&server.stdout()).is_empty(), "nothing minted");
    // Starting again with the same key is fine (the record matches).
    let mut again = Server::start(&env, dir.path());
    again.terminate();

    // The same id with another secret in the store: refuse to start, exit 64, key not echoed.
    let clash_file = dir.path().join("clash.yaml");
    let store = FileKeyStore::open(&clash_file).unwrap();
    let other = format::generate("igk").unwrap();
    let mut record = KeyRecord::new(key.id.as_str(), "someone-else", Role::User, "test");
    record.prefix = "igk".into();
    store
        .create(StoredKey {
            record,
            secret_hash: hash::hash_secret(other.secret(), Default::default()).unwrap(),
        })
        .await
        .unwrap();
    let out = command(
        &[
            ("INFERGATE_KEYS_FILE", clash_file.to_str().unwrap()),
            ("ADMIN_API_KEY", key.expose()),
            ("INFERGATE_ADMIN_LISTEN", "127.0.0.1:0"),
        ],
        dir.path(),
    )
    .arg("serve")
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("ADMIN_API_KEY") && last.contains(&key.id),
        "{err}"
    );
    assert!(
        !err.contains(key.expose()) && !err.contains(key.secret()),
        "{err}"
    );
}

fn run(env: &[(&str, &str)], dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = command(env, dir).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[actix_web::test]
async fn cli_generate_list_revoke_rotate_round_trip_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api_keys.yaml");
    let f = file.to_str().unwrap();
    let (code, stdout, stderr) = run(
        &[],
        dir.path(),
        &[
            "keys",
            "generate",
            "--count",
            "3",
            "--roles",
            "admin,user,readonly",
            "--expires",
            "90",
            "--prefix",
            "rx580",
            "--output",
            f,
            "--name",
            "ops",
            "--tokens-per-minute",
            "5000",
            "--max-concurrent",
            "2",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "one line per key: {stdout}");
    let mut minted = Vec::new();
    for (line, role) in lines.iter().zip(["admin", "user", "readonly"]) {
        let key = line.split_whitespace().next().unwrap();
        let parsed = format::parse(key).expect("a key");
        assert_eq!(parsed.prefix, "rx580");
        assert!(
            line.contains(&format!("role={role}")) && line.contains(&format!("id={}", parsed.id)),
            "{line}"
        );
        minted.push((
            key.to_string(),
            parsed.id.to_string(),
            parsed.secret.to_string(),
        ));
    }
    assert!(!stderr.contains("rx580_"), "keys only on stdout: {stderr}");
    let stored = std::fs::read_to_string(&file).unwrap();
    let audit = std::fs::read_to_string(format!("{f}.audit.jsonl")).unwrap_or_default();
    for (key, id, secret) in &minted {
        for text in [&stored, &audit] {
            assert!(
                !text.contains(key.as_str()) && !text.contains(secret.as_str()),
                "hashes only"
            );
        }
        assert!(stored.contains(id.as_str()));
    }
    assert!(stored.contains("$argon2id$"));
    assert!(audit.contains("\"actor\":\"cli\""), "{audit}");

    let env = [("INFERGATE_KEYS_FILE", f)];
    let (code, stdout, _) = run(&env, dir.path(), &["keys", "list", "--json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert_eq!(listed[0]["name"], "ops-1");
    assert!(listed[0]["expires_at"].is_string());
    assert_eq!(listed[0]["tokens_per_minute"], 5000);
    assert_eq!(listed[0]["max_concurrent"], 2);
    assert_eq!(listed[0]["tokens_per_day"], Value::Null);
    // The table's columns line up whatever the role's name length.
    let (_, all, _) = run(&env, dir.path(), &["keys", "list"]);
    let state_at: Vec<usize> = all
        .lines()
        .skip(1)
        .map(|l| l.find(" active ").unwrap_or(0))
        .collect();
    assert!(
        state_at.len() == 3 && state_at.iter().all(|&i| i > 0 && i == state_at[0]),
        "ragged table:\n{all}"
    );
    let (_, table, _) = run(&env, dir.path(), &["keys", "list", "--role", "user"]);
    assert!(
        table.contains(&minted[1].1) && !table.contains(&minted[0].1),
        "{table}"
    );

    let (code, out, err) = run(&env, dir.path(), &["keys", "revoke", &minted[1].1]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked"), "{out}");
    let (_, out, _) = run(&env, dir.path(), &["keys", "revoke", &minted[1].1]);
    assert!(out.contains("already revoked"), "{out}");
    let (_, revoked, _) = run(
        &env,
        dir.path(),
        &["keys", "list", "--state", "revoked", "--json"],
    );
    let revoked: Value = serde_json::from_str(&revoked).unwrap();
    assert_eq!(revoked[0]["id"], minted[1].1.as_str());

    let (code, out, err) = run(
        &env,
        dir.path(),
        &["keys", "rotate", &minted[2].1, "--grace", "60"],
    );
    assert_eq!(code, 0, "{err}");
    let new_key = keys_in(&out);
    assert_eq!(new_key.len(), 1, "the new key, once: {out}");
    assert!(!err.contains(new_key[0].as_str()));
    assert!(
        !std::fs::read_to_string(&file)
            .unwrap()
            .contains(new_key[0].as_str())
    );

    // A running server on the same file sees the CLI's work, and the generated admin key works.
    let mut server = Server::start(&env, dir.path());
    let (status, v) = call(
        "GET",
        &server.url("/v1/keys?state=active"),
        Some(&minted[0].0),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["total"], 3,
        "admin, rotated readonly (in grace) and its successor: {v}"
    );
    let (status, _) = call("GET", &server.url("/v1/keys"), Some(&minted[1].0), None).await;
    assert_eq!(status, 401, "revoked by the CLI");
    // Edits by another process while it runs are picked up by the file watcher.
    let (code, out, _) = run(&env, dir.path(), &["keys", "generate", "--roles", "admin"]);
    assert_eq!(code, 0);
    let late = keys_in(&out).remove(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = call("GET", &server.url("/v1/keys"), Some(&late), None).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never saw the CLI's key"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    server.terminate();
    assert!(
        keys_in(&server.stdout()).is_empty(),
        "an admin exists: nothing minted"
    );
}

#[actix_web::test]
async fn logs_never_contain_a_minted_key() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.yaml");
        let (private, public) = infergate_tokens::generate_ed25519_pem().unwrap();
        let private_path = dir.path().join("jwt.pem");
        let public_path = dir.path().join("jwt.pub.pem");
        std::fs::write(&private_path, private).unwrap();
        std::fs::write(&public_path, public).unwrap();
        let mut server = Server::start(
            &[
                ("INFERGATE_KEYS_FILE", file.to_str().unwrap()),
                ("LOG_LEVEL", "debug"),
                ("LOG_FORMAT", format),
                ("INFERGATE_JWT_ENABLED", "true"),
                (
                    "INFERGATE_JWT_PRIVATE_KEY_FILE",
                    private_path.to_str().unwrap(),
                ),
                (
                    "INFERGATE_JWT_PUBLIC_KEY_FILE",
                    public_path.to_str().unwrap(),
                ),
            ],
            dir.path(),
        );
        let admin = server.banner_key();
        let mut minted = Vec::new();
        let (status, v) = call(
            "POST",
            &server.url("/v1/keys"),
            Some(&admin),
            Some(r#"{"name": "logged", "role": "user"}"#),
        )
        .await;
        assert_eq!(status, 201, "{v}");
        let user = v["key"].as_str().unwrap().to_string();
        let id = v["record"]["id"].as_str().unwrap().to_string();
        minted.push(user.clone());
        let (status, v) = call("POST", &server.url("/v1/tokens"), Some(&user), None).await;
        assert_eq!(status, 200, "{v}");
        let token = v["token"].as_str().unwrap().to_string();
        let (status, v) = call(
            "POST",
            &server.url(&format!("/v1/keys/{id}/rotate")),
            Some(&admin),
            Some(r#"{"grace_seconds": 30}"#),
        )
        .await;
        assert_eq!(status, 201, "{v}");
        let rotated = v["key"].as_str().unwrap().to_string();
        let new_id = v["record"]["id"].as_str().unwrap().to_string();
        minted.push(rotated.clone());
        let (status, _) = call(
            "DELETE",
            &server.url(&format!("/v1/keys/{new_id}")),
            Some(&admin),
            None,
        )
        .await;
        assert_eq!(status, 200);
        // Refused credentials: a revoked key, a wrong one, a malformed one.
        assert_eq!(
            call("POST", &server.url("/v1/tokens"), Some(&rotated), None)
                .await
                .0,
            401
        );
        let wrong = format::generate("igk").unwrap();
        assert_eq!(
            call("GET", &server.url("/v1/keys"), Some(wrong.expose()), None)
                .await
                .0,
            401
        );
        assert_eq!(
            call(
                "GET",
                &server.url("/v1/keys"),
                Some("wrong-key-aaaabbbbccccdddd"),
                None
            )
            .await
            .0,
            401
        );
        assert_eq!(
            call("GET", &server.url("/v1/keys"), Some(&user), None)
                .await
                .0,
            403
        );
        server.terminate();

        let stderr = server.stderr();
        let stdout = server.stdout();
        assert!(stderr.contains("credential refused"), "{stderr}");
        assert!(stderr.contains(&id), "key ids are logged: {stderr}");
        let mut secrets = minted.clone();
        secrets.push(admin.clone());
        secrets.push(wrong.expose().to_string());
        for key in &secrets {
            let secret = key.split('_').nth(2).unwrap();
            assert!(
                !stderr.contains(key.as_str()) && !stderr.contains(secret),
                "{format} logs hold a key: {stderr}"
            );
        }
        assert!(!stderr.contains("wrong-key-aaaabbbb"), "{stderr}");
        assert!(!stderr.contains(&token), "{stderr}");
        // stdout holds the banner's key and nothing else.
        assert_eq!(keys_in(&stdout), [admin.as_str()], "{stdout}");
        for key in &minted {
            assert!(!stdout.contains(key.as_str()));
        }
        if format == "json" {
            let line = stderr
                .lines()
                .find(|l| l.contains("\"request\""))
                .expect("an access log line");
            let v: Value = serde_json::from_str(line).unwrap();
            assert!(
                v["request_id"].is_string() && v["status"].is_number(),
                "{line}"
            );
        }
    }
}

#[test]
fn cli_delete_removes_a_key_from_listings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api_keys.yaml");
    let f = file.to_str().unwrap();
    let (code, out, err) = run(
        &[],
        dir.path(),
        &["keys", "generate", "--count", "2", "--output", f],
    );
    assert_eq!(code, 0, "{err}");
    let ids: Vec<String> = out
        .lines()
        .map(|l| {
            format::parse(l.split_whitespace().next().unwrap())
                .unwrap()
                .id
                .to_string()
        })
        .collect();
    let env = [("INFERGATE_KEYS_FILE", f)];
    let (code, out, err) = run(&env, dir.path(), &["keys", "delete", &ids[0]]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("deleted {}", ids[0]));
    let (_, listed, _) = run(&env, dir.path(), &["keys", "list", "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let left: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(left, [ids[1].as_str()]);
    let (code, _, err) = run(&env, dir.path(), &["keys", "delete", &ids[0]]);
    assert_ne!(code, 0, "a deleted key is gone: {err}");
}
