//! A PostgreSQL database as the source or destination of a resharding (see `crate::reshard`).
//!
//! The change log is written by triggers while a capture is on; the capture lock they take
//! makes the log's order the commit order, so reading "every change after position p" never
//! skips one that commits late. Starting a capture takes the fence lock exclusively, so every
//! write that commits after it is logged (a write in flight finishes first).

use async_trait::async_trait;
use strata_core::user::UserId;
use tokio_postgres::Row;

use super::shard::{self, lock_fences};
use super::{PgStore, engine_error, unavailable};
use crate::StoreError;
use crate::reshard::rows::{
    AccountRow, Changed, EmailRow, GroupRows, RowBatch, UserRow, slot_condition,
};
use crate::shard::fence::{Fence, compact, without_move, without_slots};
use crate::shard::{SlotRange, Strategy};

const USER_COLUMNS: &str =
    "u.id, u.version, u.profile::text, a.email, a.password_hash, a.roles, a.created_ms";
const EMAIL_COLUMNS: &str = "email, user_id, slot, committed, claimed_ms";

fn user_row(r: &Row) -> Result<UserRow, StoreError> {
    let get = |e: tokio_postgres::Error| unavailable(&e);
    let email: Option<String> = r.try_get(3).map_err(get)?;
    Ok(UserRow {
        id: r.try_get(0).map_err(get)?,
        version: r.try_get(1).map_err(get)?,
        profile: r.try_get(2).map_err(get)?,
        account: match email {
            Some(email) => Some(AccountRow {
                email,
                password_hash: r.try_get(4).map_err(get)?,
                roles: r.try_get(5).map_err(get)?,
                created_ms: r.try_get(6).map_err(get)?,
            }),
            None => None,
        },
    })
}

fn email_row(r: &Row) -> Result<EmailRow, StoreError> {
    let get = |e: tokio_postgres::Error| unavailable(&e);
    Ok(EmailRow {
        email: r.try_get(0).map_err(get)?,
        user_id: r.try_get(1).map_err(get)?,
        slot: i64::from(r.try_get::<_, i32>(2).map_err(get)?),
        committed: r.try_get(3).map_err(get)?,
        claimed_ms: r.try_get(4).map_err(get)?,
    })
}

/// The last item of each key, in first-seen order (one statement may not upsert a row twice).
fn last_of_each<T, K: Ord>(items: &[T], key: impl Fn(&T) -> K) -> Vec<&T> {
    let mut at = std::collections::BTreeMap::new();
    let mut out: Vec<&T> = Vec::new();
    for item in items {
        match at.entry(key(item)) {
            std::collections::btree_map::Entry::Occupied(e) => out[*e.get()] = item,
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(item);
            }
        }
    }
    out
}

impl PgStore {
    /// Runs `sql` with `params` and maps every row with `map`.
    async fn rows_of<T, M>(
        &self,
        sql: String,
        params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>,
        map: M,
    ) -> Result<Vec<T>, StoreError>
    where
        M: Fn(&Row) -> Result<T, StoreError> + Send,
        T: Send,
    {
        self.call(|client| async move {
            let statement = client
                .prepare_cached(&sql)
                .await
                .map_err(|e| engine_error(&e))?;
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                .iter()
                .map(|p| &**p as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            let rows = client
                .query(&statement, &refs)
                .await
                .map_err(|e| engine_error(&e))?;
            rows.iter().map(&map).collect()
        })
        .await
    }
}

#[async_trait]
impl GroupRows for PgStore {
    async fn start_capture(&self, tag: &str) -> Result<u64, StoreError> {
        let tag = tag.to_owned();
        self.call(|mut client| async move {
            let tx = client.transaction().await.map_err(|e| engine_error(&e))?;
            lock_fences(&tx).await.map_err(|e| engine_error(&e))?;
            tx.execute(
                "INSERT INTO shard_capture (tag) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&tag],
            )
            .await
            .map_err(|e| engine_error(&e))?;
            let row = tx
                .query_one("SELECT coalesce(max(seq), 0) FROM shard_changes", &[])
                .await
                .map_err(|e| engine_error(&e))?;
            let at: i64 = row.try_get(0).map_err(|e| unavailable(&e))?;
            tx.commit().await.map_err(|e| engine_error(&e))?;
            Ok(at as u64)
        })
        .await
    }

