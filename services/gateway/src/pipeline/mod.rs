//! The gateway's request pipeline, one stage per file, in the order a request meets them:
//!
//! ```text
//! accept ─▶ screen ─▶ (CORS) ─▶ authenticate ─▶ authorise ─▶ plan ─▶ limit ─▶ dispatch ─▶ decorate
//! ```
//!
//! - [`accept`] and [`screen`] run in the shared edge ([`edge`], [`infergate_service::edge`]),
//!   which also decorates every response on the way out (JSON errors, request id, security
//!   headers, metrics, access log).
//! - [`serve`], below, is the one service inside the edge, and the rest of a request's path read
//!   top to bottom: [`cors`] answers preflights before any credential is asked for (allowed
//!   origins `200`, any other `400`, one way whatever the configuration); [`decide`] picks the
//!   route, [`authenticate`]s, checks the role's permission ([`authorise`]), [`plan`]s (a pure
//!   function) and [`limit`]s; [`dispatch`] hands the request to what serves its route (a local
//!   handler or the proxy); the response gets its rate-limit and CORS headers. The
//!   `Expect: 100-continue` hook ([`crate::serve`]) runs the same [`decide`] before the body is
//!   sent.
//!
//! One service rather than a middleware per stage: each actix middleware layer boxes the future
//! of the layers inside it and moves the request through another `ServiceRequest`, and the
//! request context is taken out of the request once, here, instead of at every layer
//! (docs/performance.md).
//!
//! What a stage establishes travels in [`RequestCtx`]. With traces on, the edge opens the
//! request's server span and the stages their `authenticate` and `rate_limit` children; see
//! [`crate::telemetry`].

pub mod accept;
pub mod authenticate;
pub mod authorise;
pub mod cors;
pub mod dispatch;
pub mod edge;
pub mod limit;
pub mod plan;
pub mod screen;

pub use accept::request_ctx;
pub use screen::pre_checks;

use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::{Error, HttpMessage, HttpRequest, HttpResponse, web};
use infergate_keystore::KeyRecord;
use infergate_policy::CredentialSource;
use infergate_ratelimit::LimitStatus;

use self::authenticate::authenticate;
use self::authorise::{authorise, forbidden};
use self::limit::enforce;
use self::plan::{Caller, plan};
use crate::error::{GatewayError, rate_limit_headers};
use crate::state::AppState;

/// Per-request facts the stages establish, for everything after them. Not `Clone`: it is taken
/// and put back, never copied.
#[derive(Debug)]
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
    /// The verified identity, once [`decide`] has authenticated the request.
    pub auth: Option<AuthInfo>,
    /// The `Expect: 100-continue` hook's decision, for the service to proceed with. Boxed, as is
    /// `deferred`: both are rare, and the context is moved whole between stages.
    pub early: Option<Box<PreDecided>>,
    /// The request counts of a key with a token budget or concurrency cap, left for the proxy to
    /// decide with the token reservation and the slot in one limiter call
    /// ([`crate::metering::admit`]).
    pub deferred: Option<Box<plan::Plan>>,
    /// The trace id the proxy sent upstream in the `traceparent` it made or passed on, when
    /// traces are off: the access log names it so gateway and upstream logs can be joined.
    pub forwarded_trace_id: Option<String>,
    /// Time to the upstream's response headers, for the gateway-added latency metric.
    pub upstream_time: Option<std::time::Duration>,
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
    pub(crate) fn of(req: &'a HttpRequest) -> Self {
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
#[derive(Debug)]
pub struct PreDecided(Outcome);

/// What [`decide`] decided for a request that may proceed.
#[derive(Debug, Default)]
pub struct Outcome {
    auth: Option<AuthInfo>,
    rate: Option<LimitStatus>,
    deferred: Option<Box<plan::Plan>>,
}

impl Outcome {
    /// Kept for the service to proceed with (see [`PreDecided`]).
    pub fn into_pre_decided(self) -> Box<PreDecided> {
        Box::new(PreDecided(self))
    }
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

/// Everything decided before a request is served, top to bottom: route → credential →
/// permission → limits. The edge has accepted and screened it already; the route's server
/// ([`dispatch`]) and the edge's decoration come after.
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
        return Ok(Outcome {
            auth: None,
            rate,
            deferred: None,
        });
    }

    let (AuthInfo { record, source }, ip_guard) = authenticate(state, req, ctx).await?;
    let authorised = authorise(state, &record, req.method.as_str(), ctx.path(req.path()));
    // A refused call still costs the key, so probing forbidden routes is rate limited too.
    let caller = Caller::Key {
        route,
        record: &record,
        ip_guard,
        authorised,
    };
    let planned = plan(caller, ip, &state.limits);
    if authorised
        && route.serve == infergate_policy::Serve::Upstream
        && state.limits.budgets_route(&record, route)
    {
        // Counted with the token reservation and the slot, once the body is read.
        return Ok(Outcome {
            auth: Some(AuthInfo { record, source }),
            rate: None,
            deferred: Some(Box::new(planned)),
        });
    }
    // A request refused here never reaches `serve`'s count of the key's requests.
    let counted = |e: &GatewayError| {
        if let Some(usage) = &state.usage {
            let now = state.clock.now_millis();
            usage.request(&record.id, now);
            usage.refusal(&record.id, e, now);
        }
    };
    let rate = enforce(state, ctx, &planned).await.inspect_err(counted)?;
    if !authorised {
        let e = forbidden(ctx, &record, route);
        counted(&e);
        return Err(Rejected::from(e));
    }
    Ok(Outcome {
        auth: Some(AuthInfo { record, source }),
        rate,
        deferred: None,
    })
}

