//! A PostgreSQL database as one shard group: its fences (rows that moved away, checked inside
//! every write's transaction) and its part of the global email index.
//!
//! **Why a lock.** PostgreSQL runs writes concurrently under READ COMMITTED: a write that read
//! "no fence" could commit after a fence did, and land in a group that no longer owns its row.
//! So in a shard group every write takes the fence lock (a transaction-scoped advisory lock)
//! *shared* before it reads the fences, and adding or removing a fence (or starting a change
//! capture) takes it *exclusively*: that waits for every write in flight to commit, and every
//! later write reads the fences after the change committed. Writes still run in parallel with
//! each other; only a fence change pauses them, for as long as the writes in flight take.
//! Reads read the fences after the row (pipelined, no extra round trip): a read that finished
//! before a fence committed was still right.

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use strata_core::email::Email;
use strata_core::user::UserId;
use tokio_postgres::Row;

use super::schema::FENCE_LOCK;
use super::{PgStore, engine_error, unavailable};
use crate::rows::sql_id;
use crate::shard::email_index::{Claim, EmailClaim, EmailIndex};
use crate::shard::fence::{self, Fence};
use crate::shard::slot::{SlotId, Strategy, slot_of_key};
use crate::{CommitToken, StoreError};

pub(super) const FENCES_SQL: &str = "SELECT fence FROM shard_fence ORDER BY id";
const LOCK_SHARED_SQL: &str = "SELECT pg_advisory_xact_lock_shared($1)";
const LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1)";

/// Why a guarded write did not happen: the database refused it, or a fence did.
#[derive(Debug)]
pub(super) enum Failed {
    Db(tokio_postgres::Error),
    Refused(StoreError),
}

impl From<tokio_postgres::Error> for Failed {
    fn from(e: tokio_postgres::Error) -> Self {
        Failed::Db(e)
    }
}

impl From<StoreError> for Failed {
    fn from(e: StoreError) -> Self {
        Failed::Refused(e)
    }
}

impl Failed {
    pub(super) fn into_store(self) -> StoreError {
        match self {
            Failed::Db(e) => engine_error(&e),
            Failed::Refused(e) => e,
        }
    }
}

/// The rows a call touches, for the fence check.
#[derive(Debug, Clone, Copy)]
pub(super) enum Guard<'a> {
    User(UserId),
    Users(&'a [UserId]),
    EmailSlot(SlotId),
}

impl Guard<'_> {
    pub(super) fn check(&self, fences: &[Fence]) -> Result<(), StoreError> {
        if fences.is_empty() {
            return Ok(());
        }
        match self {
            Guard::User(id) => fence::check_user(fences, *id),
            Guard::Users(ids) => ids.iter().try_for_each(|id| fence::check_user(fences, *id)),
            Guard::EmailSlot(slot) => fence::check_key_slot(fences, *slot),
        }
    }
}

/// The hash slot stored with a user row (`users.hash_slot`).
pub(super) fn hash_slot(id: UserId) -> i16 {
    Strategy::Hash.slot_of(id).get() as i16
}

pub(super) fn parse_fences(rows: &[Row]) -> Result<Vec<Fence>, StoreError> {
    rows.iter()
        .map(|row| {
            let text: String = row.try_get(0).map_err(|e| unavailable(&e))?;
            serde_json::from_str(&text).map_err(|e| {
                StoreError::Unusable(format!(
                    "a shard fence in this database cannot be read ({e}): {text}"
                ))
            })
        })
        .collect()
}

/// Takes the fence lock shared for the rest of `tx` and reads the fences.
pub(super) async fn hold_fences(tx: &Transaction<'_>) -> Result<Vec<Fence>, Failed> {
    let lock = tx.prepare_cached(LOCK_SHARED_SQL).await?;
    let read = tx.prepare_cached(FENCES_SQL).await?;
    // Pipelined: the server runs the select after the lock is granted, with a new snapshot.
    let (locked, rows) =
        futures_util::future::join(tx.execute(&lock, &[&FENCE_LOCK]), tx.query(&read, &[])).await;
    locked?;
    Ok(parse_fences(&rows?)?)
}

/// Takes the fence lock exclusively for the rest of `tx`: waits for every write in flight.
pub(super) async fn lock_fences(tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    tx.execute(LOCK_SQL, &[&FENCE_LOCK]).await.map(|_| ())
}

