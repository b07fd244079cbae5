//! Accounts and sessions: what the web tier needs to log people in, kept in the data tier so
//! that any API server can serve any request.
//!
//! - [`AccountStore`]: an account is a user (the public profile) plus an email address unique
//!   across the deployment, an argon2id password hash and roles. It is created with its user in
//!   one transaction and deleted with it.
//! - [`SessionStore`]: one row per login (a session, the "family" of its refresh tokens). Only
//!   hashes of refresh tokens are stored. Rotation is one atomic step: the presented hash must be
//!   the current one, and a hash that was current before (a replayed, already rotated token)
//!   revokes the whole session — reuse detection. It also keeps the shared failure counters that
//!   limit login attempts per account and per client address across every API server.
//!
//! Engines: the SQL stores (SQLite embedded, PostgreSQL) implement both; Redis implements
//! [`SessionStore`] for deployments that keep sessions there ([`crate::redis_sessions`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use strata_core::email::Email;
use strata_core::user::{User, UserId};

use crate::idempotency::IdempotencyStore;
use crate::{StoreError, WriteReceipt};

/// The role that may change any profile and create profiles without accounts.
pub const ADMIN_ROLE: &str = "admin";
/// Roles an account may hold.
pub const KNOWN_ROLES: &[&str] = &[ADMIN_ROLE];
/// How many earlier refresh-token hashes a session remembers for reuse detection.
pub const REMEMBERED_HASHES: usize = 32;

/// An account as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub user_id: UserId,
    pub email: Email,
    /// PHC string (`$argon2id$v=19$m=…`).
    pub password_hash: String,
    /// Sorted, without duplicates.
    pub roles: Vec<String>,
    pub created_ms: u64,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the hash.
        f.debug_struct("Account")
            .field("user_id", &self.user_id)
            .field("email", &self.email)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl Account {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ADMIN_ROLE)
    }
}

/// Roles as stored: a space-separated sorted list.
pub(crate) fn roles_text(roles: &[String]) -> String {
    let mut roles: Vec<&str> = roles.iter().map(String::as_str).collect();
    roles.sort_unstable();
    roles.dedup();
    roles.join(" ")
}

pub(crate) fn roles_of(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// Data tier for accounts.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Creates the user and its account in one transaction. `EmailTaken` when the email is
    /// already registered, `AlreadyExists` when the user id is taken; nothing is written then.
    async fn create_account(
        &self,
        user: &User,
        email: &Email,
        password_hash: &str,
    ) -> Result<WriteReceipt, StoreError>;

    /// The account registered with this email.
    async fn account_by_email(&self, email: &Email) -> Result<Option<Account>, StoreError>;

    /// The account of this user, if the user has one.
    async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError>;

    /// Grants (`granted`) or withdraws a role; the account after the change.
    /// `NoAccount` when no account has this email.
    async fn set_role(
        &self,
        email: &Email,
        role: &str,
        granted: bool,
    ) -> Result<Account, StoreError>;

    /// Replaces the account's password hash. `NoAccount` when this user has no account.
    async fn set_password(&self, user: UserId, password_hash: &str) -> Result<(), StoreError>;
}

/// One login: the family of its refresh tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Random, 32 hex digits; appears in tokens and in `GET /sessions`.
    pub id: String,
    pub user_id: UserId,
    pub created_ms: u64,
    /// Absolute end: the session cannot be refreshed past it.
    pub expires_ms: u64,
    pub last_used_ms: u64,
    /// Bumped by every rotation.
    pub generation: u64,
    pub revoked: bool,
    /// What the client said it was at login (truncated), for the user's session list.
    pub user_agent: String,
    pub ip: String,
}

impl Session {
    /// Neither revoked nor past its end.
    pub fn is_active(&self, now_ms: u64) -> bool {
        !self.revoked && now_ms < self.expires_ms
    }
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was the current one: the session now expects the new hash.
    Rotated(Session),
    /// The token had already been rotated away: someone replayed it. The session is revoked.
    Reused,
    /// Unknown session, unknown token, revoked or expired session: nothing changed.
    Refused,
}

