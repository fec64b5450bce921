//! The routes that are not about one key: health, the audit log and metrics. The API description
//! and its docs page, and the JSON 404, are the shared ones ([`infergate_service::docs`]).

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use infergate_keystore::{AuditQuery, KeyState, ListQuery};
use serde_json::json;

use crate::auth::Admin;
use crate::error::AdminError;
use crate::state::AppState;
use crate::validate;

use infergate_service::docs::ApiDocs;
use infergate_service::timestamp as now;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// This service's description, served by the shared docs handlers ([`infergate_service::docs`]).
pub const DOCS: ApiDocs = ApiDocs::new(
    include_str!("../static/openapi.json"),
    include_str!("../static/docs.html"),
);

/// Public liveness: answers without touching the key store.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    // Still alive (200) while the audit log cannot be written, but not healthy: say so.
    let status = if state.audit_failure().is_some() {
        "degraded"
    } else {
        "healthy"
    };
    HttpResponse::Ok().json(json!({
        "status": status,
        "timestamp": now(),
        "version": VERSION,
        "uptime_seconds": state.started.elapsed().as_secs(),
        "key_store": state.store.backend(),
        "jwt": state.issuer.is_some(),
    }))
}

/// `GET /health/ready`: 503 while draining (as the gateway does) and while the last audit append
/// failed (every mutation would fail), so a load balancer stops sending admin traffic here. The
/// reason names the operation and file.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if state.drain.is_draining() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({"status": "draining", "timestamp": now()}));
    }
    match state.audit_failure() {
        None => HttpResponse::Ok().json(json!({"status": "ready", "timestamp": now()})),
        Some(reason) => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(json!({
                "status": "not_ready",
                "reason": format!("audit log: {reason}"),
                "timestamp": now(),
            })),
    }
}

/// `GET /v1/audit`: entries oldest first, filtered by actor, action, target and time.
pub async fn audit(
    _admin: Admin,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let q = validate::query(
        req.query_string(),
        &[
            "actor", "action", "target", "since", "until", "offset", "limit",
        ],
    )?;
    let text = |k: &str| {
        q.get(k)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let query = AuditQuery {
        actor: text("actor"),
        action: text("action"),
        target: text("target"),
        since: validate::time_param(&q, "since")?,
        until: validate::time_param(&q, "until")?,
        offset: validate::usize_param(&q, "offset", 0, 0, usize::MAX)?,
        limit: validate::usize_param(
            &q,
            "limit",
            validate::AUDIT_LIMIT_DEFAULT,
            1,
            validate::AUDIT_LIMIT_MAX,
        )?,
    };
    let items = state.store.audit(&query).await?;
    Ok(HttpResponse::Ok().json(json!({
        "items": items,
        "offset": query.offset,
        "limit": query.limit,
    })))
}

/// `GET /metrics` (admin only: key counts are not for everyone). Key counts by state are read
/// from the store at scrape time.
pub async fn metrics(
    _admin: Admin,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let now = Utc::now();
    for s in [KeyState::Active, KeyState::Expired, KeyState::Revoked] {
        let page = state
            .store
            .list(&ListQuery {
                role: None,
                state: Some(s),
                offset: 0,
                limit: 1,
                now,
                ..ListQuery::default()
            })
            .await?;
        state
            .metrics
            .keys
            .with_label_values(&[s.as_str()])
            .set(i64::try_from(page.total).unwrap_or(i64::MAX));
    }
    Ok(HttpResponse::Ok()
        .content_type(infergate_service::metrics::CONTENT_TYPE)
        .body(state.metrics.render()))
}
