//! Accounts and sessions in PostgreSQL (on the primary: sessions are written at every login
//! and refresh, and a revocation must be seen by the next request whichever server takes it).

use std::time::Duration;

use async_trait::async_trait;
use strata_core::email::Email;
use strata_core::user::{User, UserId};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::shard::{self, Failed, Guard};
use super::{PgStore, engine_error, unavailable};
use crate::accounts::{
    Account, AccountStore, Rotation, Session, SessionStore, now_ms, remember, roles_of, roles_text,
    was_used,
};
use crate::rows::{decode_email, sql_id};
use crate::{StoreError, WriteReceipt};

const ACCOUNT_COLUMNS: &str = "user_id, email, password_hash, roles, created_ms";
const SESSION_COLUMNS: &str =
    "id, user_id, created_ms, expires_ms, last_used_ms, generation, revoked, user_agent, ip";

fn account_row(r: &Row) -> Result<Account, StoreError> {
    let get = |e: tokio_postgres::Error| unavailable(&e);
    let user_id = UserId(r.try_get::<_, i64>(0).map_err(get)? as u64);
    Ok(Account {
        user_id,
        email: decode_email(user_id, r.try_get(1).map_err(get)?)?,
        password_hash: r.try_get(2).map_err(get)?,
        roles: roles_of(&r.try_get::<_, String>(3).map_err(get)?),
        created_ms: r.try_get::<_, i64>(4).map_err(get)? as u64,
    })
}

