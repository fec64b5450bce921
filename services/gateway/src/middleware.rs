//! The request pipeline, as two `from_fn` middlewares around actix-cors:
//!
//! ```text
//! edge ─▶ CORS ─▶ guard ─▶ handler (local route or proxy)
//! ```
//!
//! - the edge (outermost) is the shared one ([`infergate_service::edge`]); the gateway's
//!   [`EdgeService`] impl gives it the checks that need no identity ([`pre_checks`]: trusted
//!   host, HTTPS-only, body size by `Content-Length`, path, attack signatures) and the request
//!   context. On the way out it renders every error as JSON with the request id, adds
//!   `X-Request-ID`, `X-Process-Time` and the security headers (so they are on *every* response,
//!   CORS preflights and proxied ones included), records metrics and writes the access-log line.
//! - CORS answers preflights before any credential is asked for.
//! - [`guard`] authenticates, authorizes and rate-limits, in that order, and adds the rate-limit
//!   headers to the response.
//!
//! With traces on, the edge opens the request's server span (continuing the client's
//! `traceparent`), and the guard its `authenticate` and `rate_limit` children; see
//! [`crate::telemetry`]. With traces off those spans are disabled and nothing is computed for them.

use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest, web};
use infergate_headers::SecurityHeaders;
use infergate_keystore::{KeyRecord, Verification};
use infergate_policy::{CredentialSource, RouteMatch, extract_credential, mask_secret};
use infergate_ratelimit::{BucketKey, Guarded, LimitCheck, LimitStatus};
use infergate_service::edge::{Admission, EdgeService};
use infergate_service::metrics::HttpMetrics;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::error::{GatewayError, rate_limit_headers};
use crate::plan::{Caller, Plan, plan};
use crate::state::AppState;
use crate::telemetry::SPAN_TARGET;

/// Per-request facts the edge establishes for everything after it.
#[derive(Clone, Debug)]
pub struct RequestCtx {
    pub request_id: Arc<str>,
    /// Index into the route table, when the path matched a route (with any method).
    pub route: Option<usize>,
    pub method_allowed: bool,
    /// The path decoded once ([`crate::path`]), when decoding changed it; routing and
    /// authorisation use [`RequestCtx::path`].
    pub decoded_path: Option<Arc<str>>,
    /// Peer, trusted chain and scheme, as judged once ([`crate::client_ip::Origin`]).
    pub origin: crate::client_ip::Origin,
}

impl RequestCtx {
    /// The matched route's template, or the one label of everything unmatched.
    pub fn template(&self, state: &AppState) -> Arc<str> {
        self.route.map_or_else(
            || state.unmatched_route.clone(),
            |i| state.routes.routes()[i].template.clone(),
        )
    }

    /// The decoded request path (the raw one when nothing in it was encoded).
    pub fn path<'a>(&'a self, raw: &'a str) -> &'a str {
        self.decoded_path.as_deref().unwrap_or(raw)
    }
}

/// The trace id the proxy sent upstream in the `traceparent` it made or passed on, when traces
/// are off: the access log names it so gateway and upstream logs can be joined.
#[derive(Clone, Debug)]
pub struct ForwardedTraceId(pub String);

/// The verified identity of a request, for handlers and the access log.
#[derive(Clone, Debug)]
pub struct AuthInfo {
    pub record: Arc<KeyRecord>,
    pub source: CredentialSource,
}

/// What the pipeline reads of a request before its body. The same checks run from the service
/// (a `ServiceRequest`) and from the `Expect: 100-continue` hook ([`crate::serve`]), which sees
/// only an `actix_http::Request`.
pub struct Head<'a> {
    pub method: &'a actix_web::http::Method,
    pub uri: &'a actix_web::http::Uri,
    pub headers: &'a header::HeaderMap,
    pub peer: Option<std::net::SocketAddr>,
    pub secure: bool,
    /// The connection cap this request's connection is over, if any.
    pub over: Option<crate::connections::Over>,
}

impl<'a> Head<'a> {
    fn of(req: &'a ServiceRequest) -> Self {
        Head {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            peer: req.peer_addr(),
            secure: req.app_config().secure(),
            over: req
                .conn_data::<crate::connections::ConnectionGuard>()
                .and_then(|g| g.over),
        }
    }

    fn path(&self) -> &'a str {
        self.uri.path()
    }
}

