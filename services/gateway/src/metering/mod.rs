//! Token limits and concurrency caps: what a call to a model may cost is reserved before the
//! upstream is called, and settled against what it really cost once the response ends.
//!
//! ```text
//! body validated ─▶ estimate (prompt bound + output max) ─▶ admit: request counts, token
//! reservation and concurrency slot in ONE limiter call ─▶ default cap / include_usage written
//! into the forwarded body ─▶ upstream ─▶ meter (count, strip usage chunk, cut an overrun)
//! ─▶ settle on drop: real usage replaces the reservation, the slot is released
//! ```
//!
//! - [`estimate`]: the bound and why it holds.
//! - [`admit`] (here): the one decision. A key whose budget is empty never comes here: its
//!   request counts are decided before the body, as always.
//! - [`meter`]: the response side.
//! - [`Reservation`] (here): settles when dropped, whatever ended the request (the response's
//!   end, the client hanging up, an upstream failure), retrying a shared limiter it cannot
//!   reach; it also renews the concurrency lease while a stream runs.
//!
//! docs/ratelimit.md describes the whole for operators.

pub mod estimate;
pub mod meter;

use std::sync::Arc;
use std::time::Duration;

use infergate_config::TokenCount;
use infergate_keystore::KeyRecord;
use infergate_ratelimit::{
    Adjustment, Admission, Admitted as Decided, BucketKey, Dimension, Lease, LimitCheck,
    LimitStatus, RateLimiter, RateSpec, Settlement, Subject,
};
use smallvec::SmallVec;
use tracing::Instrument;

use self::estimate::Estimate;
use crate::error::GatewayError;
use crate::metrics::TokenMetrics;
use crate::pipeline::RequestCtx;
use crate::pipeline::limit::{log_rate_limited, rate_limit_span};
use crate::pipeline::plan::Plan;
use crate::state::AppState;

/// Tokens a response reported using.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
}

/// What one admission decided, for the response headers.
#[derive(Default)]
pub struct Admitted {
    /// Settles when dropped; `None` when nothing was reserved and no slot taken.
    pub reservation: Option<Reservation>,
    /// The tightest request-count limit.
    pub request: Option<LimitStatus>,
    /// The tightest token limit.
    pub tokens: Option<LimitStatus>,
    /// A shadow limit that would have refused (`tokens`, `tokens_daily`, `concurrency`).
    pub shadowed: Option<&'static str>,
}

/// Where a reservation's tokens are counted for its key's usage: the recorder, the key id, and
/// the clock that dates them.
type UsageSink = (
    Arc<crate::usage::UsageRecorder>,
    Arc<str>,
    Arc<dyn infergate_ratelimit::Clock>,
);

/// A request's reservation and slot, settled when dropped (see the module doc).
pub struct Reservation {
    limiter: Arc<dyn RateLimiter>,
    metrics: TokenMetrics,
    /// The token checks charged, each its full reservation.
    checks: SmallVec<[LimitCheck; 2]>,
    reserved: u64,
    at_ms: u64,
    local: bool,
    lease: Option<Lease>,
    estimate: Estimate,
    count: TokenCount,
    route: &'static str,
    role: &'static str,
    /// Dropping it stops the lease's renewal task.
    renewing: Option<tokio::sync::oneshot::Sender<()>>,
    /// Where the tokens charged are counted for the key's usage, and the key.
    recorder: Option<UsageSink>,
    pub(crate) usage: Option<Usage>,
    pub(crate) metered_output: u64,
    pub(crate) body_bytes: u64,
    /// The upstream answered with a success status (else nothing ran: nothing is charged).
    pub(crate) responded: bool,
    pub(crate) streamed: bool,
    pub(crate) cut: bool,
}

impl Reservation {
    /// The tokens to charge, by what is known (see docs/ratelimit.md, "Settlement").
    fn used(&self) -> u64 {
        let Usage { input, output } = self.spent();
        match self.count {
            TokenCount::Input => input,
            TokenCount::Output => output,
            TokenCount::Total => input.saturating_add(output),
        }
    }

