//! API keys: their format, their hashes, their records, and the stores that keep them.
//!
//! - [`format`]: the key format (`prefix_id_secret_checksum`), minting and offline checking.
//! - [`hash`]: argon2id hashing of secrets (OWASP minimum parameters or stronger).
//! - [`record`]: [`KeyRecord`] (what is known about a key, never the key), [`StoredKey`]
//!   (record + PHC hash), [`KeyPatch`], [`AuditEntry`].
//! - [`store`]: the async [`KeyStore`] trait every backend implements, with its change feed.
//! - [`usage`]: per-key usage per day, flushed by gateways in batches, read by key-admin.
//! - Backends: [`memory`] (tests), [`file`] (the embedded default: a YAML file written
//!   atomically under a lock, reloaded on change), [`redis`] (shared by many gateways, with a
//!   pub/sub change feed).
//! - [`legacy`] and [`static_store`]: plaintext keys from `API_KEY`, `API_KEYS` and the FastAPI
//!   seed's keys file, held in memory only as SHA-256 digests.
//!
//! - [`open`]: the store a configuration names, opened the same way for both services.
//! - [`verifier`]: [`KeyVerifier`], the cached hot-path check (argon2 once per key per process).
//!
//! The `conformance` feature exposes the test suite every backend must pass.
//!
//! A crate of its own because both services hold keys (the gateway verifies them, key-admin
//! mints and manages them) and neither should know how a backend stores them; it knows no HTTP.
#![forbid(unsafe_code)]

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod file;
pub mod format;
pub mod hash;
pub mod legacy;
pub mod memory;
pub mod open;
pub mod record;
pub mod redis;
pub mod static_store;
pub mod store;
pub mod usage;
pub mod verifier;

pub use file::{FileKeyStore, WatchGuard};
pub use format::{GeneratedKey, KeyFormatError, ParsedKey};
pub use hash::{HashError, HashParams};
pub use legacy::{StaticKey, load_keys_file, parse_api_keys};
pub use memory::MemoryKeyStore;
pub use open::OpenedStore;
pub use record::{AuditEntry, KeyPatch, KeyRecord, KeyState, StoredKey, Verification};
pub use redis::RedisKeyStore;
pub use static_store::StaticKeyStore;
pub use store::{AuditQuery, KeyChange, KeyStore, ListQuery, Page, page_of};
pub use usage::{DayUsage, KeyUsage, UsageDelta};
pub use verifier::{KeyVerifier, VerifierConfig, VerifierStats};

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// `op` names what was being done (`read keys file`, `append to the audit log`, …).
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("keys file {path} is not valid: {detail}")]
    Parse { path: String, detail: String },
    #[error("key {name:?} in {origin}: {detail}")]
    Invalid {
        origin: String,
        name: String,
        detail: String,
    },
    #[error("the same key is configured twice ({first} and {second})")]
    Duplicate { first: String, second: String },
    #[error("no key with id {0}")]
    NotFound(String),
    #[error("a key with id {0} already exists")]
    Conflict(String),
    #[error("key store unavailable: {0}")]
    Unavailable(String),
}
