//! The changes committed to users, as a log a reader follows: what an API server's in-process
//! cache needs to stay coherent with writes made through other processes.
//!
//! The embedded engine writes one log row per changed user in the same transaction as the
//! change (SQLite triggers, so no write path can forget it), and [`ChangeFeed::poll`] reads
//! what was committed since the previous poll. The feed knows users, not caches: the web tier
//! turns user ids into its cache keys.

use strata_core::user::UserId;

use crate::StoreError;

/// What was committed since the previous poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChanges {
    /// Nothing about users.
    Nothing,
    /// These users changed, each now at (at least) this version; a deleted user's version is
    /// that of its tombstone (the deleted row's version + 1, as the delete's receipt says).
    Users(Vec<(UserId, u64)>),
    /// Anything may have changed: the log was trimmed past this reader's position, a bulk load
    /// logged one entry for its whole batch, or rows moved between shard groups.
    Everything,
}

/// A reader's position in the log of committed user changes.
pub trait ChangeFeed: Send + Sync {
    /// What was committed since the previous call (the first call: since the feed was opened).
    /// Quick when nothing changed (the embedded engine asks SQLite's `data_version`, no table
    /// read); blocks the calling thread. An error leaves the position where it was.
    fn poll(&self) -> Result<UserChanges, StoreError>;
}

/// One user's change as a follower read it from its own database, with the user as that
/// database holds it in the same snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowedUser {
    pub id: UserId,
    /// The version the change logged (a delete: its tombstone's, the deleted version + 1).
    pub logged: u64,
    /// The user now (perhaps at a later version than `logged`), or `None` if deleted.
    pub current: Option<crate::StoredUser>,
}

/// What a follower found committed since its previous poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// Nothing about users.
    Nothing,
    /// These users changed; each at most once per poll.
    Users(Vec<FollowedUser>),
    /// Anything may have changed: the log was trimmed past what this follower had read (it
    /// could not reach its database for long), or the database is another server than before
    /// (a restart, a rewind, a failover to another host of its URL).
    Everything,
}

/// A follower of the log of committed user changes on a database server of its own — in a
/// data centre, its local replica — polled in the background (PostgreSQL: a round trip per
/// poll, too slow to run before every read as the embedded [`ChangeFeed`] does).
#[async_trait::async_trait]
pub trait ChangeFollower: Send + Sync {
    /// What was committed since the previous call (the first call: since the follower was
    /// opened, which returns [`Followed::Nothing`]). An error leaves the position where it was.
    async fn poll(&self) -> Result<Followed, StoreError>;
}
