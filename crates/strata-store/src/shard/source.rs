//! Where a router reads the newest shard map from.
//!
//! The control plane publishes maps (`strata-control`'s `ShardMapStore`: a file beside the
//! cluster state, or an etcd key); the data tier cannot depend on it, so the router reads
//! through [`ShardMapSource`] and the binary plugs the control plane in. [`FileMapSource`]
//! reads the file store's JSON document directly, which is all an API server needs on one
//! machine.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;

use super::map::ShardMap;
use crate::StoreError;

/// The newest published shard map.
#[async_trait]
pub trait ShardMapSource: Send + Sync + 'static {
    async fn current(&self) -> Result<ShardMap, StoreError>;
}

/// A map held in memory (tests, and a server told its map on the command line).
pub struct FixedMapSource(Mutex<ShardMap>);

impl FixedMapSource {
    pub fn new(map: ShardMap) -> Self {
        Self(Mutex::new(map))
    }

    /// Replaces the map (as a control plane publishing a new version would).
    pub fn publish(&self, map: ShardMap) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = map;
    }
}

#[async_trait]
impl ShardMapSource for FixedMapSource {
    async fn current(&self) -> Result<ShardMap, StoreError> {
        Ok(self.0.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// A map published as a JSON file (the control plane's file store writes it atomically).
pub struct FileMapSource {
    path: PathBuf,
}

impl FileMapSource {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads a shard map document; every layout check of [`ShardMap::new`] applies.
pub fn read_map_file(path: &Path) -> Result<ShardMap, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        StoreError::Unavailable(format!("cannot read the shard map {}: {e}", path.display()))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        StoreError::Unusable(format!(
            "the shard map {} is not a valid map: {e}",
            path.display()
        ))
    })
}

#[async_trait]
impl ShardMapSource for FileMapSource {
    async fn current(&self) -> Result<ShardMap, StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || read_map_file(&path))
            .await
            .map_err(|e| StoreError::Unavailable(format!("the shard map task failed: {e}")))?
    }
}
