//! Logs and traces for the infergate services.
//!
//! - [`Telemetry::init`] installs the process's one `tracing` subscriber: a log layer (text for
//!   humans, JSON lines with `LOG_FORMAT=json`; level from `RUST_LOG`, else `LOG_LEVEL`) and, only
//!   when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, an
//!   OpenTelemetry layer whose spans are batched and exported over OTLP/HTTP (protobuf). The
//!   standard `OTEL_*` variables apply: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_TRACES_SAMPLER`(`_ARG`), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//!   `OTEL_BSP_*`; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` switch traces off.
//! - Request spans are created with the target [`SPAN_TARGET`]. The log layer never sees them, so
//!   log lines keep their shape; without the OpenTelemetry layer no layer is interested in them,
//!   and `info_span!(target: SPAN_TARGET, ..)` yields a disabled span after one cached callsite
//!   check, without evaluating its fields. That is the whole per-request cost of tracing when it
//!   is off.
//! - [`continue_remote_trace`], [`outgoing_trace_headers`], [`trace_id`]: W3C trace context in,
//!   out, and into the access log.
//! - [`ids`]: request ids and trace contexts from a per-thread CSPRNG (no syscall per request).
//! - [`LogSampler`]: caps how many lines per second a flood of one event can write.
//! - Log lines (the access log among them) are formatted on the worker that logs them and written
//!   by a thread of their own ([`writer`]): a busy gateway writes tens of kilobytes per
//!   `write(2)` and no worker waits on the log file. [`Telemetry::shutdown`] (or dropping
//!   [`Telemetry`]) writes out every buffered line.
//!
//! A crate of its own because both services log and trace alike (one subscriber setup, one set of
//! `OTEL_*` variables, one span target), and because the OpenTelemetry dependencies are heavy:
//! only the binaries and this crate build them.
#![forbid(unsafe_code)]

pub mod ids;
pub mod ip;
pub mod json_line;
pub mod writer;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::http::Method;
use actix_web::http::header::{HeaderMap, HeaderValue};
use infergate_config::{LogFormat, LogSettings};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};
use writer::WriterGuard;

/// The `tracing` target of every span meant for OpenTelemetry (and of nothing else).
pub const SPAN_TARGET: &str = "infergate::otel";

/// A setting that makes exporting traces impossible; the message names the variable.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid {name}={value}: expected {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("cannot export traces (OTEL_EXPORTER_OTLP_*): {0}")]
    Exporter(String),
}

/// Whether traces are exported, decided from `OTEL_*` variables read through `get` (the process
/// environment in production; a map in tests).
pub fn traces_enabled(get: impl Fn(&str) -> Option<String>) -> Result<bool, TelemetryError> {
    let set = |name: &str| {
        get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    match set("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(false),
        Some(other) => {
            return Err(TelemetryError::Invalid {
                name: "OTEL_TRACES_EXPORTER",
                value: other.to_string(),
                expected: "otlp or none",
            });
        }
    }
    if set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        return Ok(false);
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(p) = set(name)
            && p != "http/protobuf"
        {
            return Err(TelemetryError::Invalid {
                name,
                value: p,
                expected: "http/protobuf (the only OTLP transport built in)",
            });
        }
    }
    Ok(true)
}

/// The installed subscriber's exporting side. Call [`Telemetry::shutdown`] once serving is over
/// to flush the spans still queued.
#[must_use = "keep it until the server stopped, then call shutdown() to flush queued spans and log lines"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// The log writer thread; dropping it writes out the queued lines and ends the thread.
    log_writer: Option<WriterGuard>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("traces", &self.provider.is_some())
            .finish()
    }
}

impl Telemetry {
    /// Logs, and traces when the environment asks for them (see the crate doc). A subscriber
    /// already installed (tests) is left in place.
    pub fn init(
        settings: &LogSettings,
        service_name: &'static str,
    ) -> Result<Self, TelemetryError> {
        let provider = if traces_enabled(|k| std::env::var(k).ok())? {
            Some(build_provider(service_name)?)
        } else {
            None
        };
        let log_writer = install(settings, provider.as_ref());
        Ok(Telemetry {
            provider,
            log_writer,
        })
    }

    /// Logs only (command-line tools).
    pub fn logs(settings: &LogSettings) -> Self {
        let log_writer = install(settings, None);
        Telemetry {
            provider: None,
            log_writer,
        }
    }

    /// Whether spans are being exported.
    pub fn traces(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued and stops the exporter thread. It blocks (up to the export
    /// timeout), so never call it on an async runtime's thread: on actix's current-thread
    /// runtime that deadlocks and loses the last spans. Call it after `block_on` returned (or
    /// inside `spawn_blocking`).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "flushing traces at shutdown failed");
        }
        // Last: the warning above is written out too.
        drop(self.log_writer);
    }
}

