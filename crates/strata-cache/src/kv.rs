//! The textbook cache interface — `set(key, value, ttl)`, `get(key)`, `delete(key)`, and
//! [`get_or_load`] — over bytes, with one contract for every backend: in-process
//! ([`crate::moka_kv::MokaCache`]) and shared ([`crate::redis_kv::RedisCache`]).
//!
//! Limits are checked before any backend is called, so every backend refuses the same things
//! with the same error: keys of 1 to [`MAX_KEY_BYTES`] printable ASCII bytes without spaces (what
//! Memcached accepts too), values of at most [`MAX_VALUE_BYTES`], TTLs from 1 ms to
//! [`MAX_TTL`]. A backend that is down, slow or answering garbage reports `Unavailable`: the
//! caller goes to the data tier instead — a failed cache is not an outage.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 250;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Longest time-to-live.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why a cache call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    #[error("cache key {0}")]
    InvalidKey(&'static str),
    #[error("cache value is {size} bytes, over the limit of {MAX_VALUE_BYTES}")]
    ValueTooLarge { size: usize },
    #[error("cache time-to-live must be from 1 ms to 30 days")]
    InvalidTtl,
    /// Down, slow past the call's deadline, or not speaking the protocol: use the data tier.
    #[error("cache unavailable: {0}")]
    Unavailable(String),
}

/// Checks a key against the limits every backend shares.
pub fn check_key(key: &str) -> Result<(), CacheError> {
    if key.is_empty() {
        return Err(CacheError::InvalidKey("is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(CacheError::InvalidKey("is longer than 250 bytes"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CacheError::InvalidKey(
            "must be printable ASCII without spaces or control characters",
        ));
    }
    Ok(())
}

fn check_set(key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
    check_key(key)?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(CacheError::ValueTooLarge { size: value.len() });
    }
    if ttl < Duration::from_millis(1) || ttl > MAX_TTL {
        return Err(CacheError::InvalidTtl);
    }
    Ok(())
}

/// Marks a versioned record: `SV1:`, the version as 20 ASCII digits (so that comparing the
/// digits as text compares the versions — all a Lua script in Redis needs), then the payload.
pub const VERSIONED_MARK: &[u8; 4] = b"SV1:";
const VERSION_DIGITS: usize = 20;
/// Bytes a versioned record adds to its payload.
pub const VERSIONED_HEADER: usize = VERSIONED_MARK.len() + VERSION_DIGITS;

