//! Who is calling: the [`Admin`] and [`AnyKey`] extractors.
//!
//! A handler that takes [`Admin`] only runs for an active key whose record has the `admin` role
//! (or the legacy plaintext `ADMIN_API_KEY`); one that takes [`AnyKey`] runs for any active key.
//! The credential is read from `X-API-Key` or `Authorization: Bearer` (never from the query
//! string: URLs end up in logs and browser history).
//!
//! Verification is the key store's [`infergate_keystore::KeyVerifier`]: the format and checksum
//! are checked offline (a malformed key costs no store read), then the record is fetched by id and
//! argon2 runs on the blocking pool; successes are cached in process by a keyed SHA-256 of the
//! presented key for `auth_cache_ttl_seconds` and dropped on the store's change feed, so repeated
//! admin calls do not re-hash.
//!
//! A refused call to an audited route (create, update, revoke, delete, rotate, token) is itself
//! audited with outcome `failure` — actor `anonymous` unless a valid key was merely not allowed.

use infergate_service::ApiError as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::{Method, header};
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use chrono::Utc;
use infergate_keystore::{KeyRecord, KeyStoreError, Verification, format};
use infergate_policy::{CredentialRules, Role, extract_credential, mask_secret};
use serde_json::json;

use crate::error::AdminError;
use crate::middleware::RequestCtx;
use crate::state::{AppState, LEGACY_ADMIN_ACTOR, LEGACY_ADMIN_ORIGIN, peer_ip};
use crate::telemetry::SPAN_TARGET;

pub const API_KEY_HEADER: &str = "X-API-Key";

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub record: Arc<KeyRecord>,
    /// The plaintext `ADMIN_API_KEY`, not a key in the store.
    pub legacy: bool,
}

impl Caller {
    /// The id audit entries and logs name this caller by.
    pub fn actor(&self) -> &str {
        if self.legacy {
            LEGACY_ADMIN_ACTOR
        } else {
            &self.record.id
        }
    }
}

/// The caller's id, for the access log.
#[derive(Clone, Debug)]
pub struct CallerId(pub Arc<str>);

/// An active admin key.
#[derive(Clone, Debug)]
pub struct Admin(pub Caller);

/// Any active key, whatever its role.
#[derive(Clone, Debug)]
pub struct AnyKey(pub Caller);

/// The audited action a route performs, for failure entries written before the handler runs.
pub fn action_for(method: &Method, pattern: Option<&str>) -> Option<&'static str> {
    match (method.as_str(), pattern?) {
        ("POST", "/v1/keys") => Some("create"),
        ("PATCH", "/v1/keys/{id}") => Some("update"),
        ("DELETE", "/v1/keys/{id}") => Some("delete"),
        ("POST", "/v1/keys/{id}/revoke") => Some("revoke"),
        ("POST", "/v1/keys/{id}/rotate") => Some("rotate"),
        ("POST", "/v1/tokens") => Some("token"),
        _ => None,
    }
}

fn rules() -> CredentialRules {
    CredentialRules {
        header_name: API_KEY_HEADER.to_string(),
        query_param: None,
    }
}

/// Why a credential was refused, with what can be logged about it.
struct Refusal {
    err: AdminError,
    /// The key id a well-formed key claims (public; unverified).
    claimed_id: Option<String>,
    /// A verified caller that is not allowed (403).
    caller: Option<Caller>,
    masked: Option<String>,
}

impl From<AdminError> for Refusal {
    fn from(err: AdminError) -> Self {
        Refusal {
            err,
            claimed_id: None,
            caller: None,
            masked: None,
        }
    }
}

async fn verify(state: &AppState, req: &HttpRequest) -> Result<Caller, Refusal> {
    let headers = req.headers();
    let presented = extract_credential(
        &rules(),
        headers.get(API_KEY_HEADER).and_then(|v| v.to_str().ok()),
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        None,
    );
    let credential = match presented {
        Ok(Some(c)) => c,
        // No key: a console session may stand for one (its cookie, and its CSRF token on a
        // state-changing call).
        Ok(None) => {
            return match crate::console::session_caller(state, req).await {
                Some(result) => result.map_err(Refusal::from),
                None => Err(AdminError::MissingCredential.into()),
            };
        }
        Err(_) => {
            return Err(AdminError::InvalidCredential {
                reason: "malformed",
            }
            .into());
        }
    };
    verify_value(state, &credential.value).await
}

/// Verifies a presented key (a console sign-in's, or a header's).
pub async fn verify_key(state: &AppState, key: &str) -> Result<Caller, AdminError> {
    verify_value(state, key).await.map_err(|r| r.err)
}

