//! The embedded queue: every queue of an engine in one SQLite database file of its own
//! ([`DB_FILE`]), in WAL mode with `synchronous=FULL`, so a publish that returned is on disk.
//!
//! One table holds every message. A message is deliverable when it is not dead and its
//! `available_at` has passed; a lease is a random token written on the row with
//! `available_at` pushed to the end of the visibility timeout, so "the lease ran out" needs no
//! timer: the row simply becomes deliverable again. Every change runs in an immediate
//! transaction, so several processes on one file (the API servers publishing, the workers
//! receiving) never hand one lease to two consumers.
//!
//! Waiting receivers poll (every [`POLL_INTERVAL`]) and are woken at once by publishes in the
//! same process.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rand::Rng;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::Notify;

use crate::{
    DeadLetter, Delivery, Failed, Message, MessageId, Outgoing, Priority, Queue, QueueError,
    QueueName, QueuePolicy, QueueStats, Receipt,
};

/// The database file in the queue's directory.
pub const DB_FILE: &str = "queue.db";
/// How often a waiting receiver looks for messages published by other processes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
const SCHEMA_VERSION: i64 = 1;

/// The embedded engine. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct SqliteQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueue")
            .field("path", &self.inner.path)
            .field("policy", &self.inner.policy)
            .finish()
    }
}

struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
    policy: QueuePolicy,
    published: Notify,
}

fn engine(e: impl std::fmt::Display) -> QueueError {
    QueueError::Engine(e.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// SQLite stores signed 64-bit integers; every time and id here is far below 2^63.
fn sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl SqliteQueue {
    /// Opens (creating when missing) the queue database in `dir`.
    pub fn open(dir: &Path, policy: QueuePolicy) -> Result<Self, QueueError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            QueueError::Engine(format!(
                "cannot create queue directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path)
            .map_err(|e| QueueError::Engine(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(engine)?;
        enable_wal(&conn, Duration::from_secs(10)).map_err(engine)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(engine)?;
        migrate(&conn)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                conn: Mutex::new(conn),
                policy,
                published: Notify::new(),
            }),
        })
    }

    /// The rules this engine applies.
    pub fn policy(&self) -> QueuePolicy {
        self.inner.policy
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The queues that hold any message (dead letters included), by name.
    pub async fn names(&self) -> Result<Vec<QueueName>, QueueError> {
        self.with(|conn, _| {
            let mut stmt = conn
                .prepare("SELECT DISTINCT queue FROM messages ORDER BY queue")
                .map_err(engine)?;
            let names = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(engine)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(engine)?;
            Ok(names
                .iter()
                .filter_map(|n| QueueName::parse(n).ok())
                .collect())
        })
        .await
    }

    /// Runs `f` on the connection on a blocking thread.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &QueuePolicy) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = lock(&inner.conn);
            f(&mut conn, &inner.policy)
        })
        .await
        .map_err(|e| QueueError::Engine(format!("queue task failed: {e}")))?
    }
}

/// Switches a database to WAL mode. Several processes opening a new file at once race to
/// switch it, and SQLite answers that race with SQLITE_BUSY without consulting the busy
/// handler: retried here until `patience` has passed.
pub fn enable_wal(conn: &Connection, patience: Duration) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(f, _))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the connection leaves no transaction open (rusqlite rolls back
    // on drop), so the connection is still sound.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn migrate(conn: &Connection) -> Result<(), QueueError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(engine)?;
    if version > SCHEMA_VERSION {
        return Err(QueueError::Engine(format!(
            "the queue database is at schema version {version}, newer than this build's {SCHEMA_VERSION}; run a newer strata"
        )));
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            queue TEXT NOT NULL,
            payload BLOB NOT NULL,
            priority INTEGER NOT NULL,
            published_at INTEGER NOT NULL,
            available_at INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            lease INTEGER,
            dead_at INTEGER,
            error TEXT
        );
        CREATE INDEX IF NOT EXISTS messages_deliverable
            ON messages(queue, priority DESC, available_at, id) WHERE dead_at IS NULL;
        CREATE INDEX IF NOT EXISTS messages_dead
            ON messages(queue, dead_at, id) WHERE dead_at IS NOT NULL;
        PRAGMA user_version = 1;",
    )
    .map_err(engine)
}

