//! The error-code table and the one renderer of error bodies.
//!
//! Every refusal any infergate service sends has a [`Code`]: its HTTP status, its stable
//! snake_case name (the body's `code`, which clients match on) and its title (the body's
//! `error`). The table below is the only place those three are written down; a service's error
//! enum implements [`ApiError`] by naming the code of each variant and the client-facing detail.
//!
//! The body shape is the same everywhere: `{"code", "error", "detail", "request_id",
//! "timestamp"}` plus a few code-specific fields an [`ApiError`] adds (`field` on 422,
//! `retry_after` on 429, `limit_bytes` on 413).

use actix_web::HttpResponseBuilder;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use serde_json::{Map, Value};

macro_rules! codes {
    ($($variant:ident => $name:literal, $status:ident, $title:literal;)*) => {
        /// A refusal's identity. Two codes may share a name where the status depends on the
        /// case (an HTTPS redirect or a plain refusal; one address's cap or the global one).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Code { $($variant),* }

        impl Code {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The stable machine-readable name (the body's `code`).
            pub fn name(self) -> &'static str {
                match self { $(Code::$variant => $name),* }
            }

            pub fn status(self) -> StatusCode {
                match self { $(Code::$variant => StatusCode::$status),* }
            }

            /// The short human title (the body's `error`).
            pub fn title(self) -> &'static str {
                match self { $(Code::$variant => $title),* }
            }
        }
    };
}

codes! {
    InvalidHost => "invalid_host", BAD_REQUEST, "Invalid host header";
    CorsOriginNotAllowed => "cors_origin_not_allowed", BAD_REQUEST, "Origin not allowed";
    HttpsRedirect => "https_required", PERMANENT_REDIRECT, "HTTPS required";
    HttpsRequired => "https_required", FORBIDDEN, "HTTPS required";
    SuspiciousInput => "suspicious_input", BAD_REQUEST, "Suspicious input";
    PayloadTooLarge => "payload_too_large", PAYLOAD_TOO_LARGE, "Request body too large";
    MalformedJson => "malformed_json", BAD_REQUEST, "Malformed JSON";
    ValidationError => "validation_error", UNPROCESSABLE_ENTITY, "Validation failed";
    DuplicateKey => "duplicate_key", BAD_REQUEST, "Duplicate key";
    InvalidContentEncoding => "invalid_content_encoding", BAD_REQUEST, "Invalid content encoding";
    UnsupportedContentEncoding => "unsupported_content_encoding", UNSUPPORTED_MEDIA_TYPE, "Unsupported content encoding";
    UnsupportedMediaType => "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "Unsupported media type";
    RequestTimeout => "request_timeout", REQUEST_TIMEOUT, "Request timeout";
    TooManyConnectionsFromIp => "too_many_connections", TOO_MANY_REQUESTS, "Too many connections";
    TooManyConnections => "too_many_connections", SERVICE_UNAVAILABLE, "Too many connections";
    UpgradeNotAllowed => "upgrade_not_allowed", BAD_REQUEST, "Upgrade not allowed";
    MissingCredentials => "missing_credentials", UNAUTHORIZED, "Authentication required";
    InvalidCredentials => "invalid_credentials", UNAUTHORIZED, "Invalid API key";
    ExpiredCredentials => "expired_credentials", UNAUTHORIZED, "Invalid API key";
    Forbidden => "forbidden", FORBIDDEN, "Forbidden";
    ModelNotAllowed => "model_not_allowed", FORBIDDEN, "Model not allowed";
    RateLimited => "rate_limited", TOO_MANY_REQUESTS, "Rate limit exceeded";
    SessionExpired => "session_expired", UNAUTHORIZED, "Session expired";
    CsrfInvalid => "csrf_token_invalid", FORBIDDEN, "CSRF token missing or wrong";
    TokenLimitExceeded => "token_limit_exceeded", TOO_MANY_REQUESTS, "Token limit exceeded";
    ConcurrencyLimitExceeded => "concurrency_limit_exceeded", TOO_MANY_REQUESTS, "Too many requests in flight";
    NotFound => "not_found", NOT_FOUND, "Not found";
    KeyNotFound => "key_not_found", NOT_FOUND, "Key not found";
    JwtDisabled => "jwt_disabled", NOT_FOUND, "JWT issuing disabled";
    MethodNotAllowed => "method_not_allowed", METHOD_NOT_ALLOWED, "Method not allowed";
    Conflict => "conflict", CONFLICT, "Conflict";
    UpstreamUnavailable => "upstream_unavailable", BAD_GATEWAY, "Upstream unavailable";
    UpstreamTimeout => "upstream_timeout", GATEWAY_TIMEOUT, "Upstream timeout";
    Unavailable => "unavailable", SERVICE_UNAVAILABLE, "Service unavailable";
    AuditUnavailable => "audit_unavailable", SERVICE_UNAVAILABLE, "Audit log unavailable";
    Internal => "internal_error", INTERNAL_SERVER_ERROR, "Internal error";
}

