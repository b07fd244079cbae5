//! The shared [`Cache`] backend on Memcached (async-memcached, text protocol), one connection
//! per cache object behind a lock, re-opened after any error; every call under a tight deadline.
//!
//! Memcached counts TTLs in whole seconds, so each stored value carries a small header: a
//! format marker and its own expiry in milliseconds. An entry past its expiry, or one without
//! the marker (written by something else), is a miss — never served.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_memcached::{AsciiProtocol as _, Client};
use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Mutex;

use crate::kv::{Cache, CacheError};

/// Marks a value written by this backend (format 1).
const MAGIC: &[u8; 4] = b"STC1";
const HEADER: usize = MAGIC.len() + 8;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct MemcachedConfig {
    /// `HOST:PORT`.
    pub addr: String,
    /// Deadline of every call (connecting included).
    pub call_timeout: Duration,
}

impl MemcachedConfig {
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            call_timeout: Duration::from_millis(50),
        }
    }
}

/// A Memcached server as a cache.
pub struct MemcachedCache {
    config: MemcachedConfig,
    connection: Mutex<Option<Client>>,
}

impl std::fmt::Debug for MemcachedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedCache")
            .field("addr", &self.config.addr)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> CacheError {
    CacheError::Unavailable(format!("memcached: {e}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The stored form: marker, expiry (ms since the epoch, big-endian), value.
fn encode(value: &[u8], ttl: Duration) -> Bytes {
    let expires = now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    let mut out = BytesMut::with_capacity(HEADER + value.len());
    out.put_slice(MAGIC);
    out.put_u64(expires);
    out.put_slice(value);
    out.freeze()
}

/// The value, if the stored form is ours and not expired.
fn decode(stored: &[u8]) -> Option<Bytes> {
    let (header, value) = stored.split_at_checked(HEADER)?;
    let (magic, expires) = header.split_at(MAGIC.len());
    if magic != MAGIC {
        return None;
    }
    let expires = u64::from_be_bytes(expires.try_into().ok()?);
    (now_ms() < expires).then(|| Bytes::copy_from_slice(value))
}

impl MemcachedCache {
    /// Connects (the first connection must succeed; later ones are opened on demand).
    pub async fn connect(config: &MemcachedConfig) -> Result<Self, CacheError> {
        let cache = Self {
            config: config.clone(),
            connection: Mutex::new(None),
        };
        let first = tokio::time::timeout(
            Duration::from_secs(2),
            Client::new(format!("tcp://{}", config.addr)),
        )
        .await
        .map_err(|_| unavailable("no answer within 2 s"))?
        .map_err(unavailable)?;
        *cache.connection.lock().await = Some(first);
        Ok(cache)
    }

    /// Runs one operation on the connection (opening it if needed) within the deadline; any
    /// failure drops the connection, whose state is then unknown.
    async fn run<T>(
        &self,
        op: impl AsyncFnOnce(&mut Client) -> Result<T, async_memcached::Error>,
    ) -> Result<T, CacheError> {
        let work = async {
            let mut slot = self.connection.lock().await;
            if slot.is_none() {
                *slot = Some(
                    Client::new(format!("tcp://{}", self.config.addr))
                        .await
                        .map_err(unavailable)?,
                );
            }
            let Some(client) = slot.as_mut() else {
                return Err(unavailable("no connection"));
            };
            match op(client).await {
                Ok(v) => Ok(v),
                Err(e) => {
                    *slot = None;
                    Err(unavailable(e))
                }
            }
        };
        match tokio::time::timeout(self.config.call_timeout, work).await {
            Ok(r) => r,
            Err(_) => {
                // The connection may be mid-answer: start afresh next time.
                if let Ok(mut slot) = self.connection.try_lock() {
                    *slot = None;
                }
                Err(unavailable(format!(
                    "no answer within {} ms",
                    self.config.call_timeout.as_millis()
                )))
            }
        }
    }
}

#[async_trait]
impl Cache for MemcachedCache {
    fn name(&self) -> &'static str {
        "memcached"
    }

    async fn raw_get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        let stored = self.run(async |c: &mut Client| c.get(key).await).await?;
        Ok(stored.and_then(|v| v.data).and_then(|d| decode(&d)))
    }

    async fn raw_set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        let stored = encode(&value, ttl);
        // Whole seconds, rounded up; the header's expiry is the precise one.
        let secs = i64::try_from(ttl.as_secs() + 1).unwrap_or(i64::MAX);
        self.run(async |c: &mut Client| c.set(key, stored.as_ref(), Some(secs), None).await)
            .await
    }

    async fn raw_delete(&self, key: &str) -> Result<(), CacheError> {
        self.run(async |c: &mut Client| match c.delete(key).await {
            Err(async_memcached::Error::Protocol(async_memcached::Status::NotFound)) => Ok(()),
            other => other,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_carry_their_expiry_and_foreign_ones_are_misses() {
        let stored = encode(b"John", Duration::from_secs(60));
        assert_eq!(decode(&stored), Some(Bytes::from_static(b"John")));
        let expired = encode(b"John", Duration::ZERO);
        assert_eq!(decode(&expired), None, "expired");
        assert_eq!(decode(b"John"), None, "no header: foreign");
        assert_eq!(decode(b"XXXX00000000John"), None, "wrong marker: foreign");
        assert_eq!(decode(b""), None);
    }
}
