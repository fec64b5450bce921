//! Every way an admin request can fail, and the one place that turns a failure into JSON.
//!
//! The body is the shape every infergate service answers with (`infergate_headers::error_body`):
//! `{"code", "error", "detail", "request_id", "timestamp"}`, plus `field` on 422. Handlers return
//! [`AdminError`]; the edge middleware re-renders the body with the request id ([`render`]), and
//! errors actix produced itself get the same shape there too ([`render_status`]).

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use infergate_keystore::KeyStoreError;
use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("Invalid host header")]
    UntrustedHost,
    #[error("Malformed JSON")]
    MalformedJson(String),
    #[error("Request body too large")]
    PayloadTooLarge { limit: usize },
    #[error("Validation failed")]
    Validation { field: String, detail: String },
    #[error("Authentication required")]
    MissingCredential,
    /// `reason`: `malformed`, `unknown`, `expired` or `revoked`.
    #[error("Invalid API key")]
    InvalidCredential { reason: &'static str },
    #[error("Forbidden")]
    Forbidden(String),
    #[error("Not found")]
    NotFound,
    #[error("Key not found")]
    KeyNotFound(String),
    #[error("JWT issuing disabled")]
    JwtDisabled,
    #[error("Method not allowed")]
    MethodNotAllowed { allow: String },
    #[error("Conflict")]
    Conflict(String),
    #[error("Service unavailable")]
    Unavailable(String),
    /// The audit entry of an action could not be written: the request fails rather than lose it.
    #[error("Audit log unavailable")]
    AuditUnavailable(String),
    #[error("Internal error")]
    Internal(String),
}

impl AdminError {
    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> Self {
        AdminError::Validation {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::UntrustedHost => "invalid_host",
            AdminError::MalformedJson(_) => "malformed_json",
            AdminError::PayloadTooLarge { .. } => "payload_too_large",
            AdminError::Validation { .. } => "validation_error",
            AdminError::MissingCredential => "missing_credentials",
            AdminError::InvalidCredential { reason: "expired" } => "expired_credentials",
            AdminError::InvalidCredential { .. } => "invalid_credentials",
            AdminError::Forbidden(_) => "forbidden",
            AdminError::NotFound => "not_found",
            AdminError::KeyNotFound(_) => "key_not_found",
            AdminError::JwtDisabled => "jwt_disabled",
            AdminError::MethodNotAllowed { .. } => "method_not_allowed",
            AdminError::Conflict(_) => "conflict",
            AdminError::Unavailable(_) => "unavailable",
            AdminError::AuditUnavailable(_) => "audit_unavailable",
            AdminError::Internal(_) => "internal_error",
        }
    }

    /// What a client can act on. Never contains a credential; 5xx details stay generic (the full
    /// chain goes to the log).
    pub fn detail(&self) -> String {
        match self {
            AdminError::UntrustedHost => "The Host header is not one of the trusted hosts".into(),
            AdminError::MalformedJson(d) => format!("The request body is not valid JSON: {d}"),
            AdminError::PayloadTooLarge { limit } => {
                format!("The request body exceeds the limit of {limit} bytes")
            }
            AdminError::Validation { field, detail } => format!("{field}: {detail}"),
            AdminError::MissingCredential => {
                "Provide an API key in the X-API-Key header or as Authorization: Bearer <key>".into()
            }
            AdminError::InvalidCredential { reason: "expired" } => "The API key has expired".into(),
            AdminError::InvalidCredential { reason: "revoked" } => {
                "The API key has been revoked".into()
            }
            AdminError::InvalidCredential { reason: "malformed" } => {
                "The credential is not a well-formed API key (use X-API-Key: <key> or Authorization: Bearer <key>)".into()
            }
            AdminError::InvalidCredential { .. } => "The API key is not valid".into(),
            AdminError::Forbidden(d) => d.clone(),
            AdminError::NotFound => "No route matches this path".into(),
            AdminError::KeyNotFound(id) => format!("No key with id {id}"),
            AdminError::JwtDisabled => {
                "This service does not issue JWTs (jwt.enabled is false, or no signing key is configured)".into()
            }
            AdminError::MethodNotAllowed { allow } => format!("Allowed methods: {allow}"),
            AdminError::Conflict(d) => d.clone(),
            AdminError::Unavailable(_) => "The key store cannot be reached right now".into(),
            AdminError::AuditUnavailable(_) => {
                "The audit log cannot be written, so the action is not confirmed; retry later".into()
            }
            AdminError::Internal(_) => "An internal error occurred".into(),
        }
    }

    /// The field a validation error is about.
    pub fn field(&self) -> Option<&str> {
        match self {
            AdminError::Validation { field, .. } => Some(field),
            _ => None,
        }
    }

    fn extra(&self, body: &mut Map<String, Value>) {
        match self {
            AdminError::Validation { field, .. } => {
                body.insert("field".into(), json!(field));
            }
            AdminError::PayloadTooLarge { limit } => {
                body.insert("limit_bytes".into(), json!(limit));
            }
            _ => {}
        }
    }
}

impl From<KeyStoreError> for AdminError {
    fn from(e: KeyStoreError) -> Self {
        match e {
            KeyStoreError::NotFound(id) => AdminError::KeyNotFound(id),
            KeyStoreError::Conflict(id) => {
                AdminError::Conflict(format!("A key with id {id} already exists"))
            }
            KeyStoreError::Unavailable(d) => AdminError::Unavailable(d),
            // A file the store cannot read or write (permissions, a full disk) is an outage to
            // report, not an internal error; the log names the operation and the file.
            e @ KeyStoreError::Io { .. } => AdminError::Unavailable(e.to_string()),
            other => AdminError::Internal(other.to_string()),
        }
    }
}

pub use infergate_headers::error_body as body;

/// The body of an [`AdminError`] with the request id filled in.
pub fn render(err: &AdminError, request_id: Option<&str>) -> Vec<u8> {
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
        s if s >= 500 => "internal_error",
        _ => "error",
    };
    let title = status.canonical_reason().unwrap_or("Error");
    let detail = if status.is_server_error() {
        "An internal error occurred"
    } else {
        detail
    };
    serde_json::to_vec(&Value::Object(body(code, title, detail, request_id))).unwrap_or_default()
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::UntrustedHost | AdminError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            AdminError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AdminError::MissingCredential | AdminError::InvalidCredential { .. } => {
                StatusCode::UNAUTHORIZED
            }
            AdminError::Forbidden(_) => StatusCode::FORBIDDEN,
            AdminError::NotFound | AdminError::KeyNotFound(_) | AdminError::JwtDisabled => {
                StatusCode::NOT_FOUND
            }
            AdminError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Unavailable(_) | AdminError::AuditUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.content_type("application/json");
        match self {
            AdminError::MissingCredential => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"infergate-admin\""));
            }
            AdminError::InvalidCredential { .. } => {
                res.insert_header((
                    header::WWW_AUTHENTICATE,
                    "Bearer realm=\"infergate-admin\", error=\"invalid_token\"",
                ));
            }
            AdminError::MethodNotAllowed { allow } => {
                res.insert_header((header::ALLOW, allow.as_str()));
            }
            _ => {}
        }
        res.body(render(self, None))
    }
}
