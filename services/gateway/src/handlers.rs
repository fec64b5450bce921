//! Routes the gateway answers itself.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use infergate_policy::{extract_credential, mask_secret};
use serde_json::json;

use crate::error::GatewayError;
use crate::pipeline::RequestCtx;
use crate::state::AppState;
use crate::validate::{check_body, parse_json};

use infergate_service::docs::ApiDocs;
use infergate_service::timestamp as now;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// This service's description, served by the shared docs handlers ([`infergate_service::docs`]).
pub const DOCS: ApiDocs = ApiDocs::new(
    include_str!("../static/openapi.json"),
    include_str!("../static/docs.html"),
);

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "healthy", "timestamp": now(), "version": VERSION}))
}

pub async fn health_detailed(state: &AppState, pool: &crate::upstream::Pool) -> HttpResponse {
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        pool.get_status("/health"),
    )
    .await;
    let upstream = match probe {
        Ok(Ok(s)) if (200..300).contains(&s) => json!({"status": "healthy", "http_status": s}),
        Ok(Ok(s)) => json!({"status": "unhealthy", "http_status": s}),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "upstream health probe failed");
            json!({"status": "unreachable"})
        }
        Err(_) => json!({"status": "timeout"}),
    };
    let healthy = upstream["status"] == "healthy";
    HttpResponse::Ok().json(json!({
        "status": if healthy { "healthy" } else { "degraded" },
        "timestamp": now(),
        "version": VERSION,
        "uptime_seconds": state.started.elapsed().as_secs(),
        "components": {
            "upstream": upstream,
            "rate_limiter": {"status": "healthy", "backend": state.limiter.backend(), "enabled": state.cfg.rate_limit.enabled, "buckets": state.memory_limiter.len()},
            "key_store": {
                "status": "healthy",
                "backend": state.verifier.store().map_or("static", |s| s.backend()),
                "legacy_keys": state.verifier.legacy_count(),
            },
        }
    }))
}

/// Readiness: 503 while draining (so load balancers stop routing here before the process exits);
/// 200 otherwise, reporting `degraded` while rate limits are decided by the fallback.
pub fn ready(state: &AppState) -> HttpResponse {
    if state.drain.is_draining() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({"status": "draining", "timestamp": now()}));
    }
    let limiter = match &state.resilient {
        Some(r) => json!({
            "backend": state.limiter.backend(),
            "breaker": r.breaker_state(),
            "failure_mode": r.mode().as_str(),
            "status": if r.degraded() { "degraded" } else { "ok" },
        }),
        None => json!({"backend": state.limiter.backend(), "status": "ok"}),
    };
    let degraded = state.resilient.as_ref().is_some_and(|r| r.degraded());
    // In `closed` mode a degraded limiter refuses every limited request: not ready to serve.
    let cannot_serve = state.resilient.as_ref().is_some_and(|r| {
        r.degraded() && r.mode() == infergate_ratelimit::resilient::FailureMode::Closed
    });
    if cannot_serve {
        return HttpResponse::ServiceUnavailable().json(json!({
            "status": "unavailable",
            "timestamp": now(),
            "rate_limiter": limiter,
        }));
    }
    HttpResponse::Ok().json(json!({
        "status": if degraded { "degraded" } else { "ready" },
        "timestamp": now(),
        "rate_limiter": limiter,
    }))
}

pub fn protected(req: &HttpRequest, state: &AppState, ctx: &RequestCtx) -> HttpResponse {
    let Some(auth) = &ctx.auth else {
        return HttpResponse::Ok().json(json!({
            "message": "Authentication is disabled on this gateway",
            "authenticated": false,
        }));
    };
    let h = req.headers();
    let masked = extract_credential(
        &state.credential_rules,
        h.get(&state.api_key_header).and_then(|v| v.to_str().ok()),
        h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()),
        req.uri().query(),
    )
    .ok()
    .flatten()
    .map(|c| mask_secret(&c.value));
    HttpResponse::Ok().json(json!({
        "message": "Access granted",
        "authenticated": true,
        "key": masked,
        "key_id": auth.record.id,
        "key_name": auth.record.name,
        "role": auth.record.role,
        "credential_source": auth.source.as_str(),
        "timestamp": now(),
    }))
}

pub async fn api_test(
    payload: actix_web::dev::Payload,
    req: &HttpRequest,
    state: &AppState,
) -> Result<HttpResponse, GatewayError> {
    let limits = &state.cfg.body_limits;
    let limit = limits.for_route("/api/test");
    let (body, _) = crate::body::read_decoded(payload, req.headers(), limits, limit).await?;
    let value = parse_json(&body)?;
    check_body(infergate_policy::Schema::ApiTest, &value)?;
    let iterations = value
        .get("iterations")
        .and_then(crate::json::Json::as_number)
        .and_then(crate::validate::whole)
        .unwrap_or(1);
    let timeout = value
        .get("timeout")
        .and_then(|v| v.as_f64())
        .unwrap_or(30.0);
    Ok(HttpResponse::Ok().json(json!({
        "success": true,
        "test_id": &*infergate_telemetry::ids::request_id(),
        "received_data": {
            "test_name": value.get("test_name").and_then(crate::json::Json::as_str),
            "iterations": iterations,
            "timeout": timeout,
        },
        "timestamp": now(),
    })))
}

pub fn api_status(state: &AppState, ctx: &RequestCtx) -> HttpResponse {
    let cfg = &state.cfg;
    let caller = ctx.auth.as_ref().map(|a| {
        json!({"key_id": a.record.id, "role": a.record.role, "rate_limit": state.limits.key_limit(&a.record)})
    });
    let mut methods = vec!["header", "bearer"];
    if cfg.auth.query_param_enabled {
        methods.push("query");
    }
    HttpResponse::Ok().json(json!({
        "status": "operational",
        "version": VERSION,
        "timestamp": now(),
        "authentication": {
            "enabled": cfg.auth.enabled,
            "methods": methods,
            "header_name": cfg.auth.header_name,
            "query_parameter": cfg.auth.query_param_enabled.then_some("api_key"),
            "key_store": state.verifier.store().map_or("static", |s| s.backend()),
        },
        "rate_limiting": {
            "enabled": cfg.rate_limit.enabled,
            "storage": cfg.rate_limit.storage,
            "default": cfg.rate_limit.default,
            "authenticated": cfg.rate_limit.authenticated,
            "admin": cfg.rate_limit.admin,
            "endpoints": cfg.rate_limit.endpoints,
        },
        "cors": {
            "origins": cfg.cors.origins,
            "allow_credentials": cfg.cors.allow_credentials,
            "max_age_seconds": cfg.cors.max_age_seconds,
        },
        "security_headers": cfg.security_headers,
        "https_only": cfg.https_only,
        "caller": caller,
    }))
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.sync_verifier(&state.verifier.stats);
    if let Some(r) = &state.resilient {
        state.metrics.sync_limiter(r);
    }
    HttpResponse::Ok()
        .content_type(infergate_service::metrics::CONTENT_TYPE)
        .body(state.metrics.render())
}
