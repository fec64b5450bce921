//! The infergate inference gateway: an actix-web service that authenticates, authorizes,
//! rate-limits and validates requests before proxying them to a model server.
//!
//! - [`app`]: build the server from a [`infergate_config::GatewayConfig`], run it, stop it.
//! - [`serve`]: the HTTP server itself, deciding `Expect: 100-continue` before any body.
//! - [`state`]: everything built once at startup (key store, limiter, header values, metrics).
//! - [`pipeline`]: the request pipeline, one stage per file (accept → screen → authenticate →
//!   authorise → plan limits → limit → dispatch), `decide` reading it top to bottom.
//! - [`proxy`]: the streaming reverse proxy to the upstream.
//! - [`handlers`]: routes the gateway answers itself (health, status, metrics, docs).
//! - [`validate`]: attack signatures in paths/queries/headers, and JSON body schemas.
//! - [`path`]: the request path decoded once, refused when servers could read it differently.
//! - [`json`]: bodies parsed as I-JSON (a repeated key is refused).
//! - [`body`]: body deadlines, limits on decoded size, `Content-Encoding`, streamed uploads.
//! - [`client_ip`]: the client address and scheme from the trusted proxy chain.
//! - [`connections`]: caps on open connections per address and in all.
//! - [`error`]: every failure and its JSON rendering, in one place.
//! - [`telemetry`]: logs and OpenTelemetry traces.
#![forbid(unsafe_code)]

pub mod app;
pub mod body;
pub mod client_ip;
pub mod connections;
pub mod error;
pub mod handlers;
pub mod json;
pub mod keys;
pub mod metering;
pub mod metrics;
pub mod path;
pub mod pipeline;
pub mod proxy;
pub mod serve;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod usage;
pub mod validate;

pub use app::{Application, Checked, StartupError};
pub use state::{AppState, Overrides};
