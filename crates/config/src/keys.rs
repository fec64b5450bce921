//! Settings shared by every service that touches API keys: which key store, the key prefix, and
//! JWTs. The gateway and key-admin read the same `key_store:` and `jwt:` YAML sections and the
//! same environment variables, so both always look at the same keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::env::{self, EnvVar, var};
use crate::{ConfigError, Secret, Source};

/// `key_store:` in YAML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawKeyStore {
    /// `file` (default), `redis` or `memory`. Env: `KEY_STORE`.
    pub backend: String,
    /// Redis URL for the `redis` backend. Env: `KEY_STORE_REDIS_URL` (falls back to
    /// `RATE_LIMIT_REDIS_URL`).
    pub redis_url: Option<String>,
    /// Namespace of every Redis key. Env: `KEY_STORE_REDIS_PREFIX`.
    pub redis_prefix: String,
    /// Prefix of newly minted keys. Env: `INFERGATE_KEY_PREFIX`.
    pub key_prefix: String,
    /// How often the file store checks the file for changes.
    pub reload_interval_ms: u64,
    /// Verified-key cache: entries and lifetime (the safety net behind the change feed).
    pub cache_size: usize,
    pub cache_ttl_seconds: u64,
    /// How long a failed verification is remembered.
    pub negative_cache_ttl_seconds: u64,
    /// argon2 verifications allowed at once (they run off the async workers).
    pub max_concurrent_verifications: usize,
}

impl Default for RawKeyStore {
    fn default() -> Self {
        Self {
            backend: "file".into(),
            redis_url: None,
            redis_prefix: "infergate".into(),
            key_prefix: "igk".into(),
            reload_interval_ms: 250,
            cache_size: 10_000,
            cache_ttl_seconds: 60,
            negative_cache_ttl_seconds: 5,
            max_concurrent_verifications: 2,
        }
    }
}

/// `jwt:` in YAML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawJwt {
    /// Accept (gateway) / issue (key-admin) JWTs. Env: `INFERGATE_JWT_ENABLED`.
    pub enabled: bool,
    /// `EdDSA` (default), `ES256` or `HS256`. Env: `INFERGATE_JWT_ALGORITHM`.
    pub algorithm: String,
    /// PEM private key (EdDSA/ES256), needed to issue. Env: `INFERGATE_JWT_PRIVATE_KEY_FILE`.
    pub private_key_file: Option<String>,
    /// PEM public key (EdDSA/ES256), needed to verify. Env: `INFERGATE_JWT_PUBLIC_KEY_FILE`.
    pub public_key_file: Option<String>,
    /// File holding the HS256 shared secret. Env: `INFERGATE_JWT_SECRET_FILE` (or the secret
    /// itself in `INFERGATE_JWT_SECRET`).
    pub secret_file: Option<String>,
    /// Env: `INFERGATE_JWT_ISSUER`.
    pub issuer: String,
    /// Env: `INFERGATE_JWT_AUDIENCE`.
    pub audience: String,
    /// Token lifetime (never beyond the key's own expiry). Env: `INFERGATE_JWT_TTL_SECONDS`.
    pub ttl_seconds: u64,
    /// Clock skew tolerated on `exp`/`nbf`.
    pub leeway_seconds: u64,
    /// Tokens from other issuers the gateway also accepts.
    pub external_issuers: Vec<RawExternalIssuer>,
}

