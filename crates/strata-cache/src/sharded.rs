//! Several cache nodes as one [`Cache`]: each key lives on one node, chosen by consistent
//! hashing (a ring with virtual nodes), so adding or removing a node moves only the keys of
//! its own share — the rest stay where every API server already finds them.
//!
//! Every API server builds the same ring from the same node names (the addresses, in any
//! order), with a hash that is stable across processes and machines (FNV-1a, 64-bit).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::kv::{Cache, CacheError};

/// Points per node on the ring: enough for an even spread (within a few percent) over a few
/// nodes.
pub const VIRTUAL_NODES: usize = 160;

/// FNV-1a, 64-bit: the same on every run and every machine.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV mixes its last bytes poorly: finish with a 64-bit avalanche (splitmix64's).
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A consistent-hash ring over named nodes.
#[derive(Debug, Clone)]
pub struct Ring {
    points: Vec<(u64, usize)>,
}

impl Ring {
    /// A ring over `names` (index `i` in the result of [`Ring::node_for`] is `names[i]`).
    pub fn new<S: AsRef<str>>(names: &[S]) -> Self {
        let mut points: Vec<(u64, usize)> = names
            .iter()
            .enumerate()
            .flat_map(|(i, name)| {
                (0..VIRTUAL_NODES)
                    .map(move |v| (stable_hash(format!("{}#{v}", name.as_ref()).as_bytes()), i))
            })
            .collect();
        points.sort_unstable();
        Self { points }
    }

    /// The node that owns `key`: the first point at or after the key's hash, wrapping round.
    pub fn node_for(&self, key: &str) -> usize {
        let h = stable_hash(key.as_bytes());
        let at = self.points.partition_point(|(p, _)| *p < h);
        self.points
            .get(at)
            .or_else(|| self.points.first())
            .map_or(0, |(_, i)| *i)
    }
}

/// Cache nodes behind a [`Ring`].
pub struct ShardedCache {
    nodes: Vec<Arc<dyn Cache>>,
    ring: Ring,
    name: &'static str,
}

impl std::fmt::Debug for ShardedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedCache")
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl ShardedCache {
    /// `nodes` paired with the names the ring is built from (their addresses). Panics on no
    /// nodes — callers with one node use it directly.
    pub fn new(nodes: Vec<(String, Arc<dyn Cache>)>) -> Self {
        let names: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
        let ring = Ring::new(&names);
        let name = nodes.first().map_or("sharded", |(_, c)| c.name());
        Self {
            nodes: nodes.into_iter().map(|(_, c)| c).collect(),
            ring,
            name,
        }
    }

    fn node(&self, key: &str) -> Result<&dyn Cache, CacheError> {
        self.nodes
            .get(self.ring.node_for(key))
            .map(|n| n.as_ref())
            .ok_or_else(|| CacheError::Unavailable("no cache nodes".into()))
    }
}

#[async_trait]
impl Cache for ShardedCache {
    fn name(&self) -> &'static str {
        self.name
    }
    async fn raw_get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        self.node(key)?.raw_get(key).await
    }
    async fn raw_set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        self.node(key)?.raw_set(key, value, ttl).await
    }
    async fn raw_delete(&self, key: &str) -> Result<(), CacheError> {
        self.node(key)?.raw_delete(key).await
    }
    async fn raw_add(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, CacheError> {
        self.node(key)?.raw_add(key, value, ttl).await
    }
    async fn raw_set_versioned(
        &self,
        key: &str,
        version: u64,
        record: Bytes,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        self.node(key)?
            .raw_set_versioned(key, version, record, ttl)
            .await
    }
    async fn delete_prefix(&self, prefix: &str) -> Result<(), CacheError> {
        let done =
            futures_util::future::join_all(self.nodes.iter().map(|n| n.delete_prefix(prefix)));
        done.await.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("127.0.0.1:{}", 6000 + i)).collect()
    }

    #[test]
    fn keys_spread_evenly_over_the_nodes() {
        let ring = Ring::new(&names(4));
        let mut counts = [0usize; 4];
        for k in 0..100_000 {
            counts[ring.node_for(&format!("user:{k}"))] += 1;
        }
        for c in counts {
            assert!(
                (18_000..=32_000).contains(&c),
                "each of 4 nodes holds about a quarter: {counts:?}"
            );
        }
    }

    #[test]
    fn a_node_leaving_moves_only_its_own_keys_and_one_joining_takes_only_a_share() {
        let four = Ring::new(&names(4));
        // Node 2 leaves: the other three keep their names, so their points stay put.
        let mut without_2 = names(4);
        without_2.remove(2);
        let three = Ring::new(&without_2);
        let back_to_index = |i: usize| if i >= 2 { i + 1 } else { i };
        let (mut moved, mut owned_by_2) = (0, 0);
        for k in 0..50_000 {
            let key = format!("user:{k}");
            let before = four.node_for(&key);
            let after = back_to_index(three.node_for(&key));
            if before == 2 {
                owned_by_2 += 1;
                assert_ne!(after, 2);
            } else if before != after {
                moved += 1;
            }
        }
        assert_eq!(moved, 0, "no key of a remaining node moved");
        assert!(owned_by_2 > 0);

        // A fifth node joins: keys move only to it.
        let five = Ring::new(&names(5));
        for k in 0..50_000 {
            let key = format!("user:{k}");
            let (before, after) = (four.node_for(&key), five.node_for(&key));
            assert!(after == before || after == 4, "{key}: {before} -> {after}");
        }
    }

    #[test]
    fn the_hash_and_the_ring_are_pinned() {
        // Every API server — and every release — must agree on where a key lives: a change
        // here would move most keys at once on upgrade.
        assert_eq!(stable_hash(b""), 17_665_956_581_633_026_203);
        let ring = Ring::new(&names(3));
        let placed: Vec<usize> = (0..12)
            .map(|k| ring.node_for(&format!("user:{k}")))
            .collect();
        assert_eq!(placed, PINNED_PLACEMENT);
    }

    const PINNED_PLACEMENT: [usize; 12] = [2, 1, 0, 2, 1, 0, 2, 0, 2, 2, 0, 0];
}
