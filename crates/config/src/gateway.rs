//! The gateway's validated configuration and its loader.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use infergate_policy::{HostMatcher, Permissions, RouteTable};
use infergate_types::{FailureMode, RateSpec};

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use serde::Serialize;

use crate::raw::RawConfig;

mod environment;
mod validate;

pub use self::environment::ENV;
use self::environment::apply_env;
use self::validate::validate;
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
    /// Named `permissions` in the YAML, and so in `check-config`'s output.
    #[serde(rename = "permissions")]
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

/// How the Redis limiter keeps its buckets; replicas sharing a prefix must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisLayout {
    /// One counter per bucket and window, judged by the gateway (the default).
    Counters,
    /// One hash per bucket, judged by a Lua script: releases before the counters layout.
    Hashes,
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
    pub redis_layout: RedisLayout,
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
    pub tokens: TokenSettings,
    pub concurrency: ConcurrencySettings,
    /// Budgets of keys that set none of their own, per role.
    pub roles: RoleBudgets,
}

/// What a token limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenCount {
    Input,
    Output,
    Total,
}

/// Whether a limit refuses (`enforce`) or only counts and reports (`shadow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitMode {
    Enforce,
    Shadow,
}

impl LimitMode {
    pub const ACCEPTED: &'static str = "enforce or shadow";

    pub fn is_shadow(self) -> bool {
        self == Self::Shadow
    }
}

impl std::str::FromStr for LimitMode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "enforce" => Ok(Self::Enforce),
            "shadow" => Ok(Self::Shadow),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenSettings {
    pub count: TokenCount,
    pub default_max_output_tokens: u64,
    pub image_tokens: u64,
    pub prompt_overhead_tokens: u64,
    pub day_resets_at_utc_hour: u8,
    pub per_minute: LimitMode,
    pub per_day: LimitMode,
    /// A metered route's path (one of [`METERED_PATHS`]) → its per-key budget.
    pub routes: BTreeMap<String, RouteBudget>,
    pub tokenizer: Tokenizer,
}

/// How prompt text is counted for a reservation (docs/ratelimit.md, "The estimate's bound").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tokenizer {
    /// OpenAI's tokenizer for OpenAI model names, the byte bound for every other model.
    Auto,
    /// The byte bound for every model.
    Bytes,
}

/// The routes whose calls spend model tokens, as `rate_limit.tokens.routes` names them.
pub const METERED_PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/inference",
    "/inference/batch",
];

/// A per-key token budget on one route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RouteBudget {
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConcurrencySettings {
    pub mode: LimitMode,
    #[serde(serialize_with = "crate::parse::secs", rename = "lease_seconds")]
    pub lease: Duration,
}

/// One role's token budgets and concurrency cap (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RoleBudget {
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub max_concurrent: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RoleBudgets {
    pub admin: RoleBudget,
    pub user: RoleBudget,
    pub readonly: RoleBudget,
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
    #[serde(serialize_with = "tls_or_nulls")]
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
    #[serde(serialize_with = "enabled_object")]
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

/// `tls` as the YAML writes it: `{cert, key}`, both null when TLS is off.
fn tls_or_nulls<S: serde::Serializer>(t: &Option<TlsSettings>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    match t {
        Some(t) => t.serialize(s),
        None => {
            let mut st = s.serialize_struct("TlsSettings", 2)?;
            st.serialize_field("cert", &None::<PathBuf>)?;
            st.serialize_field("key", &None::<PathBuf>)?;
            st.end()
        }
    }
}

/// A switch the YAML writes as `{enabled: bool}`.
fn enabled_object<S: serde::Serializer>(on: &bool, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("Switch", 1)?;
    st.serialize_field("enabled", on)?;
    st.end()
}
