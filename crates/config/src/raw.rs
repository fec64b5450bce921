//! The YAML document as written, every field defaulted. Unknown fields are errors, so a typo in a
//! security setting cannot be silently ignored.
//!
//! The defaults here are the documented defaults; `config/gateway.yaml` spells out the same values
//! (a test keeps the two equal).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub listen: String,
    /// 0 means one worker per CPU.
    pub workers: usize,
    pub shutdown_timeout_seconds: u64,
    /// Written once the listeners are bound: a JSON object of the bound addresses (`listen`, and
    /// `metrics_listen` when separate), renamed into place so no reader sees half of it; removed
    /// on a clean exit. For supervisors and tests that started the service on port 0.
    pub ready_file: Option<String>,
    pub debug: bool,
    pub upstream: RawUpstream,
    pub tls: RawTls,
    pub https_only: bool,
    pub https_redirect: bool,
    pub trusted_hosts: Vec<String>,
    pub trusted_proxies: Vec<String>,
    pub auth: RawAuth,
    pub key_store: crate::keys::RawKeyStore,
    pub jwt: crate::keys::RawJwt,
    pub rate_limit: RawRateLimit,
    pub cors: RawCors,
    pub security_headers: RawSecurityHeaders,
    pub body_limits: RawBodyLimits,
    pub connections: RawConnections,
    pub logging: RawLogging,
    pub metrics: RawMetrics,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".into(),
            workers: 0,
            shutdown_timeout_seconds: 30,
            ready_file: None,
            debug: false,
            upstream: RawUpstream::default(),
            tls: RawTls::default(),
            https_only: false,
            https_redirect: true,
            trusted_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            trusted_proxies: Vec::new(),
            auth: RawAuth::default(),
            key_store: Default::default(),
            jwt: Default::default(),
            rate_limit: RawRateLimit::default(),
            cors: RawCors::default(),
            security_headers: RawSecurityHeaders::default(),
            body_limits: RawBodyLimits::default(),
            connections: RawConnections::default(),
            logging: RawLogging::default(),
            metrics: RawMetrics::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawUpstream {
    pub url: String,
    /// Time allowed for the upstream to start answering (response headers). Streaming bodies may
    /// run longer; they are bounded by `idle_timeout_seconds` between chunks.
    pub timeout_seconds: u64,
    pub connect_timeout_seconds: u64,
    pub idle_timeout_seconds: u64,
    /// Credential the gateway adds to every upstream request (the client's own is always removed).
    pub api_key: Option<String>,
    /// Header carrying `api_key`; with `Authorization` the value is sent as `Bearer <api_key>`.
    pub api_key_header: String,
    pub max_connections: usize,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9000".into(),
            timeout_seconds: 60,
            connect_timeout_seconds: 5,
            idle_timeout_seconds: 300,
            api_key: None,
            api_key_header: "Authorization".into(),
            max_connections: 256,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAuth {
    pub enabled: bool,
    pub header_name: String,
    pub query_param_enabled: bool,
    /// Relative paths are resolved against the configuration file's directory (or the working
    /// directory when there is no file).
    pub keys_file: String,
    /// Routes (templates) that need no credential, on top of `/health`, `/openapi.json`, `/docs`.
    pub public_routes: Vec<String>,
    /// Role → rules, replacing that role's defaults (`["GET /models", "* /v1/*"]`).
    pub permissions: BTreeMap<String, Vec<String>>,
    /// Accept static keys (`API_KEY`, `API_KEYS`, legacy keys files) shorter than 8 characters.
    pub allow_weak_keys: bool,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            enabled: true,
            header_name: "X-API-Key".into(),
            query_param_enabled: true,
            keys_file: "config/api_keys.yaml".into(),
            public_routes: Vec::new(),
            permissions: BTreeMap::new(),
            allow_weak_keys: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRateLimit {
    pub enabled: bool,
    pub storage: String,
    pub redis_url: Option<String>,
    /// Anonymous clients, per IP.
    pub default: String,
    /// `user` and `readonly` keys, per key.
    pub authenticated: String,
    /// `admin` keys, per key.
    pub admin: String,
    /// Route template → limit per client (key, or IP when anonymous).
    pub endpoints: BTreeMap<String, String>,
    /// Routes not counted against the per-IP default (they keep their endpoint limit).
    pub exempt_from_default: Vec<String>,
    pub sweep_interval_seconds: u64,
    /// Namespace of the limiter's Redis keys.
    pub redis_prefix: String,
    /// How the limiter keeps its buckets in Redis: `counters` or `hashes`.
    pub redis_layout: String,
    /// Per-call Redis timeout; a slower answer counts as a failure.
    pub redis_timeout_ms: u64,
    /// Redis connections per worker thread (calls on a thread share one; see the limiter).
    pub redis_pool_size: usize,
    /// While Redis fails: `local` (in-memory, each replica its share), `open` or `closed`.
    pub failure_mode: String,
    /// Replicas sharing the limits, for `local` mode's per-replica share.
    pub expected_replicas: u64,
    /// Consecutive Redis failures that open the circuit breaker.
    pub breaker_failure_threshold: u32,
    /// How long the breaker stays open before probing Redis again.
    pub breaker_cooldown_ms: u64,
    /// How token limits reserve and count (docs/ratelimit.md).
    pub tokens: RawTokens,
    /// How concurrency caps hold their slots.
    pub concurrency: RawConcurrency,
    /// Token budgets and concurrency caps of keys that set none of their own, per role
    /// (`admin`, `user`, `readonly`).
    pub roles: BTreeMap<String, RawRoleBudget>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTokens {
    /// What a token limit counts: `input`, `output` or `total`.
    pub count: String,
    /// Set as the request's output maximum when it names none, so a reservation is a true
    /// upper bound.
    pub default_max_output_tokens: u64,
    /// Tokens reserved per image in a prompt (the text bound cannot see them).
    pub image_tokens: u64,
    /// Tokens a chat template may add beyond the text of the request (its special tokens).
    pub prompt_overhead_tokens: u64,
    /// The UTC hour (0-23) at which daily quotas reset.
    pub day_resets_at_utc_hour: u8,
    /// `enforce` or `shadow` (count and report, never refuse).
    pub per_minute: String,
    pub per_day: String,
    /// A metered route's path → a budget per key on that route, beside the key's own.
    pub routes: BTreeMap<String, RawRouteBudget>,
    /// How prompt text is counted: `auto` (OpenAI's tokenizer for OpenAI model names, the byte
    /// bound otherwise) or `bytes` (the byte bound always).
    pub tokenizer: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRouteBudget {
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
}

impl Default for RawTokens {
    fn default() -> Self {
        Self {
            count: "total".into(),
            default_max_output_tokens: 4096,
            image_tokens: 2048,
            prompt_overhead_tokens: 32,
            day_resets_at_utc_hour: 0,
            per_minute: "enforce".into(),
            per_day: "enforce".into(),
            routes: BTreeMap::new(),
            tokenizer: "auto".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConcurrency {
    /// `enforce` or `shadow`.
    pub mode: String,
    /// A slot a replica holds expires this long after it was last renewed (a stream renews
    /// it), so a replica that dies leaks slots no longer than this.
    pub lease_seconds: u64,
}

impl Default for RawConcurrency {
    fn default() -> Self {
        Self {
            mode: "enforce".into(),
            lease_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRoleBudget {
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub max_concurrent: Option<u64>,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        let endpoints = [
            ("/health", "1000/minute"),
            ("/metrics", "100/minute"),
            ("/models", "200/minute"),
            ("/models/load", "10/minute"),
            ("/inference", "500/minute"),
            ("/inference/batch", "100/minute"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Self {
            enabled: true,
            storage: "memory".into(),
            redis_url: None,
            default: "100/minute".into(),
            authenticated: "1000/minute".into(),
            admin: "10000/minute".into(),
            endpoints,
            exempt_from_default: vec!["/health".into(), "/health/ready".into()],
            sweep_interval_seconds: 30,
            redis_prefix: "infergate".into(),
            redis_layout: "counters".into(),
            redis_timeout_ms: 50,
            redis_pool_size: 1,
            failure_mode: "local".into(),
            expected_replicas: 1,
            breaker_failure_threshold: 3,
            breaker_cooldown_ms: 1000,
            tokens: RawTokens::default(),
            concurrency: RawConcurrency::default(),
            roles: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCors {
    pub origins: Vec<String>,
    pub allow_credentials: bool,
    pub max_age_seconds: usize,
}

impl Default for RawCors {
    fn default() -> Self {
        Self {
            origins: Vec::new(),
            allow_credentials: false,
            max_age_seconds: 600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSecurityHeaders {
    pub enabled: bool,
}

impl Default for RawSecurityHeaders {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawBodyLimits {
    pub default_bytes: usize,
    /// Route template → limit in bytes.
    pub routes: BTreeMap<String, usize>,
    /// Upload paths (exact, or a prefix ending in `*`) → limit in bytes. Their bodies (multipart
    /// forms, binary files) are streamed to the upstream, not buffered or parsed as JSON.
    pub uploads: BTreeMap<String, usize>,
    /// Time a body may take on top of `size / min_bytes_per_second`.
    pub timeout_seconds: u64,
    /// The slowest a body may arrive, once `timeout_seconds` have passed.
    pub min_bytes_per_second: u64,
}

const MIB: usize = 1024 * 1024;

impl Default for RawBodyLimits {
    fn default() -> Self {
        Self {
            default_bytes: MIB,
            routes: [("/inference/batch".to_string(), 10 * MIB)]
                .into_iter()
                .collect(),
            uploads: [
                ("/v1/audio/transcriptions", 25 * MIB),
                ("/v1/audio/translations", 25 * MIB),
                ("/v1/images/edits", 50 * MIB),
                ("/v1/images/variations", 50 * MIB),
                ("/v1/files", 512 * MIB),
                ("/v1/uploads/*", 64 * MIB),
            ]
            .into_iter()
            .map(|(p, n)| (p.to_string(), n))
            .collect(),
            timeout_seconds: 30,
            min_bytes_per_second: 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConnections {
    /// Open connections one client address may hold (trusted proxies are exempt).
    pub max_per_ip: usize,
    /// Open connections in all.
    pub max_total: usize,
}

impl Default for RawConnections {
    fn default() -> Self {
        Self {
            max_per_ip: 1024,
            max_total: 25_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLogging {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter (`info`, `infergate=debug,actix_web=info`); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for RawLogging {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawMetrics {
    /// An internal address (e.g. `0.0.0.0:9100`) serving `/metrics` without authentication, for a
    /// Prometheus that cannot hold a key. `/metrics` on the main port stays behind `readonly`.
    pub listen: Option<String>,
}
