//! The shard map's home in the control plane: published beside the cluster state, in the same
//! store, with the same rule — a compare-and-set on the version the writer read, so two writers
//! can never both move version 7 to version 8, and (etcd) only by the controller that leads.
//!
//! - file store: `DIR/postgres/shard-map.json`, written atomically and fsynced under the cluster
//!   state's lock;
//! - etcd: the key `<prefix>/shard-map` ([`crate::etcd::store::EtcdStore`] implements
//!   [`ShardMapStore`] there).
//!
//! The map itself — slots, strategies, checks — is [`strata_store::shard::ShardMap`]; see
//! `docs/sharding.md`.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use strata_store::shard::ShardMap;

use crate::store::{FileLock, FileStore, StateError};

/// The file, under the deployment's PostgreSQL directory.
pub const SHARD_MAP_FILE: &str = "shard-map.json";

/// Where the shard map is published and read.
#[async_trait]
pub trait ShardMapStore: Send + Sync {
    /// The published map; `None` before the first publish.
    async fn shard_map(&self) -> Result<Option<ShardMap>, StateError>;

    /// Publishes `map` if the stored map is still at version `expected` (`None`: none yet) and
    /// `map` is the next version (`expected + 1`, or any first version), and this controller
    /// leads.
    async fn publish_shard_map(
        &self,
        expected: Option<u64>,
        map: &ShardMap,
    ) -> Result<(), StateError>;
}

/// Refuses a map whose version is not the one after `expected`.
pub fn check_next(expected: Option<u64>, map: &ShardMap) -> Result<(), StateError> {
    match expected {
        Some(v) if map.version() != v + 1 => Err(StateError::NotNextVersion {
            expected: v,
            version: map.version(),
        }),
        _ => Ok(()),
    }
}

/// Reads a stored map, refusing one that is not a valid shard map.
pub fn decode(bytes: &[u8], place: &str) -> Result<ShardMap, StateError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StateError::Corrupt(format!("{place} is not a valid shard map: {e}")))
}

/// The file of the map in a deployment's PostgreSQL directory.
pub fn path(postgres_dir: &Path) -> PathBuf {
    postgres_dir.join(SHARD_MAP_FILE)
}

fn read(dir: &Path) -> Result<Option<ShardMap>, StateError> {
    let path = path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => decode(&bytes, &path.display().to_string()).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::Unavailable(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Writes the file atomically and durably: a temporary file written and fsynced, renamed over
/// the old one, the directory fsynced.
fn write(dir: &Path, map: &ShardMap) -> std::io::Result<()> {
    use std::io::Write as _;
    let path = path(dir);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(map).map_err(std::io::Error::other)?;
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&text)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl ShardMapStore for FileStore {
    async fn shard_map(&self) -> Result<Option<ShardMap>, StateError> {
        read(self.dir())
    }

    async fn publish_shard_map(
        &self,
        expected: Option<u64>,
        map: &ShardMap,
    ) -> Result<(), StateError> {
        check_next(expected, map)?;
        let dir = self.dir().to_path_buf();
        let map = map.clone();
        tokio::task::spawn_blocking(move || {
            let _lock = FileLock::take(&dir)?;
            let found = read(&dir)?.map(|m| m.version());
            if found != expected {
                return Err(StateError::Conflict { found });
            }
            write(&dir, &map).map_err(|e| {
                StateError::Unavailable(format!("cannot write {}: {e}", path(&dir).display()))
            })
        })
        .await
        .map_err(|e| StateError::Unavailable(e.to_string()))?
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use strata_core::user::UserId;
    use strata_store::shard::{ShardGroup, Strategy};

    use super::*;

    fn group(name: &str) -> ShardGroup {
        ShardGroup::parse(name).expect("a group name")
    }

    /// What every store guarantees of the shard map, checked on one that leads and holds none.
    pub(crate) async fn check_shard_map_compare_and_set(store: &dyn ShardMapStore) {
        assert_eq!(store.shard_map().await, Ok(None));
        let first = ShardMap::even(Strategy::Hash, vec![group("s1"), group("s2")]).expect("map");
        store
            .publish_shard_map(None, &first)
            .await
            .expect("first publish");
        assert_eq!(
            store.publish_shard_map(None, &first).await,
            Err(StateError::Conflict { found: Some(1) }),
            "a second first publish is refused"
        );
        let second = first
            .split(vec![group("s3"), group("s4")])
            .expect("split")
            .map;
        assert_eq!(
            store.publish_shard_map(Some(0), &first).await,
            Err(StateError::Conflict { found: Some(1) })
        );
        let skipped = second.pin(UserId(7), group("s4")).expect("pin");
        assert_eq!(
            store.publish_shard_map(Some(1), &skipped).await,
            Err(StateError::NotNextVersion {
                expected: 1,
                version: 3
            }),
            "a version must follow the one it replaces"
        );
        store
            .publish_shard_map(Some(1), &second)
            .await
            .expect("1 -> 2");
        assert_eq!(
            store.publish_shard_map(Some(1), &second).await,
            Err(StateError::Conflict { found: Some(2) }),
            "a writer that read version 1 cannot move version 2"
        );
        store
            .publish_shard_map(Some(2), &skipped)
            .await
            .expect("2 -> 3");
        assert_eq!(store.shard_map().await, Ok(Some(skipped.clone())));
        assert_eq!(
            store
                .shard_map()
                .await
                .ok()
                .flatten()
                .map(|m| m.group_of(UserId(7)).clone()),
            Some(group("s4"))
        );
    }

    #[tokio::test]
    async fn the_shard_map_is_published_by_compare_and_set_in_the_file_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::new(dir.path());
        check_shard_map_compare_and_set(&store).await;
        // Beside the cluster state, which it leaves alone.
        assert!(path(dir.path()).exists());
        assert_eq!(
            crate::store::StateStore::load(&store).await,
            Ok(None),
            "the cluster state is untouched"
        );
    }

    #[tokio::test]
    async fn a_stored_map_with_an_impossible_layout_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            path(dir.path()),
            r#"{"version":1,"strategy":"hash","groups":["s1"],"slots":[{"slots":"0-4095","group":"s1"}],"pins":{"5":"vip"}}"#,
        )
        .expect("write");
        let e = FileStore::new(dir.path())
            .shard_map()
            .await
            .expect_err("refused");
        assert!(
            e.to_string()
                .contains("user 5 is pinned to shard group vip, which the map does not list"),
            "{e}"
        );
    }
}
