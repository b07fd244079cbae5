//! One PostgreSQL server's place in replication: its WAL position (an LSN, which is also the
//! engine's commit token), whether it is a standby, and what it has received — read by the
//! store itself, by `strata status` and by the failover controller ([`probe_node`]).

use std::time::Duration;

use tokio_postgres::{NoTls, Row};

use super::{engine_error, lsn_of, unavailable};
use crate::{CommitToken, StoreError};

/// Parses `XXXXXXXX/YYYYYYYY` (an LSN as PostgreSQL prints it).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u64::from(u32::MAX) && lo <= u64::from(u32::MAX)).then_some((hi << 32) | lo)
}

/// Prints an LSN the way PostgreSQL does.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// The WAL position this server has reached: replayed on a standby, written on a primary.
pub(super) const POSITION_SQL: &str = "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
     ELSE pg_current_wal_lsn() END)::text";

/// [`POSITION_SQL`], whether the server is in recovery, and the WAL it has received (NULL on a
/// primary): what [`NodeStatus`] holds.
pub(super) const STATUS_SQL: &str = "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
     ELSE pg_current_wal_lsn() END)::text, pg_is_in_recovery(), pg_last_wal_receive_lsn()::text";

/// What one PostgreSQL server reports about itself (for `strata status`, metrics and routing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStatus {
    /// A standby (replica) rather than a primary.
    pub in_recovery: bool,
    /// Its WAL position: replayed on a standby, written on a primary.
    pub position: CommitToken,
    /// The WAL it has received: on a standby at or past `position` (it replays all of it when
    /// promoted); on a primary, `position`.
    pub received: CommitToken,
}

impl NodeStatus {
    /// From a row of [`STATUS_SQL`].
    pub(super) fn of(row: &Row) -> Result<Self, StoreError> {
        let position = lsn_of(row)?;
        let received: Option<String> = row.try_get(2).map_err(|e| unavailable(&e))?;
        Ok(NodeStatus {
            in_recovery: row.try_get(1).map_err(|e| unavailable(&e))?,
            position,
            received: received
                .as_deref()
                .and_then(parse_lsn)
                .map_or(position, |r| CommitToken(r).max(position)),
        })
    }
}

/// Runs `sql` over a fresh connection to the server at `url`, within `timeout`.
async fn query_fresh(url: &str, timeout: Duration, sql: &str) -> Result<Vec<Row>, StoreError> {
    let query = async {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Unusable(format!("not a PostgreSQL URL: {e}")))?;
        config.connect_timeout(timeout);
        let (client, connection) = config.connect(NoTls).await.map_err(|e| unavailable(&e))?;
        let driver = tokio::spawn(connection);
        let rows = client.query(sql, &[]).await.map_err(|e| engine_error(&e));
        drop(client);
        driver.abort();
        rows
    };
    tokio::time::timeout(timeout, query)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "postgres: no answer in time".into(),
            ))
        })
}

/// Asks the server at `url` for its role and WAL positions, over a fresh connection, within
/// `timeout`.
pub async fn probe_node(url: &str, timeout: Duration) -> Result<NodeStatus, StoreError> {
    let rows = query_fresh(url, timeout, STATUS_SQL).await?;
    NodeStatus::of(rows.first().ok_or_else(|| unavailable("no status row"))?)
}

/// One standby as its primary sees it (`pg_stat_replication`): for `strata status`, what a
/// failover to it would lose under asynchronous commit.
#[derive(Debug, Clone, PartialEq)]
pub struct StandbyLag {
    /// The standby's `application_name` (its role name in a deployment).
    pub name: String,
    /// WAL the primary has flushed — and so may have acknowledged — that the standby has not
    /// yet written.
    pub behind_bytes: u64,
    /// How long the newest WAL the standby wrote took to get there after the primary flushed
    /// it (`write_lag`); `None` while it is caught up and nothing new was written.
    pub lag: Option<Duration>,
}

/// Each standby streaming from the primary at `url`, within `timeout`. A standby that is not
/// streaming (down, or its link cut) is absent.
pub async fn probe_standbys(url: &str, timeout: Duration) -> Result<Vec<StandbyLag>, StoreError> {
    const SQL: &str = "SELECT application_name, \
        GREATEST(pg_current_wal_flush_lsn() - COALESCE(write_lsn, '0/0'::pg_lsn), 0)::float8, \
        (EXTRACT(epoch FROM write_lag) * 1000)::float8 \
        FROM pg_stat_replication";
    query_fresh(url, timeout, SQL)
        .await?
        .iter()
        .map(|row| {
            let behind: f64 = row.try_get(1).map_err(|e| unavailable(&e))?;
            let lag_ms: Option<f64> = row.try_get(2).map_err(|e| unavailable(&e))?;
            Ok(StandbyLag {
                name: row.try_get(0).map_err(|e| unavailable(&e))?,
                // WAL positions fit in 64 bits; the float is exact below 2^53.
                behind_bytes: behind.max(0.0) as u64,
                lag: lag_ms
                    .filter(|ms| ms.is_finite() && *ms >= 0.0)
                    .map(|ms| Duration::from_secs_f64(ms / 1000.0)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse_and_print_the_way_postgres_writes_them() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B_3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(format_lsn(0x1_0000_00FF), "1/FF");
        assert_eq!(
            parse_lsn(&format_lsn(0xABCD_EF01_2345)),
            Some(0xABCD_EF01_2345)
        );
        for bad in ["", "0", "/1", "x/1", "1/", "100000000/0", "0/100000000"] {
            assert_eq!(parse_lsn(bad), None, "{bad:?} is not an LSN");
        }
    }
}
