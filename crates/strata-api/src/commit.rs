//! What `/users` and `/accounts` share about a write that commits a user: the key under which
//! the write refreshes the cache, and the commit token its answer carries — in `Strata-Commit`
//! and, for browsers, in the `strata-read-after` cookie — which a later read sends back (in
//! `Strata-Read-After` or the cookie) to be served state at least that new.

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;
use strata_core::user::UserId;
use strata_store::WriteReceipt;

/// Response header carrying the commit token of a write.
pub const COMMIT_HEADER: HeaderName = HeaderName::from_static("strata-commit");
/// Request header asking a read to reflect at least this commit.
pub const READ_AFTER_HEADER: HeaderName = HeaderName::from_static("strata-read-after");

/// The cookie that carries the last commit token for browsers, which cannot be asked to echo
/// a header.
pub const READ_AFTER_COOKIE: &str = "strata-read-after";
/// How long the cookie lives: long enough to cover replica lag, short enough to stop forcing
/// fresh reads soon after the last write.
const READ_AFTER_COOKIE_SECS: u32 = 60;

/// The cache key of a user.
pub fn cache_key(id: UserId) -> String {
    format!("user:{id}")
}

/// A write's answer: never stored by any cache, and carrying the write's commit token.
pub(crate) fn with_commit(mut r: Response, receipt: WriteReceipt) -> Response {
    // A write's answer carries this client's commit cookie: never stored by any cache.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let token = receipt.commit.0;
    if let Ok(v) = HeaderValue::from_str(&token.to_string()) {
        r.headers_mut().insert(COMMIT_HEADER, v);
    }
    let cookie = format!(
        "{READ_AFTER_COOKIE}={token}; Path=/; Max-Age={READ_AFTER_COOKIE_SECS}; HttpOnly; SameSite=Lax"
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}
