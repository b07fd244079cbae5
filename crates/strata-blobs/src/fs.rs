//! The filesystem blob store: one file per blob under `objects/<first two hex digits>/<key>`.
//!
//! A put writes the bytes to a fresh file under `tmp/`, flushes it to disk (`fsync`), renames
//! it into place (atomic on one filesystem) and flushes the directory, so a blob appears whole
//! or not at all, and stays after a power cut. Writers that died leave only `tmp/` files, which
//! no key reaches; [`FsBlobStore::open`] sweeps those older than [`STALE_TMP`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;

use crate::{BlobError, BlobKey, BlobStore};

/// A `tmp/` file older than this belongs to a writer that died.
pub const STALE_TMP: Duration = Duration::from_secs(3600);

/// The embedded store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    max_bytes: usize,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> BlobError {
    BlobError::Engine(format!("{what} {}: {e}", path.display()))
}

impl FsBlobStore {
    /// Opens (creating when missing) a store in `root` that accepts blobs up to `max_bytes`.
    pub fn open(root: &Path, max_bytes: usize) -> Result<Self, BlobError> {
        for dir in [root.join("objects"), root.join("tmp")] {
            std::fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
        }
        let store = Self {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                max_bytes,
            }),
        };
        store.sweep_tmp(STALE_TMP);
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where a key's file is.
    pub fn path_of(&self, key: &BlobKey) -> PathBuf {
        let k = key.as_str();
        self.inner.root.join("objects").join(&k[..2]).join(k)
    }

    /// Removes `tmp/` files older than `age`: what writers that died left. Returns how many.
    pub fn sweep_tmp(&self, age: Duration) -> usize {
        let dir = self.inner.root.join("tmp");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.filter_map(Result::ok) {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|e| e >= age);
            if old && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, dir = %dir.display(), "Removed unfinished blob writes left by writers that stopped.");
        }
        removed
    }

    fn put_blocking(&self, bytes: &[u8]) -> Result<BlobKey, BlobError> {
        let key = BlobKey::of(bytes);
        let path = self.path_of(&key);
        if path.exists() {
            return Ok(key);
        }
        let tmp = self.inner.root.join("tmp").join(format!(
            "{}.{:016x}.partial",
            key.as_str(),
            rand::rng().random::<u64>()
        ));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| io("cannot create", &tmp, e))?;
            f.write_all(bytes)
                .map_err(|e| io("cannot write", &tmp, e))?;
            f.sync_all().map_err(|e| io("cannot flush", &tmp, e))?;
            let dir = path.parent().unwrap_or(&self.inner.root);
            std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io("cannot move into place", &path, e))?;
            sync_dir(dir)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map(|()| key)
    }
}

/// Flushes a directory, so a rename into it survives a power cut.
fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot flush directory", dir, e))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BlobError::Engine(format!("blob task failed: {e}")))?
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn put(&self, bytes: Vec<u8>) -> Result<BlobKey, BlobError> {
        if bytes.len() > self.inner.max_bytes {
            return Err(BlobError::TooLarge {
                size: bytes.len(),
                max: self.inner.max_bytes,
            });
        }
        let store = self.clone();
        blocking(move || store.put_blocking(&bytes)).await
    }

    async fn get(&self, key: &BlobKey) -> Result<Option<Vec<u8>>, BlobError> {
        let path = self.path_of(key);
        let key = key.clone();
        blocking(move || match std::fs::read(&path) {
            Ok(bytes) if BlobKey::of(&bytes) == key => Ok(Some(bytes)),
            Ok(_) => Err(BlobError::Corrupt { key }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("cannot read", &path, e)),
        })
        .await
    }

    async fn exists(&self, key: &BlobKey) -> Result<bool, BlobError> {
        let path = self.path_of(key);
        blocking(move || {
            path.try_exists()
                .map_err(|e| io("cannot look at", &path, e))
        })
        .await
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool, BlobError> {
        let path = self.path_of(key);
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io("cannot remove", &path, e)),
        })
        .await
    }
}
