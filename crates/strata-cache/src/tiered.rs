//! The two-level read-through cache: an in-process L1 (moka) over an optional shared L2 (Redis
//! or Memcached, one node or several), in front of a loader (the data tier).
//!
//! Values are versioned [`Entry`]s: a present body, or an absence (a deleted user, a 404).
//! - **No stale put-back.** Every store at every level is by version: an older version never
//!   replaces a newer one (L1: moka's per-key compute; L2: [`Cache::set_versioned`], atomic in
//!   the engine). Writers store what they committed (a delete stores a tombstone), so a slow
//!   reader that loaded the old row before the write cannot put it back afterwards.
//! - **Coherent L1s.** With a [`Bus`], a write is acknowledged only after every server has
//!   marked the key stale in its L1 (see [`crate::bus`]); a server without a lease does not
//!   use its L1 at all. With a [`Watch`] instead (servers sharing one SQLite database), L1
//!   serves a read only after applying every change the database logged before it (see
//!   [`crate::watch`]). With neither (PostgreSQL without Redis, or the watch turned off),
//!   another server's L1 may serve a value up to [`TieredConfig::l1_ttl`] old.
//! - **Stampede control.** One load per key at a time on a server (single flight); across
//!   servers, the first to miss L2 takes a short lease in L2, reads L2 once more, and loads;
//!   the others wait for its value while the lease stands ([`crate::lease`]) instead of all
//!   loading. Hot keys are refreshed before they
//!   expire, in the background, with probability rising towards expiry (XFetch: Vattani et al.,
//!   "Optimal probabilistic cache stampede prevention", VLDB 2015); every TTL is jittered so
//!   keys written together do not expire together.
//! - **Negative caching.** An absent key is cached as an absence for
//!   [`TieredConfig::negative_ttl`].
//! - **Protection.** A failed L2 is skipped (its circuit breaker stops calling it); loads from
//!   the data tier are limited to [`TieredConfig::max_concurrent_loads`] at a time per server,
//!   and a request that cannot get a slot within [`TieredConfig::load_queue_timeout`] is
//!   refused with [`TieredError::Overloaded`] instead of piling onto the database.
//!
//! Metrics: `strata_cache_requests_total{level,result}`, `strata_cache_loads_total`,
//! `strata_cache_load_seconds`, `strata_cache_evictions_total{level}`,
//! `strata_cache_early_refreshes_total`, `strata_cache_lease_waits_total{outcome}`,
//! `strata_cache_stale_fills_total`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use moka::Expiry;
use moka::notification::RemovalCause;
use tokio::sync::{OnceCell, Semaphore};
use tracing::Instrument as _;

use crate::bus::{Bus, Delivery, InvalidationTarget};
use crate::kv::{Cache, CacheError};
use crate::lease::{self, Turn};
use crate::watch::{ChangeSource, Watch};

mod followed;
mod l1;
mod payload;
use l1::{L1Target, offer};
use payload::{decode_l2, encode_l2};

/// A cached value: present (`body`) or absent (`None`: a tombstone or a 404), at `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub version: u64,
    pub body: Option<Bytes>,
}

impl Entry {
    pub fn present(version: u64, body: Bytes) -> Self {
        Self {
            version,
            body: Some(body),
        }
    }
    /// Nothing there. `version` is the deletion's version for a tombstone, 0 for a key the
    /// loader did not find.
    pub fn absent(version: u64) -> Self {
        Self {
            version,
            body: None,
        }
    }
}

