//! What the SQL engines share about users as rows: ids as signed integers, profiles as JSON
//! text and account emails as text, both read back through the domain parsers, and pages.

use strata_core::email::Email;
use strata_core::user::{User, UserId, UserProfile};

use crate::{Page, StoreError, StoredUser};

/// SQL integers are signed: ids at or above 2^63 cannot be stored (and are never issued).
pub(crate) fn sql_id(id: UserId) -> Option<i64> {
    i64::try_from(id.0).ok()
}

/// The id a listing starts after; `None` when `after` is beyond the storable range, so nothing
/// can follow it.
pub(crate) fn list_start(after: Option<UserId>) -> Option<i64> {
    match after {
        None => Some(-1),
        Some(id) => sql_id(id),
    }
}

/// A stored row as a user. A profile that fails the domain parser is `Corrupt`, never served.
pub(crate) fn decode(id: i64, version: i64, profile: &str) -> Result<StoredUser, StoreError> {
    let uid = UserId(id as u64);
    let profile: UserProfile = serde_json::from_str(profile).map_err(|e| StoreError::Corrupt {
        id: uid,
        detail: e.to_string(),
    })?;
    Ok(StoredUser {
        user: User { id: uid, profile },
        version: version as u64,
    })
}

/// A stored account email as an [`Email`]. One that fails the parser is `Corrupt`, never
/// served.
pub(crate) fn decode_email(user: UserId, stored: &str) -> Result<Email, StoreError> {
    Email::parse(stored).map_err(|why| StoreError::Corrupt {
        id: user,
        detail: format!("the account's email is not an email address: it {why}"),
    })
}

impl Page {
    /// A page of up to `limit` users: when it is full, more may follow its last id.
    pub(crate) fn of(users: Vec<StoredUser>, limit: u32) -> Self {
        let next_after = (limit > 0 && users.len() == limit as usize)
            .then(|| users.last().map(|u| u.user.id))
            .flatten();
        Page { users, next_after }
    }
}
