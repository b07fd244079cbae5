//! Who may delete a shared blob, and when.
//!
//! Blobs are content-addressed, so one blob serves every upload (and every rendered size) with
//! the same bytes: two users who upload the same picture share it. A blob nothing references
//! is deleted — but "nothing references it" is read in the catalog while writers store blobs
//! outside it, and a writer stores its blob *before* it can record the reference. Without a
//! rule, a deleter that finds no reference can remove the blob a writer has just stored (a
//! no-op put: the bytes were there) and is about to record; that upload then fails with its
//! file missing, or a photo points at sizes that are gone.
//!
//! The rule, in two tables of the catalog:
//! - a **writer holds** each key it is about to store ([`Catalog::hold_blobs`], a row in
//!   `blob_holds` for [`HOLD_FOR`]) before the put, and gives the hold up in the very
//!   transaction that records the reference ([`take_hold`]) — which fails if the hold ran
//!   out, so the caller retries instead of recording a blob that may be gone;
//! - a **deleter claims** a key ([`claim_unused`], a row in `blob_deletions` for
//!   [`DELETE_FOR`]) in the transaction that finds it unreferenced *and unheld*, deletes the
//!   blob, then drops the claim ([`Catalog::deleted_blobs`]). A writer that finds a claim waits
//!   for it to go (at most until it runs out) and then stores the bytes again.
//!
//! Both checks run in `IMMEDIATE` transactions, which SQLite serialises, so either the hold
//! comes first (and the deleter leaves the blob) or the claim does (and the writer's put comes
//! after the delete). A claim left by a deleter that died runs out after [`DELETE_FOR`], longer
//! than any blob store call may take (the S3 engine's deadline is 30 s), so a delete still in
//! flight cannot land after a writer's put. `docs/photos.md` has the sequence.

use std::time::Duration;

use rusqlite::{Connection, params};
use strata_blobs::BlobKey;

use super::{Catalog, CatalogError, db, immediate, now_ms};

/// How long a writer's hold lasts: longer than a put may take (its store's deadline).
pub const HOLD_FOR: Duration = Duration::from_secs(120);

/// How long a deleter's claim lasts: longer than a delete may take.
pub const DELETE_FOR: Duration = Duration::from_secs(120);

/// How often a writer looks again while a deletion of its key is under way.
const WAIT_STEP: Duration = Duration::from_millis(10);

/// Keys a writer holds until it records them (or gives them up with
/// [`Catalog::release_blobs`]).
#[derive(Debug)]
#[must_use = "a hold is given up by recording its blobs, or released"]
pub struct BlobHold {
    rows: Vec<i64>,
}

