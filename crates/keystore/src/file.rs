//! The embedded default key store: one YAML file, written atomically under a lock, reloaded
//! when it changes.
//!
//! # The document (version 2)
//!
//! ```yaml
//! version: 2
//! keys: {}          # legacy plaintext keys in the FastAPI seed's shape; never touched here
//! hashed_keys:      # id → record fields + secret_hash
//!   4f7k2m9x1q0a:
//!     id: 4f7k2m9x1q0a
//!     name: ci
//!     role: user
//!     prefix: igk
//!     created_at: 2026-01-19T10:00:00.123456789Z
//!     created_by: cli
//!     expires_at: null
//!     revoked_at: null
//!     rate_limit: null
//!     models: null
//!     metadata: {}
//!     rotated_to: null
//!     secret_hash: $argon2id$v=19$m=19456,t=2,p=1$…
//! ```
//!
//! - A seed file (`keys:` only, YAML or JSON, no `version`) loads with no hashed keys; an empty
//!   or missing file is an empty store. Unknown top-level fields and versions above 2 are
//!   refused rather than dropped on the next write.
//! - The `keys:` section is carried over as read on every write (re-serialized, so equal in
//!   meaning, not in bytes) and exposed by [`FileKeyStore::legacy_keys`].
//! - A file named `*.json` (the seed's `keys.json`) is written as JSON with the same fields, so
//!   tools that read the seed's file as JSON keep working; any other name is written as YAML.
//!
//! # Writes
//!
//! Every write, from any number of stores and processes on one file: exclusive lock on
//! `<file>.lock` → re-read the file (another writer may have changed it) → apply the change →
//! write `<file>.tmp.<pid>.<n>` → fsync → rename over the file → fsync the directory → unlock.
//! Readers therefore see the old file or the new one, never a mix, and no update is lost. A
//! file that does not parse is never overwritten: writes fail until it is fixed. A new file is
//! created with mode 0600; an existing file keeps its mode.
//!
//! The audit log is `<file>.audit.jsonl`: one JSON entry per line, appended under the same lock
//! and fsynced. Usage is `<file>.usage.json` (id → days), merged and rewritten atomically under
//! the same lock once per gateway flush.
//!
//! # Reads
//!
//! `get` and `list` serve an in-memory snapshot, refreshed by this store's own writes and, for
//! writes by others, by [`FileKeyStore::watch`] (or [`FileKeyStore::reload_if_changed`]).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use tokio::sync::broadcast;

mod atomic;
mod document;
mod watch;

use self::atomic::{
    io_error, lock_exclusive, parent_dir, private_options, replace_file, sibling, sync_dir,
};
pub use self::document::FORMAT_VERSION;
use self::document::{Document, read_document};
pub use self::watch::WatchGuard;
use self::watch::{Fingerprint, current_fingerprint};
use crate::memory::{CHANGE_CAPACITY, audit_page_of};
use crate::{
    AuditEntry, AuditQuery, KeyChange, KeyPatch, KeyRecord, KeyStore, KeyStoreError, ListQuery,
    Page, StaticKey, StoredKey, page_of,
};

/// What the store serves reads from.
#[derive(Default)]
struct Snapshot {
    keys: HashMap<String, StoredKey>,
    /// Parsed at load so a bad legacy section fails the load, not a later caller.
    legacy: Vec<StaticKey>,
}

struct Inner {
    path: PathBuf,
    /// `path` for messages.
    shown: String,
    lock_path: PathBuf,
    audit_path: PathBuf,
    /// `<file>.usage.json`: id → [`crate::usage::UsageBook`], rewritten whole per flush.
    usage_path: PathBuf,
    /// Written as JSON rather than YAML (a `.json` file: the seed's, which tools expecting
    /// JSON may still read).
    json: bool,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Serializes reloads and this store's writes, so snapshots are installed in file order;
    /// holds the fingerprint of the file the snapshot was last synced with.
    sync: Mutex<Option<Fingerprint>>,
    changes: broadcast::Sender<KeyChange>,
    last_error: Mutex<Option<String>>,
}

