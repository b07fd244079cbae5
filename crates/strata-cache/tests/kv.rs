//! The `Cache` interface: every backend keeps one contract (moka in process; Redis and Memcached
//! against real servers started by strata-testkit), and a dead or stalled shared cache costs
//! milliseconds and no failed read-through, then works again by itself.

use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_cache::kv::{Cache, CacheError, contract, get_or_load};
use strata_cache::memcached_kv::{MemcachedCache, MemcachedConfig};
use strata_cache::moka_kv::{Eviction, MokaCache};
use strata_cache::redis_kv::{RedisCache, RedisConfig};
use strata_testkit::{Daemon, MemcachedServer, RedisServer};

#[tokio::test]
async fn the_moka_backend_keeps_the_contract_with_either_eviction_policy() {
    for eviction in [Eviction::TinyLfu, Eviction::Lru] {
        contract::run_all(&MokaCache::new(64 * 1024 * 1024, eviction)).await;
    }
}

#[tokio::test]
async fn the_moka_backend_stays_within_its_byte_bound() {
    let cache = MokaCache::new(100 * 1024, Eviction::Lru);
    let ttl = Duration::from_secs(60);
    for i in 0..1_000 {
        cache
            .set(&format!("k{i}"), Bytes::from(vec![0u8; 1024]), ttl)
            .await
            .expect("set");
    }
    let held = cache.entry_count().await;
    assert!(
        (50..=100).contains(&held),
        "about 100 KiB of 1 KiB values is held, not all 1,000: {held}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_backend_keeps_the_contract_and_survives_a_dead_redis() {
    let mut redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("start redis");
    let cache = RedisCache::connect(&RedisConfig::new(redis.url()))
        .await
        .expect("connect");
    assert_eq!(cache.name(), "redis");
    contract::run_all(&cache).await;
    deletes_by_prefix(&cache, true).await;

    survives_a_dead_and_a_stalled_server(&cache, &mut redis).await;
}

/// `delete_prefix` removes every key under the prefix — more than one SCAN step's worth, and a
/// prefix with glob characters matched literally; the others stay where the backend can tell
/// them apart (Redis), or go too (Memcached, which cannot list its keys).
async fn deletes_by_prefix(cache: &dyn Cache, keeps_others: bool) {
    let ttl = Duration::from_secs(60);
    for i in 0..2_500 {
        cache
            .set(&format!("gone:{i}"), Bytes::from_static(b"x"), ttl)
            .await
            .expect("set");
    }
    for key in ["kept:1", "gone*:literal", "gone?"] {
        cache
            .set(key, Bytes::from_static(b"y"), ttl)
            .await
            .expect("set");
    }
    cache.delete_prefix("gone*:").await.expect("delete gone*:");
    assert_eq!(cache.get("gone*:literal").await, Ok(None));
    if keeps_others {
        assert!(
            cache.get("gone:1").await.expect("get").is_some(),
            "a glob prefix is literal"
        );
    }
    cache.delete_prefix("gone:").await.expect("delete gone:");
    for i in (0..2_500).step_by(97) {
        assert_eq!(cache.get(&format!("gone:{i}")).await, Ok(None), "gone:{i}");
    }
    let kept = cache.get("kept:1").await.expect("get");
    let other = cache.get("gone?").await.expect("get");
    if keeps_others {
        assert!(kept.is_some() && other.is_some(), "other keys stay");
    } else {
        assert!(kept.is_none() && other.is_none(), "everything goes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memcached_backend_keeps_the_contract_ignores_foreign_values_and_survives_a_dead_server()
 {
    let mut memcached = tokio::task::spawn_blocking(MemcachedServer::start)
        .await
        .expect("start memcached");
    let cache = MemcachedCache::connect(&MemcachedConfig::new(memcached.addr()))
        .await
        .expect("connect");
    assert_eq!(cache.name(), "memcached");
    contract::run_all(&cache).await;
    deletes_by_prefix(&cache, false).await;

    // A value written by something else (no header) is a miss, never served.
    {
        use std::io::{Read as _, Write as _};
        let mut raw = std::net::TcpStream::connect(memcached.addr()).expect("connect");
        raw.write_all(b"set user:99 0 60 4\r\nJohn\r\n")
            .expect("write");
        let mut answer = [0u8; 16];
        let n = raw.read(&mut answer).expect("read");
        assert!(answer[..n].starts_with(b"STORED"));
    }
    assert_eq!(cache.get("user:99").await, Ok(None));

    survives_a_dead_and_a_stalled_server(&cache, &mut memcached).await;
}

/// The shared cache dies (`kill -9`): calls fail fast with `Unavailable` and read-through
/// still answers from the loader; it comes back (empty) and the same cache object works again
/// by itself; it stalls (SIGSTOP): a call costs its deadline, not more.
async fn survives_a_dead_and_a_stalled_server(cache: &dyn Cache, server: &mut Daemon) {
    tokio::task::block_in_place(|| server.kill9());
    let started = Instant::now();
    assert!(matches!(
        cache.get("user:12").await,
        Err(CacheError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a dead cache costs milliseconds: {:?}",
        started.elapsed()
    );
    let got = get_or_load(cache, "user:12", Duration::from_secs(60), || async {
        Ok::<_, ()>(Some(Bytes::from_static(b"from the database")))
    })
    .await;
    assert_eq!(got, Ok(Some(Bytes::from_static(b"from the database"))));

    tokio::task::block_in_place(|| server.restart());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cache
            .set("back", Bytes::from_static(b"yes"), Duration::from_secs(60))
            .await
        {
            Ok(()) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "{} never came back: {e}",
                cache.name()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        cache.get("back").await,
        Ok(Some(Bytes::from_static(b"yes")))
    );

    server.pause();
    let started = Instant::now();
    assert!(matches!(
        cache.get("back").await,
        Err(CacheError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    server.resume();
}
