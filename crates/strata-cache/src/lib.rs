//! # strata-cache — the cache tier
//!
//! Tier: cache. Depends on no other Strata crate: it caches any value that knows its version.
//!
//! [`VersionedCache`] is the in-process level (moka, TinyLFU admission, bounded by bytes, with a
//! time-to-live). Its one rule closes the classic invalidation race — a slow reader loads an
//! old row, the writer commits and updates the cache, and then the reader puts the old row
//! back: **an entry is only ever replaced by one with a higher version.** Writers
//! [`offer`](VersionedCache::offer) the row they just committed (a delete offers a tombstone
//! carrying the next version), readers offer what they loaded, and whoever is older loses.
//!
//! Loads are single-flight per key: concurrent misses for one key run one load and share it.
//!
//! Within one process this gives read-your-writes. Across processes each keeps its own L1, so
//! another process may serve a value up to the TTL old; a shared L2 with invalidation is the
//! job of a later level.
//!
//! [`kv`] is the textbook byte-cache interface (`set`/`get`/`delete`/`get_or_load`) with one
//! contract for every backend: [`moka_kv`] in process, [`redis_kv`] and [`memcached_kv`] shared.

pub mod bus;
pub mod guard;
pub mod kv;
pub mod memcached_kv;
pub mod moka_kv;
pub mod redis_kv;
pub mod sharded;
pub mod tiered;

pub use kv::CacheError;

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use moka::ops::compute::Op;

/// A value that knows its place in its key's history.
pub trait Versioned: Clone + Send + Sync + 'static {
    /// Higher means newer. Two values of one key with the same version are the same value.
    fn version(&self) -> u64;
    /// Approximate size in bytes, for the cache's byte bound.
    fn weight(&self) -> u32;
}

/// Sizing and lifetime of a [`VersionedCache`].
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Upper bound on the summed weights of the entries.
    pub max_bytes: u64,
    /// How long an entry may be served after it was written.
    pub ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            ttl: Duration::from_secs(5),
        }
    }
}

/// A bounded, versioned, single-flight read cache.
#[derive(Clone)]
pub struct VersionedCache<K, V> {
    inner: Cache<K, V>,
}

impl<K, V> std::fmt::Debug for VersionedCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionedCache")
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

impl<K, V> VersionedCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Versioned,
{
    pub fn new(config: CacheConfig) -> Self {
        let inner = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|_k: &K, v: &V| v.weight().max(1))
            .time_to_live(config.ttl)
            .build();
        Self { inner }
    }

    /// The cached value, if any.
    pub async fn get(&self, key: &K) -> Option<V> {
        self.inner.get(key).await
    }

    /// Returns the cached value or runs `load` once for all concurrent callers of this key.
    /// A loaded value is kept only if nothing newer arrived while it was loading. A load that
    /// finds nothing (`Ok(None)`) is not cached. Errors are returned to every waiting caller.
    pub async fn get_or_load<F, Fut, E>(&self, key: &K, load: F) -> Result<Option<V>, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<V>, E>>,
        E: Send + Sync + 'static,
    {
        if let Some(v) = self.inner.get(key).await {
            return Ok(Some(v));
        }
        // Single flight: moka runs one `load` per key; the others wait for its result. The
        // loaded value is not inserted by `try_get_with` itself (the entry is written through
        // `offer`, which checks versions), so a loaded `None` caches nothing.
        let loaded = self
            .inner
            .entry(key.clone())
            .and_try_compute_with(|current| async move {
                if current.is_some() {
                    return Ok(Op::Nop);
                }
                match load().await? {
                    Some(v) => Ok(Op::Put(v)),
                    None => Ok(Op::Nop),
                }
            })
            .await
            .map_err(Arc::new)?;
        use moka::ops::compute::CompResult;
        Ok(match loaded {
            CompResult::Inserted(e) | CompResult::ReplacedWith(e) | CompResult::Unchanged(e) => {
                Some(e.into_value())
            }
            CompResult::StillNone(_) | CompResult::Removed(_) => None,
        })
    }

    /// Puts `value` in the cache unless an entry with a higher or equal version is there.
    pub async fn offer(&self, key: K, value: V) {
        self.inner
            .entry(key)
            .and_compute_with(|current| {
                let keep = matches!(&current, Some(c) if c.value().version() >= value.version());
                async move { if keep { Op::Nop } else { Op::Put(value) } }
            })
            .await;
    }

    /// Drops the entry (used when the newest version is unknown).
    pub async fn invalidate(&self, key: &K) {
        self.inner.invalidate(key).await;
    }

    /// Number of entries (approximate; moka updates it lazily).
    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Clone, Debug, PartialEq)]
    struct Row(u64, &'static str);
    impl Versioned for Row {
        fn version(&self) -> u64 {
            self.0
        }
        fn weight(&self) -> u32 {
            16
        }
    }

    fn cache() -> VersionedCache<u64, Row> {
        VersionedCache::new(CacheConfig::default())
    }

    #[tokio::test]
    async fn an_older_version_never_replaces_a_newer_one() {
        let c = cache();
        c.offer(1, Row(2, "new")).await;
        c.offer(1, Row(1, "old")).await;
        assert_eq!(c.get(&1).await, Some(Row(2, "new")));
        c.offer(1, Row(3, "newer")).await;
        assert_eq!(c.get(&1).await, Some(Row(3, "newer")));
    }

    #[tokio::test]
    async fn a_slow_reader_cannot_put_back_a_row_the_writer_replaced() {
        // The reader's load starts before the write and finishes after it.
        let c = cache();
        let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel::<()>();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let reader = {
            let c = c.clone();
            tokio::spawn(async move {
                c.get_or_load(&7, || async move {
                    let _ = loaded_tx.send(());
                    let _ = go_rx.await;
                    Ok::<_, ()>(Some(Row(1, "before the write")))
                })
                .await
            })
        };
        loaded_rx.await.expect("load started");
        // The writer commits version 2 and offers it (from another task; offer on the same
        // key waits for the in-flight load, so run it concurrently with releasing the reader).
        let writer = {
            let c = c.clone();
            tokio::spawn(async move { c.offer(7, Row(2, "after the write")).await })
        };
        tokio::task::yield_now().await;
        let _ = go_tx.send(());
        let _ = reader.await.expect("reader");
        writer.await.expect("writer");
        assert_eq!(c.get(&7).await, Some(Row(2, "after the write")));
    }

    #[tokio::test]
    async fn concurrent_misses_for_one_key_run_one_load() {
        let c = cache();
        let loads = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let c = c.clone();
                let loads = loads.clone();
                tokio::spawn(async move {
                    c.get_or_load(&9, || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, ()>(Some(Row(1, "x")))
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.expect("task").expect("load"), Some(Row(1, "x")));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_load_that_finds_nothing_is_not_cached_and_errors_reach_the_caller() {
        let c = cache();
        assert_eq!(
            c.get_or_load(&1, || async { Ok::<_, ()>(None) })
                .await
                .expect("ok"),
            None
        );
        assert_eq!(c.get(&1).await, None);
        let err = c
            .get_or_load(&1, || async { Err::<Option<Row>, _>("down") })
            .await;
        assert_eq!(err.err().map(|e| *e), Some("down"));
        c.offer(1, Row(1, "x")).await;
        c.invalidate(&1).await;
        assert_eq!(c.get(&1).await, None);
    }
}
