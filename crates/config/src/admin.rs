//! The key-admin service's validated configuration and its loader.
//!
//! Same layering as the gateway: built-in defaults (identical to the shipped
//! `config/key-admin.yaml`), a YAML file (`--config PATH` or `INFERGATE_ADMIN_CONFIG`), then the
//! environment (which the binary builds from `.env` under the process environment). The
//! `key_store:` and `jwt:` sections and their variables are shared with the gateway
//! ([`crate::keys`]), so both services always look at the same keys.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use infergate_policy::HostMatcher;
use infergate_types::key_shape::looks_like_key;
use infergate_types::{HashParams, HashParamsRefused, OWASP_MIN};

use crate::env::{self, EnvVar, var};
use crate::keys::{RawJwt, RawKeyStore};
use crate::raw::{RawLogging, RawSecurityHeaders};
use crate::{
    ConfigError, JwtSettings, KeyStoreSettings, LogFormat, LogSettings, Secret, Source, parse,
};

/// Shortest plaintext (non-`igk`) `ADMIN_API_KEY` accepted.
pub const LEGACY_ADMIN_KEY_MIN_LEN: usize = 16;

/// The YAML document as written, every field defaulted; unknown fields are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAdminConfig {
    pub listen: String,
    /// 0 means one worker per CPU.
    pub workers: usize,
    pub shutdown_timeout_seconds: u64,
    /// Written once the listeners are bound: a JSON object of the bound addresses (`listen`, and
    /// `metrics_listen` when separate), renamed into place so no reader sees half of it; removed
    /// on a clean exit. For supervisors and tests that started the service on port 0.
    pub ready_file: Option<String>,
    /// The file store's path. Relative paths are resolved against the configuration file's
    /// directory (or the working directory when there is no file, or when the environment set it).
    pub keys_file: String,
    pub trusted_hosts: Vec<String>,
    pub security_headers: RawSecurityHeaders,
    pub logging: RawLogging,
    pub hashing: RawHashing,
    /// How long a successful admin-key verification is remembered (the change feed drops entries
    /// sooner when a key changes).
    pub auth_cache_ttl_seconds: u64,
    /// The operator console (`/console`).
    pub console: RawConsole,
    pub key_store: RawKeyStore,
    pub jwt: RawJwt,
}

impl Default for RawAdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8001".into(),
            workers: 0,
            shutdown_timeout_seconds: 30,
            ready_file: None,
            keys_file: "config/api_keys.yaml".into(),
            trusted_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            security_headers: RawSecurityHeaders::default(),
            logging: RawLogging::default(),
            hashing: RawHashing::default(),
            auth_cache_ttl_seconds: 30,
            console: RawConsole::default(),
            key_store: RawKeyStore::default(),
            jwt: RawJwt::default(),
        }
    }
}

/// `console:` in YAML: the operator console's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConsole {
    /// A console session ends this long after sign-in.
    pub session_ttl_seconds: u64,
    /// Mark the session cookie `Secure` (set it when key-admin is reached over TLS, through a
    /// proxy that terminates it).
    pub secure_cookie: bool,
    /// Failed sign-ins allowed per client address and minute before `429`.
    pub failed_sign_ins_per_minute: u64,
}

impl Default for RawConsole {
    fn default() -> Self {
        Self {
            session_ttl_seconds: 900,
            secure_cookie: false,
            failed_sign_ins_per_minute: 10,
        }
    }
}

/// `hashing:` in YAML: argon2id cost for newly minted keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawHashing {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for RawHashing {
    fn default() -> Self {
        Self {
            memory_kib: OWASP_MIN.memory_kib,
            iterations: OWASP_MIN.iterations,
            parallelism: OWASP_MIN.parallelism,
        }
    }
}

