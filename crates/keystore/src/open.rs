//! Opening the key store a configuration names (`key_store:` / `KEY_STORE`), for both services:
//! `file` (the default, optionally watched so edits by the CLI or another process are seen),
//! `redis` (shared by every replica) or `memory` (tests; lost on exit). It reads the settings
//! `infergate-config` parsed, as `infergate-tokens` reads its own.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use infergate_config::{KeyStoreBackend, KeyStoreSettings};

use crate::file::{FileKeyStore, WatchGuard};
use crate::memory::MemoryKeyStore;
use crate::redis::RedisKeyStore;
use crate::{KeyStore, KeyStoreError};

/// An opened store and whatever keeps it fresh (dropping the guard stops the file watcher).
pub struct OpenedStore {
    pub store: Arc<dyn KeyStore>,
    /// The same store, when it is the file store (its legacy section and reloads need it).
    pub file: Option<Arc<FileKeyStore>>,
    pub watch: Option<WatchGuard>,
}

impl std::fmt::Debug for OpenedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedStore")
            .field("backend", &self.store.backend())
            .finish_non_exhaustive()
    }
}

/// Opens the store `settings` select. `watch` starts the file store's reload watcher (a
/// long-running service wants it; a one-shot command does not).
pub async fn open(settings: &KeyStoreSettings, watch: bool) -> Result<OpenedStore, KeyStoreError> {
    match settings.backend {
        KeyStoreBackend::File => {
            open_file(&settings.file, watch.then_some(settings.reload_interval))
        }
        KeyStoreBackend::Memory => Ok(OpenedStore {
            store: Arc::new(MemoryKeyStore::new()),
            file: None,
            watch: None,
        }),
        KeyStoreBackend::Redis => {
            let url = settings.redis_url.as_ref().ok_or_else(|| {
                KeyStoreError::Unavailable("the redis key store needs KEY_STORE_REDIS_URL".into())
            })?;
            let store = RedisKeyStore::connect(url.expose(), &settings.redis_prefix).await?;
            Ok(OpenedStore {
                store: Arc::new(store),
                file: None,
                watch: None,
            })
        }
    }
}

/// Opens a file store at `path` (created on first write), watched every `reload` when given.
pub fn open_file(path: &Path, reload: Option<Duration>) -> Result<OpenedStore, KeyStoreError> {
    let file = Arc::new(FileKeyStore::open(path)?);
    let watch = reload.map(|every| file.watch(every));
    Ok(OpenedStore {
        store: file.clone(),
        file: Some(file),
        watch,
    })
}