pub(super) fn schema(conn: &Connection) -> Result<(), CatalogError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS blob_holds (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            key TEXT NOT NULL,
            until_ms INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS blob_holds_by_key ON blob_holds(key);
        CREATE TABLE IF NOT EXISTS blob_deletions (
            key TEXT PRIMARY KEY,
            until_ms INTEGER NOT NULL
        );",
    )
    .map_err(db)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Catalog {
    /// Holds `keys` before they are stored, so that no deleter takes them until the reference
    /// is recorded. Waits while one of them is being deleted (bounded by that claim's
    /// [`DELETE_FOR`]).
    pub async fn hold_blobs(&self, keys: Vec<BlobKey>) -> Result<BlobHold, CatalogError> {
        loop {
            let keys = keys.clone();
            let held = self
                .with(move |conn| {
                    let tx = immediate(conn)?;
                    let now = now_ms();
                    tx.execute("DELETE FROM blob_holds WHERE until_ms <= ?1", [now])
                        .map_err(db)?;
                    for key in &keys {
                        let deleting: bool = tx
                            .query_row(
                                "SELECT EXISTS(SELECT 1 FROM blob_deletions WHERE key = ?1 AND until_ms > ?2)",
                                params![key.as_str(), now],
                                |r| r.get(0),
                            )
                            .map_err(db)?;
                        if deleting {
                            return Ok(None);
                        }
                    }
                    let mut rows = Vec::with_capacity(keys.len());
                    for key in &keys {
                        tx.execute(
                            "INSERT INTO blob_holds (key, until_ms) VALUES (?1, ?2)",
                            params![key.as_str(), now.saturating_add(ms(HOLD_FOR))],
                        )
                        .map_err(db)?;
                        rows.push(tx.last_insert_rowid());
                    }
                    tx.commit().map_err(db)?;
                    Ok(Some(BlobHold { rows }))
                })
                .await?;
            match held {
                Some(hold) => return Ok(hold),
                None => tokio::time::sleep(WAIT_STEP).await,
            }
        }
    }

    /// Gives up a hold whose blobs will not be recorded (the put failed).
    pub async fn release_blobs(&self, hold: BlobHold) {
        let result = self
            .with(move |conn| {
                let tx = immediate(conn)?;
                for row in hold.rows {
                    tx.execute("DELETE FROM blob_holds WHERE id = ?1", [row])
                        .map_err(db)?;
                }
                tx.commit().map_err(db)
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "Could not release a hold on blobs; it runs out by itself.");
        }
    }

    /// Drops the claims on blobs that are now deleted (a failed delete keeps its claim until
    /// it runs out: the call may still land).
    pub async fn deleted_blobs(&self, keys: Vec<BlobKey>) -> Result<(), CatalogError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.with(move |conn| {
            let tx = immediate(conn)?;
            for key in keys {
                tx.execute("DELETE FROM blob_deletions WHERE key = ?1", [key.as_str()])
                    .map_err(db)?;
            }
            tx.commit().map_err(db)
        })
        .await
    }

    /// Claims a job's upload for deletion when nothing needs it any more: no other unsettled
    /// job (two users may upload the very same bytes), no served size (an upload without
    /// metadata can re-encode to its very own bytes), no writer about to record it.
    pub async fn claim_upload(
        &self,
        key: BlobKey,
        except: super::JobId,
    ) -> Result<bool, CatalogError> {
        self.with(move |conn| {
            let tx = immediate(conn)?;
            let claimed = !claim_unused(&tx, vec![key], Some(except))?.is_empty();
            tx.commit().map_err(db)?;
            Ok(claimed)
        })
        .await
    }
}

/// Gives up a writer's hold in the transaction that records its blobs; fails when the hold
/// ran out (a deleter may have taken the blobs since), so the caller tries again.
pub(super) fn take_hold(conn: &Connection, hold: BlobHold) -> Result<(), CatalogError> {
    let now = now_ms();
    let wanted = hold.rows.len();
    let mut taken = 0;
    for row in hold.rows {
        taken += conn
            .execute(
                "DELETE FROM blob_holds WHERE id = ?1 AND until_ms > ?2",
                params![row, now],
            )
            .map_err(db)?;
    }
    if taken == wanted {
        Ok(())
    } else {
        Err(CatalogError(format!(
            "the hold on the stored blobs ran out (after {} s) before they were recorded; store them again",
            HOLD_FOR.as_secs()
        )))
    }
}

