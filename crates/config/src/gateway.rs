//! The gateway's validated configuration and its loader.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use infergate_policy::{HostMatcher, Permissions, RouteTable};
use infergate_types::{FailureMode, RateSpec};

use crate::env::{self, EnvVar, var};
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use serde::Serialize;

use crate::raw::RawConfig;
use crate::{ConfigError, Secret, Source, parse};

#[derive(Debug, Clone, Serialize)]
pub struct UpstreamSettings {
    pub url: String,
    #[serde(serialize_with = "crate::parse::secs", rename = "timeout_seconds")]
    pub timeout: Duration,
    #[serde(
        serialize_with = "crate::parse::secs",
        rename = "connect_timeout_seconds"
    )]
    pub connect_timeout: Duration,
    #[serde(serialize_with = "crate::parse::secs", rename = "idle_timeout_seconds")]
    pub idle_timeout: Duration,
    pub api_key: Option<Secret>,
    pub api_key_header: String,
    /// `api_key` as the header sent upstream (`Bearer …` for `Authorization`), marked sensitive.
    #[serde(skip)]
    pub credential: Option<(HeaderName, HeaderValue)>,
    pub max_connections: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuthSettings {
    pub enabled: bool,
    /// As written, for display.
    pub header_name: String,
    /// `header_name` parsed (lowercase), what requests are read by.
    #[serde(skip)]
    pub header: HeaderName,
    pub query_param_enabled: bool,
    pub keys_file: PathBuf,
    /// `API_KEY`: one key with the admin role.
    pub api_key: Option<Secret>,
    /// `API_KEYS`: `key:role,key:role`.
    pub api_keys: Option<Secret>,
    pub public_routes: Vec<String>,
    /// The gateway's route table with `public_routes` applied (each checked against it).
    #[serde(skip)]
    pub routes: RouteTable,
    pub permission_overrides: BTreeMap<String, Vec<String>>,
    #[serde(skip)]
    pub permissions: Permissions,
    pub allow_weak_keys: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Serialize)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub storage: Storage,
    pub redis_url: Option<Secret>,
    pub default: RateSpec,
    pub authenticated: RateSpec,
    pub admin: RateSpec,
    /// Keyed by the route table's own template label.
    pub endpoints: BTreeMap<Arc<str>, RateSpec>,
    /// Route templates, each one of the table's.
    pub exempt_from_default: Vec<Arc<str>>,
    #[serde(
        serialize_with = "crate::parse::secs",
        rename = "sweep_interval_seconds"
    )]
    pub sweep_interval: Duration,
    pub redis_prefix: String,
    #[serde(serialize_with = "crate::parse::millis", rename = "redis_timeout_ms")]
    pub redis_timeout: Duration,
    pub redis_pool_size: usize,
    /// `local`, `open` or `closed`.
    pub failure_mode: FailureMode,
    pub expected_replicas: u64,
    pub breaker_failure_threshold: u32,
    #[serde(
        serialize_with = "crate::parse::millis",
        rename = "breaker_cooldown_ms"
    )]
    pub breaker_cooldown: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct CorsSettings {
    pub origins: Vec<String>,
    pub allow_credentials: bool,
    pub max_age_seconds: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BodyLimits {
    pub default_bytes: usize,
    pub routes: BTreeMap<String, usize>,
    /// Upload paths and their limits, longest pattern first (so the most specific wins).
    #[serde(serialize_with = "serialize_uploads")]
    pub uploads: Vec<(infergate_policy::PathPattern, usize)>,
    #[serde(serialize_with = "crate::parse::secs", rename = "timeout_seconds")]
    pub timeout: Duration,
    pub min_bytes_per_second: u64,
}

fn serialize_uploads<S: serde::Serializer>(
    v: &[(infergate_policy::PathPattern, usize)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(v.len()))?;
    for (p, n) in v {
        let key = match p {
            infergate_policy::PathPattern::Exact(e) => e.clone(),
            infergate_policy::PathPattern::Prefix(p) => format!("{p}*"),
        };
        m.serialize_entry(&key, n)?;
    }
    m.end()
}

impl BodyLimits {
    pub fn for_route(&self, template: &str) -> usize {
        self.routes
            .get(template)
            .copied()
            .unwrap_or(self.default_bytes)
    }

    /// The limit of an upload path, when `path` is one: its body is streamed, not parsed.
    pub fn upload(&self, path: &str) -> Option<usize> {
        self.uploads
            .iter()
            .find(|(p, _)| p.matches(path))
            .map(|(_, n)| *n)
    }

    /// The limit of a request's body: its upload path's, else its route's.
    pub fn limit(&self, template: &str, path: &str) -> usize {
        self.upload(path)
            .unwrap_or_else(|| self.for_route(template))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionLimits {
    pub max_per_ip: usize,
    pub max_total: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// The gateway's effective configuration. `Serialize` prints it with secrets masked
/// (`check-config`).
#[derive(Debug, Clone, Serialize)]
pub struct GatewayConfig {
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
    pub debug: bool,
    pub upstream: UpstreamSettings,
    pub tls: Option<TlsSettings>,
    pub https_only: bool,
    pub https_redirect: bool,
    pub trusted_hosts: HostMatcher,
    pub trusted_proxies: Vec<IpNet>,
    pub auth: AuthSettings,
    pub key_store: crate::KeyStoreSettings,
    pub jwt: crate::JwtSettings,
    pub rate_limit: RateLimitSettings,
    pub cors: CorsSettings,
    pub security_headers: bool,
    pub body_limits: BodyLimits,
    pub connections: ConnectionLimits,
    pub logging: LogSettings,
    /// Separate, unauthenticated `/metrics` listener (`metrics.listen` / `INFERGATE_METRICS_LISTEN`).
    pub metrics_listen: Option<SocketAddr>,
    /// YAML path → the environment variable that set it, so errors found later (while building the
    /// app) can name the setting the operator actually wrote.
    #[serde(skip)]
    pub set_by_env: BTreeMap<&'static str, &'static str>,
}

impl GatewayConfig {
    /// The name to show for a setting: the environment variable if one set it, else its YAML path.
    pub fn setting_name(&self, yaml_path: &'static str) -> &'static str {
        self.set_by_env.get(yaml_path).copied().unwrap_or(yaml_path)
    }

    /// Defaults only, no file, no environment: what tests start from.
    pub fn defaults() -> Self {
        validate(
            RawConfig::default(),
            None,
            Path::new("."),
            Path::new(""),
            &crate::MapSource::default(),
            BTreeMap::new(),
        )
        .unwrap_or_else(|e| panic!("built-in defaults must validate: {e}"))
    }
}

/// Loads the configuration: defaults, then the YAML file (`config_path`, else `INFERGATE_CONFIG`),
/// then `env` (which the binary builds from `.env` under the process environment).
pub fn load_gateway(
    config_path: Option<&Path>,
    env: &dyn Source,
) -> Result<GatewayConfig, ConfigError> {
    let path: Option<PathBuf> = match config_path {
        Some(p) => Some(p.to_path_buf()),
        None => env
            .get("INFERGATE_CONFIG")
            .filter(|s| !s.trim().is_empty())
            .map(PathBuf::from),
    };
    let (mut raw, base_dir): (RawConfig, PathBuf) = parse::yaml_file(path.as_deref())?;
    let mut set_by_env = BTreeMap::new();
    apply_env(&mut raw, env, &mut set_by_env)?;
    crate::keys::apply_env(&mut raw.key_store, &mut raw.jwt, env, &mut set_by_env)?;
    // A keys file named by the environment is relative to the working directory, like any path
    // typed on a command line; one named in the YAML is relative to the YAML file.
    let keys_base = if set_by_env.contains_key("auth.keys_file") {
        PathBuf::new()
    } else {
        base_dir.clone()
    };
    let mut cfg = validate(raw, path, &keys_base, &base_dir, env, set_by_env.clone())?;
    cfg.auth.api_key = env
        .get("API_KEY")
        .filter(|s| !s.trim().is_empty())
        .map(|s| Secret::new(s.trim()));
    cfg.auth.api_keys = env
        .get("API_KEYS")
        .filter(|s| !s.trim().is_empty())
        .map(Secret::new);
    Ok(cfg)
}

/// The gateway's environment variables (the FastAPI-era names are kept, see
/// docs/configuration.md). `RATE_LIMIT_REQUESTS`/`RATE_LIMIT_PERIOD_SECONDS`/
/// `RATE_LIMIT_DEFAULT` combine, so [`apply_env`] handles them after this table.
pub const ENV: &[EnvVar<RawConfig>] = &[
    var!("INFERGATE_LISTEN", "listen", listen = env::text),
    var!("INFERGATE_WORKERS", "workers", workers = env::whole),
    var!(
        "INFERGATE_SHUTDOWN_TIMEOUT_SECONDS",
        "shutdown_timeout_seconds",
        shutdown_timeout_seconds = env::positive
    ),
    var!(
        "INFERGATE_READY_FILE",
        "ready_file",
        ready_file = env::optional
    ),
    var!("DEBUG", "debug", debug = env::boolean),
    var!(
        "INFERGATE_UPSTREAM",
        "upstream.url",
        upstream.url = env::text
    ),
    var!(
        "INFERGATE_UPSTREAM_TIMEOUT_SECONDS",
        "upstream.timeout_seconds",
        upstream.timeout_seconds = env::positive
    ),
    var!(
        "INFERGATE_UPSTREAM_CONNECT_TIMEOUT_SECONDS",
        "upstream.connect_timeout_seconds",
        upstream.connect_timeout_seconds = env::positive
    ),
    var!(
        "INFERGATE_UPSTREAM_API_KEY",
        "upstream.api_key",
        upstream.api_key = env::optional
    ),
    var!("INFERGATE_TLS_CERT", "tls.cert", tls.cert = env::optional),
    var!("INFERGATE_TLS_KEY", "tls.key", tls.key = env::optional),
    var!("HTTPS_ONLY", "https_only", https_only = env::boolean),
    var!(
        "INFERGATE_HTTPS_REDIRECT",
        "https_redirect",
        https_redirect = env::boolean
    ),
    var!("TRUSTED_HOSTS", "trusted_hosts", trusted_hosts = env::list),
    var!(
        "INFERGATE_TRUSTED_PROXIES",
        "trusted_proxies",
        trusted_proxies = env::list
    ),
    var!(
        "API_KEY_AUTH_ENABLED",
        "auth.enabled",
        auth.enabled = env::boolean
    ),
    var!(
        "INFERGATE_API_KEY_HEADER",
        "auth.header_name",
        auth.header_name = env::text
    ),
    var!(
        "INFERGATE_API_KEY_QUERY_ENABLED",
        "auth.query_param_enabled",
        auth.query_param_enabled = env::boolean
    ),
    var!(
        "INFERGATE_KEYS_FILE",
        "auth.keys_file",
        auth.keys_file = env::text
    ),
    var!(
        "INFERGATE_ALLOW_WEAK_KEYS",
        "auth.allow_weak_keys",
        auth.allow_weak_keys = env::boolean
    ),
    var!(
        "RATE_LIMIT_ENABLED",
        "rate_limit.enabled",
        rate_limit.enabled = env::boolean
    ),
    var!(
        "RATE_LIMIT_STORAGE",
        "rate_limit.storage",
        rate_limit.storage = env::text
    ),
    var!(
        "RATE_LIMIT_REDIS_URL",
        "rate_limit.redis_url",
        rate_limit.redis_url = env::optional
    ),
    var!(
        "RATE_LIMIT_FAILURE_MODE",
        "rate_limit.failure_mode",
        rate_limit.failure_mode = env::text
    ),
    var!(
        "RATE_LIMIT_REDIS_TIMEOUT_MS",
        "rate_limit.redis_timeout_ms",
        rate_limit.redis_timeout_ms = env::positive
    ),
    var!(
        "RATE_LIMIT_EXPECTED_REPLICAS",
        "rate_limit.expected_replicas",
        rate_limit.expected_replicas = env::positive
    ),
    var!(
        "RATE_LIMIT_REDIS_PREFIX",
        "rate_limit.redis_prefix",
        rate_limit.redis_prefix = env::text
    ),
    var!(
        "RATE_LIMIT_AUTHENTICATED",
        "rate_limit.authenticated",
        rate_limit.authenticated = env::text
    ),
    var!(
        "RATE_LIMIT_ADMIN",
        "rate_limit.admin",
        rate_limit.admin = env::text
    ),
    var!("CORS_ORIGINS", "cors.origins", cors.origins = env::list),
    var!(
        "CORS_ALLOW_CREDENTIALS",
        "cors.allow_credentials",
        cors.allow_credentials = env::boolean
    ),
    var!(
        "SECURITY_HEADERS_ENABLED",
        "security_headers.enabled",
        security_headers.enabled = env::boolean
    ),
    var!(
        "INFERGATE_MAX_BODY_BYTES",
        "body_limits.default_bytes",
        body_limits.default_bytes = env::count
    ),
    EnvVar {
        name: "INFERGATE_MAX_BATCH_BODY_BYTES",
        path: "body_limits.routes",
        apply: |raw, name, v| {
            let n = env::count(name, v)?;
            raw.body_limits.routes.insert("/inference/batch".into(), n);
            Ok(())
        },
    },
    var!(
        "INFERGATE_BODY_TIMEOUT_SECONDS",
        "body_limits.timeout_seconds",
        body_limits.timeout_seconds = env::positive
    ),
    var!(
        "INFERGATE_BODY_MIN_BYTES_PER_SECOND",
        "body_limits.min_bytes_per_second",
        body_limits.min_bytes_per_second = env::positive
    ),
    var!(
        "INFERGATE_MAX_CONNECTIONS_PER_IP",
        "connections.max_per_ip",
        connections.max_per_ip = env::count
    ),
    var!(
        "INFERGATE_MAX_CONNECTIONS",
        "connections.max_total",
        connections.max_total = env::count
    ),
    var!("LOG_FORMAT", "logging.format", logging.format = env::text),
    var!("LOG_LEVEL", "logging.level", logging.level = env::text),
    var!(
        "INFERGATE_METRICS_LISTEN",
        "metrics.listen",
        metrics.listen = env::optional
    ),
];

/// The table, then the default rate, which three variables may set together.
fn apply_env(
    raw: &mut RawConfig,
    source: &dyn Source,
    set_by_env: &mut BTreeMap<&'static str, &'static str>,
) -> Result<(), ConfigError> {
    env::apply(raw, source, ENV, set_by_env)?;
    let mut get = |name: &'static str| -> Option<String> {
        let v = source.get(name)?;
        set_by_env.insert("rate_limit.default", name);
        Some(v)
    };
    let requests = get("RATE_LIMIT_REQUESTS");
    let period = get("RATE_LIMIT_PERIOD_SECONDS");
    let default = get("RATE_LIMIT_DEFAULT");
    if requests.is_some() || period.is_some() {
        let n = match &requests {
            Some(v) => parse::positive_u64("RATE_LIMIT_REQUESTS", v)?,
            None => 100,
        };
        let secs = match &period {
            Some(v) => parse::positive_u64("RATE_LIMIT_PERIOD_SECONDS", v)?,
            None => 60,
        };
        let pair = RateSpec::new(n, Duration::from_secs(secs)).map_err(|e| {
            ConfigError::invalid(
                "RATE_LIMIT_REQUESTS/RATE_LIMIT_PERIOD_SECONDS",
                format!("{n}/{secs}s"),
                format!("{e} (the period may be at most 365 days)"),
            )
        })?;
        if let Some(d) = &default {
            let spec = parse::rate("RATE_LIMIT_DEFAULT", d)?;
            if spec != pair {
                return Err(ConfigError::Contradiction {
                    settings: "RATE_LIMIT_DEFAULT, RATE_LIMIT_REQUESTS/RATE_LIMIT_PERIOD_SECONDS"
                        .into(),
                    detail: format!("{d} is not {pair}; set one or make them agree"),
                });
            }
        }
        raw.rate_limit.default = pair.to_string();
    } else if let Some(d) = default {
        raw.rate_limit.default = d;
    }
    Ok(())
}

/// A header name as written (an RFC 9110 token), parsed into the lowercase form requests carry.
fn header_name(s: &str) -> Option<HeaderName> {
    if !is_header_token(s) {
        return None;
    }
    HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes()).ok()
}

fn is_header_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn validate_origin(setting: &str, origin: &str) -> Result<(), ConfigError> {
    if origin == "*" {
        return Ok(());
    }
    let accepted = "* or origins like https://app.example.com (scheme://host[:port], no path)";
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| ConfigError::invalid(setting, origin, accepted))?;
    if rest.is_empty() || rest.contains(['/', ' ', '*', '?', '#']) {
        return Err(ConfigError::invalid(setting, origin, accepted));
    }
    Ok(())
}

fn validate(
    raw: RawConfig,
    config_file: Option<PathBuf>,
    keys_base: &Path,
    base_dir: &Path,
    env: &dyn Source,
    set_by_env: BTreeMap<&'static str, &'static str>,
) -> Result<GatewayConfig, ConfigError> {
    let name =
        |path: &'static str| -> &'static str { set_by_env.get(path).copied().unwrap_or(path) };

    let listen = parse::socket_addr(name("listen"), &raw.listen)?;
    let upstream_url = parse::upstream_url(name("upstream.url"), &raw.upstream.url)?;
    for (path, v) in [
        ("upstream.timeout_seconds", raw.upstream.timeout_seconds),
        (
            "upstream.connect_timeout_seconds",
            raw.upstream.connect_timeout_seconds,
        ),
        (
            "upstream.idle_timeout_seconds",
            raw.upstream.idle_timeout_seconds,
        ),
        ("shutdown_timeout_seconds", raw.shutdown_timeout_seconds),
        (
            "rate_limit.sweep_interval_seconds",
            raw.rate_limit.sweep_interval_seconds,
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
    if raw.upstream.max_connections == 0 {
        return Err(ConfigError::invalid(
            "upstream.max_connections",
            "0",
            "a positive whole number",
        ));
    }
    let upstream_header = header_name(&raw.upstream.api_key_header).ok_or_else(|| {
        ConfigError::invalid(
            "upstream.api_key_header",
            &raw.upstream.api_key_header,
            "an HTTP header name",
        )
    })?;
    let upstream_credential = match &raw.upstream.api_key {
        None => None,
        Some(key) => {
            let value = if upstream_header == http::header::AUTHORIZATION {
                format!("Bearer {key}")
            } else {
                key.clone()
            };
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                ConfigError::invalid(
                    name("upstream.api_key"),
                    Secret::new(key.clone()).masked(),
                    "printable ASCII",
                )
            })?;
            value.set_sensitive(true);
            Some((upstream_header, value))
        }
    };
    let tls = match (raw.tls.cert, raw.tls.key) {
        (Some(cert), Some(key)) => Some(TlsSettings {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        }),
        (None, None) => None,
        _ => {
            return Err(ConfigError::Contradiction {
                settings: "tls.cert (INFERGATE_TLS_CERT), tls.key (INFERGATE_TLS_KEY)".into(),
                detail: "serving TLS needs both a certificate and a private key".into(),
            });
        }
    };
    let trusted_proxies = parse::cidrs(name("trusted_proxies"), &raw.trusted_proxies)?;
    if raw.trusted_hosts.is_empty() {
        return Err(ConfigError::invalid(
            name("trusted_hosts"),
            "(empty)",
            "host names, *.domain wildcards, or * for any host",
        ));
    }
    let trusted_hosts = HostMatcher::new(&raw.trusted_hosts).map_err(|e| {
        ConfigError::invalid(
            name("trusted_hosts"),
            raw.trusted_hosts.join(","),
            format!("{e}: host names, *.domain wildcards, or * for any host"),
        )
    })?;

    let auth_header = header_name(&raw.auth.header_name).ok_or_else(|| {
        ConfigError::invalid(
            name("auth.header_name"),
            &raw.auth.header_name,
            "an HTTP header name such as X-API-Key",
        )
    })?;
    let overrides: std::collections::HashMap<String, Vec<String>> = raw
        .auth
        .permissions
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let permissions = Permissions::with_overrides(&overrides).map_err(|e| {
        ConfigError::invalid(
            "auth.permissions",
            format!("{:?}", raw.auth.permissions),
            e.to_string(),
        )
    })?;
    let mut table = RouteTable::gateway();
    let known_routes = || RouteTable::gateway().templates().join(", ");
    if let Some(unknown) = table.set_public(&raw.auth.public_routes).first() {
        return Err(ConfigError::invalid(
            "auth.public_routes",
            unknown,
            known_routes(),
        ));
    }
    // A route reference: the table's own label for `template`, or an error naming `setting`.
    let template = |setting: &str, template: &str| -> Result<Arc<str>, ConfigError> {
        table
            .find_template(template)
            .map(|r| r.template.clone())
            .ok_or_else(|| ConfigError::invalid(setting, template, known_routes()))
    };
    let keys_file = {
        let p = PathBuf::from(&raw.auth.keys_file);
        if p.is_absolute() || keys_base.as_os_str().is_empty() {
            p
        } else {
            keys_base.join(p)
        }
    };

    let storage = match raw.rate_limit.storage.trim().to_ascii_lowercase().as_str() {
        "memory" => Storage::Memory,
        "redis" => Storage::Redis,
        _ => {
            return Err(ConfigError::invalid(
                name("rate_limit.storage"),
                &raw.rate_limit.storage,
                "memory or redis",
            ));
        }
    };
    let redis_url = match raw.rate_limit.redis_url {
        Some(u) if !(u.starts_with("redis://") || u.starts_with("rediss://")) => {
            return Err(ConfigError::invalid(
                name("rate_limit.redis_url"),
                Secret::new(u).masked(),
                "a redis:// or rediss:// URL",
            ));
        }
        other => other.map(Secret::new),
    };
    if storage == Storage::Redis && redis_url.is_none() {
        return Err(ConfigError::Contradiction {
            settings: format!(
                "{}=redis, {}",
                name("rate_limit.storage"),
                name("rate_limit.redis_url")
            ),
            detail: "the redis limiter needs RATE_LIMIT_REDIS_URL".into(),
        });
    }
    let failure_mode: FailureMode = raw.rate_limit.failure_mode.parse().map_err(|_| {
        ConfigError::invalid(
            name("rate_limit.failure_mode"),
            &raw.rate_limit.failure_mode,
            FailureMode::ACCEPTED,
        )
    })?;
    for (path, v) in [
        (
            "rate_limit.redis_timeout_ms",
            raw.rate_limit.redis_timeout_ms,
        ),
        (
            "rate_limit.redis_pool_size",
            raw.rate_limit.redis_pool_size as u64,
        ),
        (
            "rate_limit.expected_replicas",
            raw.rate_limit.expected_replicas,
        ),
        (
            "rate_limit.breaker_failure_threshold",
            u64::from(raw.rate_limit.breaker_failure_threshold),
        ),
        (
            "rate_limit.breaker_cooldown_ms",
            raw.rate_limit.breaker_cooldown_ms,
        ),
    ] {
        if v == 0 {
            return Err(ConfigError::invalid(name(path), "0", "a positive number"));
        }
    }
    if raw.rate_limit.redis_prefix.is_empty()
        || raw.rate_limit.redis_prefix.contains(['{', '}', ' '])
    {
        return Err(ConfigError::invalid(
            name("rate_limit.redis_prefix"),
            &raw.rate_limit.redis_prefix,
            "a non-empty name without braces or spaces",
        ));
    }
    let default = parse::rate(name("rate_limit.default"), &raw.rate_limit.default)?;
    let authenticated = parse::rate(
        name("rate_limit.authenticated"),
        &raw.rate_limit.authenticated,
    )?;
    let admin = parse::rate(name("rate_limit.admin"), &raw.rate_limit.admin)?;
    let mut endpoints = BTreeMap::new();
    for (route, spec) in &raw.rate_limit.endpoints {
        endpoints.insert(
            template("rate_limit.endpoints", route)?,
            parse::rate("rate_limit.endpoints", spec)?,
        );
    }
    let exempt_from_default = raw
        .rate_limit
        .exempt_from_default
        .iter()
        .map(|route| template("rate_limit.exempt_from_default", route))
        .collect::<Result<Vec<_>, _>>()?;

    for origin in &raw.cors.origins {
        validate_origin(name("cors.origins"), origin)?;
    }
    if raw.cors.allow_credentials && raw.cors.origins.iter().any(|o| o == "*") {
        return Err(ConfigError::Contradiction {
            settings: format!("{}, {}", name("cors.origins"), name("cors.allow_credentials")),
            detail: "origin * cannot be combined with credentials (browsers refuse it, and it would let any site use a user's session); list the allowed origins".into(),
        });
    }

    if raw.body_limits.default_bytes == 0 {
        return Err(ConfigError::invalid(
            name("body_limits.default_bytes"),
            "0",
            "a positive number of bytes",
        ));
    }
    for (route, n) in &raw.body_limits.routes {
        template("body_limits.routes", route)?;
        if *n == 0 {
            return Err(ConfigError::invalid(
                name("body_limits.routes"),
                "0",
                "a positive number of bytes",
            ));
        }
    }
    let mut uploads = Vec::new();
    for (path, n) in &raw.body_limits.uploads {
        if !path.starts_with('/') || path.contains(char::is_whitespace) || *n == 0 {
            return Err(ConfigError::invalid(
                "body_limits.uploads",
                format!("{path}: {n}"),
                "a path (exact, or a prefix ending in *) mapped to a positive number of bytes",
            ));
        }
        uploads.push((infergate_policy::PathPattern::parse(path), *n));
    }
    uploads.sort_by_key(|(p, _)| {
        std::cmp::Reverse(match p {
            infergate_policy::PathPattern::Exact(e) => e.len() + 1,
            infergate_policy::PathPattern::Prefix(p) => p.len(),
        })
    });
    for (path, v) in [
        (
            "body_limits.timeout_seconds",
            raw.body_limits.timeout_seconds,
        ),
        (
            "body_limits.min_bytes_per_second",
            raw.body_limits.min_bytes_per_second,
        ),
        ("connections.max_per_ip", raw.connections.max_per_ip as u64),
        ("connections.max_total", raw.connections.max_total as u64),
    ] {
        if v == 0 {
            return Err(ConfigError::invalid(name(path), "0", "a positive number"));
        }
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
    let level =
        if raw.debug && !set_by_env.contains_key("logging.level") && raw.logging.level == "info" {
            "debug".to_string()
        } else {
            raw.logging.level
        };

    let metrics_listen = match &raw.metrics.listen {
        Some(v) => Some(parse::socket_addr(name("metrics.listen"), v)?),
        None => None,
    };
    let key_store = crate::keys::key_store_settings(&raw.key_store, keys_file.clone())?;
    let jwt = crate::keys::jwt_settings(&raw.jwt, base_dir, env)?;
    Ok(GatewayConfig {
        config_file,
        key_store,
        jwt,
        listen,
        workers: raw.workers,
        shutdown_timeout: Duration::from_secs(raw.shutdown_timeout_seconds),
        debug: raw.debug,
        upstream: UpstreamSettings {
            url: upstream_url,
            timeout: Duration::from_secs(raw.upstream.timeout_seconds),
            connect_timeout: Duration::from_secs(raw.upstream.connect_timeout_seconds),
            idle_timeout: Duration::from_secs(raw.upstream.idle_timeout_seconds),
            api_key: raw.upstream.api_key.map(Secret::new),
            api_key_header: raw.upstream.api_key_header,
            credential: upstream_credential,
            max_connections: raw.upstream.max_connections,
        },
        tls,
        https_only: raw.https_only,
        https_redirect: raw.https_redirect,
        trusted_hosts,
        trusted_proxies,
        auth: AuthSettings {
            enabled: raw.auth.enabled,
            header_name: raw.auth.header_name,
            header: auth_header,
            query_param_enabled: raw.auth.query_param_enabled,
            keys_file,
            api_key: None,
            api_keys: None,
            public_routes: raw.auth.public_routes,
            routes: table,
            permission_overrides: raw.auth.permissions,
            permissions,
            allow_weak_keys: raw.auth.allow_weak_keys,
        },
        rate_limit: RateLimitSettings {
            enabled: raw.rate_limit.enabled,
            storage,
            redis_url,
            default,
            authenticated,
            admin,
            endpoints,
            exempt_from_default,
            sweep_interval: Duration::from_secs(raw.rate_limit.sweep_interval_seconds),
            redis_prefix: raw.rate_limit.redis_prefix.clone(),
            redis_timeout: Duration::from_millis(raw.rate_limit.redis_timeout_ms),
            redis_pool_size: raw.rate_limit.redis_pool_size,
            failure_mode,
            expected_replicas: raw.rate_limit.expected_replicas,
            breaker_failure_threshold: raw.rate_limit.breaker_failure_threshold,
            breaker_cooldown: Duration::from_millis(raw.rate_limit.breaker_cooldown_ms),
        },
        cors: CorsSettings {
            origins: raw.cors.origins,
            allow_credentials: raw.cors.allow_credentials,
            max_age_seconds: raw.cors.max_age_seconds,
        },
        security_headers: raw.security_headers.enabled,
        body_limits: BodyLimits {
            default_bytes: raw.body_limits.default_bytes,
            routes: raw.body_limits.routes,
            uploads,
            timeout: Duration::from_secs(raw.body_limits.timeout_seconds),
            min_bytes_per_second: raw.body_limits.min_bytes_per_second,
        },
        connections: ConnectionLimits {
            max_per_ip: raw.connections.max_per_ip,
            max_total: raw.connections.max_total,
        },
        logging: LogSettings { format, level },
        ready_file: raw.ready_file.as_ref().map(PathBuf::from),
        metrics_listen,
        set_by_env,
    })
}
