//! The command line: `serve` (the default), `check-config`, and `keys generate|list|revoke|delete|rotate`
//! acting on the store directly (audited with actor `cli`).
//!
//! Keys are printed to stdout once, one per line (`<key>  role=<role>  id=<id>`); everything else
//! goes to stderr, so `infergate-admin keys generate … > keys.txt` captures only keys. Only
//! argon2id hashes are ever written to a store.

use infergate_service::ApiError as _;
use std::io::Write;
use std::path::PathBuf;

use chrono::{Duration as ChronoDuration, SecondsFormat, Utc};
use clap::{Args, Parser, Subcommand};
use infergate_config::{AdminConfig, ConfigError, EXIT_CONFIG};
use infergate_keystore::{KeyRecord, KeyState, ListQuery, StoredKey};
use infergate_policy::Role;
use serde_json::{Value, json};

use crate::error::AdminError;
use crate::keys::{revoke_key, rotate_key};
use crate::mint::{mint, record_json};
use crate::state::AppState;

pub const CLI_ACTOR: &str = "cli";

#[derive(Parser, Debug)]
#[command(
    name = "infergate-admin",
    version,
    about = "infergate key administration: the admin API server and key commands",
    after_help = "Settings come from the YAML file (--config or INFERGATE_ADMIN_CONFIG; \
                  config/key-admin.yaml shows them with their defaults), then environment \
                  variables, which win, and a .env file in the working directory. \
                  docs/configuration.md lists every setting and variable; docs/keys.md the \
                  admin API and these commands."
)]
pub struct Cli {
    /// YAML configuration file (default: built-in defaults; also INFERGATE_ADMIN_CONFIG).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the admin API (the default). Mints and prints a first admin key when none exists.
    Serve,
    /// Validate the configuration and print the effective settings, secrets masked (exit 64 on
    /// error).
    CheckConfig,
    /// Manage keys directly in the configured store (or a keys file).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Mint keys: prints each key once to stdout, stores only its hash.
    Generate(GenerateArgs),
    /// List keys (secrets are never stored, so never shown).
    List(ListArgs),
    /// Revoke a key (soft: the record stays for the audit trail). Idempotent.
    Revoke {
        /// The key id (the second field of a key: igk_ID_…).
        id: String,
    },
    /// Delete a key: revoked, and gone from listings and the admin API (the store keeps a
    /// tombstone and the audit log its history).
    Delete {
        /// The key id.
        id: String,
    },
    /// Replace a key with a new one (printed once); the old one keeps working for --grace seconds.
    Rotate {
        /// The key id.
        id: String,
        /// Seconds the old key stays valid (0-604800).
        #[arg(long, default_value_t = 0, value_name = "SECONDS")]
        grace: i64,
    },
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// How many keys (1-1000).
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Roles, comma-separated, cycled over the keys: admin, user, readonly.
    #[arg(long, default_value = "user", value_name = "ROLES")]
    pub roles: String,
    /// Days until the keys expire (1-3650); none = no expiry.
    #[arg(long, value_name = "DAYS")]
    pub expires: Option<i64>,
    /// Key prefix (default: key_store.key_prefix / INFERGATE_KEY_PREFIX).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Write to this keys file (file store) instead of the configured store.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Key name (numbered when --count > 1; default: the role).
    #[arg(long)]
    pub name: Option<String>,
    /// Tokens per minute for each key (default: the role's, rate_limit.roles).
    #[arg(long, value_name = "N")]
    pub tokens_per_minute: Option<u64>,
    /// Tokens per day for each key, resetting at rate_limit.tokens.day_resets_at_utc_hour.
    #[arg(long, value_name = "N")]
    pub tokens_per_day: Option<u64>,
    /// Requests in flight at once for each key, streams included.
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<u64>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only this role.
    #[arg(long)]
    pub role: Option<String>,
    /// Only this state: active, expired or revoked.
    #[arg(long)]
    pub state: Option<String>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A failed command: configuration and usage errors exit 64, everything else 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => EXIT_CONFIG as u8,
            CliError::Failed(_) => 1,
        }
    }
}

impl From<AdminError> for CliError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Validation { field, detail } => {
                CliError::Usage(format!("--{field}: {detail}"))
            }
            AdminError::Unavailable(d)
            | AdminError::AuditUnavailable(d)
            | AdminError::Internal(d) => CliError::Failed(d),
            other => CliError::Failed(other.detail()),
        }
    }
}

fn usage(e: impl std::fmt::Display) -> CliError {
    CliError::Usage(e.to_string())
}

