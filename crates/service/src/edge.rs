//! The edge: the one middleware around every route of every service.
//!
//! ```text
//! admit (request id, route, client) ─▶ screen (the service's checks) ─▶ inner layers
//!   ─▶ JSON error body with the request id ─▶ stamp headers ─▶ metrics ─▶ access log
//! ```
//!
//! What differs between services is an [`EdgeService`]: how it names the route and the client,
//! what it checks before any handler, who the caller was (for the log) and what else it
//! observes. Everything else — the error rendering, `X-Request-ID`, `X-Process-Time`, the
//! security headers (relaxed CSP only on `/docs*`), the HTTP metrics, the access-log line and the
//! request's server span (continuing the client's `traceparent`; disabled and free when traces
//! are off) — is here, once.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpRequest, web};
use infergate_headers::SecurityHeaders;
use infergate_telemetry::{
    SPAN_TARGET, TRACEPARENT, continue_remote_trace, method_label, traceparent_trace_id,
};
use tracing::Instrument;
use tracing::field::Empty;

use crate::error::{ServiceError, render, render_status};
use crate::metrics::HttpMetrics;
use prometheus::IntGauge;

/// The metric and log label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

/// What the edge needs from a service. Implemented by the service's application state, which
/// the edge finds as `web::Data<Self>`.
pub trait EdgeService: Sized + 'static {
    type Error: ServiceError;
    /// What [`EdgeService::admit`] works out for [`EdgeService::screen`] (and, through the
    /// request's extensions, for everything after it).
    type Ctx;

    fn http_metrics(&self) -> &HttpMetrics;
    fn security_headers(&self) -> Option<&SecurityHeaders>;

    /// Names the request: its id, route template and client. Runs before the span opens.
    fn admit(&self, req: &ServiceRequest) -> Admission<Self::Ctx>;

    /// The checks that run before any handler (inside the request's span). The service stores
    /// what later stages need in the request's extensions.
    fn screen(&self, req: &ServiceRequest, ctx: Self::Ctx) -> Result<(), Self::Error>;

    /// The caller's key id, for the access log and the span (never a key).
    fn key_id(req: &HttpRequest) -> Option<Arc<str>>;

    /// The trace id sent upstream, when the service made one up (traces off).
    fn forwarded_trace_id(_req: &HttpRequest) -> Option<String> {
        None
    }

    /// Anything else the service records once the response is ready.
    fn observe(&self, _template: &str, _elapsed: Duration, _req: &HttpRequest) {}
}

/// A request as the edge names it.
pub struct Admission<C> {
    pub request_id: Arc<str>,
    /// The matched route's template; `None` for no route ([`UNMATCHED`]).
    pub template: Option<Arc<str>>,
    /// The client address (after any trusted-proxy resolution the service does).
    pub client: IpAddr,
    pub ctx: C,
}

/// The request id: a well-formed incoming `X-Request-ID` is kept (so a caller's id joins the
/// logs), anything else is replaced by a fresh UUID.
pub fn request_id(headers: &HeaderMap) -> Arc<str> {
    const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    // By a `HeaderName`, not a `&str`: a `&str` is parsed into a name on every lookup.
    match headers.get(&X_REQUEST_ID).and_then(valid_request_id) {
        Some(id) => Arc::from(id),
        None => infergate_telemetry::ids::request_id(),
    }
}

fn valid_request_id(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    (!s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
    .then_some(s)
}

/// The headers every response gets, whoever answers it (the edge, or a hook that answers before
/// the request reaches it): the request id, the service's time, and the security headers.
pub fn stamp(
    security: Option<&SecurityHeaders>,
    headers: &mut HeaderMap,
    request_id: &str,
    template: &str,
    elapsed: Duration,
) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }
    headers.insert(
        HeaderName::from_static("x-process-time"),
        process_time(elapsed),
    );
    if let Some(sec) = security {
        // The docs pages and key-admin's console run their own (same-origin) script.
        sec.apply(
            headers,
            template.starts_with("/docs") || template.starts_with("/console"),
        );
    }
}

/// `X-Process-Time`: seconds with microseconds (`0.000123`).
fn process_time(elapsed: Duration) -> HeaderValue {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    infergate_headers::Text::new()
        .u64(micros / 1_000_000)
        .str(".")
        .u64_padded(micros % 1_000_000, 6)
        .value()
}

