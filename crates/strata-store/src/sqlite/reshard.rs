//! An SQLite file as the source or destination of a resharding (see `crate::reshard`).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{SqliteStore, bump_commit, engine_error, shard};
use crate::StoreError;
use crate::reshard::rows::{AccountRow, Changed, EmailRow, GroupRows, RowBatch, UserRow};
use crate::shard::fence::Fence;
use crate::shard::{SLOTS, SlotRange, Strategy};

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
    let (lo, hi) = (
        i64::from(slots.first().get()),
        i64::from(slots.last().get()),
    );
    match strategy {
        Strategy::Hash => ("strata_hash_slot(u.id) BETWEEN ?1 AND ?2".into(), lo, hi),
        Strategy::Range => {
            let last = if hi == i64::from(SLOTS) - 1 {
                i64::MAX
            } else {
                ((hi + 1) << 51) - 1
            };
            ("u.id BETWEEN ?1 AND ?2".into(), lo << 51, last)
        }
        Strategy::Modulo(n) => {
            let n = i64::from(n.max(1));
            (
                format!("((u.id % {n}) * {SLOTS} / {n}) BETWEEN ?1 AND ?2"),
                lo,
                hi,
            )
        }
    }
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

/// `fence` without the slots of `slots` (zero, one or two fences).
fn subtract(fence: &Fence, slots: SlotRange) -> Vec<Fence> {
    let (a, b) = (fence.slots.first().get(), fence.slots.last().get());
    let (x, y) = (slots.first().get(), slots.last().get());
    if y < a || b < x {
        return vec![fence.clone()];
    }
    let mut out = Vec::new();
    if a < x
        && let Some(r) = SlotRange::new(a, x - 1)
    {
        out.push(Fence {
            slots: r,
            ..fence.clone()
        });
    }
    if y < b
        && let Some(r) = SlotRange::new(y + 1, b)
    {
        out.push(Fence {
            slots: r,
            ..fence.clone()
        });
    }
    out
}

/// Fences joined where one range ends right before the next and everything else but the map
/// version matches (the joined fence takes the later version).
fn compact(mut fences: Vec<Fence>) -> Vec<Fence> {
    fences.sort_by_key(|f| (f.user, f.slots.first()));
    let mut out: Vec<Fence> = Vec::new();
    for f in fences {
        if let Some(last) = out.last_mut()
            && last.user.is_none()
            && f.user.is_none()
            && last.moved_to == f.moved_to
            && last.strategy == f.strategy
            && last.except == f.except
            && u32::from(last.slots.last().get()) + 1 == u32::from(f.slots.first().get())
            && let Some(joined) = SlotRange::new(last.slots.first().get(), f.slots.last().get())
        {
            last.slots = joined;
            last.map_version = last.map_version.max(f.map_version);
            continue;
        }
        out.push(f);
    }
    out
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
            let kept: Vec<Fence> = shard::fences(&tx)?
                .into_iter()
                .filter(|f| !(f.moved_to.as_str() == to && f.map_version == map_version))
                .collect();
            write_fences(&tx, &kept)?;
            tx.commit().map_err(engine_error)
        })
        .await
    }

    async fn unfence_slots(&self, slots: SlotRange) -> Result<(), StoreError> {
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(engine_error)?;
            let kept: Vec<Fence> = shard::fences(&tx)?
                .iter()
                .flat_map(|f| {
                    if f.user.is_some() {
                        vec![f.clone()]
                    } else {
                        subtract(f, slots)
                    }
                })
                .collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::ShardGroup;

    fn fence(first: u16, last: u16, to: &str, version: u64) -> Fence {
        Fence {
            slots: SlotRange::new(first, last).expect("valid"),
            strategy: Strategy::Hash,
            user: None,
            except: Vec::new(),
            moved_to: ShardGroup::parse(to).expect("valid"),
            map_version: version,
        }
    }

    #[test]
    fn adjacent_fences_to_one_group_are_joined_and_others_kept() {
        let joined = compact(vec![
            fence(16, 31, "s5", 3),
            fence(0, 15, "s5", 2),
            fence(32, 47, "s6", 4),
            fence(64, 79, "s5", 5),
        ]);
        let shown: Vec<String> = joined
            .iter()
            .map(|f| format!("{}>{}@{}", f.slots, f.moved_to, f.map_version))
            .collect();
        assert_eq!(shown, ["0-31>s5@3", "32-47>s6@4", "64-79>s5@5"]);
    }

    #[test]
    fn subtracting_slots_from_a_fence_keeps_what_lies_outside() {
        let f = Fence {
            slots: SlotRange::new(100, 199).expect("valid"),
            strategy: Strategy::Hash,
            user: None,
            except: Vec::new(),
            moved_to: ShardGroup::parse("s2").expect("valid"),
            map_version: 3,
        };
        let parts = |x, y| {
            subtract(&f, SlotRange::new(x, y).expect("valid"))
                .iter()
                .map(|f| f.slots.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(parts(0, 50), ["100-199"]);
        assert_eq!(parts(0, 4095), Vec::<String>::new());
        assert_eq!(parts(120, 130), ["100-119", "131-199"]);
        assert_eq!(parts(100, 150), ["151-199"]);
        assert_eq!(parts(150, 300), ["100-149"]);
    }
}