/// Runs a `keys` subcommand.
pub async fn run_keys(cfg: AdminConfig, cmd: KeysCommand) -> Result<(), CliError> {
    let output = match &cmd {
        KeysCommand::Generate(a) => a.output.clone(),
        _ => None,
    };
    let opened = match &output {
        Some(path) => infergate_keystore::open::open_file(path, None),
        None => infergate_keystore::open::open(&cfg.key_store, false).await,
    }
    .map_err(|e| CliError::Failed(format!("cannot open the key store: {e}")))?;
    let state = AppState::build(cfg, opened.store)?;
    match cmd {
        KeysCommand::Generate(args) => generate(&state, args, output).await,
        KeysCommand::List(args) => list(&state, args).await,
        KeysCommand::Revoke { id } => revoke(&state, &id).await,
        KeysCommand::Delete { id } => delete(&state, &id).await,
        KeysCommand::Rotate { id, grace } => rotate(&state, &id, grace).await,
    }
}

fn print_key(out: &mut impl Write, key: &str, role: Role, id: &str) -> Result<(), CliError> {
    writeln!(out, "{key}  role={role}  id={id}").map_err(|e| CliError::Failed(e.to_string()))
}

async fn generate(
    state: &AppState,
    args: GenerateArgs,
    output: Option<PathBuf>,
) -> Result<(), CliError> {
    if !(1..=1000).contains(&args.count) {
        return Err(usage("--count must be from 1 to 1000"));
    }
    let roles = args
        .roles
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.parse::<Role>()
                .map_err(|e| usage(format!("--roles: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if roles.is_empty() {
        return Err(usage(
            "--roles: name at least one role (admin, user, readonly)",
        ));
    }
    let now = Utc::now();
    let expires_at = match args.expires {
        None => None,
        Some(d) if (1..=3650).contains(&d) => Some(now + ChronoDuration::days(d)),
        Some(_) => return Err(usage("--expires must be a number of days from 1 to 3650")),
    };
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| state.cfg.key_store.key_prefix.clone());
    infergate_keystore::format::validate_prefix(&prefix)
        .map_err(|e| usage(format!("--prefix: {e}")))?;
    if let Some(n) = &args.name
        && (n.trim().is_empty() || n.chars().count() > 90)
    {
        return Err(usage("--name must be 1-90 characters"));
    }
    for (flag, v) in [
        ("--tokens-per-minute", args.tokens_per_minute),
        ("--tokens-per-day", args.tokens_per_day),
        ("--max-concurrent", args.max_concurrent),
    ] {
        if let Some(n) = v {
            crate::validate::limit(flag, &json!(n))
                .map_err(|_| usage(format!("{flag} must be an integer from 1 to 1000000000000")))?;
        }
    }
    let stdout = std::io::stdout();
    for i in 0..args.count {
        let role = roles[i % roles.len()];
        let base = args.name.clone().unwrap_or_else(|| role.to_string());
        let name = if args.count > 1 {
            format!("{base}-{}", i + 1)
        } else {
            base
        };
        let (key, phc) = mint(&prefix, state.hash_params).await?;
        let mut record = KeyRecord::new(key.id.as_str(), name, role, CLI_ACTOR);
        record.prefix = prefix.clone();
        record.created_at = Utc::now();
        record.expires_at = expires_at;
        record.tokens_per_minute = args.tokens_per_minute;
        record.tokens_per_day = args.tokens_per_day;
        record.max_concurrent = args.max_concurrent;
        state
            .store
            .create(StoredKey {
                record,
                secret_hash: phc,
            })
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        state
            .audit(
                CLI_ACTOR,
                "create",
                Some(key.id.clone()),
                None,
                true,
                json!({"role": role, "source": "keys generate"}),
            )
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        print_key(&mut stdout.lock(), key.expose(), role, &key.id)?;
    }
    let _ = stdout.lock().flush();
    let place = output.map_or_else(
        || format!("the {} key store", state.store.backend()),
        |p| p.display().to_string(),
    );
    eprintln!(
        "infergate-admin: {} key(s) minted; only their hashes were written to {place}. The keys above are shown once.",
        args.count
    );
    Ok(())
}

async fn list(state: &AppState, args: ListArgs) -> Result<(), CliError> {
    let role = args
        .role
        .as_deref()
        .map(|r| r.parse::<Role>().map_err(|e| usage(format!("--role: {e}"))))
        .transpose()?;
    let key_state = args
        .state
        .as_deref()
        .map(|s| {
            s.parse::<KeyState>()
                .map_err(|e| usage(format!("--state: {e}")))
        })
        .transpose()?;
    let now = Utc::now();
    let mut records = Vec::new();
    loop {
        let page = state
            .store
            .list(&ListQuery {
                role,
                state: key_state,
                offset: records.len(),
                limit: 500,
                now,
                ..ListQuery::default()
            })
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        let got = page.items.len();
        records.extend(page.items);
        if got == 0 || records.len() >= page.total {
            break;
        }
    }
    let mut out = std::io::stdout().lock();
    let write = |out: &mut std::io::StdoutLock<'_>, s: String| {
        writeln!(out, "{s}").map_err(|e| CliError::Failed(e.to_string()))
    };
    if args.json {
        let items: Vec<Value> = records.iter().map(|r| record_json(r, now)).collect();
        let text =
            serde_json::to_string_pretty(&items).map_err(|e| CliError::Failed(e.to_string()))?;
        return write(&mut out, text);
    }
    let ts = |t: Option<chrono::DateTime<Utc>>| {
        t.map_or_else(
            || "-".to_string(),
            |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
        )
    };
    write(
        &mut out,
        format!(
            "{:<14} {:<24} {:<9} {:<8} {:<21} {:<21}",
            "ID", "NAME", "ROLE", "STATE", "CREATED", "EXPIRES"
        ),
    )?;
    for r in &records {
        let name: String = r.name.chars().take(24).collect();
        write(
            &mut out,
            format!(
                "{:<14} {:<24} {:<9} {:<8} {:<21} {:<21}",
                r.id,
                name,
                r.role,
                r.state(now).as_str(),
                ts(Some(r.created_at)),
                ts(r.expires_at)
            ),
        )?;
    }
    eprintln!("{} key(s)", records.len());
    Ok(())
}

