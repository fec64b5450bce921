//! The gateway's raw document checked and turned into [`GatewayConfig`]: every setting parsed
//! into its finished type (rates, failure mode, header names, host matcher, route references),
//! every error naming the setting the operator wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use infergate_policy::{Permissions, RouteTable};
use infergate_types::FailureMode;

use super::*;
use crate::raw::RawConfig;
use crate::{ConfigError, Secret, Source, parse};

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

pub(super) fn validate(
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
    let trusted_hosts = parse::hosts(name("trusted_hosts"), &raw.trusted_hosts)?;

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
    let redis_layout = match raw
        .rate_limit
        .redis_layout
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "counters" => RedisLayout::Counters,
        "hashes" => RedisLayout::Hashes,
        _ => {
            return Err(ConfigError::invalid(
                name("rate_limit.redis_layout"),
                &raw.rate_limit.redis_layout,
                "counters or hashes",
            ));
        }
    };
    let (tokens, concurrency, roles) = budgets(&raw.rate_limit, &name)?;
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
            redis_layout,
            redis_timeout: Duration::from_millis(raw.rate_limit.redis_timeout_ms),
            redis_pool_size: raw.rate_limit.redis_pool_size,
            failure_mode,
            expected_replicas: raw.rate_limit.expected_replicas,
            breaker_failure_threshold: raw.rate_limit.breaker_failure_threshold,
            breaker_cooldown: Duration::from_millis(raw.rate_limit.breaker_cooldown_ms),
            tokens,
            concurrency,
            roles,
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

/// `rate_limit.tokens`, `rate_limit.concurrency` and `rate_limit.roles`, checked.
fn budgets(
    raw: &crate::raw::RawRateLimit,
    name: &impl Fn(&'static str) -> &'static str,
) -> Result<(TokenSettings, ConcurrencySettings, RoleBudgets), ConfigError> {
    let t = &raw.tokens;
    let count = match t.count.trim().to_ascii_lowercase().as_str() {
        "input" => TokenCount::Input,
        "output" => TokenCount::Output,
        "total" => TokenCount::Total,
        _ => {
            return Err(ConfigError::invalid(
                name("rate_limit.tokens.count"),
                &t.count,
                "input, output or total",
            ));
        }
    };
    let mode = |path: &'static str, v: &str| {
        v.parse::<LimitMode>()
            .map_err(|()| ConfigError::invalid(name(path), v, LimitMode::ACCEPTED))
    };
    if t.day_resets_at_utc_hour > 23 {
        return Err(ConfigError::invalid(
            name("rate_limit.tokens.day_resets_at_utc_hour"),
            t.day_resets_at_utc_hour.to_string(),
            "an hour from 0 to 23",
        ));
    }
    for (path, v) in [
        (
            "rate_limit.tokens.default_max_output_tokens",
            t.default_max_output_tokens,
        ),
        (
            "rate_limit.concurrency.lease_seconds",
            raw.concurrency.lease_seconds,
        ),
    ] {
        if v == 0 {
            return Err(ConfigError::invalid(name(path), "0", "a positive number"));
        }
    }
    let mut routes = BTreeMap::new();
    for (path, b) in &t.routes {
        if !METERED_PATHS.contains(&path.as_str()) {
            return Err(ConfigError::invalid(
                name("rate_limit.tokens.routes"),
                path,
                METERED_PATHS.join(", "),
            ));
        }
        if b.tokens_per_minute == Some(0) || b.tokens_per_day == Some(0) {
            return Err(ConfigError::invalid(
                name("rate_limit.tokens.routes"),
                format!("{path}: 0"),
                "a positive number, or null for no limit",
            ));
        }
        routes.insert(
            path.clone(),
            RouteBudget {
                tokens_per_minute: b.tokens_per_minute,
                tokens_per_day: b.tokens_per_day,
            },
        );
    }
    let tokenizer = match t.tokenizer.trim().to_ascii_lowercase().as_str() {
        "auto" => Tokenizer::Auto,
        "bytes" => Tokenizer::Bytes,
        _ => {
            return Err(ConfigError::invalid(
                name("rate_limit.tokens.tokenizer"),
                &t.tokenizer,
                "auto or bytes",
            ));
        }
    };
    let tokens = TokenSettings {
        routes,
        tokenizer,
        count,
        default_max_output_tokens: t.default_max_output_tokens,
        image_tokens: t.image_tokens,
        prompt_overhead_tokens: t.prompt_overhead_tokens,
        day_resets_at_utc_hour: t.day_resets_at_utc_hour,
        per_minute: mode("rate_limit.tokens.per_minute", &t.per_minute)?,
        per_day: mode("rate_limit.tokens.per_day", &t.per_day)?,
    };
    let concurrency = ConcurrencySettings {
        mode: mode("rate_limit.concurrency.mode", &raw.concurrency.mode)?,
        lease: Duration::from_secs(raw.concurrency.lease_seconds),
    };
    let mut roles = RoleBudgets::default();
    for (role, b) in &raw.roles {
        let slot = match role.as_str() {
            "admin" => &mut roles.admin,
            "user" => &mut roles.user,
            "readonly" => &mut roles.readonly,
            _ => {
                return Err(ConfigError::invalid(
                    name("rate_limit.roles"),
                    role,
                    "admin, user or readonly",
                ));
            }
        };
        for v in [b.tokens_per_minute, b.tokens_per_day, b.max_concurrent] {
            if v == Some(0) {
                return Err(ConfigError::invalid(
                    name("rate_limit.roles"),
                    format!("{role}: 0"),
                    "a positive number, or null for no limit",
                ));
            }
        }
        *slot = RoleBudget {
            tokens_per_minute: b.tokens_per_minute,
            tokens_per_day: b.tokens_per_day,
            max_concurrent: b.max_concurrent,
        };
    }
    Ok((tokens, concurrency, roles))
}
