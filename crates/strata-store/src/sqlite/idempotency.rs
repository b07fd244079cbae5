//! Idempotency records in the SQLite file (see [`crate::idempotency`]): each call is one
//! transaction on the writer connection, so claims are atomic across every process sharing
//! the file.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{SqliteStore, engine_error};
use crate::StoreError;
use crate::idempotency::{Begin, Claim, IdempotencyStore, StoredResponse};

/// Expired records deleted by one claim, at most (the rest go with later claims).
const PURGE_BATCH: i64 = 100;

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn begin_idempotent(&self, key: &str, claim: &Claim) -> Result<Begin, StoreError> {
        let key = key.to_owned();
        let c = claim.clone();
        self.with_writer(move |conn| {
            let now = c.now_ms as i64;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(engine_error)?;
            tx.execute(
                "DELETE FROM idempotency WHERE key IN \
                 (SELECT key FROM idempotency WHERE expires_ms <= ?1 LIMIT ?2)",
                params![now, PURGE_BATCH],
            )
            .map_err(engine_error)?;
            // Insert, or take over an expired record or a lapsed claim of the same request.
            let started: Option<i64> = tx
                .query_row(
                    "INSERT INTO idempotency AS i (key, fingerprint, resource_id, owner, \
                       claim_until_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (key) DO UPDATE SET \
                       resource_id = CASE WHEN i.expires_ms <= ?7 THEN excluded.resource_id \
                                     ELSE i.resource_id END, \
                       expires_ms = CASE WHEN i.expires_ms <= ?7 THEN excluded.expires_ms \
                                    ELSE i.expires_ms END, \
                       fingerprint = excluded.fingerprint, owner = excluded.owner, \
                       claim_until_ms = excluded.claim_until_ms, \
                       status = 0, headers = '', body = x'' \
                     WHERE i.expires_ms <= ?7 OR (i.status = 0 AND i.claim_until_ms <= ?7 \
                       AND i.fingerprint = excluded.fingerprint) \
                     RETURNING resource_id",
                    params![
                        key,
                        c.fingerprint,
                        c.resource_id as i64,
                        c.owner,
                        now + c.claim_ttl.as_millis() as i64,
                        now + c.record_ttl.as_millis() as i64,
                        now
                    ],
                    |r| r.get(0),
                )
                .optional()
                .map_err(engine_error)?;
            let begin = match started {
                Some(id) => Begin::Started {
                    resource_id: id as u64,
                },
                None => {
                    let row: Option<(String, i64, String, Vec<u8>)> = tx
                        .query_row(
                            "SELECT fingerprint, status, headers, body FROM idempotency \
                             WHERE key = ?1",
                            [&key],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                        )
                        .optional()
                        .map_err(engine_error)?;
                    match row {
                        Some((fp, _, _, _)) if fp != c.fingerprint => Begin::Mismatch,
                        Some((_, status, headers, body)) if status != 0 => {
                            Begin::Done(StoredResponse {
                                status: status as u16,
                                headers: StoredResponse::headers_from_text(&headers),
                                body,
                            })
                        }
                        _ => Begin::InProgress,
                    }
                }
            };
            tx.commit().map_err(engine_error)?;
            Ok(begin)
        })
        .await
    }

    async fn finish_idempotent(
        &self,
        key: &str,
        owner: &str,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        let (status, headers, body) = (
            i64::from(response.status),
            response.headers_text(),
            response.body.clone(),
        );
        self.with_writer(move |conn| {
            conn.execute(
                "UPDATE idempotency SET status = ?3, headers = ?4, body = ?5, claim_until_ms = 0 \
                 WHERE key = ?1 AND owner = ?2 AND status = 0",
                params![key, owner, status, headers, body],
            )
            .map(|n| n > 0)
            .map_err(engine_error)
        })
        .await
    }

    async fn abandon_idempotent(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.with_writer(move |conn| {
            conn.execute(
                "UPDATE idempotency SET claim_until_ms = 0 \
                 WHERE key = ?1 AND owner = ?2 AND status = 0",
                params![key, owner],
            )
            .map(|_| ())
            .map_err(engine_error)
        })
        .await
    }
}
