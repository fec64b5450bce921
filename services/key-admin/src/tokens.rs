//! `POST /v1/tokens`: any active key (any role) exchanges itself for a short-lived JWT.
//!
//! The token's `exp` never passes the key's own expiry (or a scheduled end of a rotation grace
//! period). When JWTs are disabled — or enabled but no issuer could be built from the settings —
//! the route answers `404` with code `jwt_disabled`, after authenticating the caller (so an
//! anonymous client cannot probe the configuration).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::auth::AnyKey;
use crate::error::AdminError;
use crate::state::{Action, AppState, Done};

pub async fn issue(
    caller: AnyKey,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let caller = caller.0;
    let act = Action::new(&state, &req, &caller, "token");
    let result = (|| {
        if caller.legacy {
            return Err(AdminError::Forbidden(
                "The plaintext ADMIN_API_KEY cannot be exchanged for a token; use a key from the store".into(),
            ));
        }
        let issuer = state.issuer.as_ref().ok_or(AdminError::JwtDisabled)?;
        let now = Utc::now();
        let (token, claims) = issuer.issue(&caller.record, now).map_err(|e| match e {
            infergate_tokens::TokenError::KeyExpired => {
                AdminError::InvalidCredential { reason: "expired" }
            }
            other => AdminError::Internal(other.to_string()),
        })?;
        let expires_at = DateTime::<Utc>::from_timestamp(claims.exp, 0)
            .unwrap_or(now)
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        let body = json!({
            "token": token,
            "token_type": "Bearer",
            "expires_in": claims.exp - now.timestamp(),
            "expires_at": expires_at,
            "claims": claims,
        });
        Ok(Done {
            value: HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(body),
            target: Some(caller.record.id.to_string()),
            detail: json!({"jti": claims.jti, "expires_at": expires_at}),
        })
    })();
    act.finish(result).await
}