/// The fences, read after whatever the caller sent before on `client` (a read's check).
pub(super) async fn read_fences(client: &impl GenericClient) -> Result<Vec<Fence>, StoreError> {
    let statement = client
        .prepare_cached(FENCES_SQL)
        .await
        .map_err(|e| engine_error(&e))?;
    let rows = client
        .query(&statement, &[])
        .await
        .map_err(|e| engine_error(&e))?;
    parse_fences(&rows)
}

fn key_of(user: UserId) -> Result<i64, StoreError> {
    sql_id(user).ok_or_else(|| {
        StoreError::Unavailable(format!(
            "user id {user} is outside the range this engine stores"
        ))
    })
}

fn claim_row(r: &Row) -> Result<EmailClaim, StoreError> {
    let get = |e: tokio_postgres::Error| unavailable(&e);
    Ok(EmailClaim {
        user: UserId(r.try_get::<_, i64>(0).map_err(get)? as u64),
        committed: r.try_get(1).map_err(get)?,
        claimed_ms: r.try_get::<_, i64>(2).map_err(get)? as u64,
    })
}

const CLAIM_SQL: &str = "SELECT user_id, committed, claimed_ms FROM email_index WHERE email = $1";

impl PgStore {
    /// Runs one write statement and reads the WAL position its commit reached. In a shard
    /// group, inside a transaction that holds the fence lock and first checks `guard`.
    pub(super) async fn write_guarded(
        &self,
        client: &mut deadpool_postgres::Object,
        guard: Guard<'_>,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<(Vec<Row>, CommitToken), Failed> {
        if !self.fenced {
            return Ok(super::write_then_position(client, sql, params).await?);
        }
        let tx = client.transaction().await?;
        guard.check(&hold_fences(&tx).await?)?;
        let statement = tx.prepare_cached(sql).await?;
        let rows = tx.query(&statement, params).await?;
        tx.commit().await?;
        let statement = client
            .prepare_cached("SELECT pg_current_wal_lsn()::text")
            .await?;
        let row = client.query_one(&statement, &[]).await?;
        Ok((rows, super::lsn_of(&row)?))
    }

    /// In a shard group, the fences, read after whatever the caller sent before on `client`
    /// (a read's check); none otherwise.
    pub(super) async fn fences_for_read(
        &self,
        client: &impl GenericClient,
    ) -> Result<Vec<Fence>, StoreError> {
        if !self.fenced {
            return Ok(Vec::new());
        }
        read_fences(client).await
    }

    /// In a shard group, the fences after taking the fence lock shared for the rest of `tx`
    /// (a multi-statement write's check); none otherwise.
    pub(super) async fn fences_for_write(
        &self,
        tx: &Transaction<'_>,
    ) -> Result<Vec<Fence>, Failed> {
        if !self.fenced {
            return Ok(Vec::new());
        }
        hold_fences(tx).await
    }

    /// Adds a fence: from now on this group refuses the rows it covers with `Moved`.
    pub async fn add_fence(&self, fence: Fence) -> Result<(), StoreError> {
        let text = serde_json::to_string(&fence)
            .map_err(|e| StoreError::Unavailable(format!("cannot write a fence: {e}")))?;
        self.rewrite_fences(move |mut fences| {
            fences.push(fence);
            fences
        })
        .await
        .map(|_| ())
        .map_err(|e| match e {
            StoreError::Unavailable(m) => StoreError::Unavailable(format!("{m} ({text})")),
            other => other,
        })
    }

    /// Replaces the fences with `change(fences)` under the exclusive fence lock.
    pub(super) async fn rewrite_fences<F>(&self, change: F) -> Result<Vec<Fence>, StoreError>
    where
        F: FnOnce(Vec<Fence>) -> Vec<Fence> + Send,
    {
        self.call(|mut client| async move {
            let tx = client.transaction().await.map_err(|e| engine_error(&e))?;
            lock_fences(&tx).await.map_err(|e| engine_error(&e))?;
            let rows = tx
                .query(FENCES_SQL, &[])
                .await
                .map_err(|e| engine_error(&e))?;
            let fences = change(parse_fences(&rows)?);
            tx.execute("DELETE FROM shard_fence", &[])
                .await
                .map_err(|e| engine_error(&e))?;
            for f in &fences {
                let text = serde_json::to_string(f)
                    .map_err(|e| StoreError::Unavailable(format!("cannot write a fence: {e}")))?;
                tx.execute("INSERT INTO shard_fence (fence) VALUES ($1)", &[&text])
                    .await
                    .map_err(|e| engine_error(&e))?;
            }
            tx.commit().await.map_err(|e| engine_error(&e))?;
            Ok(fences)
        })
        .await
    }