fn message_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    let id: i64 = r.get("id")?;
    let priority: i64 = r.get("priority")?;
    let attempts: i64 = r.get("attempts")?;
    let published: i64 = r.get("published_at")?;
    Ok(Message {
        id: MessageId(id.max(0) as u64),
        payload: r.get("payload")?,
        priority: Priority::from_rank(priority.clamp(0, 255) as u8),
        attempt: attempts.clamp(0, i64::from(u32::MAX)) as u32,
        published_at_ms: published.max(0) as u64,
    })
}

/// One attempt at leasing a message, in one transaction.
fn try_receive(
    conn: &mut Connection,
    policy: &QueuePolicy,
    queue: &QueueName,
) -> Result<Option<Delivery>, QueueError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(engine)?;
    let now = now_ms();
    let delivery = loop {
        let row = tx
            .query_row(
                "SELECT id, payload, priority, published_at, attempts, lease FROM messages
                 WHERE queue = ?1 AND dead_at IS NULL AND available_at <= ?2
                 ORDER BY priority DESC, available_at, id LIMIT 1",
                params![queue.as_str(), sql(now)],
                |r| Ok((message_from_row(r)?, r.get::<_, Option<i64>>("lease")?)),
            )
            .optional()
            .map_err(engine)?;
        let Some((message, lease)) = row else {
            break None;
        };
        if lease.is_some() && message.attempt >= policy.max_attempts {
            // Its last lease ran out: the consumer died or hung on every attempt.
            tx.execute(
                "UPDATE messages SET dead_at = ?2, lease = NULL, error = ?3 WHERE id = ?1",
                params![
                    sql(message.id.0),
                    sql(now),
                    format!(
                        "the lease ran out on attempt {} of {}: the consumer died or hung",
                        message.attempt, policy.max_attempts
                    )
                ],
            )
            .map_err(engine)?;
            tracing::warn!(queue = %queue, id = %message.id, attempts = message.attempt,
                "A message whose leases kept running out was dead-lettered.");
            continue;
        }
        let receipt = Receipt(rand::rng().random_range(1..=i64::MAX as u64));
        tx.execute(
            "UPDATE messages SET attempts = attempts + 1, lease = ?2, available_at = ?3
             WHERE id = ?1",
            params![
                sql(message.id.0),
                sql(receipt.0),
                sql(now.saturating_add(ms(policy.visibility_timeout)))
            ],
        )
        .map_err(engine)?;
        break Some(Delivery {
            queue: queue.clone(),
            message: Message {
                attempt: message.attempt + 1,
                ..message
            },
            receipt,
        });
    };
    tx.commit().map_err(engine)?;
    Ok(delivery)
}

