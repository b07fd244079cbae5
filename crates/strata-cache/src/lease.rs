//! One load per cold key across servers: the L2 lease a filler takes before it loads from the
//! data tier, and the wait of the servers that find it taken.
//!
//! The protocol, for a server whose read of `key` has just missed L2:
//! 1. `add lease:key` (store only if absent, with a TTL). Taken: **read L2 again** before
//!    loading. A filler on another server may have stored the value and released its lease
//!    between this server's miss and its `add`; without the second read this server loaded
//!    again — the race that let a stampede of 1,000 requests over 3 servers through as two
//!    loads. The filler's store completes before its release, and the release before this
//!    `add` succeeds, so the second read sees the value whenever the first filler succeeded.
//! 2. Not taken: wait, polling L2 for the value, for as long as the lease is held (up to
//!    [`crate::tiered::TieredConfig::lease_wait`], which should exceed the lease's own TTL so
//!    that a slow load is waited for, not repeated). If the lease disappears without a value
//!    (the filler failed, or its store did), go back to 1: one of the waiters takes it.
//! 3. L2 failing at any step, or the wait running out: load without a lease (a failed or
//!    stalled cache must not stop reads).
//!
//! A load that takes longer than the lease's TTL can still be repeated by another server; the
//! TTL bounds how long a crashed filler holds everyone else up.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::kv::{Cache, CacheError};

/// What a server that missed L2 should do next.
pub(crate) enum Turn<T> {
    /// Another server's fill arrived in L2: use it.
    Found(T),
    /// Load from the data tier, store in L2, then [`release`] if `leased`.
    Load { leased: bool },
}

/// The L2 key of `key`'s lease.
pub(crate) fn lease_key(key: &str) -> String {
    format!("lease:{key}")
}

/// Runs steps 1–3 above. `read` reads `key`'s value from L2.
pub(crate) async fn claim<T, R, Fut>(
    cache: &dyn Cache,
    key: &str,
    node: &str,
    lease_ttl: Duration,
    wait: Duration,
    read: R,
) -> Turn<T>
where
    R: Fn() -> Fut,
    Fut: Future<Output = Result<Option<T>, CacheError>>,
{
    let lease = lease_key(key);
    let deadline = Instant::now() + wait;
    loop {
        match cache
            .add(&lease, Bytes::from(node.to_string()), lease_ttl)
            .await
        {
            Err(_) => return Turn::Load { leased: false },
            Ok(true) => {
                return match read().await {
                    Ok(Some(found)) => {
                        metrics::counter!("strata_cache_lease_waits_total", "outcome" => "filled_before_lease")
                            .increment(1);
                        let _ = cache.delete(&lease).await;
                        Turn::Found(found)
                    }
                    Ok(None) => Turn::Load { leased: true },
                    Err(_) => {
                        let _ = cache.delete(&lease).await;
                        Turn::Load { leased: false }
                    }
                };
            }
            Ok(false) => {}
        }
        // Someone else fills: wait for the value while their lease stands.
        let mut pause = Duration::from_millis(2);
        loop {
            if Instant::now() >= deadline {
                metrics::counter!("strata_cache_lease_waits_total", "outcome" => "gave_up")
                    .increment(1);
                return Turn::Load { leased: false };
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(10));
            match read().await {
                Ok(Some(found)) => {
                    metrics::counter!("strata_cache_lease_waits_total", "outcome" => "filled")
                        .increment(1);
                    return Turn::Found(found);
                }
                Ok(None) => {}
                Err(_) => return Turn::Load { leased: false },
            }
            match cache.get(&lease).await {
                Ok(Some(_)) => {}
                // Released (or lapsed) without a value: try to take it.
                Ok(None) => break,
                Err(_) => return Turn::Load { leased: false },
            }
        }
    }
}

/// Gives the lease back once the value is in L2 (or the load failed).
pub(crate) async fn release(cache: &dyn Cache, key: &str) {
    let _ = cache.delete(&lease_key(key)).await;
}
