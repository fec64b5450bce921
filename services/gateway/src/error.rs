//! Every way a request can fail, and the one place that turns a failure into a JSON response.
//!
//! The body shape is stable: `{"code", "error", "detail", "request_id", "timestamp"}` plus a few
//! variant-specific fields (`retry_after` on 429, `field` on 422). Handlers and middleware return
//! [`GatewayError`]; the edge middleware re-renders the body with the request id once it is known
//! ([`render`]), and any error actix itself produced gets the same shape there too.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use infergate_ratelimit::{Dimension, LimitStatus};
use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("Invalid host header")]
    UntrustedHost,
    #[error("HTTPS required")]
    HttpsRequired { location: Option<String> },
    #[error("Suspicious input")]
    SuspiciousInput {
        location: &'static str,
        category: &'static str,
    },
    #[error("Request body too large")]
    PayloadTooLarge { limit: usize },
    #[error("Malformed JSON")]
    MalformedJson(String),
    #[error("Validation failed")]
    Validation { field: String, detail: String },
    #[error("Duplicate key")]
    DuplicateKey { path: String },
    #[error("Invalid content encoding")]
    InvalidEncoding {
        encoding: &'static str,
        detail: String,
    },
    #[error("Unsupported content encoding")]
    UnsupportedEncoding { encoding: String },
    #[error("Unsupported media type")]
    UnsupportedMediaType { accepted: &'static str },
    #[error("Request timeout")]
    BodyTimeout,
    #[error("Too many connections")]
    TooManyConnections { per_ip: bool },
    #[error("Upgrade not allowed")]
    UpgradeNotAllowed,
    #[error("Authentication required")]
    MissingCredential,
    #[error("Invalid API key")]
    InvalidCredential { reason: &'static str },
    #[error("Forbidden")]
    Forbidden { role: &'static str },
    #[error("Model not allowed")]
    ModelNotAllowed {
        model: Option<String>,
        allowed: String,
    },
    #[error("Rate limit exceeded")]
    RateLimited {
        status: LimitStatus,
        now_millis: u64,
    },
    #[error("Not found")]
    NotFound,
    #[error("Method not allowed")]
    MethodNotAllowed { allow: String },
    #[error("Upstream unavailable")]
    UpstreamUnavailable(String),
    #[error("Upstream timeout")]
    UpstreamTimeout,
    #[error("Service unavailable")]
    Unavailable(String),
    #[error("Internal error")]
    Internal(String),
}

impl GatewayError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::UntrustedHost => "invalid_host",
            GatewayError::HttpsRequired { .. } => "https_required",
            GatewayError::SuspiciousInput { .. } => "suspicious_input",
            GatewayError::PayloadTooLarge { .. } => "payload_too_large",
            GatewayError::MalformedJson(_) => "malformed_json",
            GatewayError::Validation { .. } => "validation_error",
            GatewayError::DuplicateKey { .. } => "duplicate_key",
            GatewayError::InvalidEncoding { .. } => "invalid_content_encoding",
            GatewayError::UnsupportedEncoding { .. } => "unsupported_content_encoding",
            GatewayError::UnsupportedMediaType { .. } => "unsupported_media_type",
            GatewayError::BodyTimeout => "request_timeout",
            GatewayError::TooManyConnections { .. } => "too_many_connections",
            GatewayError::UpgradeNotAllowed => "upgrade_not_allowed",
            GatewayError::MissingCredential => "missing_credentials",
            GatewayError::InvalidCredential { reason: "expired" } => "expired_credentials",
            GatewayError::InvalidCredential { .. } => "invalid_credentials",
            GatewayError::Forbidden { .. } => "forbidden",
            GatewayError::ModelNotAllowed { .. } => "model_not_allowed",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::NotFound => "not_found",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::UpstreamUnavailable(_) => "upstream_unavailable",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::Unavailable(_) => "unavailable",
            GatewayError::Internal(_) => "internal_error",
        }
    }

    /// What a client can act on. Never contains a credential; 5xx details stay generic (the full
    /// chain goes to the log).
    pub fn detail(&self) -> String {
        match self {
            GatewayError::UntrustedHost => "The Host header is not one of the trusted hosts".into(),
            GatewayError::HttpsRequired { .. } => "This gateway only accepts HTTPS requests".into(),
            GatewayError::SuspiciousInput { location, category } => {
                format!("Possible {category} in the {location}")
            }
            GatewayError::PayloadTooLarge { limit } => {
                format!("The request body exceeds the limit of {limit} bytes for this route")
            }
            GatewayError::MalformedJson(d) => format!("The request body is not valid JSON: {d}"),
            GatewayError::Validation { field, detail } => format!("{field}: {detail}"),
            GatewayError::DuplicateKey { path } => format!(
                "The key {path:?} appears more than once in an object; send each key once (I-JSON, RFC 7493)"
            ),
            GatewayError::InvalidEncoding { encoding, detail } => {
                format!("The body is not valid {encoding} data: {detail}")
            }
            GatewayError::UnsupportedEncoding { encoding } => format!(
                "Content-Encoding {encoding:?} is not supported; send gzip, deflate, br or identity"
            ),
            GatewayError::UnsupportedMediaType { accepted } => {
                format!("This route accepts {accepted}")
            }
            GatewayError::BodyTimeout => {
                "The request body did not arrive in time (too slow or stalled)".into()
            }
            GatewayError::TooManyConnections { per_ip: true } => {
                "Too many open connections from this address".into()
            }
            GatewayError::TooManyConnections { per_ip: false } => {
                "The gateway has too many open connections".into()
            }
            GatewayError::UpgradeNotAllowed => {
                "Protocol upgrades (WebSocket) are not enabled for this route".into()
            }
            GatewayError::MissingCredential => {
                "Provide an API key in the X-API-Key header, as Authorization: Bearer <key>, or (if enabled) as ?api_key=".into()
            }
            GatewayError::InvalidCredential { reason: "expired" } => "The API key has expired".into(),
            GatewayError::InvalidCredential { reason: "token" } => {
                "The bearer token is not valid (signature, expiry, issuer or audience)".into()
            }
            GatewayError::InvalidCredential { reason: "malformed" } => {
                "The credential is malformed (use X-API-Key: <key> or Authorization: Bearer <key>)".into()
            }
            GatewayError::InvalidCredential { .. } => "The API key is not valid".into(),
            GatewayError::Forbidden { role } => {
                format!("The {role} role is not allowed to call this endpoint")
            }
            GatewayError::ModelNotAllowed { model: Some(m), allowed } => {
                format!("This key may not use model {m:?}; allowed: {allowed}")
            }
            GatewayError::ModelNotAllowed { model: None, allowed } => {
                format!("This key must name one of its models in `model`: {allowed}")
            }
            GatewayError::RateLimited { status, .. } => format!(
                "Limit of {} requests per {} exceeded ({})",
                status.limit,
                human_window(status.window),
                status.dimension.as_str()
            ),
            GatewayError::NotFound => "No route matches this path".into(),
            GatewayError::MethodNotAllowed { allow } => format!("Allowed methods: {allow}"),
            GatewayError::UpstreamUnavailable(_) => "The model server could not be reached".into(),
            GatewayError::UpstreamTimeout => "The model server did not answer in time".into(),
            GatewayError::Unavailable(_) => "The gateway cannot serve this request right now".into(),
            GatewayError::Internal(_) => "An internal error occurred".into(),
        }
    }

    fn extra(&self, body: &mut Map<String, Value>) {
        match self {
            GatewayError::Validation { field, .. } => {
                body.insert("field".into(), json!(field));
            }
            GatewayError::RateLimited { status, .. } => {
                let secs = retry_after_secs(status.retry_after);
                body.insert("retry_after".into(), json!(format!("{secs} seconds")));
                body.insert("limit".into(), json!(status.limit));
                body.insert("window_seconds".into(), json!(status.window.as_secs()));
                body.insert("dimension".into(), json!(status.dimension.as_str()));
            }
            GatewayError::PayloadTooLarge { limit } => {
                body.insert("limit_bytes".into(), json!(limit));
            }
            GatewayError::DuplicateKey { path } => {
                body.insert("field".into(), json!(path));
            }
            _ => {}
        }
    }
}

