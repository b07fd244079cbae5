//! Accounts and sessions in the SQLite file (the embedded session store: every API server on
//! the machine shares it).

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use strata_core::email::Email;
use strata_core::user::{User, UserId};

use super::{SqliteStore, bump_commit, engine_error, is_constraint};
use crate::accounts::{
    Account, AccountStore, Rotation, Session, SessionStore, now_ms, remember, roles_of, roles_text,
    was_used,
};
use crate::rows::{decode_email, sql_id};
use crate::{StoreError, WriteReceipt};

const ACCOUNT_COLUMNS: &str = "user_id, email, password_hash, roles, created_ms";
const SESSION_COLUMNS: &str =
    "id, user_id, created_ms, expires_ms, last_used_ms, generation, revoked, user_agent, ip";

/// An account row; its email goes through the parser (the inner `Err` is `Corrupt`).
fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Account, StoreError>> {
    let user_id = UserId(r.get::<_, i64>(0)? as u64);
    let email = decode_email(user_id, &r.get::<_, String>(1)?);
    let password_hash = r.get(2)?;
    let roles = roles_of(&r.get::<_, String>(3)?);
    let created_ms = r.get::<_, i64>(4)? as u64;
    Ok(email.map(|email| Account {
        user_id,
        email,
        password_hash,
        roles,
        created_ms,
    }))
}

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: r.get(0)?,
        user_id: UserId(r.get::<_, i64>(1)? as u64),
        created_ms: r.get::<_, i64>(2)? as u64,
        expires_ms: r.get::<_, i64>(3)? as u64,
        last_used_ms: r.get::<_, i64>(4)? as u64,
        generation: r.get::<_, i64>(5)? as u64,
        revoked: r.get::<_, i64>(6)? != 0,
        user_agent: r.get(7)?,
        ip: r.get(8)?,
    })
}

fn account_where(
    conn: &Connection,
    clause: &str,
    arg: &dyn rusqlite::ToSql,
) -> Result<Option<Account>, StoreError> {
    conn.query_row(
        &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE {clause}"),
        [arg],
        account_row,
    )
    .optional()
    .map_err(engine_error)?
    .transpose()
}

fn session_by_id(conn: &Connection, id: &str) -> Result<Option<Session>, StoreError> {
    conn.query_row(
        &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
        [id],
        session_row,
    )
    .optional()
    .map_err(engine_error)
}