/// Data tier for sessions and login-failure counters. Every session store also keeps
/// idempotency records ([`IdempotencyStore`]): both are what every API server of a deployment
/// shares.
#[async_trait]
pub trait SessionStore: IdempotencyStore + Send + Sync + 'static {
    /// Stores a new session whose current refresh token has this hash.
    async fn create_session(&self, session: &Session, refresh_hash: &str)
    -> Result<(), StoreError>;

    /// A session by id, revoked or not.
    async fn session(&self, id: &str) -> Result<Option<Session>, StoreError>;

    /// Presents a refresh token (its hash) for session `id`; see [`Rotation`].
    async fn rotate(
        &self,
        id: &str,
        presented_hash: &str,
        new_hash: &str,
        now_ms: u64,
    ) -> Result<Rotation, StoreError>;

    /// Revokes one session; false if there is no such session.
    async fn revoke(&self, id: &str) -> Result<bool, StoreError>;

    /// The user's active sessions, newest first.
    async fn sessions_of(&self, user: UserId, now_ms: u64) -> Result<Vec<Session>, StoreError>;

    /// Revokes every session of the user; how many were active.
    async fn revoke_all(&self, user: UserId, now_ms: u64) -> Result<u64, StoreError>;

    /// Counts one failure under `key` in a fixed window that starts with the first failure;
    /// the count in the window after this one.
    async fn count_failure(
        &self,
        key: &str,
        window: Duration,
        now_ms: u64,
    ) -> Result<u64, StoreError>;

    /// Failures under `key` in its current window, and how long that window has left.
    async fn failures(&self, key: &str, now_ms: u64) -> Result<(u64, Duration), StoreError>;

    /// Forgets the failures under `key` (after a successful login).
    async fn clear_failures(&self, key: &str) -> Result<(), StoreError>;

    /// Takes back one count under `key` (never below zero): an attempt counted before it was
    /// checked turned out not to be a failure.
    async fn discount_failure(&self, key: &str) -> Result<(), StoreError>;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A session's remembered earlier hashes, newest last, as stored (space separated).
pub(crate) fn remember(used: &str, hash: &str) -> String {
    let mut hashes: Vec<&str> = used.split_whitespace().collect();
    hashes.push(hash);
    let skip = hashes.len().saturating_sub(REMEMBERED_HASHES);
    hashes[skip..].join(" ")
}

pub(crate) fn was_used(used: &str, hash: &str) -> bool {
    used.split_whitespace().any(|h| h == hash)
}

/// The account and session test suites, written once for every engine.
pub mod contract {
    use super::*;
    use crate::ReadRequirement;
    use serde_json::json;
    use strata_core::user::{IdField, UserProfile};

    fn user(id: u64) -> User {
        let doc = json!({"firstName": "Ada", "lastName": "Account",
            "address": {"streetAddress": "1 Test Way", "city": "Testville", "state": "TS", "postalCode": "00501"},
            "phoneNumbers": ["555 0100"]});
        User {
            id: UserId(id),
            profile: UserProfile::parse(&doc, IdField::Forbidden)
                .unwrap_or_else(|e| panic!("test profile is valid: {e:?}")),
        }
    }

    fn email(raw: &str) -> Email {
        Email::parse(raw).unwrap_or_else(|e| panic!("test email {raw:?} is valid: {e}"))
    }

