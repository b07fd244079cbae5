//! An SQLite file as one shard group: its fences (rows that moved away, checked inside every
//! write transaction) and its part of the global email index.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use strata_core::email::Email;
use strata_core::user::UserId;

use super::{SqliteStore, engine_error, is_constraint};
use crate::StoreError;
use crate::rows::sql_id;
use crate::shard::email_index::{Claim, EmailClaim, EmailIndex};
use crate::shard::fence::{self, Fence};
use crate::shard::slot::slot_of_key;

/// SQL functions every connection has: `strata_hash_slot(id)`, the slot of a user id under
/// the hash strategy (indexed, so a resharding reads a slot range without a scan).
pub(super) fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "strata_hash_slot",
        1,
        FunctionFlags::SQLITE_UTF8
            | FunctionFlags::SQLITE_DETERMINISTIC
            | FunctionFlags::SQLITE_INNOCUOUS,
        |ctx| {
            let id: i64 = ctx.get(0)?;
            Ok(i64::from(
                crate::shard::Strategy::Hash
                    .slot_of(UserId(id as u64))
                    .get(),
            ))
        },
    )
}

/// The fences of this database. Few rows (one per slot range moved away), usually none.
pub(super) fn fences(conn: &Connection) -> Result<Vec<Fence>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT fence FROM shard_fence ORDER BY id")
        .map_err(engine_error)?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(engine_error)?;
    let mut out = Vec::new();
    for row in rows {
        let text = row.map_err(engine_error)?;
        let fence: Fence = serde_json::from_str(&text).map_err(|e| {
            StoreError::Unusable(format!(
                "a shard fence in this database cannot be read ({e}): {text}"
            ))
        })?;
        out.push(fence);
    }
    Ok(out)
}

/// Fails with `Moved` when user `id` has left this group. Called inside the transaction that
/// would write the row, so a fence and a write never interleave.
pub(super) fn check_user(conn: &Connection, id: UserId) -> Result<(), StoreError> {
    fence::check_user(&fences(conn)?, id)
}

fn check_email(conn: &Connection, email: &Email) -> Result<i64, StoreError> {
    let slot = slot_of_key(email.as_str().as_bytes());
    fence::check_key_slot(&fences(conn)?, slot)?;
    Ok(i64::from(slot.get()))
}

impl SqliteStore {
    /// Adds a fence: from now on this group refuses the rows it covers with `Moved`.
    pub async fn add_fence(&self, fence: Fence) -> Result<(), StoreError> {
        let text = serde_json::to_string(&fence)
            .map_err(|e| StoreError::Unavailable(format!("cannot write a fence: {e}")))?;
        self.with_writer(move |conn| {
            conn.execute("INSERT INTO shard_fence (fence) VALUES (?1)", [text])
                .map_err(engine_error)?;
            Ok(())
        })
        .await
    }

    /// This group's fences.
    pub async fn fences(&self) -> Result<Vec<Fence>, StoreError> {
        self.with_reader(fences).await
    }

    /// How many user rows this file holds.
    pub async fn count_users(&self) -> Result<u64, StoreError> {
        self.with_reader(|conn| {
            conn.query_row("SELECT count(*) FROM users", [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(engine_error)
        })
        .await
    }

    /// Removes every fence (a resharding rolled back before its map was published).
    pub async fn clear_fences(&self) -> Result<(), StoreError> {
        self.with_writer(|conn| {
            conn.execute("DELETE FROM shard_fence", [])
                .map_err(engine_error)?;
            Ok(())
        })
        .await
    }
}

fn claim_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EmailClaim> {
    Ok(EmailClaim {
        user: UserId(r.get::<_, i64>(0)? as u64),
        committed: r.get::<_, i64>(1)? != 0,
        claimed_ms: r.get::<_, i64>(2)? as u64,
    })
}

fn claim_of(conn: &Connection, email: &str) -> Result<Option<EmailClaim>, StoreError> {
    conn.query_row(
        "SELECT user_id, committed, claimed_ms FROM email_index WHERE email = ?1",
        [email],
        claim_row,
    )
    .optional()
    .map_err(engine_error)
}

fn key_of(user: UserId) -> Result<i64, StoreError> {
    sql_id(user).ok_or_else(|| {
        StoreError::Unavailable(format!(
            "user id {user} is outside the range this engine stores"
        ))
    })
}

#[async_trait]
impl EmailIndex for SqliteStore {
    async fn claim_email(
        &self,
        email: &Email,
        user: UserId,
        now_ms: u64,
    ) -> Result<Claim, StoreError> {
        let key = key_of(user)?;
        let email = email.clone();
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(engine_error)?;
            let slot = check_email(&tx, &email)?;
            match tx.execute(
                "INSERT INTO email_index (email, user_id, slot, committed, claimed_ms) \
                 VALUES (?1, ?2, ?3, 0, ?4)",
                params![email.as_str(), key, slot, now_ms as i64],
            ) {
                Ok(_) => {
                    tx.commit().map_err(engine_error)?;
                    Ok(Claim::Claimed)
                }
                Err(e) if is_constraint(&e) => {
                    let held = claim_of(&tx, email.as_str())?.ok_or_else(|| {
                        StoreError::Unavailable("the email index row vanished".into())
                    })?;
                    Ok(Claim::Held(held))
                }
                Err(e) => Err(engine_error(e)),
            }
        })
        .await
    }

    async fn email_claim(&self, email: &Email) -> Result<Option<EmailClaim>, StoreError> {
        let email = email.clone();
        self.with_reader(move |conn| {
            check_email(conn, &email)?;
            claim_of(conn, email.as_str())
        })
        .await
    }

    async fn confirm_email(&self, email: &Email, user: UserId) -> Result<bool, StoreError> {
        let key = key_of(user)?;
        self.change_email_row(email, move |tx, email| {
            tx.execute(
                "UPDATE email_index SET committed = 1 WHERE email = ?1 AND user_id = ?2",
                params![email, key],
            )
        })
        .await
    }

    async fn release_email(&self, email: &Email, user: UserId) -> Result<bool, StoreError> {
        let key = key_of(user)?;
        self.change_email_row(email, move |tx, email| {
            tx.execute(
                "DELETE FROM email_index WHERE email = ?1 AND user_id = ?2",
                params![email, key],
            )
        })
        .await
    }

    async fn take_over_email(
        &self,
        email: &Email,
        from: UserId,
        to: UserId,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let (from, to) = (key_of(from)?, key_of(to)?);
        self.change_email_row(email, move |tx, email| {
            tx.execute(
                "UPDATE email_index SET user_id = ?3, committed = 0, claimed_ms = ?4 \
                 WHERE email = ?1 AND user_id = ?2",
                params![email, from, to, now_ms as i64],
            )
        })
        .await
    }
}

impl SqliteStore {
    /// Runs one conditional change of an email index row in a write transaction that first
    /// checks the row has not moved away; true if it changed exactly one row.
    async fn change_email_row<F>(&self, email: &Email, change: F) -> Result<bool, StoreError>
    where
        F: FnOnce(&rusqlite::Transaction<'_>, &str) -> rusqlite::Result<usize> + Send + 'static,
    {
        let email = email.clone();
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(engine_error)?;
            check_email(&tx, &email)?;
            let n = change(&tx, email.as_str()).map_err(engine_error)?;
            tx.commit().map_err(engine_error)?;
            Ok(n == 1)
        })
        .await
    }
}
