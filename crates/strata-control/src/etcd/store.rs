//! [`EtcdStore`]: the cluster state in etcd, so that the control plane survives the loss of
//! any one machine — several controllers, one of which leads, as Patroni runs them.
//!
//! Two keys under a prefix (`/strata` by default):
//! - `<prefix>/state`: the [`ClusterState`] as JSON;
//! - `<prefix>/leader`: the id of the controller that leads, attached to its lease.
//!
//! **Leading.** [`StateStore::lead`] grants a lease (2 s) and creates the leader key with it in
//! one transaction that succeeds only if the key does not exist; otherwise it watches the key
//! until it goes (its holder resigned, or stopped renewing and etcd expired its lease) and tries
//! again. Once leading, a task renews the lease every third of its TTL; [`StateStore::leads`]
//! turns false — for good — as soon as a renewal has not succeeded within the TTL, counted from
//! when the last successful one was sent (etcd counts from when it received it, later), so a
//! controller stops acting no later than etcd lets another one lead.
//!
//! **Publishing** is ONE transaction: it puts the new state only if
//! (a) the state key's `mod_revision` is the revision at which this store read (or wrote) the
//! version the writer expects — `create_revision == 0` when it expects none — and
//! (b) the leader key still holds this controller's id under this controller's lease.
//! So a deposed or frozen leader that wakes up cannot publish, whatever it believes: its lease
//! is gone, or the key holds another's. The failure branch reads both keys to say which:
//! [`StateError::NotLeader`] when (b) failed, [`StateError::Conflict`] when (a) did.
//!
//! **The shard map** (`<prefix>/shard-map`, [`ShardMapStore`]) is published the same way: one
//! transaction that puts it only if the key is still at the revision holding the expected
//! version and the leader key still holds this controller under its lease.
//!
//! **Readers** (the PostgreSQL roles) use the same store and never call `lead`:
//! [`StateStore::newer`] watches the state key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::client::{CmpOp, Compare, EtcdClient, EtcdError, Lease, Op, Target, Txn};
use crate::cluster::ClusterState;
use crate::shard_map::{self, ShardMapStore};
use crate::store::{StateError, StateStore};
use strata_store::shard::ShardMap;

/// The leader lease's TTL, in seconds (etcd's shortest with a 1 s election timeout).
pub const DEFAULT_TTL_SECS: i64 = 2;

/// The cluster state in etcd under a prefix; see the module documentation.
pub struct EtcdStore {
    client: EtcdClient,
    prefix: String,
    ttl: i64,
    /// The last version this store read or wrote, and the revision that stored it.
    seen: Mutex<Option<(u64, i64)>>,
    /// This controller's leadership, once it has led.
    leadership: Mutex<Option<Leadership>>,
    /// The other controller last seen leading (so that the wait is logged once per leader).
    last_leader_seen: Mutex<Option<String>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.client.endpoints())
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// A leadership won: the id and lease the leader key holds, and the renewing task.
struct Leadership {
    id: String,
    lease: i64,
    renewal: Arc<Renewal>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Until when the lease is known to be alive, and whether it was lost for good.
struct Renewal {
    valid_until: Mutex<Instant>,
    lost: AtomicBool,
}

impl Renewal {
    fn valid(&self) -> bool {
        !self.lost.load(Ordering::SeqCst)
            && Instant::now() < *self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }
}

fn unavailable(e: EtcdError) -> StateError {
    StateError::Unavailable(e.to_string())
}

fn decode(bytes: &[u8]) -> Result<ClusterState, StateError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StateError::Corrupt(format!("the state in etcd is not a cluster state: {e}")))
}

impl EtcdStore {
    /// The state under `prefix` (`/strata`: keys `/strata/state` and `/strata/leader`) in the
    /// cluster `client` reaches.
    pub fn new(client: EtcdClient, prefix: &str) -> Self {
        Self {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
            ttl: DEFAULT_TTL_SECS,
            seen: Mutex::new(None),
            leadership: Mutex::new(None),
            last_leader_seen: Mutex::new(None),
        }
    }

    /// The same store with a leader lease of `ttl_secs` (etcd may raise it).
    pub fn with_ttl(mut self, ttl_secs: i64) -> Self {
        self.ttl = ttl_secs.max(1);
        self
    }

    /// The key of the state.
    pub fn state_key(&self) -> String {
        format!("{}/state", self.prefix)
    }