/// The key store kept in one YAML file. See the [module docs](self).
pub struct FileKeyStore {
    inner: Arc<Inner>,
}

/// Locks, recovering from poisoning: the guarded values are replaced whole, never left
/// half-updated, so they are still good after a panic elsewhere.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn diff(old: &Snapshot, new: &Snapshot) -> Vec<KeyChange> {
    let mut changes = Vec::new();
    if old.legacy != new.legacy {
        changes.push(KeyChange::All);
    }
    let ids: BTreeSet<&String> = old.keys.keys().chain(new.keys.keys()).collect();
    for id in ids {
        if old.keys.get(id) != new.keys.get(id) {
            changes.push(KeyChange::Key(id.clone()));
        }
    }
    changes
}

impl Inner {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Installs a snapshot and announces what changed. Call with `sync` held.
    fn install(&self, new: Snapshot) {
        let new = Arc::new(new);
        let old = std::mem::replace(
            &mut *self
                .snapshot
                .write()
                .unwrap_or_else(PoisonError::into_inner),
            new.clone(),
        );
        for change in diff(&old, &new) {
            // No subscriber is not an error: nobody has a cache to drop.
            let _ = self.changes.send(change);
        }
    }

    fn set_error(&self, e: Option<&KeyStoreError>) {
        *lock(&self.last_error) = e.map(ToString::to_string);
    }

    /// Applies `change` to the current file under the lock (blocking). Nothing is written if
    /// `change` fails.
    fn modify<T>(
        &self,
        change: impl FnOnce(&mut Document) -> Result<T, KeyStoreError>,
    ) -> Result<T, KeyStoreError> {
        let mut synced = lock(&self.sync);
        let file_lock = lock_exclusive(&self.lock_path)?;
        let (mut doc, legacy, _) = read_document(&self.path, &self.shown)?;
        let out = change(&mut doc)?;
        doc.version = Some(FORMAT_VERSION);
        if doc.keys.is_null() {
            doc.keys = serde_yaml::Value::Mapping(serde_yaml::Mapping::new());
        }
        let text = if self.json {
            serde_json::to_string_pretty(&doc)
                .map(|t| t + "\n")
                .map_err(|e| e.to_string())
        } else {
            serde_yaml::to_string(&doc).map_err(|e| e.to_string())
        }
        // Only a `.json` file holding YAML-only constructs (non-string keys) can fail here;
        // reported as a write error, with the file left as it was.
        .map_err(|e| io_error("write keys file", &self.path)(io::Error::other(e)))?;
        replace_file(&self.path, &text)?;
        // Still under the lock, so this is the version just written, and the watcher will not
        // reload it again.
        *synced = current_fingerprint(&self.path).ok().flatten();
        let keys = doc
            .hashed_keys
            .into_iter()
            .collect::<HashMap<String, StoredKey>>();
        self.install(Snapshot { keys, legacy });
        self.set_error(None);
        drop(file_lock);
        Ok(out)
    }

