//! JSON error responses shared by every route.

use std::fmt;

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use serde_json::json;

/// An error rendered as `{"error": "...", "detail": "..."}` (plus `"field"` when a request field
/// is to blame, so the gateway's tests can assert on it without parsing prose).
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    error: &'static str,
    detail: String,
    field: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            error,
            detail: detail.into(),
            field: None,
        }
    }

    pub(crate) fn bad_request(error: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, detail)
    }

    /// A 422 that names the offending field (dotted / indexed path, e.g. `requests[1].prompt`).
    pub(crate) fn invalid_field(field: &str, detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: "invalid_field",
            detail: detail.into(),
            field: Some(field.to_owned()),
        }
    }

    pub(crate) fn missing_field(field: &str, expected: &str) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: "missing_field",
            detail: format!("field `{field}` is required ({expected})"),
            field: Some(field.to_owned()),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({ "error": self.error, "detail": self.detail });
        if let Some(field) = &self.field {
            body["field"] = json!(field);
        }
        HttpResponse::build(self.status).json(body)
    }
}
