//! The gateway's environment variables as a table (see [`crate::env`]), and the default rate that
//! three of them may set together.

use std::collections::BTreeMap;
use std::time::Duration;

use infergate_types::RateSpec;

use crate::env::{self, EnvVar, var};
use crate::raw::RawConfig;
use crate::{ConfigError, Source, parse};

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
        "RATE_LIMIT_REDIS_LAYOUT",
        "rate_limit.redis_layout",
        rate_limit.redis_layout = env::text
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
pub(super) fn apply_env(
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