async fn verify_value(state: &AppState, value: &str) -> Result<Caller, Refusal> {
    let masked = Some(mask_secret(value));
    let claimed_id = match format::parse(value) {
        Ok(p) => Some(p.id.to_string()),
        // Not our format: only the legacy plaintext admin key can match, and it is checked in
        // memory; with none configured, no lookup at all.
        Err(_) if !state.legacy_admin => {
            return Err(Refusal {
                err: AdminError::InvalidCredential {
                    reason: "malformed",
                },
                claimed_id: None,
                caller: None,
                masked,
            });
        }
        Err(_) => None,
    };
    let refuse = |reason: &'static str| Refusal {
        err: AdminError::InvalidCredential { reason },
        claimed_id: claimed_id.clone(),
        caller: None,
        masked: masked.clone(),
    };
    let verification = state
        .verifier
        .verify(value, Utc::now())
        .await
        .map_err(|e| match e {
            KeyStoreError::Unavailable(d) => Refusal::from(AdminError::Unavailable(d)),
            other => Refusal::from(AdminError::Internal(other.to_string())),
        })?;
    match verification {
        Verification::Valid(record) => {
            let legacy = claimed_id.is_none() && record.created_by == LEGACY_ADMIN_ORIGIN;
            Ok(Caller { record, legacy })
        }
        Verification::Expired(_) => Err(refuse("expired")),
        Verification::Revoked(_) => Err(refuse("revoked")),
        Verification::Unknown => Err(refuse("unknown")),
    }
}

/// Counts, logs and (on audited routes) audits a refusal; returns the error to answer with.
async fn refused(state: &AppState, req: &HttpRequest, r: Refusal) -> AdminError {
    let reason = match &r.err {
        AdminError::MissingCredential => "missing",
        AdminError::InvalidCredential { reason } => reason,
        AdminError::Forbidden(_) => "forbidden",
        AdminError::SessionExpired => "session_expired",
        AdminError::CsrfInvalid => "csrf",
        _ => "error",
    };
    state
        .metrics
        .auth_failures
        .with_label_values(&[reason])
        .inc();
    let request_id = req
        .extensions()
        .get::<RequestCtx>()
        .map(|c| c.request_id.clone());
    let actor = r
        .caller
        .as_ref()
        .map_or("anonymous".to_string(), |c| c.actor().to_string());
    tracing::warn!(
        request_id = request_id.as_deref().unwrap_or("-"),
        client_ip = peer_ip(req).as_deref().unwrap_or("-"),
        actor = %actor,
        claimed_key_id = r.claimed_id.as_deref().unwrap_or("-"),
        key_prefix = r.masked.as_deref().unwrap_or("-"),
        reason,
        "credential refused"
    );
    if let Some(action) = action_for(req.method(), req.match_pattern().as_deref()) {
        let mut detail = json!({"error": r.err.code().name(), "reason": reason});
        if let Some(id) = &r.claimed_id {
            detail["claimed_key_id"] = json!(id);
        }
        state
            .audit(
                &actor,
                action,
                req.match_info().get("id").map(str::to_string),
                peer_ip(req),
                false,
                detail,
            )
            .await
            // The refusal is answered either way; a lost entry is logged and fails readiness.
            .ok();
    }
    r.err
}

fn state_of(req: &HttpRequest) -> Result<web::Data<AppState>, AdminError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| AdminError::Internal("application state missing".into()))
}

/// [`check`] inside an `authenticate` span (a disabled one when traces are off).
async fn authenticate(req: HttpRequest, admin_only: bool) -> Result<Caller, AdminError> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "authenticate",
        infergate.auth.outcome = tracing::field::Empty,
        infergate.key_id = tracing::field::Empty,
    );
    let result = check(req, admin_only).instrument(span.clone()).await;
    if !span.is_disabled() {
        match &result {
            Ok(caller) => {
                span.record("infergate.auth.outcome", "success");
                span.record("infergate.key_id", caller.actor());
            }
            Err(e) => {
                span.record("infergate.auth.outcome", e.code().name());
            }
        }
    }
    result
}

async fn check(req: HttpRequest, admin_only: bool) -> Result<Caller, AdminError> {
    let state = state_of(&req)?;
    let result = match verify(&state, &req).await {
        Ok(caller) if admin_only && caller.record.role != Role::Admin => Err(Refusal {
            err: AdminError::Forbidden(format!(
                "The {} role may not call this endpoint: it needs an admin key",
                caller.record.role
            )),
            claimed_id: Some(caller.record.id.to_string()),
            caller: Some(caller),
            masked: None,
        }),
        other => other,
    };
    match result {
        Ok(caller) => {
            req.extensions_mut()
                .insert(CallerId(Arc::from(caller.actor())));
            Ok(caller)
        }
        Err(r) => Err(refused(&state, &req, r).await),
    }
}

type Fut<T> = Pin<Box<dyn Future<Output = Result<T, AdminError>>>>;

impl FromRequest for Admin {
    type Error = AdminError;
    type Future = Fut<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(req, true).await.map(Admin) })
    }
}

impl FromRequest for AnyKey {
    type Error = AdminError;
    type Future = Fut<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(req, false).await.map(AnyKey) })
    }
}
