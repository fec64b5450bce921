//! Everything built once at startup and shared by every worker: parsed settings, the key store,
//! the limiter, precomputed header values and metrics. The hot path only reads from here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::HeaderName;
use infergate_config::{ConfigError, GatewayConfig};
use infergate_headers::SecurityHeaders;
use infergate_keystore::{
    KeyStore, KeyVerifier, StaticKey, StaticKeyStore, VerifierConfig, parse_api_keys,
};
use infergate_policy::HostMatcher;
use infergate_policy::{CredentialRules, Role, RouteTable};
use infergate_ratelimit::resilient::{ResilienceConfig, ResilientLimiter};
use infergate_ratelimit::{Clock, MemoryLimiter, RateLimiter, SystemClock};
use ipnet::IpNet;

use crate::metrics::Metrics;
use crate::validate::Scanner;

/// Things tests may replace.
#[derive(Default)]
pub struct Overrides {
    /// The limiter's clock (tests move a manual clock to slide windows).
    pub clock: Option<Arc<dyn Clock>>,
    /// The hashed-key store (tests hand in a memory store; the binary builds it from config).
    pub key_store: Option<Arc<dyn KeyStore>>,
    /// The shared limiter (Redis) to put behind the circuit breaker, when `storage: redis`.
    pub shared_limiter: Option<Arc<dyn RateLimiter>>,
}

pub struct AppState {
    pub cfg: GatewayConfig,
    pub hosts: HostMatcher,
    pub routes: RouteTable,
    /// The metric/log label of requests that matched no route (built once, cloned per request).
    pub unmatched_route: Arc<str>,
    pub credential_rules: CredentialRules,
    pub api_key_header: HeaderName,
    pub verifier: Arc<KeyVerifier>,
    /// Accepts JWTs as a second credential when `jwt.enabled`.
    pub tokens: Option<infergate_tokens::TokenVerifier>,
    pub limiter: Arc<dyn RateLimiter>,
    pub memory_limiter: Arc<MemoryLimiter>,
    /// Present with a shared backend: its breaker state and fallback counters.
    pub resilient: Option<Arc<ResilientLimiter>>,
    /// Set when SIGTERM/SIGINT arrives: readiness fails so load balancers stop routing here.
    pub drain: infergate_service::run::Drain,
    pub clock: Arc<dyn Clock>,
    /// The configured limits, templates resolved against the route table ([`crate::pipeline::plan`]).
    pub limits: crate::pipeline::plan::LimitRules,
    pub security_headers: Option<SecurityHeaders>,
    /// The CORS policy, its header values built once ([`crate::pipeline::cors`]).
    pub cors: infergate_headers::CorsPolicy,
    pub scanner: Scanner,
    pub metrics: Metrics,
    /// The upstream connection settings, finished once; each worker builds its pool from them.
    pub upstream: crate::upstream::PoolConfig,
    pub started: Instant,
    pub static_key_count: usize,
    /// Open connections, per client address and in all.
    pub connections: Arc<crate::connections::ConnectionTracker>,
    /// Samples the WARN lines for 429s (see [`RATE_LIMIT_LOG_PER_SECOND`]).
    pub rate_limit_log: crate::telemetry::LogSampler,
    /// Each key's use, flushed to the key store ([`crate::usage`]); `None` without a store.
    pub usage: Option<Arc<crate::usage::UsageRecorder>>,
}

/// At most this many "rate limit exceeded" lines a second; the next one written counts the rest.
pub const RATE_LIMIT_LOG_PER_SECOND: u64 = 5;

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("listen", &self.cfg.listen)
            .finish_non_exhaustive()
    }
}

