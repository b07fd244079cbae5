//! Composes the cache tier for an API server from its options: L1 alone (embedded), or L1 over
//! Redis (with the invalidation bus) or Memcached, one node or several.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use strata_cache::bus::{Bus, BusConfig};
use strata_cache::guard::{BreakerConfig, Guarded};
use strata_cache::kv::Cache;
use strata_cache::memcached_kv::{MemcachedCache, MemcachedConfig};
use strata_cache::redis_kv::{RedisCache, RedisConfig};
use strata_cache::sharded::ShardedCache;
use strata_cache::tiered::{Tiered, TieredConfig};
use strata_store::StoreError;

use crate::roles::ServerOptions;

/// The cache, and a phrase saying what it is (for the log).
pub async fn build(opts: &ServerOptions) -> anyhow::Result<(Tiered<StoreError>, String)> {
    let config = TieredConfig {
        enabled: !opts.no_cache,
        l1_max_bytes: opts.cache_mib * 1024 * 1024,
        l1_ttl: Duration::from_millis(opts.cache_ttl_ms),
        l2_ttl: Duration::from_millis(opts.cache_l2_ttl_ms),
        negative_ttl: Duration::from_millis(opts.cache_negative_ttl_ms),
        max_concurrent_loads: opts.cache_max_loads as usize,
        ..TieredConfig::default()
    };
    if opts.no_cache {
        return Ok((Tiered::new(config, None), "off".into()));
    }
    let mut nodes: Vec<(String, Arc<dyn Cache>)> = Vec::new();
    for url in &opts.cache_redis {
        let node = RedisCache::connect(&RedisConfig::new(url.clone()))
            .await
            .with_context(|| {
                format!("cannot reach the Redis cache at {url}: start it, or leave out --cache-redis to run with the in-process cache only")
            })?;
        nodes.push((url.clone(), Arc::new(node)));
    }
    for addr in &opts.cache_memcached {
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
    if let Some(url) = opts.cache_redis.first() {
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
