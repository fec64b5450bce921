//! `infergate-admin`: read configuration, then serve the admin API (the default) or run a `keys`
//! command. Configuration errors exit 64, other failures 1, each with a one-line message.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use infergate_config::{ConfigError, EXIT_CONFIG, LogSettings, ProcessEnv, load_admin};
use infergate_key_admin::cli::{Cli, Command, run_keys};
use infergate_key_admin::{Application, StartupError, bootstrap, telemetry};
use infergate_service::run::ReadyFile;

fn fail(code: u8, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("infergate-admin: {e}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cwd = std::env::current_dir().unwrap_or_default();
    let env = match ProcessEnv::with_dotenv_in(&cwd) {
        Ok(env) => env,
        Err(e) => return fail(EXIT_CONFIG as u8, e),
    };
    let cfg = match load_admin(cli.config.as_deref(), &env) {
        Ok(cfg) => cfg,
        Err(e) => return fail(EXIT_CONFIG as u8, e),
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            // JSON alone on stdout, the summary on stderr (as the gateway's check-config).
            match serde_json::to_string_pretty(&cfg) {
                Ok(s) => {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{s}").and_then(|()| out.flush());
                }
                Err(e) => return fail(1, e),
            }
            if cfg.jwt.enabled
                && let Err(e) = infergate_tokens::TokenIssuer::from_settings(&cfg.jwt)
            {
                eprintln!(
                    "# warning: jwt.enabled is set but no token issuer can be built ({e}); POST /v1/tokens will answer jwt_disabled"
                );
            }
            eprintln!("# configuration OK");
            ExitCode::SUCCESS
        }
        Command::Keys(cmd) => {
            // Commands print keys on stdout; logs (warnings only, unless RUST_LOG) go to stderr.
            let _logs = telemetry::init_logs(&LogSettings {
                format: cfg.logging.format,
                level: "warn".into(),
            });
            let system = actix_web::rt::System::new();
            match system.block_on(run_keys(cfg, cmd)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e.exit_code(), e),
            }
        }
        Command::Serve => {
            let telemetry = match telemetry::init(&cfg.logging) {
                Ok(t) => t,
                Err(e) => return fail(EXIT_CONFIG as u8, e),
            };
            let system = actix_web::rt::System::new();
            let code = system.block_on(async move {
                let listen = cfg.listen;
                let ready_file = cfg.ready_file.clone();
                let mut app = match Application::build(cfg).await {
                    Ok(app) => app,
                    Err(StartupError::Config(e)) => return fail(EXIT_CONFIG as u8, e),
                    Err(e) => return fail(1, e),
                };
                if let Some(key) = app.take_bootstrap_key() {
                    // stdout, never the log: the one place this key is ever shown.
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(bootstrap::banner(&key).as_bytes());
                    let _ = out.flush();
                }
                let shutdown = match infergate_service::run::shutdown_signal() {
                    Ok(s) => s,
                    Err(e) => return fail(1, format!("cannot install signal handlers: {e}")),
                };
                let backend = app.served().state().store.backend();
                tracing::info!(listen = %format!("http://{}:{}", listen.ip(), app.served().port()), key_store = backend, "infergate key-admin listening");
                // Held until the server stops: dropping it removes the file.
                let _ready = match &ready_file {
                    None => None,
                    Some(path) => {
                        let addr = SocketAddr::new(listen.ip(), app.served().port());
                        match ReadyFile::write(path, &[("listen", addr)]) {
                            Ok(f) => Some(f),
                            Err(e) => {
                                return fail(
                                    EXIT_CONFIG as u8,
                                    ConfigError::invalid(
                                        "ready_file (INFERGATE_ADMIN_READY_FILE)",
                                        path.display().to_string(),
                                        format!("a path key-admin can write ({e})"),
                                    ),
                                );
                            }
                        }
                    }
                };
                match app.run_until(shutdown).await {
                    Ok(()) => {
                        tracing::info!("stopped");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(1, e),
                }
            });
            // Exports the spans still queued. It blocks, so it runs here, after the (current-thread)
            // runtime has returned, never on it.
            telemetry.shutdown();
            code
        }
    }
}