fn lease_lost(d: &Delivery) -> QueueError {
    QueueError::LeaseLost {
        queue: d.queue.clone(),
        id: d.message.id,
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn publish(&self, queue: &QueueName, message: Outgoing) -> Result<MessageId, QueueError> {
        let max = self.inner.policy.max_message_bytes;
        if message.payload.len() > max {
            return Err(QueueError::TooLarge {
                size: message.payload.len(),
                max,
            });
        }
        let queue = queue.clone();
        let id = self
            .with(move |conn, policy| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(engine)?;
                let length: i64 = tx
                    .query_row(
                        "SELECT count(*) FROM messages WHERE queue = ?1",
                        [queue.as_str()],
                        |r| r.get(0),
                    )
                    .map_err(engine)?;
                let length = length.max(0) as u64;
                if length >= policy.max_length {
                    return Err(QueueError::Full {
                        queue,
                        length,
                        max: policy.max_length,
                    });
                }
                let now = now_ms();
                tx.execute(
                    "INSERT INTO messages (queue, payload, priority, published_at, available_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        queue.as_str(),
                        message.payload,
                        message.priority.rank(),
                        sql(now),
                        sql(now.saturating_add(ms(message.delay)))
                    ],
                )
                .map_err(engine)?;
                let id = tx.last_insert_rowid();
                tx.commit().map_err(engine)?;
                Ok(MessageId(id.max(0) as u64))
            })
            .await?;
        self.inner.published.notify_waiters();
        Ok(id)
    }

    async fn receive(
        &self,
        queue: &QueueName,
        wait: Duration,
    ) -> Result<Option<Delivery>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so a publish between the look and the wait wakes us.
            let published = self.inner.published.notified();
            let q = queue.clone();
            if let Some(d) = self
                .with(move |conn, policy| try_receive(conn, policy, &q))
                .await?
            {
                return Ok(Some(d));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let nap = POLL_INTERVAL.min(deadline - now);
            tokio::select! {
                _ = published => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let (id, receipt) = (delivery.message.id, delivery.receipt);
        let deleted = self
            .with(move |conn, _| {
                conn.execute(
                    "DELETE FROM messages WHERE id = ?1 AND lease = ?2 AND dead_at IS NULL",
                    params![sql(id.0), sql(receipt.0)],
                )
                .map_err(engine)
            })
            .await?;
        if deleted == 0 {
            return Err(lease_lost(delivery));
        }
        Ok(())
    }

    async fn nack(&self, delivery: &Delivery, error: &str) -> Result<Failed, QueueError> {
        let (id, receipt) = (delivery.message.id, delivery.receipt);
        let error: String = error.chars().take(2_000).collect();
        let outcome = self
            .with(move |conn, policy| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(engine)?;
                let attempts: Option<i64> = tx
                    .query_row(
                        "SELECT attempts FROM messages
                         WHERE id = ?1 AND lease = ?2 AND dead_at IS NULL",
                        params![sql(id.0), sql(receipt.0)],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(engine)?;
                let Some(attempts) = attempts else {
                    return Ok(None);
                };
                let attempts = attempts.clamp(0, i64::from(u32::MAX)) as u32;
                let now = now_ms();
                let outcome = if attempts >= policy.max_attempts {
                    tx.execute(
                        "UPDATE messages SET dead_at = ?2, lease = NULL, error = ?3 WHERE id = ?1",
                        params![sql(id.0), sql(now), error],
                    )
                    .map_err(engine)?;
                    Failed::DeadLettered
                } else {
                    let delay = policy.backoff.delay(attempts, &mut rand::rng());
                    tx.execute(
                        "UPDATE messages SET lease = NULL, available_at = ?2, error = ?3
                         WHERE id = ?1",
                        params![sql(id.0), sql(now.saturating_add(ms(delay))), error],
                    )
                    .map_err(engine)?;
                    Failed::RetryAfter(delay)
                };
                tx.commit().map_err(engine)?;
                Ok(Some(outcome))
            })
            .await?;
        outcome.ok_or_else(|| lease_lost(delivery))
    }

    async fn release(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let (id, receipt) = (delivery.message.id, delivery.receipt);
        let changed = self
            .with(move |conn, _| {
                conn.execute(
                    "UPDATE messages SET lease = NULL, available_at = ?3,
                         attempts = max(attempts - 1, 0)
                     WHERE id = ?1 AND lease = ?2 AND dead_at IS NULL",
                    params![sql(id.0), sql(receipt.0), sql(now_ms())],
                )
                .map_err(engine)
            })
            .await?;
        if changed == 0 {
            return Err(lease_lost(delivery));
        }
        self.inner.published.notify_waiters();
        Ok(())
    }

    async fn extend(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let (id, receipt) = (delivery.message.id, delivery.receipt);
        let changed = self
            .with(move |conn, policy| {
                conn.execute(
                    "UPDATE messages SET available_at = ?3
                     WHERE id = ?1 AND lease = ?2 AND dead_at IS NULL",
                    params![
                        sql(id.0),
                        sql(receipt.0),
                        sql(now_ms().saturating_add(ms(policy.visibility_timeout)))
                    ],
                )
                .map_err(engine)
            })
            .await?;
        if changed == 0 {
            return Err(lease_lost(delivery));
        }
        Ok(())
    }

    async fn stats(&self, queue: &QueueName) -> Result<QueueStats, QueueError> {
        let queue = queue.clone();
        self.with(move |conn, _| {
            let now = sql(now_ms());
            conn.query_row(
                "SELECT
                   coalesce(sum(dead_at IS NULL AND available_at <= ?2), 0),
                   coalesce(sum(dead_at IS NULL AND lease IS NULL AND available_at > ?2), 0),
                   coalesce(sum(dead_at IS NULL AND lease IS NOT NULL AND available_at > ?2), 0),
                   coalesce(sum(dead_at IS NOT NULL), 0),
                   min(CASE WHEN dead_at IS NULL AND available_at <= ?2 THEN published_at END)
                 FROM messages WHERE queue = ?1",
                params![queue.as_str(), now],
                |r| {
                    let count = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                    let oldest: Option<i64> = r.get(4)?;
                    Ok(QueueStats {
                        ready: count(0)?,
                        delayed: count(1)?,
                        in_flight: count(2)?,
                        dead: count(3)?,
                        oldest_ready_age_ms: oldest.map_or(0, |t| (now - t).max(0) as u64),
                    })
                },
            )
            .map_err(engine)
        })
        .await
    }

    async fn dead_letters(
        &self,
        queue: &QueueName,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let queue = queue.clone();
        self.with(move |conn, _| {
            let mut stmt = conn
                .prepare(
                    "SELECT id, payload, priority, published_at, attempts, dead_at, error
                     FROM messages WHERE queue = ?1 AND dead_at IS NOT NULL
                     ORDER BY dead_at, id LIMIT ?2",
                )
                .map_err(engine)?;
            let rows = stmt
                .query_map(params![queue.as_str(), sql(limit as u64)], |r| {
                    let dead_at: i64 = r.get("dead_at")?;
                    Ok(DeadLetter {
                        message: message_from_row(r)?,
                        error: r.get::<_, Option<String>>("error")?.unwrap_or_default(),
                        dead_at_ms: dead_at.max(0) as u64,
                    })
                })
                .map_err(engine)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(engine)
        })
        .await
    }

    async fn replay(&self, queue: &QueueName, id: Option<MessageId>) -> Result<u64, QueueError> {
        let q = queue.clone();
        let n = self
            .with(move |conn, _| {
                conn.execute(
                    "UPDATE messages SET dead_at = NULL, error = NULL, attempts = 0,
                         lease = NULL, available_at = ?2
                     WHERE queue = ?1 AND dead_at IS NOT NULL AND (?3 IS NULL OR id = ?3)",
                    params![q.as_str(), sql(now_ms()), id.map(|i| sql(i.0))],
                )
                .map_err(engine)
            })
            .await? as u64;
        if let (Some(id), 0) = (id, n) {
            return Err(QueueError::NoSuchDeadLetter {
                queue: queue.clone(),
                id,
            });
        }
        self.inner.published.notify_waiters();
        Ok(n)
    }

    async fn purge(&self, queue: &QueueName, id: Option<MessageId>) -> Result<u64, QueueError> {
        let q = queue.clone();
        let n = self
            .with(move |conn, _| {
                conn.execute(
                    "DELETE FROM messages
                     WHERE queue = ?1 AND dead_at IS NOT NULL AND (?2 IS NULL OR id = ?2)",
                    params![q.as_str(), id.map(|i| sql(i.0))],
                )
                .map_err(engine)
            })
            .await? as u64;
        if let (Some(id), 0) = (id, n) {
            return Err(QueueError::NoSuchDeadLetter {
                queue: queue.clone(),
                id,
            });
        }
        Ok(n)
    }
}