/// The pipeline's decision, made early by the `Expect: 100-continue` hook: the service then
/// proceeds with it instead of deciding again (which would charge the limits twice).
#[derive(Clone)]
pub struct PreDecided {
    auth: Option<AuthInfo>,
    rate: Option<LimitStatus>,
}

fn state_of(req: &ServiceRequest) -> Result<web::Data<AppState>, Error> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| actix_web::error::ErrorInternalServerError("application state missing"))
}

/// Checks that need no identity. Order matters: host before anything else, signatures last.
pub fn pre_checks(
    state: &AppState,
    req: &Head<'_>,
    ctx: &RequestCtx,
    path: Result<(), crate::path::PathError>,
) -> Result<(), GatewayError> {
    if let Some(over) = req.over {
        return Err(GatewayError::TooManyConnections {
            per_ip: over == crate::connections::Over::PerIp,
        });
    }
    // One Host (RFC 9112 §3.2: more than one is a 400), and with an absolute-form target its
    // authority is the host that counts (§3.2.2), so both must be trusted.
    let mut hosts = req.headers.get_all(header::HOST);
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::UntrustedHost);
    }
    let host_header = first.map(|h| h.to_str().map_err(|_| GatewayError::UntrustedHost));
    let host = match (host_header.transpose()?, req.uri.authority()) {
        (Some(h), Some(a)) => {
            if !state.hosts.allows(a.as_str()) {
                return Err(GatewayError::UntrustedHost);
            }
            h
        }
        (Some(h), None) => h,
        (None, Some(a)) => a.as_str(),
        (None, None) => "",
    };
    if !state.hosts.allows(host) {
        return Err(GatewayError::UntrustedHost);
    }
    if state.cfg.https_only && !ctx.origin.https {
        let location = state.cfg.https_redirect.then(|| {
            let pq = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
            format!("https://{host}{pq}")
        });
        return Err(GatewayError::HttpsRequired { location });
    }
    if let Some(len) = req
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        let template = ctx
            .route
            .map_or("", |i| &*state.routes.routes()[i].template);
        // An upload path's own limit (the OpenAI SDK sends uploads with a Content-Length).
        let limit = state.cfg.body_limits.limit(template, ctx.path(req.path()));
        if len > limit as u64 {
            return Err(GatewayError::PayloadTooLarge { limit });
        }
    }
    path.map_err(|e| GatewayError::SuspiciousInput {
        location: "path",
        category: e.category(),
    })?;
    if let Some(upgrade) = req.headers.get(header::UPGRADE) {
        // h2c is an offer a server may ignore (RFC 7540 §3.2); anything else would be a tunnel.
        let h2c = upgrade
            .to_str()
            .is_ok_and(|v| v.split(',').all(|t| t.trim().eq_ignore_ascii_case("h2c")));
        if !h2c {
            return Err(GatewayError::UpgradeNotAllowed);
        }
    }
    state.scanner.scan_path(ctx.path(req.uri.path()))?;
    if let Some(q) = req.uri.query() {
        state
            .scanner
            .scan_query(q, state.credential_rules.query_param.as_deref())?;
    }
    for (name, value) in req.headers {
        // Credentials are validated by authentication (and must never be echoed); cookies are
        // opaque to the gateway.
        if name == header::AUTHORIZATION || name == header::COOKIE || *name == state.api_key_header
        {
            continue;
        }
        state.scanner.scan_header(value.as_bytes())?;
    }
    Ok(())
}

/// The request id, the client address and the route of a request: what the edge establishes for
/// every stage after it. Also returns the path check's verdict (refused by [`pre_checks`]).
pub fn request_ctx(
    state: &AppState,
    req: &Head<'_>,
) -> (RequestCtx, Result<(), crate::path::PathError>) {
    let request_id = infergate_service::edge::request_id(req.headers);
    let raw_path = req.path();
    let (path_checked, decoded_path) = match crate::path::decode_path(raw_path) {
        Ok(std::borrow::Cow::Borrowed(_)) => (Ok(()), None),
        Ok(std::borrow::Cow::Owned(p)) => (Ok(()), Some(Arc::<str>::from(p))),
        Err(e) => (Err(e), None),
    };
    let lookup_path = decoded_path.as_deref().unwrap_or(raw_path);
    let position = |r: &infergate_policy::Route| {
        state
            .routes
            .routes()
            .iter()
            .position(|x| std::ptr::eq(x, r))
    };
    let (route, method_allowed) = match state.routes.lookup(req.method.as_str(), lookup_path) {
        RouteMatch::Found(r) => (position(r), true),
        RouteMatch::MethodNotAllowed(r) => (position(r), false),
        RouteMatch::NotFound => (None, false),
    };
    let origin = crate::client_ip::Origin::of(state, req.secure, req.peer, req.headers);
    let ctx = RequestCtx {
        request_id,
        origin,
        route,
        method_allowed,
        decoded_path,
    };
    (ctx, path_checked)
}

