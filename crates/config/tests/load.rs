//! Loading and layering, through the same entry point the binaries use.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;

use infergate_config::raw::RawConfig;
use infergate_config::{ConfigError, GatewayConfig, MapSource, load_gateway};

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/gateway.yaml")
}

fn load(pairs: &[(&str, &str)]) -> Result<GatewayConfig, ConfigError> {
    load_gateway(None, &MapSource::new(pairs.iter().copied()))
}

fn yaml_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn shipped_file_equals_built_in_defaults() {
    let text = std::fs::read_to_string(shipped()).unwrap();
    let mut from_file: RawConfig = serde_yaml::from_str(&text).unwrap();
    // The shipped file names the keys file relative to itself; the built-in default is relative to
    // the working directory. Both land on config/api_keys.yaml from the repository root.
    assert_eq!(from_file.auth.keys_file, "api_keys.yaml");
    from_file.auth.keys_file = RawConfig::default().auth.keys_file;
    assert_eq!(from_file, RawConfig::default());
    let cfg = load_gateway(Some(&shipped()), &MapSource::default()).unwrap();
    assert!(cfg.auth.keys_file.ends_with("config/api_keys.yaml"));
}

#[test]
fn defaults_are_the_documented_ones() {
    let cfg = load(&[]).unwrap();
    assert_eq!(cfg.listen.to_string(), "127.0.0.1:8000");
    assert_eq!(cfg.rate_limit.default.to_string(), "100/minute");
    assert_eq!(cfg.rate_limit.authenticated.to_string(), "1000/minute");
    assert_eq!(cfg.rate_limit.admin.to_string(), "10000/minute");
    assert_eq!(
        cfg.rate_limit.endpoints["/models/load"].to_string(),
        "10/minute"
    );
    assert_eq!(cfg.body_limits.for_route("/inference"), 1024 * 1024);
    assert_eq!(
        cfg.body_limits.for_route("/inference/batch"),
        10 * 1024 * 1024
    );
    assert!(cfg.auth.enabled && cfg.auth.query_param_enabled && cfg.security_headers);
}

