//! Building and running the service: [`Application::build`] opens the key store, settles the
//! admin credential ([`crate::bootstrap`]), binds the listener (port 0 works, for tests) and
//! returns a handle exposing the bound port; [`Application::run_until_stopped`] serves until
//! SIGTERM/SIGINT (or a [`ServerHandle`] stop), draining in-flight requests within the bound.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use infergate_config::{AdminConfig, ConfigError};
use infergate_keystore::{GeneratedKey, KeyStore, WatchGuard};

use crate::bootstrap::{self, BootstrapError};
use crate::error::AdminError;
use crate::middleware::edge;
use crate::state::AppState;
use crate::{handlers, keys, store, tokens};

/// Largest request body accepted (metadata is capped at 16 KiB; the rest is small).
pub const BODY_LIMIT: usize = 64 * 1024;

/// Every route and its methods: what [`configure`] registers and `static/openapi.json`
/// describes (a test keeps the two equal).
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/health", &["GET", "HEAD"]),
    ("/health/ready", &["GET", "HEAD"]),
    ("/metrics", &["GET"]),
    ("/openapi.json", &["GET"]),
    ("/docs", &["GET", "HEAD"]),
    ("/docs/{asset}", &["GET", "HEAD"]),
    ("/v1/keys", &["GET", "POST"]),
    ("/v1/keys/{id}", &["GET", "PATCH", "DELETE"]),
    ("/v1/keys/{id}/revoke", &["POST"]),
    ("/v1/keys/{id}/rotate", &["POST"]),
    ("/v1/tokens", &["POST"]),
    ("/v1/audit", &["GET"]),
];

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the key store: {0}")]
    Store(String),
    #[error("{0}")]
    Bootstrap(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<BootstrapError> for StartupError {
    fn from(e: BootstrapError) -> Self {
        match e {
            BootstrapError::Config(c) => StartupError::Config(c),
            BootstrapError::Store(s) => StartupError::Bootstrap(format!("bootstrap: {s}")),
        }
    }
}

/// Things tests may replace.
#[derive(Default)]
pub struct Overrides {
    /// Use this store instead of opening the configured one.
    pub store: Option<Arc<dyn KeyStore>>,
}

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    bootstrap_key: Option<GeneratedKey>,
    _watch: Option<WatchGuard>,
    _invalidator: Option<tokio::task::JoinHandle<()>>,
}

fn method_not_allowed(allow: &'static [&'static str]) -> actix_web::Route {
    web::to(move || async move {
        Err::<HttpResponse, _>(AdminError::MethodNotAllowed {
            allow: allow.join(", "),
        })
    })
}

/// Registers the routes, each path with a JSON 405 for other methods.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let allow = |path: &str| {
        ROUTES
            .iter()
            .find(|(p, _)| *p == path)
            .map_or(&[][..], |(_, m)| *m)
    };
    cfg.service(
        web::resource("/health")
            .route(web::get().to(handlers::health))
            .route(web::head().to(handlers::health))
            .default_service(method_not_allowed(allow("/health"))),
    )
    .service(
        web::resource("/health/ready")
            .route(web::get().to(handlers::ready))
            .route(web::head().to(handlers::ready))
            .default_service(method_not_allowed(allow("/health/ready"))),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(handlers::metrics))
            .default_service(method_not_allowed(allow("/metrics"))),
    )
    .service(
        web::resource("/openapi.json")
            .route(web::get().to(handlers::openapi))
            .default_service(method_not_allowed(allow("/openapi.json"))),
    )
    .service(
        web::resource("/docs")
            .route(web::get().to(handlers::docs))
            .route(web::head().to(handlers::docs))
            .default_service(method_not_allowed(allow("/docs"))),
    )
    .service(
        web::resource("/docs/{asset}")
            .route(web::get().to(handlers::docs_asset))
            .route(web::head().to(handlers::docs_asset))
            .default_service(method_not_allowed(allow("/docs/{asset}"))),
    )
    .service(
        web::resource("/v1/keys")
            .route(web::get().to(keys::list))
            .route(web::post().to(keys::create))
            .default_service(method_not_allowed(allow("/v1/keys"))),
    )
    .service(
        web::resource("/v1/keys/{id}")
            .route(web::get().to(keys::get))
            .route(web::patch().to(keys::update))
            .route(web::delete().to(keys::delete))
            .default_service(method_not_allowed(allow("/v1/keys/{id}"))),
    )
    .service(
        web::resource("/v1/keys/{id}/revoke")
            .route(web::post().to(keys::revoke))
            .default_service(method_not_allowed(allow("/v1/keys/{id}/revoke"))),
    )
    .service(
        web::resource("/v1/keys/{id}/rotate")
            .route(web::post().to(keys::rotate))
            .default_service(method_not_allowed(allow("/v1/keys/{id}/rotate"))),
    )
    .service(
        web::resource("/v1/tokens")
            .route(web::post().to(tokens::issue))
            .default_service(method_not_allowed(allow("/v1/tokens"))),
    )
    .service(
        web::resource("/v1/audit")
            .route(web::get().to(handlers::audit))
            .default_service(method_not_allowed(allow("/v1/audit"))),
    );
}