/// Sizes and timings.
#[derive(Debug, Clone, Copy)]
pub struct TieredConfig {
    /// `false` turns caching off: every read runs the loader (within the load limit), writes
    /// store nothing — for comparisons.
    pub enabled: bool,
    /// Upper bound of L1, in bytes.
    pub l1_max_bytes: u64,
    /// Life of an L1 entry. With a bus this only bounds memory held by cold keys; without one
    /// it is also the bound on how stale another server's L1 can be.
    pub l1_ttl: Duration,
    /// Life of an L2 entry.
    pub l2_ttl: Duration,
    /// Life of a cached absence (at both levels).
    pub negative_ttl: Duration,
    /// Each TTL is drawn uniformly from `ttl × (1 ± jitter)`.
    pub ttl_jitter: f64,
    /// XFetch's β: 0 turns early refresh off; 1 is the paper's default; higher refreshes earlier.
    pub xfetch_beta: f64,
    /// Life of the L2 lease a filler takes (it is deleted when the fill is done).
    pub lease_ttl: Duration,
    /// Longest a server that found someone else's lease waits for its value (while the lease
    /// stands) before loading itself. Longer than `lease_ttl`, so that a slow load is waited
    /// for rather than repeated.
    pub lease_wait: Duration,
    /// Loads from the data tier in flight at once on this server.
    pub max_concurrent_loads: usize,
    /// How long a load waits for a slot before the request is refused.
    pub load_queue_timeout: Duration,
}

impl Default for TieredConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            l1_max_bytes: 64 * 1024 * 1024,
            l1_ttl: Duration::from_secs(1),
            l2_ttl: Duration::from_secs(3_600),
            negative_ttl: Duration::from_secs(2),
            ttl_jitter: 0.1,
            xfetch_beta: 1.0,
            lease_ttl: Duration::from_secs(2),
            lease_wait: Duration::from_millis(2_500),
            max_concurrent_loads: 64,
            load_queue_timeout: Duration::from_secs(2),
        }
    }
}

/// Why a cached read failed.
#[derive(Debug)]
pub enum TieredError<E> {
    /// The loader failed.
    Load(Arc<E>),
    /// Too many loads were already running: try again shortly.
    Overloaded,
}

impl<E> Clone for TieredError<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Load(e) => Self::Load(e.clone()),
            Self::Overloaded => Self::Overloaded,
        }
    }
}

/// An L1 entry: the value with the metadata XFetch needs, or a marker saying "a version at
/// least this new exists; what was here is stale".
#[derive(Debug, Clone)]
struct Held {
    entry: Entry,
    marker: bool,
    /// When the value expires at its source level (wall clock, ms since the epoch).
    expires_ms: u64,
    /// How long loading it from the data tier took (XFetch's δ), ms.
    delta_ms: u32,
    /// This L1 entry's own life.
    ttl: Duration,
    /// L1's generation when this value's load began: one from before the last clear is
    /// never served, and never displaces what a newer generation put there.
    generation: u64,
}

impl Held {
    fn weight(&self, key: &str) -> u32 {
        u32::try_from(96 + key.len() + self.entry.body.as_ref().map_or(0, Bytes::len))
            .unwrap_or(u32::MAX)
    }
}

