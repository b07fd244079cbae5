//! The photo catalog: which photo each user has, every job's state, and the **transactional
//! outbox** — one SQLite database file of its own ([`DB_FILE`]).
//!
//! An upload is recorded in one transaction: the job, the user's pending photo, and an outbox
//! row saying "publish this job". The relay ([`crate::relay`]) later publishes outbox rows to
//! the queue and marks them sent. So a crash between the commit and the publish loses nothing:
//! the row is still unsent and the next relay run publishes it. A crash after the publish and
//! before the mark publishes it twice — which the worker absorbs, because applying a job is
//! idempotent here: [`Catalog::begin`] refuses a settled job and [`Catalog::complete`] applies
//! a job's result once.
//!
//! Blobs are content-addressed and so shared by identical uploads and sizes: who may delete
//! one, and when, is decided here too (`catalog/blob_locks.rs`: writers hold a key until they record
//! it, deleters claim it).
//!
//! Why a database of its own rather than tables in the data tier's store: the queue tier must
//! not depend on the data tier, the data tier's engines are being reshaped for sharding, and
//! photos need only single-user transactions. At scale this catalog moves to PostgreSQL beside
//! the users; the outbox must then live in the same database as the photo rows.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use strata_blobs::BlobKey;

use crate::process::Size;
use crate::upload::Format;

mod blob_locks;
mod outbox;

pub use blob_locks::{BlobHold, DELETE_FOR, HOLD_FOR};
use blob_locks::{claim_unused, take_hold};

/// The database file in the photos directory.
pub const DB_FILE: &str = "photos.db";

/// A job's id: a Snowflake issued by the API server that accepted the upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct JobId(pub u64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Recorded; waiting for a worker (or for its retry).
    Queued,
    /// A worker has it.
    Processing,
    /// Its photo is being served.
    Done,
    /// It used its attempts; its message is in the dead-letter list (a replay retries it).
    Failed,
    /// A newer upload, or a delete, came before it finished: its result is not applied.
    Superseded,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Processing => "processing",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Superseded => "superseded",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "processing" => JobState::Processing,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            "superseded" => JobState::Superseded,
            _ => JobState::Queued,
        }
    }

    /// Whether nothing more will happen to it.
    pub fn is_settled(self) -> bool {
        matches!(self, JobState::Done | JobState::Superseded)
    }
}

/// A job as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub user: u64,
    /// The uploaded bytes, as received (kept private: never served).
    pub upload: BlobKey,
    pub format: Format,
    pub state: JobState,
    /// Times a worker began it.
    pub attempts: u32,
    /// Why its last attempt failed.
    pub error: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// A user's processed photo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Photo {
    pub user: u64,
    pub format: Format,
    pub width: u32,
    pub height: u32,
    /// The blob of each size, in [`Size::ALL`] order.
    pub variants: Vec<(Size, BlobKey)>,
    /// The job that produced it.
    pub job: JobId,
    pub updated_at_ms: u64,
}

impl Photo {
    /// The blob of one size.
    pub fn key(&self, size: Size) -> Option<&BlobKey> {
        self.variants
            .iter()
            .find(|(s, _)| *s == size)
            .map(|(_, k)| k)
    }
}

/// What [`Catalog::begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Work on it.
    Run(Job),
    /// Already done or superseded: acknowledge and do nothing (a duplicate delivery).
    Settled(Job),
    /// No such job (its photo was deleted and the job pruned, or a foreign message).
    Missing,
}

/// What [`Catalog::complete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completed {
    /// The result is now the user's photo; `unreferenced` are the blobs of the photo it
    /// replaced that nothing else uses any more (the caller deletes them).
    Applied { unreferenced: Vec<BlobKey> },
    /// A newer upload or a delete came first; `unreferenced` are this result's blobs that
    /// nothing uses.
    Superseded { unreferenced: Vec<BlobKey> },
    /// It had been applied already (a duplicate): nothing changed.
    AlreadyDone,
}

/// An outbox row not yet published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsent {
    pub row: i64,
    pub job: JobId,
    /// The trace of the upload (`traceparent`), when it had one: the job's message carries it
    /// to the worker.
    pub traceparent: Option<String>,
}

/// A catalog failure: the database (disk, corruption, a lock held too long).
#[derive(Debug, thiserror::Error)]
#[error("photo catalog: {0}")]
pub struct CatalogError(pub String);

