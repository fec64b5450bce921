//! Binding, workers, and serving until shutdown — the same for every service.
//!
//! As in mini-redis, the shutdown trigger is a parameter: `main` passes [`shutdown_signal`]
//! (SIGTERM or SIGINT), tests pass a future they resolve themselves. When it resolves,
//! [`run_until`] marks the service draining (its readiness check answers 503 from then on, so
//! load balancers stop sending), stops accepting, and lets in-flight requests finish within the
//! server's shutdown timeout.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::dev::Server;

/// Whether the service is shutting down; readiness handlers read it.
#[derive(Debug, Default)]
pub struct Drain(AtomicBool);

impl Drain {
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A listener that could not be bound: the address and why.
#[derive(Debug)]
pub struct BindError {
    pub addr: String,
    pub source: std::io::Error,
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot listen on {}: {}", self.addr, self.source)
    }
}

/// Binds `addr` (port 0 picks a free one, for tests) and returns the listener and its port.
pub fn bind(addr: SocketAddr) -> Result<(TcpListener, u16), BindError> {
    let listener = TcpListener::bind(addr).map_err(|source| BindError {
        addr: addr.to_string(),
        source,
    })?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    Ok((listener, port))
}

/// The worker count: the configured one, or one per available core when it is 0.
pub fn workers(configured: usize) -> usize {
    if configured == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        configured
    }
}

/// Resolves on SIGTERM or SIGINT (both drain; actix's own handling would treat SIGINT as a hard
/// stop, losing in-flight requests). The handlers are registered before this returns, so a
/// signal sent as soon as the service reports ready is never lost to the default action.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}

/// Serves until `shutdown` resolves (or the server is stopped through its handle), then drains.
/// The server must have been built with signals disabled: the shutdown future is the trigger.
pub async fn run_until(
    server: Server,
    shutdown: impl Future<Output = ()>,
    drain: &Drain,
) -> std::io::Result<()> {
    let handle = server.handle();
    let mut server = std::pin::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = shutdown => {}
    }
    tracing::info!("shutdown signal received; draining in-flight requests");
    drain.start();
    let (result, ()) = tokio::join!(server, handle.stop(true));
    result
}