struct HeldTtl;
impl Expiry<String, Held> for HeldTtl {
    fn expire_after_create(&self, _: &String, h: &Held, _: Instant) -> Option<Duration> {
        Some(h.ttl)
    }
    fn expire_after_update(
        &self,
        _: &String,
        h: &Held,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(h.ttl)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

type Flight<E> = Arc<OnceCell<Result<Entry, TieredError<E>>>>;

struct Inner<E> {
    config: TieredConfig,
    l1: moka::future::Cache<String, Held>,
    l2: Option<Arc<dyn Cache>>,
    bus: Mutex<Option<Bus>>,
    watch: Mutex<Option<Arc<Watch>>>,
    /// Bumped by every clear of L1 (see [`Held::generation`]).
    generation: AtomicU64,
    flights: Mutex<HashMap<String, Flight<E>>>,
    refreshing: Mutex<HashSet<String>>,
    loads: Semaphore,
    node: String,
}

/// The two-level cache. Cheap to clone.
pub struct Tiered<E> {
    inner: Arc<Inner<E>>,
}

impl<E> Clone for Tiered<E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<E> std::fmt::Debug for Tiered<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tiered")
            .field("l1_entries", &self.inner.l1.entry_count())
            .field("l2", &self.inner.l2.as_ref().map(|c| c.name()))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a loader returns: the version and body of the row, or `None` if there is none.
pub type Loaded = Option<(u64, Bytes)>;

impl<E: Send + Sync + 'static> Tiered<E> {
    /// L1 only, or L1 over `l2`. Attach a [`Bus`] with [`Tiered::attach_bus`] to keep L1s
    /// coherent across servers.
    pub fn new(config: TieredConfig, l2: Option<Arc<dyn Cache>>) -> Self {
        let l1 = moka::future::Cache::builder()
            .max_capacity(config.l1_max_bytes)
            .weigher(|k: &String, h: &Held| h.weight(k))
            .expire_after(HeldTtl)
            .eviction_listener(|_k, _v, cause| {
                if cause == RemovalCause::Size {
                    metrics::counter!("strata_cache_evictions_total", "level" => "l1").increment(1);
                }
            })
            .build();
        Self {
            inner: Arc::new(Inner {
                config,
                l1,
                l2,
                bus: Mutex::new(None),
                watch: Mutex::new(None),
                generation: AtomicU64::new(0),
                flights: Mutex::new(HashMap::new()),
                refreshing: Mutex::new(HashSet::new()),
                loads: Semaphore::new(config.max_concurrent_loads.max(1)),
                node: format!("{:016x}", rand::random::<u64>()),
            }),
        }
    }

    /// The target a [`Bus`] drives: this cache's L1.
    pub fn invalidation_target(&self) -> Arc<dyn InvalidationTarget> {
        Arc::new(L1Target(Arc::downgrade(&self.inner)))
    }

    /// From now on, writes are published on `bus` and L1 is used only under its lease.
    pub fn attach_bus(&self, bus: Bus) {
        *lock(&self.inner.bus) = Some(bus);
    }

    /// From now on, L1 serves a read only after applying every change `source` logged before
    /// it (see [`crate::watch`]): coherent L1s on one database without a bus.
    pub fn attach_watch(&self, source: Arc<dyn ChangeSource>) {
        let watch = Watch::new(source, self.invalidation_target());
        *lock(&self.inner.watch) = Some(Arc::new(watch));
    }

    fn bus(&self) -> Option<Bus> {
        lock(&self.inner.bus).clone()
    }

    fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// May L1 serve and be filled now?
    fn l1_usable(&self) -> bool {
        self.bus().is_none_or(|b| b.lease_valid())
    }

    /// The entry for `key` — from L1, L2 or `load` — or an error. `load` runs at most once at a
    /// time per key on this server; its `None` is cached as an absence.
    pub async fn get_or_load<F, Fut>(&self, key: &str, load: F) -> Result<Entry, TieredError<E>>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Loaded, E>> + Send + 'static,
    {
        if !self.inner.config.enabled {
            return self.load_from_source(&load).await.map(|h| h.entry);
        }
        let load = Arc::new(load);
        let watch = lock(&self.inner.watch).clone();
        if let Some(watch) = watch
            && !watch.catch_up().await
        {
            // Changes may be unapplied: neither L1 nor a fill begun before them may answer.
            return self.load_from_source(load.as_ref()).await.map(|h| h.entry);
        }
        if self.l1_usable() {
            match self.inner.l1.get(key).await {
                Some(held) if !held.marker && held.generation >= self.generation() => {
                    metrics::counter!("strata_cache_requests_total", "level" => "l1", "result" => "hit").increment(1);
                    self.maybe_refresh_early(key, &held, &load);
                    return Ok(held.entry);
                }
                _ => {
                    metrics::counter!("strata_cache_requests_total", "level" => "l1", "result" => "miss").increment(1);
                }
            }
        }
        // A fill that started before an invalidation may bring back the old version: then
        // fill again (a new flight), at most twice more.
        let mut result = self.fly(key, &load).await;
        for _ in 0..2 {
            let floor = self.marker_version(key).await;
            match &result {
                Ok(e) if floor.is_some_and(|f| e.version < f) => {
                    result = self.fly(key, &load).await;
                }
                _ => return result,
            }
        }
        if matches!(&result, Ok(e) if self.marker_version(key).await.is_some_and(|f| e.version < f))
        {
            metrics::counter!("strata_cache_stale_fills_total").increment(1);
        }
        result
    }

    async fn marker_version(&self, key: &str) -> Option<u64> {
        self.inner
            .l1
            .get(key)
            .await
            .filter(|h| h.marker && h.generation >= self.generation())
            .map(|h| h.entry.version)
    }

    /// Joins the fill in flight for `key`, or starts one.
    async fn fly<F, Fut>(&self, key: &str, load: &Arc<F>) -> Result<Entry, TieredError<E>>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Loaded, E>> + Send + 'static,
    {
        let flight = lock(&self.inner.flights)
            .entry(key.to_string())
            .or_default()
            .clone();
        let result = flight
            .get_or_init(|| self.fill(key, load.clone()))
            .await
            .clone();
        let mut flights = lock(&self.inner.flights);
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flights.remove(key);
        }
        result
    }

