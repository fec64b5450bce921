//! Building and running the gateway: [`Application::build`] binds the listener (port 0 works, for
//! tests) and returns a handle exposing the bound port; [`Application::run_until`] serves until
//! the shutdown future resolves (or a [`ServerHandle`] stop), draining in-flight requests within
//! the configured bound ([`infergate_service::run`]).

use std::future::Future;
use std::sync::Arc;

use actix_service::fn_service;
use actix_web::body::BoxBody;
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use infergate_config::{ConfigError, GatewayConfig};
use infergate_keystore::OpenedStore;
use infergate_ratelimit::SweeperGuard;

use crate::handlers;
use crate::keys;
use crate::proxy;
use crate::state::{AppState, Overrides};
use crate::tls;
use infergate_service::edge::edge;
use infergate_service::run::{BindError, Drains, Served, bind, workers};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

pub struct Application {
    served: Served<AppState>,
    _sweeper: Option<SweeperGuard>,
    /// Flushes key usage to the store every few seconds ([`crate::usage`]); aborted, then
    /// followed by one last flush, when the server stops.
    usage_flusher: Option<tokio::task::JoinHandle<()>>,
    _keys: OpenedStore,
    /// The internal, unauthenticated `/metrics` listener, when configured.
    metrics: Option<(u16, Server)>,
}

/// What `check-config` found, once every check passed.
#[derive(Debug)]
pub struct Checked {
    pub static_keys: usize,
    /// Hashed keys in the file store, when that is the backend.
    pub hashed_keys: Option<usize>,
    pub warnings: Vec<String>,
}

impl Application {
    /// `check-config`: the checks [`Application::build_with`] makes, by the same functions (TLS
    /// material, the static keys, [`AppState::build`]), short of connecting to Redis, spawning
    /// or binding. Runs outside any runtime.
    pub fn check(cfg: &GatewayConfig) -> Result<Checked, StartupError> {
        if let Some(t) = &cfg.tls {
            tls::server_config(t)?;
        }
        let file = keys::open_file(cfg)?;
        let (legacy, warnings) = keys::legacy_keys(cfg, file.as_ref())?;
        let static_keys = legacy.len();
        AppState::build(cfg.clone(), Overrides::default(), legacy)?;
        Ok(Checked {
            static_keys,
            hashed_keys: file.map(|f| f.hashed_count()),
            warnings,
        })
    }

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
            Some(store) => OpenedStore {
                store,
                file: None,
                watch: None,
            },
            None => keys::open(&cfg).await?,
        };
        let (legacy, warnings) = keys::legacy_keys(&cfg, backend.file.as_deref())?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        if overrides.shared_limiter.is_none()
            && cfg.rate_limit.storage == infergate_config::Storage::Redis
        {
            overrides.shared_limiter =
                Some(open_redis_limiter(&cfg, overrides.clock.clone()).await?);
        }
        overrides.key_store = Some(backend.store.clone());
        let reload_cfg = cfg.clone();
        let state = web::Data::new(AppState::build(cfg, overrides, legacy)?);
        state.verifier.spawn_invalidator();
        if let Some(file) = &backend.file {
            keys::spawn_legacy_reloader(reload_cfg, file.clone(), state.verifier.clone());
        }
        let sweeper = state
            .memory_limiter
            .spawn_sweeper(state.cfg.rate_limit.sweep_interval)
            .map_err(|source| BindError {
                addr: "rate-limit sweeper thread".into(),
                source,
            })?;
        let (listener, port) = bind(state.cfg.listen)?;
        let cfg = &state.cfg;
        let workers = workers(cfg.workers);
        let app_state = state.clone();
        // actix pauses accepting past this many per worker; the tracker refuses (with an answer)
        // well before, so this only backs it up.
        let per_worker_backstop = (cfg.connections.max_total / workers + 64).max(256);
        let app = move || service(app_state.clone());
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
        .map_err(|source| BindError {
            addr: cfg.listen.to_string(),
            source,
        })?;
        let metrics = match state.cfg.metrics_listen {
            Some(addr) => {
                let (listener, mport) = bind(addr)?;
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
                .map_err(|source| BindError {
                    addr: addr.to_string(),
                    source,
                })?
                .run();
                Some((mport, server))
            }
            None => None,
        };
        let usage_flusher = match (&state.usage, state.verifier.store()) {
            (Some(recorder), Some(store)) => {
                Some(crate::usage::spawn_flusher(recorder.clone(), store.clone()))
            }
            _ => None,
        };
        Ok(Self {
            served: Served::new(port, server, state),
            usage_flusher,
            _sweeper: Some(sweeper),
            _keys: backend,
            metrics,
        })
    }

    /// The bound server: its port, a stop handle and the state.
    pub fn served(&self) -> &Served<AppState> {
        &self.served
    }

    /// The internal `/metrics` port, when `metrics.listen` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(p, _)| *p)
    }

    /// Serves until `shutdown` resolves (main passes [`infergate_service::run::shutdown_signal`]),
    /// then drains: readiness answers 503 and in-flight requests finish within the bound.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let metrics = self.metrics.map(|(_, server)| {
            let handle = server.handle();
            actix_web::rt::spawn(server);
            handle
        });
        let state = self.served.state();
        let result = self.served.run_until(shutdown).await;
        if let Some(h) = metrics {
            h.stop(true).await;
        }
        if let Some(f) = self.usage_flusher {
            f.abort();
        }
        // Settlements spawned by the last responses may still count tokens; what they count
        // after this flush is lost with the process (docs/keys.md, "Usage").
        if let (Some(recorder), Some(store)) = (&state.usage, state.verifier.store()) {
            recorder.flush(&**store).await;
        }
        drop(self._sweeper);
        result
    }
}

