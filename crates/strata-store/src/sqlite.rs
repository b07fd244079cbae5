//! The embedded engine: one SQLite file (`DIR/strata.db`) in WAL mode, bundled SQLite.
//!
//! - Several OS processes may open the same directory at once (`strata up` runs several API
//!   servers on one file): migrations and writes run in `BEGIN IMMEDIATE` transactions, and a
//!   5 s busy timeout turns contention into waiting, then into a retryable `Unavailable`.
//! - Writes use `synchronous=FULL`: a write that returned `Ok` survives a crash of the process
//!   and of the machine. Bulk loads (`insert_batch`) use `synchronous=NORMAL` (WAL stays
//!   consistent; the last batches may be lost on power failure, never half-applied).
//! - The commit token is a counter bumped inside every write transaction, so it orders commits
//!   across every process sharing the file.
//! - Profiles are stored as JSON text and parsed back through the domain parser: a corrupt row
//!   is reported as `Corrupt`, never served.
//!
//! - Every change to a user is logged in its own transaction (`cache_changes`, see
//!   [`SqliteChangeFeed`]), so the API servers sharing the file keep their caches coherent.
//!
//! SQLite calls block, so each runs on tokio's blocking pool: one writer connection behind a
//! mutex, and a small pool of reader connections. No lock is held across an `.await`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};
use strata_core::user::{User, UserId, UserProfile};

use crate::rows::{decode, list_start, sql_id};
use crate::{
    CommitToken, Page, Precondition, ReadRequirement, Store, StoreError, StoredUser, WriteReceipt,
};

/// The database file inside the data directory.
pub const DB_FILE: &str = "strata.db";
/// What `strata_meta.format` says in a Strata database.
pub const FORMAT: &str = "strata-users";
/// How long a statement waits for another connection's lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read waits for a commit it was asked to see.
pub const READ_AFTER_WAIT: Duration = Duration::from_millis(200);
const MAX_IDLE_READERS: usize = 8;

mod accounts;
mod changes;
mod idempotency;
mod reshard;
mod schema;
mod shard;

pub use changes::{CHANGES_KEPT, SqliteChangeFeed};
use schema::MIGRATIONS;

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// An opened store, and whether this open created the database.
#[derive(Debug)]
pub struct Opened {
    pub store: SqliteStore,
    /// True when this call created the schema (the database was new). Exactly one of several
    /// processes opening a new directory at once sees `true`.
    pub created: bool,
}

/// The stores open in this process, by canonical data directory.
static OPEN_STORES: std::sync::OnceLock<
    Mutex<std::collections::HashMap<PathBuf, std::sync::Weak<Inner>>>,
> = std::sync::OnceLock::new();

/// The SQLite engine. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn unusable(path: &Path, what: impl std::fmt::Display) -> StoreError {
    StoreError::Unusable(format!("{}: {what}", path.display()))
}

/// Maps an SQLite error met while serving to a store error.
fn engine_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                StoreError::Unavailable(format!(
                    "the database stayed locked for over {} s",
                    BUSY_TIMEOUT.as_secs()
                ))
            }
            ErrorCode::DiskFull => {
                StoreError::Unavailable("the disk holding the database is full".into())
            }
            ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => {
                StoreError::Unusable(format!("the database file is damaged: {e}"))
            }
            _ => StoreError::Unavailable(format!("sqlite: {e}")),
        },
        _ => StoreError::Unavailable(format!("sqlite: {e}")),
    }
}