    /// L2, then (under a lease, within the load limit) the loader.
    async fn fill<F, Fut>(&self, key: &str, load: Arc<F>) -> Result<Entry, TieredError<E>>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Loaded, E>> + Send + 'static,
    {
        let generation = self.generation();
        let mut l2 = self.inner.l2.clone();
        if let Some(cache) = &l2 {
            match self.l2_get(cache.as_ref(), key).await {
                Ok(Some((entry, expires_ms, delta_ms))) => {
                    metrics::counter!("strata_cache_requests_total", "level" => "l2", "result" => "hit").increment(1);
                    let held = self.held(entry, expires_ms, delta_ms, generation);
                    self.maybe_refresh_early(key, &held, &load);
                    self.keep_in_l1(key, held.clone()).await;
                    return Ok(held.entry);
                }
                Ok(None) => {
                    metrics::counter!("strata_cache_requests_total", "level" => "l2", "result" => "miss").increment(1);
                }
                Err(_) => {
                    metrics::counter!("strata_cache_requests_total", "level" => "l2", "result" => "error").increment(1);
                    l2 = None;
                }
            }
        }
        // Across servers: one filler per key; the others wait for its value (crate::lease).
        let mut holds_lease = false;
        if let Some(cache) = &l2 {
            let c = &self.inner.config;
            let read = || async {
                Ok(self
                    .l2_get(cache.as_ref(), key)
                    .await?
                    .map(|(entry, expires_ms, delta_ms)| {
                        self.held(entry, expires_ms, delta_ms, generation)
                    }))
            };
            match lease::claim(
                cache.as_ref(),
                key,
                &self.inner.node,
                c.lease_ttl,
                c.lease_wait,
                read,
            )
            .await
            {
                Turn::Found(found) => {
                    self.keep_in_l1(key, found.clone()).await;
                    return Ok(found.entry);
                }
                Turn::Load { leased } => holds_lease = leased,
            }
        }
        let loaded = self.load_from_source(load.as_ref()).await;
        if let (Ok(held), Some(cache)) = (&loaded, &l2) {
            self.l2_store(cache.as_ref(), key, held).await;
        }
        if holds_lease && let Some(cache) = &l2 {
            lease::release(cache.as_ref(), key).await;
        }
        let held = loaded?;
        self.keep_in_l1(key, held.clone()).await;
        Ok(held.entry)
    }

    /// A versioned L2 read; a corrupt payload is a miss and is removed.
    async fn l2_get(
        &self,
        cache: &dyn Cache,
        key: &str,
    ) -> Result<Option<(Entry, u64, u32)>, CacheError> {
        let Some((version, payload)) = cache
            .get_versioned(key)
            .instrument(tracing::info_span!("cache.l2.get", engine = cache.name()))
            .await?
        else {
            return Ok(None);
        };
        match decode_l2(version, &payload) {
            Some((entry, expires_ms, delta_ms)) if expires_ms > now_ms() => {
                Ok(Some((entry, expires_ms, delta_ms)))
            }
            Some(_) => Ok(None),
            None => {
                let _ = cache.delete(key).await;
                Ok(None)
            }
        }
    }

