//! # strata-store — the data tier
//!
//! Tier: data. Depends on `strata-core` only; no other tier crate.
//!
//! [`open`] opens the engines from a role's options ([`open::DataOptions`]).
//!
//! [`Store`] is the one interface the web tier sees. It is shaped for what comes after the
//! embedded engine:
//! - every call that touches a user carries its [`UserId`] — the shard key when users are
//!   spread over several databases;
//! - every write returns a [`CommitToken`], and every read takes a [`ReadRequirement`] that can
//!   say "must see at least this commit" — read-your-writes across replicas
//!   ([`replicated::ReplicatedStore`] routes such a read to a replica that has replayed it);
//! - every row has a per-user `version`, bumped on each write, which the web tier turns into
//!   `ETag`s and checks for `If-Match` (optimistic concurrency).
//!
//! Engines: [`sqlite::SqliteStore`] (embedded default: one WAL-mode file, bundled SQLite) and
//! [`postgres::PgStore`] (PostgreSQL through a connection pool; commit tokens are WAL positions),
//! and [`replicated::ReplicatedStore`] (a primary and its streaming replicas: read/write split and
//! read-your-writes by WAL position).
//!
//! [`shard`]: the shard map — user ids to slots, slots to shard groups, pins — and the router
//! ([`shard::router::ShardedStore`]) that sends each call to its group; [`embedded_shards`]:
//! one SQLite file per group; [`reshard`]: moving slots between groups under load.
//! [`changes`]: the log of committed user changes an embedded deployment's API servers follow
//! to keep their in-process caches coherent.
//! Guarantee: a write that returned `Ok` is durable in the engine (SQLite WAL with
//! `synchronous=FULL` for API writes) and either fully applied or not at all.

use async_trait::async_trait;
use strata_core::user::{User, UserId, UserProfile};

pub mod accounts;
pub mod changes;
pub mod conformance;
pub mod embedded_shards;
pub mod idempotency;
pub mod map_home;
pub mod open;
pub mod pg_shards;
pub mod postgres;
pub mod redis_sessions;
pub mod replicated;
pub mod reshard;
mod rows;
pub mod shard;
pub mod sqlite;
pub mod traced;

/// A position in the store's commit order. Tokens from one store compare: a larger token is a
/// later commit. For SQLite it is a sequence bumped by every write; for PostgreSQL it is a WAL
/// position (LSN), read on the write's connection right after it commits, so at or past the end
/// of its commit record: any server of the cluster whose replay has reached it shows the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CommitToken(pub u64);

impl CommitToken {
    /// The last position any store can reach: SQLite keeps its sequence in a signed 64-bit
    /// INTEGER, and a PostgreSQL WAL position past 2^63 - 1 would follow 8 EiB of WAL. A token
    /// beyond it was never issued by any store.
    pub const MAX: CommitToken = CommitToken(i64::MAX as u64);
}

/// What a read must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadRequirement {
    /// The read must reflect every commit up to and including this one.
    pub at_least: Option<CommitToken>,
}

impl ReadRequirement {
    /// No requirement: any committed state will do.
    pub const ANY: Self = Self { at_least: None };

    pub fn at_least(token: CommitToken) -> Self {
        Self {
            at_least: Some(token),
        }
    }
}

/// A user as stored: the profile plus its row version (1 on creation, +1 per write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    pub user: User,
    pub version: u64,
}

/// What a successful write reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteReceipt {
    /// The row version after the write (for a delete: the version that was deleted, +1).
    pub version: u64,
    /// Where the write sits in the commit order.
    pub commit: CommitToken,
}

/// A condition on the current row version (from `If-Match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Write whatever the current version is.
    None,
    /// Write only if the current version is exactly this.
    VersionIs(u64),
}

/// One page of a listing, in ascending id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub users: Vec<StoredUser>,
    /// The id to continue after, when more users may follow.
    pub next_after: Option<UserId>,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("user {0} does not exist")]
    NotFound(UserId),
    #[error("user {0} already exists")]
    AlreadyExists(UserId),
    #[error("user {id} is at version {actual}, not {expected}")]
    VersionMismatch {
        id: UserId,
        expected: u64,
        actual: u64,
    },
    /// The store has not yet applied the commit the read asked for (a lagging replica).
    #[error("the store has not yet reached commit {wanted:?} (at {current:?})")]
    NotYetVisible {
        wanted: CommitToken,
        current: CommitToken,
    },
    /// The engine is down, busy past its timeout, or out of space: retry later.
    #[error("the data store is unavailable: {0}")]
    Unavailable(String),
    /// A stored row could not be read back as a user. Never served.
    #[error("stored data for user {id} is corrupt: {detail}")]
    Corrupt { id: UserId, detail: String },
    /// An account with this email already exists.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// No such account; the text says which ("the email ann@example.com", "user 12").
    #[error("no account for {0}")]
    NoAccount(String),
    /// The data directory cannot be used (unreadable, not a Strata database, newer schema).
    #[error("{0}")]
    Unusable(String),
    /// This shard group no longer holds the row: its slot moved to `to` in shard map
    /// `map_version`. Nothing was written. The router refreshes its map and retries there.
    #[error("{what} moved to shard group {to} in shard map version {map_version}")]
    Moved {
        what: String,
        to: String,
        map_version: u64,
    },
}

/// The data tier's interface. Implementations must be safe to share across tasks.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a new user. Fails with `AlreadyExists` if the id is taken.
    async fn create(&self, user: &User) -> Result<WriteReceipt, StoreError>;

    /// Reads one user, or `None` if there is none with this id.
    async fn get(
        &self,
        id: UserId,
        need: ReadRequirement,
    ) -> Result<Option<StoredUser>, StoreError>;

    /// Replaces a user's whole profile.
    async fn replace(
        &self,
        id: UserId,
        profile: &UserProfile,
        pre: Precondition,
    ) -> Result<WriteReceipt, StoreError>;

    /// Deletes a user.
    async fn delete(&self, id: UserId, pre: Precondition) -> Result<WriteReceipt, StoreError>;

    /// Up to `limit` users with ids greater than `after`, in ascending id order.
    async fn list(
        &self,
        after: Option<UserId>,
        limit: u32,
        need: ReadRequirement,
    ) -> Result<Page, StoreError>;

    /// Inserts many users in as few transactions as the engine likes (bulk load). Ids already
    /// present are an error and nothing of that batch is applied.
    async fn insert_batch(&self, users: Vec<User>) -> Result<CommitToken, StoreError>;

    /// Checks the engine answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// A short name for logs and `/readyz` (`sqlite`, `postgres`).
    fn engine(&self) -> &'static str;
}

/// Inserts the canonical user 12 (John Smith) unless it exists. True if it was inserted.
pub async fn ensure_canonical_user(store: &dyn Store) -> Result<bool, StoreError> {
    match store.create(&User::canonical()).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(e),
    }
}