/// The stored form of `payload` at `version`.
pub fn encode_versioned(version: u64, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(VERSIONED_HEADER + payload.len());
    out.extend_from_slice(VERSIONED_MARK);
    out.extend_from_slice(format!("{version:020}").as_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// The version and payload of a stored record; `None` for anything not written by
/// [`encode_versioned`] (a foreign or corrupt value, which callers treat as a miss).
pub fn decode_versioned(stored: &Bytes) -> Option<(u64, Bytes)> {
    let header = stored.get(..VERSIONED_HEADER)?;
    let (mark, digits) = header.split_at(VERSIONED_MARK.len());
    if mark != VERSIONED_MARK || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let version = std::str::from_utf8(digits).ok()?.parse::<u64>().ok()?;
    Some((version, stored.slice(VERSIONED_HEADER..)))
}

/// A cache of byte values. Implementations check nothing themselves: [`Cache`]'s provided
/// methods check the limits, then call the `raw_` ones.
#[async_trait]
pub trait Cache: Send + Sync {
    /// A short name for logs and metrics (`moka`, `redis`).
    fn name(&self) -> &'static str;

    async fn raw_get(&self, key: &str) -> Result<Option<Bytes>, CacheError>;
    async fn raw_set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError>;
    async fn raw_delete(&self, key: &str) -> Result<(), CacheError>;
    /// Stores `value` only if `key` holds nothing; `true` if it was stored.
    async fn raw_add(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, CacheError>;
    /// Stores `record` (from [`encode_versioned`], at `version`) unless `key` holds a versioned
    /// record with a higher version, atomically; a foreign value is replaced, and so is the same
    /// version (the same value — storing it again renews its TTL).
    async fn raw_set_versioned(
        &self,
        key: &str,
        version: u64,
        record: Bytes,
        ttl: Duration,
    ) -> Result<bool, CacheError>;

    /// Deletes every key that starts with `prefix` (a cache whose contents may all be stale).
    /// Rare and slow: Redis scans its keys, Memcached (which cannot list them) drops
    /// everything it holds. A backend that can do neither says so.
    async fn delete_prefix(&self, prefix: &str) -> Result<(), CacheError> {
        let _ = prefix;
        Err(CacheError::Unavailable(format!(
            "{} cannot delete keys by prefix",
            self.name()
        )))
    }

    /// Stores `value` under `key` for `ttl` only if the key is absent (a lease, a lock);
    /// `true` if this call stored it.
    async fn add(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, CacheError> {
        check_set(key, &value, ttl)?;
        self.raw_add(key, value, ttl).await
    }

    /// Stores `payload` as version `version` of `key` unless a newer version is there — so a slow reader can never put back a value older than a writer's. `true` if
    /// this call stored it.
    async fn set_versioned(
        &self,
        key: &str,
        version: u64,
        payload: &[u8],
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let record = encode_versioned(version, payload);
        check_set(key, &record, ttl)?;
        self.raw_set_versioned(key, version, record, ttl).await
    }

    /// The version and payload under `key`. A value that is not a versioned record (foreign or
    /// corrupt) is a miss.
    async fn get_versioned(&self, key: &str) -> Result<Option<(u64, Bytes)>, CacheError> {
        Ok(self.get(key).await?.as_ref().and_then(decode_versioned))
    }

    /// The value under `key`, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        check_key(key)?;
        self.raw_get(key).await
    }

    /// Stores `value` under `key` for `ttl`.
    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        check_set(key, &value, ttl)?;
        self.raw_set(key, value, ttl).await
    }

    /// Removes `key` (absent is fine).
    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        check_key(key)?;
        self.raw_delete(key).await
    }
}

/// Read-through: the cached value, or `load()`'s, which is then cached for `ttl`. A cache that
/// fails is skipped (the load still runs and its answer is returned); `load`'s error is
/// returned as is and nothing is cached.
pub async fn get_or_load<E, F, Fut>(
    cache: &dyn Cache,
    key: &str,
    ttl: Duration,
    load: F,
) -> Result<Option<Bytes>, LoadError<E>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Option<Bytes>, E>>,
{
    match cache.get(key).await {
        Ok(Some(hit)) => return Ok(Some(hit)),
        Ok(None) | Err(CacheError::Unavailable(_)) => {}
        Err(e) => return Err(LoadError::Cache(e)),
    }
    let loaded = load().await.map_err(LoadError::Load)?;
    if let Some(value) = &loaded {
        match cache.set(key, value.clone(), ttl).await {
            Ok(()) | Err(CacheError::Unavailable(_)) => {}
            // Too large to cache: serve it anyway.
            Err(CacheError::ValueTooLarge { .. }) => {}
            Err(e) => return Err(LoadError::Cache(e)),
        }
    }
    Ok(loaded)
}

/// What [`get_or_load`] can fail with: a request the cache refuses (bad key or TTL), or the
/// loader's own error.
#[derive(Debug, PartialEq, Eq)]
pub enum LoadError<E> {
    Cache(CacheError),
    Load(E),
}

/// The contract every backend must keep, run by each backend's tests.
pub mod contract {
    use super::*;

    /// Panics with a sentence when `cache` breaks the contract.
    pub async fn run_all(cache: &dyn Cache) {
        let ttl = Duration::from_secs(60);
        assert_eq!(cache.get("absent").await, Ok(None), "a missing key is None");
        cache
            .set("user:12", Bytes::from_static(b"John"), ttl)
            .await
            .unwrap_or_else(|e| panic!("set: {e}"));
        assert_eq!(
            cache.get("user:12").await,
            Ok(Some(Bytes::from_static(b"John")))
        );
        cache
            .set("user:12", Bytes::from_static(b"Jane"), ttl)
            .await
            .unwrap_or_else(|e| panic!("overwrite: {e}"));
        assert_eq!(
            cache.get("user:12").await,
            Ok(Some(Bytes::from_static(b"Jane"))),
            "set overwrites"
        );
        cache
            .delete("user:12")
            .await
            .unwrap_or_else(|e| panic!("delete: {e}"));
        assert_eq!(cache.get("user:12").await, Ok(None), "delete removes");
        cache
            .delete("user:12")
            .await
            .unwrap_or_else(|e| panic!("deleting an absent key is fine: {e}"));

        // Binary values round-trip exactly.
        let binary = Bytes::from((0..=255u8).collect::<Vec<u8>>());
        cache
            .set("bin", binary.clone(), ttl)
            .await
            .expect("set binary");
        assert_eq!(cache.get("bin").await, Ok(Some(binary)));

        // Entries expire.
        cache
            .set("short", Bytes::from_static(b"x"), Duration::from_millis(50))
            .await
            .expect("set short");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            cache.get("short").await,
            Ok(None),
            "an expired entry is gone"
        );

        // The limits, the same for every backend.
        for bad in ["", "has space", "new\nline", &"k".repeat(MAX_KEY_BYTES + 1)] {
            assert!(
                matches!(cache.get(bad).await, Err(CacheError::InvalidKey(_))),
                "key {bad:?} is refused"
            );
        }
        assert!(cache.get(&"k".repeat(MAX_KEY_BYTES)).await.is_ok());
        assert_eq!(
            cache
                .set("big", Bytes::from(vec![0u8; MAX_VALUE_BYTES + 1]), ttl)
                .await,
            Err(CacheError::ValueTooLarge {
                size: MAX_VALUE_BYTES + 1
            })
        );
        assert_eq!(
            cache.set("t", Bytes::new(), Duration::ZERO).await,
            Err(CacheError::InvalidTtl)
        );

        // Read-through: one load, then hits.
        let mut loads = 0;
        for _ in 0..3 {
            let got = get_or_load(cache, "rt", ttl, || {
                loads += 1;
                async { Ok::<_, ()>(Some(Bytes::from_static(b"loaded"))) }
            })
            .await;
            assert_eq!(got, Ok(Some(Bytes::from_static(b"loaded"))));
        }
        assert_eq!(
            loads, 1,
            "read-through loads once, then serves from the cache"
        );

        // add: only when absent.
        assert_eq!(
            cache.add("lease", Bytes::from_static(b"a"), ttl).await,
            Ok(true)
        );
        assert_eq!(
            cache.add("lease", Bytes::from_static(b"b"), ttl).await,
            Ok(false),
            "add does not replace"
        );
        assert_eq!(cache.get("lease").await, Ok(Some(Bytes::from_static(b"a"))));

        // Versioned records: an older version never replaces a newer one.
        assert_eq!(cache.set_versioned("v", 5, b"five", ttl).await, Ok(true));
        assert_eq!(cache.set_versioned("v", 4, b"four", ttl).await, Ok(false));
        assert_eq!(
            cache.get_versioned("v").await,
            Ok(Some((5, Bytes::from_static(b"five"))))
        );
        // The same version again is the same value: it replaces (renewing the TTL).
        assert_eq!(cache.set_versioned("v", 5, b"five", ttl).await, Ok(true));
        assert_eq!(cache.set_versioned("v", 12, b"twelve", ttl).await, Ok(true));
        assert_eq!(
            cache.get_versioned("v").await,
            Ok(Some((12, Bytes::from_static(b"twelve")))),
            "a newer version replaces (12 > 5 although \"12\" < \"5\" as text)"
        );
        // A foreign value under the key is a miss for get_versioned and is replaced.
        cache
            .set("v", Bytes::from_static(b"SV1:garbage"), ttl)
            .await
            .expect("set foreign");
        assert_eq!(cache.get_versioned("v").await, Ok(None));
        assert_eq!(cache.set_versioned("v", 1, b"one", ttl).await, Ok(true));
        assert_eq!(
            cache.get_versioned("v").await,
            Ok(Some((1, Bytes::from_static(b"one"))))
        );
    }
}

/// A shared cache is a cache (so wrappers such as the circuit breaker take either).
#[async_trait]
impl<C: Cache + ?Sized> Cache for std::sync::Arc<C> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    async fn raw_get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        (**self).raw_get(key).await
    }
    async fn raw_set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        (**self).raw_set(key, value, ttl).await
    }
    async fn raw_delete(&self, key: &str) -> Result<(), CacheError> {
        (**self).raw_delete(key).await
    }
    async fn raw_add(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, CacheError> {
        (**self).raw_add(key, value, ttl).await
    }
    async fn raw_set_versioned(
        &self,
        key: &str,
        version: u64,
        record: Bytes,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        (**self).raw_set_versioned(key, version, record, ttl).await
    }
    async fn delete_prefix(&self, prefix: &str) -> Result<(), CacheError> {
        (**self).delete_prefix(prefix).await
    }
}