/// The key-admin service's effective configuration. `Serialize` prints it with secrets masked.
/// The operator console's sessions.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleSettings {
    #[serde(serialize_with = "crate::parse::secs", rename = "session_ttl_seconds")]
    pub session_ttl: Duration,
    pub secure_cookie: bool,
    pub failed_sign_ins_per_minute: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AdminConfig {
    pub config_file: Option<PathBuf>,
    pub listen: SocketAddr,
    pub workers: usize,
    #[serde(
        serialize_with = "crate::parse::secs",
        rename = "shutdown_timeout_seconds"
    )]
    pub shutdown_timeout: Duration,
    /// Written once the listeners are bound: a JSON object of the bound addresses (`listen`, and
    /// `metrics_listen` when separate), renamed into place so no reader sees half of it; removed
    /// on a clean exit. For supervisors and tests that started the service on port 0.
    pub ready_file: Option<PathBuf>,
    /// The file store's path (also in `key_store.file`).
    pub keys_file: PathBuf,
    pub key_store: KeyStoreSettings,
    pub jwt: JwtSettings,
    /// `ADMIN_API_KEY` (or the contents of `ADMIN_API_KEY_FILE`): an `igk` key ensured in the
    /// store at startup, or a plaintext legacy admin credential.
    pub admin_api_key: Option<Secret>,
    pub trusted_hosts: HostMatcher,
    pub security_headers: bool,
    pub logging: LogSettings,
    /// Never below OWASP's argon2id minimum ([`HashParams::check`]).
    pub hashing: HashParams,
    #[serde(
        serialize_with = "crate::parse::secs",
        rename = "auth_cache_ttl_seconds"
    )]
    pub auth_cache_ttl: Duration,
    pub console: ConsoleSettings,
    /// YAML path → the environment variable that set it, for error messages.
    #[serde(skip)]
    pub set_by_env: BTreeMap<&'static str, &'static str>,
}

impl AdminConfig {
    /// The name to show for a setting: the environment variable if one set it, else its YAML path.
    pub fn setting_name(&self, yaml_path: &'static str) -> &'static str {
        self.set_by_env.get(yaml_path).copied().unwrap_or(yaml_path)
    }

    /// Defaults only, no file, no environment.
    pub fn defaults() -> Self {
        validate(
            RawAdminConfig::default(),
            None,
            Path::new(""),
            Path::new(""),
            &crate::MapSource::default(),
            BTreeMap::new(),
        )
        .unwrap_or_else(|e| panic!("built-in defaults must validate: {e}"))
    }
}

/// Loads the key-admin configuration: defaults, then the YAML file (`config_path`, else
/// `INFERGATE_ADMIN_CONFIG`), then `env`.
pub fn load_admin(
    config_path: Option<&Path>,
    env: &dyn Source,
) -> Result<AdminConfig, ConfigError> {
    let path: Option<PathBuf> = match config_path {
        Some(p) => Some(p.to_path_buf()),
        None => env
            .get("INFERGATE_ADMIN_CONFIG")
            .filter(|s| !s.trim().is_empty())
            .map(PathBuf::from),
    };
    let (mut raw, base_dir): (RawAdminConfig, PathBuf) = crate::parse::yaml_file(path.as_deref())?;
    let mut set_by_env = BTreeMap::new();
    crate::env::apply(&mut raw, env, ENV, &mut set_by_env)?;
    crate::keys::apply_env(&mut raw.key_store, &mut raw.jwt, env, &mut set_by_env)?;
    // A keys file named by the environment is relative to the working directory; one named in the
    // YAML is relative to the YAML file.
    let keys_base = if set_by_env.contains_key("keys_file") {
        PathBuf::new()
    } else {
        base_dir.clone()
    };
    let mut cfg = validate(raw, path, &keys_base, &base_dir, env, set_by_env)?;
    cfg.admin_api_key = admin_api_key(env)?;
    Ok(cfg)
}

/// `ADMIN_API_KEY`, or the first line of the file `ADMIN_API_KEY_FILE` names (for container
/// secrets). Both at once is a contradiction: which one wins would be a guess.
fn admin_api_key(env: &dyn Source) -> Result<Option<Secret>, ConfigError> {
    let direct = env
        .get("ADMIN_API_KEY")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let file = env
        .get("ADMIN_API_KEY_FILE")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let key = match (direct, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Contradiction {
                settings: "ADMIN_API_KEY, ADMIN_API_KEY_FILE".into(),
                detail: "set one of them, not both".into(),
            });
        }
        (Some(k), None) => k,
        (None, Some(f)) => {
            let text = std::fs::read_to_string(&f).map_err(|e| {
                ConfigError::invalid("ADMIN_API_KEY_FILE", &f, format!("a readable file ({e})"))
            })?;
            let k = text.trim().to_string();
            if k.is_empty() {
                return Err(ConfigError::invalid(
                    "ADMIN_API_KEY_FILE",
                    &f,
                    "a file holding the admin key",
                ));
            }
            k
        }
        (None, None) => return Ok(None),
    };
    let secret = Secret::new(key);
    let v = secret.expose();
    if !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::invalid(
            "ADMIN_API_KEY",
            secret.masked(),
            "printable ASCII without spaces",
        ));
    }
    // Our own format is checked (checksum and all) when the service starts; anything else is a
    // plaintext credential and must not be guessable.
    let ours = looks_like_key(v);
    if !ours && v.len() < LEGACY_ADMIN_KEY_MIN_LEN {
        return Err(ConfigError::invalid(
            "ADMIN_API_KEY",
            secret.masked(),
            format!(
                "an infergate key (igk_…) or a plaintext key of at least {LEGACY_ADMIN_KEY_MIN_LEN} characters"
            ),
        ));
    }
    Ok(Some(secret))
}