/// The busy handler: retry every millisecond until [`BUSY_TIMEOUT`] has passed.
fn busy_poll(attempts: i32) -> bool {
    if u128::from(attempts.unsigned_abs()) >= BUSY_TIMEOUT.as_millis() {
        return false;
    }
    std::thread::sleep(Duration::from_millis(1));
    true
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

fn configure(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    // SQLite's own busy handler backs off to 100 ms sleeps, so a writer waiting behind a run of
    // short transactions (a resharding's copy batches) can miss every gap between them and
    // wait a second. Polling every millisecond keeps the wait close to the lock's real holding
    // time, up to the same timeout.
    conn.busy_handler(Some(busy_poll))
        .map_err(|e| unusable(path, e))?;
    shard::register_functions(conn).map_err(|e| unusable(path, e))?;
    // Several processes opening a new file at once race to switch it to WAL, and SQLite answers
    // that race with SQLITE_BUSY without consulting the busy handler: retry it ourselves.
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let switched = loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Err(rusqlite::Error::SqliteFailure(f, _))
                if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => break other,
        }
    };
    let mode: String = switched.map_err(|e| match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::NotADatabase => unusable(
            path,
            "is not a database (not an SQLite file): move it away or pass another --data directory",
        ),
        _ => unusable(path, format!("cannot open the database: {e}")),
    })?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(unusable(
            path,
            format!("cannot switch to WAL mode (got {mode})"),
        ));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(|e| unusable(path, e))?;
    Ok(())
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| unusable(path, format!("cannot open: {e}")))?;
    configure(&conn, path)?;
    Ok(conn)
}

/// Applies pending migrations; true if this call created the schema.
fn migrate(conn: &mut Connection, path: &Path) -> Result<bool, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| unusable(path, format!("cannot lock the database for migration: {e}")))?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| unusable(path, e))?;
    if version > SCHEMA_VERSION {
        return Err(unusable(
            path,
            format!(
                "has schema version {version}, but this strata knows versions up to {SCHEMA_VERSION}: upgrade strata"
            ),
        ));
    }
    if version == 0 {
        let tables: i64 = tx
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| unusable(path, e))?;
        if tables > 0 {
            return Err(unusable(
                path,
                "is an SQLite database of another application (it has tables but no Strata schema): pass another --data directory",
            ));
        }
    } else {
        let format: Option<String> = tx
            .query_row(
                "SELECT value FROM strata_meta WHERE key = 'format'",
                [],
                |r| r.get(0),
            )
            .optional()
            .unwrap_or(None);
        if format.as_deref() != Some(FORMAT) {
            return Err(unusable(
                path,
                "is not a Strata database (no strata-users format marker): pass another --data directory",
            ));
        }
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)
            .map_err(|e| unusable(path, format!("migration {} failed: {e}", i + 1)))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(|e| unusable(path, e))?;
    }
    tx.commit()
        .map_err(|e| unusable(path, format!("cannot commit the migration: {e}")))?;
    Ok(version == 0)
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `dir` and applies pending migrations.
    ///
    /// Within one process, opening a database that is already open returns the same store
    /// (`created: false`): a second set of file handles would be a hazard, since closing any
    /// handle of a file drops every POSIX lock the process holds on it — SQLite's included.
    pub fn open(dir: &Path) -> Result<Opened, StoreError> {
        if dir.exists() && !dir.is_dir() {
            return Err(unusable(
                dir,
                "is not a directory: --data names a directory, in which strata keeps strata.db",
            ));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| unusable(dir, format!("cannot create the data directory: {e}")))?;
        let canonical = dir
            .canonicalize()
            .map_err(|e| unusable(dir, format!("cannot resolve the data directory: {e}")))?;
        let mut registry = OPEN_STORES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        registry.retain(|_, weak| weak.strong_count() > 0);
        if let Some(inner) = registry.get(&canonical).and_then(std::sync::Weak::upgrade) {
            return Ok(Opened {
                store: SqliteStore { inner },
                created: false,
            });
        }
        let opened = Self::open_new(dir)?;
        registry.insert(canonical, Arc::downgrade(&opened.store.inner));
        Ok(opened)
    }

    fn open_new(dir: &Path) -> Result<Opened, StoreError> {
        let path = dir.join(DB_FILE);
        if path.exists() {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| unusable(&path, format!("cannot be read and written: {e}")))?;
        }
        let mut writer = open_connection(&path)?;
        let created = migrate(&mut writer, &path)?;
        let store = SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
            }),
        };
        Ok(Opened { store, created })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Inserts the canonical user 12 unless it exists. True if it was inserted.
    pub async fn ensure_canonical_user(&self) -> Result<bool, StoreError> {
        crate::ensure_canonical_user(self).await
    }

    async fn with_writer<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("the store task failed: {e}")))?
    }

    async fn with_reader<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_connection(&inner.path)?,
            };
            let result = f(&conn);
            let mut idle = inner.readers.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("the store task failed: {e}")))?
    }
}

