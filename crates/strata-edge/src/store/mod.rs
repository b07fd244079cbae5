//! The store: a bounded memory cache over an optional bounded disk store.
//!
//! **Memory** is a moka cache of URLs, each holding its variants (at most
//! [`MAX_VARIANTS`]), weighed in bytes (body, headers, keys). Moka admits by TinyLFU and
//! evicts the least recently used: a new object displaces an old one only when a frequency
//! sketch says it is requested more often, so a scan of once-seen URLs cannot flush the
//! objects that earn the hits (tested below) — a better hit ratio than LRU alone on the skewed
//! (Zipf-like) request mixes a CDN sees, from a cache already in the workspace.
//!
//! A URL's list of variants is changed by read-modify-write under a striped lock, with plain
//! inserts: written through moka's `and_compute_with` instead, the scan test saw most hot
//! objects flushed (those writes were not held to the admission policy).
//!
//! **Disk** ([`disk`]) keeps every object that fits, least recently used evicted first; a
//! request the memory misses looks there and brings its variant back into memory. It
//! survives a restart. Objects are written to disk as they are stored (on a blocking
//! thread; the request that stored one waits for the write). Disk errors never fail a request.
//!
//! Both are bounded in bytes; an object larger than [`StoreConfig::max_object`] is stored in
//! neither.
//!
//! **Purges by surrogate key** look the key up in an index (key → the URLs whose objects carry
//! it) instead of scanning every object in memory: on an edge holding ~80,000 profiles a scan
//! took ~80 ms per purge. The index is filled as objects are stored and never trusted alone —
//! a purge checks each URL's variants — so an entry that outlived its object costs a lookup,
//! never a wrong answer; it is rebuilt from memory when it grows past four times the objects
//! held (eviction does not prune it).

pub mod disk;

use std::path::PathBuf;
use std::sync::Arc;

use http::HeaderMap;

use crate::object::Object;
use crate::purge::{Mode, Selector};
use crate::stats::{Stats, Usage};

/// The most variants kept per URL; a new one displaces the oldest.
pub const MAX_VARIANTS: usize = 16;
/// Locks striping the URLs' writers.
const WRITER_LOCKS: usize = 64;

/// How the memory store chooses what to keep when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eviction {
    /// Moka's default, what the edge runs: TinyLFU admission (a new object displaces an old
    /// one only when it is asked for more often) over least-recently-used eviction.
    #[default]
    TinyLfu,
    /// Plain least-recently-used: every new object is admitted. For comparison
    /// (`strata cache-load edge`); nothing runs it.
    Lru,
}

/// An object as an origin's `200` with `Cache-Control: max-age=3600` and `body` would be
/// stored under the key `url`: for measurements and tests of the store alone.
pub fn plain_object(url: &str, body: bytes::Bytes) -> Option<Object> {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("max-age=3600"),
    );
    let (parts, ()) = http::Request::new(()).into_parts();
    let terms = crate::rules::storable(
        &parts,
        http::StatusCode::OK,
        &headers,
        std::time::SystemTime::now(),
    )
    .ok()?;
    Some(Object {
        meta: crate::object::Meta {
            key: url.into(),
            url: url.into(),
            host: "h".into(),
            path: url.into(),
            vary: Vec::new(),
            status: 200,
            headers,
            policy: terms.policy,
            lifetime_ms: u64::try_from(terms.lifetime.as_millis()).unwrap_or(u64::MAX),
            staleness: terms.staleness,
            surrogate_keys: Vec::new(),
            invalidated: false,
        },
        body,
    })
}

/// The sizes of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Bytes of memory for objects.
    pub memory_bytes: u64,
    /// The disk store's directory and its size in bytes; `None`: memory only.
    pub disk: Option<(PathBuf, u64)>,
    /// The largest object stored, in bytes.
    pub max_object: u64,
}

/// A URL's variants in memory.
#[derive(Debug, Default)]
pub struct Variants(Vec<Arc<Object>>);