/// The gateway's side of the shared edge ([`infergate_service::edge`]): the request context
/// (route from the route table, client through trusted proxies), the screening of
/// [`pre_checks`], the caller's key id and the proxy's trace id for the access log.
impl EdgeService for AppState {
    type Error = GatewayError;
    /// The context, and the path check's verdict (refused by [`pre_checks`]); `None` when the
    /// `Expect: 100-continue` hook screened and decided the request already ([`crate::serve`]).
    type Ctx = (RequestCtx, Option<Result<(), crate::path::PathError>>);

    fn http_metrics(&self) -> &HttpMetrics {
        &self.metrics.http
    }

    fn security_headers(&self) -> Option<&SecurityHeaders> {
        self.security_headers.as_ref()
    }

    fn admit(&self, req: &ServiceRequest) -> Admission<Self::Ctx> {
        // A request that announced `Expect: 100-continue` was screened and decided by the hook
        // already: its context and decision travel with it.
        let early = req.extensions().get::<RequestCtx>().cloned();
        let (ctx, path_checked) = match early {
            Some(ctx) if req.extensions().contains::<PreDecided>() => (ctx, None),
            Some(ctx) => (ctx, Some(Ok(()))),
            None => {
                let (ctx, checked) = request_ctx(self, &Head::of(req));
                (ctx, Some(checked))
            }
        };
        Admission {
            request_id: ctx.request_id.clone(),
            template: ctx.route.map(|i| self.routes.routes()[i].template.clone()),
            client: ctx.origin.client,
            ctx: (ctx, path_checked),
        }
    }

    fn screen(
        &self,
        req: &ServiceRequest,
        (ctx, path_checked): Self::Ctx,
    ) -> Result<(), GatewayError> {
        let checked = match path_checked {
            Some(path) => pre_checks(self, &Head::of(req), &ctx, path),
            None => Ok(()),
        };
        req.extensions_mut().insert(ctx);
        checked
    }

    fn key_id(req: &HttpRequest) -> Option<Arc<str>> {
        req.extensions()
            .get::<AuthInfo>()
            .map(|a| a.record.id.clone())
    }

    fn forwarded_trace_id(req: &HttpRequest) -> Option<String> {
        req.extensions()
            .get::<ForwardedTraceId>()
            .map(|t| t.0.clone())
    }

    fn observe(&self, template: &str, elapsed: std::time::Duration, req: &HttpRequest) {
        self.metrics.observe_added(template, elapsed, req);
    }
}

/// What the guard decided for a request that may proceed.
#[derive(Default)]
pub struct Outcome {
    auth: Option<AuthInfo>,
    rate: Option<LimitStatus>,
}

impl Outcome {
    /// Kept for the service to proceed with (see [`PreDecided`]).
    pub fn into_pre_decided(self) -> PreDecided {
        PreDecided {
            auth: self.auth,
            rate: self.rate,
        }
    }
}

/// The span of one limiter call (a child of whatever span is current).
fn rate_limit_span(state: &AppState) -> Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        "rate_limit",
        infergate.ratelimit.backend = if state.resilient.is_some() { "redis" } else { "memory" },
        infergate.ratelimit.outcome = Empty,
    )
}

