//! What `/users` and `/accounts` share about a write that commits a user: the key under which
//! the write refreshes the cache, and the commit token its answer carries — in `Strata-Commit`
//! and, for browsers, in the `strata-read-after` cookie — which a later read sends back (in
//! `Strata-Read-After` or the cookie) to be served state at least that new.
//!
//! A token is a decimal number from 0 to [`CommitToken::MAX`], the last position any store can
//! reach. A malformed or impossible `Strata-Read-After` is the caller's 400, naming the header; a
//! malformed cookie is ignored (a browser cannot fix it). A well-formed token that the store has
//! not reached yet is the store's to answer (it waits briefly, then 503 + `Retry-After`).

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::Response;
use strata_core::user::UserId;
use strata_store::{CommitToken, ReadRequirement, WriteReceipt};

use crate::problem::ApiError;

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

/// The name `Strata-Read-After` has in problems.
const READ_AFTER_PARAMETER: &str = "Strata-Read-After";

/// Parses a commit token as a client sends it back; the error completes "`Strata-Read-After` …".
pub fn parse_token(raw: &str) -> Result<CommitToken, String> {
    let max = CommitToken::MAX.0;
    let text = raw.trim();
    let shown: String = text.chars().take(40).collect();
    if text.is_empty() {
        return Err(format!(
            "is empty: send a Strata-Commit value (a decimal number from 0 to {max}), or leave the header out"
        ));
    }
    if let Some(rest) = text.strip_prefix('-')
        && !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "{shown:?} is negative: commit tokens are decimal numbers from 0 to {max}, as returned in Strata-Commit"
        ));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{shown:?} is not a commit token: send a Strata-Commit value, a decimal number from 0 to {max}"
        ));
    }
    match text.parse::<u64>() {
        Ok(n) if n <= max => Ok(CommitToken(n)),
        _ => Err(format!(
            "{shown:?} is beyond any commit position (at most {max}): send a Strata-Commit value"
        )),
    }
}

/// The token of the `strata-read-after` cookie, if the request has a well-formed one.
fn cookie_token(headers: &HeaderMap) -> Option<CommitToken> {
    crate::auth::cookies(headers, READ_AFTER_COOKIE)
        .filter_map(|value| parse_token(value).ok())
        .max()
}

/// What a read must see: the `Strata-Read-After` header, else the cookie (a malformed cookie is
/// ignored — a browser cannot fix it — while a malformed header is the caller's error).
pub fn read_requirement(headers: &HeaderMap) -> Result<ReadRequirement, ApiError> {
    let invalid = |detail: String| ApiError::InvalidParameter {
        parameter: READ_AFTER_PARAMETER,
        detail,
    };
    match headers.get(&READ_AFTER_HEADER) {
        None => Ok(cookie_token(headers)
            .map(ReadRequirement::at_least)
            .unwrap_or(ReadRequirement::ANY)),
        Some(v) => {
            let text = v.to_str().map_err(|_| {
                invalid(format!(
                    "is not a commit token: send a Strata-Commit value, a decimal number from 0 to {}",
                    CommitToken::MAX.0
                ))
            })?;
            parse_token(text)
                .map(ReadRequirement::at_least)
                .map_err(invalid)
        }
    }
}

/// The cache key of a user.
pub fn cache_key(id: UserId) -> String {
    format!("{USER_KEY_PREFIX}{id}")
}

/// What every user's cache key starts with.
pub const USER_KEY_PREFIX: &str = "user:";

/// The cached form of a stored user: its JSON representation at its version.
pub(crate) fn cache_entry(stored: &strata_store::StoredUser) -> strata_cache::tiered::Entry {
    let body = serde_json::to_vec(&stored.user).unwrap_or_default();
    strata_cache::tiered::Entry::present(stored.version, body.into())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            READ_AFTER_HEADER,
            HeaderValue::from_str(value).expect("ascii"),
        );
        h
    }

    #[test]
    fn read_after_tokens_are_decimal_positions_up_to_the_last_one_a_store_can_reach() {
        let max = CommitToken::MAX.0;
        for (raw, token) in [("0", 0), (" 17 ", 17), (&max.to_string()[..], max)] {
            assert_eq!(parse_token(raw), Ok(CommitToken(token)), "{raw:?}");
        }
        for (raw, says) in [
            ("", "is empty"),
            ("-1", "is negative"),
            ("soon", "is not a commit token"),
            ("1.5", "is not a commit token"),
            ("+3", "is not a commit token"),
            ("9223372036854775808", "is beyond any commit position"),
            ("18446744073709551616", "is beyond any commit position"),
            (
                "99999999999999999999999999",
                "is beyond any commit position",
            ),
        ] {
            let detail = parse_token(raw).expect_err(raw);
            assert!(detail.contains(says), "{raw:?}: {detail}");
        }
        assert_eq!(max, i64::MAX as u64, "SQLite's INTEGER bounds the sequence");
    }

    #[test]
    fn a_bad_header_is_a_400_naming_it_and_a_bad_cookie_is_ignored() {
        let problem = read_requirement(&header("9223372036854775808"))
            .expect_err("beyond u63")
            .problem();
        assert_eq!(problem.status, 400);
        assert_eq!(
            problem.errors[0].parameter.as_deref(),
            Some("Strata-Read-After")
        );
        assert!(
            problem.detail.contains("beyond any commit position"),
            "{}",
            problem.detail
        );
        let mut cookies = HeaderMap::new();
        cookies.insert(
            header::COOKIE,
            HeaderValue::from_static("strata-read-after=9223372036854775808; strata-read-after=5"),
        );
        assert_eq!(
            read_requirement(&cookies).ok(),
            Some(ReadRequirement::at_least(CommitToken(5)))
        );
        cookies.insert(
            header::COOKIE,
            HeaderValue::from_static("strata-read-after=-3"),
        );
        assert_eq!(read_requirement(&cookies).ok(), Some(ReadRequirement::ANY));
    }
}