fn build_provider(service_name: &'static str) -> Result<SdkTracerProvider, TelemetryError> {
    // The endpoint (`/v1/traces` appended to OTEL_EXPORTER_OTLP_ENDPOINT), headers and timeout
    // come from the standard variables, read by the exporter itself. Its HTTP client is the
    // blocking one, run on the batch processor's own thread: the async reqwest client needs a
    // Tokio reactor that thread does not have.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by the SDK's detectors; only when
    // neither names the service does the built-in name apply.
    let detected = Resource::builder().build();
    let unnamed = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_none_or(|v| v.as_str().starts_with("unknown_service"));
    let resource = if unnamed {
        Resource::builder().with_service_name(service_name).build()
    } else {
        detected
    };
    // The sampler comes from OTEL_TRACES_SAMPLER(_ARG) (the SDK's default configuration reads
    // them; parent-based always-on otherwise), the batch sizes and delay from OTEL_BSP_*.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the subscriber; returns the log writer's guard, or `None` when a subscriber was
/// installed already (tests).
fn install(settings: &LogSettings, provider: Option<&SdkTracerProvider>) -> Option<WriterGuard> {
    let level = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Request spans are for OpenTelemetry only: a log line must not change with tracing on.
    let log_filter = level.and(filter_fn(|m| m.target() != SPAN_TARGET));
    let (writer, guard) = writer::buffered(std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let mut layers: Vec<BoxedLayer> = vec![match settings.format {
        LogFormat::Json => fmt
            .event_format(json_line::JsonLine)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Text => fmt.with_filter(log_filter).boxed(),
    }];
    if let Some(provider) = provider {
        // A filter of its own, not the log level's: LOG_LEVEL=error must not drop spans. Besides
        // the request spans, warnings and errors raised inside them become span events.
        let spans_and_warnings =
            filter_fn(|m| m.target() == SPAN_TARGET || (m.is_event() && *m.level() <= Level::WARN))
                .with_max_level_hint(LevelFilter::INFO);
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("infergate"))
                .with_tracked_inactivity(false)
                .with_threads(false)
                .with_location(false)
                .with_filter(spans_and_warnings)
                .boxed(),
        );
    }
    // A subscriber already installed (tests) is fine; then the writer thread is not needed.
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .ok()
        .map(|()| guard)
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[derive(Default)]
struct Carrier {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.traceparent = Some(value),
            "tracestate" if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

/// Makes `span` a child of the caller's span when the request carries a valid W3C
/// `traceparent`. Call it before the span is first entered.
pub fn continue_remote_trace(span: &Span, headers: &HeaderMap) {
    if span.is_disabled() || !headers.contains_key(&TRACEPARENT) {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The `traceparent` (and `tracestate`, when there is one) that make the next hop's spans
/// children of `span`; `None` when `span` is not exported (tracing off).
pub fn outgoing_trace_headers(span: &Span) -> Option<(HeaderValue, Option<HeaderValue>)> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    let parent = HeaderValue::from_str(&carrier.traceparent?).ok()?;
    let state = carrier
        .tracestate
        .and_then(|s| HeaderValue::from_str(&s).ok());
    Some((parent, state))
}

/// The W3C `traceparent` header, as a name: a `&str` lookup parses the name on every call.
pub const TRACEPARENT: actix_web::http::header::HeaderName =
    actix_web::http::header::HeaderName::from_static("traceparent");

/// The trace id of `span` as 32 hex digits, when it is exported.
pub fn trace_id(span: &Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The trace id of a well-formed W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, ids not all
/// zeros).
pub fn traceparent_trace_id(value: &str) -> Option<&str> {
    let b = value.as_bytes();
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_hexdigit);
    let nonzero = |r: std::ops::Range<usize>| b[r].iter().any(|&c| c != b'0');
    // Version 00 has exactly four fields; later versions may append more after a dash.
    (b.len() >= 55
        && (b.len() == 55 || (b[55] == b'-' && &b[0..2] != b"00"))
        && b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(0..2)
        && &b[0..2] != b"ff"
        && hex(3..35)
        && hex(36..52)
        && hex(53..55)
        && nonzero(3..35)
        && nonzero(36..52))
    .then(|| &value[3..35])
}

/// A request's duration as the access log's `duration_ms`: milliseconds to the microsecond.
/// Whole microseconds divided by 1000 print as their own digits (`2.24` for 2,240.983 µs), where
/// `as_secs_f64() * 1000.0` carries the product's rounding into the line (`2.2409830000000004`).
pub fn log_millis(elapsed: Duration) -> f64 {
    // Exact below 2^53 µs (285 years).
    elapsed.as_micros() as f64 / 1000.0
}

/// An HTTP method as a bounded label (span names and attributes must not take any token a
/// client invents).
pub fn method_label(m: &Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "_OTHER",
    }
}

/// Lets at most `per_second` lines through in each wall-clock second and counts the rest, so a
/// client hammering a limit costs the log a few lines a second, not one per request. Lock-free;
/// under contention a second may let a line or two more through.
#[derive(Debug)]
pub struct LogSampler {
    per_second: u64,
    second: AtomicU64,
    written: AtomicU64,
    suppressed: AtomicU64,
}

impl LogSampler {
    pub const fn new(per_second: u64) -> Self {
        Self {
            per_second,
            second: AtomicU64::new(u64::MAX),
            written: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written at `now_millis` (Unix milliseconds), `n` being how
    /// many were suppressed since the last one written; `None` when this one is suppressed.
    pub fn admit(&self, now_millis: u64) -> Option<u64> {
        let second = now_millis / 1000;
        let seen = self.second.load(Ordering::Relaxed);
        if seen != second
            && self
                .second
                .compare_exchange(seen, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.written.store(0, Ordering::Relaxed);
        }
        if self.written.fetch_add(1, Ordering::Relaxed) < self.per_second {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn log_millis_prints_the_microseconds_digits() {
        // A duration from an access log line, as `as_secs_f64() * 1000.0` rendered it.
        let d = Duration::from_nanos(2_240_983);
        assert_eq!((d.as_secs_f64() * 1000.0).to_string(), "2.2409830000000004");
        assert_eq!(log_millis(d).to_string(), "2.24");
        assert_eq!(
            log_millis(Duration::from_micros(2_240_983)).to_string(),
            "2240.983"
        );
        assert_eq!(log_millis(Duration::from_micros(17)).to_string(), "0.017");
        assert_eq!(log_millis(Duration::ZERO).to_string(), "0");
    }

    #[test]
    fn traces_need_an_endpoint() {
        assert!(!traces_enabled(env(&[])).unwrap());
        assert!(!traces_enabled(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])).unwrap());
        assert!(traces_enabled(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])).unwrap());
        assert!(
            traces_enabled(env(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces"
            )]))
            .unwrap()
        );
    }

    #[test]
    fn standard_switches_turn_traces_off() {
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert!(!traces_enabled(env(&[ep, ("OTEL_SDK_DISABLED", "true")])).unwrap());
        assert!(!traces_enabled(env(&[ep, ("OTEL_TRACES_EXPORTER", "none")])).unwrap());
        assert!(traces_enabled(env(&[ep, ("OTEL_SDK_DISABLED", "false")])).unwrap());
    }

    #[test]
    fn unsupported_choices_name_their_variable() {
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let e = traces_enabled(env(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])).unwrap_err();
        assert!(
            e.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
            "{e}"
        );
        let e = traces_enabled(env(&[ep, ("OTEL_TRACES_EXPORTER", "zipkin")])).unwrap_err();
        assert!(e.to_string().contains("OTEL_TRACES_EXPORTER"), "{e}");
        assert!(
            traces_enabled(env(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])).unwrap()
        );
    }

    #[test]
    fn traceparent_parsing() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            traceparent_trace_id(good),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(traceparent_trace_id(bad), None, "{bad}");
        }
        // Later versions may append fields after a dash.
        assert!(traceparent_trace_id(&format!("01{}-extra", &good[2..])).is_some());
    }

    #[test]
    fn methods_are_bounded() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(
            method_label(&Method::from_bytes(b"BREW").unwrap()),
            "_OTHER"
        );
    }

    #[test]
    fn sampler_caps_lines_per_second_and_counts_the_rest() {
        let s = LogSampler::new(2);
        assert_eq!(s.admit(10_000), Some(0));
        assert_eq!(s.admit(10_100), Some(0));
        assert_eq!(s.admit(10_200), None);
        assert_eq!(s.admit(10_999), None);
        // A new second: the first line reports what was held back.
        assert_eq!(s.admit(11_000), Some(2));
        assert_eq!(s.admit(11_001), Some(0));
        assert_eq!(s.admit(11_002), None);
        assert_eq!(s.admit(15_000), Some(1));
    }

    #[test]
    fn spans_are_disabled_without_the_otel_layer() {
        // No OpenTelemetry layer here: the span must come back disabled, so callers skip all
        // trace work.
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(EnvFilter::new("trace").and(filter_fn(|m| m.target() != SPAN_TARGET))),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: SPAN_TARGET, "request");
            assert!(span.is_disabled());
            assert_eq!(trace_id(&span), None);
            assert!(outgoing_trace_headers(&span).is_none());
            let other = tracing::info_span!("visible");
            assert!(!other.is_disabled());
        });
    }
}
