//! The PostgreSQL engine: tokio-postgres over a deadpool connection pool.
//!
//! - **Schema.** Versioned migrations, applied under a transaction-scoped advisory lock, so
//!   several API servers starting at once migrate exactly once. `strata_meta` marks the database
//!   as Strata's; a database with a `users` table that is not Strata's is refused.
//! - **Writes** are one autocommit statement each (`INSERT … ON CONFLICT DO NOTHING`,
//!   `UPDATE … WHERE version = $n`, `DELETE …`), so a write holds its row lock for a single round
//!   trip; preconditions are checked by the statement itself, atomically. In a shard group
//!   (`into_shard_group`) each write is a short transaction that first checks the group's
//!   fences under the fence lock (`shard`).
//! - **Commit tokens** are WAL positions (LSNs): after a write commits, the server's current
//!   WAL write position is at or past the end of its commit record, so any server — the primary
//!   or a streaming replica — whose replay position has reached the token shows the write. The
//!   token query is pipelined behind the write on the same connection: no extra round trip.
//! - **Reads with a requirement** (`Strata-Read-After`) wait briefly until this server has
//!   reached the token (on a replica: replayed it), then answer, or report `NotYetVisible`.
//! - **Bulk load** (`insert_batch`) streams rows with `COPY … FROM STDIN`: one statement per
//!   batch, all or nothing.
//! - Profiles are stored as `jsonb` and read back through the domain parser: a corrupt row is
//!   reported as `Corrupt`, never served. Every call has a deadline; a server that is down,
//!   stalled or read-only gives `Unavailable`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use futures_util::SinkExt;
use strata_core::user::{User, UserId, UserProfile};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::rows::{decode, list_start, sql_id};
use crate::{
    CommitToken, Page, Precondition, ReadRequirement, Store, StoreError, StoredUser, WriteReceipt,
};

/// What `strata_meta.format` says in a Strata database.
pub const FORMAT: &str = "strata-users";
/// How long a read waits for a commit it was asked to see.
pub const READ_AFTER_WAIT: Duration = Duration::from_millis(200);
/// Pause between attempts to open a connection while the server is unreachable.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
mod accounts;
mod calls;
mod follow;
mod hosts;
mod idempotency;
mod node;
mod reshard;
mod schema;
mod shard;

use calls::{await_commit, why_not_written, write_then_position};
pub use follow::PgChangeFollower;
pub use node::{NodeStatus, StandbyLag, format_lsn, parse_lsn, probe_node, probe_standbys};
use node::{POSITION_SQL, STATUS_SQL};
pub use schema::SCHEMA_VERSION;
use schema::{MIGRATION_LOCK, MIGRATIONS};

/// Connection settings of the PostgreSQL engine.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// A libpq-style URL or key=value string. Several hosts are allowed
    /// (`postgresql://u@h1:5432,h2:5432/db?target_session_attrs=read-write`).
    pub url: String,
    /// Most connections this process opens.
    pub max_connections: usize,
    /// Opening a connection.
    pub connect_timeout: Duration,
    /// Any one call, waiting for a pooled connection included.
    pub call_timeout: Duration,
    /// While no connection can be opened — the server is down, or a failover is under way — a
    /// call keeps trying for this long (within `call_timeout`) before it gives up. Safe for
    /// writes: a statement that never had a connection certainly did not commit. Zero for
    /// replicas, whose reads should move on to another server at once.
    pub reconnect_for: Duration,
}

impl PgConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            connect_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
            reconnect_for: Duration::from_secs(5),
        }
    }
}

/// A connected store, and whether this connect created the schema.
#[derive(Debug)]
pub struct PgOpened {
    pub store: PgStore,
    /// True when this call created the schema (the database was new to Strata). Exactly one of
    /// several processes connecting to a new database at once sees `true`.
    pub created: bool,
}

/// The PostgreSQL engine. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Connections whose call did not finish: never lent again.
    abandoned: hosts::Abandoned,
    call_timeout: Duration,
    reconnect_for: Duration,
    /// The URL without its password, for messages.
    display: String,
    /// A shard group's database: writes check its fences (see `shard`).
    fenced: bool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("server", &self.display)
            .finish_non_exhaustive()
    }
}

