//! What a resharding reads from and writes to a shard group's database, whatever the engine:
//! rows as they are stored (versions, hashes and claims kept exactly), the change log, fences,
//! and per-range checksums for verification.

use std::hash::Hasher as _;

use async_trait::async_trait;

use crate::StoreError;
use crate::shard::fence::Fence;
use crate::shard::{SLOTS, SlotRange, Strategy};
use strata_core::user::UserId;

/// A user row with its account, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    pub version: i64,
    pub profile: String,
    pub account: Option<AccountRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    pub email: String,
    pub password_hash: String,
    pub roles: String,
    pub created_ms: i64,
}

/// An email index row, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailRow {
    pub email: String,
    pub user_id: i64,
    pub slot: i64,
    pub committed: bool,
    pub claimed_ms: i64,
}

/// A key the change log says changed (inserted, updated or deleted).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Changed {
    User(i64),
    Email(String),
}

/// Rows to write into a group in one transaction: upserts, and deletions of keys that no
/// longer exist at the source.
#[derive(Debug, Clone, Default)]
pub struct RowBatch {
    pub users: Vec<UserRow>,
    pub deleted_users: Vec<i64>,
    pub emails: Vec<EmailRow>,
    pub deleted_emails: Vec<String>,
}

impl RowBatch {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
            && self.deleted_users.is_empty()
            && self.emails.is_empty()
            && self.deleted_emails.is_empty()
    }
}

/// Count and an order-independent checksum of the rows of a slot range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checksum {
    pub users: u64,
    pub emails: u64,
    pub sum: u64,
}

impl Checksum {
    pub fn add_user(&mut self, row: &UserRow) {
        let mut h = siphasher::sip::SipHasher13::new_with_keys(1, 2);
        h.write_i64(row.id);
        h.write_i64(row.version);
        h.write(row.profile.as_bytes());
        if let Some(a) = &row.account {
            h.write(a.email.as_bytes());
            h.write(a.password_hash.as_bytes());
            h.write(a.roles.as_bytes());
            h.write_i64(a.created_ms);
        }
        self.users += 1;
        self.sum = self.sum.wrapping_add(h.finish());
    }

    pub fn add_email(&mut self, row: &EmailRow) {
        let mut h = siphasher::sip::SipHasher13::new_with_keys(3, 4);
        h.write(row.email.as_bytes());
        h.write_i64(row.user_id);
        h.write_u8(u8::from(row.committed));
        h.write_i64(row.claimed_ms);
        self.emails += 1;
        self.sum = self.sum.wrapping_add(h.finish());
    }
}

/// The SQL condition selecting the users of `slots` under `strategy`, and its two bounds:
/// `hash_slot` is the expression of a row's slot under the hash strategy, `id` its id column,
/// `params` the placeholders the bounds are bound to.
pub fn slot_condition(
    strategy: Strategy,
    slots: SlotRange,
    hash_slot: &str,
    id: &str,
    params: (&str, &str),
) -> (String, i64, i64) {
    let (lo, hi) = (
        i64::from(slots.first().get()),
        i64::from(slots.last().get()),
    );
    let (p1, p2) = params;
    match strategy {
        Strategy::Hash => (format!("{hash_slot} BETWEEN {p1} AND {p2}"), lo, hi),
        Strategy::Range => {
            let last = if hi == i64::from(SLOTS) - 1 {
                i64::MAX
            } else {
                ((hi + 1) << 51) - 1
            };
            (format!("{id} BETWEEN {p1} AND {p2}"), lo << 51, last)
        }
        Strategy::Modulo(n) => {
            let n = i64::from(n.max(1));
            (
                format!("(({id} % {n}) * {SLOTS} / {n}) BETWEEN {p1} AND {p2}"),
                lo,
                hi,
            )
        }
    }
}

/// A shard group's database as a resharding sees it.
#[async_trait]
pub trait GroupRows: Send + Sync + 'static {
    /// Starts logging changes under `tag` (idempotent); the log position to read from.
    async fn start_capture(&self, tag: &str) -> Result<u64, StoreError>;
    /// Stops logging under `tag`; the log is emptied once no capture remains.
    async fn stop_capture(&self, tag: &str) -> Result<(), StoreError>;
    /// Up to `limit` changes after position `after`, in order, with their positions.
    async fn changes_since(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Changed)>, StoreError>;
    /// Up to `limit` user rows of `slots` (under `strategy`) with ids above `after`, in id
    /// order. Ascending by id within one slot; over several slots only for non-hash strategies.
    async fn user_rows(
        &self,
        strategy: Strategy,
        slots: SlotRange,
        after: i64,
        limit: u32,
    ) -> Result<Vec<UserRow>, StoreError>;
    /// The rows of these users that exist.
    async fn user_rows_by_id(&self, ids: Vec<i64>) -> Result<Vec<UserRow>, StoreError>;
    /// Up to `limit` email index rows of one slot with addresses above `after`, in order.
    async fn email_rows(
        &self,
        slot: i64,
        after: String,
        limit: u32,
    ) -> Result<Vec<EmailRow>, StoreError>;
    /// The email index rows of these addresses that exist.
    async fn email_rows_by_key(&self, emails: Vec<String>) -> Result<Vec<EmailRow>, StoreError>;
    /// Writes a batch in one transaction (upserts keep versions and hashes as given).
    async fn apply(&self, batch: RowBatch) -> Result<(), StoreError>;
    /// Adds a fence (this group refuses the rows it covers from now on).
    async fn fence(&self, fence: Fence) -> Result<(), StoreError>;
    /// Removes the fences that send rows to `to` in map `map_version` (an abort).
    async fn unfence(&self, to: &str, map_version: u64) -> Result<(), StoreError>;
    /// Removes what fences say about `slots` (rows of them are moving here).
    async fn unfence_slots(&self, slots: SlotRange) -> Result<(), StoreError>;
    /// Removes the fence that sent `user` away from here (a pinned user coming back).
    async fn unfence_user(&self, user: UserId) -> Result<(), StoreError>;
    /// Joins fences that send adjacent slot ranges to the same group (after cut-overs, whose
    /// maps are all published), so writes check few of them.
    async fn compact_fences(&self) -> Result<(), StoreError>;
    /// The fences.
    async fn list_fences(&self) -> Result<Vec<Fence>, StoreError>;
}