fn db(e: impl std::fmt::Display) -> CatalogError {
    CatalogError(e.to_string())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const VARIANT_COLUMNS: [(Size, &str); 4] = [
    (Size::S64, "key_64"),
    (Size::S128, "key_128"),
    (Size::S512, "key_512"),
    (Size::Original, "key_original"),
];

/// The catalog. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("path", &self.inner.path)
            .finish()
    }
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Catalog {
    /// Opens (creating when missing) the catalog in `dir`.
    pub fn open(dir: &Path) -> Result<Self, CatalogError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| CatalogError(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path)
            .map_err(|e| CatalogError(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(db)?;
        strata_queue::sqlite::enable_wal(&conn, Duration::from_secs(10)).map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                id INTEGER PRIMARY KEY,
                user_id INTEGER NOT NULL,
                upload_key TEXT NOT NULL,
                format TEXT NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                error TEXT,
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL
            );
            CREATE INDEX IF NOT EXISTS jobs_by_user ON jobs(user_id);
            CREATE TABLE IF NOT EXISTS photos (
                user_id INTEGER PRIMARY KEY,
                pending_job INTEGER,
                job INTEGER,
                format TEXT,
                width INTEGER,
                height INTEGER,
                key_64 TEXT, key_128 TEXT, key_512 TEXT, key_original TEXT,
                updated_at INTEGER NOT NULL
            );
            CREATE TABLE IF NOT EXISTS outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                job_id INTEGER NOT NULL,
                created_at INTEGER NOT NULL,
                sent_at INTEGER
            );
            CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox(id) WHERE sent_at IS NULL;",
        )
        .map_err(db)?;
        // Version 4: writers' holds and deleters' claims on shared blobs.
        blob_locks::schema(&conn)?;
        // Version 2: a relay claims the rows it publishes (`claimed_until`), so that relays
        // in several processes do not all publish the same rows. One process migrates; the
        // others find the column there.
        let mut conn = conn;
        {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let has_claims: i64 = tx
                .query_row(
                    "SELECT count(*) FROM pragma_table_info('outbox') WHERE name = 'claimed_until'",
                    [],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if has_claims == 0 {
                tx.execute_batch("ALTER TABLE outbox ADD COLUMN claimed_until INTEGER;")
                    .map_err(db)?;
            }
            // Version 3: the upload's trace context travels with its job.
            let has_trace: i64 = tx
                .query_row(
                    "SELECT count(*) FROM pragma_table_info('outbox') WHERE name = 'traceparent'",
                    [],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if has_trace == 0 {
                tx.execute_batch("ALTER TABLE outbox ADD COLUMN traceparent TEXT;")
                    .map_err(db)?;
            }
            tx.execute_batch("PRAGMA user_version = 4;").map_err(db)?;
            tx.commit().map_err(db)?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                conn: Mutex::new(conn),
            }),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, CatalogError> + Send + 'static,
    ) -> Result<T, CatalogError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&inner.conn)))
            .await
            .map_err(|e| CatalogError(format!("catalog task failed: {e}")))?
    }

    /// Records an accepted upload: the job, the user's pending photo and the outbox row (with
    /// the upload's `traceparent`, if any), in one transaction, which also gives up the
    /// writer's `hold` on the upload's blob (failing if it ran out).
    pub async fn submit(
        &self,
        id: JobId,
        user: u64,
        (upload, hold): (BlobKey, BlobHold),
        format: Format,
        traceparent: Option<String>,
    ) -> Result<Job, CatalogError> {
        self.with(move |conn| {
            let tx = immediate(conn)?;
            take_hold(&tx, hold)?;
            let now = now_ms();
            tx.execute(
                "INSERT INTO jobs (id, user_id, upload_key, format, state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?5)",
                params![sql(id.0), sql(user), upload.as_str(), format.as_str(), now],
            )
            .map_err(db)?;
            // An upload still pending for this user is superseded by this one.
            tx.execute(
                "UPDATE jobs SET state = 'superseded', updated_at = ?3
                 WHERE user_id = ?1 AND id <> ?2 AND state IN ('queued', 'processing', 'failed')",
                params![sql(user), sql(id.0), now],
            )
            .map_err(db)?;
            tx.execute(
                "INSERT INTO photos (user_id, pending_job, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(user_id) DO UPDATE SET pending_job = ?2, updated_at = ?3",
                params![sql(user), sql(id.0), now],
            )
            .map_err(db)?;
            tx.execute(
                "INSERT INTO outbox (job_id, created_at, traceparent) VALUES (?1, ?2, ?3)",
                params![sql(id.0), now, traceparent],
            )
            .map_err(db)?;
            let job = job_in(&tx, id)?
                .ok_or_else(|| CatalogError("the job just written is missing".into()))?;
            tx.commit().map_err(db)?;
            Ok(job)
        })
        .await
    }

    /// A job by id.
    pub async fn job(&self, id: JobId) -> Result<Option<Job>, CatalogError> {
        self.with(move |conn| job_in(conn, id)).await
    }

    /// A user's processed photo, if there is one.
    pub async fn photo(&self, user: u64) -> Result<Option<Photo>, CatalogError> {
        self.with(move |conn| photo_in(conn, user)).await
    }

    /// Whether some user's photo is served from this blob (raw uploads never are).
    pub async fn is_published(&self, key: BlobKey) -> Result<bool, CatalogError> {
        self.with(move |conn| {
            conn.query_row(
                "SELECT EXISTS(SELECT 1 FROM photos WHERE ?1 IN (key_64, key_128, key_512, key_original))",
                [key.as_str()],
                |r| r.get(0),
            )
            .map_err(db)
        })
        .await
    }

    /// Removes a user's photo; a job still pending for it is superseded. Returns whether
    /// there was anything, and the blobs nothing references any more (the caller deletes
    /// them).
    pub async fn delete(&self, user: u64) -> Result<Option<Vec<BlobKey>>, CatalogError> {
        self.with(move |conn| {
            let tx = immediate(conn)?;
            let photo = photo_in(&tx, user)?;
            let pending: Option<Option<i64>> = tx
                .query_row(
                    "SELECT pending_job FROM photos WHERE user_id = ?1",
                    [sql(user)],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            if pending.is_none() {
                return Ok(None);
            }
            let now = now_ms();
            tx.execute(
                "UPDATE jobs SET state = 'superseded', updated_at = ?2
                 WHERE user_id = ?1 AND state IN ('queued', 'processing', 'failed')",
                params![sql(user), now],
            )
            .map_err(db)?;
            tx.execute("DELETE FROM photos WHERE user_id = ?1", [sql(user)])
                .map_err(db)?;
            let keys = photo
                .map(|p| p.variants.into_iter().map(|(_, k)| k).collect())
                .unwrap_or_default();
            let unreferenced = claim_unused(&tx, keys, None)?;
            tx.commit().map_err(db)?;
            Ok(Some(unreferenced))
        })
        .await
    }

    /// A worker begins a job: refused when it is settled (a duplicate delivery).
    pub async fn begin(&self, id: JobId) -> Result<Begin, CatalogError> {
        self.with(move |conn| {
            let tx = immediate(conn)?;
            let Some(job) = job_in(&tx, id)? else {
                return Ok(Begin::Missing);
            };
            if job.state.is_settled() {
                return Ok(Begin::Settled(job));
            }
            tx.execute(
                "UPDATE jobs SET state = 'processing', attempts = attempts + 1, updated_at = ?2 WHERE id = ?1",
                params![sql(id.0), now_ms()],
            )
            .map_err(db)?;
            let job = job_in(&tx, id)?.ok_or_else(|| CatalogError("the job vanished".into()))?;
            tx.commit().map_err(db)?;
            Ok(Begin::Run(job))
        })
        .await
    }

    /// Applies a job's result — once: the user's photo becomes these blobs, unless a newer
    /// upload or a delete came first. Gives up the worker's `hold` on the blobs in the same
    /// transaction (failing if it ran out).
    pub async fn complete(
        &self,
        id: JobId,
        (format, width, height): (Format, u32, u32),
        variants: Vec<(Size, BlobKey)>,
        hold: BlobHold,
    ) -> Result<Completed, CatalogError> {
        self.with(move |conn| {
            let tx = immediate(conn)?;
            take_hold(&tx, hold)?;
            let Some(job) = job_in(&tx, id)? else {
                // The job is gone (its photo deleted, the job pruned): this result is unused.
                let unreferenced = claim_unused(&tx, variants.into_iter().map(|(_, k)| k).collect(), None)?;
                tx.commit().map_err(db)?;
                return Ok(Completed::Superseded { unreferenced });
            };
            if job.state == JobState::Done {
                tx.commit().map_err(db)?;
                return Ok(Completed::AlreadyDone);
            }
            let now = now_ms();
            let pending: Option<Option<i64>> = tx
                .query_row("SELECT pending_job FROM photos WHERE user_id = ?1", [sql(job.user)], |r| r.get(0))
                .optional()
                .map_err(db)?;
            let new_keys: Vec<BlobKey> = variants.iter().map(|(_, k)| k.clone()).collect();
            if pending.flatten() != Some(sql(id.0)) {
                tx.execute(
                    "UPDATE jobs SET state = 'superseded', updated_at = ?2 WHERE id = ?1",
                    params![sql(id.0), now],
                )
                .map_err(db)?;
                let unreferenced = claim_unused(&tx, new_keys, None)?;
                tx.commit().map_err(db)?;
                return Ok(Completed::Superseded { unreferenced });
            }
            let old: Vec<BlobKey> = photo_in(&tx, job.user)?
                .map(|p| p.variants.into_iter().map(|(_, k)| k).collect())
                .unwrap_or_default();
            let key = |s: Size| variants.iter().find(|(z, _)| *z == s).map(|(_, k)| k.as_str().to_string());
            tx.execute(
                "UPDATE photos SET pending_job = NULL, job = ?2, format = ?3, width = ?4, height = ?5,
                    key_64 = ?6, key_128 = ?7, key_512 = ?8, key_original = ?9, updated_at = ?10
                 WHERE user_id = ?1",
                params![
                    sql(job.user),
                    sql(id.0),
                    format.as_str(),
                    width,
                    height,
                    key(Size::S64),
                    key(Size::S128),
                    key(Size::S512),
                    key(Size::Original),
                    now
                ],
            )
            .map_err(db)?;
            tx.execute(
                "UPDATE jobs SET state = 'done', error = NULL, updated_at = ?2 WHERE id = ?1",
                params![sql(id.0), now],
            )
            .map_err(db)?;
            let old: Vec<BlobKey> = old.into_iter().filter(|k| !new_keys.contains(k)).collect();
            let unreferenced = claim_unused(&tx, old, None)?;
            tx.commit().map_err(db)?;
            Ok(Completed::Applied { unreferenced })
        })
        .await
    }

    /// Records a failed attempt: `dead` when it used its attempts (its message is now a dead
    /// letter).
    pub async fn fail(&self, id: JobId, error: String, dead: bool) -> Result<(), CatalogError> {
        self.with(move |conn| {
            conn.execute(
                "UPDATE jobs SET state = ?2, error = ?3, updated_at = ?4
                 WHERE id = ?1 AND state NOT IN ('done', 'superseded')",
                params![
                    sql(id.0),
                    if dead { "failed" } else { "queued" },
                    error,
                    now_ms()
                ],
            )
            .map_err(db)
            .map(drop)
        })
        .await
    }
}