/// The upstream URL and credential in hyper's `http` 1.x types, once.
fn upstream_pool_config(cfg: &GatewayConfig) -> Result<crate::upstream::PoolConfig, ConfigError> {
    let up = &cfg.upstream;
    let mut pool =
        crate::upstream::PoolConfig::from_url(&up.url, up.connect_timeout, up.max_connections)
            .map_err(|e| {
                invalid(
                    cfg.setting_name("upstream.url"),
                    up.url.clone(),
                    format!("an http:// URL with a host ({e})"),
                )
            })?;
    if let Some((name, value)) = &up.credential {
        let (name, mut value) = crate::upstream::header_pair(name, value).ok_or_else(|| {
            invalid(
                cfg.setting_name("upstream.api_key"),
                "(hidden)",
                "a value usable in an HTTP header",
            )
        })?;
        value.set_sensitive(true);
        pool.credential = Some((name, value));
    }
    Ok(pool)
}

fn invalid(setting: &str, value: impl Into<String>, accepted: impl Into<String>) -> ConfigError {
    ConfigError::invalid(setting, value, accepted)
}

/// The plaintext keys from `API_KEY` and `API_KEYS`.
pub fn env_keys(cfg: &GatewayConfig) -> Result<Vec<StaticKey>, ConfigError> {
    let mut keys = Vec::new();
    if let Some(k) = &cfg.auth.api_key {
        keys.push(StaticKey {
            secret: k.expose().to_string(),
            name: "API_KEY".into(),
            role: Role::Admin,
            expires_at: None,
            rate_limit: None,
            origin: "API_KEY",
        });
    }
    if let Some(list) = &cfg.auth.api_keys {
        keys.extend(parse_api_keys(list.expose(), "API_KEYS").map_err(|e| {
            invalid(
                "API_KEYS",
                "(masked)",
                format!("key:role pairs separated by commas, roles admin, user or readonly ({e})"),
            )
        })?);
    }
    Ok(keys)
}

/// Static keys shorter than this are refused unless `auth.allow_weak_keys` is set.
pub const MIN_STATIC_KEY_LEN: usize = 8;
/// Static keys shorter than this get a warning at startup and in `check-config`.
pub const GOOD_STATIC_KEY_LEN: usize = 16;

/// Where a static key was configured, for messages that must never show the key.
fn key_position(k: &StaticKey) -> String {
    match k.origin {
        "API_KEY" => "API_KEY".to_string(),
        "API_KEYS" => format!(
            "API_KEYS entry {}",
            k.name.rsplit_once('#').map_or("?", |(_, n)| n)
        ),
        file => format!("keys file {file}, key named {:?}", k.name),
    }
}

/// Checks static keys' length: an error (exit 64) for one under [`MIN_STATIC_KEY_LEN`] characters
/// unless weak keys are allowed, and a warning line for each one under [`GOOD_STATIC_KEY_LEN`].
/// A short shared secret is guessable within any failed-auth budget over time.
pub fn check_static_keys(
    cfg: &GatewayConfig,
    keys: &[StaticKey],
) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    for k in keys {
        let len = k.secret.chars().count();
        if len < MIN_STATIC_KEY_LEN && !cfg.auth.allow_weak_keys {
            return Err(invalid(
                cfg.setting_name("auth.allow_weak_keys"),
                format!("{} is {len} characters", key_position(k)),
                format!(
                    "static keys of at least {MIN_STATIC_KEY_LEN} characters (at least {GOOD_STATIC_KEY_LEN} recommended), or INFERGATE_ALLOW_WEAK_KEYS=true"
                ),
            ));
        }
        if len < GOOD_STATIC_KEY_LEN {
            warnings.push(format!(
                "weak static key: {} is {len} characters (use at least {GOOD_STATIC_KEY_LEN}, or mint hashed keys with key-admin)",
                key_position(k)
            ));
        }
    }
    Ok(warnings)
}