    /// Input and output tokens the request cost, by what is known.
    fn spent(&self) -> Usage {
        if !self.responded {
            return Usage::default();
        }
        self.usage.unwrap_or(Usage {
            input: self.estimate.prompt,
            output: if self.streamed {
                self.metered_output
            } else {
                // A response without usage: its bytes bound its tokens.
                self.estimate.max_output.min(self.body_bytes)
            },
        })
    }

    /// Whether the response stream should be metered (something was reserved).
    pub fn meters_tokens(&self) -> bool {
        !self.checks.is_empty()
    }

    /// Most output this request reserved, when a token limit counts output.
    pub fn output_cap(&self) -> Option<u64> {
        (self.meters_tokens() && self.count != TokenCount::Input)
            .then_some(self.estimate.max_output)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        drop(self.renewing.take());
        self.metrics.in_flight.dec();
        let used = self.used();
        let labels = [self.route, self.role];
        if self.meters_tokens() {
            if let Some((recorder, id, clock)) = &self.recorder {
                let spent = self.spent();
                recorder.tokens(id, spent.input, spent.output, clock.now_millis());
            }
            self.metrics
                .consumed
                .with_label_values(&labels)
                .inc_by(used);
            self.metrics
                .refunded
                .with_label_values(&labels)
                .inc_by(self.reserved.saturating_sub(used));
        }
        if self.cut {
            self.metrics.streams_cut.inc();
        }
        let delta = i64::try_from(used).unwrap_or(i64::MAX)
            - i64::try_from(self.reserved).unwrap_or(i64::MAX);
        let adjustments: Vec<Adjustment> = if delta == 0 {
            Vec::new()
        } else {
            self.checks
                .iter()
                .map(|c| Adjustment {
                    check: c.clone(),
                    charged_at_ms: self.at_ms,
                    delta,
                })
                .collect()
        };
        let lease = self.lease.take();
        if adjustments.is_empty() && lease.is_none() {
            return;
        }
        let (limiter, metrics, local) = (self.limiter.clone(), self.metrics.clone(), self.local);
        // Dropped on a worker thread of the running server; a drop with no runtime left (the
        // process is exiting) has nobody to settle with.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(settle(limiter, metrics, adjustments, lease, local));
        }
    }
}

/// Settles, retrying an unreachable shared limiter for about two minutes (a settlement is
/// never dropped silently: the last failure is logged and counted).
async fn settle(
    limiter: Arc<dyn RateLimiter>,
    metrics: TokenMetrics,
    adjustments: Vec<Adjustment>,
    lease: Option<Lease>,
    local: bool,
) {
    let mut wait = Duration::from_millis(100);
    for attempt in 0..12 {
        let settlement = Settlement {
            adjustments: &adjustments,
            release: lease.as_ref(),
            local,
        };
        match limiter.settle(&settlement).await {
            Ok(()) => {
                metrics.settlements.inc();
                return;
            }
            Err(e) => {
                metrics.settlement_retries.inc();
                if attempt == 0 {
                    tracing::warn!(error = %e, "token settlement failed; retrying");
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
    metrics.settlements_dropped.inc();
    tracing::error!("token settlement given up after 12 attempts; the reservation stands");
}

/// Renews `lease` every third of its TTL until `stop` fires or is dropped.
fn spawn_renewal(limiter: Arc<dyn RateLimiter>, lease: Lease) -> tokio::sync::oneshot::Sender<()> {
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let every = (lease.ttl / 3).max(Duration::from_millis(100));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut rx => return,
                () = tokio::time::sleep(every) => {
                    if let Err(e) = limiter.renew(&lease).await {
                        tracing::warn!(error = %e, "concurrency lease renewal failed");
                    }
                }
            }
        }
    });
    tx
}

/// The tightest of `statuses`: the one with the fewest remaining (ties: the smaller limit).
fn tightest(statuses: &[LimitStatus]) -> Option<LimitStatus> {
    statuses
        .iter()
        .min_by_key(|s| (s.remaining, s.limit))
        .copied()
}

