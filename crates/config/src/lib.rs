//! Configuration for every infergate service: load, layer, validate.
//!
//! Layers, lowest first: built-in defaults (identical to the shipped `config/gateway.yaml`), a YAML
//! file (`--config PATH` or `INFERGATE_CONFIG`), `.env` in the working directory, then the process
//! environment. The environment keeps the variable names of the FastAPI setups users migrate from
//! (`API_KEY`, `RATE_LIMIT_DEFAULT`, `CORS_ORIGINS`, …); new settings are `INFERGATE_*`.
//!
//! - [`source`]: where strings come from. Parsing reads a [`Source`], so tests hand in a map instead
//!   of mutating the process environment.
//! - [`raw`]: the YAML document, every field defaulted.
//! - [`gateway`]: [`GatewayConfig`], the validated result, and [`load_gateway`].
//! - [`secret`]: [`Secret`], a string whose `Debug`, `Display` and `Serialize` never show it.
//!
//! - [`env`]: the environment variables as tables of (variable, YAML path, parser).
//! - [`admin`], [`keys`]: key-admin's document, and the `key_store:`/`jwt:` sections both share.
//!
//! Every error is a [`ConfigError`] whose one-line message names the setting, the value and what
//! is accepted; binaries print it and exit with status 64 (`EX_USAGE`).
//!
//! A crate of its own because both services and two libraries (`tokens`, `telemetry`) read these
//! settings, and each should get them parsed once, into finished types, with the same messages.
//! It depends only on `policy` and `types` (no Redis, no argon2, no web framework), so a
//! `check-config` or a unit test of a setting builds in seconds.
#![forbid(unsafe_code)]

pub mod admin;
pub mod env;
pub mod gateway;
pub mod keys;
pub mod parse;
pub mod raw;
pub mod secret;
pub mod source;

pub use admin::{AdminConfig, load_admin};
pub use gateway::{
    AuthSettings, BodyLimits, ConcurrencySettings, ConnectionLimits, CorsSettings, GatewayConfig,
    LimitMode, LogFormat, LogSettings, METERED_PATHS, RateLimitSettings, RedisLayout, RoleBudget,
    RoleBudgets, RouteBudget, Storage, TlsSettings, TokenCount, TokenSettings, Tokenizer,
    UpstreamSettings, load_gateway,
};
pub use keys::{ExternalIssuer, JwtAlgorithm, JwtSettings, KeyStoreBackend, KeyStoreSettings};
pub use secret::Secret;
pub use source::{MapSource, ProcessEnv, Source};

/// Exit status for a configuration error (`EX_USAGE` from sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// One setting has a value that cannot be used.
    #[error("invalid {setting}={value}: accepted: {accepted}")]
    Invalid {
        setting: String,
        value: String,
        accepted: String,
    },
    /// Settings that are each valid but cannot hold together.
    #[error("contradictory settings {settings}: {detail}")]
    Contradiction { settings: String, detail: String },
    /// The configuration file cannot be read or parsed.
    #[error("cannot load configuration file {path}: {detail}")]
    File { path: String, detail: String },
}

impl ConfigError {
    pub fn invalid(
        setting: impl Into<String>,
        value: impl Into<String>,
        accepted: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            setting: setting.into(),
            value: value.into(),
            accepted: accepted.into(),
        }
    }
}
