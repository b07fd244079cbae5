//! Following the change log (migration 6, `cache_changes`) on a connection of its own.
//!
//! A poll first asks `PRAGMA data_version`, which changes on a connection whenever any other
//! connection — in this process or another — has committed to the file. Only then does it
//! read the log rows past its position. That order matters: a commit landing between the two
//! is read now and merely makes the next poll look again, while the other order could record
//! a `data_version` that already includes a commit whose rows were not read.
//!
//! Positions are the log's `seq` (AUTOINCREMENT: never reused, and without gaps in what is
//! committed). When the first row past a reader's position is not the next number, the rows
//! in between were trimmed: the reader is told [`UserChanges::Everything`].

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, Transaction};
use strata_core::user::UserId;

use super::{SqliteStore, engine_error, open_connection};
use crate::StoreError;
use crate::changes::{ChangeFeed, UserChanges};

/// How many log rows are kept at least (the trigger trims in steps of 1,024 past this): a
/// reader that falls further behind clears its cache.
pub const CHANGES_KEPT: u64 = 8192;

/// How long a poll waits for a lock before failing (the read then skips the cache). Readers
/// of a WAL database are rarely made to wait at all.
const POLL_BUSY_TIMEOUT: Duration = Duration::from_millis(20);

/// One reader's position in a database's change log.
pub struct SqliteChangeFeed {
    path: PathBuf,
    state: Mutex<Position>,
}

struct Position {
    conn: Connection,
    data_version: i64,
    seq: i64,
}

impl std::fmt::Debug for SqliteChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteChangeFeed")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn data_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.prepare_cached("PRAGMA data_version")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(engine_error)
}

impl SqliteStore {
    /// A reader of this database's change log on a connection of its own, positioned at the
    /// log's end (a cache that starts following it now starts empty).
    pub fn change_feed(&self) -> Result<SqliteChangeFeed, StoreError> {
        let conn = open_connection(&self.inner.path)?;
        conn.busy_timeout(POLL_BUSY_TIMEOUT).map_err(engine_error)?;
        let data_version = data_version(&conn)?;
        let seq = conn
            .query_row(
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'cache_changes'), 0)",
                [],
                |r| r.get(0),
            )
            .map_err(engine_error)?;
        Ok(SqliteChangeFeed {
            path: self.inner.path.clone(),
            state: Mutex::new(Position {
                conn,
                data_version,
                seq,
            }),
        })
    }
}

impl ChangeFeed for SqliteChangeFeed {
    fn poll(&self) -> Result<UserChanges, StoreError> {
        let mut at = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = data_version(&at.conn)?;
        if now == at.data_version {
            return Ok(UserChanges::Nothing);
        }
        let rows = {
            let mut stmt = at
                .conn
                .prepare_cached(
                    "SELECT seq, user_id, version FROM cache_changes WHERE seq > ?1 ORDER BY seq",
                )
                .map_err(engine_error)?;
            let rows = stmt
                .query_map([at.seq], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(engine_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(engine_error)?
        };
        at.data_version = now;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(UserChanges::Nothing);
        };
        let trimmed_past_us = first.0 != at.seq + 1;
        at.seq = last.0;
        if trimmed_past_us || rows.iter().any(|(_, user, _)| user.is_none()) {
            return Ok(UserChanges::Everything);
        }
        Ok(UserChanges::Users(
            rows.into_iter()
                .filter_map(|(_, user, version)| Some((UserId(user? as u64), version as u64)))
                .collect(),
        ))
    }
}

/// For a bulk load: its rows are not logged one by one…
pub(super) fn quiet(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute(
        "INSERT OR IGNORE INTO cache_changes_quiet (id) VALUES (1)",
        [],
    )
    .map(|_| ())
    .map_err(engine_error)
}

/// …but as one entry saying that anything may have changed.
pub(super) fn log_everything(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "DELETE FROM cache_changes_quiet;
         INSERT INTO cache_changes (user_id, version) VALUES (NULL, 0);",
    )
    .map_err(engine_error)
}