impl Variants {
    fn weight(&self) -> u32 {
        let sum: u64 = self.0.iter().map(|o| o.weight()).sum();
        u32::try_from(sum).unwrap_or(u32::MAX)
    }
}

/// Surrogate key → the URLs whose objects in memory carry it (a superset: see the top doc).
#[derive(Debug, Default)]
struct KeyIndex {
    urls: std::collections::HashMap<String, std::collections::HashSet<String>>,
    /// Pairs held, for the rebuild threshold.
    pairs: usize,
}

impl KeyIndex {
    fn add(&mut self, key: &str, url: &str) {
        if self
            .urls
            .entry(key.to_string())
            .or_default()
            .insert(url.to_string())
        {
            self.pairs += 1;
        }
    }
}

/// Memory and disk.
pub struct Store {
    memory: moka::future::Cache<String, Arc<Variants>>,
    keys: std::sync::Mutex<KeyIndex>,
    /// Striped locks that serialize changes to a URL's variants.
    writers: Vec<tokio::sync::Mutex<()>>,
    disk: Option<Arc<disk::Disk>>,
    stats: Arc<Stats>,
    pub max_object: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("disk", &self.disk)
            .finish_non_exhaustive()
    }
}

/// The variant of `variants` that `request` selects.
fn select(variants: &Variants, url: &str, request: &HeaderMap) -> Option<Arc<Object>> {
    variants
        .0
        .iter()
        .find(|o| crate::key::variant(url, &o.meta.vary, request) == o.meta.key)
        .cloned()
}

impl Store {
    /// Opens the store; with a disk, rebuilds its index from the files there.
    pub async fn open(config: &StoreConfig, stats: Arc<Stats>) -> std::io::Result<Self> {
        Self::open_with(config, stats, Eviction::TinyLfu).await
    }

    /// [`Store::open`] with the memory store's eviction chosen.
    pub async fn open_with(
        config: &StoreConfig,
        stats: Arc<Stats>,
        eviction: Eviction,
    ) -> std::io::Result<Self> {
        let mut memory = moka::future::Cache::builder()
            .max_capacity(config.memory_bytes)
            .weigher(|_url: &String, v: &Arc<Variants>| v.weight());
        if eviction == Eviction::Lru {
            memory = memory.eviction_policy(moka::policy::EvictionPolicy::lru());
        }
        let memory = memory.build();
        let disk = match &config.disk {
            Some((dir, bytes)) => {
                let (dir, bytes) = (dir.clone(), *bytes);
                let disk = tokio::task::spawn_blocking(move || disk::Disk::open(&dir, bytes))
                    .await
                    .map_err(std::io::Error::other)??;
                Some(Arc::new(disk))
            }
            None => None,
        };
        Ok(Self {
            memory,
            keys: std::sync::Mutex::default(),
            writers: (0..WRITER_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            disk,
            stats,
            max_object: config.max_object,
        })
    }

    /// Runs blocking disk work off the async threads; `None` without a disk or when it
    /// panicked.
    async fn on_disk<T: Send + 'static>(
        &self,
        work: impl FnOnce(&disk::Disk) -> T + Send + 'static,
    ) -> Option<T> {
        let disk = self.disk.clone()?;
        tokio::task::spawn_blocking(move || work(&disk)).await.ok()
    }

    /// The stored variant of `url` that `request` selects, from memory or else from disk.
    pub async fn lookup(&self, url: &str, request: &HeaderMap) -> Option<Arc<Object>> {
        // Other variants of the URL may be in memory and this one still on disk.
        if let Some(variants) = self.memory.get(url).await
            && let Some(o) = select(&variants, url, request)
        {
            return Some(o);
        }
        let (owned, headers) = (url.to_string(), request.clone());
        let object = self
            .on_disk(move |d| d.load_variant(&owned, &headers))
            .await??;
        Some(self.remember(object).await)
    }