/// The keys among `keys` that no photo serves, no unsettled job (other than `except`) reads,
/// no writer holds and no other deleter has claimed — each now claimed for deletion by the
/// caller, who deletes the blobs and then calls [`Catalog::deleted_blobs`].
pub(super) fn claim_unused(
    conn: &Connection,
    keys: Vec<BlobKey>,
    except: Option<super::JobId>,
) -> Result<Vec<BlobKey>, CatalogError> {
    let now = now_ms();
    conn.execute("DELETE FROM blob_deletions WHERE until_ms <= ?1", [now])
        .map_err(db)?;
    let except = except.map_or(-1, |j| super::sql(j.0));
    let mut out = Vec::new();
    for key in keys {
        if out.contains(&key) {
            continue;
        }
        let used: bool = conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM photos WHERE ?1 IN (key_64, key_128, key_512, key_original))
                 OR EXISTS(SELECT 1 FROM jobs WHERE upload_key = ?1 AND id <> ?3
                   AND state IN ('queued', 'processing', 'failed'))
                 OR EXISTS(SELECT 1 FROM blob_holds WHERE key = ?1 AND until_ms > ?2)
                 OR EXISTS(SELECT 1 FROM blob_deletions WHERE key = ?1)",
                params![key.as_str(), now, except],
                |r| r.get(0),
            )
            .map_err(db)?;
        if !used {
            conn.execute(
                "INSERT INTO blob_deletions (key, until_ms) VALUES (?1, ?2)",
                params![key.as_str(), now.saturating_add(ms(DELETE_FOR))],
            )
            .map_err(db)?;
            out.push(key);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{JobId, JobState};
    use crate::upload::Format;

    fn key(n: u8) -> BlobKey {
        BlobKey::of(&[n])
    }

    #[tokio::test]
    async fn a_held_key_is_not_claimed_and_a_claimed_key_is_held_only_once_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::open(dir.path()).expect("open");
        let hold = catalog.hold_blobs(vec![key(1)]).await.expect("hold");
        assert!(
            !catalog.claim_upload(key(1), JobId(0)).await.expect("claim"),
            "a held key is not deleted"
        );
        catalog.release_blobs(hold).await;
        assert!(catalog.claim_upload(key(1), JobId(0)).await.expect("claim"));
        assert!(
            !catalog.claim_upload(key(1), JobId(0)).await.expect("claim"),
            "one deleter at a time"
        );
        // A writer waits for the deletion to finish, then holds the key.
        let waiting = {
            let catalog = catalog.clone();
            tokio::spawn(async move { catalog.hold_blobs(vec![key(2), key(1)]).await })
        };
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(
            !waiting.is_finished(),
            "the hold waits while key 1 is deleted"
        );
        catalog.deleted_blobs(vec![key(1)]).await.expect("deleted");
        let hold = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the hold is granted once the deletion is over")
            .expect("joined")
            .expect("hold");
        assert!(!catalog.claim_upload(key(2), JobId(0)).await.expect("claim"));
        catalog.release_blobs(hold).await;
    }

    #[tokio::test]
    async fn a_hold_that_ran_out_is_refused_when_the_upload_is_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::open(dir.path()).expect("open");
        let hold = catalog.hold_blobs(vec![key(3)]).await.expect("hold");
        catalog
            .with(|conn| {
                conn.execute("UPDATE blob_holds SET until_ms = 1", [])
                    .map_err(db)
            })
            .await
            .expect("age the hold");
        // Once run out, a deleter may take the blob; recording it now would lose it.
        assert!(catalog.claim_upload(key(3), JobId(0)).await.expect("claim"));
        let refused = catalog
            .submit(JobId(7), 1, (key(3), hold), Format::Png, None)
            .await
            .expect_err("refused");
        assert!(refused.to_string().contains("ran out"), "{refused}");
        assert!(catalog.job(JobId(7)).await.expect("job").is_none());
        // Held afresh once the deletion is over, it is recorded.
        catalog.deleted_blobs(vec![key(3)]).await.expect("deleted");
        let hold = catalog.hold_blobs(vec![key(3)]).await.expect("hold");
        let job = catalog
            .submit(JobId(7), 1, (key(3), hold), Format::Png, None)
            .await
            .expect("recorded");
        assert_eq!(job.state, JobState::Queued);
        assert!(
            !catalog.claim_upload(key(3), JobId(0)).await.expect("claim"),
            "a queued job's upload is not deleted"
        );
        let held: i64 = catalog
            .with(|conn| {
                conn.query_row("SELECT count(*) FROM blob_holds", [], |r| r.get(0))
                    .map_err(db)
            })
            .await
            .expect("count");
        assert_eq!(held, 0, "recording gave the hold up");
    }
}
