//! Opening the key store the configuration names, and keeping the plaintext (legacy) keys in step
//! with the keys file.

use std::sync::Arc;

use infergate_config::{ConfigError, GatewayConfig, KeyStoreBackend};
use infergate_keystore::file::FileKeyStore;
use infergate_keystore::{
    KeyChange, KeyStore, KeyVerifier, OpenedStore, StaticKey, StaticKeyStore,
};

use crate::state::env_keys;

fn store_error(setting: &str, value: String, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid(setting, value, format!("a usable key store ({e})"))
}

/// Opens the configured store (watched, when it is the file store); errors name the setting.
/// A missing keys file is an empty store (created on first write).
pub async fn open(cfg: &GatewayConfig) -> Result<OpenedStore, ConfigError> {
    let ks = &cfg.key_store;
    infergate_keystore::open::open(ks, true)
        .await
        .map_err(|e| match ks.backend {
            KeyStoreBackend::Redis => store_error(
                "KEY_STORE_REDIS_URL",
                ks.redis_url
                    .as_ref()
                    .map(|u| u.masked())
                    .unwrap_or_default(),
                e,
            ),
            _ => store_error(
                cfg.setting_name("auth.keys_file"),
                ks.file.display().to_string(),
                e,
            ),
        })
}

/// Opens the file store without watching it: what `check-config` reads (no other backend is
/// contacted by a check).
pub fn open_file(cfg: &GatewayConfig) -> Result<Option<FileKeyStore>, ConfigError> {
    let ks = &cfg.key_store;
    if ks.backend != KeyStoreBackend::File {
        return Ok(None);
    }
    FileKeyStore::open(ks.file.clone()).map(Some).map_err(|e| {
        store_error(
            cfg.setting_name("auth.keys_file"),
            ks.file.display().to_string(),
            e,
        )
    })
}

/// Plaintext keys: the environment's, plus the keys file's legacy section, and a warning for each
/// weak one (an error for one too short to accept).
pub fn legacy_keys(
    cfg: &GatewayConfig,
    file: Option<&FileKeyStore>,
) -> Result<(Vec<StaticKey>, Vec<String>), ConfigError> {
    let mut keys = env_keys(cfg)?;
    if let Some(file) = file {
        keys.extend(file.legacy_keys());
    }
    let warnings = crate::state::check_static_keys(cfg, &keys)?;
    Ok((keys, warnings))
}

/// Rebuilds the plaintext keys whenever the keys file changes as a whole.
pub fn spawn_legacy_reloader(
    cfg: GatewayConfig,
    file: Arc<FileKeyStore>,
    verifier: Arc<KeyVerifier>,
) {
    let mut rx = file.changes();
    let weak = Arc::downgrade(&verifier);
    drop(verifier);
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(KeyChange::All) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Ok(KeyChange::Key(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
            let Some(verifier) = weak.upgrade() else {
                return;
            };
            let mut keys = match env_keys(&cfg) {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(error = %e, "reloading keys");
                    continue;
                }
            };
            keys.extend(file.legacy_keys());
            match StaticKeyStore::new(keys) {
                Ok(s) => {
                    tracing::info!(keys = s.len(), "keys file reloaded");
                    verifier.set_legacy(s);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "keys file reload refused; keeping the previous keys")
                }
            }
        }
    });
}