/// A 429 at WARN, sampled: a client hammering its limit costs the log a few lines a second, and
/// the next line written says how many were left out. Names the bucket (an IP or a key *id*).
fn log_rate_limited(state: &AppState, ctx: &RequestCtx, bucket: &BucketKey, status: &LimitStatus) {
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
async fn enforce(
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
async fn limit_guarded(
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

/// A refusal, with the limit the request was counted against, so refused requests that were
/// charged (401s against the IP budget, 404s) carry the rate-limit headers too.
pub struct Rejected {
    pub err: GatewayError,
    pub rate: Option<LimitStatus>,
}

impl From<GatewayError> for Rejected {
    fn from(err: GatewayError) -> Self {
        Rejected { err, rate: None }
    }
}

/// A failed authentication: counted by reason, and charged to the client IP's anonymous budget so
/// guessing keys is rate limited too. Returns the error to send (429 once the budget is gone).
async fn refuse(
    state: &AppState,
    ctx: &RequestCtx,
    reason: &'static str,
    err: GatewayError,
) -> Rejected {
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
}

/// Finds and verifies the request's credential (API key or JWT). Refusals are counted, logged at
/// WARN (with the key's prefix at most) and charged to the client IP's budget.
/// Returns the identity, and whether the IP's failed-auth budget is still to be checked (a key
/// the cache knew skipped that peek: the limit step folds it into its own call).
async fn authenticate(
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
                Ok(token) => infergate_tokens::identify(token, &state.verifier, now).await,
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

/// Everything decided before a request is served, top to bottom: route → credential →
/// permission → limits. The edge has accepted and screened it already; the route's server
/// ([`crate::dispatch`]) and the edge's decoration come after.
pub async fn decide(
    state: &AppState,
    req: &Head<'_>,
    ctx: &RequestCtx,
) -> Result<Outcome, Rejected> {
    let ip = ctx.origin.client;
    let route = match ctx.route {
        Some(i) if ctx.method_allowed => &state.routes.routes()[i],
        other => {
            // Unknown paths and methods still cost the caller, so scanning is rate limited.
            let rate = enforce(state, ctx, &plan(Caller::Refused, ip, &state.limits)).await?;
            let err = match other {
                Some(i) => GatewayError::MethodNotAllowed {
                    allow: state.routes.routes()[i].methods.join(", "),
                },
                None => GatewayError::NotFound,
            };
            return Err(Rejected { err, rate });
        }
    };

    if !state.cfg.auth.enabled || route.public {
        let rate = enforce(
            state,
            ctx,
            &plan(Caller::Anonymous { route }, ip, &state.limits),
        )
        .await?;
        return Ok(Outcome { auth: None, rate });
    }

    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "authenticate",
        infergate.auth.outcome = Empty,
        infergate.auth.source = Empty,
        infergate.key_id = Empty,
    );
    let auth = authenticate(state, req, ctx).instrument(span.clone()).await;
    if !span.is_disabled()
        && let Ok((auth, _)) = &auth
    {
        span.record("infergate.auth.outcome", "success");
        span.record("infergate.auth.source", auth.source.as_str());
        span.record("infergate.key_id", &*auth.record.id);
    }
    drop(span);
    let (AuthInfo { record, source }, ip_guard) = auth?;

    let authorised =
        state
            .cfg
            .auth
            .permissions
            .allows(record.role, req.method.as_str(), ctx.path(req.path()));
    if !authorised {
        state
            .metrics
            .auth_failures
            .with_label_values(&["forbidden"])
            .inc();
    }
    // A refused call still costs the key, so probing forbidden routes is rate limited too.
    let caller = Caller::Key {
        route,
        record: &record,
        ip_guard,
        authorised,
    };
    let rate = enforce(state, ctx, &plan(caller, ip, &state.limits)).await?;
    if !authorised {
        tracing::warn!(request_id = %ctx.request_id, key_id = %record.id, role = %record.role, route = %route.template, "forbidden");
        return Err(Rejected::from(GatewayError::Forbidden {
            role: record.role.as_str(),
        }));
    }
    Ok(Outcome {
        auth: Some(AuthInfo { record, source }),
        rate,
    })
}

pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let state = state_of(&req)?;
    let Some(ctx) = req.extensions().get::<RequestCtx>().cloned() else {
        return Ok(req.error_response(GatewayError::Internal("request context missing".into())));
    };
    let early = req
        .extensions_mut()
        .remove::<PreDecided>()
        .map(|p| Outcome {
            auth: p.auth,
            rate: p.rate,
        });
    let decided = match early {
        Some(outcome) => Ok(outcome),
        None => decide(&state, &Head::of(&req), &ctx).await,
    };
    match decided {
        Err(Rejected { err, rate }) => {
            let mut res = req.error_response(err);
            if let Some(status) = rate {
                rate_limit_headers(res.headers_mut(), &status, state.clock.now_millis());
            }
            Ok(res)
        }
        Ok(outcome) => {
            if let Some(auth) = outcome.auth {
                req.extensions_mut().insert(auth);
            }
            let mut res = next.call(req).await?.map_into_boxed_body();
            if let Some(status) = outcome.rate {
                rate_limit_headers(res.headers_mut(), &status, state.clock.now_millis());
            }
            Ok(res)
        }
    }
}