    /// Runs every account check against a store with no accounts (users may exist, but not
    /// with ids from 7_000_000 up).
    pub async fn accounts(store: &(impl AccountStore + crate::Store)) {
        let ann = user(7_000_001);
        let ann_email = email("ann@example.com");
        let other_email = email("other@example.com");
        store
            .create_account(&ann, &ann_email, "$argon2id$hash-a")
            .await
            .unwrap_or_else(|e| panic!("create_account: {e}"));
        let got = store
            .get(ann.id, ReadRequirement::ANY)
            .await
            .unwrap_or_else(|e| panic!("get: {e}"));
        assert_eq!(
            got.map(|s| s.user),
            Some(ann.clone()),
            "an account's user is readable as a profile"
        );
        let acc = store
            .account_by_email(&ann_email)
            .await
            .unwrap_or_else(|e| panic!("account_by_email: {e}"))
            .unwrap_or_else(|| panic!("the account is found by its email"));
        assert_eq!(acc.user_id, ann.id);
        assert_eq!(acc.password_hash, "$argon2id$hash-a");
        assert!(acc.roles.is_empty(), "a new account has no roles");
        assert_eq!(
            store.account(ann.id).await.ok().flatten().map(|a| a.email),
            Some(ann_email.clone())
        );

        // The same email again: refused, and the second user is not created either.
        let bob = user(7_000_002);
        match store
            .create_account(&bob, &ann_email, "$argon2id$hash-b")
            .await
        {
            Err(StoreError::EmailTaken) => {}
            other => panic!("a taken email must be refused with EmailTaken, got {other:?}"),
        }
        assert!(
            store
                .get(bob.id, ReadRequirement::ANY)
                .await
                .ok()
                .flatten()
                .is_none(),
            "a refused account leaves no user behind"
        );
        // A taken user id: refused, and the email stays free.
        match store
            .create_account(&ann, &other_email, "$argon2id$hash-c")
            .await
        {
            Err(StoreError::AlreadyExists(id)) => assert_eq!(id, ann.id),
            other => panic!("a taken user id must be refused with AlreadyExists, got {other:?}"),
        }
        assert!(
            store
                .account_by_email(&other_email)
                .await
                .ok()
                .flatten()
                .is_none(),
            "a refused account leaves no email behind"
        );

        // Roles.
        let admin = store
            .set_role(&ann_email, ADMIN_ROLE, true)
            .await
            .unwrap_or_else(|e| panic!("set_role: {e}"));
        assert!(admin.is_admin());
        let again = store
            .set_role(&ann_email, ADMIN_ROLE, true)
            .await
            .unwrap_or_else(|e| panic!("set_role twice: {e}"));
        assert_eq!(
            again.roles,
            vec![ADMIN_ROLE.to_owned()],
            "roles do not repeat"
        );
        let plain = store
            .set_role(&ann_email, ADMIN_ROLE, false)
            .await
            .unwrap_or_else(|e| panic!("withdraw: {e}"));
        assert!(!plain.is_admin());
        match store
            .set_role(&email("nobody@example.com"), ADMIN_ROLE, true)
            .await
        {
            Err(StoreError::NoAccount(_)) => {}
            other => panic!("granting to an unknown email must say NoAccount, got {other:?}"),
        }

        // A new password replaces the old one; an unknown user is NoAccount.
        store
            .set_password(ann.id, "$argon2id$hash-new")
            .await
            .unwrap_or_else(|e| panic!("set_password: {e}"));
        assert_eq!(
            store
                .account(ann.id)
                .await
                .ok()
                .flatten()
                .map(|a| a.password_hash),
            Some("$argon2id$hash-new".to_owned()),
            "the new hash is the one stored"
        );
        match store.set_password(UserId(7_999_999), "$argon2id$x").await {
            Err(StoreError::NoAccount(_)) => {}
            other => panic!("a password for no account must say NoAccount, got {other:?}"),
        }

        // Deleting the user deletes the account and frees the email.
        store
            .delete(ann.id, crate::Precondition::None)
            .await
            .unwrap_or_else(|e| panic!("delete: {e}"));
        assert!(
            store.account(ann.id).await.ok().flatten().is_none(),
            "the account goes with its user"
        );
        store
            .create_account(&bob, &ann_email, "$argon2id$hash-b")
            .await
            .unwrap_or_else(|e| panic!("the email of a deleted account is free again: {e}"));
    }

    fn session(id: &str, user: u64, now: u64) -> Session {
        Session {
            id: id.to_owned(),
            user_id: UserId(user),
            created_ms: now,
            expires_ms: now + 60_000,
            last_used_ms: now,
            generation: 0,
            revoked: false,
            user_agent: "test".into(),
            ip: "127.0.0.1".into(),
        }
    }