#[test]
fn environment_overrides_the_file() {
    let f = yaml_file(
        "listen: 127.0.0.1:7000\nrate_limit:\n  default: 5/second\ncors:\n  origins: [https://a.example]\n",
    );
    let env = MapSource::new([
        ("RATE_LIMIT_DEFAULT", "7/minute"),
        ("CORS_ORIGINS", "https://b.example, https://c.example"),
        ("TRUSTED_HOSTS", r#"["api.example.com", "*.example.org"]"#),
        ("API_KEY", "sk-single"),
        ("API_KEYS", "k1:user,k2:readonly"),
        ("INFERGATE_UPSTREAM", "http://10.1.2.3:8080/"),
    ]);
    let cfg = load_gateway(Some(f.path()), &env).unwrap();
    assert_eq!(
        cfg.listen.port(),
        7000,
        "file value kept where env is silent"
    );
    assert_eq!(cfg.rate_limit.default.to_string(), "7/minute");
    assert_eq!(cfg.cors.origins, ["https://b.example", "https://c.example"]);
    assert_eq!(
        cfg.trusted_hosts.patterns(),
        ["api.example.com", "*.example.org"]
    );
    assert_eq!(cfg.auth.api_key.as_ref().unwrap().expose(), "sk-single");
    assert_eq!(
        cfg.auth.api_keys.as_ref().unwrap().expose(),
        "k1:user,k2:readonly"
    );
    assert_eq!(cfg.upstream.url, "http://10.1.2.3:8080");
    assert_eq!(cfg.setting_name("rate_limit.default"), "RATE_LIMIT_DEFAULT");
    assert_eq!(cfg.setting_name("listen"), "listen");
}

#[test]
fn infergate_config_variable_selects_the_file() {
    let f = yaml_file("listen: 127.0.0.1:7111\n");
    let path = f.path().to_str().unwrap().to_string();
    let cfg = load(&[("INFERGATE_CONFIG", &path)]).unwrap();
    assert_eq!(cfg.listen.port(), 7111);
}

#[test]
fn seed_variables_keep_their_meaning() {
    let cfg = load(&[
        ("RATE_LIMIT_ENABLED", "false"),
        ("API_KEY_AUTH_ENABLED", "False"),
        ("RATE_LIMIT_AUTHENTICATED", "50/m"),
        ("RATE_LIMIT_ADMIN", "60/h"),
        ("CORS_ALLOW_CREDENTIALS", "true"),
        ("CORS_ORIGINS", "http://localhost:3000"),
        ("SECURITY_HEADERS_ENABLED", "0"),
        ("HTTPS_ONLY", "yes"),
        ("DEBUG", "true"),
        ("RATE_LIMIT_STORAGE", "memory"),
    ])
    .unwrap();
    assert!(!cfg.rate_limit.enabled && !cfg.auth.enabled && !cfg.security_headers);
    assert!(cfg.https_only && cfg.cors.allow_credentials && cfg.debug);
    assert_eq!(cfg.logging.level, "debug");
    assert_eq!(cfg.rate_limit.authenticated.to_string(), "50/minute");
    assert_eq!(cfg.rate_limit.admin.to_string(), "60/hour");
}

#[test]
fn requests_and_period_make_the_default() {
    let cfg = load(&[
        ("RATE_LIMIT_REQUESTS", "30"),
        ("RATE_LIMIT_PERIOD_SECONDS", "10"),
    ])
    .unwrap();
    assert_eq!(cfg.rate_limit.default.limit, 30);
    assert_eq!(cfg.rate_limit.default.period.as_secs(), 10);
    // Agreeing with RATE_LIMIT_DEFAULT is fine; disagreeing is a contradiction.
    assert!(
        load(&[
            ("RATE_LIMIT_REQUESTS", "30"),
            ("RATE_LIMIT_DEFAULT", "30/minute")
        ])
        .is_ok()
    );
    let err = load(&[
        ("RATE_LIMIT_REQUESTS", "30"),
        ("RATE_LIMIT_DEFAULT", "40/minute"),
    ])
    .unwrap_err();
    assert!(matches!(err, ConfigError::Contradiction { .. }), "{err}");
}

#[test]
fn every_bad_setting_names_itself() {
    let cases: &[(&str, &str)] = &[
        ("RATE_LIMIT_DEFAULT", "100/fortnight"),
        ("RATE_LIMIT_DEFAULT", "-5/minute"),
        ("RATE_LIMIT_AUTHENTICATED", "lots"),
        ("RATE_LIMIT_ADMIN", "0/minute"),
        ("RATE_LIMIT_REQUESTS", "-1"),
        ("RATE_LIMIT_PERIOD_SECONDS", "soon"),
        ("RATE_LIMIT_ENABLED", "perhaps"),
        ("RATE_LIMIT_STORAGE", "etcd"),
        ("RATE_LIMIT_STORAGE", "redis"),
        ("RATE_LIMIT_REDIS_URL", "http://redis"),
        ("RATE_LIMIT_REDIS_LAYOUT", "lists"),
        ("API_KEY_AUTH_ENABLED", "2"),
        ("CORS_ORIGINS", "not-an-origin"),
        ("CORS_ALLOW_CREDENTIALS", "sometimes"),
        ("SECURITY_HEADERS_ENABLED", "nah"),
        ("HTTPS_ONLY", "always"),
        ("DEBUG", "loud"),
        ("INFERGATE_LISTEN", "localhost"),
        ("INFERGATE_UPSTREAM", "ftp://x"),
        ("INFERGATE_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("INFERGATE_API_KEY_HEADER", "X API Key"),
        ("LOG_FORMAT", "xml"),
        ("TRUSTED_HOSTS", ""),
    ];
    for (name, value) in cases {
        let err = load(&[(name, value)]).expect_err(&format!("{name}={value} must fail"));
        let msg = err.to_string();
        assert!(
            msg.contains(name),
            "{name}={value}: message does not name the setting: {msg}"
        );
        assert!(!msg.contains('\n'), "one line: {msg}");
    }
}

/// The Redis limiter's layout: `counters` unless told otherwise, `hashes` for a rolling upgrade
/// from a release before the setting (docs/ratelimit.md).
#[test]
fn redis_layout_defaults_to_counters() {
    use infergate_config::RedisLayout;
    let cfg = load(&[]).unwrap();
    assert_eq!(cfg.rate_limit.redis_layout, RedisLayout::Counters);
    let cfg = load(&[("RATE_LIMIT_REDIS_LAYOUT", "Hashes")]).unwrap();
    assert_eq!(cfg.rate_limit.redis_layout, RedisLayout::Hashes);
    let msg = load(&[("RATE_LIMIT_REDIS_LAYOUT", "lists")])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("counters or hashes"), "{msg}");
}

#[test]
fn contradictions_fail() {
    let err = load(&[("CORS_ORIGINS", "*"), ("CORS_ALLOW_CREDENTIALS", "true")]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("CORS_ORIGINS") && msg.contains("CORS_ALLOW_CREDENTIALS"),
        "{msg}"
    );
    let err = load(&[("INFERGATE_TLS_CERT", "/tmp/cert.pem")]).unwrap_err();
    assert!(err.to_string().contains("INFERGATE_TLS_KEY"), "{err}");
}

#[test]
fn yaml_errors_name_the_file_and_the_field() {
    let f = yaml_file("rate_limit:\n  defualt: 5/second\n");
    let msg = load_gateway(Some(f.path()), &MapSource::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("defualt"), "{msg}");
    let f = yaml_file("auth:\n  permissions:\n    superuser: [\"GET /models\"]\n");
    let msg = load_gateway(Some(f.path()), &MapSource::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("superuser"), "{msg}");
    let f = yaml_file("rate_limit:\n  endpoints:\n    /nope: 5/second\n");
    let msg = load_gateway(Some(f.path()), &MapSource::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("/nope"), "{msg}");
    let missing = load_gateway(
        Some(std::path::Path::new("/nonexistent/gw.yaml")),
        &MapSource::default(),
    );
    assert!(
        missing
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/gw.yaml")
    );
}

#[test]
fn effective_settings_mask_secrets() {
    let cfg = load(&[
        ("API_KEY", "sk-live-0123456789abcdef"),
        ("INFERGATE_UPSTREAM_API_KEY", "upstream-secret-value-123"),
    ])
    .unwrap();
    let json = serde_json::to_string(&cfg).unwrap();
    assert!(!json.contains("sk-live-0123456789abcdef"), "{json}");
    assert!(!json.contains("upstream-secret-value-123"), "{json}");
    assert!(json.contains("sk-live-..."), "{json}");
}