    /// What requests for the same object share when they go to the origin together: the
    /// variant's key when the URL's `Vary` is known (a variant of it is in memory), else the
    /// URL's — so requests for two variants do not wait for each other's fetch.
    pub async fn flight_key(&self, url: &str, request: &HeaderMap) -> String {
        match self
            .memory
            .get(url)
            .await
            .and_then(|v| v.0.first().cloned())
        {
            Some(known) => crate::key::variant(url, &known.meta.vary, request),
            None => url.to_string(),
        }
    }

    /// Puts an object into memory only (replacing the variant with its key).
    async fn remember(&self, object: Object) -> Arc<Object> {
        let object = Arc::new(object);
        let url = object.meta.url.clone();
        let _writing = self.lock(&url).await;
        let mut list: Vec<Arc<Object>> = self
            .memory
            .get(&url)
            .await
            .map(|v| v.0.clone())
            .unwrap_or_default();
        list.retain(|o| o.meta.key != object.meta.key);
        list.push(object.clone());
        if list.len() > MAX_VARIANTS {
            list.remove(0);
        }
        // Memory first, then the index: a rebuild reads memory, so it must already hold this
        // object (and every other one whose keys were added before it), or the rebuilt index
        // would lose their keys and a purge by key would miss them.
        self.memory
            .insert(url.clone(), Arc::new(Variants(list)))
            .await;
        if !object.meta.surrogate_keys.is_empty() {
            let mut index = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            for key in &object.meta.surrogate_keys {
                index.add(key, &url);
            }
            let held = usize::try_from(self.memory.entry_count()).unwrap_or(usize::MAX);
            if index.pairs > 4 * held.max(1024) {
                *index = self.rebuilt_index();
            }
        }
        object
    }

    /// The key index of what memory holds now.
    fn rebuilt_index(&self) -> KeyIndex {
        let mut index = KeyIndex::default();
        for (url, variants) in self.memory.iter() {
            for o in &variants.0 {
                for key in &o.meta.surrogate_keys {
                    index.add(key, &url);
                }
            }
        }
        index
    }

    /// The URLs in memory that may hold what `selector` names: from the key index for a
    /// surrogate key, else by a scan.
    fn candidate_urls(&self, selector: &Selector) -> Vec<String> {
        if let Selector::SurrogateKey(key) = selector {
            let mut index = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            let urls: Vec<String> = index
                .urls
                .remove(key)
                .map(|set| set.into_iter().collect())
                .unwrap_or_default();
            index.pairs = index.pairs.saturating_sub(urls.len());
            return urls;
        }
        self.memory
            .iter()
            .filter(|(_, v)| v.0.iter().any(|o| selector.matches_meta(&o.meta)))
            .map(|(url, _)| url.as_ref().clone())
            .collect()
    }

    /// Serializes the changes to one URL's variants (a read-modify-write of its list).
    async fn lock(&self, url: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        url.hash(&mut h);
        self.writers[(h.finish() % WRITER_LOCKS as u64) as usize]
            .lock()
            .await
    }

    /// Stores an object in memory and on disk.
    pub async fn insert(&self, object: Object) -> Arc<Object> {
        let object = self.remember(object).await;
        let copy = object.clone();
        if let Some(Err(e)) = self.on_disk(move |d| d.write(&copy)).await {
            Stats::add(&self.stats.disk_errors, 1);
            tracing::warn!(error = %e, "cannot write an object to the disk store; keeping it in memory only");
        }
        object
    }

    /// Removes every variant of a URL (an unsafe request changed it).
    pub async fn remove_url(&self, url: &str) {
        {
            let _writing = self.lock(url).await;
            self.memory.invalidate(url).await;
        }
        let owned = url.to_string();
        self.on_disk(move |d| {
            for key in d.keys_of_url(&owned) {
                d.remove(&key);
            }
        })
        .await;
    }

