//! The session store on Redis, for deployments whose API servers share a Redis of their own
//! (durable: `appendonly yes`, `maxmemory-policy noeviction` — a cache's Redis, which evicts,
//! would log people out).
//!
//! - A session is a hash `strata:session:<id>` that expires with the session; a user's session
//!   ids are a set `strata:user-sessions:<user>` (ids of expired sessions are dropped from it
//!   when listed).
//! - Rotation and reuse detection run as one Lua script, so two servers presenting the same
//!   refresh token at once cannot both rotate it.
//! - Failure counters are hashes `strata:failures:<key>` holding a count and the window's end,
//!   updated by a script with the caller's clock (every server uses the same rule) and expiring
//!   with their window.
//!
//! - Idempotency records ([`crate::idempotency`]) are hashes `strata:idem:<scoped key>` that
//!   expire with the record (`PEXPIRE`); claiming, finishing and abandoning are each one script.
//!
//! Every call has a deadline; a Redis that is down or stalled gives `Unavailable`.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use strata_core::user::UserId;

use crate::StoreError;
use crate::accounts::{REMEMBERED_HASHES, Rotation, Session, SessionStore};
use crate::idempotency::{Begin, Claim, IdempotencyStore, StoredResponse};

/// Deadline of every call.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// Sessions in Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisSessions {
    connection: ConnectionManager,
}

impl std::fmt::Debug for RedisSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessions").finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis session store: {e}"))
}

fn session_key(id: &str) -> String {
    format!("strata:session:{id}")
}

fn user_key(user: UserId) -> String {
    format!("strata:user-sessions:{user}")
}

fn failures_key(key: &str) -> String {
    format!("strata:failures:{key}")
}

fn idempotency_key(key: &str) -> String {
    format!("strata:idem:{key}")
}

/// ARGV: fingerprint, proposed resource id, owner, now (ms), claim ttl (ms), record ttl (ms).
/// Returns {'started', id} | {'busy'} | {'mismatch'} | {'done', status, headers, body}.
const BEGIN_IDEMPOTENT: &str = r#"
local k = KEYS[1]
local now = tonumber(ARGV[4])
local f = redis.call('HMGET', k, 'fp', 'rid', 'status', 'claim_until', 'headers', 'body')
if f[1] == false then
  redis.call('HSET', k, 'fp', ARGV[1], 'rid', ARGV[2], 'owner', ARGV[3], 'status', '0',
    'claim_until', now + tonumber(ARGV[5]), 'headers', '', 'body', '')
  redis.call('PEXPIRE', k, ARGV[6])
  return {'started', ARGV[2]}
end
if f[1] ~= ARGV[1] then return {'mismatch'} end
if f[3] ~= '0' then return {'done', f[3], f[5], f[6]} end
if tonumber(f[4]) > now then return {'busy'} end
redis.call('HSET', k, 'owner', ARGV[3], 'claim_until', now + tonumber(ARGV[5]))
return {'started', f[2]}
"#;

/// ARGV: owner, status, headers, body. Returns 1 if stored.
const FINISH_IDEMPOTENT: &str = r#"
local f = redis.call('HMGET', KEYS[1], 'owner', 'status')
if f[1] ~= ARGV[1] or f[2] ~= '0' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'headers', ARGV[3], 'body', ARGV[4],
  'claim_until', 0)
return 1
"#;

/// ARGV: owner.
const ABANDON_IDEMPOTENT: &str = r#"
local f = redis.call('HMGET', KEYS[1], 'owner', 'status')
if f[1] == ARGV[1] and f[2] == '0' then redis.call('HSET', KEYS[1], 'claim_until', 0) end
return 0
"#;