fn human_window(d: Duration) -> String {
    match d.as_secs() {
        1 => "second".into(),
        60 => "minute".into(),
        3600 => "hour".into(),
        86400 => "day".into(),
        s => format!("{s} seconds"),
    }
}

/// Whole seconds, rounded up, never 0 for a denial.
pub fn retry_after_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

pub use infergate_headers::error_body as body;

/// The body of a [`GatewayError`] with the request id filled in.
pub fn render(err: &GatewayError, request_id: Option<&str>) -> Vec<u8> {
    let mut m = body(err.code(), &err.to_string(), &err.detail(), request_id);
    err.extra(&mut m);
    serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
}

/// The body for an error actix produced itself (payload errors, etc.), keyed by status.
pub fn render_status(status: StatusCode, detail: &str, request_id: Option<&str>) -> Vec<u8> {
    let code = match status.as_u16() {
        400 => "bad_request",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "validation_error",
        429 => "rate_limited",
        s if s >= 500 => "internal_error",
        _ => "error",
    };
    let title = status.canonical_reason().unwrap_or("Error");
    // Server-side failures keep their details in the log, not in the response.
    let detail = if status.is_server_error() {
        "An internal error occurred"
    } else {
        detail
    };
    serde_json::to_vec(&Value::Object(body(code, title, detail, request_id))).unwrap_or_default()
}

