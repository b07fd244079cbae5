//! Idempotency records in PostgreSQL (see [`crate::idempotency`]), on the primary. A claim is
//! one `INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING`: the row lock it takes makes
//! simultaneous claims of one key take turns, and exactly one of them inserts or takes over.

use async_trait::async_trait;

use super::{PgStore, engine_error, unavailable};
use crate::StoreError;
use crate::idempotency::{Begin, Claim, IdempotencyStore, StoredResponse};

/// Expired records deleted by one claim, at most (the rest go with later claims).
const PURGE_BATCH: i64 = 100;

#[async_trait]
impl IdempotencyStore for PgStore {
    async fn begin_idempotent(&self, key: &str, claim: &Claim) -> Result<Begin, StoreError> {
        let c = claim;
        let now = c.now_ms as i64;
        let (rid, claim_until, expires) = (
            c.resource_id as i64,
            now + c.claim_ttl.as_millis() as i64,
            now + c.record_ttl.as_millis() as i64,
        );
        self.call(|client| async move {
            client
                .execute(
                    "DELETE FROM idempotency WHERE key IN \
                     (SELECT key FROM idempotency WHERE expires_ms <= $1 LIMIT $2)",
                    &[&now, &PURGE_BATCH],
                )
                .await
                .map_err(|e| engine_error(&e))?;
            // Insert, or take over an expired record or a lapsed claim of the same request.
            let started = client
                .query_opt(
                    "INSERT INTO idempotency AS i (key, fingerprint, resource_id, owner, \
                       claim_until_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (key) DO UPDATE SET \
                       resource_id = CASE WHEN i.expires_ms <= $7 THEN excluded.resource_id \
                                     ELSE i.resource_id END, \
                       expires_ms = CASE WHEN i.expires_ms <= $7 THEN excluded.expires_ms \
                                    ELSE i.expires_ms END, \
                       fingerprint = excluded.fingerprint, owner = excluded.owner, \
                       claim_until_ms = excluded.claim_until_ms, \
                       status = 0, headers = '', body = '\\x' \
                     WHERE i.expires_ms <= $7 OR (i.status = 0 AND i.claim_until_ms <= $7 \
                       AND i.fingerprint = excluded.fingerprint) \
                     RETURNING resource_id",
                    &[
                        &key,
                        &c.fingerprint,
                        &rid,
                        &c.owner,
                        &claim_until,
                        &expires,
                        &now,
                    ],
                )
                .await
                .map_err(|e| engine_error(&e))?;
            if let Some(row) = started {
                let id: i64 = row.try_get(0).map_err(|e| unavailable(&e))?;
                return Ok(Begin::Started {
                    resource_id: id as u64,
                });
            }
            let row = client
                .query_opt(
                    "SELECT fingerprint, status, headers, body FROM idempotency WHERE key = $1",
                    &[&key],
                )
                .await
                .map_err(|e| engine_error(&e))?;
            let Some(row) = row else {
                // Purged between the two statements: as good as busy; the client retries.
                return Ok(Begin::InProgress);
            };
            let get = |e: tokio_postgres::Error| unavailable(&e);
            let fingerprint: String = row.try_get(0).map_err(get)?;
            let status: i32 = row.try_get(1).map_err(get)?;
            Ok(if fingerprint != c.fingerprint {
                Begin::Mismatch
            } else if status != 0 {
                Begin::Done(StoredResponse {
                    status: status as u16,
                    headers: StoredResponse::headers_from_text(
                        &row.try_get::<_, String>(2).map_err(get)?,
                    ),
                    body: row.try_get(3).map_err(get)?,
                })
            } else {
                Begin::InProgress
            })
        })
        .await
    }

    async fn finish_idempotent(
        &self,
        key: &str,
        owner: &str,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        let (status, headers) = (i32::from(response.status), response.headers_text());
        let body = &response.body;
        self.call(|client| async move {
            client
                .execute(
                    "UPDATE idempotency SET status = $3, headers = $4, body = $5, \
                     claim_until_ms = 0 WHERE key = $1 AND owner = $2 AND status = 0",
                    &[&key, &owner, &status, &headers, body],
                )
                .await
                .map(|n| n > 0)
                .map_err(|e| engine_error(&e))
        })
        .await
    }

    async fn abandon_idempotent(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.call(|client| async move {
            client
                .execute(
                    "UPDATE idempotency SET claim_until_ms = 0 \
                     WHERE key = $1 AND owner = $2 AND status = 0",
                    &[&key, &owner],
                )
                .await
                .map(|_| ())
                .map_err(|e| engine_error(&e))
        })
        .await
    }
}