    /// Runs every session check against an empty session store.
    pub async fn sessions(store: &dyn SessionStore) {
        let now = now_ms();
        let s = session("0123456789abcdef0123456789abcdef", 42, now);
        store
            .create_session(&s, "h0")
            .await
            .unwrap_or_else(|e| panic!("create_session: {e}"));
        assert_eq!(
            store.session(&s.id).await.ok().flatten(),
            Some(s.clone()),
            "a session reads back as stored"
        );

        // Rotation: current hash -> rotated; the new hash is then the current one.
        let r = store
            .rotate(&s.id, "h0", "h1", now + 1)
            .await
            .unwrap_or_else(|e| panic!("rotate: {e}"));
        match r {
            Rotation::Rotated(after) => {
                assert_eq!(after.generation, 1, "rotation bumps the generation");
                assert_eq!(after.last_used_ms, now + 1);
            }
            other => panic!("the current token must rotate, got {other:?}"),
        }
        assert_eq!(
            store.rotate(&s.id, "h1", "h2", now + 2).await.ok(),
            Some(Rotation::Rotated(Session {
                generation: 2,
                last_used_ms: now + 2,
                ..s.clone()
            }))
        );
        // A token nobody issued: refused, session untouched.
        assert_eq!(
            store.rotate(&s.id, "forged", "h9", now + 3).await.ok(),
            Some(Rotation::Refused)
        );
        assert_eq!(
            store
                .rotate("ffffffffffffffffffffffffffffffff", "h2", "h9", now + 3)
                .await
                .ok(),
            Some(Rotation::Refused),
            "an unknown session is refused"
        );
        assert!(
            store
                .session(&s.id)
                .await
                .ok()
                .flatten()
                .is_some_and(|x| !x.revoked),
            "a forged token does not revoke the session"
        );
        // Replaying an already rotated token revokes the family.
        assert_eq!(
            store.rotate(&s.id, "h0", "h9", now + 4).await.ok(),
            Some(Rotation::Reused)
        );
        assert!(
            store
                .session(&s.id)
                .await
                .ok()
                .flatten()
                .is_some_and(|x| x.revoked),
            "reuse revokes the session"
        );
        assert_eq!(
            store.rotate(&s.id, "h2", "h3", now + 5).await.ok(),
            Some(Rotation::Refused),
            "a revoked session's current token no longer rotates"
        );

        // Expired sessions do not rotate.
        let old = Session {
            expires_ms: now - 1,
            ..session("11111111111111111111111111111111", 42, now - 10)
        };
        store
            .create_session(&old, "o0")
            .await
            .unwrap_or_else(|e| panic!("create_session: {e}"));
        assert_eq!(
            store.rotate(&old.id, "o0", "o1", now).await.ok(),
            Some(Rotation::Refused)
        );

        // Listing and revoking.
        let a = session("22222222222222222222222222222222", 43, now);
        let b = Session {
            created_ms: now + 10,
            ..session("33333333333333333333333333333333", 43, now)
        };
        let other = session("44444444444444444444444444444444", 44, now);
        for (x, h) in [(&a, "a0"), (&b, "b0"), (&other, "c0")] {
            store
                .create_session(x, h)
                .await
                .unwrap_or_else(|e| panic!("create_session: {e}"));
        }
        let listed: Vec<String> = store
            .sessions_of(UserId(43), now)
            .await
            .unwrap_or_else(|e| panic!("sessions_of: {e}"))
            .into_iter()
            .map(|x| x.id)
            .collect();
        assert_eq!(
            listed,
            vec![b.id.clone(), a.id.clone()],
            "newest first, own only"
        );
        assert_eq!(
            store
                .sessions_of(UserId(42), now)
                .await
                .ok()
                .map(|v| v.len()),
            Some(0),
            "revoked and expired sessions are not listed"
        );
        assert_eq!(store.revoke(&a.id).await.ok(), Some(true));
        assert_eq!(
            store.revoke("55555555555555555555555555555555").await.ok(),
            Some(false)
        );
        assert_eq!(store.revoke_all(UserId(43), now).await.ok(), Some(1));
        assert!(
            store
                .session(&b.id)
                .await
                .ok()
                .flatten()
                .is_some_and(|x| x.revoked),
            "revoke_all revokes"
        );
        assert!(
            store
                .session(&other.id)
                .await
                .ok()
                .flatten()
                .is_some_and(|x| !x.revoked),
            "revoke_all leaves other users' sessions"
        );

        // Failure counters: fixed window, shared, cleared on demand.
        let key = "login:account:42";
        for expected in 1..=3 {
            assert_eq!(
                store
                    .count_failure(key, Duration::from_millis(300), now)
                    .await
                    .ok(),
                Some(expected)
            );
        }
        let (count, left) = store
            .failures(key, now + 100)
            .await
            .unwrap_or_else(|e| panic!("failures: {e}"));
        assert_eq!(count, 3);
        assert!(
            left <= Duration::from_millis(200) && left > Duration::ZERO,
            "{left:?}"
        );
        assert_eq!(
            store.failures(key, now + 400).await.ok().map(|x| x.0),
            Some(0),
            "a window ends"
        );
        assert_eq!(
            store
                .count_failure(key, Duration::from_millis(300), now + 400)
                .await
                .ok(),
            Some(1),
            "a new window starts after the old one ended"
        );
        store
            .count_failure(key, Duration::from_millis(300), now + 400)
            .await
            .unwrap_or_else(|e| panic!("count_failure: {e}"));
        store
            .discount_failure(key)
            .await
            .unwrap_or_else(|e| panic!("discount_failure: {e}"));
        assert_eq!(
            store.failures(key, now + 401).await.ok().map(|x| x.0),
            Some(1),
            "one count taken back"
        );
        store
            .clear_failures(key)
            .await
            .unwrap_or_else(|e| panic!("clear_failures: {e}"));
        assert_eq!(
            store.failures(key, now + 401).await.ok().map(|x| x.0),
            Some(0)
        );
        store
            .discount_failure(key)
            .await
            .unwrap_or_else(|e| panic!("discount_failure: {e}"));
        assert_eq!(
            store.failures(key, now + 401).await.ok().map(|x| x.0),
            Some(0),
            "never below zero"
        );

        // Counting is atomic: many attempts at once each get their own count.
        let key = "login:account:concurrent";
        let counts = futures_util::future::join_all(
            (0..50).map(|_| store.count_failure(key, Duration::from_secs(60), now)),
        )
        .await;
        let mut counts: Vec<u64> = counts.into_iter().filter_map(Result::ok).collect();
        counts.sort_unstable();
        assert_eq!(counts, (1..=50).collect::<Vec<u64>>(), "each count once");
    }
}