/// Adds the rate-limit headers for `status` (the tightest limit) to a response.
pub fn rate_limit_headers(headers: &mut header::HeaderMap, status: &LimitStatus, now_millis: u64) {
    let reset_in = status
        .reset_at_millis
        .saturating_sub(now_millis)
        .div_ceil(1000);
    headers.insert(
        header::HeaderName::from_static("x-ratelimit-limit"),
        HeaderValue::from(status.limit),
    );
    headers.insert(
        header::HeaderName::from_static("x-ratelimit-remaining"),
        HeaderValue::from(status.remaining),
    );
    headers.insert(
        header::HeaderName::from_static("x-ratelimit-reset"),
        HeaderValue::from(status.reset_at_millis.div_ceil(1000)),
    );
    let name = dimension_name(status.dimension);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "\"{name}\";q={};w={}",
        status.limit,
        status.window.as_secs()
    )) {
        headers.insert(header::HeaderName::from_static("ratelimit-policy"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{name}\";r={};t={reset_in}", status.remaining))
    {
        headers.insert(header::HeaderName::from_static("ratelimit"), v);
    }
}

fn dimension_name(d: Dimension) -> &'static str {
    d.as_str()
}

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        match self {
            GatewayError::UntrustedHost => StatusCode::BAD_REQUEST,
            GatewayError::HttpsRequired { location: Some(_) } => StatusCode::PERMANENT_REDIRECT,
            GatewayError::HttpsRequired { location: None } => StatusCode::FORBIDDEN,
            GatewayError::SuspiciousInput { .. } => StatusCode::BAD_REQUEST,
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            GatewayError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            GatewayError::DuplicateKey { .. } | GatewayError::InvalidEncoding { .. } => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::UnsupportedEncoding { .. }
            | GatewayError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::TooManyConnections { per_ip: true } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::TooManyConnections { per_ip: false } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpgradeNotAllowed => StatusCode::BAD_REQUEST,
            GatewayError::MissingCredential | GatewayError::InvalidCredential { .. } => {
                StatusCode::UNAUTHORIZED
            }
            GatewayError::Forbidden { .. } | GatewayError::ModelNotAllowed { .. } => {
                StatusCode::FORBIDDEN
            }
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::NotFound => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.content_type("application/json");
        match self {
            GatewayError::MissingCredential | GatewayError::InvalidCredential { .. } => {
                let v = match self {
                    GatewayError::MissingCredential => "Bearer realm=\"infergate\"",
                    _ => "Bearer realm=\"infergate\", error=\"invalid_token\"",
                };
                res.insert_header((header::WWW_AUTHENTICATE, v));
            }
            GatewayError::MethodNotAllowed { allow } => {
                res.insert_header((header::ALLOW, allow.as_str()));
            }
            GatewayError::Unavailable(_) => {
                res.insert_header((header::RETRY_AFTER, 1));
            }
            GatewayError::UnsupportedEncoding { .. } => {
                res.insert_header((header::ACCEPT_ENCODING, "gzip, deflate, br, identity"));
            }
            // The connection's state is unknown (a body half sent, or one too many sockets): end it.
            GatewayError::BodyTimeout | GatewayError::TooManyConnections { .. } => {
                res.force_close();
                if matches!(self, GatewayError::TooManyConnections { .. }) {
                    res.insert_header((header::RETRY_AFTER, 1));
                }
            }
            GatewayError::HttpsRequired {
                location: Some(loc),
            } => {
                res.insert_header((header::LOCATION, loc.as_str()));
            }
            GatewayError::RateLimited { status, now_millis } => {
                res.insert_header((header::RETRY_AFTER, retry_after_secs(status.retry_after)));
                let mut r = res.body(render(self, None));
                rate_limit_headers(r.headers_mut(), status, *now_millis);
                return r;
            }
            _ => {}
        }
        res.body(render(self, None))
    }
}