/// The URL's hosts and database, never its password.
fn redact(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, p)| match h {
            tokio_postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    format!(
        "{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("(default)")
    )
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("postgres: {e}"))
}

/// Maps a driver error met while serving to a store error.
fn engine_error(e: &tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => {
            StoreError::Unavailable(READ_ONLY.into())
        }
        Some(c) if *c == SqlState::DISK_FULL => {
            StoreError::Unavailable("postgres: the disk holding the database is full".into())
        }
        _ => unavailable(e),
    }
}

/// What a write on a server that is no longer the primary reports.
const READ_ONLY: &str = "postgres: the server is read-only (a replica, or a demoted primary)";

/// The version a conditional write requires, as the `$n::bigint` its statement compares with
/// (NULL: any). A version beyond `i64` can match no row.
fn expected_version(pre: Precondition) -> Option<i64> {
    match pre {
        Precondition::None => None,
        Precondition::VersionIs(v) => Some(i64::try_from(v).unwrap_or(i64::MAX)),
    }
}

fn row_user(row: &Row) -> Result<StoredUser, StoreError> {
    let id: i64 = row.try_get(0).map_err(|e| unavailable(&e))?;
    let version: i64 = row.try_get(1).map_err(|e| unavailable(&e))?;
    let profile: String = row.try_get(2).map_err(|e| unavailable(&e))?;
    decode(id, version, &profile)
}

fn lsn_of(row: &Row) -> Result<CommitToken, StoreError> {
    let text: Option<String> = row.try_get(0).map_err(|e| unavailable(&e))?;
    // A standby that has replayed nothing yet reports NULL: position 0.
    Ok(CommitToken(
        text.as_deref().and_then(parse_lsn).unwrap_or(0),
    ))
}

/// The id named in a unique-violation's detail (`Key (id)=(42) already exists.`).
fn duplicate_id(e: &tokio_postgres::Error) -> Option<UserId> {
    let detail = e.as_db_error()?.detail()?;
    let rest = detail.strip_prefix("Key (id)=(")?;
    let end = rest.find(')')?;
    rest[..end].parse::<u64>().ok().map(UserId)
}

impl PgStore {
    /// Connects (checking the server answers) and applies pending migrations.
    pub async fn connect(config: &PgConfig) -> Result<PgOpened, StoreError> {
        let store = Self::connect_lazily(config)?;
        let created = store.migrate().await?;
        Ok(PgOpened { store, created })
    }

    /// A store whose connections open on first use, with no migration: for replicas (read
    /// only, and perhaps down when the API server starts).
    pub fn connect_lazily(config: &PgConfig) -> Result<PgStore, StoreError> {
        let mut pg: tokio_postgres::Config = config.url.parse().map_err(|e| {
            StoreError::Unusable(format!(
                "the PostgreSQL URL is not valid ({e}): use postgresql://USER@HOST:PORT/DB"
            ))
        })?;
        pg.connect_timeout(config.connect_timeout);
        pg.application_name("strata");
        // The server gives up on any statement the caller has stopped waiting for.
        pg.options(format!(
            "-c statement_timeout={}",
            config.call_timeout.as_millis()
        ));
        let display = redact(&pg);
        let hosts = u32::try_from(pg.get_hosts().len().max(1)).unwrap_or(u32::MAX);
        let manager = Manager::from_connect(
            pg,
            hosts::HostByHost::new(config.connect_timeout),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let abandoned = hosts::Abandoned::default();
        let pool = Pool::builder(manager)
            .pre_recycle(abandoned.hook())
            .max_size(config.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(config.call_timeout),
                // Each host has `connect_timeout` for the whole opening (see `hosts`).
                create: Some(config.connect_timeout.saturating_mul(hosts)),
                recycle: Some(config.connect_timeout),
            })
            .build()
            .map_err(|e| StoreError::Unusable(format!("cannot build the connection pool: {e}")))?;
        Ok(PgStore {
            pool,
            abandoned,
            call_timeout: config.call_timeout,
            reconnect_for: config.reconnect_for.min(config.call_timeout),
            display,
            fenced: false,
        })
    }

