//! Noticing writes by others: a cheap fingerprint of one version of the file, and the watcher
//! thread that reloads when it changes (stopped by its guard, or when the store is dropped).

use std::fs;
use std::io;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::atomic::io_error;
use super::{FileKeyStore, lock};
use crate::KeyStoreError;

/// Identifies one version of the file cheaply: a rename gives a new inode, an in-place edit a
/// new mtime/ctime or length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    dev: u64,
    #[cfg(unix)]
    inode: u64,
    /// Unlike mtime, no tool can set it back, so `cp -p` over the file is noticed too.
    #[cfg(unix)]
    ctime: (i64, i64),
}

impl Fingerprint {
    pub(super) fn of(m: &fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Self {
            modified: m.modified().ok(),
            len: m.len(),
            #[cfg(unix)]
            dev: m.dev(),
            #[cfg(unix)]
            inode: m.ino(),
            #[cfg(unix)]
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

pub(super) fn current_fingerprint(path: &Path) -> Result<Option<Fingerprint>, KeyStoreError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(Fingerprint::of(&m))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read keys file", path)(e)),
    }
}

impl FileKeyStore {
    /// Polls the file every `every` (at least 1 ms; the gateway uses 250 ms) on a dedicated OS
    /// thread, so it works under any async runtime or none, reloading it when it changes.
    ///
    /// The thread holds only a `Weak` reference, so it never keeps the store alive, and exits
    /// when the store is gone. Dropping the guard stops it at once and waits for it. If the OS
    /// refuses a thread, the guard is inert and [`last_error`](Self::last_error) says so.
    pub fn watch(self: &Arc<Self>, every: Duration) -> WatchGuard {
        let store: Weak<Self> = Arc::downgrade(self);
        let every = every.max(Duration::from_millis(1));
        let (stop, stopped) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("keystore-file-watch".into())
            .spawn(move || {
                // The guard never sends; its sender being dropped is the stop signal, which
                // also interrupts the wait at once.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let Some(store) = store.upgrade() else {
                        return;
                    };
                    if store.inner.reload_if_changed().is_err() {
                        // The path only: the error text is kept for `last_error`.
                        tracing::warn!(
                            path = %store.inner.shown,
                            "keys file changed but cannot be loaded; still serving the last good version"
                        );
                    }
                }
            });
        match spawned {
            Ok(handle) => WatchGuard {
                stop: Some(stop),
                handle: Some(handle),
            },
            Err(e) => {
                *lock(&self.inner.last_error) = Some(format!(
                    "cannot start the watcher of {}: {e}",
                    self.inner.shown
                ));
                WatchGuard {
                    stop: None,
                    handle: None,
                }
            }
        }
    }
}

/// Stops [`FileKeyStore::watch`]'s thread when dropped.
#[derive(Debug)]
pub struct WatchGuard {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl WatchGuard {
    /// Whether a watcher thread was started (see [`FileKeyStore::watch`]).
    pub fn is_running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        // Closing the channel wakes the thread out of its wait immediately.
        drop(self.stop.take());
        if let Some(handle) = self.handle.take() {
            // A panic in the watcher has nothing left to clean up; ignoring it keeps a drop
            // from panicking in turn.
            let _ = handle.join();
        }
    }
}
