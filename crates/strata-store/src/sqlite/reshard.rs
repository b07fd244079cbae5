//! An SQLite file as the source or destination of a resharding (see `crate::reshard`).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{SqliteStore, bump_commit, engine_error, shard};
use crate::StoreError;
use crate::reshard::rows::{
    AccountRow, Changed, EmailRow, GroupRows, RowBatch, UserRow, slot_condition,
};
use crate::shard::fence::Fence;
use crate::shard::fence::{compact, without_move, without_slots};
use crate::shard::{SlotRange, Strategy};
use strata_core::user::UserId;

const USER_COLUMNS: &str =
    "u.id, u.version, u.profile, a.email, a.password_hash, a.roles, a.created_ms";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    let email: Option<String> = r.get(3)?;
    Ok(UserRow {
        id: r.get(0)?,
        version: r.get(1)?,
        profile: r.get(2)?,
        account: match email {
            Some(email) => Some(AccountRow {
                email,
                password_hash: r.get(4)?,
                roles: r.get(5)?,
                created_ms: r.get(6)?,
            }),
            None => None,
        },
    })
}

fn email_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EmailRow> {
    Ok(EmailRow {
        email: r.get(0)?,
        user_id: r.get(1)?,
        slot: r.get(2)?,
        committed: r.get::<_, i64>(3)? != 0,
        claimed_ms: r.get(4)?,
    })
}

/// The `WHERE` clause (over `u.id`, parameters ?1 and ?2) selecting the users of `slots`.
fn slot_clause(strategy: Strategy, slots: SlotRange) -> (String, i64, i64) {
    slot_condition(
        strategy,
        slots,
        "strata_hash_slot(u.id)",
        "u.id",
        ("?1", "?2"),
    )
}

fn stop_capture(conn: &mut Connection, tag: &str) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(engine_error)?;
    tx.execute("DELETE FROM shard_capture WHERE tag = ?1", [tag])
        .map_err(engine_error)?;
    let left: i64 = tx
        .query_row("SELECT count(*) FROM shard_capture", [], |r| r.get(0))
        .map_err(engine_error)?;
    if left == 0 {
        tx.execute("DELETE FROM shard_changes", [])
            .map_err(engine_error)?;
    }
    tx.commit().map_err(engine_error)
}

fn write_fences(tx: &rusqlite::Transaction<'_>, fences: &[Fence]) -> Result<(), StoreError> {
    tx.execute("DELETE FROM shard_fence", [])
        .map_err(engine_error)?;
    for f in fences {
        let text = serde_json::to_string(f)
            .map_err(|e| StoreError::Unavailable(format!("cannot write a fence: {e}")))?;
        tx.execute("INSERT INTO shard_fence (fence) VALUES (?1)", [text])
            .map_err(engine_error)?;
    }
    Ok(())
}

