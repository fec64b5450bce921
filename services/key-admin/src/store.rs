//! Opening the configured key store: `file` (the default, watched so edits by the CLI or another
//! process are seen), `redis` (shared with the gateways) or `memory` (tests; lost on exit).

use std::path::Path;
use std::sync::Arc;

use infergate_config::{KeyStoreBackend, KeyStoreSettings};
use infergate_keystore::redis::RedisKeyStore;
use infergate_keystore::{FileKeyStore, KeyStore, KeyStoreError, MemoryKeyStore, WatchGuard};

/// A store and whatever keeps it fresh (dropping the guard stops the file watcher).
pub struct OpenedStore {
    pub store: Arc<dyn KeyStore>,
    pub watch: Option<WatchGuard>,
}

impl std::fmt::Debug for OpenedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedStore")
            .field("backend", &self.store.backend())
            .finish_non_exhaustive()
    }
}

/// Opens the store `settings` select. `watch` starts the file store's reload watcher (the
/// long-running service wants it; a one-shot CLI command does not).
pub async fn open(settings: &KeyStoreSettings, watch: bool) -> Result<OpenedStore, KeyStoreError> {
    match settings.backend {
        KeyStoreBackend::File => {
            open_file(&settings.file, watch.then_some(settings.reload_interval))
        }
        KeyStoreBackend::Memory => Ok(OpenedStore {
            store: Arc::new(MemoryKeyStore::new()),
            watch: None,
        }),
        KeyStoreBackend::Redis => {
            let url = settings.redis_url.as_ref().ok_or_else(|| {
                KeyStoreError::Unavailable("the redis key store needs KEY_STORE_REDIS_URL".into())
            })?;
            let store = RedisKeyStore::connect(url.expose(), &settings.redis_prefix).await?;
            Ok(OpenedStore {
                store: Arc::new(store),
                watch: None,
            })
        }
    }
}

/// Opens a file store at `path` (created on first write), watched every `reload` when given.
pub fn open_file(
    path: &Path,
    reload: Option<std::time::Duration>,
) -> Result<OpenedStore, KeyStoreError> {
    let store = Arc::new(FileKeyStore::open(path)?);
    let watch = reload.map(|every| store.watch(every));
    Ok(OpenedStore { store, watch })
}
