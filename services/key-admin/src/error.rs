//! Every way an admin request can fail, mapped into the shared error-code table
//! ([`infergate_service::Code`]), which renders it (`{"code", "error", "detail", "request_id",
//! "timestamp"}`, plus `field` on 422). Handlers return [`AdminError`]; the edge re-renders the
//! body with the request id.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use infergate_keystore::KeyStoreError;
use infergate_service::error::{Realm, ServiceError, render, response};
use infergate_service::{ApiError, Code};
use serde_json::{Map, Value, json};

#[derive(Debug)]
pub enum AdminError {
    UntrustedHost,
    MalformedJson(String),
    PayloadTooLarge {
        limit: usize,
    },
    Validation {
        field: String,
        detail: String,
    },
    MissingCredential,
    /// `reason`: `malformed`, `unknown`, `expired` or `revoked`.
    InvalidCredential {
        reason: &'static str,
    },
    Forbidden(String),
    /// A console session cookie that names no live session (expired, signed out, or its key
    /// revoked).
    SessionExpired,
    /// A state-changing console call without the session's CSRF token.
    CsrfInvalid,
    /// Too many failed console sign-ins from one address.
    SignInsLimited {
        retry_after_secs: u64,
    },
    NotFound,
    KeyNotFound(String),
    JwtDisabled,
    MethodNotAllowed {
        allow: String,
    },
    Conflict(String),
    Unavailable(String),
    /// The audit entry of an action could not be written: the request fails rather than lose it.
    AuditUnavailable(String),
    Internal(String),
}

impl AdminError {
    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> Self {
        AdminError::Validation {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// The field a validation error is about.
    pub fn field(&self) -> Option<&str> {
        match self {
            AdminError::Validation { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl ApiError for AdminError {
    fn code(&self) -> Code {
        match self {
            AdminError::UntrustedHost => Code::InvalidHost,
            AdminError::MalformedJson(_) => Code::MalformedJson,
            AdminError::PayloadTooLarge { .. } => Code::PayloadTooLarge,
            AdminError::Validation { .. } => Code::ValidationError,
            AdminError::MissingCredential => Code::MissingCredentials,
            AdminError::InvalidCredential { reason: "expired" } => Code::ExpiredCredentials,
            AdminError::InvalidCredential { .. } => Code::InvalidCredentials,
            AdminError::Forbidden(_) => Code::Forbidden,
            AdminError::SessionExpired => Code::SessionExpired,
            AdminError::CsrfInvalid => Code::CsrfInvalid,
            AdminError::SignInsLimited { .. } => Code::RateLimited,
            AdminError::NotFound => Code::NotFound,
            AdminError::KeyNotFound(_) => Code::KeyNotFound,
            AdminError::JwtDisabled => Code::JwtDisabled,
            AdminError::MethodNotAllowed { .. } => Code::MethodNotAllowed,
            AdminError::Conflict(_) => Code::Conflict,
            AdminError::Unavailable(_) => Code::Unavailable,
            AdminError::AuditUnavailable(_) => Code::AuditUnavailable,
            AdminError::Internal(_) => Code::Internal,
        }
    }

    fn detail(&self) -> String {
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
            AdminError::SessionExpired => {
                "The console session has ended (expired, signed out, or its key was revoked); sign in again".into()
            }
            AdminError::CsrfInvalid => {
                "A console session's state-changing call must carry its X-CSRF-Token".into()
            }
            AdminError::SignInsLimited { retry_after_secs } => format!(
                "Too many failed sign-ins from this address; retry in {retry_after_secs} seconds"
            ),
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

    fn extra(&self, body: &mut Map<String, Value>) {
        match self {
            AdminError::Validation { field, .. } => {
                body.insert("field".into(), json!(field));
            }
            AdminError::PayloadTooLarge { limit } => {
                body.insert("limit_bytes".into(), json!(limit));
            }
            AdminError::SignInsLimited { retry_after_secs } => {
                body.insert(
                    "retry_after".into(),
                    json!(format!("{retry_after_secs} seconds")),
                );
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

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code().title())
    }
}

impl std::error::Error for AdminError {}

impl ServiceError for AdminError {
    fn not_found() -> Self {
        AdminError::NotFound
    }
    fn untrusted_host() -> Self {
        AdminError::UntrustedHost
    }
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        self.code().status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = response(self);
        Realm::ADMIN.challenge(&mut res, self.code());
        if let AdminError::MethodNotAllowed { allow } = self {
            res.insert_header((header::ALLOW, allow.as_str()));
        }
        if let AdminError::SignInsLimited { retry_after_secs } = self {
            res.insert_header((header::RETRY_AFTER, *retry_after_secs));
        }
        res.body(render(self, None))
    }
}