impl Application {
    /// Opens the configured store and builds the service. Must run inside the actix system
    /// (the change-feed follower and the file watcher are started here).
    pub async fn build(cfg: AdminConfig) -> Result<Self, StartupError> {
        Self::build_with(cfg, Overrides::default()).await
    }

    pub async fn build_with(cfg: AdminConfig, overrides: Overrides) -> Result<Self, StartupError> {
        let (store, watch) = match overrides.store {
            Some(s) => (s, None),
            None => {
                let opened = store::open(&cfg.key_store, true)
                    .await
                    .map_err(|e| StartupError::Store(e.to_string()))?;
                (opened.store, opened.watch)
            }
        };
        let state = web::Data::new(AppState::build(cfg, store)?);
        let bootstrap_key = bootstrap::run(&state).await?;
        let invalidator = state.verifier.spawn_invalidator();

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
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(web::PayloadConfig::new(BODY_LIMIT))
                .configure(configure)
                .default_service(web::to(handlers::not_found))
                .wrap(from_fn(edge))
        })
        .workers(workers)
        .shutdown_timeout(cfg.shutdown_timeout.as_secs())
        .disable_signals()
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: cfg.listen.to_string(),
            source,
        })?
        .run();
        Ok(Self {
            port,
            server,
            state,
            bootstrap_key,
            _watch: watch,
            _invalidator: invalidator,
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

    /// The admin key minted by the bootstrap, if one was (to show once; taken, not copied).
    pub fn take_bootstrap_key(&mut self) -> Option<GeneratedKey> {
        self.bootstrap_key.take()
    }

    /// Starts a graceful drain on SIGTERM or SIGINT. The handlers are registered before this
    /// returns, so a signal sent after the "listening" line (which callers log after this) is
    /// never lost to the default action.
    pub fn stop_on_signals(&self) {
        let handle = self.server.handle();
        let signals = Signals::register();
        actix_web::rt::spawn(async move {
            signals.wait().await;
            tracing::info!("shutdown signal received; draining in-flight requests");
            handle.stop(true).await;
        });
    }

    /// Serves until stopped. With `signals`, SIGTERM and SIGINT both start a graceful drain
    /// (see [`Application::stop_on_signals`]).
    pub async fn run_until_stopped(self, signals: bool) -> std::io::Result<()> {
        if signals {
            self.stop_on_signals();
        }
        let result = self.server.await;
        if let Some(t) = self._invalidator {
            t.abort();
        }
        drop(self._watch);
        result
    }
}

/// SIGTERM and SIGINT streams, registered at once.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn register() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Some((term, int)),
                _ => None,
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    async fn wait(self) {
        #[cfg(unix)]
        if let Some((mut term, mut int)) = self.streams {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
