//! Read/write split over a PostgreSQL primary and its streaming replicas.
//!
//! - **Writes** (and bulk loads) go to the primary.
//! - **Reads** go to the replicas in turn (only servers in recovery count as replicas, so the
//!   list may name every server of a cluster and stay right across failovers), skipping any that is down or whose replay lag is over
//!   the bounds of [`ReplicaPolicy`] (bytes of WAL and seconds behind); with no usable replica
//!   they go to the primary. A replica that fails a read is marked down at once and the read is
//!   retried on the next candidate, the primary last, so a dead replica costs no failed read.
//! - **Read-your-writes**: a read that must see a commit token (the WAL position a write
//!   returned) goes only to a replica whose known replay position has reached it — and that
//!   replica checks again before answering — or else to the primary, which has every commit.
//!
//! A background task probes every node each [`ReplicaPolicy::probe_interval`]: replay
//! positions, health, lag in bytes (primary position − replay position) and in time (how long
//! the replica has been behind a position the primary had reached), exported as
//! `strata_db_*` metrics. It stops when the store is dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use strata_core::user::{User, UserId, UserProfile};

use crate::postgres::{PgConfig, PgStore};
use crate::{
    CommitToken, Page, Precondition, ReadRequirement, Store, StoreError, StoredUser, WriteReceipt,
};

/// When a replica may serve reads.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaPolicy {
    /// Most bytes of WAL a replica may be behind the primary.
    pub max_lag_bytes: u64,
    /// Longest a replica may have been behind.
    pub max_lag: Duration,
    /// How often every node is probed.
    pub probe_interval: Duration,
}

impl Default for ReplicaPolicy {
    fn default() -> Self {
        Self {
            max_lag_bytes: 16 * 1024 * 1024,
            max_lag: Duration::from_secs(5),
            probe_interval: Duration::from_millis(100),
        }
    }
}

/// What is known of one replica.
struct Replica {
    store: PgStore,
    /// Index in the configured list (`replica-1`, …), for metrics and logs: URLs never appear.
    label: String,
    healthy: AtomicBool,
    /// Last replay position seen.
    position: AtomicU64,
    lag_bytes: AtomicU64,
    /// When it was last seen at or past the primary's position (`None`: never yet).
    caught_up_at: Mutex<Option<Instant>>,
}

impl Replica {
    fn lag(&self) -> Duration {
        let caught_up = *self.caught_up_at.lock().unwrap_or_else(|p| p.into_inner());
        caught_up.map_or(Duration::MAX, |t| t.elapsed())
    }

    fn usable(&self, policy: &ReplicaPolicy) -> bool {
        self.healthy.load(Ordering::Acquire)
            && self.lag_bytes.load(Ordering::Acquire) <= policy.max_lag_bytes
            && self.lag() <= policy.max_lag
    }

    fn mark_down(&self) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(replica = %self.label, "replica failed a read: reads move off it");
            metrics::gauge!("strata_db_replica_healthy", "replica" => self.label.clone()).set(0.0);
        }
    }
}

struct Inner {
    primary: PgStore,
    replicas: Vec<Replica>,
    next: AtomicUsize,
    policy: ReplicaPolicy,
}

/// A primary and its replicas behind one [`Store`]. Cheap to clone.
#[derive(Clone)]
pub struct ReplicatedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ReplicatedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedStore")
            .field("primary", &self.inner.primary)
            .field("replicas", &self.inner.replicas.len())
            .finish_non_exhaustive()
    }
}

/// Which node served a read (for tests and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadNode {
    Primary,
    Replica(String),
}

impl ReplicatedStore {
    /// Wraps a connected primary; replicas are connected lazily (one that is down at start
    /// simply serves no reads until it answers a probe). Starts the probe task.
    pub fn new(primary: PgStore, replicas: &[PgConfig], policy: ReplicaPolicy) -> Self {
        let replicas = replicas
            .iter()
            .enumerate()
            .filter_map(|(i, config)| {
                let label = format!("replica-{}", i + 1);
                match PgStore::connect_lazily(config) {
                    Ok(store) => Some(Replica {
                        store,
                        label,
                        healthy: AtomicBool::new(false),
                        position: AtomicU64::new(0),
                        lag_bytes: AtomicU64::new(u64::MAX),
                        caught_up_at: Mutex::new(None),
                    }),
                    Err(e) => {
                        tracing::error!(replica = %label, error = %e, "replica not used");
                        None
                    }
                }
            })
            .collect();
        let store = Self {
            inner: Arc::new(Inner {
                primary,
                replicas,
                next: AtomicUsize::new(0),
                policy,
            }),
        };
        tokio::spawn(probe_loop(Arc::downgrade(&store.inner)));
        store
    }

    /// Probes every node once now (the background task does this on its own).
    pub async fn probe(&self) {
        probe_once(&self.inner).await;
    }

