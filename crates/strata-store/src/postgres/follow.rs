//! Following the log of committed user changes (migration 5, `cache_changes`) on one server —
//! a data centre's own replica, or the primary — so that the caches there follow what that
//! server has applied: invalidation follows replication.
//!
//! Each change is logged by a trigger in the transaction that made it, with the transaction's
//! id (`xid8`). Sequence numbers are not commit order (a transaction can take number 7 and
//! commit after number 8's), so a follower reads by transaction id instead:
//!
//! - Every poll is one statement, so one snapshot: its `xmin` (every transaction below it has
//!   ended) and the log rows whose transaction id is at or above the previous poll's `xmin`,
//!   with each row's user as the same snapshot holds it.
//! - A row is delivered once: the follower remembers the rows it delivered whose transaction
//!   is at or above the current `xmin`, the only ones a later poll can read again. A
//!   transaction still running at one poll is below no `xmin` until it has ended, so its rows
//!   are read by the first poll that sees it ended — none is skipped. (Only `xmin` is used: on
//!   a hot standby a snapshot's list of running transactions is not exported by
//!   `pg_current_snapshot()`, but its `xmin` is right.)
//! - The log is trimmed every 1,024 rows to the last 8,192; the trigger records the newest
//!   transaction id it may have removed. A follower whose previous `xmin` is at or below that
//!   may have missed rows: [`Followed::Everything`]. So is a change of server (its start time
//!   or address): transaction ids of a rewound or restarted server need not mean what they
//!   meant before.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use strata_core::user::UserId;

use super::{PgConfig, PgStore, engine_error, unavailable};
use crate::StoreError;
use crate::changes::{ChangeFollower, Followed, FollowedUser};
use crate::rows::decode;

/// One statement, one snapshot: the follower's new `xmin`, whether the log was trimmed past
/// the previous one, which server answered, and the rows since the previous `xmin` with their
/// users.
const POLL_SQL: &str = "\
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text, \
           t.through >= $1::text::xid8, \
           concat(pg_postmaster_start_time(), ' ', inet_server_addr(), ' ', inet_server_port()), \
           c.seq, c.xid::text, c.user_id, c.version, u.version, u.profile::text \
      FROM cache_changes_trimmed t \
      LEFT JOIN cache_changes c ON c.xid >= $1::text::xid8 \
      LEFT JOIN users u ON u.id = c.user_id";

/// Where a follower is.
#[derive(Debug)]
struct Position {
    /// The previous poll's `xmin`.
    xmin: u64,
    /// The server that answered it.
    server: String,
    /// Rows delivered whose transaction is at or above `xmin`: seq → transaction id.
    delivered: HashMap<i64, u64>,
}

/// A [`ChangeFollower`] on one PostgreSQL server.
pub struct PgChangeFollower {
    store: PgStore,
    position: Mutex<Option<Position>>,
}

impl std::fmt::Debug for PgChangeFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgChangeFollower")
            .field("server", &self.store.describe())
            .finish_non_exhaustive()
    }
}

impl PgChangeFollower {
    /// A follower of the server(s) at `config.url`, on a connection of its own. Nothing is
    /// read until the first poll.
    pub fn open(config: &PgConfig) -> Result<Self, StoreError> {
        let mut config = config.clone();
        config.max_connections = 1;
        Ok(Self {
            store: PgStore::connect_lazily(&config)?,
            position: Mutex::new(None),
        })
    }
}

/// One row of [`POLL_SQL`].
struct PollRow {
    xmin: u64,
    trimmed: bool,
    server: String,
    change: Option<(i64, u64, FollowedUser)>,
}

/// A failed poll, with the server's own message (a schema older than the log says so).
fn poll_error(e: &tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Unavailable(format!(
            "postgres: cannot follow the change log: {}",
            db.message()
        )),
        None => engine_error(e),
    }
}

fn parse_u64(text: &str) -> Result<u64, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Unavailable(format!("not a transaction id: {text:?}")))
}