/// Audits a CLI action on key `id`: its detail on success, its error code on failure.
async fn audit_action<T>(
    state: &AppState,
    action: &str,
    id: &str,
    result: &Result<T, AdminError>,
    detail: impl FnOnce(&T) -> Value,
) -> Result<(), CliError> {
    let (success, detail) = match result {
        Ok(v) => (true, detail(v)),
        Err(e) => (false, json!({"error": e.code().name()})),
    };
    state
        .audit(
            CLI_ACTOR,
            action,
            Some(id.to_string()),
            None,
            success,
            detail,
        )
        .await
        .map_err(|e| CliError::Failed(e.to_string()))
}

async fn delete(state: &AppState, id: &str) -> Result<(), CliError> {
    let result = crate::keys::delete_key(state, id).await;
    audit_action(
        state,
        "delete",
        id,
        &result,
        |was_revoked| json!({"was_revoked": was_revoked}),
    )
    .await?;
    result?;
    println!("deleted {id}");
    Ok(())
}

async fn revoke(state: &AppState, id: &str) -> Result<(), CliError> {
    let result = revoke_key(state, id).await;
    audit_action(
        state,
        "revoke",
        id,
        &result,
        |(_, already)| json!({"already_revoked": already}),
    )
    .await?;
    let (record, already) = result?;
    if already {
        println!(
            "{id} was already revoked at {}",
            record
                .revoked_at
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
                .unwrap_or_default()
        );
    } else {
        println!("revoked {id}");
    }
    Ok(())
}

async fn rotate(state: &AppState, id: &str, grace: i64) -> Result<(), CliError> {
    if !(0..=crate::validate::GRACE_SECONDS_MAX).contains(&grace) {
        return Err(usage(format!(
            "--grace must be from 0 to {} seconds",
            crate::validate::GRACE_SECONDS_MAX
        )));
    }
    let result = rotate_key(state, CLI_ACTOR, id, grace).await;
    let (success, detail) = match &result {
        Ok((key, _, _)) => (true, json!({"grace_seconds": grace, "new_key_id": key.id})),
        Err(e) => (false, json!({"error": e.code().name()})),
    };
    state
        .audit(
            CLI_ACTOR,
            "rotate",
            Some(id.to_string()),
            None,
            success,
            detail,
        )
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let (key, record, previous) = result?;
    print_key(
        &mut std::io::stdout().lock(),
        key.expose(),
        record.role,
        &key.id,
    )?;
    eprintln!(
        "infergate-admin: {id} rotated to {}; the old key stops working at {}. The new key is shown once.",
        key.id,
        previous
            .expires_at
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
            .unwrap_or_default()
    );
    Ok(())
}
