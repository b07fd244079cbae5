//! The shared [`Cache`] backend on Redis: one node, through redis-rs's `ConnectionManager`
//! (reconnects by itself), every call under a tight deadline so that a slow or dead Redis costs
//! a request milliseconds, not seconds.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::kv::{Cache, CacheError};

/// Connection settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// Deadline of every call (connecting included).
    pub call_timeout: Duration,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            call_timeout: Duration::from_millis(50),
        }
    }
}

/// A Redis node as a cache. Cheap to clone.
#[derive(Clone)]
pub struct RedisCache {
    connection: ConnectionManager,
    call_timeout: Duration,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache").finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> CacheError {
    CacheError::Unavailable(format!("redis: {e}"))
}

impl RedisCache {
    /// Connects (the first connection must succeed; later ones are retried in the background).
    pub async fn connect(config: &RedisConfig) -> Result<Self, CacheError> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| {
            CacheError::Unavailable(format!("not a Redis URL ({e}): use redis://HOST:PORT"))
        })?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.call_timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(config.call_timeout))
            .set_number_of_retries(1);
        let connection = tokio::time::timeout(
            Duration::from_secs(2),
            ConnectionManager::new_with_config(client, manager_config),
        )
        .await
        .map_err(|_| unavailable("no answer within 2 s"))?
        .map_err(unavailable)?;
        Ok(Self {
            connection,
            call_timeout: config.call_timeout,
        })
    }

    async fn run<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CacheError> {
        match tokio::time::timeout(self.call_timeout, call).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(unavailable(format!(
                "no answer within {} ms",
                self.call_timeout.as_millis()
            ))),
        }
    }
}

/// `text` matched literally by a Redis glob pattern.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[async_trait]
impl Cache for RedisCache {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn raw_get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        let mut c = self.connection.clone();
        let value: Option<Vec<u8>> = self.run(c.get(key)).await?;
        Ok(value.map(Bytes::from))
    }

    async fn raw_set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        let mut c = self.connection.clone();
        self.run(c.pset_ex::<_, _, ()>(key, value.as_ref(), millis(ttl)))
            .await
    }

    async fn raw_delete(&self, key: &str) -> Result<(), CacheError> {
        let mut c = self.connection.clone();
        self.run(c.del::<_, ()>(key)).await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), CacheError> {
        let mut c = self.connection.clone();
        let pattern = format!("{}*", glob_escape(prefix));
        let mut cursor: u64 = 0;
        // Bounded: a SCAN pass ends when the cursor comes back to 0; each step deletes what it
        // found (UNLINK frees the memory off Redis's main thread).
        for _ in 0..1_000_000 {
            let (next, keys): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c),
                )
                .await?;
            if !keys.is_empty() {
                self.run(redis::cmd("UNLINK").arg(&keys).query_async::<()>(&mut c))
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
        Err(unavailable("the key scan did not end"))
    }

    async fn raw_add(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, CacheError> {
        let mut c = self.connection.clone();
        let stored: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(key)
                    .arg(value.as_ref())
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl))
                    .query_async(&mut c),
            )
            .await?;
        Ok(stored.is_some())
    }

    async fn raw_set_versioned(
        &self,
        key: &str,
        version: u64,
        record: Bytes,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let mut c = self.connection.clone();
        let stored: i64 = self
            .run(
                redis::cmd("EVAL")
                    .arg(SET_IF_NEWER)
                    .arg(1)
                    .arg(key)
                    .arg(record.as_ref())
                    .arg(format!("{version:020}"))
                    .arg(millis(ttl))
                    .query_async(&mut c),
            )
            .await?;
        Ok(stored == 1)
    }
}

/// Compare-and-set by version, atomically inside Redis: keep a versioned record whose 20 version
/// digits are at least the new ones; replace anything else (absent, older, foreign).
const SET_IF_NEWER: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, 4) == 'SV1:' then
  local there = string.sub(cur, 5, 24)
  if string.len(there) == 20 and not string.find(there, '%D') and there > ARGV[2] then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"#;

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}
