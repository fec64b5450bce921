//! API-key records and the [`KeyStore`] seam.
//!
//! - [`record`]: what the gateway knows about a key once it is verified (id, name, role, expiry, limits).
//! - [`KeyStore`]: the async trait every backend implements; the gateway only ever asks "what is this
//!   presented credential?" and gets a [`Verification`] back.
//! - [`static_store`]: keys given as plain values (`API_KEY`, `API_KEYS`, a keys file in the FastAPI
//!   seed's shape), held in memory only as SHA-256 digests.
//! - [`file`]: parsing of the keys file (YAML or the seed's JSON) and of `API_KEYS`.
//!
//! A later backend (hashed file store, Redis) implements the same trait; nothing above it changes.
#![forbid(unsafe_code)]

pub mod file;
pub mod record;
pub mod static_store;

use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use file::{StaticKey, load_keys_file, parse_api_keys};
pub use record::{KeyRecord, Verification};
pub use static_store::StaticKeyStore;

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("cannot read keys file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "keys file {path} is not valid YAML or JSON of the form {{keys: {{<key>: {{name, role, expires}}}}}}: {detail}"
    )]
    Parse { path: String, detail: String },
    #[error("key {name:?} in {origin}: {detail}")]
    Invalid {
        origin: String,
        name: String,
        detail: String,
    },
    #[error("the same key is configured twice ({first} and {second})")]
    Duplicate { first: String, second: String },
    #[error("key store unavailable: {0}")]
    Unavailable(String),
}

/// A source of API keys.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// Looks up a presented credential. Implementations compare secrets in constant time and never
    /// log or return the presented value.
    async fn verify(
        &self,
        presented: &str,
        now: DateTime<Utc>,
    ) -> Result<Verification, KeyStoreError>;

    /// Every record (for status pages and admin listings); never includes secrets.
    async fn list(&self) -> Result<Vec<Arc<KeyRecord>>, KeyStoreError>;

    /// Backend name for status and metrics.
    fn backend(&self) -> &'static str;
}