/// key-admin's environment variables (see docs/configuration.md).
pub const ENV: &[EnvVar<RawAdminConfig>] = &[
    var!("INFERGATE_ADMIN_LISTEN", "listen", listen = env::text),
    var!(
        "INFERGATE_ADMIN_READY_FILE",
        "ready_file",
        ready_file = env::optional
    ),
    var!("INFERGATE_ADMIN_WORKERS", "workers", workers = env::whole),
    var!(
        "INFERGATE_ADMIN_SHUTDOWN_TIMEOUT_SECONDS",
        "shutdown_timeout_seconds",
        shutdown_timeout_seconds = env::positive
    ),
    var!("INFERGATE_KEYS_FILE", "keys_file", keys_file = env::text),
    var!("TRUSTED_HOSTS", "trusted_hosts", trusted_hosts = env::list),
    var!(
        "SECURITY_HEADERS_ENABLED",
        "security_headers.enabled",
        security_headers.enabled = env::boolean
    ),
    var!("LOG_FORMAT", "logging.format", logging.format = env::text),
    var!("LOG_LEVEL", "logging.level", logging.level = env::text),
];

fn validate(
    raw: RawAdminConfig,
    config_file: Option<PathBuf>,
    keys_base: &Path,
    base_dir: &Path,
    env: &dyn Source,
    set_by_env: BTreeMap<&'static str, &'static str>,
) -> Result<AdminConfig, ConfigError> {
    let name =
        |path: &'static str| -> &'static str { set_by_env.get(path).copied().unwrap_or(path) };

    let listen = parse::socket_addr(name("listen"), &raw.listen)?;
    for (path, v) in [
        ("shutdown_timeout_seconds", raw.shutdown_timeout_seconds),
        ("auth_cache_ttl_seconds", raw.auth_cache_ttl_seconds),
        (
            "console.session_ttl_seconds",
            raw.console.session_ttl_seconds,
        ),
        (
            "console.failed_sign_ins_per_minute",
            raw.console.failed_sign_ins_per_minute,
        ),
    ] {
        if v == 0 {
            return Err(ConfigError::invalid(
                name(path),
                "0",
                "a positive number of seconds",
            ));
        }
    }
    let trusted_hosts = parse::hosts(name("trusted_hosts"), &raw.trusted_hosts)?;
    if raw.keys_file.trim().is_empty() {
        return Err(ConfigError::invalid(
            name("keys_file"),
            "(empty)",
            "a path to the keys file",
        ));
    }
    let keys_file = {
        let p = PathBuf::from(&raw.keys_file);
        if p.is_absolute() || keys_base.as_os_str().is_empty() {
            p
        } else {
            keys_base.join(p)
        }
    };
    let h = raw.hashing;
    let hashing = HashParams {
        memory_kib: h.memory_kib,
        iterations: h.iterations,
        parallelism: h.parallelism,
    };
    if let Err(refused) = hashing.check() {
        let (path, v) = match refused {
            HashParamsRefused::Memory(v) => ("hashing.memory_kib", v),
            HashParamsRefused::Iterations(v) => ("hashing.iterations", v),
            HashParamsRefused::Lanes(v) => ("hashing.parallelism", v),
        };
        return Err(ConfigError::invalid(
            path,
            v.to_string(),
            refused.to_string(),
        ));
    }
    let format = match raw.logging.format.trim().to_ascii_lowercase().as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        _ => {
            return Err(ConfigError::invalid(
                name("logging.format"),
                &raw.logging.format,
                "text or json",
            ));
        }
    };
    let key_store = crate::keys::key_store_settings(&raw.key_store, keys_file.clone())?;
    let jwt = crate::keys::jwt_settings(&raw.jwt, base_dir, env)?;
    Ok(AdminConfig {
        config_file,
        listen,
        workers: raw.workers,
        shutdown_timeout: Duration::from_secs(raw.shutdown_timeout_seconds),
        ready_file: raw.ready_file.as_ref().map(PathBuf::from),
        keys_file,
        key_store,
        jwt,
        admin_api_key: None,
        trusted_hosts,
        security_headers: raw.security_headers.enabled,
        logging: LogSettings {
            format,
            level: raw.logging.level,
        },
        hashing,
        auth_cache_ttl: Duration::from_secs(raw.auth_cache_ttl_seconds),
        console: ConsoleSettings {
            session_ttl: Duration::from_secs(raw.console.session_ttl_seconds),
            secure_cookie: raw.console.secure_cookie,
            failed_sign_ins_per_minute: raw.console.failed_sign_ins_per_minute,
        },
        set_by_env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyStoreBackend, MapSource};
    use std::io::Write;

    fn load(pairs: &[(&str, &str)]) -> Result<AdminConfig, ConfigError> {
        load_admin(None, &MapSource::new(pairs.iter().copied()))
    }

    fn yaml_file(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("key-admin.yaml");
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        p
    }

    #[test]
    fn shipped_file_equals_built_in_defaults() {
        let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/key-admin.yaml");
        let text = std::fs::read_to_string(&shipped).unwrap();
        let mut from_file: RawAdminConfig = serde_yaml::from_str(&text).unwrap();
        // Relative to the file there, relative to the working directory built in: both name
        // config/api_keys.yaml from the repository root.
        assert_eq!(from_file.keys_file, "api_keys.yaml");
        from_file.keys_file = RawAdminConfig::default().keys_file;
        assert_eq!(from_file, RawAdminConfig::default());
        let cfg = load_admin(Some(&shipped), &MapSource::default()).unwrap();
        assert!(cfg.keys_file.ends_with("config/api_keys.yaml"));
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let cfg = load(&[]).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8001");
        assert_eq!(cfg.keys_file, PathBuf::from("config/api_keys.yaml"));
        assert_eq!(cfg.key_store.backend, KeyStoreBackend::File);
        assert_eq!(cfg.hashing.memory_kib, 19_456);
        assert_eq!(cfg.auth_cache_ttl, Duration::from_secs(30));
        assert!(cfg.security_headers && cfg.admin_api_key.is_none() && !cfg.jwt.enabled);
        AdminConfig::defaults();
    }

    #[test]
    fn environment_overrides_the_file_and_paths_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let p = yaml_file(
            dir.path(),
            "listen: 127.0.0.1:7001\nkeys_file: keys.yaml\nkey_store:\n  backend: memory\n",
        );
        let cfg = load_admin(Some(&p), &MapSource::default()).unwrap();
        assert_eq!(cfg.keys_file, dir.path().join("keys.yaml"));
        assert_eq!(cfg.key_store.backend, KeyStoreBackend::Memory);
        let cfg = load_admin(
            Some(&p),
            &MapSource::new([
                ("INFERGATE_ADMIN_LISTEN", "127.0.0.1:7002"),
                ("INFERGATE_KEYS_FILE", "rel/keys.yaml"),
                ("KEY_STORE", "file"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:7002");
        assert_eq!(cfg.keys_file, PathBuf::from("rel/keys.yaml"));
        assert_eq!(cfg.key_store.file, PathBuf::from("rel/keys.yaml"));
        let by_var = load(&[("INFERGATE_ADMIN_CONFIG", p.to_str().unwrap())]).unwrap();
        assert_eq!(by_var.listen.to_string(), "127.0.0.1:7001");
    }

    #[test]
    fn admin_key_from_the_environment_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("admin.key");
        std::fs::write(&f, "legacy-admin-key-0123456789\n").unwrap();
        let cfg = load(&[("ADMIN_API_KEY_FILE", f.to_str().unwrap())]).unwrap();
        assert_eq!(
            cfg.admin_api_key.unwrap().expose(),
            "legacy-admin-key-0123456789"
        );
        let cfg = load(&[("ADMIN_API_KEY", "another-legacy-admin-key")]).unwrap();
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(!json.contains("another-legacy-admin-key"), "{json}");
        let both = load(&[
            ("ADMIN_API_KEY", "another-legacy-admin-key"),
            ("ADMIN_API_KEY_FILE", f.to_str().unwrap()),
        ])
        .unwrap_err()
        .to_string();
        assert!(both.contains("ADMIN_API_KEY_FILE"), "{both}");
        let short = load(&[("ADMIN_API_KEY", "short")]).unwrap_err().to_string();
        assert!(
            short.contains("ADMIN_API_KEY") && !short.contains("short"),
            "{short}"
        );
        let missing = load(&[("ADMIN_API_KEY_FILE", "/nonexistent/admin.key")]).unwrap_err();
        assert!(missing.to_string().contains("ADMIN_API_KEY_FILE"));
    }

    #[test]
    fn every_bad_setting_names_itself() {
        let cases: &[(&str, &str)] = &[
            ("INFERGATE_ADMIN_LISTEN", "nowhere"),
            ("INFERGATE_ADMIN_WORKERS", "many"),
            ("INFERGATE_ADMIN_SHUTDOWN_TIMEOUT_SECONDS", "0"),
            ("TRUSTED_HOSTS", ""),
            ("SECURITY_HEADERS_ENABLED", "nah"),
            ("LOG_FORMAT", "xml"),
            ("KEY_STORE", "etcd"),
            ("INFERGATE_KEY_PREFIX", "Bad_Prefix"),
            ("INFERGATE_JWT_ALGORITHM", "none"),
            ("INFERGATE_JWT_ENABLED", "perhaps"),
        ];
        for (name, value) in cases {
            let err = load(&[(name, value)]).expect_err(&format!("{name}={value} must fail"));
            let msg = err.to_string();
            assert!(msg.contains(name), "{name}={value}: {msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
    }

    #[test]
    fn weak_hashing_and_yaml_typos_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (yaml, needle) in [
            ("hashing:\n  memory_kib: 1024\n", "hashing.memory_kib"),
            ("hashing:\n  iterations: 1\n", "hashing.iterations"),
            ("hashing:\n  parallelism: 0\n", "hashing.parallelism"),
            ("hashing:\n  memroy_kib: 65536\n", "memroy_kib"),
            ("listen_addr: 127.0.0.1:1\n", "listen_addr"),
        ] {
            let p = yaml_file(dir.path(), yaml);
            let msg = load_admin(Some(&p), &MapSource::default())
                .unwrap_err()
                .to_string();
            assert!(msg.contains(needle), "{yaml}: {msg}");
        }
        let p = yaml_file(
            dir.path(),
            "hashing:\n  memory_kib: 65536\n  iterations: 3\n",
        );
        let cfg = load_admin(Some(&p), &MapSource::default()).unwrap();
        assert_eq!((cfg.hashing.memory_kib, cfg.hashing.iterations), (65536, 3));
    }
}