#[async_trait]
impl AccountStore for SqliteStore {
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
        let email = email.as_str().to_owned();
        let hash = password_hash.to_owned();
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(engine_error)?;
            super::shard::check_user(&tx, id)?;
            let taken: Option<i64> = tx
                .query_row(
                    "SELECT user_id FROM accounts WHERE email = ?1",
                    [&email],
                    |r| r.get(0),
                )
                .optional()
                .map_err(engine_error)?;
            if taken.is_some() {
                return Err(StoreError::EmailTaken);
            }
            let commit = bump_commit(&tx)?;
            match tx.execute(
                "INSERT INTO users (id, version, profile, commit_seq) VALUES (?1, 1, ?2, ?3)",
                params![key, profile, commit.0 as i64],
            ) {
                Ok(_) => {}
                Err(e) if is_constraint(&e) => return Err(StoreError::AlreadyExists(id)),
                Err(e) => return Err(engine_error(e)),
            }
            tx.execute(
                "INSERT INTO accounts (user_id, email, password_hash, roles, created_ms) \
                 VALUES (?1, ?2, ?3, '', ?4)",
                params![key, email, hash, now_ms() as i64],
            )
            .map_err(|e| {
                if is_constraint(&e) {
                    StoreError::EmailTaken
                } else {
                    engine_error(e)
                }
            })?;
            tx.commit().map_err(engine_error)?;
            Ok(WriteReceipt { version: 1, commit })
        })
        .await
    }

    async fn account_by_email(&self, email: &Email) -> Result<Option<Account>, StoreError> {
        let email = email.as_str().to_owned();
        self.with_reader(move |conn| account_where(conn, "email = ?1", &email))
            .await
    }

    async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError> {
        let Some(key) = sql_id(user) else {
            return Ok(None);
        };
        self.with_reader(move |conn| {
            super::shard::check_user(conn, user)?;
            account_where(conn, "user_id = ?1", &key)
        })
        .await
    }

    async fn set_role(
        &self,
        email: &Email,
        role: &str,
        granted: bool,
    ) -> Result<Account, StoreError> {
        let email = email.clone();
        let role = role.to_owned();
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(engine_error)?;
            let mut account = account_where(&tx, "email = ?1", &email.as_str())?
                .ok_or_else(|| StoreError::NoAccount(format!("the email {email}")))?;
            super::shard::check_user(&tx, account.user_id)?;
            account.roles.retain(|r| *r != role);
            if granted {
                account.roles.push(role);
            }
            let text = roles_text(&account.roles);
            account.roles = roles_of(&text);
            tx.execute(
                "UPDATE accounts SET roles = ?2 WHERE email = ?1",
                params![email.as_str(), text],
            )
            .map_err(engine_error)?;
            tx.commit().map_err(engine_error)?;
            Ok(account)
        })
        .await
    }

    async fn set_password(&self, user: UserId, password_hash: &str) -> Result<(), StoreError> {
        let Some(key) = sql_id(user) else {
            return Err(StoreError::NoAccount(format!("user {user}")));
        };
        let hash = password_hash.to_owned();
        let changed = self
            .with_writer(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(engine_error)?;
                super::shard::check_user(&tx, user)?;
                let n = tx
                    .execute(
                        "UPDATE accounts SET password_hash = ?2 WHERE user_id = ?1",
                        params![key, hash],
                    )
                    .map_err(engine_error)?;
                tx.commit().map_err(engine_error)?;
                Ok(n)
            })
            .await?;
        if changed == 0 {
            return Err(StoreError::NoAccount(format!("user {user}")));
        }
        Ok(())
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(
        &self,
        session: &Session,
        refresh_hash: &str,
    ) -> Result<(), StoreError> {
        let s = session.clone();
        let hash = refresh_hash.to_owned();
        self.with_writer(move |conn| {
            conn.execute(
                "INSERT INTO sessions (id, user_id, created_ms, expires_ms, last_used_ms, \
                 generation, revoked, refresh_hash, used_hashes, user_agent, ip) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '', ?9, ?10)",
                params![
                    s.id,
                    s.user_id.0 as i64,
                    s.created_ms as i64,
                    s.expires_ms as i64,
                    s.last_used_ms as i64,
                    s.generation as i64,
                    i64::from(s.revoked),
                    hash,
                    s.user_agent,
                    s.ip
                ],
            )
            .map_err(engine_error)?;
            Ok(())
        })
        .await
    }

    async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let id = id.to_owned();
        self.with_reader(move |conn| session_by_id(conn, &id)).await
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
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(engine_error)?;
            let Some(session) = session_by_id(&tx, &id)? else {
                return Ok(Rotation::Refused);
            };
            let (current, used): (String, String) = tx
                .query_row(
                    "SELECT refresh_hash, used_hashes FROM sessions WHERE id = ?1",
                    [&id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(engine_error)?;
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
                    "UPDATE sessions SET refresh_hash = ?2, used_hashes = ?3, generation = ?4, \
                     last_used_ms = ?5 WHERE id = ?1",
                    params![
                        id,
                        new,
                        remember(&used, &current),
                        after.generation as i64,
                        now_ms as i64
                    ],
                )
                .map_err(engine_error)?;
                tx.commit().map_err(engine_error)?;
                return Ok(Rotation::Rotated(after));
            }
            if was_used(&used, &presented) {
                tx.execute("UPDATE sessions SET revoked = 1 WHERE id = ?1", [&id])
                    .map_err(engine_error)?;
                tx.commit().map_err(engine_error)?;
                return Ok(Rotation::Reused);
            }
            Ok(Rotation::Refused)
        })
        .await
    }

    async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.with_writer(move |conn| {
            conn.execute("UPDATE sessions SET revoked = 1 WHERE id = ?1", [&id])
                .map(|n| n > 0)
                .map_err(engine_error)
        })
        .await
    }

    async fn sessions_of(&self, user: UserId, now_ms: u64) -> Result<Vec<Session>, StoreError> {
        self.with_reader(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ?1 AND revoked = 0 \
                     AND expires_ms > ?2 ORDER BY created_ms DESC, id LIMIT 1000"
                ))
                .map_err(engine_error)?;
            let rows = stmt
                .query_map(params![user.0 as i64, now_ms as i64], session_row)
                .map_err(engine_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(engine_error)
        })
        .await
    }

    async fn revoke_all(&self, user: UserId, now_ms: u64) -> Result<u64, StoreError> {
        self.with_writer(move |conn| {
            conn.execute(
                "UPDATE sessions SET revoked = 1 WHERE user_id = ?1 AND revoked = 0 \
                 AND expires_ms > ?2",
                params![user.0 as i64, now_ms as i64],
            )
            .map(|n| n as u64)
            .map_err(engine_error)
        })
        .await
    }

    async fn count_failure(
        &self,
        key: &str,
        window: Duration,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let key = key.to_owned();
        let end = now_ms + window.as_millis() as u64;
        self.with_writer(move |conn| {
            conn.query_row(
                "INSERT INTO auth_failures (key, window_end_ms, count) VALUES (?1, ?2, 1) \
                 ON CONFLICT (key) DO UPDATE SET \
                   count = CASE WHEN window_end_ms <= ?3 THEN 1 ELSE count + 1 END, \
                   window_end_ms = CASE WHEN window_end_ms <= ?3 THEN ?2 ELSE window_end_ms END \
                 RETURNING count",
                params![key, end as i64, now_ms as i64],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(engine_error)
        })
        .await
    }

    async fn failures(&self, key: &str, now_ms: u64) -> Result<(u64, Duration), StoreError> {
        let key = key.to_owned();
        self.with_reader(move |conn| {
            let row: Option<(i64, i64)> = conn
                .query_row(
                    "SELECT count, window_end_ms FROM auth_failures WHERE key = ?1",
                    [&key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(engine_error)?;
            Ok(match row {
                Some((count, end)) if end as u64 > now_ms => {
                    (count as u64, Duration::from_millis(end as u64 - now_ms))
                }
                _ => (0, Duration::ZERO),
            })
        })
        .await
    }

    async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.with_writer(move |conn| {
            conn.execute("DELETE FROM auth_failures WHERE key = ?1", [&key])
                .map(|_| ())
                .map_err(engine_error)
        })
        .await
    }

    async fn discount_failure(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.with_writer(move |conn| {
            conn.execute(
                "UPDATE auth_failures SET count = count - 1 WHERE key = ?1 AND count > 0",
                [&key],
            )
            .map(|_| ())
            .map_err(engine_error)
        })
        .await
    }
}