    async fn l2_store(&self, cache: &dyn Cache, key: &str, held: &Held) {
        let ttl = Duration::from_millis(held.expires_ms.saturating_sub(now_ms()).max(1));
        let payload = encode_l2(&held.entry, held.expires_ms, held.delta_ms);
        let _ = cache
            .set_versioned(key, held.entry.version, &payload, ttl)
            .await;
    }

    /// Runs the loader within the load limit, timing it for XFetch.
    async fn load_from_source<F, Fut>(&self, load: &F) -> Result<Held, TieredError<E>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Loaded, E>>,
    {
        let _slot = tokio::time::timeout(
            self.inner.config.load_queue_timeout,
            self.inner.loads.acquire(),
        )
        .await
        .map_err(|_| TieredError::Overloaded)?
        .map_err(|_| TieredError::Overloaded)?;
        let generation = self.generation();
        let started = Instant::now();
        let loaded = load().await;
        let took = started.elapsed();
        metrics::counter!("strata_cache_loads_total").increment(1);
        metrics::histogram!("strata_cache_load_seconds").record(took.as_secs_f64());
        let entry = match loaded.map_err(|e| TieredError::Load(Arc::new(e)))? {
            Some((version, body)) => Entry::present(version, body),
            None => Entry::absent(0),
        };
        let delta_ms = u32::try_from(took.as_millis()).unwrap_or(u32::MAX).max(1);
        let ttl = self.source_ttl(&entry);
        Ok(self.held(
            entry,
            now_ms() + ttl.as_millis() as u64,
            delta_ms,
            generation,
        ))
    }

    fn jittered(&self, ttl: Duration) -> Duration {
        let j = self.inner.config.ttl_jitter.clamp(0.0, 0.5);
        if j == 0.0 {
            return ttl;
        }
        ttl.mul_f64(1.0 + rand::random_range(-j..=j))
    }

    /// The TTL a freshly loaded (or written) entry gets at its source level.
    fn source_ttl(&self, entry: &Entry) -> Duration {
        let c = &self.inner.config;
        let base = match (&entry.body, &self.inner.l2) {
            (None, _) => c.negative_ttl,
            (Some(_), Some(_)) => c.l2_ttl,
            (Some(_), None) => c.l1_ttl,
        };
        self.jittered(base)
    }

    /// An L1 entry for a value expiring at its source at `expires_ms`.
    fn held(&self, entry: Entry, expires_ms: u64, delta_ms: u32, generation: u64) -> Held {
        let remaining = Duration::from_millis(expires_ms.saturating_sub(now_ms()).max(1));
        let ttl = self.jittered(self.inner.config.l1_ttl).min(remaining);
        Held {
            entry,
            marker: false,
            expires_ms,
            delta_ms,
            ttl,
            generation,
        }
    }

    /// Puts `held` in L1 unless L1 is off or holds something newer.
    async fn keep_in_l1(&self, key: &str, held: Held) {
        if self.l1_usable() {
            offer(&self.inner.l1, key, held, self.generation()).await;
        }
    }

    /// XFetch: with probability rising as expiry nears (faster for slow loads), refresh `key`
    /// in the background now, so hot keys never all expire at once. One refresh per key per
    /// server at a time; skipped when the load limit is reached.
    fn maybe_refresh_early<F, Fut>(&self, key: &str, held: &Held, load: &Arc<F>)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Loaded, E>> + Send + 'static,
    {
        let beta = self.inner.config.xfetch_beta;
        if beta <= 0.0 || held.entry.body.is_none() {
            return;
        }
        let r: f64 = rand::random_range(f64::MIN_POSITIVE..1.0);
        let gap = f64::from(held.delta_ms) * beta * -r.ln();
        if (now_ms() as f64) + gap < held.expires_ms as f64 {
            return;
        }
        if !lock(&self.inner.refreshing).insert(key.to_string()) {
            return;
        }
        let this = self.clone();
        let key = key.to_string();
        let load = load.clone();
        tokio::spawn(async move {
            if let Ok(_slot) = this.inner.loads.try_acquire() {
                metrics::counter!("strata_cache_early_refreshes_total").increment(1);
                drop(_slot);
                if let Ok(held) = this.load_from_source(load.as_ref()).await {
                    if let Some(cache) = &this.inner.l2 {
                        this.l2_store(cache.as_ref(), &key, &held).await;
                    }
                    this.keep_in_l1(&key, held).await;
                }
            }
            lock(&this.inner.refreshing).remove(&key);
        });
    }