    /// This group's fences.
    pub async fn fences(&self) -> Result<Vec<Fence>, StoreError> {
        self.call(|client| async move { read_fences(&client).await })
            .await
    }

    /// How many user rows this database holds.
    pub async fn count_users(&self) -> Result<u64, StoreError> {
        self.call(|client| async move {
            let row = client
                .query_one("SELECT count(*) FROM users", &[])
                .await
                .map_err(|e| engine_error(&e))?;
            let n: i64 = row.try_get(0).map_err(|e| unavailable(&e))?;
            Ok(n as u64)
        })
        .await
    }

    /// Runs one conditional change of an email index row in a transaction that first checks
    /// the row has not moved away; true if it changed exactly one row.
    async fn change_email_row(
        &self,
        email: &Email,
        sql: &'static str,
        params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>,
    ) -> Result<bool, StoreError> {
        let email = email.as_str().to_owned();
        let slot = slot_of_key(email.as_bytes());
        self.call(|mut client| async move {
            let run = async {
                let tx = client.transaction().await?;
                Guard::EmailSlot(slot).check(&hold_fences(&tx).await?)?;
                let mut refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&email];
                refs.extend(
                    params
                        .iter()
                        .map(|p| &**p as &(dyn tokio_postgres::types::ToSql + Sync)),
                );
                let n = tx.execute(sql, &refs).await?;
                tx.commit().await?;
                Ok::<_, Failed>(n == 1)
            };
            run.await.map_err(Failed::into_store)
        })
        .await
    }
}

#[async_trait]
impl EmailIndex for PgStore {
    async fn claim_email(
        &self,
        email: &Email,
        user: UserId,
        now_ms: u64,
    ) -> Result<Claim, StoreError> {
        let key = key_of(user)?;
        let email = email.as_str().to_owned();
        let slot = slot_of_key(email.as_bytes());
        self.call(|mut client| async move {
            let run = async {
                let tx = client.transaction().await?;
                Guard::EmailSlot(slot).check(&hold_fences(&tx).await?)?;
                let inserted = tx
                    .query(
                        "INSERT INTO email_index (email, user_id, slot, committed, claimed_ms) \
                         VALUES ($1, $2, $3, false, $4) ON CONFLICT (email) DO NOTHING \
                         RETURNING 1",
                        &[&email, &key, &i32::from(slot.get()), &(now_ms as i64)],
                    )
                    .await?;
                if !inserted.is_empty() {
                    tx.commit().await?;
                    return Ok(Claim::Claimed);
                }
                let held = tx.query_opt(CLAIM_SQL, &[&email]).await?;
                let held = held.as_ref().map(claim_row).transpose()?;
                match held {
                    Some(held) => Ok(Claim::Held(held)),
                    // Released between the insert and the read: the caller tries again.
                    None => Err(Failed::Refused(StoreError::Unavailable(
                        "the email index row changed while it was claimed; try again".into(),
                    ))),
                }
            };
            run.await.map_err(Failed::into_store)
        })
        .await
    }

    async fn email_claim(&self, email: &Email) -> Result<Option<EmailClaim>, StoreError> {
        let email = email.as_str().to_owned();
        let slot = slot_of_key(email.as_bytes());
        self.call(|client| async move {
            let statement = client
                .prepare_cached(CLAIM_SQL)
                .await
                .map_err(|e| engine_error(&e))?;
            let (row, fences) = futures_util::future::join(
                client.query_opt(&statement, &[&email]),
                read_fences(&client),
            )
            .await;
            Guard::EmailSlot(slot).check(&fences?)?;
            let row = row.map_err(|e| engine_error(&e))?;
            row.as_ref().map(claim_row).transpose()
        })
        .await
    }

    async fn confirm_email(&self, email: &Email, user: UserId) -> Result<bool, StoreError> {
        let key = key_of(user)?;
        self.change_email_row(
            email,
            "UPDATE email_index SET committed = true WHERE email = $1 AND user_id = $2",
            vec![Box::new(key)],
        )
        .await
    }

    async fn release_email(&self, email: &Email, user: UserId) -> Result<bool, StoreError> {
        let key = key_of(user)?;
        self.change_email_row(
            email,
            "DELETE FROM email_index WHERE email = $1 AND user_id = $2",
            vec![Box::new(key)],
        )
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
        self.change_email_row(
            email,
            "UPDATE email_index SET user_id = $3, committed = false, claimed_ms = $4 \
             WHERE email = $1 AND user_id = $2",
            vec![Box::new(from), Box::new(to), Box::new(now_ms as i64)],
        )
        .await
    }
}