    async fn stop_capture(&self, tag: &str) -> Result<(), StoreError> {
        let tag = tag.to_owned();
        self.call(|mut client| async move {
            let tx = client.transaction().await.map_err(|e| engine_error(&e))?;
            tx.execute("DELETE FROM shard_capture WHERE tag = $1", &[&tag])
                .await
                .map_err(|e| engine_error(&e))?;
            tx.execute(
                "DELETE FROM shard_changes WHERE NOT EXISTS (SELECT 1 FROM shard_capture)",
                &[],
            )
            .await
            .map_err(|e| engine_error(&e))?;
            tx.commit().await.map_err(|e| engine_error(&e))
        })
        .await
    }

    async fn changes_since(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Changed)>, StoreError> {
        self.rows_of(
            "SELECT seq, kind, key FROM shard_changes WHERE seq > $1 ORDER BY seq LIMIT $2".into(),
            vec![Box::new(after as i64), Box::new(i64::from(limit))],
            |r| {
                let get = |e: tokio_postgres::Error| unavailable(&e);
                let seq: i64 = r.try_get(0).map_err(get)?;
                let kind: i16 = r.try_get(1).map_err(get)?;
                let key: String = r.try_get(2).map_err(get)?;
                let changed = if kind == 0 {
                    Changed::User(key.parse().map_err(|_| {
                        StoreError::Unavailable(format!("a change names user {key:?}"))
                    })?)
                } else {
                    Changed::Email(key)
                };
                Ok((seq as u64, changed))
            },
        )
        .await
    }

    async fn user_rows(
        &self,
        strategy: Strategy,
        slots: SlotRange,
        after: i64,
        limit: u32,
    ) -> Result<Vec<UserRow>, StoreError> {
        let (clause, lo, hi) = slot_condition(strategy, slots, "u.hash_slot", "u.id", ("$1", "$2"));
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users u LEFT JOIN accounts a ON a.user_id = u.id \
             WHERE {clause} AND u.id > $3 ORDER BY u.id LIMIT $4"
        );
        type Param = Box<dyn tokio_postgres::types::ToSql + Sync + Send>;
        let (lo, hi): (Param, Param) = if matches!(strategy, Strategy::Hash) {
            (Box::new(lo as i16), Box::new(hi as i16))
        } else {
            (Box::new(lo), Box::new(hi))
        };
        self.rows_of(
            sql,
            vec![lo, hi, Box::new(after), Box::new(i64::from(limit))],
            user_row,
        )
        .await
    }

    async fn user_rows_by_id(&self, ids: Vec<i64>) -> Result<Vec<UserRow>, StoreError> {
        self.rows_of(
            format!(
                "SELECT {USER_COLUMNS} FROM users u LEFT JOIN accounts a ON a.user_id = u.id \
                 WHERE u.id = ANY($1) ORDER BY u.id"
            ),
            vec![Box::new(ids)],
            user_row,
        )
        .await
    }

    async fn email_rows(
        &self,
        slot: i64,
        after: String,
        limit: u32,
    ) -> Result<Vec<EmailRow>, StoreError> {
        let slot =
            i32::try_from(slot).map_err(|_| StoreError::Unavailable(format!("no slot {slot}")))?;
        self.rows_of(
            format!(
                "SELECT {EMAIL_COLUMNS} FROM email_index WHERE slot = $1 AND email > $2 \
                 ORDER BY email LIMIT $3"
            ),
            vec![Box::new(slot), Box::new(after), Box::new(i64::from(limit))],
            email_row,
        )
        .await
    }

    async fn email_rows_by_key(&self, emails: Vec<String>) -> Result<Vec<EmailRow>, StoreError> {
        self.rows_of(
            format!("SELECT {EMAIL_COLUMNS} FROM email_index WHERE email = ANY($1) ORDER BY email"),
            vec![Box::new(emails)],
            email_row,
        )
        .await
    }

