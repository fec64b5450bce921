//! Binding, workers, and serving until shutdown — the same for every service.
//!
//! As in mini-redis, the shutdown trigger is a parameter: `main` passes [`shutdown_signal`]
//! (SIGTERM or SIGINT), tests pass a future they resolve themselves. When it resolves,
//! [`run_until`] marks the service draining (its readiness check answers 503 from then on, so
//! load balancers stop sending), stops accepting, and lets in-flight requests finish within the
//! server's shutdown timeout.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::web;

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

/// A service state that can be drained (its readiness answers 503 once draining).
pub trait Drains {
    fn drain(&self) -> &Drain;
}

/// The bound main server of a service and its state: what both services' `Application` hold.
pub struct Served<S: 'static> {
    port: u16,
    server: Server,
    state: web::Data<S>,
}

impl<S: Drains + 'static> Served<S> {
    pub fn new(port: u16, server: Server, state: web::Data<S>) -> Self {
        Self {
            port,
            server,
            state,
        }
    }

    /// The bound port (port 0 in the configuration picks a free one).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub fn state(&self) -> Arc<S> {
        self.state.clone().into_inner()
    }

    /// [`run_until`] with the state's own drain.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        run_until(self.server, shutdown, self.state.drain()).await
    }
}

/// The ready file (`ready_file` in either service's configuration): the bound addresses as one
/// JSON object, `{"listen":"127.0.0.1:41234"}`, for supervisors and tests that start a service
/// on port 0 — machine-readable, where the log line is for people. Removed when dropped, so a
/// stale file never names a port nobody listens on.
#[derive(Debug)]
pub struct ReadyFile(PathBuf);

impl ReadyFile {
    /// Writes `addrs` to a temporary file beside `path` and renames it into place, so a reader
    /// sees nothing or all of it.
    pub fn write(path: &Path, addrs: &[(&str, SocketAddr)]) -> std::io::Result<ReadyFile> {
        let body: serde_json::Map<String, serde_json::Value> = addrs
            .iter()
            .map(|(name, addr)| (name.to_string(), addr.to_string().into()))
            .collect();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, serde_json::Value::Object(body).to_string())?;
        std::fs::rename(&tmp, path)?;
        Ok(ReadyFile(path.to_path_buf()))
    }
}

impl Drop for ReadyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_file_names_the_addresses_and_goes_with_its_guard() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.json");
        let addr: SocketAddr = "127.0.0.1:41234".parse().unwrap();
        let guard = ReadyFile::write(&path, &[("listen", addr)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, r#"{"listen":"127.0.0.1:41234"}"#);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        drop(guard);
        assert!(!path.exists());
    }
}
