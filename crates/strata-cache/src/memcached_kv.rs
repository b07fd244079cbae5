//! The shared [`Cache`] backend on Memcached (async-memcached, text and meta protocols): a small
//! pool of connections, each re-opened after any error; every call under a tight deadline.
//! Versioned writes are compare-and-swap loops (`mg … c` then `ms … C<cas>`, or `ME` — add —
//! when the key is absent), so an older version never replaces a newer one.
//!
//! Memcached counts TTLs in whole seconds, so each stored value carries a small header: a
//! format marker and its own expiry in milliseconds. An entry past its expiry, or one without
//! the marker (written by something else), is a miss — never served.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_memcached::{AsciiProtocol as _, Client, MetaProtocol as _, Status};
use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Mutex;

use crate::kv::{Cache, CacheError, decode_versioned};

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
    /// Connections kept open (each serves one call at a time).
    pub connections: usize,
}

impl MemcachedConfig {
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            call_timeout: Duration::from_millis(50),
            connections: 4,
        }
    }
}

/// A Memcached server as a cache.
pub struct MemcachedCache {
    config: MemcachedConfig,
    pool: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
}

/// Rounds of compare-and-swap a versioned write tries before leaving the key to a busier writer.
const CAS_ROUNDS: usize = 4;

fn is_status(e: &async_memcached::Error, status: &Status) -> bool {
    matches!(e, async_memcached::Error::Protocol(s) if s == status)
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

/// Memcached's TTL: whole seconds, rounded up; the header's expiry is the precise one.
fn whole_seconds(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs() + 1).unwrap_or(i64::MAX)
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
            pool: (0..config.connections.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
        };
        let first = tokio::time::timeout(
            Duration::from_secs(2),
            Client::new(format!("tcp://{}", config.addr)),
        )
        .await
        .map_err(|_| unavailable("no answer within 2 s"))?
        .map_err(unavailable)?;
        if let Some(slot) = cache.pool.first() {
            *slot.lock().await = Some(first);
        }
        Ok(cache)
    }

    /// A free connection slot if there is one, else the next in turn.
    fn slot(&self) -> &Mutex<Option<Client>> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.pool.len();
        (0..n)
            .map(|i| &self.pool[(start + i) % n])
            .find(|slot| slot.try_lock().is_ok())
            .unwrap_or(&self.pool[start % n])
    }

    /// Runs one operation on the connection (opening it if needed) within the deadline; any
    /// failure drops the connection, whose state is then unknown.
    async fn run<T>(
        &self,
        op: impl AsyncFnOnce(&mut Client) -> Result<T, async_memcached::Error>,
    ) -> Result<T, CacheError> {
        let connection = self.slot();
        let work = async {
            let mut slot = connection.lock().await;
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
                if let Ok(mut slot) = connection.try_lock() {
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
        let secs = whole_seconds(ttl);
        self.run(async |c: &mut Client| c.set(key, stored.as_ref(), Some(secs), None).await)
            .await
    }

    async fn raw_delete(&self, key: &str) -> Result<(), CacheError> {
        self.run(async |c: &mut Client| match c.delete(key).await {
            Err(e) if is_status(&e, &Status::NotFound) => Ok(()),
            other => other,
        })
        .await
    }

    async fn delete_prefix(&self, _prefix: &str) -> Result<(), CacheError> {
        // Memcached cannot list its keys: everything goes (the node is the cache's own).
        self.run(async |c: &mut Client| c.flush_all().await).await
    }

    async fn raw_add(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, CacheError> {
        let stored = encode(&value, ttl);
        let secs = whole_seconds(ttl);
        self.run(
            async |c: &mut Client| match c.add(key, stored.as_ref(), Some(secs), None).await {
                Ok(()) => Ok(true),
                Err(e) if is_status(&e, &Status::NotStored) => Ok(false),
                Err(e) => Err(e),
            },
        )
        .await
    }

    async fn raw_set_versioned(
        &self,
        key: &str,
        version: u64,
        record: Bytes,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let stored = encode(&record, ttl);
        let ttl_flag = format!("T{}", whole_seconds(ttl));
        self.run(async |c: &mut Client| {
            for _ in 0..CAS_ROUNDS {
                let current = c.meta_get(key, false, None, Some(&["v", "c"])).await?;
                let flags: Vec<String> = match current {
                    None => vec![ttl_flag.clone(), "ME".into()],
                    Some(there) => {
                        let newer_there = there
                            .data
                            .as_deref()
                            .and_then(decode)
                            .as_ref()
                            .and_then(decode_versioned)
                            .is_some_and(|(v, _)| v > version);
                        if newer_there {
                            return Ok(false);
                        }
                        let Some(cas) = there.cas else {
                            return Ok(false);
                        };
                        vec![ttl_flag.clone(), format!("C{cas}")]
                    }
                };
                let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                match c
                    .meta_set(key, stored.as_ref(), false, None, Some(&flags))
                    .await
                {
                    Ok(_) => return Ok(true),
                    // Someone else wrote or removed it between the two calls: look again.
                    Err(e)
                        if is_status(&e, &Status::Exists)
                            || is_status(&e, &Status::NotStored)
                            || is_status(&e, &Status::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(false)
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
