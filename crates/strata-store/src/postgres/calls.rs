//! The statements most calls share: waiting for a commit a read must see, a write with the
//! WAL position its commit reached, and why a conditional write touched no row.

use std::time::{Duration, Instant};

use strata_core::user::UserId;
use tokio_postgres::Row;

use super::READ_AFTER_WAIT;
use super::node::POSITION_SQL;
use super::node::parse_lsn;
use super::{engine_error, lsn_of, unavailable};
use crate::{CommitToken, Precondition, ReadRequirement, StoreError};

/// Waits (briefly) until the server has reached the commit a read asks for.
pub(super) async fn await_commit(
    client: &deadpool_postgres::ClientWrapper,
    need: ReadRequirement,
) -> Result<(), StoreError> {
    let Some(wanted) = need.at_least else {
        return Ok(());
    };
    let deadline = Instant::now() + READ_AFTER_WAIT;
    let statement = client
        .prepare_cached(POSITION_SQL)
        .await
        .map_err(|e| engine_error(&e))?;
    loop {
        let row = client
            .query_one(&statement, &[])
            .await
            .map_err(|e| engine_error(&e))?;
        let current = lsn_of(&row)?;
        if current >= wanted {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StoreError::NotYetVisible { wanted, current });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs one write statement and, pipelined behind it on the same connection, reads the WAL
/// position its commit reached.
pub(super) async fn write_then_position(
    client: &deadpool_postgres::ClientWrapper,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<(Vec<Row>, CommitToken), tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    let position_statement = client
        .prepare_cached("SELECT pg_current_wal_lsn()::text")
        .await?;
    let (rows, position) = futures_util::future::join(
        client.query(&statement, params),
        client.query_one(&position_statement, &[]),
    )
    .await;
    let rows = rows?;
    let position = position?;
    let text: Option<String> = position.try_get(0)?;
    Ok((
        rows,
        CommitToken(text.as_deref().and_then(parse_lsn).unwrap_or(0)),
    ))
}

/// After a conditional write touched no row: the user is missing, or at another version.
pub(super) async fn why_not_written(
    client: &deadpool_postgres::ClientWrapper,
    id: UserId,
    key: i64,
    pre: Precondition,
) -> StoreError {
    let current = client
        .query_opt("SELECT version FROM users WHERE id = $1", &[&key])
        .await;
    match (current, pre) {
        (Err(e), _) => engine_error(&e),
        (Ok(None), _) | (Ok(Some(_)), Precondition::None) => StoreError::NotFound(id),
        (Ok(Some(row)), Precondition::VersionIs(expected)) => match row.try_get::<_, i64>(0) {
            Ok(actual) => StoreError::VersionMismatch {
                id,
                expected,
                actual: actual as u64,
            },
            Err(e) => unavailable(&e),
        },
    }
}