    /// The replicas that may serve a read now, starting with the next in turn.
    fn candidates(&self, need: ReadRequirement) -> Vec<&Replica> {
        let n = self.inner.replicas.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.inner.replicas[(start + i) % n])
            .filter(|r| r.usable(&self.inner.policy))
            .filter(|r| {
                need.at_least
                    .is_none_or(|t| r.position.load(Ordering::Acquire) >= t.0)
            })
            .collect()
    }

    /// The primary: accounts and sessions live there (logins are rare, and a revocation must be
    /// seen by the next request, which a lagging replica could miss).
    pub fn primary(&self) -> &PgStore {
        &self.inner.primary
    }

    /// Runs a read on the replicas (in turn) and then the primary; reports which served it.
    async fn read<T, F, Fut>(
        &self,
        need: ReadRequirement,
        f: F,
    ) -> Result<(T, ReadNode), StoreError>
    where
        F: Fn(PgStore) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        for replica in self.candidates(need) {
            match f(replica.store.clone()).await {
                Ok(v) => {
                    metrics::counter!("strata_db_reads_total", "node" => "replica").increment(1);
                    return Ok((v, ReadNode::Replica(replica.label.clone())));
                }
                // Not there yet after all (the probe was optimistic): the primary has it.
                Err(StoreError::NotYetVisible { .. }) => break,
                Err(StoreError::Unavailable(_)) => replica.mark_down(),
                Err(other) => return Err(other),
            }
        }
        metrics::counter!("strata_db_reads_total", "node" => "primary").increment(1);
        f(self.inner.primary.clone())
            .await
            .map(|v| (v, ReadNode::Primary))
    }

    /// As [`Store::get`], also saying which node answered.
    pub async fn get_from(
        &self,
        id: UserId,
        need: ReadRequirement,
    ) -> Result<(Option<StoredUser>, ReadNode), StoreError> {
        self.read(need, |store| async move { store.get(id, need).await })
            .await
    }
}

async fn probe_loop(inner: Weak<Inner>) {
    loop {
        let interval = {
            let Some(inner) = inner.upgrade() else { return };
            probe_once(&inner).await;
            inner.policy.probe_interval
        };
        tokio::time::sleep(interval).await;
    }
}

async fn probe_once(inner: &Inner) {
    let timeout = inner.policy.probe_interval.max(Duration::from_millis(500));
    let primary = tokio::time::timeout(timeout, inner.primary.position())
        .await
        .ok()
        .and_then(Result::ok);
    if let Some(p) = primary {
        metrics::gauge!("strata_db_primary_lsn").set(p.0 as f64);
    }
    for replica in &inner.replicas {
        let seen = tokio::time::timeout(timeout, replica.store.status())
            .await
            .ok()
            .and_then(Result::ok);
        let label = replica.label.clone();
        match seen {
            // A server that is not in recovery is a primary (promoted, or the primary listed
            // among the servers): it serves no replica reads.
            Some(status) if !status.in_recovery => {
                if replica.healthy.swap(false, Ordering::AcqRel) {
                    tracing::info!(replica = %label, "server is a primary now: no replica reads from it");
                }
                metrics::gauge!("strata_db_replica_healthy", "replica" => label).set(0.0);
            }
            Some(status) => {
                let pos = status.position;
                replica.position.store(pos.0, Ordering::Release);
                let lag = primary.map_or(0, |p| p.0.saturating_sub(pos.0));
                replica.lag_bytes.store(lag, Ordering::Release);
                if primary.is_none_or(|p| pos >= p) {
                    *replica
                        .caught_up_at
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                }
                if !replica.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!(replica = %label, "replica answers: reads may use it");
                }
                metrics::gauge!("strata_db_replica_healthy", "replica" => label.clone()).set(1.0);
                metrics::gauge!("strata_db_replica_lag_bytes", "replica" => label.clone())
                    .set(lag as f64);
                let secs = replica.lag();
                metrics::gauge!("strata_db_replica_lag_seconds", "replica" => label).set(
                    if secs == Duration::MAX {
                        f64::INFINITY
                    } else {
                        secs.as_secs_f64()
                    },
                );
            }
            None => {
                if replica.healthy.swap(false, Ordering::AcqRel) {
                    tracing::warn!(replica = %label, "replica does not answer: reads move off it");
                }
                metrics::gauge!("strata_db_replica_healthy", "replica" => label).set(0.0);
            }
        }
    }
}

#[async_trait]
impl Store for ReplicatedStore {
    async fn create(&self, user: &User) -> Result<WriteReceipt, StoreError> {
        self.inner.primary.create(user).await
    }

    async fn get(
        &self,
        id: UserId,
        need: ReadRequirement,
    ) -> Result<Option<StoredUser>, StoreError> {
        self.get_from(id, need).await.map(|(v, _)| v)
    }

    async fn replace(
        &self,
        id: UserId,
        profile: &UserProfile,
        pre: Precondition,
    ) -> Result<WriteReceipt, StoreError> {
        self.inner.primary.replace(id, profile, pre).await
    }

    async fn delete(&self, id: UserId, pre: Precondition) -> Result<WriteReceipt, StoreError> {
        self.inner.primary.delete(id, pre).await
    }

    async fn list(
        &self,
        after: Option<UserId>,
        limit: u32,
        need: ReadRequirement,
    ) -> Result<Page, StoreError> {
        self.read(
            need,
            |store| async move { store.list(after, limit, need).await },
        )
        .await
        .map(|(v, _)| v)
    }

    async fn insert_batch(&self, users: Vec<User>) -> Result<CommitToken, StoreError> {
        self.inner.primary.insert_batch(users).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.primary.ping().await
    }

    fn engine(&self) -> &'static str {
        "postgres"
    }
}
