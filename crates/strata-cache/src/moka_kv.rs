//! The in-process [`Cache`] backend: moka, bounded by bytes, TinyLFU or LRU eviction, a TTL per
//! entry.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use moka::Expiry;
use moka::policy::EvictionPolicy;

use crate::kv::{Cache, CacheError, decode_versioned};

/// Which entry goes when the cache is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eviction {
    /// Admit by estimated frequency (TinyLFU): a burst of one-off keys cannot flush the hot ones.
    #[default]
    TinyLfu,
    /// Least recently used.
    Lru,
}

/// An entry and its own time-to-live.
#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// In-process byte cache.
#[derive(Clone)]
pub struct MokaCache {
    inner: moka::future::Cache<String, Entry>,
}

impl std::fmt::Debug for MokaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MokaCache")
            .field("entries", &self.inner.entry_count())
            .finish_non_exhaustive()
    }
}

impl MokaCache {
    /// A cache holding at most `max_bytes` of keys and values.
    pub fn new(max_bytes: u64, eviction: Eviction) -> Self {
        let policy = match eviction {
            Eviction::TinyLfu => EvictionPolicy::tiny_lfu(),
            Eviction::Lru => EvictionPolicy::lru(),
        };
        let inner = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, e: &Entry| {
                u32::try_from(k.len() + e.value.len() + 64).unwrap_or(u32::MAX)
            })
            .eviction_policy(policy)
            .expire_after(PerEntryTtl)
            .build();
        Self { inner }
    }

    /// Entries now held (after pending maintenance).
    pub async fn entry_count(&self) -> u64 {
        self.inner.run_pending_tasks().await;
        self.inner.entry_count()
    }
}

#[async_trait]
impl Cache for MokaCache {
    fn name(&self) -> &'static str {
        "moka"
    }

    async fn raw_get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        Ok(self.inner.get(key).await.map(|e| e.value))
    }

    async fn raw_set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        self.inner
            .insert(key.to_string(), Entry { value, ttl })
            .await;
        Ok(())
    }

    async fn raw_delete(&self, key: &str) -> Result<(), CacheError> {
        self.inner.invalidate(key).await;
        Ok(())
    }

    async fn raw_add(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, CacheError> {
        let entry = self
            .inner
            .entry(key.to_string())
            .or_insert_with(async { Entry { value, ttl } })
            .await;
        Ok(entry.is_fresh())
    }

    async fn raw_set_versioned(
        &self,
        key: &str,
        version: u64,
        record: Bytes,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        use moka::ops::compute::{CompResult, Op};
        let result = self
            .inner
            .entry(key.to_string())
            .and_compute_with(|current| {
                let newer_there = current
                    .as_ref()
                    .and_then(|c| decode_versioned(&c.value().value))
                    .is_some_and(|(there, _)| there > version);
                async move {
                    if newer_there {
                        Op::Nop
                    } else {
                        Op::Put(Entry { value: record, ttl })
                    }
                }
            })
            .await;
        Ok(matches!(
            result,
            CompResult::Inserted(_) | CompResult::ReplacedWith(_)
        ))
    }
}
