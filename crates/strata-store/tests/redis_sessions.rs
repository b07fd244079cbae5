//! The Redis session store against the session suite, on a real redis-server started from the
//! installed binary (strata-testkit), plus a server that dies and comes back.

use strata_store::StoreError;
use strata_store::accounts::SessionStore;
use strata_store::redis_sessions::RedisSessions;
use strata_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_session_store_passes_the_session_suite_and_survives_a_restart() {
    let mut redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("start redis");
    let store = RedisSessions::connect(&redis.url())
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    strata_store::accounts::contract::sessions(&store).await;
    strata_store::idempotency::contract::idempotency(&store).await;

    // Down: a call answers Unavailable within its deadline instead of hanging.
    redis.kill9();
    let started = std::time::Instant::now();
    match store.session("0123456789abcdef0123456789abcdef").await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("a dead Redis must give Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}
