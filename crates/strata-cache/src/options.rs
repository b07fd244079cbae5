//! Composing the cache an API server reads through, from its options: L1 alone (embedded), or
//! L1 over Redis (with the invalidation bus) or Memcached, one node or several.
//!
//! [`CacheOptions`] is the cache tier's part of the API server's command line: `strata up`
//! fills it in from the topology's `[cache]` table and the role parses the same struct back.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::bus::{Bus, BusConfig};
use crate::guard::{BreakerConfig, Guarded};
use crate::kv::Cache;
use crate::memcached_kv::{MemcachedCache, MemcachedConfig};
use crate::redis_kv::{RedisCache, RedisConfig};
use crate::sharded::ShardedCache;
use crate::tiered::{Tiered, TieredConfig};

/// The read cache of one API server.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct CacheOptions {
    /// Upper bound of the in-process read cache (L1), in MiB.
    #[arg(long, env = "STRATA_CACHE_MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub cache_mib: u64,
    /// How long a user stays in the in-process cache (L1), in milliseconds. Without the Redis
    /// invalidation bus this bounds how stale another API process's L1 can be.
    #[arg(long, env = "STRATA_CACHE_TTL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub cache_ttl_ms: u64,
    /// Redis nodes as the shared cache (L2), `redis://HOST:PORT`, comma-separated: keys are
    /// spread over them by consistent hashing, and the first also carries the invalidation bus
    /// that keeps every API server's L1 coherent.
    #[arg(
        long,
        env = "STRATA_CACHE_REDIS",
        value_delimiter = ',',
        conflicts_with = "cache_memcached"
    )]
    pub cache_redis: Vec<String>,
    /// Memcached nodes as the shared cache (L2), `HOST:PORT`, comma-separated (consistent
    /// hashing). Memcached has no pub/sub: L1s then stay coherent only within --cache-ttl-ms.
    #[arg(long, env = "STRATA_CACHE_MEMCACHED", value_delimiter = ',')]
    pub cache_memcached: Vec<String>,
    /// How long a user stays in the shared cache (L2), in milliseconds. Writes replace L2
    /// entries by version, so this is not a staleness bound in normal operation: it bounds the
    /// memory held by cold users, and how long a value survives a write whose L2 store and
    /// repairs all failed.
    #[arg(long, env = "STRATA_CACHE_L2_TTL_MS", default_value_t = 3_600_000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub cache_l2_ttl_ms: u64,
    /// How long a 404 is remembered, in milliseconds.
    #[arg(long, env = "STRATA_CACHE_NEGATIVE_TTL_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub cache_negative_ttl_ms: u64,
    /// Most cache misses this server loads from the database at once; more wait up to 2 s, then
    /// get 503 with Retry-After.
    #[arg(long, env = "STRATA_CACHE_MAX_LOADS", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub cache_max_loads: u64,
    /// Turn the read cache off entirely (every read goes to the database) — for comparisons.
    #[arg(long, env = "STRATA_CACHE_OFF")]
    pub no_cache: bool,
    /// How API servers without the Redis bus keep their in-process caches (L1) coherent:
    /// `watch` — before serving from L1, apply the changes the embedded database logged (a
    /// write acknowledged by any server is seen at once; a few microseconds per read); `ttl` —
    /// only --cache-ttl-ms bounds how stale another server's L1 may be. `watch` needs the
    /// embedded SQLite engine; with PostgreSQL the TTL applies.
    #[arg(long, env = "STRATA_CACHE_COHERENCE", value_enum, default_value_t = L1Coherence::Watch)]
    pub cache_coherence: L1Coherence,
}

/// How L1s stay coherent when there is no Redis bus (`--cache-coherence`, topology
/// `[cache] coherence`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum L1Coherence {
    /// Apply the database's change log before every L1 read.
    #[default]
    Watch,
    /// The L1 TTL alone bounds staleness across servers.
    Ttl,
}

impl std::fmt::Display for L1Coherence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Watch => "watch",
            Self::Ttl => "ttl",
        })
    }
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            cache_mib: 64,
            cache_ttl_ms: 1000,
            cache_redis: Vec::new(),
            cache_memcached: Vec::new(),
            cache_l2_ttl_ms: 3_600_000,
            cache_negative_ttl_ms: 2000,
            cache_max_loads: 64,
            no_cache: false,
            cache_coherence: L1Coherence::Watch,
        }
    }
}

impl CacheOptions {
    /// Whether this server's L1 should follow the database's change log (when the data tier
    /// offers one): caching on, `watch`, and no Redis bus (which keeps L1s coherent itself).
    pub fn watches_database(&self) -> bool {
        !self.no_cache && self.cache_coherence == L1Coherence::Watch && self.cache_redis.is_empty()
    }

    /// The cache, and a phrase saying what it is (for the log).
    pub async fn build<E: Send + Sync + 'static>(&self) -> anyhow::Result<(Tiered<E>, String)> {
        let config = TieredConfig {
            enabled: !self.no_cache,
            l1_max_bytes: self.cache_mib * 1024 * 1024,
            l1_ttl: Duration::from_millis(self.cache_ttl_ms),
            l2_ttl: Duration::from_millis(self.cache_l2_ttl_ms),
            negative_ttl: Duration::from_millis(self.cache_negative_ttl_ms),
            max_concurrent_loads: self.cache_max_loads as usize,
            ..TieredConfig::default()
        };
        if self.no_cache {
            return Ok((Tiered::new(config, None), "off".into()));
        }
        let mut nodes: Vec<(String, Arc<dyn Cache>)> = Vec::new();
        for url in &self.cache_redis {
            let node = RedisCache::connect(&RedisConfig::new(url.clone()))
                .await
                .with_context(|| {
                    format!("cannot reach the Redis cache at {url}: start it, or leave out --cache-redis to run with the in-process cache only")
                })?;
            nodes.push((url.clone(), Arc::new(node)));
        }
        for addr in &self.cache_memcached {
            let node = MemcachedCache::connect(&MemcachedConfig::new(addr.clone()))
                .await
                .with_context(|| {
                    format!("cannot reach the Memcached cache at {addr}: start it, or leave out --cache-memcached to run with the in-process cache only")
                })?;
            nodes.push((addr.clone(), Arc::new(node)));
        }
        let what = match nodes.len() {
            0 => return Ok((Tiered::new(config, None), "in-process".into())),
            1 => format!("in-process over {}", nodes[0].0),
            n => format!("in-process over {n} {} nodes", nodes[0].1.name()),
        };
        let l2: Arc<dyn Cache> = if nodes.len() == 1 {
            let (_, node) = nodes.remove(0);
            Arc::new(Guarded::new(node, BreakerConfig::default(), "l2"))
        } else {
            Arc::new(Guarded::new(
                ShardedCache::new(nodes),
                BreakerConfig::default(),
                "l2",
            ))
        };
        let cache = Tiered::new(config, Some(l2));
        if let Some(url) = self.cache_redis.first() {
            let bus = Bus::start(url, cache.invalidation_target(), BusConfig::default())
                .await
                .with_context(|| format!("cannot start the invalidation bus on {url}"))?;
            if !bus.wait_for_lease(Duration::from_secs(2)).await {
                tracing::warn!(
                    "the invalidation bus has no lease yet: the in-process cache stays off until it has"
                );
            }
            cache.attach_bus(bus);
            return Ok((
                cache,
                format!("{what}, L1s kept coherent over Redis pub/sub"),
            ));
        }
        Ok((cache, what))
    }
}