#[async_trait]
impl GroupRows for SqliteStore {
    async fn start_capture(&self, tag: &str) -> Result<u64, StoreError> {
        let tag = tag.to_owned();
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(engine_error)?;
            tx.execute(
                "INSERT OR IGNORE INTO shard_capture (tag) VALUES (?1)",
                [&tag],
            )
            .map_err(engine_error)?;
            let at: Option<i64> = tx
                .query_row("SELECT max(seq) FROM shard_changes", [], |r| r.get(0))
                .map_err(engine_error)?;
            tx.commit().map_err(engine_error)?;
            Ok(at.unwrap_or(0) as u64)
        })
        .await
    }

    async fn stop_capture(&self, tag: &str) -> Result<(), StoreError> {
        let tag = tag.to_owned();
        self.with_writer(move |conn| stop_capture(conn, &tag)).await
    }

    async fn changes_since(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Changed)>, StoreError> {
        self.with_reader(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, kind, key FROM shard_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(engine_error)?;
            let rows = stmt
                .query_map(params![after as i64, i64::from(limit)], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(engine_error)?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, kind, key) = row.map_err(engine_error)?;
                let changed = if kind == 0 {
                    Changed::User(key.parse().map_err(|_| {
                        StoreError::Unavailable(format!("a change names user {key:?}"))
                    })?)
                } else {
                    Changed::Email(key)
                };
                out.push((seq as u64, changed));
            }
            Ok(out)
        })
        .await
    }

    async fn user_rows(
        &self,
        strategy: Strategy,
        slots: SlotRange,
        after: i64,
        limit: u32,
    ) -> Result<Vec<UserRow>, StoreError> {
        let (clause, lo, hi) = slot_clause(strategy, slots);
        self.with_reader(move |conn| {
            let sql = format!(
                "SELECT {USER_COLUMNS} FROM users u LEFT JOIN accounts a ON a.user_id = u.id \
                 WHERE {clause} AND u.id > ?3 ORDER BY u.id LIMIT ?4"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(engine_error)?;
            let rows = stmt
                .query_map(params![lo, hi, after, i64::from(limit)], user_row)
                .map_err(engine_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(engine_error)
        })
        .await
    }

    async fn user_rows_by_id(&self, ids: Vec<i64>) -> Result<Vec<UserRow>, StoreError> {
        self.with_reader(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {USER_COLUMNS} FROM users u LEFT JOIN accounts a ON a.user_id = u.id \
                     WHERE u.id = ?1"
                ))
                .map_err(engine_error)?;
            let mut out = Vec::new();
            for id in ids {
                if let Some(row) = stmt
                    .query_row([id], user_row)
                    .optional()
                    .map_err(engine_error)?
                {
                    out.push(row);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn email_rows(
        &self,
        slot: i64,
        after: String,
        limit: u32,
    ) -> Result<Vec<EmailRow>, StoreError> {
        self.with_reader(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT email, user_id, slot, committed, claimed_ms FROM email_index \
                     WHERE slot = ?1 AND email > ?2 ORDER BY email LIMIT ?3",
                )
                .map_err(engine_error)?;
            let rows = stmt
                .query_map(params![slot, after, i64::from(limit)], email_row)
                .map_err(engine_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(engine_error)
        })
        .await
    }

    async fn email_rows_by_key(&self, emails: Vec<String>) -> Result<Vec<EmailRow>, StoreError> {
        self.with_reader(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT email, user_id, slot, committed, claimed_ms FROM email_index \
                     WHERE email = ?1",
                )
                .map_err(engine_error)?;
            let mut out = Vec::new();
            for e in emails {
                if let Some(row) = stmt
                    .query_row([e], email_row)
                    .optional()
                    .map_err(engine_error)?
                {
                    out.push(row);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn apply(&self, batch: RowBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(engine_error)?;
            let commit = bump_commit(&tx)?;
            for id in &batch.deleted_users {
                tx.execute("DELETE FROM users WHERE id = ?1", [id])
                    .map_err(engine_error)?;
            }
            for u in &batch.users {
                tx.execute(
                    "INSERT INTO users (id, version, profile, commit_seq) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (id) DO UPDATE SET version = excluded.version, \
                     profile = excluded.profile, commit_seq = excluded.commit_seq",
                    params![u.id, u.version, u.profile, commit.0 as i64],
                )
                .map_err(engine_error)?;
                match &u.account {
                    Some(a) => {
                        tx.execute(
                            "INSERT INTO accounts (user_id, email, password_hash, roles, created_ms) \
                             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (user_id) DO UPDATE SET \
                             email = excluded.email, password_hash = excluded.password_hash, \
                             roles = excluded.roles, created_ms = excluded.created_ms",
                            params![u.id, a.email, a.password_hash, a.roles, a.created_ms],
                        )
                        .map_err(engine_error)?;
                    }
                    None => {
                        tx.execute("DELETE FROM accounts WHERE user_id = ?1", [u.id])
                            .map_err(engine_error)?;
                    }
                }
            }
            for e in &batch.deleted_emails {
                tx.execute("DELETE FROM email_index WHERE email = ?1", [e])
                    .map_err(engine_error)?;
            }
            for e in &batch.emails {
                tx.execute(
                    "INSERT INTO email_index (email, user_id, slot, committed, claimed_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (email) DO UPDATE SET \
                     user_id = excluded.user_id, slot = excluded.slot, \
                     committed = excluded.committed, claimed_ms = excluded.claimed_ms",
                    params![e.email, e.user_id, e.slot, i64::from(e.committed), e.claimed_ms],
                )
                .map_err(engine_error)?;
            }
            tx.commit().map_err(engine_error)
        })
        .await
    }

    async fn fence(&self, fence: Fence) -> Result<(), StoreError> {
        self.add_fence(fence).await
    }

    async fn unfence(&self, to: &str, map_version: u64) -> Result<(), StoreError> {
        let to = to.to_owned();
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(engine_error)?;
            let kept = without_move(shard::fences(&tx)?, &to, map_version);
            write_fences(&tx, &kept)?;
            tx.commit().map_err(engine_error)
        })
        .await
    }

    async fn unfence_user(&self, user: UserId) -> Result<(), StoreError> {
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(engine_error)?;
            let mut fences = shard::fences(&tx)?;
            fences.retain(|f| f.user != Some(user));
            write_fences(&tx, &fences)?;
            tx.commit().map_err(engine_error)
        })
        .await
    }

    async fn unfence_slots(&self, slots: SlotRange) -> Result<(), StoreError> {
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(engine_error)?;
            let kept = without_slots(&shard::fences(&tx)?, slots);
            write_fences(&tx, &kept)?;
            tx.commit().map_err(engine_error)
        })
        .await
    }

    async fn compact_fences(&self) -> Result<(), StoreError> {
        self.with_writer(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(engine_error)?;
            let fences = compact(shard::fences(&tx)?);
            write_fences(&tx, &fences)?;
            tx.commit().map_err(engine_error)
        })
        .await
    }

    async fn list_fences(&self) -> Result<Vec<Fence>, StoreError> {
        self.fences().await
    }
}
