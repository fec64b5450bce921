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
use infergate_headers::formatted;
use infergate_ratelimit::{Dimension, LimitStatus};
use infergate_service::error::{Realm, ServiceError, render, response};
use infergate_service::{ApiError, Code};
use serde_json::{Map, Value, json};

#[derive(Debug)]
pub enum GatewayError {
    UntrustedHost,
    /// A CORS preflight from an origin not in `cors.origins` (or with none configured).
    CorsOriginNotAllowed,
    HttpsRequired {
        location: Option<String>,
    },
    SuspiciousInput {
        location: &'static str,
        category: &'static str,
    },
    PayloadTooLarge {
        limit: usize,
    },
    MalformedJson(String),
    Validation {
        field: String,
        detail: String,
    },
    DuplicateKey {
        path: String,
    },
    InvalidEncoding {
        encoding: &'static str,
        detail: String,
    },
    UnsupportedEncoding {
        encoding: String,
    },
    UnsupportedMediaType {
        accepted: &'static str,
    },
    BodyTimeout,
    TooManyConnections {
        per_ip: bool,
    },
    UpgradeNotAllowed,
    MissingCredential,
    InvalidCredential {
        reason: &'static str,
    },
    Forbidden {
        role: &'static str,
    },
    ModelNotAllowed {
        model: Option<String>,
        allowed: String,
    },
    RateLimited {
        status: LimitStatus,
        now_millis: u64,
    },
    /// A token reservation did not fit (`status` is the refusing token limit).
    TokenLimited {
        status: LimitStatus,
        reserved: u64,
        now_millis: u64,
    },
    /// The key has `cap` requests in flight already.
    ConcurrencyLimited {
        cap: u64,
    },
    NotFound,
    MethodNotAllowed {
        allow: String,
    },
    UpstreamUnavailable(String),
    UpstreamTimeout,
    Unavailable(String),
    Internal(String),
}

impl ApiError for GatewayError {
    fn code(&self) -> Code {
        match self {
            GatewayError::UntrustedHost => Code::InvalidHost,
            GatewayError::CorsOriginNotAllowed => Code::CorsOriginNotAllowed,
            GatewayError::HttpsRequired { location: Some(_) } => Code::HttpsRedirect,
            GatewayError::HttpsRequired { location: None } => Code::HttpsRequired,
            GatewayError::SuspiciousInput { .. } => Code::SuspiciousInput,
            GatewayError::PayloadTooLarge { .. } => Code::PayloadTooLarge,
            GatewayError::MalformedJson(_) => Code::MalformedJson,
            GatewayError::Validation { .. } => Code::ValidationError,
            GatewayError::DuplicateKey { .. } => Code::DuplicateKey,
            GatewayError::InvalidEncoding { .. } => Code::InvalidContentEncoding,
            GatewayError::UnsupportedEncoding { .. } => Code::UnsupportedContentEncoding,
            GatewayError::UnsupportedMediaType { .. } => Code::UnsupportedMediaType,
            GatewayError::BodyTimeout => Code::RequestTimeout,
            GatewayError::TooManyConnections { per_ip: true } => Code::TooManyConnectionsFromIp,
            GatewayError::TooManyConnections { per_ip: false } => Code::TooManyConnections,
            GatewayError::UpgradeNotAllowed => Code::UpgradeNotAllowed,
            GatewayError::MissingCredential => Code::MissingCredentials,
            GatewayError::InvalidCredential { reason: "expired" } => Code::ExpiredCredentials,
            GatewayError::InvalidCredential { .. } => Code::InvalidCredentials,
            GatewayError::Forbidden { .. } => Code::Forbidden,
            GatewayError::ModelNotAllowed { .. } => Code::ModelNotAllowed,
            GatewayError::RateLimited { .. } => Code::RateLimited,
            GatewayError::TokenLimited { .. } => Code::TokenLimitExceeded,
            GatewayError::ConcurrencyLimited { .. } => Code::ConcurrencyLimitExceeded,
            GatewayError::NotFound => Code::NotFound,
            GatewayError::MethodNotAllowed { .. } => Code::MethodNotAllowed,
            GatewayError::UpstreamUnavailable(_) => Code::UpstreamUnavailable,
            GatewayError::UpstreamTimeout => Code::UpstreamTimeout,
            GatewayError::Unavailable(_) => Code::Unavailable,
            GatewayError::Internal(_) => Code::Internal,
        }
    }