impl AppState {
    pub fn build(
        cfg: GatewayConfig,
        overrides: Overrides,
        legacy: Vec<StaticKey>,
    ) -> Result<Self, ConfigError> {
        let hosts = cfg.trusted_hosts.clone();
        let routes = cfg.auth.routes.clone();
        let route_count = routes.routes().len();
        let api_key_header = cfg.auth.header.clone();
        let credential_rules = CredentialRules {
            header_name: cfg.auth.header_name.clone(),
            query_param: cfg.auth.query_param_enabled.then(|| "api_key".to_string()),
        };

        let static_key_count = legacy.len();
        let store = StaticKeyStore::new(legacy)
            .map_err(|e| invalid("API_KEY/API_KEYS/auth.keys_file", "(masked)", e.to_string()))?;
        let tokens = if cfg.jwt.enabled {
            Some(
                infergate_tokens::TokenVerifier::from_settings(&cfg.jwt)
                    .map_err(|e| invalid("jwt (INFERGATE_JWT_*)", "-", e.to_string()))?,
            )
        } else {
            None
        };
        let clock: Arc<dyn Clock> = overrides.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let ks = &cfg.key_store;
        let verifier = Arc::new(
            KeyVerifier::new(
                overrides.key_store.clone(),
                store,
                VerifierConfig {
                    cache_size: ks.cache_size,
                    cache_ttl: ks.cache_ttl,
                    negative_ttl: ks.negative_cache_ttl,
                    max_concurrent: ks.max_concurrent_verifications,
                    max_waiting: 256,
                },
            )
            .map_err(|e| invalid("key_store", "-", e.to_string()))?
            .with_clock(clock.clone()),
        );

        let memory_limiter = Arc::new(MemoryLimiter::new(clock.clone()));
        let resilient = overrides.shared_limiter.clone().map(|shared| {
            let rl = &cfg.rate_limit;
            Arc::new(ResilientLimiter::new(
                shared,
                memory_limiter.clone(),
                ResilienceConfig {
                    mode: rl.failure_mode,
                    expected_replicas: rl.expected_replicas,
                    failure_threshold: rl.breaker_failure_threshold,
                    cooldown: rl.breaker_cooldown,
                },
            ))
        });
        let limiter: Arc<dyn RateLimiter> = match &resilient {
            Some(r) => r.clone(),
            None => memory_limiter.clone(),
        };

        // Route references were resolved against the table by configuration.
        let endpoint_limits: HashMap<_, _> = cfg
            .rate_limit
            .endpoints
            .iter()
            .map(|(t, spec)| (t.clone(), *spec))
            .collect();
        let exempt_from_default = cfg.rate_limit.exempt_from_default.clone();
        let rl = &cfg.rate_limit;
        let limits = crate::pipeline::plan::LimitRules {
            enabled: rl.enabled,
            default: rl.default,
            admin: rl.admin,
            authenticated: rl.authenticated,
            endpoints: endpoint_limits,
            exempt_from_default,
            budgets: rl.roles,
            tokens: rl.tokens.clone(),
            concurrency: rl.concurrency.clone(),
            route_budgets: crate::pipeline::plan::route_budgets(&rl.tokens),
        };

        let upstream = upstream_pool_config(&cfg)?;

        let usage = verifier
            .store()
            .map(|_| Arc::new(crate::usage::UsageRecorder::default()));
        Ok(Self {
            security_headers: cfg.security_headers.then(SecurityHeaders::new),
            cors: infergate_headers::CorsPolicy::new(
                &cfg.cors.origins,
                cfg.cors.allow_credentials,
                cfg.cors.max_age_seconds,
            ),
            hosts,
            routes,
            unmatched_route: Arc::from("unmatched"),
            credential_rules,
            api_key_header,
            verifier,
            tokens,
            limiter,
            memory_limiter,
            resilient,
            drain: Default::default(),
            clock,
            limits,
            scanner: Scanner::new(),
            metrics: Metrics::new().with_routes(route_count),
            upstream,
            started: Instant::now(),
            static_key_count,
            rate_limit_log: crate::telemetry::LogSampler::new(RATE_LIMIT_LOG_PER_SECOND),
            usage,
            connections: crate::connections::ConnectionTracker::new(
                cfg.connections.max_per_ip,
                cfg.connections.max_total,
                cfg.trusted_proxies.clone(),
            ),
            cfg,
        })
    }

    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.cfg
            .trusted_proxies
            .iter()
            .any(|net: &IpNet| net.contains(&ip))
    }
}
