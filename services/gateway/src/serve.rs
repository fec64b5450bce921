//! The gateway's HTTP server, assembled from actix-server and actix-http directly rather than
//! through actix-web's `HttpServer`, for one reason: `HttpServer` gives no say over
//! `Expect: 100-continue`, and answers `100 Continue` as soon as the headers are read. Here the
//! expect hook ([`expect`]) runs every check that needs no body — the edge's screening and the
//! guard's authentication, authorisation and rate limits — *before* the client is told to send
//! it. A refused request gets its final status instead of `100`, and never uploads a body only to
//! be refused; an admitted one carries its context and decision into the service, which proceeds
//! with them instead of deciding (and charging the limits) again.
//!
//! Everything else matches what `HttpServer` configures: the same timeouts and keep-alive, the
//! graceful-shutdown signal that closes idle keep-alive connections while draining, the
//! per-connection hook, and the `AppConfig` (TLS or not, host, address) handlers read.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use actix_http::{HttpMessage, HttpService, Request, Response};
use actix_service::{IntoServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_web::body::BoxBody;
use actix_web::dev::{AppConfig, Server};
use actix_web::http::header::{self, HeaderValue};
use actix_web::{ResponseError, web};

use crate::error::{GatewayError, rate_limit_headers};
use crate::pipeline::{Head, Rejected, decide, pre_checks, request_ctx};
use crate::state::AppState;
use infergate_service::error::render;

/// The server's knobs, as `HttpServer` would have been given them.
pub struct ServeConfig {
    pub workers: usize,
    pub shutdown_timeout: Duration,
    /// Per-worker cap at which accepting pauses (a backstop behind the connection tracker).
    pub max_connections_per_worker: usize,
}

/// Decides a request that announced `Expect: 100-continue` before its body is sent.
async fn expect(
    state: web::Data<AppState>,
    secure: bool,
    req: Request,
) -> Result<Request, Response<BoxBody>> {
    let start = Instant::now();
    let over = req
        .conn_data::<crate::connections::ConnectionGuard>()
        .and_then(|g| g.over);
    let (mut ctx, verdict) = {
        let head = req.head();
        let view = Head {
            method: &head.method,
            uri: &head.uri,
            headers: &head.headers,
            peer: req.peer_addr(),
            secure,
            over,
        };
        let (ctx, path) = request_ctx(&state, &view);
        let verdict = match pre_checks(&state, &view, &ctx, path) {
            Err(err) => Err(Rejected { err, rate: None }),
            Ok(()) => decide(&state, &view, &ctx).await,
        };
        (ctx, verdict)
    };
    match verdict {
        Ok(outcome) => {
            ctx.early = Some(outcome.into_pre_decided());
            req.extensions_mut().insert(ctx);
            Ok(req)
        }
        Err(Rejected { err, rate }) => Err(refusal(&state, &req, &ctx, &err, rate, start)),
    }
}

/// The final answer to a request refused before its body: the same JSON error, request id,
/// security and rate-limit headers the edge would have added, counted and logged as the edge
/// does for any request.
fn refusal(
    state: &AppState,
    req: &Request,
    ctx: &crate::pipeline::RequestCtx,
    err: &GatewayError,
    rate: Option<infergate_ratelimit::LimitStatus>,
    start: Instant,
) -> Response<BoxBody> {
    let mut res = err.error_response();
    let status = res.status();
    let body = render(err, Some(&ctx.request_id));
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.remove(header::CONTENT_LENGTH);
    if let Some(status) = rate {
        rate_limit_headers(headers, &status, state.clock.now_millis());
    }
    let template = ctx.template(state);
    let elapsed = start.elapsed();
    infergate_service::edge::stamp(
        state.security_headers.as_ref(),
        headers,
        &ctx.request_id,
        &template,
        elapsed,
    );
    let method = &req.head().method;
    let client = infergate_telemetry::ip::text(ctx.origin.client);
    state
        .metrics
        .http
        .observe(&template, method, status, elapsed);
    tracing::info!(
        request_id = %ctx.request_id,
        trace_id = "-",
        method = %method,
        route = %template,
        status = status.as_u16(),
        duration_ms = infergate_telemetry::log_millis(elapsed),
        client_ip = client.as_str(),
        key_id = "-",
        expect = "100-continue",
        "request"
    );
    let res: actix_web::HttpResponse = res.set_body(BoxBody::new(body));
    res.into()
}

/// Builds the main server on `listener`, plain or TLS, serving the app `configure` builds.
pub fn server<F, A>(
    state: web::Data<AppState>,
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
    cfg: ServeConfig,
    app: F,
) -> std::io::Result<Server>
where
    F: Fn() -> actix_web::App<A> + Send + Clone + 'static,
    A: actix_service::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<BoxBody>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
{
    let addr: SocketAddr = listener.local_addr()?;
    let mut builder = Server::build()
        .workers(cfg.workers)
        .max_concurrent_connections(cfg.max_connections_per_worker)
        .shutdown_timeout(cfg.shutdown_timeout.as_secs())
        .disable_signals();
    let shutdown = builder.graceful_shutdown_signal();
    let secure = tls.is_some();
    let host = addr.to_string();

    // One service definition for both listeners; only the final transport differs.
    macro_rules! http_service {
        () => {{
            let st = state.clone();
            let tracker = state.connections.clone();
            let host = host.clone();
            let signal = shutdown.clone();
            HttpService::build()
                .graceful_shutdown_signal(move || {
                    let signal = signal.clone();
                    async move { signal.notified().await }
                })
                .keep_alive(actix_http::KeepAlive::default())
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                .h1_allow_half_closed(true)
                .local_addr(addr)
                .on_connect_ext(move |io: &_, ext: &mut actix_http::Extensions| {
                    ext.insert(tracker.open(crate::connections::peer_of(io as &dyn std::any::Any)));
                })
                .expect(fn_service(move |req: Request| {
                    expect(st.clone(), secure, req)
                }))
                .finish(map_config(
                    app()
                        .into_factory()
                        .map_err(|err: actix_web::Error| err.error_response()),
                    move |_| AppConfig::__priv_test_new(secure, host.clone(), addr),
                ))
        }};
    }

    builder = match tls {
        Some(tls) => builder.listen("infergate-https", listener, move || {
            http_service!().rustls_0_23(tls.clone())
        })?,
        None => builder.listen("infergate-http", listener, move || http_service!().tcp())?,
    };
    Ok(builder.run())
}