/// The one service inside the edge: CORS, then [`decide`], then the route's server
/// ([`dispatch`]), then the response's rate-limit and CORS headers. The edge has accepted and
/// screened the request and left its [`RequestCtx`] in the request's extensions; it is taken out
/// once for the whole path and put back for the edge's access log.
pub async fn serve(req: ServiceRequest) -> Result<ServiceResponse<BoxBody>, Error> {
    let (req, payload) = req.into_parts();
    // Borrowed from the app, not cloned: no shared counter touched per request.
    let (Some(state), Some(mut ctx)) = (
        req.app_data::<web::Data<AppState>>(),
        req.extensions_mut().remove::<RequestCtx>(),
    ) else {
        let err = GatewayError::Internal("application state or request context missing".into());
        return Ok(ServiceResponse::new(req, HttpResponse::from_error(err)));
    };
    let origin = req.headers().get(header::ORIGIN);
    let res = match cors::preflight(&state.cors, &req, origin) {
        Some(res) => res,
        None => {
            let mut res = admit_and_serve(state, &req, payload, &mut ctx).await;
            state.cors.decorate(origin, res.headers_mut());
            res
        }
    };
    req.extensions_mut().insert(ctx);
    Ok(ServiceResponse::new(req, res))
}

/// [`decide`] (or the `Expect: 100-continue` hook's decision), then the route's server; a
/// refusal or a failure becomes its error response (rendered by the edge), with the rate-limit
/// headers of the limit the request was counted against.
async fn admit_and_serve(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    payload: actix_web::dev::Payload,
    ctx: &mut RequestCtx,
) -> HttpResponse {
    let decided = match ctx.early.take() {
        Some(pre) => Ok(pre.0),
        None => decide(state, &Head::of(req), ctx).await,
    };
    let (mut res, rate) = match decided {
        Err(Rejected { err, rate }) => (HttpResponse::from_error(err), rate),
        Ok(outcome) => {
            if let (Some(usage), Some(auth)) = (&state.usage, &outcome.auth) {
                usage.request(&auth.record.id, state.clock.now_millis());
            }
            ctx.auth = outcome.auth;
            ctx.deferred = outcome.deferred;
            let res = dispatch::dispatch(req, payload, state, ctx)
                .await
                .unwrap_or_else(HttpResponse::from_error);
            (res, outcome.rate)
        }
    };
    if let Some(status) = rate {
        rate_limit_headers(res.headers_mut(), &status, state.clock.now_millis());
    }
    res
}