impl Default for RawJwt {
    fn default() -> Self {
        Self {
            enabled: false,
            algorithm: "EdDSA".into(),
            private_key_file: None,
            public_key_file: None,
            secret_file: None,
            issuer: "infergate".into(),
            audience: "infergate-gateway".into(),
            ttl_seconds: 900,
            leeway_seconds: 5,
            external_issuers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExternalIssuer {
    pub issuer: String,
    pub audience: String,
    /// A JWKS document on disk.
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// PEM public keys (EdDSA, ES256 or RS256).
    #[serde(default)]
    pub public_key_files: Vec<String>,
    /// Role given to tokens from this issuer that carry no `role` claim; none = refuse them.
    #[serde(default)]
    pub default_role: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStoreBackend {
    File,
    Redis,
    Memory,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyStoreSettings {
    pub backend: KeyStoreBackend,
    /// The file store's path (`auth.keys_file` / `INFERGATE_KEYS_FILE`).
    pub file: PathBuf,
    pub redis_url: Option<Secret>,
    pub redis_prefix: String,
    pub key_prefix: String,
    #[serde(serialize_with = "crate::parse::millis", rename = "reload_interval_ms")]
    pub reload_interval: Duration,
    pub cache_size: usize,
    #[serde(serialize_with = "crate::parse::secs", rename = "cache_ttl_seconds")]
    pub cache_ttl: Duration,
    #[serde(
        serialize_with = "crate::parse::secs",
        rename = "negative_cache_ttl_seconds"
    )]
    pub negative_cache_ttl: Duration,
    pub max_concurrent_verifications: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum JwtAlgorithm {
    EdDSA,
    ES256,
    HS256,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExternalIssuer {
    pub issuer: String,
    pub audience: String,
    pub jwks_file: Option<PathBuf>,
    pub public_key_files: Vec<PathBuf>,
    pub default_role: Option<infergate_policy::Role>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JwtSettings {
    pub enabled: bool,
    pub algorithm: JwtAlgorithm,
    pub private_key_file: Option<PathBuf>,
    pub public_key_file: Option<PathBuf>,
    /// The HS256 secret (read from `secret_file` or `INFERGATE_JWT_SECRET`).
    pub secret: Option<Secret>,
    /// Where `secret` was read from, when from a file (the YAML's `jwt.secret_file`).
    pub secret_file: Option<PathBuf>,
    pub issuer: String,
    pub audience: String,
    #[serde(serialize_with = "crate::parse::secs", rename = "ttl_seconds")]
    pub ttl: Duration,
    #[serde(serialize_with = "crate::parse::secs", rename = "leeway_seconds")]
    pub leeway: Duration,
    pub external_issuers: Vec<ExternalIssuer>,
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() || base.as_os_str().is_empty() {
        p
    } else {
        base.join(p)
    }
}

/// Applies the environment to the two sections (names in the field docs above).
/// The key-store variables both services read.
pub const KEY_STORE_ENV: &[EnvVar<RawKeyStore>] = &[
    var!("KEY_STORE", "key_store.backend", backend = env::text),
    var!(
        "KEY_STORE_REDIS_URL",
        "key_store.redis_url",
        redis_url = env::optional
    ),
    var!(
        "KEY_STORE_REDIS_PREFIX",
        "key_store.redis_prefix",
        redis_prefix = env::text
    ),
    var!(
        "INFERGATE_KEY_PREFIX",
        "key_store.key_prefix",
        key_prefix = env::text
    ),
];

/// The JWT variables both services read.
pub const JWT_ENV: &[EnvVar<RawJwt>] = &[
    var!(
        "INFERGATE_JWT_ENABLED",
        "jwt.enabled",
        enabled = env::boolean
    ),
    var!(
        "INFERGATE_JWT_ALGORITHM",
        "jwt.algorithm",
        algorithm = env::text
    ),
    var!(
        "INFERGATE_JWT_PRIVATE_KEY_FILE",
        "jwt.private_key_file",
        private_key_file = env::optional
    ),
    var!(
        "INFERGATE_JWT_PUBLIC_KEY_FILE",
        "jwt.public_key_file",
        public_key_file = env::optional
    ),
    var!(
        "INFERGATE_JWT_SECRET_FILE",
        "jwt.secret_file",
        secret_file = env::optional
    ),
    var!("INFERGATE_JWT_ISSUER", "jwt.issuer", issuer = env::text),
    var!(
        "INFERGATE_JWT_AUDIENCE",
        "jwt.audience",
        audience = env::text
    ),
    var!(
        "INFERGATE_JWT_TTL_SECONDS",
        "jwt.ttl_seconds",
        ttl_seconds = env::positive
    ),
];

/// Both tables; then, when `KEY_STORE_REDIS_URL` is unset, the Redis store shares the limiter's
/// `RATE_LIMIT_REDIS_URL` (one Redis for everything is the common deployment).
pub fn apply_env(
    ks: &mut RawKeyStore,
    jwt: &mut RawJwt,
    source: &dyn Source,
    set_by_env: &mut BTreeMap<&'static str, &'static str>,
) -> Result<(), ConfigError> {
    env::apply(ks, source, KEY_STORE_ENV, set_by_env)?;
    env::apply(jwt, source, JWT_ENV, set_by_env)?;
    if source.get("KEY_STORE_REDIS_URL").is_none()
        && let Some(v) = source.get("RATE_LIMIT_REDIS_URL")
    {
        ks.redis_url = env::optional("RATE_LIMIT_REDIS_URL", v)?;
    }
    Ok(())
}

/// Validates the key-store section. `keys_file` is the already-resolved file store path.
pub fn key_store_settings(
    raw: &RawKeyStore,
    keys_file: PathBuf,
) -> Result<KeyStoreSettings, ConfigError> {
    let backend = match raw.backend.trim().to_ascii_lowercase().as_str() {
        "file" => KeyStoreBackend::File,
        "redis" => KeyStoreBackend::Redis,
        "memory" => KeyStoreBackend::Memory,
        _ => {
            return Err(ConfigError::invalid(
                "KEY_STORE (key_store.backend)",
                &raw.backend,
                "file, redis or memory",
            ));
        }
    };
    let redis_url = match &raw.redis_url {
        Some(u) if !(u.starts_with("redis://") || u.starts_with("rediss://")) => {
            return Err(ConfigError::invalid(
                "KEY_STORE_REDIS_URL (key_store.redis_url)",
                Secret::new(u.clone()).masked(),
                "a redis:// or rediss:// URL",
            ));
        }
        other => other.clone().map(Secret::new),
    };
    if backend == KeyStoreBackend::Redis && redis_url.is_none() {
        return Err(ConfigError::Contradiction {
            settings: "KEY_STORE=redis, KEY_STORE_REDIS_URL".into(),
            detail: "the redis key store needs a URL (KEY_STORE_REDIS_URL or RATE_LIMIT_REDIS_URL)"
                .into(),
        });
    }
    let prefix = &raw.key_prefix;
    let prefix_ok = (2..=16).contains(&prefix.len())
        && prefix.as_bytes()[0].is_ascii_lowercase()
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !prefix_ok {
        return Err(ConfigError::invalid(
            "INFERGATE_KEY_PREFIX (key_store.key_prefix)",
            prefix,
            "2-16 characters of a-z and 0-9 starting with a letter, e.g. igk or rx580",
        ));
    }
    if raw.redis_prefix.is_empty() || raw.redis_prefix.contains(['{', '}', ' ']) {
        return Err(ConfigError::invalid(
            "KEY_STORE_REDIS_PREFIX (key_store.redis_prefix)",
            &raw.redis_prefix,
            "a non-empty name without braces or spaces",
        ));
    }
    for (name, v) in [
        ("key_store.reload_interval_ms", raw.reload_interval_ms),
        ("key_store.cache_size", raw.cache_size as u64),
        ("key_store.cache_ttl_seconds", raw.cache_ttl_seconds),
        (
            "key_store.max_concurrent_verifications",
            raw.max_concurrent_verifications as u64,
        ),
    ] {
        if v == 0 {
            return Err(ConfigError::invalid(name, "0", "a positive number"));
        }
    }
    Ok(KeyStoreSettings {
        backend,
        file: keys_file,
        redis_url,
        redis_prefix: raw.redis_prefix.clone(),
        key_prefix: raw.key_prefix.clone(),
        reload_interval: Duration::from_millis(raw.reload_interval_ms),
        cache_size: raw.cache_size,
        cache_ttl: Duration::from_secs(raw.cache_ttl_seconds),
        negative_cache_ttl: Duration::from_secs(raw.negative_cache_ttl_seconds),
        max_concurrent_verifications: raw.max_concurrent_verifications,
    })
}

/// Validates the JWT section. Relative paths resolve against `base` (the config file's directory).
/// `env` supplies `INFERGATE_JWT_SECRET` (a secret is never read from YAML).
pub fn jwt_settings(
    raw: &RawJwt,
    base: &Path,
    env: &dyn Source,
) -> Result<JwtSettings, ConfigError> {
    let algorithm = match raw.algorithm.trim() {
        "EdDSA" | "eddsa" | "Ed25519" => JwtAlgorithm::EdDSA,
        "ES256" | "es256" => JwtAlgorithm::ES256,
        "HS256" | "hs256" => JwtAlgorithm::HS256,
        _ => {
            return Err(ConfigError::invalid(
                "INFERGATE_JWT_ALGORITHM (jwt.algorithm)",
                &raw.algorithm,
                "EdDSA, ES256 or HS256",
            ));
        }
    };
    let secret = match (
        &raw.secret_file,
        env.get("INFERGATE_JWT_SECRET").filter(|s| !s.is_empty()),
    ) {
        (_, Some(s)) => Some(Secret::new(s)),
        (Some(f), None) => {
            let path = resolve(base, f);
            let s = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::invalid(
                    "INFERGATE_JWT_SECRET_FILE (jwt.secret_file)",
                    path.display().to_string(),
                    format!("a readable file ({e})"),
                )
            })?;
            Some(Secret::new(s.trim()))
        }
        (None, None) => None,
    };
    if raw.enabled && algorithm == JwtAlgorithm::HS256 {
        match &secret {
            Some(s) if s.expose().len() >= 32 => {}
            _ => {
                return Err(ConfigError::invalid(
                    "INFERGATE_JWT_SECRET / INFERGATE_JWT_SECRET_FILE",
                    "(masked)",
                    "a shared secret of at least 32 characters for HS256",
                ));
            }
        }
    }
    let mut external_issuers = Vec::new();
    for e in &raw.external_issuers {
        if e.jwks_file.is_none() && e.public_key_files.is_empty() {
            return Err(ConfigError::invalid(
                "jwt.external_issuers",
                &e.issuer,
                "an issuer with jwks_file or public_key_files",
            ));
        }
        let default_role = match &e.default_role {
            Some(r) => Some(r.parse().map_err(|err: infergate_policy::UnknownRole| {
                ConfigError::invalid("jwt.external_issuers.default_role", r, err.to_string())
            })?),
            None => None,
        };
        external_issuers.push(ExternalIssuer {
            issuer: e.issuer.clone(),
            audience: e.audience.clone(),
            jwks_file: e.jwks_file.as_deref().map(|f| resolve(base, f)),
            public_key_files: e
                .public_key_files
                .iter()
                .map(|f| resolve(base, f))
                .collect(),
            default_role,
        });
    }
    if raw.ttl_seconds == 0 {
        return Err(ConfigError::invalid(
            "INFERGATE_JWT_TTL_SECONDS (jwt.ttl_seconds)",
            "0",
            "a positive number of seconds",
        ));
    }
    Ok(JwtSettings {
        enabled: raw.enabled,
        algorithm,
        private_key_file: raw.private_key_file.as_deref().map(|f| resolve(base, f)),
        public_key_file: raw.public_key_file.as_deref().map(|f| resolve(base, f)),
        secret,
        secret_file: raw.secret_file.as_deref().map(|f| resolve(base, f)),
        issuer: raw.issuer.clone(),
        audience: raw.audience.clone(),
        ttl: Duration::from_secs(raw.ttl_seconds),
        leeway: Duration::from_secs(raw.leeway_seconds),
        external_issuers,
    })
}