fn bump_commit(tx: &rusqlite::Transaction<'_>) -> Result<CommitToken, StoreError> {
    let seq: i64 = tx
        .query_row(
            "UPDATE strata_commit SET seq = seq + 1 WHERE id = 1 RETURNING seq",
            [],
            |r| r.get(0),
        )
        .map_err(engine_error)?;
    Ok(CommitToken(seq as u64))
}

fn current_commit(conn: &Connection) -> Result<CommitToken, StoreError> {
    let seq: i64 = conn
        .query_row("SELECT seq FROM strata_commit WHERE id = 1", [], |r| {
            r.get(0)
        })
        .map_err(engine_error)?;
    Ok(CommitToken(seq as u64))
}

/// Waits (briefly) until the database has reached the commit a read asks for.
fn await_commit(conn: &Connection, need: ReadRequirement) -> Result<(), StoreError> {
    let Some(wanted) = need.at_least else {
        return Ok(());
    };
    let deadline = Instant::now() + READ_AFTER_WAIT;
    loop {
        let current = current_commit(conn)?;
        if current >= wanted {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StoreError::NotYetVisible { wanted, current });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn current_version(tx: &rusqlite::Transaction<'_>, id: i64) -> Result<Option<u64>, StoreError> {
    tx.query_row("SELECT version FROM users WHERE id = ?1", [id], |r| {
        r.get::<_, i64>(0)
    })
    .optional()
    .map(|v| v.map(|v| v as u64))
    .map_err(engine_error)
}

fn check(pre: Precondition, id: UserId, actual: u64) -> Result<(), StoreError> {
    match pre {
        Precondition::VersionIs(expected) if expected != actual => {
            Err(StoreError::VersionMismatch {
                id,
                expected,
                actual,
            })
        }
        _ => Ok(()),
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create(&self, user: &User) -> Result<WriteReceipt, StoreError> {
        let id = user.id;
        let Some(key) = sql_id(id) else {
            return Err(StoreError::Unavailable(format!(
                "user id {id} is outside the range this engine stores"
            )));
        };
        let profile = user.profile.to_value().to_string();
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(engine_error)?;
            shard::check_user(&tx, id)?;
            let commit = bump_commit(&tx)?;
            match tx.execute(
                "INSERT INTO users (id, version, profile, commit_seq) VALUES (?1, 1, ?2, ?3)",
                params![key, profile, commit.0 as i64],
            ) {
                Ok(_) => {}
                Err(e) if is_constraint(&e) => return Err(StoreError::AlreadyExists(id)),
                Err(e) => return Err(engine_error(e)),
            }
            tx.commit().map_err(engine_error)?;
            Ok(WriteReceipt { version: 1, commit })
        })
        .await
    }

    async fn get(
        &self,
        id: UserId,
        need: ReadRequirement,
    ) -> Result<Option<StoredUser>, StoreError> {
        let key = sql_id(id);
        self.with_reader(move |conn| {
            await_commit(conn, need)?;
            shard::check_user(conn, id)?;
            let Some(key) = key else { return Ok(None) };
            let row = conn
                .query_row(
                    "SELECT version, profile FROM users WHERE id = ?1",
                    [key],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                )
                .optional()
                .map_err(engine_error)?;
            row.map(|(version, profile)| decode(key, version, &profile))
                .transpose()
        })
        .await
    }

    async fn replace(
        &self,
        id: UserId,
        profile: &UserProfile,
        pre: Precondition,
    ) -> Result<WriteReceipt, StoreError> {
        let Some(key) = sql_id(id) else {
            return Err(StoreError::NotFound(id));
        };
        let profile = profile.to_value().to_string();
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(engine_error)?;
            shard::check_user(&tx, id)?;
            let actual = current_version(&tx, key)?.ok_or(StoreError::NotFound(id))?;
            check(pre, id, actual)?;
            let commit = bump_commit(&tx)?;
            let version = actual + 1;
            tx.execute(
                "UPDATE users SET version = ?2, profile = ?3, commit_seq = ?4 WHERE id = ?1",
                params![key, version as i64, profile, commit.0 as i64],
            )
            .map_err(engine_error)?;
            tx.commit().map_err(engine_error)?;
            Ok(WriteReceipt { version, commit })
        })
        .await
    }

    async fn delete(&self, id: UserId, pre: Precondition) -> Result<WriteReceipt, StoreError> {
        let Some(key) = sql_id(id) else {
            return Err(StoreError::NotFound(id));
        };
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(engine_error)?;
            shard::check_user(&tx, id)?;
            let actual = current_version(&tx, key)?.ok_or(StoreError::NotFound(id))?;
            check(pre, id, actual)?;
            let commit = bump_commit(&tx)?;
            tx.execute("DELETE FROM users WHERE id = ?1", [key])
                .map_err(engine_error)?;
            tx.commit().map_err(engine_error)?;
            Ok(WriteReceipt {
                version: actual + 1,
                commit,
            })
        })
        .await
    }

    async fn list(
        &self,
        after: Option<UserId>,
        limit: u32,
        need: ReadRequirement,
    ) -> Result<Page, StoreError> {
        let after_key = list_start(after);
        self.with_reader(move |conn| {
            await_commit(conn, need)?;
            let Some(after_key) = after_key else {
                return Ok(Page::of(Vec::new(), limit));
            };
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, version, profile FROM users WHERE id > ?1 ORDER BY id LIMIT ?2",
                )
                .map_err(engine_error)?;
            let rows = stmt
                .query_map(params![after_key, i64::from(limit)], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(engine_error)?;
            let mut users = Vec::with_capacity(limit as usize);
            for row in rows {
                let (id, version, profile) = row.map_err(engine_error)?;
                users.push(decode(id, version, &profile)?);
            }
            Ok(Page::of(users, limit))
        })
        .await
    }

    async fn insert_batch(&self, users: Vec<User>) -> Result<CommitToken, StoreError> {
        self.with_writer(move |conn| {
            conn.pragma_update(None, "synchronous", "NORMAL").map_err(engine_error)?;
            let result = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(engine_error)?;
                let fences = shard::fences(&tx)?;
                for user in &users {
                    crate::shard::fence::check_user(&fences, user.id)?;
                }
                let commit = bump_commit(&tx)?;
                changes::quiet(&tx)?;
                {
                    let mut stmt = tx
                        .prepare_cached("INSERT INTO users (id, version, profile, commit_seq) VALUES (?1, 1, ?2, ?3)")
                        .map_err(engine_error)?;
                    for user in &users {
                        let key = sql_id(user.id).ok_or_else(|| {
                            StoreError::Unavailable(format!("user id {} is outside the range this engine stores", user.id))
                        })?;
                        let profile = user.profile.to_value().to_string();
                        match stmt.execute(params![key, profile, commit.0 as i64]) {
                            Ok(_) => {}
                            Err(e) if is_constraint(&e) => return Err(StoreError::AlreadyExists(user.id)),
                            Err(e) => return Err(engine_error(e)),
                        }
                    }
                }
                changes::log_everything(&tx)?;
                tx.commit().map_err(engine_error)?;
                Ok(commit)
            })();
            let _ = conn.pragma_update(None, "synchronous", "FULL");
            result
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with_reader(|conn| current_commit(conn).map(|_| ()))
            .await
    }

    fn engine(&self) -> &'static str {
        "sqlite"
    }
}
