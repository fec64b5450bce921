//! The first admin credential, settled when `serve` starts.
//!
//! - `ADMIN_API_KEY` (or `ADMIN_API_KEY_FILE`) in our format: its record is ensured in the store
//!   (role `admin`, name `bootstrap-admin`, only the hash stored). If the id exists with another
//!   secret, startup fails: two different keys must never share an id.
//! - `ADMIN_API_KEY` in any other form: accepted as a legacy plaintext admin credential, held as a
//!   SHA-256 digest and compared in constant time; its actor id is `bootstrap-admin`.
//! - Neither, and no active admin key in the store: one admin key is minted and handed back for
//!   the binary to print once, to stdout, inside a banner. It is never logged.

use chrono::Utc;
use infergate_config::ConfigError;
use infergate_keystore::{GeneratedKey, KeyRecord, KeyState, ListQuery, StoredKey, format, hash};
use infergate_policy::Role;
use infergate_service::ApiError as _;
use serde_json::json;

use crate::error::AdminError;
use crate::mint::{hash_off_thread, mint};
use crate::state::{AppState, LEGACY_ADMIN_ACTOR};

pub const BOOTSTRAP_ACTOR: &str = "bootstrap";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("bootstrap: {0}")]
    Store(String),
}

impl From<AdminError> for BootstrapError {
    fn from(e: AdminError) -> Self {
        BootstrapError::Store(match e {
            AdminError::Unavailable(d)
            | AdminError::AuditUnavailable(d)
            | AdminError::Internal(d)
            | AdminError::Conflict(d) => d,
            other => other.detail(),
        })
    }
}

impl From<infergate_keystore::KeyStoreError> for BootstrapError {
    fn from(e: infergate_keystore::KeyStoreError) -> Self {
        BootstrapError::Store(e.to_string())
    }
}

/// Settles the admin credential; returns a freshly minted key for the caller to show once.
pub async fn run(state: &AppState) -> Result<Option<GeneratedKey>, BootstrapError> {
    match &state.cfg.admin_api_key {
        Some(k) if format::looks_like_key(k.expose()) => {
            ensure(state, k.expose(), &k.masked()).await?;
            Ok(None)
        }
        Some(_) => {
            tracing::info!(
                actor = LEGACY_ADMIN_ACTOR,
                "ADMIN_API_KEY is a plaintext (legacy) key: accepted as an admin credential, not stored"
            );
            Ok(None)
        }
        None => mint_first(state).await,
    }
}

/// Makes sure the configured key of our format has its record.
async fn ensure(state: &AppState, key: &str, masked: &str) -> Result<(), BootstrapError> {
    let parsed = format::parse(key).map_err(|e| {
        ConfigError::invalid(
            "ADMIN_API_KEY",
            masked,
            format!("a valid infergate key ({e})"),
        )
    })?;
    let id = parsed.id.to_string();
    if let Some(stored) = state.store.get(&id).await? {
        let (secret, phc) = (parsed.secret.to_string(), stored.secret_hash.clone());
        let matches = tokio::task::spawn_blocking(move || hash::verify_secret(&secret, &phc))
            .await
            .map_err(|e| BootstrapError::Store(format!("verification task failed: {e}")))?;
        if !matches {
            return Err(ConfigError::invalid(
                "ADMIN_API_KEY",
                masked,
                format!(
                    "the key already stored under id {id} (a key with that id exists with a different secret; pick another key or remove that record)"
                ),
            )
            .into());
        }
        let r = &stored.record;
        if r.role != Role::Admin || r.state(Utc::now()) != KeyState::Active {
            tracing::warn!(key_id = %id, role = %r.role, state = r.state(Utc::now()).as_str(), "ADMIN_API_KEY's record is not an active admin key; it cannot call the admin API");
        }
        return Ok(());
    }
    let phc = hash_off_thread(parsed.secret.to_string(), state.hash_params).await?;
    store_admin(
        state,
        &id,
        parsed.prefix,
        phc,
        json!({"source": "ADMIN_API_KEY", "role": "admin"}),
    )
    .await?;
    tracing::info!(key_id = %id, "stored the record of ADMIN_API_KEY (admin)");
    Ok(())
}

/// Mints the first admin key when the store has no active one.
async fn mint_first(state: &AppState) -> Result<Option<GeneratedKey>, BootstrapError> {
    let admins = state
        .store
        .list(&ListQuery {
            role: Some(Role::Admin),
            state: Some(KeyState::Active),
            offset: 0,
            limit: 1,
            now: Utc::now(),
            ..ListQuery::default()
        })
        .await?;
    if admins.total > 0 {
        return Ok(None);
    }
    let (key, phc) = mint(&state.cfg.key_store.key_prefix, state.hash_params).await?;
    store_admin(
        state,
        &key.id,
        &state.cfg.key_store.key_prefix,
        phc,
        json!({"source": "minted", "reason": "no active admin key", "role": "admin"}),
    )
    .await?;
    tracing::warn!(key_id = %key.id, "no admin key was configured or stored: minted one (printed once to stdout)");
    Ok(Some(key))
}

/// Stores a bootstrap admin key's record (its secret only as `phc`) and audits it.
async fn store_admin(
    state: &AppState,
    id: &str,
    prefix: &str,
    phc: String,
    detail: serde_json::Value,
) -> Result<(), BootstrapError> {
    let mut record = KeyRecord::new(id, LEGACY_ADMIN_ACTOR, Role::Admin, BOOTSTRAP_ACTOR);
    record.prefix = prefix.to_string();
    state
        .store
        .create(StoredKey {
            record,
            secret_hash: phc,
        })
        .await?;
    state
        .audit(
            BOOTSTRAP_ACTOR,
            "bootstrap",
            Some(id.to_string()),
            None,
            true,
            detail,
        )
        .await?;
    Ok(())
}

/// The banner the binary prints to stdout around a minted bootstrap key.
pub fn banner(key: &GeneratedKey) -> String {
    let rule = "=".repeat(78);
    format!(
        "{rule}\ninfergate admin key (shown once, store it now):\n\n    {}\n\nkey id: {} (role admin). Only its argon2id hash is stored; it cannot be shown again.\n{rule}\n",
        key.expose(),
        key.id
    )
}