/// Counts a request in flight for as long as it lives. A guard, not `inc`/`dec`: a future that is
/// dropped mid-await (a shutdown past its grace period, a dispatcher torn down) runs only `Drop`.
/// (actix does not cancel a handler when its client hangs up; that is the handler's job.)
struct InFlight<'a>(&'a IntGauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn state_of<S: EdgeService>(req: &ServiceRequest) -> Result<web::Data<S>, Error> {
    req.app_data::<web::Data<S>>()
        .cloned()
        .ok_or_else(|| actix_web::error::ErrorInternalServerError("application state missing"))
}

/// The middleware (`from_fn(edge::<AppState>)`), outermost.
pub async fn edge<S: EdgeService>(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let state = state_of::<S>(&req)?;
    let start = Instant::now();
    let Admission {
        request_id,
        template,
        client,
        ctx,
    } = state.admit(&req);
    let label: &str = template.as_deref().unwrap_or(UNMATCHED);
    let method = req.method().clone();
    let metrics = state.http_metrics();
    let in_flight = InFlight::enter(&metrics.in_flight);

    // Disabled (and free) unless traces are exported; only then are its name and parent worked out.
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "request",
        otel.name = Empty,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method_label(&method),
        http.route = Empty,
        http.response.status_code = Empty,
        client.address = %infergate_telemetry::ip::Text(client),
        infergate.request_id = %request_id,
        infergate.key_id = Empty,
    );
    if !span.is_disabled() {
        let method = method_label(&method);
        match &template {
            Some(route) => {
                span.record("otel.name", format!("HTTP {method} {route}"));
                span.record("http.route", &**route);
            }
            None => {
                span.record("otel.name", format!("HTTP {method}"));
            }
        }
        continue_remote_trace(&span, req.headers());
    }

    let screened = span.in_scope(|| state.screen(&req, ctx));
    // Inner layers turn failures into error *responses* (handlers and middleware all do), so an
    // `Err` here is an actix-internal failure; it keeps actix's own rendering.
    let res = match screened {
        Err(e) => Ok(req.error_response(e)),
        Ok(()) => next
            .call(req)
            .instrument(span.clone())
            .await
            .map(ServiceResponse::map_into_boxed_body),
    };
    drop(in_flight);
    let mut res = match res {
        Ok(res) => res,
        Err(e) => {
            tracing::error!(request_id = %request_id, error = %e, "request failed inside the pipeline");
            return Err(e);
        }
    };

    let status = res.status();
    if let Some(err) = res.response().error() {
        let body = match err.as_error::<S::Error>() {
            Some(e) => {
                if status.is_server_error() {
                    tracing::error!(request_id = %request_id, error = ?e, "request failed");
                }
                render(e, Some(&request_id))
            }
            None => {
                if status.is_server_error() {
                    tracing::error!(request_id = %request_id, error = %err, "request failed");
                }
                render_status(status, &err.to_string(), Some(&request_id))
            }
        };
        res = res.map_body(|head, _| {
            head.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            head.headers.remove(header::CONTENT_LENGTH);
            BoxBody::new(body)
        });
    }

    let elapsed = start.elapsed();
    stamp(
        state.security_headers(),
        res.headers_mut(),
        &request_id,
        label,
        elapsed,
    );
    metrics.observe(label, &method, status, elapsed);
    state.observe(label, elapsed, res.request());

    let key_id = S::key_id(res.request());
    let trace_id = if span.is_disabled() {
        // The id the upstream was sent, else the client's own.
        let req = res.request();
        S::forwarded_trace_id(req).or_else(|| {
            req.headers()
                .get(&TRACEPARENT)
                .and_then(|v| v.to_str().ok())
                .and_then(traceparent_trace_id)
                .map(str::to_string)
        })
    } else {
        span.record("http.response.status_code", i64::from(status.as_u16()));
        if let Some(id) = &key_id {
            span.record("infergate.key_id", &**id);
        }
        if status.is_server_error() {
            span.record("otel.status_code", "error");
        }
        infergate_telemetry::trace_id(&span)
    };
    // Strings as `&str` fields, not `%` ones: the log line escapes a `&str` as it is, where a
    // `Display` field is formatted through `core::fmt` first (the same text either way). The
    // message too: `info!(…, "request")` would record it as `format_args!`, through `core::fmt`.
    let client = infergate_telemetry::ip::text(client);
    tracing::info!(
        message = "request",
        request_id = &*request_id,
        trace_id = trace_id.as_deref().unwrap_or("-"),
        method = method.as_str(),
        route = label,
        status = status.as_u16(),
        duration_ms = infergate_telemetry::log_millis(elapsed),
        client_ip = client.as_str(),
        key_id = key_id.as_deref().unwrap_or("-"),
    );
    Ok(res)
}
