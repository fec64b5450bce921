//! Authenticate: the request's credential (API key or JWT) to a key record. Refusals are
//! counted, logged and charged to the client IP's failed-auth budget.

use actix_web::http::header;
use futures_util::future::LocalBoxFuture;
use infergate_keystore::Verification;
use infergate_policy::{extract_credential, mask_secret};
use infergate_ratelimit::{BucketKey, LimitCheck};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::plan::{Caller, plan};
use super::{AuthInfo, Head, Rejected, RequestCtx};
use super::{limit::enforce, limit::log_rate_limited, limit::rate_limit_span};
use crate::error::GatewayError;
use crate::state::AppState;
use crate::telemetry::SPAN_TARGET;

/// A failed authentication: counted by reason, and charged to the client IP's anonymous budget so
/// guessing keys is rate limited too. Returns the error to send (429 once the budget is gone).
/// Boxed: awaited on every refusal path (five), it would otherwise take 0.8 KiB of every request's
/// future, moved with it on the paths that refuse nothing.
pub(crate) fn refuse<'a>(
    state: &'a AppState,
    ctx: &'a RequestCtx,
    reason: &'static str,
    err: GatewayError,
) -> LocalBoxFuture<'a, Rejected> {
    Box::pin(async move {
        state
            .metrics
            .auth_failures
            .with_label_values(&[reason])
            .inc();
        // Lands on the `authenticate` span when traces are on (a no-op otherwise).
        Span::current().record("infergate.auth.outcome", reason);
        let planned = plan(Caller::Refused, ctx.origin.client, &state.limits);
        match enforce(state, ctx, &planned).await {
            Ok(rate) => Rejected { err, rate },
            Err(e) => e.into(),
        }
    })
}

/// Finds and verifies the request's credential (API key or JWT). Refusals are counted, logged at
/// WARN (with the key's prefix at most) and charged to the client IP's budget.
/// Returns the identity, and whether the IP's failed-auth budget is still to be checked (a key
/// the cache knew skipped that peek: the limit step folds it into its own call).
pub(crate) async fn authenticate(
    state: &AppState,
    req: &Head<'_>,
    ctx: &RequestCtx,
) -> Result<(AuthInfo, bool), Rejected> {
    // Disabled (and free) unless traces are exported.
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "authenticate",
        infergate.auth.outcome = Empty,
        infergate.auth.source = Empty,
        infergate.key_id = Empty,
    );
    let auth = verify(state, req, ctx).instrument(span.clone()).await;
    if !span.is_disabled()
        && let Ok((auth, _)) = &auth
    {
        span.record("infergate.auth.outcome", "success");
        span.record("infergate.auth.source", auth.source.as_str());
        span.record("infergate.key_id", &*auth.record.id);
    }
    auth
}

async fn verify(
    state: &AppState,
    req: &Head<'_>,
    ctx: &RequestCtx,
) -> Result<(AuthInfo, bool), Rejected> {
    let rl = state.cfg.rate_limit.enabled;
    let ip = ctx.origin.client;
    let ip_check = || LimitCheck::new(BucketKey::ip(ip), state.cfg.rate_limit.default);
    let headers = req.headers;
    let presented = extract_credential(
        &state.credential_rules,
        headers
            .get(&state.api_key_header)
            .and_then(|v| v.to_str().ok()),
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        req.uri.query(),
    );
    let credential = match presented {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(refuse(state, ctx, "missing", GatewayError::MissingCredential).await);
        }
        Err(e) => {
            tracing::warn!(request_id = %ctx.request_id, client_ip = %ip, reason = %e, "malformed credential");
            return Err(refuse(
                state,
                ctx,
                "malformed",
                GatewayError::InvalidCredential {
                    reason: "malformed",
                },
            )
            .await);
        }
    };
    // Once the IP's failed-auth budget is spent, every credentialed request from it gets the same
    // 429 before any lookup, cached or not: otherwise a guess that hits a key someone else had
    // just used (so it is cached) would answer 200 among the 429s, an oracle for guessing. For a
    // key the cache already knows, the budget is checked with the key's own limits instead, in
    // the same limiter call ([`limit_guarded`]): the same 429, one round trip.
    let now = chrono::Utc::now();
    let cached = state.verifier.verify_cached(&credential.value, now);
    let known_good = matches!(cached, Some(Verification::Valid(_)));
    if rl && !known_good {
        let span = rate_limit_span(state);
        let status = state
            .limiter
            .peek(&ip_check())
            .instrument(span.clone())
            .await
            .map_err(|e| {
                span.record("infergate.ratelimit.outcome", "error");
                GatewayError::Unavailable(e.to_string())
            })?;
        span.record(
            "infergate.ratelimit.outcome",
            if status.is_exceeded() {
                "limited"
            } else {
                "allowed"
            },
        );
        if status.is_exceeded() {
            state.metrics.rate_limited.with_label_values(&["ip"]).inc();
            state.metrics.rate_decision(Some(&status), false);
            log_rate_limited(state, ctx, &ip_check().key, &status);
            return Err(Rejected::from(GatewayError::RateLimited {
                status,
                now_millis: state.clock.now_millis(),
            }));
        }
    }
    let verification = match (&state.tokens, cached) {
        (Some(tokens), _) if infergate_tokens::looks_like_jwt(&credential.value) => {
            let identity = match tokens.verify(&credential.value) {
                // Boxed: the token's record lookup would double every key request's future.
                Ok(token) => Box::pin(infergate_tokens::identify(token, &state.verifier, now)).await,
                Err(e) => Err(e.reason()),
            };
            match identity {
                Ok(v) => v,
                Err(reason) => {
                    tracing::warn!(request_id = %ctx.request_id, client_ip = %ip, reason, "JWT refused");
                    return Err(refuse(state, ctx, reason, GatewayError::InvalidCredential { reason: "token" }).await);
                }
            }
        }
        (_, Some(v)) => v,
        (_, None) => state
            .verifier
            .verify(&credential.value, now)
            .await
            .map_err(|e| {
                tracing::error!(request_id = %ctx.request_id, error = %e, "key verification unavailable");
                GatewayError::Unavailable(e.to_string())
            })?,
    };
    let record = match verification {
        Verification::Valid(r) => r,
        ref v @ (Verification::Expired(ref r) | Verification::Revoked(ref r)) => {
            let reason = if matches!(v, Verification::Expired(_)) {
                "expired"
            } else {
                "revoked"
            };
            tracing::warn!(request_id = %ctx.request_id, client_ip = %ip, key_id = %r.id, reason, "refused key used");
            return Err(refuse(
                state,
                ctx,
                reason,
                GatewayError::InvalidCredential { reason },
            )
            .await);
        }
        Verification::Unknown => {
            tracing::warn!(
                request_id = %ctx.request_id,
                client_ip = %ip,
                key_prefix = %mask_secret(&credential.value),
                source = credential.source.as_str(),
                "unknown API key"
            );
            return Err(refuse(
                state,
                ctx,
                "unknown",
                GatewayError::InvalidCredential { reason: "unknown" },
            )
            .await);
        }
    };
    Ok((
        AuthInfo {
            record,
            source: credential.source,
        },
        known_good,
    ))
}
