//! The edge: the one middleware around every route.
//!
//! On the way in it assigns the request id (a well-formed incoming `X-Request-ID` is kept) and
//! refuses untrusted `Host` headers. On the way out it renders every error as JSON with the
//! request id, adds `X-Request-ID`, `X-Process-Time` and the security headers (relaxed CSP only
//! for `/docs`), counts the request and writes the access-log line — with the caller's key id,
//! never a key. Authentication is not here: handlers ask for it by taking [`crate::auth::Admin`]
//! or [`crate::auth::AnyKey`].
//!
//! With traces on, the edge also opens the request's server span, continuing the client's
//! `traceparent` (see [`crate::telemetry`]); with traces off that span is disabled and costs
//! nothing more.

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, web};
use infergate_telemetry::{continue_remote_trace, traceparent_trace_id};
use tracing::Instrument;
use tracing::field::Empty;

use crate::auth::CallerId;
use crate::error::{AdminError, render, render_status};
use crate::state::AppState;
use crate::telemetry::SPAN_TARGET;

/// Per-request facts the edge establishes for everything after it.
#[derive(Clone, Debug)]
pub struct RequestCtx {
    pub request_id: Arc<str>,
}

fn valid_request_id(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    (!s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
    .then_some(s)
}

fn state_of(req: &ServiceRequest) -> Result<web::Data<AppState>, Error> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| actix_web::error::ErrorInternalServerError("application state missing"))
}

fn host_allowed(state: &AppState, req: &ServiceRequest) -> bool {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    state.hosts.allows(host)
}

/// Methods as a bounded label set.
fn method_label(m: &actix_web::http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

pub async fn edge(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let state = state_of(&req)?;
    let start = Instant::now();
    let request_id: Arc<str> = match req.headers().get("x-request-id").and_then(valid_request_id) {
        Some(id) => Arc::from(id),
        None => Arc::from(uuid::Uuid::new_v4().to_string()),
    };
    let method = req.method().clone();
    let client = req
        .peer_addr()
        .map_or_else(|| "-".to_string(), |a| a.ip().to_canonical().to_string());
    let trusted = host_allowed(&state, &req);
    // Disabled (and free) unless traces are exported; only then are its name and parent worked out.
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "request",
        otel.name = Empty,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = infergate_telemetry::method_label(&method),
        http.route = Empty,
        http.response.status_code = Empty,
        client.address = %client,
        infergate.request_id = %request_id,
        infergate.key_id = Empty,
    );
    if !span.is_disabled() {
        // The route template (never the raw path, which holds key ids), from the resource map.
        let method = infergate_telemetry::method_label(&method);
        match req.match_pattern() {
            Some(route) => {
                span.record("otel.name", format!("HTTP {method} {route}"));
                span.record("http.route", route.as_str());
            }
            None => {
                span.record("otel.name", format!("HTTP {method}"));
            }
        }
        continue_remote_trace(&span, req.headers());
    }
    req.extensions_mut().insert(RequestCtx {
        request_id: request_id.clone(),
    });
    let res = if trusted {
        next.call(req)
            .instrument(span.clone())
            .await
            .map(ServiceResponse::map_into_boxed_body)
    } else {
        Ok(req.error_response(AdminError::UntrustedHost))
    };
    let mut res = match res {
        Ok(res) => res,
        Err(e) => {
            tracing::error!(request_id = %request_id, error = %e, "request failed inside the pipeline");
            return Err(e);
        }
    };

    let status = res.status();
    if let Some(err) = res.response().error() {
        let body = match err.as_error::<AdminError>() {
            Some(a) => {
                if status.is_server_error() {
                    tracing::error!(request_id = %request_id, error = ?a, "request failed");
                }
                render(a, Some(&request_id))
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

    let template = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let elapsed = start.elapsed();
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(header::HeaderName::from_static("x-request-id"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{:.6}", elapsed.as_secs_f64())) {
        headers.insert(header::HeaderName::from_static("x-process-time"), v);
    }
    if let Some(sec) = &state.security_headers {
        sec.apply(headers, template.starts_with("/docs"));
    }
    state
        .metrics
        .requests
        .with_label_values(&[template.as_str(), method_label(&method), status.as_str()])
        .inc();
    state
        .metrics
        .latency
        .with_label_values(&[template.as_str()])
        .observe(elapsed.as_secs_f64());
    let caller = res
        .request()
        .extensions()
        .get::<CallerId>()
        .map(|c| c.0.clone());
    let trace_id = if span.is_disabled() {
        res.request()
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(traceparent_trace_id)
            .map(str::to_string)
    } else {
        span.record("http.response.status_code", i64::from(status.as_u16()));
        if let Some(id) = &caller {
            span.record("infergate.key_id", &**id);
        }
        if status.is_server_error() {
            span.record("otel.status_code", "error");
        }
        infergate_telemetry::trace_id(&span)
    };
    tracing::info!(
        request_id = %request_id,
        trace_id = trace_id.as_deref().unwrap_or("-"),
        method = %method,
        route = %template,
        status = status.as_u16(),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        client_ip = %client,
        key_id = caller.as_deref().unwrap_or("-"),
        "request"
    );
    Ok(res)
}
