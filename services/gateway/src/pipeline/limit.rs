//! Limit: counts a request as its [`super::plan::Plan`] says, in one limiter call; a denial is
//! a 429, logged (sampled) with the refusing bucket.

use infergate_ratelimit::{BucketKey, Guarded, LimitCheck, LimitStatus};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::RequestCtx;
use super::plan::Plan;
use crate::error::GatewayError;
use crate::state::AppState;
use crate::telemetry::SPAN_TARGET;

/// The span of one limiter call (a child of whatever span is current).
pub(crate) fn rate_limit_span(state: &AppState) -> Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        "rate_limit",
        infergate.ratelimit.backend = if state.resilient.is_some() { "redis" } else { "memory" },
        infergate.ratelimit.outcome = Empty,
    )
}

/// A 429 at WARN, sampled: a client hammering its limit costs the log a few lines a second, and
/// the next line written says how many were left out. Names the bucket (an IP or a key *id*).
pub(crate) fn log_rate_limited(
    state: &AppState,
    ctx: &RequestCtx,
    bucket: &BucketKey,
    status: &LimitStatus,
) {
    if let Some(suppressed) = state.rate_limit_log.admit(state.clock.now_millis()) {
        tracing::warn!(
            request_id = %ctx.request_id,
            client_ip = %ctx.origin.client,
            bucket = %bucket,
            limit = status.limit,
            window_seconds = status.window.as_secs(),
            suppressed,
            "rate limit exceeded"
        );
    }
}

/// Counts the request as `planned`; a denial becomes a 429 error. Returns the tightest status
/// for the headers.
pub(crate) async fn enforce(
    state: &AppState,
    ctx: &RequestCtx,
    planned: &Plan,
) -> Result<Option<LimitStatus>, GatewayError> {
    if planned.is_empty() {
        return Ok(None);
    }
    match limit_guarded(state, ctx, planned.guard.as_ref(), &planned.checks).await {
        Err(GatewayError::Unavailable(_)) if planned.tolerate_unavailable => Ok(None),
        other => other,
    }
}

/// [`limit`], refused first when `guard` (the client IP's failed-auth budget, for a key already
/// known good) is spent: one decision, so one limiter round trip.
pub(crate) async fn limit_guarded(
    state: &AppState,
    ctx: &RequestCtx,
    guard: Option<&LimitCheck>,
    checks: &[LimitCheck],
) -> Result<Option<LimitStatus>, GatewayError> {
    let span = rate_limit_span(state);
    let decided = match guard {
        None => state
            .limiter
            .check(checks)
            .instrument(span.clone())
            .await
            .map(Guarded::Decided),
        Some(g) => {
            state
                .limiter
                .check_guarded(std::slice::from_ref(g), checks)
                .instrument(span.clone())
                .await
        }
    };
    let d = match decided {
        Ok(Guarded::Decided(d)) => d,
        Ok(Guarded::Refused(status)) => {
            span.record("infergate.ratelimit.outcome", "limited");
            state.metrics.rate_limited.with_label_values(&["ip"]).inc();
            state.metrics.rate_decision(Some(&status), false);
            if let Some(g) = guard {
                log_rate_limited(state, ctx, &g.key, &status);
            }
            return Err(GatewayError::RateLimited {
                status,
                now_millis: state.clock.now_millis(),
            });
        }
        Err(e) => {
            span.record("infergate.ratelimit.outcome", "error");
            return Err(GatewayError::Unavailable(e.to_string()));
        }
    };
    if !span.is_disabled() {
        let outcome = if d.allowed { "allowed" } else { "limited" };
        span.record("infergate.ratelimit.outcome", outcome);
    }
    let tightest = d.tightest().copied();
    state.metrics.rate_decision(tightest.as_ref(), d.allowed);
    if !d.allowed
        && let Some(status) = tightest
    {
        state
            .metrics
            .rate_limited
            .with_label_values(&[status.dimension.as_str()])
            .inc();
        // The refusing bucket: the first exceeded check with the status's dimension and window.
        if let Some(check) = checks.iter().zip(&d.statuses).find_map(|(c, s)| {
            (s.is_exceeded() && s.dimension == status.dimension && s.window == status.window)
                .then_some(c)
        }) {
            log_rate_limited(state, ctx, &check.key, &status);
        }
        return Err(GatewayError::RateLimited {
            status,
            now_millis: state.clock.now_millis(),
        });
    }
    Ok(tightest)
}