    fn detail(&self) -> String {
        match self {
            GatewayError::UntrustedHost => "The Host header is not one of the trusted hosts".into(),
            GatewayError::CorsOriginNotAllowed => {
                "Browsers on this origin may not call this API (it is not one of the allowed CORS origins)".into()
            }
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
            GatewayError::TokenLimited {
                status, reserved, ..
            } if *reserved > status.limit => format!(
                "This request may use up to {reserved} tokens, more than this key's limit of {} per {}; lower max_tokens or send a shorter prompt",
                status.limit,
                human_window(status.window),
            ),
            GatewayError::TokenLimited {
                status, reserved, ..
            } => format!(
                "Token limit of {} per {} exceeded: this request reserves up to {reserved} tokens and {} are left",
                status.limit,
                human_window(status.window),
                status.remaining,
            ),
            GatewayError::ConcurrencyLimited { cap } => format!(
                "This key already has {cap} requests in flight (its max_concurrent); retry when one finishes"
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
            GatewayError::TokenLimited {
                status, reserved, ..
            } => {
                let secs = retry_after_secs(status.retry_after);
                body.insert("retry_after".into(), json!(format!("{secs} seconds")));
                body.insert("limit".into(), json!(status.limit));
                body.insert("window_seconds".into(), json!(status.window.as_secs()));
                body.insert("dimension".into(), json!(status.dimension.as_str()));
                body.insert("reserved_tokens".into(), json!(reserved));
                body.insert("remaining_tokens".into(), json!(status.remaining));
            }
            GatewayError::ConcurrencyLimited { cap } => {
                body.insert("retry_after".into(), json!("1 seconds"));
                body.insert("max_concurrent".into(), json!(cap));
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

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code().title())
    }
}

impl std::error::Error for GatewayError {}

impl ServiceError for GatewayError {
    fn not_found() -> Self {
        GatewayError::NotFound
    }
    fn untrusted_host() -> Self {
        GatewayError::UntrustedHost
    }
}

/// Adds the rate-limit headers for `status` (the tightest limit) to a response.
pub fn rate_limit_headers(headers: &mut header::HeaderMap, status: &LimitStatus, now_millis: u64) {
    let reset_in = reset_in_secs(status, now_millis);
    let (limit, reset_at, reset_requests) = LAST.with_borrow_mut(|last| {
        (
            last.limit
                .get(status.limit, || HeaderValue::from(status.limit)),
            last.reset_at
                .get(status.reset_at_millis.div_ceil(1000), || {
                    HeaderValue::from(status.reset_at_millis.div_ceil(1000))
                }),
            last.reset_in.get(reset_in, || reset_duration(reset_in)),
        )
    });
    let remaining = HeaderValue::from(status.remaining);
    headers.insert(
        header::HeaderName::from_static("x-ratelimit-limit"),
        limit.clone(),
    );
    headers.insert(
        header::HeaderName::from_static("x-ratelimit-remaining"),
        remaining.clone(),
    );
    headers.insert(
        header::HeaderName::from_static("x-ratelimit-reset"),
        reset_at,
    );
    // OpenAI's names, which its SDKs and tooling read: the same request limit, the reset as a
    // duration (`6m0s`) rather than a time.
    headers.insert(
        header::HeaderName::from_static("x-ratelimit-limit-requests"),
        limit,
    );
    headers.insert(
        header::HeaderName::from_static("x-ratelimit-remaining-requests"),
        remaining,
    );
    headers.insert(
        header::HeaderName::from_static("x-ratelimit-reset-requests"),
        reset_requests,
    );
    ietf_headers(headers, status, reset_in, false);
}

/// The rate-limit header values a worker thread answered with last, by what they were made
/// from. The limit, its policy and the reset change only with the limit or once a second, so
/// a busy worker formats and allocates them once, not per response; a clone shares the bytes.
/// The counts left (`remaining`, `r=`) change with every request and are formatted each time.
#[derive(Default)]
struct LastValues {
    limit: Last<u64>,
    reset_at: Last<u64>,
    reset_in: Last<u64>,
    policy: Last<(Dimension, u64, u64)>,
}

thread_local! {
    static LAST: std::cell::RefCell<LastValues> = std::cell::RefCell::new(LastValues::default());
}

/// One remembered header value and the key it was made from.
struct Last<K>(Option<(K, HeaderValue)>);

impl<K> Default for Last<K> {
    fn default() -> Self {
        Last(None)
    }
}

impl<K: PartialEq> Last<K> {
    fn get(&mut self, key: K, make: impl FnOnce() -> HeaderValue) -> HeaderValue {
        match &self.0 {
            Some((k, v)) if *k == key => v.clone(),
            _ => {
                let v = make();
                self.0 = Some((key, v.clone()));
                v
            }
        }
    }
}

/// Whole seconds until `status`'s window ends.
fn reset_in_secs(status: &LimitStatus, now_millis: u64) -> u64 {
    status
        .reset_at_millis
        .saturating_sub(now_millis)
        .div_ceil(1000)
}

/// The IETF `RateLimit-Policy` and `RateLimit` entries of `status`: set (the request policy)
/// or `append`ed beside it (the token policy).
fn ietf_headers(
    headers: &mut header::HeaderMap,
    status: &LimitStatus,
    reset_in: u64,
    append: bool,
) {
    let name = dimension_name(status.dimension);
    let key = (status.dimension, status.limit, status.window.as_secs());
    let policy = LAST.with_borrow_mut(|last| {
        last.policy.get(key, || {
            formatted(format_args!("\"{name}\";q={};w={}", key.1, key.2))
        })
    });
    let current = infergate_headers::Text::new()
        .str("\"")
        .str(name)
        .str("\";r=")
        .u64(status.remaining)
        .str(";t=")
        .u64(reset_in)
        .value();
    let (p, r) = (
        header::HeaderName::from_static("ratelimit-policy"),
        header::HeaderName::from_static("ratelimit"),
    );
    if append {
        headers.append(p, policy);
        headers.append(r, current);
    } else {
        headers.insert(p, policy);
        headers.insert(r, current);
    }
}

/// Adds the token-limit headers for `status` (the tightest token limit): OpenAI's
/// `x-ratelimit-*-tokens`, and the token policy beside the request one in the IETF headers.
pub fn token_limit_headers(headers: &mut header::HeaderMap, status: &LimitStatus, now_millis: u64) {
    let reset_in = reset_in_secs(status, now_millis);
    headers.insert(
        header::HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderValue::from(status.limit),
    );
    headers.insert(
        header::HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderValue::from(status.remaining),
    );
    headers.insert(
        header::HeaderName::from_static("x-ratelimit-reset-tokens"),
        reset_duration(reset_in),
    );
    ietf_headers(headers, status, reset_in, true);
}

/// Whole seconds as OpenAI writes a reset: `45s`, `6m0s`, `1h2m3s`.
fn reset_duration(secs: u64) -> HeaderValue {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        formatted(format_args!("{h}h{m}m{s}s"))
    } else if m > 0 {
        formatted(format_args!("{m}m{s}s"))
    } else {
        formatted(format_args!("{s}s"))
    }
}

fn dimension_name(d: Dimension) -> &'static str {
    d.as_str()
}

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        self.code().status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = response(self);
        Realm::GATEWAY.challenge(&mut res, self.code());
        match self {
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
            GatewayError::TokenLimited {
                status, now_millis, ..
            } => {
                res.insert_header((header::RETRY_AFTER, retry_after_secs(status.retry_after)));
                let mut r = res.body(render(self, None));
                token_limit_headers(r.headers_mut(), status, *now_millis);
                return r;
            }
            GatewayError::ConcurrencyLimited { .. } => {
                res.insert_header((header::RETRY_AFTER, 1));
            }
            _ => {}
        }
        res.body(render(self, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_read_as_openai_writes_them() {
        for (secs, text) in [
            (0, "0s"),
            (45, "45s"),
            (60, "1m0s"),
            (360, "6m0s"),
            (3661, "1h1m1s"),
            (86_400, "24h0m0s"),
        ] {
            assert_eq!(reset_duration(secs), text, "{secs}");
        }
    }

    #[test]
    fn remembered_values_follow_the_limit_they_were_made_from() {
        let status = |dimension, limit, remaining, window_secs, reset_at_millis| LimitStatus {
            dimension,
            limit,
            remaining,
            window: std::time::Duration::from_secs(window_secs),
            reset_at_millis,
            retry_after: std::time::Duration::ZERO,
        };
        let headers = |s: &LimitStatus, now: u64| {
            let mut h = header::HeaderMap::new();
            rate_limit_headers(&mut h, s, now);
            let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
            [
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset",
                "x-ratelimit-reset-requests",
                "ratelimit-policy",
                "ratelimit",
            ]
            .map(|n| get(n).unwrap_or_default())
        };
        // The same limit twice, then each thing a remembered value is made from changed alone.
        let a = status(Dimension::Key, 60, 59, 60, 120_000);
        let expect_a = [
            "60",
            "59",
            "120",
            "1m0s",
            "\"key\";q=60;w=60",
            "\"key\";r=59;t=60",
        ];
        assert_eq!(headers(&a, 60_000), expect_a);
        assert_eq!(headers(&a, 60_000), expect_a);
        assert_eq!(
            headers(&status(Dimension::Key, 60, 58, 60, 120_000), 61_000),
            [
                "60",
                "58",
                "120",
                "59s",
                "\"key\";q=60;w=60",
                "\"key\";r=58;t=59"
            ]
        );
        assert_eq!(
            headers(&status(Dimension::Key, 100, 99, 60, 180_000), 120_000),
            [
                "100",
                "99",
                "180",
                "1m0s",
                "\"key\";q=100;w=60",
                "\"key\";r=99;t=60"
            ]
        );
        assert_eq!(
            headers(&status(Dimension::Key, 100, 99, 3600, 180_000), 120_000)[4],
            "\"key\";q=100;w=3600"
        );
        assert_eq!(
            headers(&status(Dimension::Ip, 100, 99, 3600, 180_000), 120_000)[4],
            "\"ip\";q=100;w=3600"
        );
        // Another thread starts with nothing remembered and answers for its own limits.
        let other =
            std::thread::spawn(move || headers(&status(Dimension::Key, 7, 6, 60, 120_000), 60_000))
                .join()
                .unwrap();
        assert_eq!(other[0], "7");
        assert_eq!(headers(&a, 60_000), expect_a);
    }
}