/// The token checks of one call: the key's own budget (its record's, else its role's), and the
/// route's per-key budget counted in a bucket of its own (scoped by the operation).
fn budget_checks(
    state: &AppState,
    record: &KeyRecord,
    budget: &crate::pipeline::plan::Budget,
    route_budget: Option<(&'static str, infergate_config::RouteBudget)>,
    reserved: u64,
) -> SmallVec<[LimitCheck; 2]> {
    let t = &state.limits.tokens;
    let key = |dimension, scope: Option<&'static str>| BucketKey {
        dimension,
        subject: Subject::Key(record.id.clone()),
        scope: scope.map(Arc::from),
    };
    let per_minute = |limit, scope| {
        LimitCheck::new(
            key(Dimension::Tokens, scope),
            RateSpec {
                limit,
                period: Duration::from_secs(60),
            },
        )
        .costing(reserved)
        .shadowed(t.per_minute.is_shadow())
    };
    let per_day = |limit, scope| {
        LimitCheck::new(
            key(Dimension::TokensDaily, scope),
            RateSpec {
                limit,
                period: Duration::from_secs(86_400),
            },
        )
        .costing(reserved)
        .fixed(u64::from(t.day_resets_at_utc_hour) * 3_600_000)
        .shadowed(t.per_day.is_shadow())
    };
    let mut checks = SmallVec::new();
    checks.extend(budget.tokens_per_minute.map(|l| per_minute(l, None)));
    checks.extend(budget.tokens_per_day.map(|l| per_day(l, None)));
    if let Some((op, rb)) = route_budget {
        checks.extend(rb.tokens_per_minute.map(|l| per_minute(l, Some(op))));
        checks.extend(rb.tokens_per_day.map(|l| per_day(l, Some(op))));
    }
    checks
}

