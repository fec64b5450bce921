//! Building and running the gateway: [`Application::build`] binds the listener (port 0 works, for
//! tests) and returns a handle exposing the bound port; [`Application::run_until_stopped`] serves
//! until SIGTERM/SIGINT (or a [`ServerHandle`] stop), draining in-flight requests within the
//! configured bound.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use infergate_config::{ConfigError, GatewayConfig};
use infergate_ratelimit::SweeperGuard;

use crate::handlers;
use crate::keys;
use crate::middleware::{edge, guard};
use crate::proxy;
use crate::state::{AppState, Overrides};
use crate::tls;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    _sweeper: Option<SweeperGuard>,
    _keys: keys::KeyBackend,
    /// The internal, unauthenticated `/metrics` listener, when configured.
    metrics: Option<(u16, Server)>,
}

/// Registers the routes. Kept apart from the server so tests and benchmarks see the same app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(handlers::health))
        .route("/health", web::head().to(handlers::health))
        .route("/health/detailed", web::get().to(handlers::health_detailed))
        .route("/health/ready", web::get().to(handlers::ready))
        .route("/health/ready", web::head().to(handlers::ready))
        .route("/protected", web::get().to(handlers::protected))
        .route("/api/test", web::post().to(handlers::api_test))
        .route("/api/status", web::get().to(handlers::api_status))
        .route("/metrics", web::get().to(handlers::metrics))
        .route("/openapi.json", web::get().to(handlers::openapi))
        .route("/docs", web::get().to(handlers::docs))
        .route("/docs", web::head().to(handlers::docs))
        .route("/docs/{asset}", web::get().to(handlers::docs_asset))
        .route("/docs/{asset}", web::head().to(handlers::docs_asset))
        .route("/models", web::get().to(proxy::forward))
        .route("/models/load", web::post().to(proxy::forward))
        .route("/inference", web::post().to(proxy::forward))
        .route("/inference/batch", web::post().to(proxy::forward))
        .route("/v1/{tail:.*}", web::to(proxy::forward));
}

impl Application {
    pub async fn build(cfg: GatewayConfig) -> Result<Self, StartupError> {
        Self::build_with(cfg, Overrides::default()).await
    }