    fn reload_if_changed(&self) -> Result<bool, KeyStoreError> {
        let mut synced = lock(&self.sync);
        let now = current_fingerprint(&self.path)?;
        if now == *synced {
            return Ok(false);
        }
        match read_document(&self.path, &self.shown) {
            Ok((doc, legacy, fp)) => {
                *synced = fp;
                let keys = doc.hashed_keys.into_iter().collect();
                self.install(Snapshot { keys, legacy });
                self.set_error(None);
                Ok(true)
            }
            Err(e) => {
                // Remember the broken version so it is not re-parsed every poll; the next edit
                // changes the fingerprint and is tried again.
                *synced = now;
                self.set_error(Some(&e));
                Err(e)
            }
        }
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<(), KeyStoreError> {
        let path = &self.audit_path;
        // Cannot fail for this type; reported as a write error if it ever does.
        let mut line = serde_json::to_string(entry).map_err(|e| {
            io_error("append to the audit log", path)(io::Error::other(e.to_string()))
        })?;
        line.push('\n');
        let _file_lock = lock_exclusive(&self.lock_path)?;
        let mut f = private_options()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_error("append to the audit log", path))?;
        let len = f
            .metadata()
            .map_err(io_error("append to the audit log", path))?
            .len();
        if len > 0 {
            // A crash mid-append can leave a torn last line; start on a fresh line so only that
            // one entry is lost.
            let mut last = [0u8; 1];
            f.seek(SeekFrom::End(-1))
                .map_err(io_error("append to the audit log", path))?;
            f.read_exact(&mut last)
                .map_err(io_error("append to the audit log", path))?;
            if last[0] != b'\n' {
                line.insert(0, '\n');
            }
        }
        f.write_all(line.as_bytes())
            .map_err(io_error("append to the audit log", path))?;
        f.sync_all()
            .map_err(io_error("append to the audit log", path))?;
        if len == 0 {
            let dir = parent_dir(path);
            sync_dir(dir).map_err(io_error("sync the directory", dir))?;
        }
        Ok(())
    }

    fn read_usage(&self) -> Result<HashMap<String, crate::usage::UsageBook>, KeyStoreError> {
        let path = &self.usage_path;
        match fs::read(path) {
            Ok(b) if b.is_empty() => Ok(HashMap::new()),
            Ok(b) => serde_json::from_slice(&b).map_err(|e| KeyStoreError::Parse {
                path: path.display().to_string(),
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HashMap::new()),
            Err(e) => Err(io_error("read the usage file", path)(e)),
        }
    }

    /// Merges a flush into the usage file under the store's lock (written atomically, as the
    /// keys file is).
    fn record_usage(&self, batch: &[crate::UsageDelta]) -> Result<(), KeyStoreError> {
        let _file_lock = lock_exclusive(&self.lock_path)?;
        let mut books = self.read_usage()?;
        let now = chrono::Utc::now();
        for d in batch {
            books.entry(d.id.clone()).or_default().add(d, now);
        }
        let text = serde_json::to_string(&books).map_err(|e| {
            io_error("write the usage file", &self.usage_path)(io::Error::other(e.to_string()))
        })?;
        replace_file(&self.usage_path, &text)
    }

    fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, KeyStoreError> {
        let path = &self.audit_path;
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("read the audit log", path)(e)),
        };
        let text = String::from_utf8_lossy(&bytes);
        let entries = text
            .lines()
            // A line that does not parse is a torn append (see `append_audit`); skipping it
            // keeps the rest of the log readable.
            .filter_map(|line| serde_json::from_str::<AuditEntry>(line).ok())
            .filter(|e| query.matches(e))
            .collect();
        Ok(audit_page_of(entries, query))
    }
}