/// Decides the request counts of `plan`, the token reservation of `estimate` (on a metered
/// route) and the key's concurrency slot in one limiter call.
pub async fn admit(
    state: &AppState,
    ctx: &RequestCtx,
    plan: &Plan,
    record: &KeyRecord,
    route: Option<&'static str>,
    estimate: Option<Estimate>,
) -> Result<Admitted, GatewayError> {
    let budget = state.limits.budget(record);
    let count = state.limits.tokens.count;
    let route_budget = route.and_then(|op| Some((op, *state.limits.route_budgets.get(op)?)));
    let estimate =
        estimate.filter(|_| route.is_some() && (budget.limits_tokens() || route_budget.is_some()));
    let reserved = estimate.map_or(0, |e| e.reservation(count));
    let token_checks = match estimate {
        Some(_) => budget_checks(state, record, &budget, route_budget, reserved),
        None => SmallVec::new(),
    };
    let lease = budget.max_concurrent.map(|cap| Lease {
        key: BucketKey::new(Dimension::Concurrency, Subject::Key(record.id.clone())),
        cap,
        id: infergate_telemetry::ids::random_u64(),
        ttl: state.limits.concurrency.lease,
        shadow: state.limits.concurrency.mode.is_shadow(),
    });
    let mut checks: SmallVec<[LimitCheck; 4]> = plan.checks.iter().cloned().collect();
    checks.extend(token_checks.iter().cloned());
    let span = rate_limit_span(state);
    let decided = state
        .limiter
        .admit(&Admission {
            guards: plan.guard.as_slice(),
            checks: &checks,
            lease: lease.as_ref(),
        })
        .instrument(span.clone())
        .await;
    let now_millis = state.clock.now_millis();
    let metrics = &state.metrics;
    let (decision, lease_status, at_ms, local) = match decided {
        Err(e) => {
            span.record("infergate.ratelimit.outcome", "error");
            return Err(GatewayError::Unavailable(e.to_string()));
        }
        Ok(Decided::GuardRefused(status)) => {
            span.record("infergate.ratelimit.outcome", "limited");
            metrics.rate_limited.with_label_values(&["ip"]).inc();
            metrics.rate_decision(Some(&status), false);
            if let Some(g) = &plan.guard {
                log_rate_limited(state, ctx, &g.key, &status);
            }
            return Err(GatewayError::RateLimited { status, now_millis });
        }
        Ok(Decided::Decided {
            decision,
            lease,
            at_ms,
            local,
        }) => (decision, lease, at_ms, local),
    };
    let (request_statuses, token_statuses) = decision.statuses.split_at(plan.checks.len());
    if !decision.allowed {
        span.record("infergate.ratelimit.outcome", "limited");
        if let Some(l) = lease_status.filter(|l| !l.acquired) {
            metrics
                .tokens
                .refusals
                .with_label_values(&["concurrency"])
                .inc();
            return Err(GatewayError::ConcurrencyLimited { cap: l.cap });
        }
        if let Some(status) = decision.tightest().copied() {
            let dimension = status.dimension;
            if matches!(dimension, Dimension::Tokens | Dimension::TokensDaily) {
                metrics
                    .tokens
                    .refusals
                    .with_label_values(&[dimension.as_str()])
                    .inc();
                return Err(GatewayError::TokenLimited {
                    status,
                    reserved,
                    now_millis,
                });
            }
            metrics.rate_decision(Some(&status), false);
            metrics
                .rate_limited
                .with_label_values(&[dimension.as_str()])
                .inc();
            if let Some((check, _)) = checks
                .iter()
                .zip(&decision.statuses)
                .find(|(_, s)| s.is_exceeded() && s.dimension == dimension)
            {
                log_rate_limited(state, ctx, &check.key, &status);
            }
            return Err(GatewayError::RateLimited { status, now_millis });
        }
        return Err(GatewayError::Unavailable(
            "the limiter refused without a reason".into(),
        ));
    }
    span.record("infergate.ratelimit.outcome", "allowed");
    let request = tightest(request_statuses);
    metrics.rate_decision(request.as_ref(), true);
    let mut shadowed = None;
    for (check, status) in token_checks.iter().zip(token_statuses) {
        if check.shadow && status.is_exceeded() {
            let name = status.dimension.as_str();
            metrics
                .tokens
                .shadow_refusals
                .with_label_values(&[name])
                .inc();
            shadowed = Some(name);
        }
    }
    if lease_status.is_some_and(|l| l.in_flight > l.cap) {
        metrics
            .tokens
            .shadow_refusals
            .with_label_values(&["concurrency"])
            .inc();
        shadowed = Some("concurrency");
    }
    if let Some(name) = shadowed
        && state.rate_limit_log.admit(now_millis).is_some()
    {
        tracing::warn!(
            request_id = %ctx.request_id,
            key_id = %record.id,
            limit = name,
            "shadow limit would have refused this request"
        );
    }
    let tokens = tightest(token_statuses);
    let reservation = (!token_checks.is_empty() || lease.is_some()).then(|| {
        let role = record.role.as_str();
        let route = route.unwrap_or("other");
        if !token_checks.is_empty() {
            metrics
                .tokens
                .reserved
                .with_label_values(&[route, role])
                .inc_by(reserved);
        }
        metrics.tokens.in_flight.inc();
        let renewing = lease
            .clone()
            .map(|l| spawn_renewal(state.limiter.clone(), l));
        Reservation {
            limiter: state.limiter.clone(),
            metrics: metrics.tokens.clone(),
            checks: token_checks,
            reserved,
            at_ms,
            local,
            lease,
            estimate: estimate.unwrap_or_default(),
            count,
            route,
            role,
            renewing,
            recorder: state
                .usage
                .clone()
                .map(|r| (r, record.id.clone(), state.clock.clone())),
            usage: None,
            metered_output: 0,
            body_bytes: 0,
            responded: false,
            streamed: false,
            cut: false,
        }
    });
    Ok(Admitted {
        reservation,
        request,
        tokens,
        shadowed,
    })
}
