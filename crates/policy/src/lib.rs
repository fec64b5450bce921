//! Who may call what.
//!
//! This crate holds the gateway's access rules as plain values, with no web framework in sight, so the
//! same decisions can be unit-tested in microseconds and reused by every service:
//!
//! - [`role`]: the three roles (`admin`, `user`, `readonly`).
//! - [`credential`]: where a credential may be read from (`X-API-Key`, `Authorization: Bearer`, `?api_key=`),
//!   how it is masked for logs, and how it is stripped from a query string before anything goes upstream.
//! - [`routes`]: the gateway's route table (which paths exist, which methods they take, which are public).
//! - [`routes`] also says what serves each route and which schema its body is checked against.
//! - [`permissions`]: the role → allowed `METHOD /path` rules and the authorization decision.
//! - [`models`]: a key's model allowlist, applied to the models a request body names.
//! - [`hosts`]: the trusted-host list (`TRUSTED_HOSTS`) and the `Host` check.
#![forbid(unsafe_code)]

pub mod credential;
pub mod hosts;
pub mod models;
pub mod permissions;
pub mod role;
pub mod routes;

pub use credential::{
    Credential, CredentialError, CredentialRules, CredentialSource, extract_credential,
    mask_secret, strip_query_param,
};
pub use hosts::{HostMatcher, HostPatternError};
pub use models::{ModelRefused, check_models, model_allowed};
pub use permissions::{PermissionError, Permissions, Rule};
pub use role::{Role, UnknownRole};
pub use routes::{PathPattern, Route, RouteMatch, RouteTable, Schema, Serve};
