//! `infergate-dev-upstream` binary: runs the deterministic echo model server standalone (for
//! `make run`, demos and benchmarks) with graceful shutdown on SIGTERM / SIGINT.

#![forbid(unsafe_code)]

use std::{net::TcpListener, time::Duration};

use anyhow::Context;
use clap::Parser;
use infergate_dev_upstream::{UpstreamConfig, build_server};
use tracing_subscriber::EnvFilter;

/// Deterministic OpenAI-compatible echo model server for developing and testing infergate.
#[derive(Debug, Parser)]
#[command(name = "infergate-dev-upstream", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "DEV_UPSTREAM_LISTEN", default_value = "127.0.0.1:9000")]
    listen: String,
    /// Latency added before every response, in milliseconds.
    #[arg(long, env = "DEV_UPSTREAM_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Delay between streamed (SSE) chunks, in milliseconds.
    #[arg(long, env = "DEV_UPSTREAM_TOKEN_DELAY_MS", default_value_t = 20)]
    token_delay_ms: u64,
    /// Number of worker threads.
    #[arg(long, env = "DEV_UPSTREAM_WORKERS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// Comma-separated model ids to report as loaded.
    #[arg(
        long,
        env = "DEV_UPSTREAM_MODELS",
        value_delimiter = ',',
        default_value = "echo-1,echo-large"
    )]
    models: Vec<String>,
    /// Seconds a graceful shutdown waits for in-flight requests.
    #[arg(long, env = "DEV_UPSTREAM_SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    shutdown_timeout_secs: u64,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let cfg = UpstreamConfig {
        latency: Duration::from_millis(args.latency_ms),
        token_delay: Duration::from_millis(args.token_delay_ms),
        models: args.models.into_iter().filter(|m| !m.is_empty()).collect(),
        workers: usize::from(args.workers),
    };
    let listener =
        TcpListener::bind(&args.listen).with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading bound address")?;
    let server = build_server(
        listener,
        &cfg,
        Duration::from_secs(args.shutdown_timeout_secs),
    )
    .context("building server")?;

    tracing::info!(
        %addr,
        models = ?cfg.models,
        latency_ms = args.latency_ms,
        token_delay_ms = args.token_delay_ms,
        workers = cfg.workers,
        "infergate-dev-upstream listening"
    );

    // actix's built-in handler treats SIGINT as a forced stop; handling signals here makes both
    // SIGINT and SIGTERM drain in-flight streams.
    let handle = server.handle();
    tokio::spawn(async move {
        let signal = shutdown_signal().await;
        tracing::info!(signal, "shutting down gracefully");
        handle.stop(true).await;
    });

    server.await.context("server error")?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop the server");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