/// A service's error: which [`Code`] it is and what the client can act on.
pub trait ApiError: std::fmt::Debug + 'static {
    fn code(&self) -> Code;

    /// What a client can act on. Never contains a credential; 5xx details stay generic (the
    /// full chain goes to the log).
    fn detail(&self) -> String;

    /// Code-specific fields of the body.
    fn extra(&self, _body: &mut Map<String, Value>) {}
}

/// The errors the shared handlers and the edge raise themselves.
pub trait ServiceError: ApiError + actix_web::ResponseError + Sized {
    fn not_found() -> Self;
    fn untrusted_host() -> Self;
}

/// The body of `err` (request id filled in once the edge knows it).
pub fn render(err: &dyn ApiError, request_id: Option<&str>) -> Vec<u8> {
    let code = err.code();
    let mut m = infergate_headers::error_body(code.name(), code.title(), &err.detail(), request_id);
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
    let body = infergate_headers::error_body(code, title, detail, request_id);
    serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
}

/// A JSON response builder for `err`'s status; the service adds its headers, then
/// [`render`]s the body.
pub fn response(err: &dyn ApiError) -> HttpResponseBuilder {
    let mut res = HttpResponseBuilder::new(err.code().status());
    res.insert_header((
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    ));
    res
}

/// The `WWW-Authenticate` challenges of one service's realm (RFC 6750 §3): without a credential,
/// and for a credential presented but refused (`invalid_token`).
pub struct Realm {
    missing: &'static str,
    invalid: &'static str,
}

impl Realm {
    pub const GATEWAY: Realm = Realm {
        missing: "Bearer realm=\"infergate\"",
        invalid: "Bearer realm=\"infergate\", error=\"invalid_token\"",
    };
    pub const ADMIN: Realm = Realm {
        missing: "Bearer realm=\"infergate-admin\"",
        invalid: "Bearer realm=\"infergate-admin\", error=\"invalid_token\"",
    };

    /// Adds the challenge to a credential refusal (`missing_credentials`, `invalid_credentials`,
    /// `expired_credentials`); other codes get none.
    pub fn challenge(&self, res: &mut HttpResponseBuilder, code: Code) {
        let value = match code {
            Code::MissingCredentials => self.missing,
            Code::InvalidCredentials | Code::ExpiredCredentials => self.invalid,
            _ => return,
        };
        res.insert_header((header::WWW_AUTHENTICATE, value));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn names_are_snake_case_and_map_to_one_title_and_status_class() {
        let mut seen: HashMap<&str, Code> = HashMap::new();
        for &code in Code::ALL {
            let name = code.name();
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            assert!(!code.title().is_empty());
            if let Some(prev) = seen.insert(name, code) {
                // A shared name is the same refusal answered with a case-dependent status.
                assert_eq!(prev.title(), code.title(), "{name}");
            }
        }
    }

    #[derive(Debug)]
    struct Probe;
    impl ApiError for Probe {
        fn code(&self) -> Code {
            Code::ValidationError
        }
        fn detail(&self) -> String {
            "n: must be positive".into()
        }
        fn extra(&self, body: &mut Map<String, Value>) {
            body.insert("field".into(), Value::from("n"));
        }
    }

    #[test]
    fn renders_the_table_entry_the_detail_and_the_extras() {
        let body: Value = serde_json::from_slice(&render(&Probe, Some("req-1"))).unwrap();
        assert_eq!(body["code"], "validation_error");
        assert_eq!(body["error"], "Validation failed");
        assert_eq!(body["detail"], "n: must be positive");
        assert_eq!(body["field"], "n");
        assert_eq!(body["request_id"], "req-1");
        assert_eq!(response(&Probe).finish().status(), 422);
    }

    #[test]
    fn server_errors_from_actix_keep_their_detail_out_of_the_body() {
        let body: Value = serde_json::from_slice(&render_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "secret path /etc/x",
            None,
        ))
        .unwrap();
        assert_eq!(body["code"], "internal_error");
        assert_eq!(body["detail"], "An internal error occurred");
    }
}
