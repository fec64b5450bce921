//! `infergate-gateway`: read configuration, build the app, serve until SIGTERM/SIGINT, drain, exit.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use infergate_config::{ConfigError, EXIT_CONFIG, ProcessEnv, load_gateway};
use infergate_gateway::{Application, StartupError};
use infergate_service::run::ReadyFile;

/// mimalloc's per-thread free lists instead of glibc's arenas: see Cargo.toml.
#[global_allocator]
static ALLOCATOR: infergate_alloc::Mimalloc = infergate_alloc::Mimalloc;

#[derive(Parser)]
#[command(
    name = "infergate-gateway",
    version,
    about = "Security gateway for AI inference APIs",
    after_help = "Settings come from the YAML file (--config or INFERGATE_CONFIG; config/gateway.yaml \
                  shows every one with its default), then environment variables, which win, and a \
                  .env file in the working directory (real environment variables win over it). \
                  docs/configuration.md lists every setting and variable; `check-config` prints \
                  the ones in effect."
)]
struct Cli {
    /// YAML configuration file (default: built-in defaults; also INFERGATE_CONFIG).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Run,
    /// Validate the configuration and print the effective settings, secrets masked (exit 64 on error).
    CheckConfig,
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("infergate-gateway: {e}");
    ExitCode::from(EXIT_CONFIG as u8)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cwd = std::env::current_dir().unwrap_or_default();
    let env = match ProcessEnv::with_dotenv_in(&cwd) {
        Ok(env) => env,
        Err(e) => return fail(e),
    };
    let cfg = match load_gateway(cli.config.as_deref(), &env) {
        Ok(cfg) => cfg,
        Err(e) => return fail(e),
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            // The same checks startup makes (`Application::check`), then the effective
            // configuration as JSON on stdout.
            let checked = match Application::check(&cfg) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            // JSON alone on stdout (`check-config | jq` works); the summary on stderr. A closed
            // stdout (`| head`) is not an error worth a panic.
            let json = match serde_json::to_string_pretty(&cfg) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{json}").and_then(|()| out.flush());
            }
            if !cfg.auth.keys_file.exists() {
                eprintln!(
                    "# note: keys file {} does not exist; only API_KEY/API_KEYS keys are accepted",
                    cfg.auth.keys_file.display()
                );
            }
            if cfg.workers == 0 {
                eprintln!(
                    "# workers: 0 means one per CPU: {} here",
                    infergate_service::run::workers(0)
                );
            }
            if let Some(n) = checked.hashed_keys {
                eprintln!("# {n} hashed key(s) in the file store");
            }
            for w in &checked.warnings {
                eprintln!("# warning: {w}");
            }
            eprintln!(
                "# configuration OK; {} static key(s) loaded",
                checked.static_keys
            );
            ExitCode::SUCCESS
        }
        Command::Run => {
            let telemetry = match infergate_gateway::telemetry::init(&cfg.logging) {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            let system = actix_web::rt::System::new();
            let code = system.block_on(async move {
                let listen = cfg.listen;
                let metrics_listen = cfg.metrics_listen;
                let tls = cfg.tls.is_some();
                let upstream = cfg.upstream.url.clone();
                let ready_file = cfg
                    .ready_file
                    .clone()
                    .map(|path| (path, cfg.setting_name("ready_file")));
                let app = match Application::build(cfg).await {
                    Ok(app) => app,
                    Err(StartupError::Config(e)) => return fail(e),
                    Err(e) => {
                        eprintln!("infergate-gateway: {e}");
                        return ExitCode::from(1);
                    }
                };
                let shutdown = match infergate_service::run::shutdown_signal() {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("infergate-gateway: cannot install signal handlers: {e}");
                        return ExitCode::from(1);
                    }
                };
                let scheme = if tls { "https" } else { "http" };
                tracing::info!(listen = %format!("{scheme}://{}:{}", listen.ip(), app.served().port()), upstream = %upstream, "infergate gateway listening");
                // Held until the server stops: dropping it removes the file.
                let _ready = match &ready_file {
                    None => None,
                    Some((path, setting)) => {
                        let mut addrs = vec![("listen", SocketAddr::new(listen.ip(), app.served().port()))];
                        if let (Some(m), Some(port)) = (metrics_listen, app.metrics_port()) {
                            addrs.push(("metrics_listen", SocketAddr::new(m.ip(), port)));
                        }
                        match ReadyFile::write(path, &addrs) {
                            Ok(f) => Some(f),
                            Err(e) => {
                                return fail(ConfigError::invalid(
                                    *setting,
                                    path.display().to_string(),
                                    format!("a path the gateway can write ({e})"),
                                ));
                            }
                        }
                    }
                };
                match app.run_until(shutdown).await {
                    Ok(()) => {
                        tracing::info!("stopped");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("infergate-gateway: {e}");
                        ExitCode::from(1)
                    }
                }
            });
            // Exports the spans still queued. It blocks, so it runs here, after the (current-thread)
            // runtime has returned, never on it.
            telemetry.shutdown();
            code
        }
    }
}