    /// The key naming the controller that leads.
    pub fn leader_key(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// The key of the shard map.
    pub fn shard_map_key(&self) -> String {
        format!("{}/shard-map", self.prefix)
    }

    /// The id of the controller that leads now, if any.
    pub async fn leader(&self) -> Result<Option<String>, StateError> {
        let (kv, _) = self
            .client
            .get(self.leader_key().as_bytes())
            .await
            .map_err(unavailable)?;
        Ok(kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    fn remember(&self, version: u64, mod_revision: i64) {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some((version, mod_revision));
    }

    /// The state and the store's revision when it was read.
    async fn read(&self) -> Result<(Option<ClusterState>, i64), StateError> {
        let (kv, revision) = self
            .client
            .get(self.state_key().as_bytes())
            .await
            .map_err(unavailable)?;
        let Some(kv) = kv else {
            return Ok((None, revision));
        };
        let state = decode(&kv.value)?;
        self.remember(state.version, kv.mod_revision);
        Ok((Some(state), revision))
    }

    /// The leadership this store holds: id, lease, renewal.
    fn held(&self) -> Option<(String, i64, Arc<Renewal>)> {
        self.leadership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|l| (l.id.clone(), l.lease, l.renewal.clone()))
    }

    /// The comparison that the state is still at version `expected`.
    async fn still_at(&self, expected: Option<u64>) -> Result<Compare, StateError> {
        let key = self.state_key().into_bytes();
        let Some(version) = expected else {
            return Ok(Compare::new(key, CmpOp::Equal, Target::CreateRevision(0)));
        };
        let known = *self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let revision = match known {
            Some((v, revision)) if v == version => revision,
            // A version this store has not read: read where it is now.
            _ => {
                let (kv, _) = self.client.get(&key).await.map_err(unavailable)?;
                let Some(kv) = kv else {
                    return Err(StateError::Conflict { found: None });
                };
                let found = decode(&kv.value)?.version;
                if found != version {
                    return Err(StateError::Conflict { found: Some(found) });
                }
                kv.mod_revision
            }
        };
        Ok(Compare::new(
            key,
            CmpOp::Equal,
            Target::ModRevision(revision),
        ))
    }

    /// One try at leading: true when this controller now leads; false after waiting (at most
    /// about a TTL) for the current leader's key to go.
    async fn campaign(&self, id: &str) -> Result<bool, EtcdError> {
        let asked = Instant::now();
        let lease = self.client.grant(self.ttl).await?;
        let key = self.leader_key().into_bytes();
        let txn = Txn {
            compare: vec![Compare::new(
                key.clone(),
                CmpOp::Equal,
                Target::CreateRevision(0),
            )],
            success: vec![Op::Put {
                key: key.clone(),
                value: id.as_bytes().to_vec(),
                lease: Some(lease.id),
            }],
            failure: vec![Op::Get { key: key.clone() }],
        };
        let answer = match self.client.txn(&txn).await {
            Ok(answer) => answer,
            Err(e) => {
                let _ = self.client.revoke(lease.id).await;
                return Err(e);
            }
        };
        if answer.succeeded {
            let renewal = Arc::new(Renewal {
                valid_until: Mutex::new(asked + Duration::from_secs(lease.ttl.unsigned_abs())),
                lost: AtomicBool::new(false),
            });
            let task = tokio::spawn(renew(self.client.clone(), lease, renewal.clone()));
            *self.leadership.lock().unwrap_or_else(|p| p.into_inner()) = Some(Leadership {
                id: id.to_string(),
                lease: lease.id,
                renewal,
                task,
            });
            tracing::info!(
                id,
                lease = lease.id,
                ttl_s = lease.ttl,
                "this controller leads"
            );
            return Ok(true);
        }
        let _ = self.client.revoke(lease.id).await;
        let holder = answer
            .read(0)
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        // Said once per leader, not on every wait.
        let new_leader = {
            let mut last = self
                .last_leader_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let changed = *last != holder;
            last.clone_from(&holder);
            changed
        };
        if new_leader {
            tracing::info!(leader = ?holder, "another controller leads: waiting for its lease to end");
        }
        let within = Duration::from_secs(lease.ttl.unsigned_abs()) + Duration::from_secs(1);
        self.wait_for_change(&key, answer.revision + 1, within)
            .await;
        Ok(false)
    }

    /// Waits until `key` changes at or after revision `from`, at most `within` (a watch; on a
    /// broken one, a short pause: the caller reads again).
    async fn wait_for_change(&self, key: &[u8], from: i64, within: Duration) {
        let deadline = Instant::now() + within;
        let waited = tokio::time::timeout_at(deadline, async {
            if let Ok(mut watch) = self.client.watch(key, from).await {
                loop {
                    match watch.next().await {
                        Ok(events) if events.is_empty() => continue,
                        Ok(_) => return,
                        Err(_) => break,
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        let _ = waited.await;
    }
}

/// Renews the lease every third of its TTL until it is lost: etcd says it is gone, or no
/// renewal succeeded within the TTL (counted from when the last good one was sent).
async fn renew(client: EtcdClient, lease: Lease, renewal: Arc<Renewal>) {
    let every = Duration::from_millis(lease.ttl.unsigned_abs() * 1000 / 3);
    let client = client.with_timeout(every);
    loop {
        tokio::time::sleep(every).await;
        let sent = Instant::now();
        match client.keepalive(lease.id).await {
            Ok(ttl) if ttl > 0 => {
                *renewal
                    .valid_until
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) =
                    sent + Duration::from_secs(ttl.unsigned_abs());
            }
            Ok(_) => {
                tracing::error!(
                    lease = lease.id,
                    "the leader lease expired: this controller no longer leads"
                );
                renewal.lose();
                return;
            }
            Err(e) => tracing::warn!(lease = lease.id, error = %e, "cannot renew the leader lease"),
        }
        if !renewal.valid() {
            tracing::error!(
                lease = lease.id,
                "the leader lease was not renewed in time: this controller no longer leads"
            );
            renewal.lose();
            return;
        }
    }
}

#[async_trait]
impl StateStore for EtcdStore {
    fn describe(&self) -> String {
        format!(
            "etcd {} (key {})",
            self.client.endpoints().join(","),
            self.state_key()
        )
    }

    async fn load(&self) -> Result<Option<ClusterState>, StateError> {
        Ok(self.read().await?.0)
    }

    async fn publish(&self, expected: Option<u64>, next: &ClusterState) -> Result<(), StateError> {
        let Some((id, lease, renewal)) = self.held() else {
            return Err(StateError::NotLeader);
        };
        if !renewal.valid() {
            return Err(StateError::NotLeader);
        }
        let state_key = self.state_key().into_bytes();
        let leader_key = self.leader_key().into_bytes();
        let value = serde_json::to_vec(next).map_err(|e| StateError::Corrupt(e.to_string()))?;
        let txn = Txn {
            compare: vec![
                self.still_at(expected).await?,
                Compare::new(
                    leader_key.clone(),
                    CmpOp::Equal,
                    Target::Value(id.clone().into_bytes()),
                ),
                Compare::new(leader_key.clone(), CmpOp::Equal, Target::Lease(lease)),
            ],
            success: vec![Op::Put {
                key: state_key.clone(),
                value,
                lease: None,
            }],
            failure: vec![Op::Get { key: state_key }, Op::Get { key: leader_key }],
        };
        let answer = self.client.txn(&txn).await.map_err(unavailable)?;
        if answer.succeeded {
            self.remember(next.version, answer.revision);
            return Ok(());
        }
        let leads = answer
            .read(1)
            .is_some_and(|kv| kv.value == id.as_bytes() && kv.lease == lease);
        if !leads {
            renewal.lose();
            return Err(StateError::NotLeader);
        }
        let Some(kv) = answer.read(0) else {
            return Err(StateError::Conflict { found: None });
        };
        // (Also when this very publish went through on an attempt whose answer was lost and
        // the client sent it again: the writer reads the state again, as after any conflict.)
        let found = decode(&kv.value)?;
        self.remember(found.version, kv.mod_revision);
        Err(StateError::Conflict {
            found: Some(found.version),
        })
    }

    async fn newer(&self, seen: u64, within: Duration) -> Result<Option<ClusterState>, StateError> {
        let deadline = Instant::now() + within;
        loop {
            let (state, revision) = self.read().await?;
            if let Some(state) = state
                && state.version > seen
            {
                return Ok(Some(state));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.wait_for_change(self.state_key().as_bytes(), revision + 1, left)
                .await;
        }
    }

    async fn lead(&self, id: &str) -> Result<(), StateError> {
        if let Some((held, _, renewal)) = self.held()
            && held == id
            && renewal.valid()
        {
            return Ok(());
        }
        let mut warned = false;
        loop {
            match self.campaign(id).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "cannot campaign for the lead now; retrying");
                        warned = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn leads(&self) -> bool {
        self.held().is_some_and(|(_, _, renewal)| renewal.valid())
    }

    async fn resign(&self) {
        let held = self
            .leadership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(leadership) = held {
            leadership.renewal.lose();
            // Revoking the lease deletes the leader key: another controller leads at once.
            let _ = self.client.revoke(leadership.lease).await;
        }
    }
}

#[async_trait]
impl ShardMapStore for EtcdStore {
    async fn shard_map(&self) -> Result<Option<ShardMap>, StateError> {
        let key = self.shard_map_key();
        let (kv, _) = self.client.get(key.as_bytes()).await.map_err(unavailable)?;
        kv.map(|kv| shard_map::decode(&kv.value, &format!("etcd key {key}")))
            .transpose()
    }

    async fn publish_shard_map(
        &self,
        expected: Option<u64>,
        map: &ShardMap,
    ) -> Result<(), StateError> {
        shard_map::check_next(expected, map)?;
        let Some((id, lease, renewal)) = self.held() else {
            return Err(StateError::NotLeader);
        };
        if !renewal.valid() {
            return Err(StateError::NotLeader);
        }
        let place = format!("etcd key {}", self.shard_map_key());
        let key = self.shard_map_key().into_bytes();
        let leader_key = self.leader_key().into_bytes();
        let (kv, _) = self.client.get(&key).await.map_err(unavailable)?;
        let found = match &kv {
            Some(kv) => Some(shard_map::decode(&kv.value, &place)?.version()),
            None => None,
        };
        if found != expected {
            return Err(StateError::Conflict { found });
        }
        let unchanged = match &kv {
            Some(kv) => Target::ModRevision(kv.mod_revision),
            None => Target::CreateRevision(0),
        };
        let value = serde_json::to_vec(map).map_err(|e| StateError::Corrupt(e.to_string()))?;
        let txn = Txn {
            compare: vec![
                Compare::new(key.clone(), CmpOp::Equal, unchanged),
                Compare::new(
                    leader_key.clone(),
                    CmpOp::Equal,
                    Target::Value(id.clone().into_bytes()),
                ),
                Compare::new(leader_key.clone(), CmpOp::Equal, Target::Lease(lease)),
            ],
            success: vec![Op::Put {
                key: key.clone(),
                value,
                lease: None,
            }],
            failure: vec![Op::Get { key }, Op::Get { key: leader_key }],
        };
        let answer = self.client.txn(&txn).await.map_err(unavailable)?;
        if answer.succeeded {
            return Ok(());
        }
        let leads = answer
            .read(1)
            .is_some_and(|kv| kv.value == id.as_bytes() && kv.lease == lease);
        if !leads {
            renewal.lose();
            return Err(StateError::NotLeader);
        }
        let found = match answer.read(0) {
            Some(kv) => Some(shard_map::decode(&kv.value, &place)?.version()),
            None => None,
        };
        Err(StateError::Conflict { found })
    }
}

#[cfg(test)]
mod tests {
    use strata_testkit::EtcdServer;

    use super::*;
    use crate::shard_map::tests::check_shard_map_compare_and_set;
    use crate::store::tests::{check_compare_and_set_and_newer, state};

    fn store_of(etcd: &EtcdServer, prefix: &str) -> EtcdStore {
        let client =
            EtcdClient::new(vec![etcd.endpoint()], Duration::from_secs(1)).expect("client");
        EtcdStore::new(client, prefix)
    }

    /// Stops renewing the lease, as a frozen or cut-off controller would.
    fn stop_renewing(store: &EtcdStore) {
        if let Some(l) = store.leadership.lock().expect("lock").as_ref() {
            l.task.abort();
        }
    }

    /// Makes the store believe its lease is alive for another minute.
    fn believe_it_leads(store: &EtcdStore) {
        let renewal = store.held().map(|(_, _, renewal)| renewal).expect("it led");
        renewal.lost.store(false, Ordering::SeqCst);
        *renewal.valid_until.lock().expect("lock") = Instant::now() + Duration::from_secs(60);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_publish_is_a_compare_and_set_on_the_version_and_newer_waits_for_one() {
        let etcd = EtcdServer::start();
        let store = store_of(&etcd, "/cas");
        store.lead("control-1").await.expect("leads");
        check_compare_and_set_and_newer(&store).await;
        // A reader (a PostgreSQL role) sees what the leader published, and never leads.
        let reader = store_of(&etcd, "/cas/");
        assert_eq!(
            reader.load().await.expect("load").map(|s| s.version),
            Some(3)
        );
        assert!(!reader.leads().await);
        assert_eq!(
            reader.publish(Some(3), &state()).await,
            Err(StateError::NotLeader)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_shard_map_is_published_by_compare_and_set_by_the_leader_only() {
        let etcd = EtcdServer::start();
        let store = store_of(&etcd, "/shards");
        store.lead("control-1").await.expect("leads");
        check_shard_map_compare_and_set(&store).await;
        // A reader sees the map, and cannot publish one.
        let reader = store_of(&etcd, "/shards");
        let map = reader.shard_map().await.expect("read").expect("a map");
        assert_eq!(map.version(), 3);
        assert_eq!(
            reader
                .publish_shard_map(
                    Some(3),
                    &map.unpin(strata_core::user::UserId(7)).expect("unpin")
                )
                .await,
            Err(StateError::NotLeader)
        );
        // Beside the cluster state, which it leaves alone.
        assert_eq!(store.load().await, Ok(None));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_of_two_leads_and_a_leader_that_stops_renewing_is_replaced_and_cannot_publish() {
        let etcd = EtcdServer::start();
        let a = Arc::new(store_of(&etcd, "/lead"));
        let b = Arc::new(store_of(&etcd, "/lead"));
        let campaign = |s: &Arc<EtcdStore>, id: &'static str| {
            let s = s.clone();
            tokio::spawn(async move { s.lead(id).await.map(|()| id) })
        };
        let (mut ta, mut tb) = (campaign(&a, "control-a"), campaign(&b, "control-b"));
        let first = tokio::select! {
            r = &mut ta => r.expect("task").expect("leads"),
            r = &mut tb => r.expect("task").expect("leads"),
        };
        let (leader, follower, mut waiting) = if first == "control-a" {
            (a, b, tb)
        } else {
            (b, a, ta)
        };
        assert_eq!(leader.leader().await, Ok(Some(first.to_string())));
        // Exactly one: the other is still waiting, a lease and more later.
        assert!(
            tokio::time::timeout(Duration::from_secs(3), &mut waiting)
                .await
                .is_err(),
            "both lead"
        );
        assert!(leader.leads().await && !follower.leads().await);
        leader
            .publish(None, &state())
            .await
            .expect("the leader publishes");
        assert_eq!(
            follower.publish(Some(1), &state().next(|_| {})).await,
            Err(StateError::NotLeader)
        );

        // The leader freezes: its lease runs out, and the other leads within about a TTL.
        let frozen_at = Instant::now();
        stop_renewing(&leader);
        let second = tokio::time::timeout(Duration::from_secs(6), &mut waiting)
            .await
            .expect("the other leads in time")
            .expect("task")
            .expect("leads");
        let took = frozen_at.elapsed();
        assert!(
            took < Duration::from_secs(DEFAULT_TTL_SECS.unsigned_abs() + 2),
            "{took:?}"
        );
        assert_ne!(second, first);
        assert!(follower.leads().await);
        assert!(
            !leader.leads().await,
            "the frozen one knows it no longer leads"
        );
        // Even if it thought it still led (a clock that jumped), etcd refuses it: its lease is
        // gone and the leader key holds another's.
        believe_it_leads(&leader);
        assert!(leader.leads().await);
        assert_eq!(
            leader.publish(Some(1), &state().next(|_| {})).await,
            Err(StateError::NotLeader)
        );
        follower
            .publish(Some(1), &state().next(|_| {}))
            .await
            .expect("the new leader publishes");

        // A leader that resigns hands over at once.
        let again = campaign(&leader, first);
        let resigned_at = Instant::now();
        follower.resign().await;
        let back = tokio::time::timeout(Duration::from_secs(2), again)
            .await
            .expect("at once")
            .expect("task")
            .expect("leads");
        assert_eq!(back, first);
        assert!(resigned_at.elapsed() < Duration::from_secs(2));
        assert!(!follower.leads().await);
    }
}