    /// After a commit: stores what was written (`entry`; a tombstone for a delete) at every
    /// level, and — with a bus — returns once no server's L1 holds an older version.
    pub async fn write(&self, key: &str, entry: Entry) -> Option<Delivery> {
        if !self.inner.config.enabled {
            return None;
        }
        let generation = self.generation();
        let ttl = self.source_ttl(&entry);
        let held = self.held(entry, now_ms() + ttl.as_millis() as u64, 1, generation);
        offer(&self.inner.l1, key, held.clone(), self.generation()).await;
        if let Some(cache) = &self.inner.l2 {
            let payload = encode_l2(&held.entry, held.expires_ms, held.delta_ms);
            let stored = cache
                .set_versioned(key, held.entry.version, &payload, ttl)
                .await;
            if stored.is_err() {
                // The old value may still be in L2: remove it, now or soon.
                metrics::counter!("strata_cache_l2_write_failures_total").increment(1);
                if cache.delete(key).await.is_err() {
                    self.repair_later(key);
                }
            }
        }
        match self.bus() {
            Some(bus) => Some(bus.publish(key, held.entry.version).await),
            None => None,
        }
    }

    /// Deletes `key` from L2 in the background, retrying for a while (an L2 write failed).
    fn repair_later(&self, key: &str) {
        let Some(cache) = self.inner.l2.clone() else {
            return;
        };
        let key = key.to_string();
        tokio::spawn(async move {
            for wait in [100u64, 500, 1_000, 2_000, 5_000] {
                tokio::time::sleep(Duration::from_millis(wait)).await;
                if cache.delete(&key).await.is_ok() {
                    return;
                }
            }
        });
    }

    /// Offers a value loaded outside the cache (a read that had to reflect a given commit).
    pub async fn offer(&self, key: &str, entry: Entry) {
        if !self.inner.config.enabled {
            return;
        }
        let generation = self.generation();
        let ttl = self.source_ttl(&entry);
        let held = self.held(entry, now_ms() + ttl.as_millis() as u64, 1, generation);
        if let Some(cache) = &self.inner.l2 {
            self.l2_store(cache.as_ref(), key, &held).await;
        }
        self.keep_in_l1(key, held).await;
    }

    /// What L1 holds for `key` (markers excluded), for tests and diagnostics.
    pub async fn l1_peek(&self, key: &str) -> Option<Entry> {
        self.inner
            .l1
            .get(key)
            .await
            .filter(|h| !h.marker && h.generation >= self.generation())
            .map(|h| h.entry)
    }

    /// Entries in L1 (after pending maintenance).
    pub async fn l1_entries(&self) -> u64 {
        self.inner.l1.run_pending_tasks().await;
        self.inner.l1.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_spread_within_the_jitter_so_keys_written_together_expire_apart() {
        let cache = Tiered::<()>::new(TieredConfig::default(), None);
        let base = Duration::from_secs(10);
        let drawn: Vec<Duration> = (0..1_000).map(|_| cache.jittered(base)).collect();
        let (min, max) = (
            drawn.iter().min().copied().unwrap_or_default(),
            drawn.iter().max().copied().unwrap_or_default(),
        );
        assert!(min >= Duration::from_secs(9), "{min:?}");
        assert!(max <= Duration::from_secs(11), "{max:?}");
        assert!(
            max - min > Duration::from_millis(1_500),
            "spread over most of ±10%: {min:?}..{max:?}"
        );
        let off = Tiered::<()>::new(
            TieredConfig {
                ttl_jitter: 0.0,
                ..TieredConfig::default()
            },
            None,
        );
        assert_eq!(off.jittered(base), base);
    }
}
