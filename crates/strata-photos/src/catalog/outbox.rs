//! The catalog's outbox: the rows relays claim, publish, mark sent and prune.

use std::time::Duration;

use rusqlite::{TransactionBehavior, params};

use super::{Catalog, CatalogError, JobId, Unsent, db, now_ms, sql};

impl Catalog {
    /// Outbox rows not yet published, oldest first.
    pub async fn unsent(&self, limit: usize) -> Result<Vec<Unsent>, CatalogError> {
        self.with(move |conn| {
            let mut stmt = conn
                .prepare("SELECT id, job_id, traceparent FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT ?1")
                .map_err(db)?;
            let rows = stmt
                .query_map([sql(limit as u64)], |r| {
                    Ok(Unsent {
                        row: r.get(0)?,
                        job: JobId(r.get::<_, i64>(1)?.max(0) as u64),
                        traceparent: r.get(2)?,
                    })
                })
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })
        .await
    }

    /// Claims up to `limit` unsent outbox rows, oldest first, for `lease`: no other relay
    /// takes them until the lease runs out (the claiming relay died), so each row is published
    /// once in the usual case. One immediate transaction, so two processes never claim a row
    /// at once.
    pub async fn claim_unsent(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Unsent>, CatalogError> {
        self.with(move |conn| {
            // Every relay polls every 200 ms: a read first, so that an empty outbox costs no
            // write lock (which uploads and other relays wait on).
            let claimable: bool = conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM outbox WHERE sent_at IS NULL \
                     AND (claimed_until IS NULL OR claimed_until <= ?1))",
                    params![now_ms()],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if !claimable {
                return Ok(Vec::new());
            }
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let now = now_ms();
            let rows = {
                let mut stmt = tx
                    .prepare(
                        "SELECT id, job_id, traceparent FROM outbox WHERE sent_at IS NULL \
                         AND (claimed_until IS NULL OR claimed_until <= ?2) ORDER BY id LIMIT ?1",
                    )
                    .map_err(db)?;
                let rows = stmt
                    .query_map(params![sql(limit as u64), now], |r| {
                        Ok(Unsent {
                            row: r.get(0)?,
                            job: JobId(r.get::<_, i64>(1)?.max(0) as u64),
                            traceparent: r.get(2)?,
                        })
                    })
                    .map_err(db)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(db)?
            };
            let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
            for row in &rows {
                tx.execute(
                    "UPDATE outbox SET claimed_until = ?2 WHERE id = ?1",
                    params![row.row, until],
                )
                .map_err(db)?;
            }
            tx.commit().map_err(db)?;
            Ok(rows)
        })
        .await
    }

    /// Gives back claims on rows a relay could not publish.
    pub async fn release_claims(&self, rows: Vec<i64>) -> Result<(), CatalogError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(db)?;
            for row in rows {
                tx.execute(
                    "UPDATE outbox SET claimed_until = NULL WHERE id = ?1 AND sent_at IS NULL",
                    params![row],
                )
                .map_err(db)?;
            }
            tx.commit().map_err(db)
        })
        .await
    }

    /// Marks an outbox row published.
    pub async fn mark_sent(&self, row: i64) -> Result<(), CatalogError> {
        self.with(move |conn| {
            conn.execute(
                "UPDATE outbox SET sent_at = ?2 WHERE id = ?1",
                params![row, now_ms()],
            )
            .map_err(db)
            .map(drop)
        })
        .await
    }

    /// Deletes outbox rows published more than `age` ago (they only ever grow otherwise).
    /// Returns how many.
    pub async fn prune_sent(&self, age: Duration) -> Result<usize, CatalogError> {
        self.with(move |conn| {
            let before =
                now_ms().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
            conn.execute(
                "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at <= ?1",
                [before],
            )
            .map_err(db)
        })
        .await
    }

    /// How many outbox rows there are, published or not.
    pub async fn outbox_len(&self) -> Result<u64, CatalogError> {
        self.with(|conn| {
            conn.query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
                .map_err(db)
        })
        .await
    }
}