/// ARGV: presented hash, new hash, now (ms), how many old hashes to remember.
/// Returns "rotated", "reused" or "refused".
const ROTATE: &str = r#"
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then return 'refused' end
local f = redis.call('HMGET', k, 'revoked', 'expires', 'hash', 'used', 'gen')
if f[1] == '1' or tonumber(f[2]) <= tonumber(ARGV[3]) then return 'refused' end
local used = f[4] or ''
if f[3] == ARGV[1] then
  local hashes = {}
  for h in string.gmatch(used, '%S+') do table.insert(hashes, h) end
  table.insert(hashes, f[3])
  local keep = tonumber(ARGV[4])
  local first = math.max(1, #hashes - keep + 1)
  local kept = {}
  for i = first, #hashes do table.insert(kept, hashes[i]) end
  redis.call('HSET', k, 'hash', ARGV[2], 'used', table.concat(kept, ' '),
    'gen', tonumber(f[5]) + 1, 'last_used', ARGV[3])
  return 'rotated'
end
for h in string.gmatch(used, '%S+') do
  if h == ARGV[1] then
    redis.call('HSET', k, 'revoked', '1')
    return 'reused'
  end
end
return 'refused'
"#;

/// ARGV: window end (ms), now (ms), window length (ms). Returns the count.
const COUNT_FAILURE: &str = r#"
local k = KEYS[1]
local f = redis.call('HMGET', k, 'count', 'end')
if f[2] == false or tonumber(f[2]) <= tonumber(ARGV[2]) then
  redis.call('HSET', k, 'count', 1, 'end', ARGV[1])
  redis.call('PEXPIRE', k, ARGV[3])
  return 1
end
return redis.call('HINCRBY', k, 'count', 1)
"#;

/// Takes back one count, never below zero.
const DISCOUNT_FAILURE: &str = r#"
local n = tonumber(redis.call('HGET', KEYS[1], 'count'))
if n and n > 0 then
  redis.call('HINCRBY', KEYS[1], 'count', -1)
end
return 0
"#;

impl RedisSessions {
    /// Connects to `url` (`redis://HOST:PORT`); the first connection must succeed.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| {
            StoreError::Unusable(format!(
                "not a Redis URL ({e}): use redis://HOST:PORT for the session store"
            ))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1);
        let connection = tokio::time::timeout(
            Duration::from_secs(2),
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| unavailable("no answer within 2 s"))?
        .map_err(unavailable)?;
        Ok(Self { connection })
    }

    async fn run<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(unavailable(format!(
                "no answer within {} ms",
                CALL_TIMEOUT.as_millis()
            ))),
        }
    }

    async fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let mut c = self.connection.clone();
        let fields: std::collections::HashMap<String, String> =
            Self::run(c.hgetall(session_key(id))).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let num = |name: &str| -> Result<u64, StoreError> {
            fields
                .get(name)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| unavailable(format!("session {id} has no valid field {name}")))
        };
        let text = |name: &str| fields.get(name).cloned().unwrap_or_default();
        Ok(Some(Session {
            id: id.to_owned(),
            user_id: UserId(num("user")?),
            created_ms: num("created")?,
            expires_ms: num("expires")?,
            last_used_ms: num("last_used")?,
            generation: num("gen")?,
            revoked: text("revoked") == "1",
            user_agent: text("ua"),
            ip: text("ip"),
        }))
    }
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn create_session(
        &self,
        session: &Session,
        refresh_hash: &str,
    ) -> Result<(), StoreError> {
        let s = session;
        let key = session_key(&s.id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &key,
                &[
                    ("user", s.user_id.0.to_string()),
                    ("created", s.created_ms.to_string()),
                    ("expires", s.expires_ms.to_string()),
                    ("last_used", s.last_used_ms.to_string()),
                    ("gen", s.generation.to_string()),
                    ("revoked", if s.revoked { "1" } else { "0" }.to_owned()),
                    ("ua", s.user_agent.clone()),
                    ("ip", s.ip.clone()),
                    ("hash", refresh_hash.to_owned()),
                    ("used", String::new()),
                ],
            )
            .ignore()
            .cmd("PEXPIREAT")
            .arg(&key)
            .arg(s.expires_ms)
            .ignore()
            .sadd(user_key(s.user_id), &s.id)
            .ignore();
        let mut c = self.connection.clone();
        Self::run(pipe.query_async::<()>(&mut c)).await
    }

    async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        self.load(id).await
    }

    async fn rotate(
        &self,
        id: &str,
        presented_hash: &str,
        new_hash: &str,
        now_ms: u64,
    ) -> Result<Rotation, StoreError> {
        let mut c = self.connection.clone();
        let outcome: String = Self::run(
            redis::cmd("EVAL")
                .arg(ROTATE)
                .arg(1)
                .arg(session_key(id))
                .arg(presented_hash)
                .arg(new_hash)
                .arg(now_ms)
                .arg(REMEMBERED_HASHES)
                .query_async(&mut c),
        )
        .await?;
        match outcome.as_str() {
            "rotated" => match self.load(id).await? {
                Some(s) => Ok(Rotation::Rotated(s)),
                // Expired in between: the new token is worthless anyway.
                None => Ok(Rotation::Refused),
            },
            "reused" => Ok(Rotation::Reused),
            _ => Ok(Rotation::Refused),
        }
    }

    async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let mut c = self.connection.clone();
        // HSET only where the session exists (an unknown id must not create a husk).
        let changed: i64 = Self::run(
            redis::cmd("EVAL")
                .arg(
                    "if redis.call('EXISTS', KEYS[1]) == 1 then \
                     redis.call('HSET', KEYS[1], 'revoked', '1') return 1 end return 0",
                )
                .arg(1)
                .arg(session_key(id))
                .query_async(&mut c),
        )
        .await?;
        Ok(changed == 1)
    }

    async fn sessions_of(&self, user: UserId, now_ms: u64) -> Result<Vec<Session>, StoreError> {
        let mut c = self.connection.clone();
        let ids: Vec<String> = Self::run(c.smembers(user_key(user))).await?;
        let mut out = Vec::new();
        for id in ids.iter().take(1000) {
            match self.load(id).await? {
                Some(s) if s.is_active(now_ms) => out.push(s),
                Some(_) => {}
                None => {
                    let _: Result<(), _> = Self::run(c.srem(user_key(user), id)).await;
                }
            }
        }
        out.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn revoke_all(&self, user: UserId, now_ms: u64) -> Result<u64, StoreError> {
        let mut revoked = 0;
        for s in self.sessions_of(user, now_ms).await? {
            if self.revoke(&s.id).await? {
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    async fn count_failure(
        &self,
        key: &str,
        window: Duration,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let window_ms = window.as_millis().max(1) as u64;
        let mut c = self.connection.clone();
        Self::run(
            redis::cmd("EVAL")
                .arg(COUNT_FAILURE)
                .arg(1)
                .arg(failures_key(key))
                .arg(now_ms + window_ms)
                .arg(now_ms)
                .arg(window_ms)
                .query_async(&mut c),
        )
        .await
    }

    async fn failures(&self, key: &str, now_ms: u64) -> Result<(u64, Duration), StoreError> {
        let mut c = self.connection.clone();
        let (count, end): (Option<u64>, Option<u64>) =
            Self::run(c.hmget(failures_key(key), &["count", "end"])).await?;
        Ok(match (count, end) {
            (Some(count), Some(end)) if end > now_ms => {
                (count, Duration::from_millis(end - now_ms))
            }
            _ => (0, Duration::ZERO),
        })
    }

    async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        let mut c = self.connection.clone();
        Self::run(c.del::<_, ()>(failures_key(key))).await
    }

    async fn discount_failure(&self, key: &str) -> Result<(), StoreError> {
        let mut c = self.connection.clone();
        Self::run(
            redis::cmd("EVAL")
                .arg(DISCOUNT_FAILURE)
                .arg(1)
                .arg(failures_key(key))
                .query_async::<i64>(&mut c),
        )
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl IdempotencyStore for RedisSessions {
    async fn begin_idempotent(&self, key: &str, claim: &Claim) -> Result<Begin, StoreError> {
        let mut c = self.connection.clone();
        let reply: Vec<Vec<u8>> = Self::run(
            redis::cmd("EVAL")
                .arg(BEGIN_IDEMPOTENT)
                .arg(1)
                .arg(idempotency_key(key))
                .arg(&claim.fingerprint)
                .arg(claim.resource_id)
                .arg(&claim.owner)
                .arg(claim.now_ms)
                .arg(claim.claim_ttl.as_millis().max(1) as u64)
                .arg(claim.record_ttl.as_millis().max(1) as u64)
                .query_async(&mut c),
        )
        .await?;
        let text = |i: usize| {
            reply
                .get(i)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        match text(0).as_str() {
            "started" => text(1)
                .parse()
                .map(|resource_id| Begin::Started { resource_id })
                .map_err(|_| unavailable(format!("idempotency record {key} has no valid id"))),
            "busy" => Ok(Begin::InProgress),
            "mismatch" => Ok(Begin::Mismatch),
            "done" => Ok(Begin::Done(StoredResponse {
                status: text(1).parse().map_err(|_| {
                    unavailable(format!("idempotency record {key} has no valid status"))
                })?,
                headers: StoredResponse::headers_from_text(&text(2)),
                body: reply.get(3).cloned().unwrap_or_default(),
            })),
            other => Err(unavailable(format!(
                "unexpected answer {other:?} to an idempotency claim"
            ))),
        }
    }

    async fn finish_idempotent(
        &self,
        key: &str,
        owner: &str,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        let mut c = self.connection.clone();
        let stored: i64 = Self::run(
            redis::cmd("EVAL")
                .arg(FINISH_IDEMPOTENT)
                .arg(1)
                .arg(idempotency_key(key))
                .arg(owner)
                .arg(response.status)
                .arg(response.headers_text())
                .arg(&response.body[..])
                .query_async(&mut c),
        )
        .await?;
        Ok(stored == 1)
    }

    async fn abandon_idempotent(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        let mut c = self.connection.clone();
        Self::run(
            redis::cmd("EVAL")
                .arg(ABANDON_IDEMPOTENT)
                .arg(1)
                .arg(idempotency_key(key))
                .arg(owner)
                .query_async::<i64>(&mut c),
        )
        .await
        .map(|_| ())
    }
}
