//! The global email index: which user holds each email address, so an address is unique across
//! every shard group although each group only sees its own accounts.
//!
//! One row per address (`email → user id`), itself sharded: it lives in the group of the
//! address' own slot ([`super::slot::slot_of_key`]), whatever group holds the user. The router
//! keeps it consistent with the accounts without two-phase commit, in the manner of Vitess'
//! consistent lookup vindex (see `docs/sharding.md`, "A global unique email"):
//!
//! 1. **claim** the address first (an insert that the index' primary key makes exclusive),
//!    marked *pending*;
//! 2. create the user and its account in the user's group;
//! 3. **confirm** the claim (pending → committed), or release it when step 2 failed.
//!
//! A claim that finds the address held **verifies** the holder: if the holder's account exists
//! with this address, the address is taken; if the holder's claim is pending and young (a
//! sign-up still in flight), it is taken too; otherwise the row is an orphan (a crash between
//! the steps, or a deleted user whose release failed) and is taken over with a compare-and-set
//! on the holder's id. Two sign-ups racing for one address therefore never both succeed: only
//! one insert or one compare-and-set can win.

use async_trait::async_trait;
use strata_core::email::Email;
use strata_core::user::UserId;

use crate::StoreError;

/// How long a pending claim is taken as a sign-up still in flight. Longer than any store call
/// may take (calls time out well within it), so a claim older than this whose account does not
/// exist was left by a sign-up that failed.
pub const PENDING_CLAIM_GRACE_MS: u64 = 30_000;

/// A row of the email index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailClaim {
    pub user: UserId,
    /// False while the sign-up that claimed it has not confirmed.
    pub committed: bool,
    pub claimed_ms: u64,
}

/// What claiming an address found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The address is now this user's (pending).
    Claimed,
    /// Someone already holds it.
    Held(EmailClaim),
}

/// The part of a shard group's database that holds email index rows.
#[async_trait]
pub trait EmailIndex: Send + Sync + 'static {
    /// Inserts `email → user` as pending, unless the address has a row already.
    async fn claim_email(
        &self,
        email: &Email,
        user: UserId,
        now_ms: u64,
    ) -> Result<Claim, StoreError>;

    /// The row for this address.
    async fn email_claim(&self, email: &Email) -> Result<Option<EmailClaim>, StoreError>;

    /// Marks `user`'s claim committed. False when the row is no longer `user`'s.
    async fn confirm_email(&self, email: &Email, user: UserId) -> Result<bool, StoreError>;

    /// Deletes the row if it is `user`'s. False when it was not.
    async fn release_email(&self, email: &Email, user: UserId) -> Result<bool, StoreError>;

    /// Gives an orphaned row to `to` (pending), only if `from` still holds it.
    async fn take_over_email(
        &self,
        email: &Email,
        from: UserId,
        to: UserId,
        now_ms: u64,
    ) -> Result<bool, StoreError>;
}
