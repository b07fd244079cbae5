//! Stampedes across servers: many trials of many concurrent reads of a cold key, spread over
//! several independent caches (each with its own connection to the shared L2, like separate API
//! servers), against a real Redis and a real Memcached. Every trial must load the key from the
//! data tier exactly once — whether the load is instant (the filler finishes and releases its
//! lease while slower servers are still between their L2 miss and their own lease attempt) or
//! slower than a lease waiter's patience.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use strata_cache::guard::{BreakerConfig, Guarded};
use strata_cache::kv::Cache;
use strata_cache::memcached_kv::{MemcachedCache, MemcachedConfig};
use strata_cache::redis_kv::{RedisCache, RedisConfig};
use strata_cache::tiered::{Loaded, Tiered, TieredConfig};
use strata_testkit::{MemcachedServer, RedisServer};

const SERVERS: usize = 4;
const READERS: usize = 400;

fn config() -> TieredConfig {
    TieredConfig {
        l1_ttl: Duration::from_secs(30),
        xfetch_beta: 0.0,
        ..TieredConfig::default()
    }
}

/// One trial: `READERS` concurrent reads of a new key over `servers`; the number of loads.
async fn trial(servers: &[Tiered<String>], key: &str, load_time: Duration) -> usize {
    let loads = Arc::new(AtomicUsize::new(0));
    let reads: Vec<_> = (0..READERS)
        .map(|i| {
            let cache = servers[i % servers.len()].clone();
            let loads = loads.clone();
            let key = key.to_string();
            tokio::spawn(async move {
                let load = move || {
                    let loads = loads.clone();
                    async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        if load_time.is_zero() {
                            tokio::task::yield_now().await;
                        } else {
                            tokio::time::sleep(load_time).await;
                        }
                        Ok::<Loaded, String>(Some((1, Bytes::from_static(b"profile"))))
                    }
                };
                cache.get_or_load(&key, load).await
            })
        })
        .collect();
    for read in reads {
        let entry = read.await.expect("task").expect("read");
        assert_eq!(entry.version, 1, "every reader gets the value");
    }
    loads.load(Ordering::SeqCst)
}

/// Runs `trials` trials for each load time; panics listing every trial that did not load once.
async fn stampedes(name: &str, connect: impl AsyncFn() -> Arc<dyn Cache>) {
    let mut servers = Vec::new();
    for _ in 0..SERVERS {
        servers.push(Tiered::<String>::new(config(), Some(connect().await)));
    }
    let mut bad = Vec::new();
    let mut run = 0;
    for (load_time, trials) in [
        (Duration::ZERO, 60),
        (Duration::from_millis(3), 30),
        (Duration::from_millis(400), 6),
    ] {
        for _ in 0..trials {
            run += 1;
            let key = format!("user:{name}:{run}");
            let loads = trial(&servers, &key, load_time).await;
            if loads != 1 {
                bad.push((key, load_time, loads));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{name}: {} of {run} trials did not load exactly once (key, load time, loads): {bad:?}",
        bad.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stampede_over_four_servers_loads_once_with_redis_as_l2() {
    let redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("start redis");
    let url = redis.url();
    stampedes("redis", async || -> Arc<dyn Cache> {
        let node = RedisCache::connect(&RedisConfig::new(url.clone()))
            .await
            .expect("connect redis");
        let l2: Arc<dyn Cache> = Arc::new(Guarded::new(node, BreakerConfig::default(), "l2"));
        l2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stampede_over_four_servers_loads_once_with_memcached_as_l2() {
    let memcached = tokio::task::spawn_blocking(MemcachedServer::start)
        .await
        .expect("start memcached");
    let addr = memcached.addr();
    stampedes("memcached", async || -> Arc<dyn Cache> {
        let node = MemcachedCache::connect(&MemcachedConfig::new(addr.clone()))
            .await
            .expect("connect memcached");
        let l2: Arc<dyn Cache> = Arc::new(Guarded::new(node, BreakerConfig::default(), "l2"));
        l2
    })
    .await;
}
