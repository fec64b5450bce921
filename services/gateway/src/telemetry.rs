//! Logs and traces, set up by [`infergate_telemetry`]: text logs by default, JSON lines with
//! `LOG_FORMAT=json`, level from `RUST_LOG` or `LOG_LEVEL`; spans exported over OTLP/HTTP only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Per request the gateway exports a server span `HTTP <method> <route template>` with children
//! `authenticate`, `rate_limit` (one per limiter call) and `upstream` (kind client). The spans are
//! built in [`crate::middleware`] and [`crate::proxy`]; without the exporter they are disabled
//! spans and cost one cached check each.

use infergate_config::LogSettings;
pub use infergate_telemetry::{LogSampler, SPAN_TARGET, Telemetry, TelemetryError};

/// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const SERVICE_NAME: &str = "infergate-gateway";

/// Installs logging, and trace export when the environment asks for it.
pub fn init(settings: &LogSettings) -> Result<Telemetry, TelemetryError> {
    Telemetry::init(settings, SERVICE_NAME)
}
