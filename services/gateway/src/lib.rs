//! The infergate inference gateway: an actix-web service that authenticates, authorizes,
//! rate-limits and validates requests before proxying them to a model server.
//!
//! - [`app`]: build the server from a [`infergate_config::GatewayConfig`], run it, stop it.
//! - [`state`]: everything built once at startup (key store, limiter, header values, metrics).
//! - [`middleware`]: the request pipeline (edge checks → CORS → auth, authz, rate limits).
//! - [`proxy`]: the streaming reverse proxy to the upstream.
//! - [`handlers`]: routes the gateway answers itself (health, status, metrics, docs).
//! - [`validate`]: attack signatures in paths/queries/headers, and JSON body schemas.
//! - [`error`]: every failure and its JSON rendering, in one place.
//! - [`telemetry`]: logs and OpenTelemetry traces.
#![forbid(unsafe_code)]

pub mod app;
pub mod client_ip;
pub mod error;
pub mod handlers;
pub mod keys;
pub mod metrics;
pub mod middleware;
pub mod proxy;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod validate;

pub use app::{Application, StartupError};
pub use state::{AppState, Overrides};