/// The gateway as an actix `App`: the state, the one service ([`serve`]: CORS, the decision,
/// the route table's dispatch) and around it the edge. The server builds one per worker; the
/// pipeline benchmark (`benches/pipeline.rs`) drives one without sockets.
///
/// [`serve`]: crate::pipeline::serve
pub fn service(
    st: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let pool = web::Data::new(proxy::pool(&st));
    App::new()
        .app_data(st)
        .app_data(pool)
        .app_data(handlers::DOCS)
        // No actix routes: the route table is the only list ([`crate::pipeline::dispatch`]).
        .default_service(fn_service(crate::pipeline::serve))
        .wrap(from_fn(edge::<AppState>))
}

/// Connects the shared Redis limiter. Unreachable Redis at startup is not fatal: the breaker and
/// the failure mode handle it like any later outage.
async fn open_redis_limiter(
    cfg: &GatewayConfig,
    clock: Option<Arc<dyn infergate_ratelimit::Clock>>,
) -> Result<Arc<dyn infergate_ratelimit::RateLimiter>, StartupError> {
    use infergate_ratelimit::redis::{Layout, RedisLimiter, RedisLimiterConfig, SpawnDriver};
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
            spawn_driver: Some(SpawnDriver(Arc::new(spawn_in_local_set))),
            layout: match rl.redis_layout {
                infergate_config::RedisLayout::Counters => Layout::Counters,
                infergate_config::RedisLayout::Hashes => Layout::Hashes,
            },
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

/// Runs a Redis connection's driver in the calling worker's `LocalSet`, with the request tasks
/// it wakes: from outside the set every batch of replies would cost the worker an `eventfd`
/// write and an extra `epoll_wait`. Actix's arbiter spawns it there even when the connection was
/// made by a task outside the set (a settlement, a lease renewal).
fn spawn_in_local_set(driver: infergate_ratelimit::redis::DriverTask) {
    match actix_rt::Arbiter::try_current() {
        Some(arbiter) => {
            // False only while the worker stops; the connection's calls then fail like any
            // broken connection's.
            let _ = arbiter.spawn(driver);
        }
        None => {
            tokio::spawn(driver);
        }
    }
}

impl Drains for AppState {
    fn drain(&self) -> &infergate_service::run::Drain {
        &self.drain
    }
}