fn poll_row(row: &tokio_postgres::Row) -> Result<PollRow, StoreError> {
    let xmin: String = row.try_get(0).map_err(|e| unavailable(&e))?;
    let trimmed: Option<bool> = row.try_get(1).map_err(|e| unavailable(&e))?;
    let server: String = row.try_get(2).map_err(|e| unavailable(&e))?;
    let seq: Option<i64> = row.try_get(3).map_err(|e| unavailable(&e))?;
    let change = match seq {
        None => None,
        Some(seq) => {
            let xid: String = row.try_get(4).map_err(|e| unavailable(&e))?;
            let id: i64 = row.try_get(5).map_err(|e| unavailable(&e))?;
            let logged: i64 = row.try_get(6).map_err(|e| unavailable(&e))?;
            let version: Option<i64> = row.try_get(7).map_err(|e| unavailable(&e))?;
            let profile: Option<String> = row.try_get(8).map_err(|e| unavailable(&e))?;
            let current = match (version, profile) {
                (Some(version), Some(profile)) => Some(decode(id, version, &profile)?),
                _ => None,
            };
            let user = FollowedUser {
                id: UserId(id as u64),
                logged: logged as u64,
                current,
            };
            Some((seq, parse_u64(&xid)?, user))
        }
    };
    Ok(PollRow {
        xmin: parse_u64(&xmin)?,
        trimmed: trimmed.unwrap_or(false),
        server,
        change,
    })
}

/// Applies one poll's rows to the position; what to deliver. Delivering a change twice would
/// be harmless (a cache stores the user as it is now), so the first poll delivers nothing and
/// only sets the starting point.
fn advance(position: &mut Option<Position>, rows: Vec<PollRow>) -> Followed {
    // The trim table's one row is always there: no row means no answer.
    let Some(first) = rows.first() else {
        return Followed::Nothing;
    };
    let (xmin, server, trimmed) = (first.xmin, first.server.clone(), first.trimmed);
    let previous = position.take();
    let opened = previous.is_none();
    let same_server = previous.as_ref().is_some_and(|p| p.server == server);
    let mut delivered = previous
        .filter(|_| same_server)
        .map(|p| p.delivered)
        .unwrap_or_default();
    let mut users: HashMap<UserId, FollowedUser> = HashMap::new();
    for (seq, xid, user) in rows.into_iter().filter_map(|r| r.change) {
        if delivered.insert(seq, xid).is_some() {
            continue;
        }
        users
            .entry(user.id)
            .and_modify(|held| held.logged = held.logged.max(user.logged))
            .or_insert(user);
    }
    delivered.retain(|_, xid| *xid >= xmin);
    *position = Some(Position {
        xmin,
        server,
        delivered,
    });
    if opened {
        return Followed::Nothing;
    }
    if !same_server || trimmed {
        return Followed::Everything;
    }
    if users.is_empty() {
        return Followed::Nothing;
    }
    let mut users: Vec<FollowedUser> = users.into_values().collect();
    users.sort_by_key(|u| u.id);
    Followed::Users(users)
}

#[async_trait]
impl ChangeFollower for PgChangeFollower {
    async fn poll(&self) -> Result<Followed, StoreError> {
        let from = self
            .position
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map_or(u64::MAX, |p| p.xmin);
        // The first poll reads no rows (nothing is above the largest id); it only sets the
        // starting point.
        let from = from.to_string();
        let rows = self
            .store
            .call(|client| async move {
                let statement = client
                    .prepare_cached(POLL_SQL)
                    .await
                    .map_err(|e| poll_error(&e))?;
                let rows = client
                    .query(&statement, &[&from])
                    .await
                    .map_err(|e| poll_error(&e))?;
                rows.iter().map(poll_row).collect::<Result<Vec<_>, _>>()
            })
            .await?;
        let mut position = self
            .position
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(advance(&mut position, rows))
    }
}
