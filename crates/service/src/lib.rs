//! The chassis every infergate HTTP service stands on, so the gateway and key-admin differ only
//! in what they serve:
//!
//! - [`error`]: the one error-code table (`code` → HTTP status, stable snake_case name, title)
//!   and the one renderer of the JSON error body; each service's error enum maps into it.
//! - [`edge`]: the outermost middleware — request id, the service's own screening, JSON error
//!   rendering, `X-Request-ID`/`X-Process-Time`/security headers, HTTP metrics, the access log
//!   and the request's server span — parameterised by an [`edge::EdgeService`].
//! - [`metrics`]: the HTTP metrics both services export (requests, latency, in flight, build).
//! - [`docs`]: `/openapi.json`, `/docs` and its assets.
//! - [`run`]: binding, worker count, and [`run::run_until`], which serves until a shutdown
//!   future resolves and drains the same way in both services.
//!
//! It is a crate of its own because both services need exactly the same behaviour here; the
//! libraries below it (`keystore`, `ratelimit`, `tokens`, `policy`) know nothing of HTTP
//! serving.
#![forbid(unsafe_code)]

pub mod docs;
pub mod edge;
pub mod error;
pub mod metrics;
pub mod run;

pub use error::{ApiError, Code};
pub use infergate_telemetry::method_label;

/// Now, as the `timestamp` of the services' JSON bodies: RFC 3339 UTC with milliseconds.
pub fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