    async fn apply(&self, batch: RowBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.call(|mut client| async move {
            let run = async {
                let tx = client.transaction().await?;
                // A destination's own writers may be checking fences: hold the lock shared.
                self.fences_for_write(&tx).await?;
                // One statement per table and kind (arrays unnested), not one per row.
                let users = last_of_each(&batch.users, |u| u.id);
                let emails = last_of_each(&batch.emails, |e| e.email.clone());
                tx.execute(
                    "DELETE FROM users WHERE id = ANY($1)",
                    &[&batch.deleted_users],
                )
                .await?;
                let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
                let versions: Vec<i64> = users.iter().map(|u| u.version).collect();
                let profiles: Vec<&str> = users.iter().map(|u| u.profile.as_str()).collect();
                let slots: Vec<i16> = users
                    .iter()
                    .map(|u| shard::hash_slot(UserId(u.id as u64)))
                    .collect();
                tx.execute(
                    "INSERT INTO users (id, version, profile, hash_slot) \
                     SELECT i, v, p::jsonb, s \
                     FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::smallint[]) \
                       AS t (i, v, p, s) \
                     ON CONFLICT (id) DO UPDATE SET version = excluded.version, \
                     profile = excluded.profile, hash_slot = excluded.hash_slot",
                    &[&ids, &versions, &profiles, &slots],
                )
                .await?;
                let without: Vec<i64> = users
                    .iter()
                    .filter(|u| u.account.is_none())
                    .map(|u| u.id)
                    .collect();
                tx.execute("DELETE FROM accounts WHERE user_id = ANY($1)", &[&without])
                    .await?;
                let with: Vec<(i64, &crate::reshard::rows::AccountRow)> = users
                    .iter()
                    .filter_map(|u| u.account.as_ref().map(|a| (u.id, a)))
                    .collect();
                let owners: Vec<i64> = with.iter().map(|(id, _)| *id).collect();
                let addresses: Vec<&str> = with.iter().map(|(_, a)| a.email.as_str()).collect();
                let hashes: Vec<&str> =
                    with.iter().map(|(_, a)| a.password_hash.as_str()).collect();
                let roles: Vec<&str> = with.iter().map(|(_, a)| a.roles.as_str()).collect();
                let created: Vec<i64> = with.iter().map(|(_, a)| a.created_ms).collect();
                tx.execute(
                    "INSERT INTO accounts (user_id, email, password_hash, roles, created_ms) \
                     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], \
                       $5::bigint[]) \
                     ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, \
                     password_hash = excluded.password_hash, roles = excluded.roles, \
                     created_ms = excluded.created_ms",
                    &[&owners, &addresses, &hashes, &roles, &created],
                )
                .await?;
                tx.execute(
                    "DELETE FROM email_index WHERE email = ANY($1)",
                    &[&batch.deleted_emails],
                )
                .await?;
                let keys: Vec<&str> = emails.iter().map(|e| e.email.as_str()).collect();
                let holders: Vec<i64> = emails.iter().map(|e| e.user_id).collect();
                let key_slots = emails
                    .iter()
                    .map(|e| {
                        i32::try_from(e.slot).map_err(|_| {
                            StoreError::Unavailable(format!(
                                "an email index row has slot {}",
                                e.slot
                            ))
                        })
                    })
                    .collect::<Result<Vec<i32>, _>>()?;
                let committed: Vec<bool> = emails.iter().map(|e| e.committed).collect();
                let claimed: Vec<i64> = emails.iter().map(|e| e.claimed_ms).collect();
                tx.execute(
                    "INSERT INTO email_index (email, user_id, slot, committed, claimed_ms) \
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[], $4::bool[], \
                       $5::bigint[]) \
                     ON CONFLICT (email) DO UPDATE SET user_id = excluded.user_id, \
                     slot = excluded.slot, committed = excluded.committed, \
                     claimed_ms = excluded.claimed_ms",
                    &[&keys, &holders, &key_slots, &committed, &claimed],
                )
                .await?;
                tx.commit().await?;
                Ok::<_, shard::Failed>(())
            };
            run.await.map_err(shard::Failed::into_store)
        })
        .await
    }

    async fn fence(&self, fence: Fence) -> Result<(), StoreError> {
        self.add_fence(fence).await
    }

    async fn unfence(&self, to: &str, map_version: u64) -> Result<(), StoreError> {
        let to = to.to_owned();
        self.rewrite_fences(move |fences| without_move(fences, &to, map_version))
            .await
            .map(|_| ())
    }

    async fn unfence_user(&self, user: UserId) -> Result<(), StoreError> {
        self.rewrite_fences(move |mut fences| {
            fences.retain(|f| f.user != Some(user));
            fences
        })
        .await
        .map(|_| ())
    }

    async fn unfence_slots(&self, slots: SlotRange) -> Result<(), StoreError> {
        self.rewrite_fences(move |fences| without_slots(&fences, slots))
            .await
            .map(|_| ())
    }

    async fn compact_fences(&self) -> Result<(), StoreError> {
        self.rewrite_fences(compact).await.map(|_| ())
    }

    async fn list_fences(&self) -> Result<Vec<Fence>, StoreError> {
        self.fences().await
    }
}
