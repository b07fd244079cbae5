//! The two-level cache: no stale put-back (forced interleaving), one load per cold key on a
//! server and across servers, coherent L1s over a real Redis with its invalidation bus, negative
//! caching, early refresh, the load limit, and a Redis that dies or stalls under it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_cache::bus::{Bus, BusConfig, Delivery};
use strata_cache::guard::{BreakerConfig, Guarded};
use strata_cache::kv::Cache;
use strata_cache::moka_kv::{Eviction, MokaCache};
use strata_cache::redis_kv::{RedisCache, RedisConfig};
use strata_cache::tiered::{Entry, Loaded, Tiered, TieredConfig, TieredError};
use strata_testkit::RedisServer;
use tokio::sync::Semaphore;

/// A stand-in data tier: versioned rows, a count of loads, and an optional gate that holds
/// each load after it has read its row (to force interleavings).
#[derive(Default)]
struct Db {
    rows: Mutex<HashMap<String, (u64, Bytes)>>,
    loads: AtomicUsize,
    gate: Mutex<Option<Arc<Semaphore>>>,
    delay: Mutex<Duration>,
}

impl Db {
    fn put(&self, key: &str, version: u64, body: &str) -> Entry {
        let body = Bytes::from(body.to_string());
        self.rows
            .lock()
            .expect("rows")
            .insert(key.to_string(), (version, body.clone()));
        Entry::present(version, body)
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    /// A loader for `key` over this database.
    fn loader(
        self: &Arc<Self>,
        key: &str,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<Loaded, String>> + Send>>
    + Send
    + Sync
    + 'static {
        let db = self.clone();
        let key = key.to_string();
        move || {
            let db = db.clone();
            let key = key.clone();
            Box::pin(async move {
                db.loads.fetch_add(1, Ordering::SeqCst);
                let row = db.rows.lock().expect("rows").get(&key).cloned();
                let delay = *db.delay.lock().expect("delay");
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let gate = db.gate.lock().expect("gate").clone();
                if let Some(gate) = gate {
                    gate.acquire().await.expect("gate").forget();
                }
                Ok(row)
            })
        }
    }
}

fn config() -> TieredConfig {
    TieredConfig {
        l1_ttl: Duration::from_secs(30),
        xfetch_beta: 0.0,
        ..TieredConfig::default()
    }
}

fn moka_l2() -> Arc<dyn Cache> {
    Arc::new(MokaCache::new(64 << 20, Eviction::TinyLfu))
}

async fn redis_l2(redis: &RedisServer) -> Arc<dyn Cache> {
    let cache = RedisCache::connect(&RedisConfig::new(redis.url()))
        .await
        .expect("connect redis");
    Arc::new(Guarded::new(cache, BreakerConfig::default(), "l2"))
}

/// A server's cache: L1 over the shared L2, with the bus when `redis` is given.
async fn server(l2: &Arc<dyn Cache>, redis: Option<&RedisServer>) -> Tiered<String> {
    let cache = Tiered::new(config(), Some(l2.clone()));
    if let Some(redis) = redis {
        let bus = Bus::start(
            &redis.url(),
            cache.invalidation_target(),
            BusConfig::default(),
        )
        .await
        .expect("bus");
        assert!(bus.wait_for_lease(Duration::from_secs(5)).await, "lease");
        cache.attach_bus(bus);
    }
    cache
}

async fn start_redis() -> RedisServer {
    tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("start redis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_cannot_put_back_the_value_a_writer_replaced_at_either_level() {
    let redis = start_redis().await;
    let l2 = redis_l2(&redis).await;
    let writer = server(&l2, Some(&redis)).await;
    let reader = server(&l2, Some(&redis)).await;
    let db = Arc::new(Db::default());
    db.put("user:1", 1, "old");

    // The reader misses both levels and loads version 1, then stalls before storing it.
    let gate = Arc::new(Semaphore::new(0));
    *db.gate.lock().expect("gate") = Some(gate.clone());
    let slow = {
        let reader = reader.clone();
        let load = db.loader("user:1");
        tokio::spawn(async move { reader.get_or_load("user:1", load).await })
    };
    while db.loads() == 0 {
        tokio::task::yield_now().await;
    }
    // The writer commits version 2 and stores it (L1, L2, every server's L1 marked).
    let written = db.put("user:1", 2, "new");
    assert_eq!(
        writer.write("user:1", written.clone()).await,
        Some(Delivery::Acknowledged)
    );
    // Now the slow reader goes on and tries to store version 1 everywhere.
    *db.gate.lock().expect("gate") = None;
    gate.add_permits(1);
    let _ = slow.await.expect("reader task");

    assert_eq!(
        l2.get_versioned("user:1")
            .await
            .expect("l2")
            .map(|(v, _)| v),
        Some(2),
        "L2 kept the writer's version"
    );
    for (name, cache) in [("reader", &reader), ("writer", &writer)] {
        let got = cache
            .get_or_load("user:1", db.loader("user:1"))
            .await
            .expect("read");
        assert_eq!(got, written, "{name} serves the new version");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_reads_of_a_cold_key_load_it_once_on_one_server_and_across_three() {
    // One server, no L2: single flight.
    let db = Arc::new(Db::default());
    db.put("user:7", 3, "John");
    *db.delay.lock().expect("delay") = Duration::from_millis(50);
    let one = Tiered::<String>::new(config(), None);
    let reads: Vec<_> = (0..1_000)
        .map(|_| {
            let c = one.clone();
            let load = db.loader("user:7");
            tokio::spawn(async move { c.get_or_load("user:7", load).await })
        })
        .collect();
    for r in reads {
        assert_eq!(
            r.await.expect("task").expect("read").version,
            3,
            "every caller gets the value"
        );
    }
    assert_eq!(db.loads(), 1, "1,000 concurrent misses, one load");

    // Three servers over one Redis: the L2 lease makes it one load in all.
    let redis = start_redis().await;
    let l2 = redis_l2(&redis).await;
    let servers = [
        server(&l2, None).await,
        server(&l2, None).await,
        server(&l2, None).await,
    ];
    let db = Arc::new(Db::default());
    db.put("user:8", 1, "Jane");
    *db.delay.lock().expect("delay") = Duration::from_millis(50);
    let reads: Vec<_> = (0..1_000)
        .map(|i| {
            let c = servers[i % 3].clone();
            let load = db.loader("user:8");
            tokio::spawn(async move { c.get_or_load("user:8", load).await })
        })
        .collect();
    for r in reads {
        assert_eq!(r.await.expect("task").expect("read").version, 1);
    }
    assert_eq!(db.loads(), 1, "1,000 misses over 3 servers, one load");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_redis_bus_no_server_serves_an_old_value_after_a_write_is_acknowledged() {
    let redis = start_redis().await;
    let l2 = redis_l2(&redis).await;
    let servers = [
        server(&l2, Some(&redis)).await,
        server(&l2, Some(&redis)).await,
        server(&l2, Some(&redis)).await,
    ];
    let db = Arc::new(Db::default());
    let keys: Vec<String> = (0..5).map(|k| format!("user:{k}")).collect();
    for k in &keys {
        db.put(k, 1, "v1");
    }
    let mut stale = 0;
    let mut reads = 0;
    for round in 2..=60u64 {
        let key = &keys[round as usize % keys.len()];
        // Every server holds the current version in L1.
        for s in &servers {
            s.get_or_load(key, db.loader(key)).await.expect("warm");
        }
        let writer = &servers[round as usize % 3];
        let written = db.put(key, round, &format!("v{round}"));
        assert_eq!(
            writer.write(key, written).await,
            Some(Delivery::Acknowledged)
        );
        for s in &servers {
            reads += 1;
            let got = s.get_or_load(key, db.loader(key)).await.expect("read");
            if got.version < round {
                stale += 1;
            }
        }
    }
    assert_eq!(stale, 0, "stale reads out of {reads}");
    // And the reads after the first round were served from cache, not the database.
    assert!(
        db.loads() < 20,
        "reads came from the caches: {} loads",
        db.loads()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absences_are_cached_briefly() {
    let db = Arc::new(Db::default());
    let cache = Tiered::<String>::new(
        TieredConfig {
            negative_ttl: Duration::from_millis(300),
            ttl_jitter: 0.0,
            ..config()
        },
        Some(moka_l2()),
    );
    for _ in 0..10 {
        let got = cache
            .get_or_load("user:404", db.loader("user:404"))
            .await
            .expect("read");
        assert_eq!(got, Entry::absent(0));
    }
    assert_eq!(db.loads(), 1, "the 404 was cached");
    tokio::time::sleep(Duration::from_millis(400)).await;
    db.put("user:404", 1, "created meanwhile by another system");
    let got = cache
        .get_or_load("user:404", db.loader("user:404"))
        .await
        .expect("read");
    assert_eq!(got.version, 1, "the cached absence expired");
    assert_eq!(db.loads(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_keys_are_refreshed_before_they_expire() {
    let db = Arc::new(Db::default());
    db.put("hot", 1, "x");
    *db.delay.lock().expect("delay") = Duration::from_millis(40);
    let cache = Tiered::<String>::new(
        TieredConfig {
            l1_ttl: Duration::from_millis(300),
            ttl_jitter: 0.0,
            xfetch_beta: 2.0,
            ..TieredConfig::default()
        },
        None,
    );
    cache
        .get_or_load("hot", db.loader("hot"))
        .await
        .expect("first");
    let mut waited = 0;
    let deadline = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < deadline {
        if cache.l1_peek("hot").await.is_none() {
            waited += 1;
        }
        cache
            .get_or_load("hot", db.loader("hot"))
            .await
            .expect("read");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        db.loads() >= 4,
        "refreshed several times in 1.5 s of a 300 ms TTL: {} loads",
        db.loads()
    );
    assert!(
        waited <= 1,
        "reads found the key missing {waited} times: refreshes came before expiry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_beyond_the_limit_are_refused_not_queued_forever() {
    let db = Arc::new(Db::default());
    *db.delay.lock().expect("delay") = Duration::from_millis(300);
    let cache = Tiered::<String>::new(
        TieredConfig {
            max_concurrent_loads: 1,
            load_queue_timeout: Duration::from_millis(50),
            ..config()
        },
        None,
    );
    let first = {
        let c = cache.clone();
        let load = db.loader("a");
        tokio::spawn(async move { c.get_or_load("a", load).await })
    };
    while db.loads() == 0 {
        tokio::task::yield_now().await;
    }
    let second = cache.get_or_load("b", db.loader("b")).await;
    assert!(matches!(second, Err(TieredError::Overloaded)));
    assert!(first.await.expect("task").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_stalled_redis_costs_no_failed_read_and_everything_comes_back() {
    let mut redis = start_redis().await;
    let l2 = redis_l2(&redis).await;
    let a = server(&l2, Some(&redis)).await;
    let b = server(&l2, Some(&redis)).await;
    let db = Arc::new(Db::default());
    for k in 0..20 {
        db.put(&format!("user:{k}"), 1, "v1");
    }
    let read_all = |c: Tiered<String>, db: Arc<Db>| async move {
        let started = Instant::now();
        for k in 0..20 {
            let key = format!("user:{k}");
            c.get_or_load(&key, db.loader(&key))
                .await
                .expect("a read never fails");
        }
        started.elapsed()
    };
    read_all(a.clone(), db.clone()).await;

    // Stalled (SIGSTOP): calls time out in milliseconds, the breaker opens, leases lapse.
    redis.pause();
    let took = read_all(b.clone(), db.clone()).await;
    assert!(took < Duration::from_secs(3), "20 reads took {took:?}");
    let written = db.put("user:2", 2, "v2");
    assert_eq!(
        a.write("user:2", written.clone()).await,
        Some(Delivery::LeaseWaited)
    );
    assert_eq!(
        b.get_or_load("user:2", db.loader("user:2"))
            .await
            .expect("read"),
        written
    );
    redis.resume();

    redis.kill9();
    // Reads go on from the database; the breaker soon stops calling Redis.
    for _ in 0..3 {
        let took = read_all(b.clone(), db.clone()).await;
        assert!(took < Duration::from_secs(3), "20 reads took {took:?}");
    }
    // A write still completes: with no acknowledgements it waits out the lease.
    let written = db.put("user:3", 2, "v2");
    assert_eq!(
        a.write("user:3", written.clone()).await,
        Some(Delivery::LeaseWaited)
    );
    assert_eq!(
        b.get_or_load("user:3", db.loader("user:3"))
            .await
            .expect("read"),
        written,
        "the other server does not serve its old L1 copy"
    );

    // Redis comes back (empty): the bus and L2 are used again by themselves.
    let _redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .expect("restart");
    let mut version = 10;
    let bus_back = wait_until(Duration::from_secs(10), || {
        version += 1;
        let w = db.put("user:5", version, "again");
        let a = a.clone();
        async move { a.write("user:5", w).await == Some(Delivery::Acknowledged) }
    })
    .await;
    assert!(bus_back, "writes are acknowledged again once Redis is back");
    // L2 too (its breaker lets a trial call through every half second).
    let l2_back = wait_until(Duration::from_secs(10), || {
        let (b, db) = (b.clone(), db.clone());
        async move {
            read_all(b.clone(), db.clone()).await;
            let loads = db.loads();
            read_all(b, db.clone()).await;
            db.loads() == loads
        }
    })
    .await;
    assert!(
        l2_back,
        "reads come from the caches again once Redis is back"
    );
}

async fn wait_until<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A change followed from the database (another data centre's write, once this one's replica
/// applied it): the user as the database holds it reaches L2 by version — an older copy is
/// replaced, a newer one stays — and this server's L1 stops serving the old copy, with no
/// message from any other server. "Anything may have changed" deletes L2's keys under the
/// prefix (and no other), and empties L1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followed_changes_replace_older_copies_at_both_levels_and_everything_empties_them() {
    let redis = start_redis().await;
    let l2 = redis_l2(&redis).await;
    let db = Arc::new(Db::default());
    let here = server(&l2, Some(&redis)).await;
    db.put("user:1", 1, "one");
    let read = |cache: &Tiered<String>| {
        let (cache, db) = (cache.clone(), db.clone());
        async move {
            cache
                .get_or_load("user:1", db.loader("user:1"))
                .await
                .expect("read")
        }
    };
    assert_eq!(read(&here).await.version, 1);
    assert_eq!(read(&here).await.version, 1, "from L1 now");

    // The database now holds version 3: followed, then served without a load.
    let v3 = db.put("user:1", 3, "three");
    let loads = db.loads();
    here.followed("user:1", v3).await;
    assert_eq!(read(&here).await, Entry::present(3, Bytes::from("three")));
    assert_eq!(db.loads(), loads, "L2 had it: no load");
    let (in_l2, _) = l2
        .get_versioned("user:1")
        .await
        .expect("l2")
        .expect("present");
    assert_eq!(in_l2, 3);

    // A copy older than L2's (a server of this data centre following late) changes nothing.
    here.followed("user:1", Entry::present(2, Bytes::from("two")))
        .await;
    let (in_l2, _) = l2
        .get_versioned("user:1")
        .await
        .expect("l2")
        .expect("present");
    assert_eq!(in_l2, 3, "the newer copy stays");
    assert_eq!(read(&here).await.version, 3);

    // Anything may have changed: the user keys go from L2, another key stays, L1 is empty.
    l2.set(
        "session:1",
        Bytes::from_static(b"kept"),
        Duration::from_secs(60),
    )
    .await
    .expect("set");
    here.followed_everything("user:").await.expect("emptied");
    assert_eq!(l2.get("user:1").await, Ok(None));
    assert!(l2.get("session:1").await.expect("get").is_some());
    let loads = db.loads();
    assert_eq!(read(&here).await.version, 3);
    assert_eq!(db.loads(), loads + 1, "neither level held it: loaded");
}