    /// Purges what `selector` names; the number of objects (variants) purged.
    pub async fn purge(&self, selector: &Selector, mode: Mode) -> u64 {
        let mut purged = std::collections::HashSet::new();
        for url in self.candidate_urls(selector) {
            let _writing = self.lock(&url).await;
            let Some(variants) = self.memory.get(url.as_str()).await else {
                continue;
            };
            let mut kept = Vec::new();
            for o in &variants.0 {
                if selector.matches_meta(&o.meta) {
                    purged.insert(o.meta.key.clone());
                    if mode == Mode::Soft {
                        kept.push(Arc::new(o.invalidated()));
                    }
                } else {
                    kept.push(o.clone());
                }
            }
            // Softly purged objects keep their keys: a later purge must find them again.
            if mode == Mode::Soft {
                let mut index = self.keys.lock().unwrap_or_else(|p| p.into_inner());
                for o in &kept {
                    for key in &o.meta.surrogate_keys {
                        index.add(key, &url);
                    }
                }
            }
            if kept.is_empty() {
                self.memory.invalidate(url.as_str()).await;
            } else {
                self.memory
                    .insert(url.clone(), Arc::new(Variants(kept)))
                    .await;
            }
        }
        let selector = selector.clone();
        let on_disk = self
            .on_disk(move |d| {
                let mut keys = Vec::new();
                for key in d.select(&selector) {
                    match mode {
                        Mode::Hard => {
                            d.remove(&key);
                        }
                        Mode::Soft => {
                            if let Some(o) = d.load(&key)
                                && d.write(&o.invalidated()).is_err()
                            {
                                d.remove(&key);
                            }
                        }
                    }
                    keys.push(key);
                }
                keys
            })
            .await
            .unwrap_or_default();
        purged.extend(on_disk);
        purged.len() as u64
    }

    /// What is held now.
    /// Lets the memory store apply the reads and writes it has queued (moka records them in
    /// batches; a live edge's traffic has it catch up all the time, a tight measuring loop must
    /// ask, or reads go uncounted by the admission policy).
    pub async fn settle(&self) {
        self.memory.run_pending_tasks().await;
    }