fn immediate(conn: &mut Connection) -> Result<Transaction<'_>, CatalogError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)
}

fn job_in(conn: &Connection, id: JobId) -> Result<Option<Job>, CatalogError> {
    conn.query_row(
        "SELECT id, user_id, upload_key, format, state, attempts, error, created_at, updated_at
         FROM jobs WHERE id = ?1",
        [sql(id.0)],
        |r| {
            let key: String = r.get(2)?;
            let format: String = r.get(3)?;
            let state: String = r.get(4)?;
            Ok((
                key,
                format,
                Job {
                    id: JobId(r.get::<_, i64>(0)?.max(0) as u64),
                    user: r.get::<_, i64>(1)?.max(0) as u64,
                    upload: BlobKey::of(b""),
                    format: Format::Jpeg,
                    state: JobState::parse(&state),
                    attempts: r.get::<_, i64>(5)?.clamp(0, i64::from(u32::MAX)) as u32,
                    error: r.get(6)?,
                    created_at_ms: r.get::<_, i64>(7)?.max(0) as u64,
                    updated_at_ms: r.get::<_, i64>(8)?.max(0) as u64,
                },
            ))
        },
    )
    .optional()
    .map_err(db)?
    .map(|(key, format, job)| {
        Ok(Job {
            upload: BlobKey::parse(&key).map_err(db)?,
            format: Format::parse(&format)
                .ok_or_else(|| CatalogError(format!("unknown format {format:?} in the catalog")))?,
            ..job
        })
    })
    .transpose()
}

fn photo_in(conn: &Connection, user: u64) -> Result<Option<Photo>, CatalogError> {
    let row = conn
        .query_row(
            "SELECT job, format, width, height, key_64, key_128, key_512, key_original, updated_at
             FROM photos WHERE user_id = ?1 AND job IS NOT NULL",
            [sql(user)],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    [
                        r.get::<_, Option<String>>(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ],
                    r.get::<_, i64>(8)?,
                ))
            },
        )
        .optional()
        .map_err(db)?;
    let Some((job, format, width, height, keys, updated)) = row else {
        return Ok(None);
    };
    let mut variants = Vec::new();
    for ((size, _), key) in VARIANT_COLUMNS.iter().zip(keys) {
        if let Some(key) = key {
            variants.push((*size, BlobKey::parse(&key).map_err(db)?));
        }
    }
    Ok(Some(Photo {
        user,
        format: Format::parse(&format)
            .ok_or_else(|| CatalogError(format!("unknown format {format:?} in the catalog")))?,
        width: width.clamp(0, i64::from(u32::MAX)) as u32,
        height: height.clamp(0, i64::from(u32::MAX)) as u32,
        variants,
        job: JobId(job.max(0) as u64),
        updated_at_ms: updated.max(0) as u64,
    }))
}
