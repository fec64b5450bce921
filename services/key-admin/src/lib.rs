//! infergate key-admin: the service that mints, lists, updates, rotates and revokes API keys,
//! exchanges keys for short-lived JWTs, and keeps the audit trail of all of it.
//!
//! - [`app`]: build the server from an [`infergate_config::AdminConfig`], run it, stop it; the
//!   route table.
//! - [`state`]: everything built once at startup (store, verifier, token issuer, metrics) and the
//!   audit helper every admin action goes through.
//! - [`bootstrap`]: the first admin credential (`ADMIN_API_KEY`, or a minted key shown once).
//! - [`middleware`]: the edge (request id, trusted hosts, JSON errors, security headers, access
//!   log); [`auth`]: the `Admin` / `AnyKey` extractors.
//! - [`keys`], [`tokens`], [`handlers`]: the routes; [`validate`]: field-by-field body parsing.
//! - [`console`]: the operator console page and its sign-in sessions.
//! - [`mint`]: key generation and hashing shared by the API, the bootstrap and the CLI.
//! - [`cli`]: `infergate-admin serve | check-config | keys …`.
//! - [`error`]: every failure and its JSON rendering, in one place.
//!
//! A full key exists only in the response (or CLI output) that minted it; stores keep argon2id
//! hashes, and logs and audit entries name keys by id.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod bootstrap;
pub mod cli;
pub mod console;
pub mod error;
pub mod handlers;
pub mod keys;
pub mod metrics;
pub mod middleware;
pub mod mint;
pub mod state;
pub mod telemetry;
pub mod tokens;
pub mod validate;

pub use app::{Application, Overrides, StartupError};
pub use state::AppState;
