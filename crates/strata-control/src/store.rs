//! Where the cluster state lives, behind one interface: a file on one machine ([`FileStore`],
//! the embedded default), or etcd for a control plane that survives its own failures.
//!
//! Which store a process uses is its [`crate::store_options::StoreOptions`]; the etcd one is
//! [`crate::etcd::store::EtcdStore`].
//!
//! The controller that publishes must lead: a store with several controllers elects one (etcd:
//! a lease), and [`StateStore::publish`] refuses a writer that no longer leads, so a deposed or
//! frozen controller that wakes up cannot act on what it decided before. Every publish is a
//! compare-and-set on the version the writer read: two writers can never both move version 7
//! to version 8.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use crate::cluster::{self, ClusterState};

/// Why the state could not be read or published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The store did not answer (etcd without a quorum, a file that cannot be written).
    #[error("the cluster state is out of reach: {0}")]
    Unavailable(String),
    /// Someone published since the version this writer read.
    #[error("the cluster state changed meanwhile (now version {found:?})")]
    Conflict { found: Option<u64> },
    /// This controller does not lead (any more).
    #[error("this controller does not lead")]
    NotLeader,
    /// The stored state is not a cluster state.
    #[error("the stored cluster state is unreadable: {0}")]
    Corrupt(String),
    /// What is published must be the version after the one it replaces.
    #[error(
        "version {version} cannot replace version {expected}: publish version {next}, made from the one read", next = expected + 1
    )]
    NotNextVersion { expected: u64, version: u64 },
}

/// The cluster state's home.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Where the state is, for logs and `strata status`.
    fn describe(&self) -> String;

    /// The published state; `None` before the first publish.
    async fn load(&self) -> Result<Option<ClusterState>, StateError>;

    /// Publishes `next` if the stored state is still at version `expected` (`None`: nothing
    /// published yet) and this controller leads.
    async fn publish(&self, expected: Option<u64>, next: &ClusterState) -> Result<(), StateError>;

    /// A state newer than version `seen`, as soon as there is one, or `None` after `within`.
    async fn newer(&self, seen: u64, within: Duration) -> Result<Option<ClusterState>, StateError>;

    /// Waits until the controller named `id` leads. Stores with a single controller lead at
    /// once.
    async fn lead(&self, id: &str) -> Result<(), StateError>;

    /// Whether this controller still leads (it loses the lead when it cannot renew it in time).
    async fn leads(&self) -> bool;

    /// Gives up the lead (a controller that stops), so that another controller leads at once
    /// rather than when this one's lead would have expired.
    async fn resign(&self) {}
}

/// The cluster state in `DIR/postgres/cluster.json`: one machine, one controller.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// The state in `postgres_dir` (`DIR/postgres`).
    pub fn new(postgres_dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: postgres_dir.into(),
        }
    }

    /// The deployment's PostgreSQL directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self) -> Result<Option<ClusterState>, StateError> {
        cluster::read(&self.dir).map_err(|e| StateError::Corrupt(format!("{e:#}")))
    }
}

#[async_trait]
impl StateStore for FileStore {
    fn describe(&self) -> String {
        cluster::path(&self.dir).display().to_string()
    }

    async fn load(&self) -> Result<Option<ClusterState>, StateError> {
        self.read()
    }

    async fn publish(&self, expected: Option<u64>, next: &ClusterState) -> Result<(), StateError> {
        // One controller writes the file; the lock keeps the compare-and-set whole against a
        // second one started by hand.
        let dir = self.dir.clone();
        let next = next.clone();
        tokio::task::spawn_blocking(move || {
            let _lock = FileLock::take(&dir)?;
            let found = cluster::read(&dir)
                .map_err(|e| StateError::Corrupt(format!("{e:#}")))?
                .map(|s| s.version);
            if found != expected {
                return Err(StateError::Conflict { found });
            }
            cluster::write(&dir, &next).map_err(|e| {
                StateError::Unavailable(format!(
                    "cannot write {}: {e}",
                    cluster::path(&dir).display()
                ))
            })
        })
        .await
        .map_err(|e| StateError::Unavailable(e.to_string()))?
    }

    async fn newer(&self, seen: u64, within: Duration) -> Result<Option<ClusterState>, StateError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(state) = self.read()?
                && state.version > seen
            {
                return Ok(Some(state));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn lead(&self, _id: &str) -> Result<(), StateError> {
        Ok(())
    }

    async fn leads(&self) -> bool {
        true
    }
}

/// An exclusive `flock` on `DIR/postgres/cluster.lock`, released on drop (also taken to
/// publish the shard map).
pub(crate) struct FileLock;

impl FileLock {
    pub(crate) fn take(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| StateError::Unavailable(e.to_string()))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("cluster.lock"))
            .map_err(|e| StateError::Unavailable(e.to_string()))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
            StateError::Unavailable(format!("cannot lock the cluster state: {e}"))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn state() -> ClusterState {
        ClusterState::first(
            "pg-1",
            [("pg-1".to_string(), "127.0.0.1:1".to_string())].into(),
            true,
        )
    }

    /// What every store guarantees, checked on one that leads and holds no state yet.
    pub(crate) async fn check_compare_and_set_and_newer(store: &dyn StateStore) {
        assert_eq!(store.load().await, Ok(None));
        let first = state();
        store.publish(None, &first).await.expect("first publish");
        assert_eq!(
            store.publish(None, &first).await,
            Err(StateError::Conflict { found: Some(1) }),
            "a second first publish is refused"
        );
        let second = first.next(|s| s.primary = None);
        store.publish(Some(1), &second).await.expect("1 -> 2");
        assert_eq!(
            store.publish(Some(1), &second).await,
            Err(StateError::Conflict { found: Some(2) }),
            "a writer that read version 1 cannot move version 2"
        );
        assert_eq!(store.load().await, Ok(Some(second.clone())));
        assert_eq!(
            store.newer(1, Duration::from_millis(10)).await,
            Ok(Some(second.clone()))
        );
        assert_eq!(store.newer(2, Duration::from_millis(150)).await, Ok(None));
        // A wait ends as soon as a newer state is published.
        let third = second.next(|s| s.primary = Some("pg-1".into()));
        let (waited, published) = tokio::join!(store.newer(2, Duration::from_secs(10)), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            store.publish(Some(2), &third).await
        });
        assert_eq!(published, Ok(()));
        assert_eq!(waited, Ok(Some(third)));
    }

    #[tokio::test]
    async fn a_publish_is_a_compare_and_set_on_the_version_and_newer_waits_for_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::new(dir.path());
        check_compare_and_set_and_newer(&store).await;
    }
}
