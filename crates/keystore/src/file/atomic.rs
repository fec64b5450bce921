//! Writing the keys file so that readers see the old version or the new one, never a mix, and
//! writers never lose each other's updates: an exclusive lock file, a temporary sibling, fsync,
//! rename, fsync of the directory. New files are private (0600, directories 0700).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::KeyStoreError;

/// Mode of files this store creates: the hashes are not secrets, but nobody else needs them.
#[cfg(unix)]
const NEW_FILE_MODE: u32 = 0o600;

/// Distinguishes temporary files of concurrent writes within one process (the pid tells
/// processes apart).
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(super) fn io_error<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> KeyStoreError + 'a {
    move |source| KeyStoreError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// Creates the directory of `path` (mode 0700: it holds key hashes and the audit log) when it
/// does not exist yet, so a first write into a fresh location succeeds.
pub(super) fn ensure_parent_dir(path: &Path) -> Result<(), KeyStoreError> {
    let dir = parent_dir(path);
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(io_error("create the directory", dir))
}

/// `<file><suffix>` next to the file.
pub(super) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub(super) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a rename or a file creation in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Directories cannot be opened for syncing elsewhere; the rename is still atomic.
        let _ = dir;
        Ok(())
    }
}

/// Options that create files with [`NEW_FILE_MODE`].
pub(super) fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(NEW_FILE_MODE);
    }
    o
}

/// Holds the exclusive lock on `<file>.lock` until dropped (closing the file releases it).
pub(super) fn lock_exclusive(lock_path: &Path) -> Result<File, KeyStoreError> {
    ensure_parent_dir(lock_path)?;
    let f = private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path)
        .map_err(io_error("open the lock file", lock_path))?;
    f.lock().map_err(io_error("lock", lock_path))?;
    Ok(f)
}

/// Replaces the file with `text`: temporary sibling, fsync, rename, fsync of the directory. The
/// temporary file is removed if anything fails.
pub(super) fn replace_file(path: &Path, text: &str) -> Result<(), KeyStoreError> {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = sibling(path, &format!(".tmp.{}.{n}", std::process::id()));
    let existing = match fs::metadata(path) {
        Ok(m) => Some(m.permissions()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error("write keys file", path)(e)),
    };
    let write = || -> Result<(), KeyStoreError> {
        let mut f = private_options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_error("write keys file", &tmp))?;
        // The operator's choice of mode survives rewrites (set explicitly: umask does not apply).
        if let Some(perms) = existing {
            f.set_permissions(perms)
                .map_err(io_error("write keys file", &tmp))?;
        }
        f.write_all(text.as_bytes())
            .map_err(io_error("write keys file", &tmp))?;
        f.sync_all().map_err(io_error("write keys file", &tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io_error("replace keys file", path))?;
        let dir = parent_dir(path);
        sync_dir(dir).map_err(io_error("sync the directory", dir))
    };
    let result = write();
    if result.is_err() {
        // Best effort: it may never have been created, or already be renamed.
        let _ = fs::remove_file(&tmp);
    }
    result
}
