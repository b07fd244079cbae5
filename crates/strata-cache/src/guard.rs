//! A circuit breaker around a shared cache: after [`BreakerConfig::failures_to_open`] calls in a
//! row fail as `Unavailable`, calls fail at once for [`BreakerConfig::open_for`] (no socket, no
//! timeout to wait out); then one trial call is let through — success closes the breaker, a
//! failure opens it again. A dead cache thus costs each request nothing, and the cache is used
//! again by itself once it answers.
//!
//! Exported as `strata_cache_breaker_state{level}` (0 closed, 1 open, 2 half-open) and
//! `strata_cache_errors_total{level}`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use crate::kv::{Cache, CacheError};

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    pub failures_to_open: u32,
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures_to_open: 5,
            open_for: Duration::from_millis(500),
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is out (since then; a trial that never reports back — its caller gave
    /// up — is replaced by another after `open_for`).
    HalfOpen {
        since: Instant,
    },
}

/// A [`Cache`] behind a circuit breaker.
pub struct Guarded<C> {
    cache: C,
    config: BreakerConfig,
    state: Mutex<Inner>,
    level: &'static str,
}

impl<C: Cache> std::fmt::Debug for Guarded<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("level", &self.level)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl<C: Cache> Guarded<C> {
    /// Wraps `cache`; `level` names it in metrics (`l2`).
    pub fn new(cache: C, config: BreakerConfig, level: &'static str) -> Self {
        metrics::gauge!("strata_cache_breaker_state", "level" => level).set(0.0);
        Self {
            cache,
            config,
            state: Mutex::new(Inner::Closed { failures: 0 }),
            level,
        }
    }

    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if Instant::now() < until => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, state: BreakerState) {
        let v = match state {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        };
        metrics::gauge!("strata_cache_breaker_state", "level" => self.level).set(v);
    }

    /// May a call go out now?
    fn admit(&self) -> Result<(), CacheError> {
        let mut s = self.lock();
        let now = Instant::now();
        match *s {
            Inner::Closed { .. } => Ok(()),
            Inner::HalfOpen { since } if now >= since + self.config.open_for => {
                *s = Inner::HalfOpen { since: now };
                Ok(())
            }
            Inner::Open { until } if now >= until => {
                *s = Inner::HalfOpen { since: now };
                drop(s);
                self.publish(BreakerState::HalfOpen);
                Ok(())
            }
            Inner::Open { .. } | Inner::HalfOpen { .. } => Err(CacheError::Unavailable(format!(
                "{}: circuit open after repeated failures",
                self.cache.name()
            ))),
        }
    }

    fn record<T>(&self, result: Result<T, CacheError>) -> Result<T, CacheError> {
        let failed = matches!(result, Err(CacheError::Unavailable(_)));
        let mut s = self.lock();
        let next = match (&*s, failed) {
            (_, false) => Inner::Closed { failures: 0 },
            (Inner::Closed { failures }, true) if failures + 1 < self.config.failures_to_open => {
                Inner::Closed {
                    failures: failures + 1,
                }
            }
            (_, true) => Inner::Open {
                until: Instant::now() + self.config.open_for,
            },
        };
        let changed = std::mem::discriminant(&*s) != std::mem::discriminant(&next);
        *s = next;
        drop(s);
        if failed {
            metrics::counter!("strata_cache_errors_total", "level" => self.level).increment(1);
        }
        if changed {
            self.publish(if failed {
                BreakerState::Open
            } else {
                BreakerState::Closed
            });
        }
        result
    }
}

#[async_trait]
impl<C: Cache> Cache for Guarded<C> {
    fn name(&self) -> &'static str {
        self.cache.name()
    }
    async fn raw_get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        self.admit()?;
        self.record(self.cache.raw_get(key).await)
    }
    async fn raw_set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        self.admit()?;
        self.record(self.cache.raw_set(key, value, ttl).await)
    }
    async fn raw_delete(&self, key: &str) -> Result<(), CacheError> {
        self.admit()?;
        self.record(self.cache.raw_delete(key).await)
    }
    async fn raw_add(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, CacheError> {
        self.admit()?;
        self.record(self.cache.raw_add(key, value, ttl).await)
    }
    async fn raw_set_versioned(
        &self,
        key: &str,
        version: u64,
        record: Bytes,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        self.admit()?;
        self.record(
            self.cache
                .raw_set_versioned(key, version, record, ttl)
                .await,
        )
    }
    async fn delete_prefix(&self, prefix: &str) -> Result<(), CacheError> {
        // Not refused by an open breaker: the caller retries until it is done.
        self.cache.delete_prefix(prefix).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A cache that is up or down at will and counts the calls that reach it.
    #[derive(Default)]
    struct Switchable {
        down: AtomicBool,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Cache for Switchable {
        fn name(&self) -> &'static str {
            "switchable"
        }
        async fn raw_get(&self, _: &str) -> Result<Option<Bytes>, CacheError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                Err(CacheError::Unavailable("down".into()))
            } else {
                Ok(None)
            }
        }
        async fn raw_set(&self, _: &str, _: Bytes, _: Duration) -> Result<(), CacheError> {
            Ok(())
        }
        async fn raw_delete(&self, _: &str) -> Result<(), CacheError> {
            Ok(())
        }
        async fn raw_add(&self, _: &str, _: Bytes, _: Duration) -> Result<bool, CacheError> {
            Ok(true)
        }
        async fn raw_set_versioned(
            &self,
            _: &str,
            _: u64,
            _: Bytes,
            _: Duration,
        ) -> Result<bool, CacheError> {
            Ok(true)
        }
    }

    #[tokio::test]
    async fn opens_after_repeated_failures_stops_calling_then_recovers_through_one_trial() {
        let config = BreakerConfig {
            failures_to_open: 3,
            open_for: Duration::from_millis(100),
        };
        let g = Guarded::new(Switchable::default(), config, "test");
        g.cache.down.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            assert!(g.get("k").await.is_err());
        }
        assert_eq!(g.state(), BreakerState::Open);
        let reached = g.cache.calls.load(Ordering::SeqCst);
        for _ in 0..100 {
            assert!(matches!(g.get("k").await, Err(CacheError::Unavailable(_))));
        }
        assert_eq!(
            g.cache.calls.load(Ordering::SeqCst),
            reached,
            "an open breaker does not call the cache"
        );

        // Still down after the pause: one trial goes out and fails, the breaker opens again.
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(g.state(), BreakerState::HalfOpen);
        assert!(g.get("k").await.is_err());
        assert_eq!(g.cache.calls.load(Ordering::SeqCst), reached + 1);
        assert_eq!(g.state(), BreakerState::Open);

        // Back up: the next trial closes it.
        g.cache.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(g.get("k").await, Ok(None));
        assert_eq!(g.state(), BreakerState::Closed);
        assert_eq!(g.get("k").await, Ok(None));
    }

    #[tokio::test]
    async fn refused_input_does_not_count_as_a_failure() {
        let g = Guarded::new(
            Switchable::default(),
            BreakerConfig {
                failures_to_open: 1,
                open_for: Duration::from_secs(60),
            },
            "test",
        );
        for _ in 0..10 {
            assert!(matches!(
                g.get("bad key").await,
                Err(CacheError::InvalidKey(_))
            ));
        }
        assert_eq!(g.state(), BreakerState::Closed);
    }
}