    /// This store as one shard group: every write of a user or email index row checks the
    /// group's fences in its own transaction, and point reads check them too.
    pub fn into_shard_group(mut self) -> Self {
        self.fenced = true;
        self
    }

    /// The server(s) and database, without credentials.
    pub fn describe(&self) -> &str {
        &self.display
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("postgres at {}: {e}", self.display)))
    }

    /// Runs `f` with a pooled connection, under the call deadline.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let work = async {
            // No connection yet means nothing was sent: trying again is always safe.
            let give_up = Instant::now() + self.reconnect_for;
            let client = loop {
                match self.client().await {
                    Ok(client) => break client,
                    Err(e) if Instant::now() + RECONNECT_PAUSE < give_up => {
                        tracing::debug!(error = %e, "no connection yet; trying again");
                        tokio::time::sleep(RECONNECT_PAUSE).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            let lent = hosts::Unfinished::new(&self.abandoned, &client);
            let result = f(client).await;
            lent.finished();
            result
        };
        match tokio::time::timeout(self.call_timeout, work).await {
            Ok(Err(StoreError::Unavailable(m))) if m == READ_ONLY => {
                // The server these connections lead to is no longer the primary: drop them all,
                // so the next ones (a multi-host URL with target_session_attrs=read-write) find
                // the one that is.
                self.pool.retain(|_, _| false);
                Err(StoreError::Unavailable(m))
            }
            Ok(r) => r,
            // The connection that did not answer is never lent again (`hosts::Unfinished`): the
            // next call opens a new one, to whichever host answers now.
            Err(_) => Err(StoreError::Unavailable(format!(
                "postgres at {} did not answer within {} ms",
                self.display,
                self.call_timeout.as_millis()
            ))),
        }
    }

    /// Applies pending migrations; true if this call created the schema.
    async fn migrate(&self) -> Result<bool, StoreError> {
        let unusable = |what: String| StoreError::Unusable(format!("{}: {what}", self.display));
        let mut client = self.client().await.map_err(|e| match e {
            StoreError::Unavailable(m) => {
                StoreError::Unusable(format!("{m} — is the server running and the URL right?"))
            }
            other => other,
        })?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| unusable(format!("cannot start the migration: {e}")))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| unusable(format!("cannot lock for migration: {e}")))?;
        let has = |table: &'static str| {
            let tx = &tx;
            async move {
                tx.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
                    .await
                    .and_then(|r| r.try_get::<_, bool>(0))
            }
        };
        let has_meta = has("public.strata_meta")
            .await
            .map_err(|e| unusable(e.to_string()))?;
        let version: i64 = if has_meta {
            let format: Option<String> = tx
                .query_opt("SELECT value FROM strata_meta WHERE key = 'format'", &[])
                .await
                .map_err(|e| unusable(e.to_string()))?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(|e| unusable(e.to_string()))?;
            if format.as_deref() != Some(FORMAT) {
                return Err(unusable(
                    "has a strata_meta table without the strata-users format marker: point \
                     Strata at a database of its own"
                        .into(),
                ));
            }
            tx.query_opt(
                "SELECT value::bigint FROM strata_meta WHERE key = 'schema_version'",
                &[],
            )
            .await
            .map_err(|e| unusable(e.to_string()))?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| unusable(e.to_string()))?
            .unwrap_or(0)
        } else {
            if has("public.users")
                .await
                .map_err(|e| unusable(e.to_string()))?
            {
                return Err(unusable(
                    "has a users table that is not Strata's (no strata_meta): point Strata at a \
                     database of its own"
                        .into(),
                ));
            }
            tx.batch_execute(
                "CREATE TABLE strata_meta (key text PRIMARY KEY, value text NOT NULL);
                 INSERT INTO strata_meta (key, value) VALUES ('format', 'strata-users'),
                     ('schema_version', '0');",
            )
            .await
            .map_err(|e| unusable(format!("cannot create strata_meta: {e}")))?;
            0
        };
        if version > SCHEMA_VERSION {
            return Err(unusable(format!(
                "has schema version {version}, but this strata knows versions up to \
                 {SCHEMA_VERSION}: upgrade strata"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(sql)
                .await
                .map_err(|e| unusable(format!("migration {} failed: {e}", i + 1)))?;
        }
        tx.execute(
            "UPDATE strata_meta SET value = $1 WHERE key = 'schema_version'",
            &[&SCHEMA_VERSION.to_string()],
        )
        .await
        .map_err(|e| unusable(e.to_string()))?;
        tx.commit()
            .await
            .map_err(|e| unusable(format!("cannot commit the migration: {e}")))?;
        Ok(!has_meta)
    }

    /// Inserts the canonical user 12 unless it exists. True if it was inserted.
    pub async fn ensure_canonical_user(&self) -> Result<bool, StoreError> {
        crate::ensure_canonical_user(self).await
    }

    /// Whether this server is in recovery (a standby), and its WAL positions.
    pub async fn status(&self) -> Result<NodeStatus, StoreError> {
        self.call(|client| async move {
            let statement = client
                .prepare_cached(STATUS_SQL)
                .await
                .map_err(|e| engine_error(&e))?;
            let row = client
                .query_one(&statement, &[])
                .await
                .map_err(|e| engine_error(&e))?;
            NodeStatus::of(&row)
        })
        .await
    }

    /// The WAL position this server has reached (see [`POSITION_SQL`]).
    pub async fn position(&self) -> Result<CommitToken, StoreError> {
        self.call(|client| async move {
            let row = client
                .query_one(POSITION_SQL, &[])
                .await
                .map_err(|e| engine_error(&e))?;
            lsn_of(&row)
        })
        .await
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create(&self, user: &User) -> Result<WriteReceipt, StoreError> {
        let id = user.id;
        let Some(key) = sql_id(id) else {
            return Err(StoreError::Unavailable(format!(
                "user id {id} is outside the range this engine stores"
            )));
        };
        let profile = user.profile.to_value().to_string();
        let slot = shard::hash_slot(id);
        self.call(|mut client| async move {
            let (rows, commit) = self
                .write_guarded(
                    &mut client,
                    shard::Guard::User(id),
                    "INSERT INTO users (id, version, profile, hash_slot) \
                     VALUES ($1, 1, $2::text::jsonb, $3) ON CONFLICT (id) DO NOTHING RETURNING version",
                    &[&key, &profile, &slot],
                )
                .await
                .map_err(shard::Failed::into_store)?;
            if rows.is_empty() {
                return Err(StoreError::AlreadyExists(id));
            }
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
        self.call(|client| async move {
            await_commit(&client, need).await?;
            let Some(key) = key else { return Ok(None) };
            let statement = client
                .prepare_cached("SELECT id, version, profile::text FROM users WHERE id = $1")
                .await
                .map_err(|e| engine_error(&e))?;
            let (row, fences) = futures_util::future::join(
                client.query_opt(&statement, &[&key]),
                self.fences_for_read(&client),
            )
            .await;
            shard::Guard::User(id).check(&fences?)?;
            let row = row.map_err(|e| engine_error(&e))?;
            row.as_ref().map(row_user).transpose()
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
        let expected = expected_version(pre);
        let profile = profile.to_value().to_string();
        self.call(|mut client| async move {
            let (rows, commit) = self
                .write_guarded(
                    &mut client,
                    shard::Guard::User(id),
                    "UPDATE users SET version = version + 1, profile = $2::text::jsonb \
                     WHERE id = $1 AND ($3::bigint IS NULL OR version = $3) RETURNING version",
                    &[&key, &profile, &expected],
                )
                .await
                .map_err(shard::Failed::into_store)?;
            match rows.first() {
                Some(row) => {
                    let version: i64 = row.try_get(0).map_err(|e| unavailable(&e))?;
                    Ok(WriteReceipt {
                        version: version as u64,
                        commit,
                    })
                }
                None => Err(why_not_written(&client, id, key, pre).await),
            }
        })
        .await
    }

    async fn delete(&self, id: UserId, pre: Precondition) -> Result<WriteReceipt, StoreError> {
        let Some(key) = sql_id(id) else {
            return Err(StoreError::NotFound(id));
        };
        let expected = expected_version(pre);
        self.call(|mut client| async move {
            let (rows, commit) = self
                .write_guarded(
                    &mut client,
                    shard::Guard::User(id),
                    "DELETE FROM users WHERE id = $1 AND ($2::bigint IS NULL OR version = $2) \
                     RETURNING version",
                    &[&key, &expected],
                )
                .await
                .map_err(shard::Failed::into_store)?;
            match rows.first() {
                Some(row) => {
                    let version: i64 = row.try_get(0).map_err(|e| unavailable(&e))?;
                    Ok(WriteReceipt {
                        version: version as u64 + 1,
                        commit,
                    })
                }
                None => Err(why_not_written(&client, id, key, pre).await),
            }
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
        self.call(|client| async move {
            await_commit(&client, need).await?;
            let Some(after_key) = after_key else {
                return Ok(Page::of(Vec::new(), limit));
            };
            let statement = client
                .prepare_cached(
                    "SELECT id, version, profile::text FROM users WHERE id > $1 \
                     ORDER BY id LIMIT $2",
                )
                .await
                .map_err(|e| engine_error(&e))?;
            let rows = client
                .query(&statement, &[&after_key, &i64::from(limit)])
                .await
                .map_err(|e| engine_error(&e))?;
            let users = rows.iter().map(row_user).collect::<Result<Vec<_>, _>>()?;
            Ok(Page::of(users, limit))
        })
        .await
    }

    async fn insert_batch(&self, users: Vec<User>) -> Result<CommitToken, StoreError> {
        // COPY's text format: tab-separated columns; a backslash in the data is doubled. Compact
        // JSON has no raw tabs or newlines (serde_json escapes control characters).
        let mut data = BytesMut::with_capacity(users.len() * 256);
        for user in &users {
            let Some(key) = sql_id(user.id) else {
                return Err(StoreError::Unavailable(format!(
                    "user id {} is outside the range this engine stores",
                    user.id
                )));
            };
            data.put_slice(key.to_string().as_bytes());
            data.put_slice(b"\t1\t");
            let json = user.profile.to_value().to_string();
            data.put_slice(json.replace('\\', "\\\\").as_bytes());
            data.put_u8(b'\t');
            data.put_slice(shard::hash_slot(user.id).to_string().as_bytes());
            data.put_u8(b'\n');
        }
        let ids: Vec<UserId> = users.iter().map(|u| u.id).collect();
        let first = ids.first().copied();
        let data = data.freeze();
        self.call(|mut client| async move {
            let tx = client.transaction().await.map_err(|e| engine_error(&e))?;
            let fences = self
                .fences_for_write(&tx)
                .await
                .map_err(shard::Failed::into_store)?;
            shard::Guard::Users(&ids).check(&fences)?;
            // New users only (COPY refuses an existing id): nothing for caches to follow.
            tx.batch_execute("SET LOCAL strata.bulk = 'on'")
                .await
                .map_err(|e| engine_error(&e))?;
            let sink = tx
                .copy_in("COPY users (id, version, profile, hash_slot) FROM STDIN")
                .await
                .map_err(|e| engine_error(&e))?;
            futures_util::pin_mut!(sink);
            let sent = async {
                sink.send(data).await?;
                sink.as_mut().finish().await?;
                tx.commit().await
            }
            .await;
            if let Err(e) = sent {
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    return Err(StoreError::AlreadyExists(
                        duplicate_id(&e).or(first).unwrap_or(UserId(0)),
                    ));
                }
                return Err(engine_error(&e));
            }
            let row = client
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await
                .map_err(|e| engine_error(&e))?;
            lsn_of(&row)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(|client| async move {
            client
                .query_one("SELECT 1", &[])
                .await
                .map(|_| ())
                .map_err(|e| engine_error(&e))
        })
        .await
    }

    fn engine(&self) -> &'static str {
        "postgres"
    }
}
