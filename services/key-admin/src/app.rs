//! Building and running the service: [`Application::build`] opens the key store, settles the
//! admin credential ([`crate::bootstrap`]), binds the listener (port 0 works, for tests) and
//! returns a handle exposing the bound port; [`Application::run_until`] serves until the shutdown
//! future resolves (or a [`ServerHandle`] stop), draining in-flight requests within the bound
//! ([`infergate_service::run`]).

use std::future::Future;
use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use infergate_config::{AdminConfig, ConfigError};
use infergate_keystore::{GeneratedKey, KeyStore, WatchGuard};

use crate::bootstrap::{self, BootstrapError};
use crate::error::AdminError;
use crate::state::AppState;
use crate::{handlers, keys, tokens};
use infergate_service::docs;
use infergate_service::edge::edge;
use infergate_service::run::{BindError, Drains, Served, bind, workers};

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
    ("/v1/keys/{id}/usage", &["GET"]),
    ("/v1/usage", &["GET"]),
    ("/v1/tokens", &["POST"]),
    ("/v1/audit", &["GET"]),
    ("/console", &["GET"]),
    ("/console/session", &["GET", "POST", "DELETE"]),
    ("/console/{asset}", &["GET"]),
];

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the key store: {0}")]
    Store(String),
    #[error("{0}")]
    Bootstrap(String),
    #[error(transparent)]
    Bind(#[from] BindError),
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
    served: Served<AppState>,
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
            .route(web::get().to(docs::openapi))
            .default_service(method_not_allowed(allow("/openapi.json"))),
    )
    .service(
        web::resource("/docs")
            .route(web::get().to(docs::page))
            .route(web::head().to(docs::page))
            .default_service(method_not_allowed(allow("/docs"))),
    )
    .service(
        web::resource("/docs/{asset}")
            .route(web::get().to(docs::asset::<AdminError>))
            .route(web::head().to(docs::asset::<AdminError>))
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
        web::resource("/v1/keys/{id}/usage")
            .route(web::get().to(keys::usage))
            .default_service(method_not_allowed(allow("/v1/keys/{id}/usage"))),
    )
    .service(
        web::resource("/v1/usage")
            .route(web::get().to(keys::top_usage))
            .default_service(method_not_allowed(allow("/v1/usage"))),
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
    )
    .service(
        web::resource("/console")
            .route(web::get().to(crate::console::page))
            .default_service(method_not_allowed(allow("/console"))),
    )
    .service(
        web::resource("/console/session")
            .route(web::get().to(crate::console::current))
            .route(web::post().to(crate::console::sign_in))
            .route(web::delete().to(crate::console::sign_out))
            .default_service(method_not_allowed(allow("/console/session"))),
    )
    .service(
        web::resource("/console/{asset}")
            .route(web::get().to(crate::console::asset))
            .default_service(method_not_allowed(allow("/console/{asset}"))),
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
                let opened = infergate_keystore::open::open(&cfg.key_store, true)
                    .await
                    .map_err(|e| StartupError::Store(e.to_string()))?;
                (opened.store, opened.watch)
            }
        };
        let state = web::Data::new(AppState::build(cfg, store)?);
        let bootstrap_key = bootstrap::run(&state).await?;
        let invalidator = state.verifier.spawn_invalidator();

        let (listener, port) = bind(state.cfg.listen)?;
        let cfg = &state.cfg;
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(handlers::DOCS)
                .app_data(web::PayloadConfig::new(BODY_LIMIT))
                .configure(configure)
                .default_service(web::to(docs::not_found::<AdminError>))
                .wrap(from_fn(edge::<AppState>))
        })
        .workers(workers(cfg.workers))
        .shutdown_timeout(cfg.shutdown_timeout.as_secs())
        .disable_signals()
        .listen(listener)
        .map_err(|source| BindError {
            addr: cfg.listen.to_string(),
            source,
        })?
        .run();
        Ok(Self {
            served: Served::new(port, server, state),
            bootstrap_key,
            _watch: watch,
            _invalidator: invalidator,
        })
    }

    /// The bound server: its port, a stop handle and the state.
    pub fn served(&self) -> &Served<AppState> {
        &self.served
    }

    /// The admin key minted by the bootstrap, if one was (to show once; taken, not copied).
    pub fn take_bootstrap_key(&mut self) -> Option<GeneratedKey> {
        self.bootstrap_key.take()
    }

    /// Serves until `shutdown` resolves (main passes [`infergate_service::run::shutdown_signal`]),
    /// then drains: readiness answers 503 and in-flight requests finish within the bound.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let result = self.served.run_until(shutdown).await;
        if let Some(t) = self._invalidator {
            t.abort();
        }
        drop(self._watch);
        result
    }
}

impl Drains for AppState {
    fn drain(&self) -> &infergate_service::run::Drain {
        &self.drain
    }
}