    /// Builds the app; must run inside the runtime that will serve it (background tasks that
    /// follow the key store's change feed are spawned on it).
    pub async fn build_with(
        cfg: GatewayConfig,
        mut overrides: Overrides,
    ) -> Result<Self, StartupError> {
        let tls = match &cfg.tls {
            Some(t) => Some(tls::server_config(t)?),
            None => None,
        };
        let backend = match overrides.key_store.take() {
            Some(store) => keys::KeyBackend {
                store: Some(store),
                ..Default::default()
            },
            None => keys::open(&cfg).await?,
        };
        let legacy = keys::legacy_keys(&cfg, &backend)?;
        if overrides.shared_limiter.is_none()
            && cfg.rate_limit.storage == infergate_config::Storage::Redis
        {
            overrides.shared_limiter =
                Some(open_redis_limiter(&cfg, overrides.clock.clone()).await?);
        }
        overrides.key_store = backend.store.clone();
        let reload_cfg = cfg.clone();
        let state = web::Data::new(AppState::build(cfg, overrides, legacy)?);
        state.verifier.spawn_invalidator();
        if let Some(file) = &backend.file {
            keys::spawn_legacy_reloader(reload_cfg, file.clone(), state.verifier.clone());
        }
        let sweeper = state
            .memory_limiter
            .spawn_sweeper(state.cfg.rate_limit.sweep_interval)
            .map_err(|e| StartupError::Bind {
                addr: "rate-limit sweeper thread".into(),
                source: e,
            })?;
        let listener =
            TcpListener::bind(state.cfg.listen).map_err(|source| StartupError::Bind {
                addr: state.cfg.listen.to_string(),
                source,
            })?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let cfg = &state.cfg;
        let workers = if cfg.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            cfg.workers
        };
        let app_state = state.clone();
        let default_limit = cfg.body_limits.default_bytes;
        // actix pauses accepting past this many per worker; the tracker refuses (with an answer)
        // well before, so this only backs it up.
        let per_worker_backstop = (cfg.connections.max_total / workers + 64).max(256);
        let app = move || {
            let st = app_state.clone();
            // Without configured origins no browser may call cross-origin, so the CORS layer (and
            // the headers it adds to every response) is left out entirely.
            let cors_enabled = !st.cfg.cors.origins.is_empty();
            let client = web::Data::new(proxy::client(&st));
            let cors = infergate_headers::cors(
                &st.cfg.cors.origins,
                st.cfg.cors.allow_credentials,
                st.cfg.cors.max_age_seconds,
            );
            App::new()
                .app_data(st)
                .app_data(client)
                .app_data(web::PayloadConfig::new(default_limit))
                .configure(configure)
                .default_service(web::to(handlers::not_found))
                .wrap(from_fn(guard))
                .wrap(actix_web::middleware::Condition::new(cors_enabled, cors))
                .wrap(from_fn(edge))
        };
        let server = crate::serve::server(
            state.clone(),
            listener,
            tls,
            crate::serve::ServeConfig {
                workers,
                shutdown_timeout: cfg.shutdown_timeout,
                max_connections_per_worker: per_worker_backstop,
            },
            app,
        )
        .map_err(|source| StartupError::Bind {
            addr: cfg.listen.to_string(),
            source,
        })?;
        let metrics = match state.cfg.metrics_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr).map_err(|source| StartupError::Bind {
                    addr: addr.to_string(),
                    source,
                })?;
                let mport = listener.local_addr().map(|a| a.port()).unwrap_or(0);
                let st = state.clone();
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(st.clone())
                        .route("/metrics", web::get().to(handlers::metrics))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1)
                .listen(listener)
                .map_err(|source| StartupError::Bind {
                    addr: addr.to_string(),
                    source,
                })?
                .run();
                Some((mport, server))
            }
            None => None,
        };
        Ok(Self {
            port,
            server,
            state,
            _sweeper: Some(sweeper),
            _keys: backend,
            metrics,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone().into_inner()
    }

    /// Serves until stopped (by a [`ServerHandle`], e.g. from [`install_signal_handlers`]).
    /// The internal `/metrics` port, when `metrics.listen` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(p, _)| *p)
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let metrics = self.metrics.map(|(_, server)| {
            let handle = server.handle();
            actix_web::rt::spawn(server);
            handle
        });
        let result = self.server.await;
        if let Some(h) = metrics {
            h.stop(true).await;
        }
        drop(self._sweeper);
        result
    }
}

/// Connects the shared Redis limiter. Unreachable Redis at startup is not fatal: the breaker and
/// the failure mode handle it like any later outage.
async fn open_redis_limiter(
    cfg: &GatewayConfig,
    clock: Option<Arc<dyn infergate_ratelimit::Clock>>,
) -> Result<Arc<dyn infergate_ratelimit::RateLimiter>, StartupError> {
    use infergate_ratelimit::redis::{RedisLimiter, RedisLimiterConfig};
    let rl = &cfg.rate_limit;
    let url = rl
        .redis_url
        .as_ref()
        .map(|u| u.expose().to_string())
        .unwrap_or_default();
    let limiter = RedisLimiter::connect(
        &url,
        RedisLimiterConfig {
            prefix: rl.redis_prefix.clone(),
            timeout: rl.redis_timeout,
            pool_size: rl.redis_pool_size,
            clock,
            ..RedisLimiterConfig::default()
        },
    )
    .await
    .map_err(|e| {
        StartupError::Config(infergate_config::ConfigError::invalid(
            cfg.setting_name("rate_limit.redis_url"),
            rl.redis_url
                .as_ref()
                .map(|u| u.masked())
                .unwrap_or_default(),
            format!("a reachable redis:// or rediss:// URL ({e})"),
        ))
    })?;
    Ok(Arc::new(limiter))
}

/// SIGTERM and SIGINT both start a graceful drain (actix's own handling treats SIGINT as a hard
/// stop, which loses in-flight requests). The handlers are registered before this returns, so a
/// signal sent as soon as the server reports ready is never missed.
pub fn install_signal_handlers(handle: ServerHandle, state: Arc<AppState>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    actix_web::rt::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("shutdown signal received; draining in-flight requests");
        state
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        handle.stop(true).await;
    });
    Ok(())
}
