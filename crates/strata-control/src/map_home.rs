//! The shard map's home in etcd, as the routers of every API server follow it and the
//! resharder publishes it: the key `PREFIX/shard-map` (the same key [`crate::etcd::EtcdStore`]
//! names), read by anyone; created once, by a transaction that holds only while the key does
//! not exist; replaced only by a transaction that holds only while the key is still at the
//! revision that carried the version the publisher read. So two publishers can never both
//! move version 7 to version 8, and a router on any machine sees every published map.
//!
//! Publishing needs no leadership: the version's compare-and-set is the whole rule, and the
//! resharder that publishes is one process at a time by its journal. (Controllers publishing
//! through [`crate::etcd::EtcdStore`] also check that they lead, as they do for the cluster state.)

use async_trait::async_trait;
use strata_store::StoreError;
use strata_store::map_home::{MapHome, check_next};
use strata_store::shard::ShardMap;

use crate::etcd::client::{CmpOp, Compare, EtcdClient, Op, Target, Txn};
use crate::store_options::{ETCD_TIMEOUT, OpenError};

/// The shard map under `PREFIX/shard-map` in an etcd cluster.
pub struct EtcdMapHome {
    client: EtcdClient,
    key: String,
}

impl EtcdMapHome {
    /// The home under `prefix` (`/strata/NAME` for a deployment of `strata up`) at the given
    /// members' client endpoints. Nothing is asked of etcd yet.
    pub fn new(endpoints: Vec<String>, prefix: &str) -> Result<Self, OpenError> {
        if endpoints.is_empty() {
            return Err(OpenError::NoEndpoint);
        }
        let trimmed = prefix.trim_end_matches('/');
        if !trimmed.starts_with('/') || trimmed.len() < 2 {
            return Err(OpenError::Prefix(prefix.to_string()));
        }
        Ok(Self {
            client: EtcdClient::new(endpoints, ETCD_TIMEOUT)?,
            key: format!("{trimmed}/shard-map"),
        })
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable(format!("etcd key {}: {e}", self.key))
    }

    fn decode(&self, bytes: &[u8]) -> Result<ShardMap, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| {
            StoreError::Unusable(format!(
                "etcd key {} is not a valid shard map: {e}",
                self.key
            ))
        })
    }

    fn encode(&self, map: &ShardMap) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(map)
            .map_err(|e| StoreError::Unusable(format!("cannot write the shard map: {e}")))
    }

    /// Puts `value` if the key is still as `target` says (`CreateRevision(0)`: absent).
    async fn put_if(&self, target: Target, value: Vec<u8>) -> Result<bool, StoreError> {
        let key = self.key.clone().into_bytes();
        let txn = Txn {
            compare: vec![Compare::new(key.clone(), CmpOp::Equal, target)],
            success: vec![Op::Put {
                key,
                value,
                lease: None,
            }],
            failure: Vec::new(),
        };
        let answer = self
            .client
            .txn(&txn)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(answer.succeeded)
    }
}

#[async_trait]
impl MapHome for EtcdMapHome {
    async fn load(&self) -> Result<Option<ShardMap>, StoreError> {
        let (kv, _) = self
            .client
            .get(self.key.as_bytes())
            .await
            .map_err(|e| self.unavailable(e))?;
        kv.map(|kv| self.decode(&kv.value)).transpose()
    }

    async fn create(&self, map: &ShardMap) -> Result<bool, StoreError> {
        self.put_if(Target::CreateRevision(0), self.encode(map)?)
            .await
    }

    async fn publish(&self, expected: u64, map: &ShardMap) -> Result<(), StoreError> {
        let (kv, _) = self
            .client
            .get(self.key.as_bytes())
            .await
            .map_err(|e| self.unavailable(e))?;
        let place = self.place();
        let Some(kv) = kv else {
            return check_next(&place, None, expected, map);
        };
        check_next(
            &place,
            Some(self.decode(&kv.value)?.version()),
            expected,
            map,
        )?;
        if self
            .put_if(Target::ModRevision(kv.mod_revision), self.encode(map)?)
            .await?
        {
            return Ok(());
        }
        // Another publisher came between the read and the transaction.
        let now = self.load().await?.map(|m| m.version());
        check_next(&place, now, expected, map)?;
        Err(self.unavailable("changed during the publication; run the command again"))
    }

    fn place(&self) -> String {
        format!(
            "etcd key {} (at {})",
            self.key,
            self.client.endpoints().join(", ")
        )
    }
}
