//! Logs and traces, set up by [`infergate_telemetry`]: text logs by default, JSON lines with
//! `LOG_FORMAT=json`, level from `RUST_LOG` or `LOG_LEVEL`; spans exported over OTLP/HTTP only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`serve` only; the `keys` commands never export).
//!
//! Per request the service exports a server span `HTTP <method> <route template>` (built in
//! [`crate::middleware`]) with an `authenticate` child for routes that take a key
//! ([`crate::auth`]).

use infergate_config::LogSettings;
pub use infergate_telemetry::{SPAN_TARGET, Telemetry, TelemetryError};

/// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const SERVICE_NAME: &str = "infergate-admin";

/// Installs logging, and trace export when the environment asks for it.
pub fn init(settings: &LogSettings) -> Result<Telemetry, TelemetryError> {
    Telemetry::init(settings, SERVICE_NAME)
}

/// Installs logging only (the `keys` commands).
pub fn init_logs(settings: &LogSettings) -> Telemetry {
    Telemetry::logs(settings)
}