    pub async fn usage(&self) -> Usage {
        self.memory.run_pending_tasks().await;
        let (disk_objects, disk_bytes) = self.disk.as_ref().map_or((0, 0), |d| d.usage());
        Usage {
            memory_objects: self.memory.entry_count(),
            memory_bytes: self.memory.weighted_size(),
            disk_objects,
            disk_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn object(url: &str, size: usize) -> Object {
        plain_object(url, Bytes::from(vec![b'x'; size])).expect("an object")
    }

    fn tagged(url: &str, keys: &[&str]) -> Object {
        let mut o = object(url, 100);
        o.meta.surrogate_keys = keys.iter().map(|k| k.to_string()).collect();
        o
    }

    #[tokio::test]
    async fn a_purge_by_key_finds_every_tagged_object_through_the_index_and_nothing_else() {
        let config = StoreConfig {
            memory_bytes: 64 << 20,
            disk: None,
            max_object: 64 << 10,
        };
        let store = Store::open(&config, Arc::default()).await.expect("store");
        let none = HeaderMap::new();
        for i in 0..6000 {
            store
                .insert(tagged(
                    &format!("u/{i}"),
                    &[&format!("user-{}", i % 3000), "users"],
                ))
                .await;
        }
        store.insert(tagged("plain", &[])).await;
        // Replaced objects keep their tags; a soft purge keeps them findable.
        store.insert(tagged("u/7", &["user-7", "users"])).await;
        assert_eq!(
            store
                .purge(&Selector::SurrogateKey("user-7".into()), Mode::Soft)
                .await,
            2
        );
        assert_eq!(
            store
                .purge(&Selector::SurrogateKey("user-7".into()), Mode::Hard)
                .await,
            2,
            "softly purged objects are found again by their key"
        );
        assert!(store.lookup("u/7", &none).await.is_none());
        assert!(store.lookup("u/3007", &none).await.is_none());
        assert!(
            store.lookup("u/8", &none).await.is_some(),
            "other keys untouched"
        );
        assert_eq!(
            store
                .purge(&Selector::SurrogateKey("user-7".into()), Mode::Hard)
                .await,
            0
        );
        assert_eq!(
            store
                .purge(&Selector::SurrogateKey("users".into()), Mode::Hard)
                .await,
            5998,
            "every object the key names, however many times the index was rebuilt"
        );
        assert!(store.lookup("plain", &none).await.is_some());
    }

    #[tokio::test]
    async fn the_key_index_stays_bounded_when_objects_churn_and_still_finds_what_memory_holds() {
        let config = StoreConfig {
            memory_bytes: 1 << 20,
            disk: None,
            max_object: 64 << 10,
        };
        let store = Store::open(&config, Arc::default()).await.expect("store");
        for i in 0..40_000 {
            store.insert(tagged(&format!("u/{i}"), &["users"])).await;
            if i % 512 == 0 {
                store.memory.run_pending_tasks().await;
            }
        }
        store.memory.run_pending_tasks().await;
        let held = store.memory.entry_count() as usize;
        assert!(held < 40_000, "the memory evicted ({held} held)");
        let pairs = store.keys.lock().map(|k| k.pairs).unwrap_or(usize::MAX);
        assert!(
            pairs <= 4 * held.max(1024) + 1,
            "bounded: {pairs} pairs for {held} objects"
        );
        let purged = store
            .purge(&Selector::SurrogateKey("users".into()), Mode::Hard)
            .await;
        store.memory.run_pending_tasks().await;
        // Memory may still evict while the purge runs, so `purged` can fall short of `held`;
        // what matters is that nothing carrying the key is left.
        assert!(
            purged > 0 && purged as usize <= held,
            "{purged} purged of {held}"
        );
        assert_eq!(
            store.memory.entry_count(),
            0,
            "every object memory held was found"
        );
    }

    /// How many of 70 hot objects (each asked 12 times) a store with `eviction` keeps through
    /// a scan of ten times its memory in URLs asked once.
    async fn hot_kept_through_a_scan(eviction: Eviction) -> (usize, u64) {
        let config = StoreConfig {
            memory_bytes: 1 << 20,
            disk: None,
            max_object: 64 << 10,
        };
        let store = Store::open_with(&config, Arc::default(), eviction)
            .await
            .expect("store");
        let none = HeaderMap::new();
        // Hot objects filling most of the memory (moka counts frequencies once the cache is
        // half full, as it is in steady state).
        let hot: Vec<String> = (0..70).map(|i| format!("hot/{i}")).collect();
        for _ in 0..12 {
            for url in &hot {
                if store.lookup(url, &none).await.is_none() {
                    store.insert(object(url, 10_000)).await;
                }
            }
            // Moka counts reads in batches, as a live server's traffic has it do all the time;
            // a loop this tight must let it catch up, or reads are dropped uncounted.
            store.settle().await;
        }
        store.settle().await;
        // Ten times the memory in URLs seen once each (a crawler, a scan).
        for i in 0..1000 {
            let url = format!("scan/{i}");
            if store.lookup(&url, &none).await.is_none() {
                store.insert(object(&url, 10_000)).await;
            }
            if i % 32 == 0 {
                store.settle().await;
            }
        }
        store.settle().await;
        let mut kept = 0;
        for url in &hot {
            kept += usize::from(store.lookup(url, &none).await.is_some());
        }
        (kept, store.usage().await.memory_bytes)
    }

    #[tokio::test]
    async fn a_scan_of_once_seen_urls_does_not_flush_the_objects_that_earn_the_hits() {
        let (kept, memory) = hot_kept_through_a_scan(Eviction::TinyLfu).await;
        assert!(
            kept >= 56,
            "only {kept} of 70 hot objects survived the scan"
        );
        assert!(memory <= 1 << 20);
        // The comparison `strata cache-load edge` makes: plain LRU loses them all.
        let (kept, _) = hot_kept_through_a_scan(Eviction::Lru).await;
        assert_eq!(
            kept, 0,
            "plain LRU kept {kept} hot objects through the scan"
        );
    }
}