impl FileKeyStore {
    /// Opens the store kept in `path` (loading it now; a missing file is an empty store,
    /// created by the first write). Blocking: call it at startup or from a blocking context.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, KeyStoreError> {
        let path = path.into();
        let shown = path.display().to_string();
        let (doc, legacy, fp) = read_document(&path, &shown)?;
        let keys = doc.hashed_keys.into_iter().collect();
        Ok(Self {
            inner: Arc::new(Inner {
                lock_path: sibling(&path, ".lock"),
                audit_path: sibling(&path, ".audit.jsonl"),
                usage_path: sibling(&path, ".usage.json"),
                json: path
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("json")),
                path,
                shown,
                snapshot: RwLock::new(Arc::new(Snapshot { keys, legacy })),
                sync: Mutex::new(fp),
                changes: broadcast::channel(CHANGE_CAPACITY).0,
                last_error: Mutex::new(None),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Where the audit log is appended.
    pub fn audit_path(&self) -> &Path {
        &self.inner.audit_path
    }

    /// How many hashed keys the file holds (for `check-config`).
    pub fn hashed_count(&self) -> usize {
        self.inner.snapshot().keys.len()
    }

    /// The plaintext keys of the `keys:` section as last loaded, for a
    /// [`StaticKeyStore`](crate::StaticKeyStore).
    pub fn legacy_keys(&self) -> Vec<StaticKey> {
        self.inner.snapshot().legacy.clone()
    }

    /// Why the last reload failed, while the store keeps serving the last good version; `None`
    /// once a reload or write succeeds. The message names the file, never a key.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.inner.last_error).clone()
    }

    /// Reloads the file if it changed since this store last read or wrote it, announcing what
    /// changed on the feed. On error the last good snapshot stays (and
    /// [`last_error`](Self::last_error) says why). Blocking; [`watch`](Self::watch) calls it.
    pub fn reload_if_changed(&self) -> Result<bool, KeyStoreError> {
        self.inner.reload_if_changed()
    }

    /// Runs blocking file work off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, KeyStoreError> + Send + 'static,
    ) -> Result<T, KeyStoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| KeyStoreError::Unavailable(format!("file store task failed: {e}")))?
    }
}

impl std::fmt::Debug for FileKeyStore {
    // The path and a count: the snapshot holds legacy plaintext keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKeyStore")
            .field("path", &self.inner.path)
            .field("keys", &self.inner.snapshot().keys.len())
            .finish()
    }
}

#[async_trait::async_trait]
impl KeyStore for FileKeyStore {
    async fn get(&self, id: &str) -> Result<Option<StoredKey>, KeyStoreError> {
        Ok(self.inner.snapshot().keys.get(id).cloned())
    }

    async fn create(&self, key: StoredKey) -> Result<(), KeyStoreError> {
        self.blocking(move |inner| {
            inner.modify(|doc| {
                let id = key.record.id.to_string();
                if doc.hashed_keys.contains_key(&id) {
                    return Err(KeyStoreError::Conflict(id));
                }
                doc.hashed_keys.insert(id, key);
                Ok(())
            })
        })
        .await
    }

    async fn update(&self, id: &str, patch: KeyPatch) -> Result<KeyRecord, KeyStoreError> {
        let id = id.to_string();
        self.blocking(move |inner| {
            inner.modify(|doc| {
                let key = doc
                    .hashed_keys
                    .get_mut(&id)
                    .ok_or_else(|| KeyStoreError::NotFound(id.clone()))?;
                patch.apply(&mut key.record);
                Ok(key.record.clone())
            })
        })
        .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, KeyStoreError> {
        let records = self
            .inner
            .snapshot()
            .keys
            .values()
            .map(|k| k.record.clone())
            .collect();
        Ok(page_of(records, query))
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<(), KeyStoreError> {
        self.blocking(move |inner| inner.append_audit(&entry)).await
    }

    async fn record_usage(&self, batch: &[crate::UsageDelta]) -> Result<(), KeyStoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = batch.to_vec();
        self.blocking(move |inner| inner.record_usage(&batch)).await
    }

    async fn usage(
        &self,
        id: &str,
        today: chrono::NaiveDate,
        days: u64,
    ) -> Result<crate::KeyUsage, KeyStoreError> {
        let id = id.to_string();
        self.blocking(move |inner| {
            Ok(inner
                .read_usage()?
                .get(&id)
                .map(|b| b.report(today, days, crate::usage::minute_of(chrono::Utc::now())))
                .unwrap_or_default())
        })
        .await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, KeyStoreError> {
        let query = query.clone();
        self.blocking(move |inner| inner.audit(&query)).await
    }

    fn changes(&self) -> broadcast::Receiver<KeyChange> {
        self.inner.changes.subscribe()
    }

    fn backend(&self) -> &'static str {
        "file"
    }
}
