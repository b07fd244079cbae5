//! Where a deployment's shard map lives: created once, followed by every router, published by
//! the resharder with a compare-and-set on its version.
//!
//! Two homes exist. [`FileMapHome`] is the file `DATA/shard-map.json` (one machine: the API
//! servers and the resharder share the data directory). The control plane's etcd is the other
//! (`strata_control::map_home::EtcdMapHome`, the key `PREFIX/shard-map`): routers on any
//! machine follow it. The data tier may not depend on the control plane, so it reads and
//! publishes through [`MapHome`], and the binary plugs the etcd home in.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::StoreError;
use crate::embedded_shards::{map_path, publish_map, write_new};
use crate::reshard::run::MapPublisher;
use crate::shard::ShardMap;
use crate::shard::source::{ShardMapSource, read_map_file};

/// A shard map's home.
#[async_trait]
pub trait MapHome: Send + Sync + 'static {
    /// The published map; `None` before the first.
    async fn load(&self) -> Result<Option<ShardMap>, StoreError>;
    /// Publishes `map` as the first map. `false`: another was published first (keep it).
    async fn create(&self, map: &ShardMap) -> Result<bool, StoreError>;
    /// Publishes `map` if the published map is still version `expected` and `map` is the next.
    async fn publish(&self, expected: u64, map: &ShardMap) -> Result<(), StoreError>;
    /// Where it is, for messages (never a password).
    fn place(&self) -> String;
}

/// Refuses a map that is not the one after `expected` (every home's rule).
pub fn check_next(
    place: &str,
    found: Option<u64>,
    expected: u64,
    map: &ShardMap,
) -> Result<(), StoreError> {
    match found {
        Some(v) if v == expected && map.version() == expected + 1 => Ok(()),
        Some(v) => Err(StoreError::Unavailable(format!(
            "the shard map in {place} changed under this resharding (now version {v}, expected {expected}): run the command again to resume"
        ))),
        None => Err(StoreError::Unavailable(format!(
            "no shard map is published in {place}"
        ))),
    }
}

/// The map file of a data directory.
pub struct FileMapHome {
    data: PathBuf,
}

impl FileMapHome {
    pub fn new(data: impl Into<PathBuf>) -> Self {
        Self { data: data.into() }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("the shard map task failed: {e}")))?
}

#[async_trait]
impl MapHome for FileMapHome {
    async fn load(&self) -> Result<Option<ShardMap>, StoreError> {
        let path = map_path(&self.data);
        blocking(move || {
            if path.exists() {
                read_map_file(&path).map(Some)
            } else {
                Ok(None)
            }
        })
        .await
    }

    async fn create(&self, map: &ShardMap) -> Result<bool, StoreError> {
        let (path, map) = (map_path(&self.data), map.clone());
        blocking(move || write_new(&path, &map)).await
    }

    async fn publish(&self, expected: u64, map: &ShardMap) -> Result<(), StoreError> {
        let (data, map) = (self.data.clone(), map.clone());
        blocking(move || publish_map(&data, expected, &map)).await
    }

    fn place(&self) -> String {
        map_path(&self.data).display().to_string()
    }
}

/// A home as the routers' source: the published map, an error before the first.
pub struct HomeSource(pub Arc<dyn MapHome>);

impl HomeSource {
    /// The map published in `home`; an error before the first.
    pub async fn current_of(home: &dyn MapHome) -> Result<ShardMap, StoreError> {
        home.load().await?.ok_or_else(|| {
            StoreError::Unavailable(format!("no shard map is published in {}", home.place()))
        })
    }
}

#[async_trait]
impl ShardMapSource for HomeSource {
    async fn current(&self) -> Result<ShardMap, StoreError> {
        Self::current_of(self.0.as_ref()).await
    }
}

/// A home as the resharder's publisher.
pub struct HomePublisher(pub Arc<dyn MapHome>);

#[async_trait]
impl MapPublisher for HomePublisher {
    async fn current(&self) -> Result<ShardMap, StoreError> {
        HomeSource::current_of(self.0.as_ref()).await
    }

    async fn publish(&self, expected: u64, map: &ShardMap) -> Result<(), StoreError> {
        self.0.publish(expected, map).await
    }
}

/// A shared handle on a home, as an option of a process (cloned with its options).
#[derive(Clone)]
pub struct MapHomeHandle(pub Arc<dyn MapHome>);

impl PartialEq for MapHomeHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for MapHomeHandle {}

impl std::fmt::Debug for MapHomeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MapHome({})", self.0.place())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::{ShardGroup, Strategy};

    fn groups(n: usize) -> Vec<ShardGroup> {
        (1..=n)
            .map(|i| ShardGroup::parse(&format!("s{i}")).expect("name"))
            .collect()
    }

    #[tokio::test]
    async fn the_file_home_is_created_once_and_published_by_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = FileMapHome::new(dir.path());
        assert!(home.load().await.expect("load").is_none());
        let first = ShardMap::even(Strategy::Hash, groups(2)).expect("map");
        assert!(home.create(&first).await.expect("create"));
        let other = ShardMap::even(Strategy::Hash, groups(3)).expect("map");
        assert!(!home.create(&other).await.expect("create"), "one first map");
        let loaded = home.load().await.expect("load").expect("a map");
        assert_eq!(loaded.groups().len(), 2);
        let v = loaded.version();
        let next = loaded
            .add_group(ShardGroup::parse("s3").expect("name"))
            .expect("add");
        home.publish(v, &next).await.expect("publish");
        assert!(
            home.publish(v, &next).await.is_err(),
            "the same version twice"
        );
        let source = HomeSource(Arc::new(home));
        assert_eq!(source.current().await.expect("map").version(), v + 1);
    }
}
