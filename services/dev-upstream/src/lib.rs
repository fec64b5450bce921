//! `infergate-dev-upstream`: a deterministic, OpenAI-compatible model server for developing and
//! testing the infergate gateway.
//!
//! It backs `make run`, the gateway's integration tests, demos and benchmarks. The "model" echoes
//! its input (`"echo: <prompt>"`), so every response is a pure function of the request (only
//! `created` timestamps vary), while still behaving like a real inference API: SSE streaming with
//! a real delay between chunks, configurable latency, embeddings, and a `/debug/request` route
//! that reports exactly what the gateway forwarded.
//!
//! Per-request controls, honoured on every route:
//! - `X-Dev-Delay-Ms: N` (0..=60000) delays the response by N extra milliseconds;
//! - `X-Dev-Status: NNN` (200..=599) replaces the response with that status and a JSON error.
//!
//! Tests run it in-process:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use infergate_dev_upstream::{DevUpstream, UpstreamConfig};
//! let upstream = DevUpstream::start("127.0.0.1:0", UpstreamConfig::default())?;
//! let health = format!("{}/health", upstream.base_url());
//! # let _ = health;
//! upstream.handle().stop(true).await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod error;
mod fields;
mod routes;
mod text;

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use actix_web::{
    App, HttpServer,
    dev::{Server, ServerHandle},
    middleware::from_fn,
    web,
};

/// Behaviour knobs for a [`DevUpstream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Added before every response (including errors and 404s).
    pub latency: Duration,
    /// Pause between consecutive SSE chunks of a streamed completion.
    pub token_delay: Duration,
    /// Models reported as loaded; the first one is used when a request names none.
    pub models: Vec<String>,
    /// Actix worker threads; 0 is treated as 1.
    pub workers: usize,
}

impl Default for UpstreamConfig {
    /// No latency and no token delay, so in-process tests run fast; the binary defaults to a
    /// 20 ms token delay instead, which makes streaming visible in demos.
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            token_delay: Duration::ZERO,
            models: vec!["echo-1".to_owned(), "echo-large".to_owned()],
            workers: 1,
        }
    }
}

/// State shared by all workers (one instance behind an `Arc`, so `/models/load` is visible
/// regardless of which worker serves the next request).
pub(crate) struct AppState {
    latency: Duration,
    token_delay: Duration,
    models: Mutex<Vec<String>>,
    observed: Arc<Observed>,
}

/// What a test can read of a running dev upstream.
#[derive(Debug, Default)]
pub struct Observed {
    /// Connections accepted so far.
    pub connections: AtomicU64,
    /// Streams whose client went away before the last event.
    pub cancelled_streams: AtomicU64,
}

impl AppState {
    fn new(cfg: &UpstreamConfig, observed: Arc<Observed>) -> Self {
        Self {
            latency: cfg.latency,
            token_delay: cfg.token_delay,
            models: Mutex::new(cfg.models.clone()),
            observed,
        }
    }

    fn lock_models(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        // The list is always left consistent (single push), so a panic elsewhere while holding
        // the lock does not make its contents untrustworthy.
        self.models
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn models(&self) -> Vec<String> {
        self.lock_models().clone()
    }

    pub(crate) fn default_model(&self) -> String {
        self.lock_models()
            .first()
            .cloned()
            .unwrap_or_else(|| "echo-1".to_owned())
    }

    pub(crate) fn load(&self, model: &str) {
        let mut models = self.lock_models();
        if !models.iter().any(|m| m == model) {
            models.push(model.to_owned());
        }
    }
}

/// Builds the server on an already-bound listener without starting it: `await` the returned
/// future (or spawn it) to serve. OS signal handling is disabled so that embedding it never
/// hijacks the host process's Ctrl-C; the binary installs its own handler and calls
/// [`ServerHandle::stop`]. `shutdown_timeout` bounds how long a graceful stop waits for
/// in-flight requests (e.g. long streams).
pub fn build_server(
    listener: TcpListener,
    cfg: &UpstreamConfig,
    shutdown_timeout: Duration,
) -> io::Result<Server> {
    build_counting_server(listener, cfg, shutdown_timeout, Arc::default())
}

/// [`build_server`], counting into `observed` every connection accepted (tests check that a
/// proxy reuses its upstream connections) and every stream cancelled.
pub fn build_counting_server(
    listener: TcpListener,
    cfg: &UpstreamConfig,
    shutdown_timeout: Duration,
    observed: Arc<Observed>,
) -> io::Result<Server> {
    let state = web::Data::new(AppState::new(cfg, observed.clone()));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(fields::MAX_BODY_BYTES))
            .app_data(web::JsonConfig::default().limit(fields::MAX_BODY_BYTES))
            .wrap(from_fn(routes::dev_controls))
            .configure(routes::configure)
            .default_service(web::to(routes::not_found))
    })
    .on_connect(move |_, _| {
        observed.connections.fetch_add(1, Ordering::Relaxed);
    })
    .workers(cfg.workers.max(1))
    .disable_signals()
    .shutdown_timeout(shutdown_timeout.as_secs())
    .listen(listener)?
    .run();
    Ok(server)
}

/// A dev upstream serving in the background of the current tokio / actix runtime.
#[derive(Clone)]
pub struct DevUpstream {
    addr: SocketAddr,
    handle: ServerHandle,
    observed: Arc<Observed>,
}

impl std::fmt::Debug for DevUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevUpstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl DevUpstream {
    /// Binds `addr` (e.g. `"127.0.0.1:0"`) and starts serving in the background of the current
    /// runtime, so it works inside `#[actix_web::test]` and `#[tokio::test]` alike.
    ///
    /// Fails (rather than panicking) when called outside a tokio runtime.
    pub fn start(addr: &str, cfg: UpstreamConfig) -> io::Result<DevUpstream> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            io::Error::other(format!("DevUpstream::start needs a tokio runtime: {e}"))
        })?;
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        // Tests stop the upstream to provoke 502s; a short drain keeps `stop(true)` from hanging
        // on the gateway's idle keep-alive connections.
        let observed = Arc::new(Observed::default());
        let server =
            build_counting_server(listener, &cfg, Duration::from_secs(1), observed.clone())?;
        let handle = server.handle();
        runtime.spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "dev upstream stopped with an error");
            }
        });
        Ok(DevUpstream {
            addr,
            handle,
            observed,
        })
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.observed.connections.load(Ordering::Relaxed)
    }

    /// Streams cancelled so far (their client hung up before the end).
    pub fn cancelled_streams(&self) -> u64 {
        self.observed.cancelled_streams.load(Ordering::Relaxed)
    }

    /// The bound port (useful after binding port 0).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The bound socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`, with a wildcard bind address replaced by loopback so it is directly
    /// usable as a client URL.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// `base_url()` joined with `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Handle for stopping the server, e.g. `upstream.handle().stop(false).await`.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }
}