fn session_row(r: &Row) -> Result<Session, StoreError> {
    let get = |e: tokio_postgres::Error| unavailable(&e);
    Ok(Session {
        id: r.try_get(0).map_err(get)?,
        user_id: UserId(r.try_get::<_, i64>(1).map_err(get)? as u64),
        created_ms: r.try_get::<_, i64>(2).map_err(get)? as u64,
        expires_ms: r.try_get::<_, i64>(3).map_err(get)? as u64,
        last_used_ms: r.try_get::<_, i64>(4).map_err(get)? as u64,
        generation: r.try_get::<_, i64>(5).map_err(get)? as u64,
        revoked: r.try_get(6).map_err(get)?,
        user_agent: r.try_get(7).map_err(get)?,
        ip: r.try_get(8).map_err(get)?,
    })
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

impl PgStore {
    /// The account `clause` finds; in a shard group, `Moved` when its user (or `user`, the
    /// one asked for) has left this group.
    async fn account_where(
        &self,
        clause: &'static str,
        arg: Box<dyn tokio_postgres::types::ToSql + Sync + Send>,
        user: Option<UserId>,
    ) -> Result<Option<Account>, StoreError> {
        self.call(|client| async move {
            let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE {clause}");
            let statement = client
                .prepare_cached(&sql)
                .await
                .map_err(|e| engine_error(&e))?;
            let (row, fences) = futures_util::future::join(
                client.query_opt(&statement, &[&*arg]),
                self.fences_for_read(&client),
            )
            .await;
            let fences = fences?;
            let account = row
                .map_err(|e| engine_error(&e))?
                .as_ref()
                .map(account_row)
                .transpose()?;
            if let Some(user) = user.or(account.as_ref().map(|a| a.user_id)) {
                Guard::User(user).check(&fences)?;
            }
            Ok(account)
        })
        .await
    }

    async fn execute(
        &self,
        sql: &'static str,
        params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>,
    ) -> Result<Vec<Row>, StoreError> {
        self.call(|client| async move {
            let statement = client
                .prepare_cached(sql)
                .await
                .map_err(|e| engine_error(&e))?;
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(|p| &**p as _).collect();
            client
                .query(&statement, &refs)
                .await
                .map_err(|e| engine_error(&e))
        })
        .await
    }
}

#[async_trait]
impl AccountStore for PgStore {
    async fn create_account(
        &self,
        user: &User,
        email: &Email,
        password_hash: &str,
    ) -> Result<WriteReceipt, StoreError> {
        let id = user.id;
        let Some(key) = sql_id(id) else {
            return Err(StoreError::Unavailable(format!(
                "user id {id} is outside the range this engine stores"
            )));
        };
        let profile = user.profile.to_value().to_string();
        let (email, hash, created) = (
            email.as_str().to_owned(),
            password_hash.to_owned(),
            now_ms() as i64,
        );
        let slot = shard::hash_slot(id);
        self.call(|mut client| async move {
            // One statement: the user and its account commit together or not at all.
            let result = self
                .write_guarded(
                    &mut client,
                    Guard::User(id),
                    "WITH u AS (INSERT INTO users (id, version, profile, hash_slot) \
                       VALUES ($1, 1, $2::text::jsonb, $6) ON CONFLICT (id) DO NOTHING \
                       RETURNING id) \
                     INSERT INTO accounts (user_id, email, password_hash, roles, created_ms) \
                     SELECT id, $3, $4, '', $5 FROM u RETURNING user_id",
                    &[&key, &profile, &email, &hash, &created, &slot],
                )
                .await;
            match result {
                Ok((rows, _)) if rows.is_empty() => Err(StoreError::AlreadyExists(id)),
                Ok((_, commit)) => Ok(WriteReceipt { version: 1, commit }),
                Err(Failed::Db(e)) if is_unique_violation(&e) => Err(StoreError::EmailTaken),
                Err(e) => Err(e.into_store()),
            }
        })
        .await
    }

    async fn account_by_email(&self, email: &Email) -> Result<Option<Account>, StoreError> {
        self.account_where("email = $1", Box::new(email.as_str().to_owned()), None)
            .await
    }

    async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError> {
        let Some(key) = sql_id(user) else {
            return Ok(None);
        };
        self.account_where("user_id = $1", Box::new(key), Some(user))
            .await
    }

    async fn set_role(
        &self,
        email: &Email,
        role: &str,
        granted: bool,
    ) -> Result<Account, StoreError> {
        let (email, role) = (email.as_str().to_owned(), role.to_owned());
        self.call(|mut client| async move {
            let tx = client.transaction().await.map_err(|e| engine_error(&e))?;
            let fences = self
                .fences_for_write(&tx)
                .await
                .map_err(Failed::into_store)?;
            let row = tx
                .query_opt(
                    &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE email = $1 FOR UPDATE"),
                    &[&email],
                )
                .await
                .map_err(|e| engine_error(&e))?;
            let mut account = row
                .as_ref()
                .map(account_row)
                .transpose()?
                .ok_or_else(|| StoreError::NoAccount(format!("the email {email}")))?;
            Guard::User(account.user_id).check(&fences)?;
            account.roles.retain(|r| *r != role);
            if granted {
                account.roles.push(role);
            }
            let text = roles_text(&account.roles);
            account.roles = roles_of(&text);
            tx.execute(
                "UPDATE accounts SET roles = $2 WHERE email = $1",
                &[&email, &text],
            )
            .await
            .map_err(|e| engine_error(&e))?;
            tx.commit().await.map_err(|e| engine_error(&e))?;
            Ok(account)
        })
        .await
    }

    async fn set_password(&self, user: UserId, password_hash: &str) -> Result<(), StoreError> {
        let Some(key) = sql_id(user) else {
            return Err(StoreError::NoAccount(format!("user {user}")));
        };
        let hash = password_hash.to_owned();
        let (changed, _) = self
            .call(|mut client| async move {
                self.write_guarded(
                    &mut client,
                    Guard::User(user),
                    "UPDATE accounts SET password_hash = $2 WHERE user_id = $1 RETURNING 1",
                    &[&key, &hash],
                )
                .await
                .map_err(Failed::into_store)
            })
            .await?;
        if changed.is_empty() {
            return Err(StoreError::NoAccount(format!("user {user}")));
        }
        Ok(())
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn create_session(
        &self,
        session: &Session,
        refresh_hash: &str,
    ) -> Result<(), StoreError> {
        let s = session;
        self.execute(
            "INSERT INTO sessions (id, user_id, created_ms, expires_ms, last_used_ms, \
             generation, revoked, refresh_hash, used_hashes, user_agent, ip) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '', $9, $10)",
            vec![
                Box::new(s.id.clone()),
                Box::new(s.user_id.0 as i64),
                Box::new(s.created_ms as i64),
                Box::new(s.expires_ms as i64),
                Box::new(s.last_used_ms as i64),
                Box::new(s.generation as i64),
                Box::new(s.revoked),
                Box::new(refresh_hash.to_owned()),
                Box::new(s.user_agent.clone()),
                Box::new(s.ip.clone()),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let rows = self
            .execute(
                "SELECT id, user_id, created_ms, expires_ms, last_used_ms, generation, revoked, \
                 user_agent, ip FROM sessions WHERE id = $1",
                vec![Box::new(id.to_owned())],
            )
            .await?;
        rows.first().map(session_row).transpose()
    }

    async fn rotate(
        &self,
        id: &str,
        presented_hash: &str,
        new_hash: &str,
        now_ms: u64,
    ) -> Result<Rotation, StoreError> {
        let (id, presented, new) = (
            id.to_owned(),
            presented_hash.to_owned(),
            new_hash.to_owned(),
        );
        self.call(|mut client| async move {
            let tx = client.transaction().await.map_err(|e| engine_error(&e))?;
            let row = tx
                .query_opt(
                    &format!(
                        "SELECT {SESSION_COLUMNS}, refresh_hash, used_hashes FROM sessions \
                         WHERE id = $1 FOR UPDATE"
                    ),
                    &[&id],
                )
                .await
                .map_err(|e| engine_error(&e))?;
            let Some(row) = row else {
                return Ok(Rotation::Refused);
            };
            let session = session_row(&row)?;
            let current: String = row.try_get(9).map_err(|e| unavailable(&e))?;
            let used: String = row.try_get(10).map_err(|e| unavailable(&e))?;
            if !session.is_active(now_ms) {
                return Ok(Rotation::Refused);
            }
            if current == presented {
                let after = Session {
                    generation: session.generation + 1,
                    last_used_ms: now_ms,
                    ..session
                };
                tx.execute(
                    "UPDATE sessions SET refresh_hash = $2, used_hashes = $3, generation = $4, \
                     last_used_ms = $5 WHERE id = $1",
                    &[
                        &id,
                        &new,
                        &remember(&used, &current),
                        &(after.generation as i64),
                        &(now_ms as i64),
                    ],
                )
                .await
                .map_err(|e| engine_error(&e))?;
                tx.commit().await.map_err(|e| engine_error(&e))?;
                return Ok(Rotation::Rotated(after));
            }
            if was_used(&used, &presented) {
                tx.execute("UPDATE sessions SET revoked = true WHERE id = $1", &[&id])
                    .await
                    .map_err(|e| engine_error(&e))?;
                tx.commit().await.map_err(|e| engine_error(&e))?;
                return Ok(Rotation::Reused);
            }
            Ok(Rotation::Refused)
        })
        .await
    }

    async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let rows = self
            .execute(
                "UPDATE sessions SET revoked = true WHERE id = $1 RETURNING id",
                vec![Box::new(id.to_owned())],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn sessions_of(&self, user: UserId, now_ms: u64) -> Result<Vec<Session>, StoreError> {
        let rows = self
            .execute(
                "SELECT id, user_id, created_ms, expires_ms, last_used_ms, generation, revoked, \
                 user_agent, ip FROM sessions WHERE user_id = $1 AND NOT revoked \
                 AND expires_ms > $2 ORDER BY created_ms DESC, id LIMIT 1000",
                vec![Box::new(user.0 as i64), Box::new(now_ms as i64)],
            )
            .await?;
        rows.iter().map(session_row).collect()
    }

    async fn revoke_all(&self, user: UserId, now_ms: u64) -> Result<u64, StoreError> {
        let rows = self
            .execute(
                "UPDATE sessions SET revoked = true WHERE user_id = $1 AND NOT revoked \
                 AND expires_ms > $2 RETURNING id",
                vec![Box::new(user.0 as i64), Box::new(now_ms as i64)],
            )
            .await?;
        Ok(rows.len() as u64)
    }

    async fn count_failure(
        &self,
        key: &str,
        window: Duration,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let end = (now_ms + window.as_millis() as u64) as i64;
        let rows = self
            .execute(
                "INSERT INTO auth_failures AS f (key, window_end_ms, count) VALUES ($1, $2, 1) \
                 ON CONFLICT (key) DO UPDATE SET \
                   count = CASE WHEN f.window_end_ms <= $3 THEN 1 ELSE f.count + 1 END, \
                   window_end_ms = CASE WHEN f.window_end_ms <= $3 THEN $2 \
                                   ELSE f.window_end_ms END \
                 RETURNING count",
                vec![
                    Box::new(key.to_owned()),
                    Box::new(end),
                    Box::new(now_ms as i64),
                ],
            )
            .await?;
        let count: i64 = rows
            .first()
            .ok_or_else(|| unavailable("the failure counter returned no row"))?
            .try_get(0)
            .map_err(|e| unavailable(&e))?;
        Ok(count as u64)
    }

    async fn failures(&self, key: &str, now_ms: u64) -> Result<(u64, Duration), StoreError> {
        let rows = self
            .execute(
                "SELECT count, window_end_ms FROM auth_failures WHERE key = $1",
                vec![Box::new(key.to_owned())],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok((0, Duration::ZERO));
        };
        let count: i64 = row.try_get(0).map_err(|e| unavailable(&e))?;
        let end: i64 = row.try_get(1).map_err(|e| unavailable(&e))?;
        Ok(if end as u64 > now_ms {
            (count as u64, Duration::from_millis(end as u64 - now_ms))
        } else {
            (0, Duration::ZERO)
        })
    }

    async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM auth_failures WHERE key = $1",
            vec![Box::new(key.to_owned())],
        )
        .await
        .map(|_| ())
    }

    async fn discount_failure(&self, key: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE auth_failures SET count = count - 1 WHERE key = $1 AND count > 0",
            vec![Box::new(key.to_owned())],
        )
        .await
        .map(|_| ())
    }
}
