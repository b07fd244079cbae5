//! The parameters that several operations share, for their annotations to name: the path ids
//! and the request headers the handlers read. Each schema states what its parser accepts: user
//! ids are any u64 ([`crate::request::user_id`]), session ids are as long as the ids
//! [`crate::auth::new_session_id`] makes, commit tokens end at `strata_store::CommitToken::MAX`
//! ([`crate::commit::parse_token`]), and entity tags are what [`crate::request::entity_tags`]
//! accepts (a test below runs the pattern against it).
//!
//! Each parameter's description is written by its schema function: utoipa keeps no field doc
//! comment alongside `schema_with`, so the document lifts the schema's description onto the
//! parameter (see `openapi::document`).

use strata_store::CommitToken;
use utoipa::IntoParams;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

/// An entity tag as RFC 9110 spells it, without the commas the list splits on.
const ENTITY_TAG: &str = r#"(?:W/)?"[\x21\x23-\x2b\x2d-\x7e]*""#;

/// `If-Match` / `If-None-Match`: `*`, or a comma-separated list of entity tags.
pub fn entity_tags_pattern() -> String {
    let item = format!(r"(?:\*|{ENTITY_TAG})");
    format!(r"^[ \t]*{item}(?:[ \t]*,[ \t]*{item})*[ \t]*$")
}

fn entity_tags(description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(entity_tags_pattern()))
        .build()
}

fn if_none_match() -> Object {
    entity_tags(
        "The ETag(s) the client holds (`\"v<version>\"`, weak tags compare too, or `*`): 304 when one is current. Anything else is a 400 naming this header.",
    )
}

fn if_match() -> Object {
    entity_tags(
        "Write only if the user is still at this ETag (`\"v<version>\"`; strong comparison; `*`: if the user exists): 412 otherwise. Anything else is a 400 naming this header.",
    )
}

/// A session id: as many hexadecimal digits as the ids sessions get.
pub fn session_id_pattern() -> String {
    format!("^[0-9a-fA-F]{{{}}}$", crate::auth::new_session_id().len())
}

fn session_id() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "Session id: hexadecimal digits, as `GET /sessions` lists them.",
        ))
        .pattern(Some(session_id_pattern()))
        .build()
}

/// A commit token: a position in the store's commit order, as `Strata-Commit` gives it.
pub fn commit_token() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .description(Some(
            "Serve state at least as new as this commit: a `Strata-Commit` value (decimal). A read the data tier cannot serve that new yet answers 503 with `Retry-After`, never older data; a value that is not a decimal number from 0 to the last position a store can reach answers 400 naming this header. Without it, the `strata-read-after` cookie (if any) is used.",
        ))
        .minimum(Some(0u64))
        .maximum(Some(CommitToken::MAX.0))
        .build()
}

fn user_id_path() -> Object {
    let mut schema = crate::schema::user_id();
    schema.description = Some("User id: an unsigned 64-bit integer in decimal, such as 12.".into());
    schema
}

/// The user of `/users/{id}` and `/accounts/{id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct UserIdPath {
    #[param(schema_with = user_id_path)]
    id: u64,
}

/// The session of `/sessions/{id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct SessionIdPath {
    #[param(schema_with = session_id)]
    id: String,
}

/// Read-your-writes.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct ReadAfter {
    #[param(rename = "Strata-Read-After", schema_with = commit_token)]
    strata_read_after: Option<u64>,
}

/// A conditional read.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IfNoneMatch {
    #[param(rename = "If-None-Match", schema_with = if_none_match)]
    if_none_match: Option<String>,
}

/// A conditional write.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IfMatch {
    #[param(rename = "If-Match", schema_with = if_match)]
    if_match: Option<String>,
}

/// `Idempotency-Key` in its unquoted form: printable ASCII, not starting with a quote (that is
/// the quoted form, which `idempotency::parse_key` also takes), at most the longest key kept.
pub fn idempotency_key_pattern() -> String {
    let rest = crate::idempotency::KEY_MAX_CHARS - 2;
    format!("^[!#-~](?:[ -~]{{0,{rest}}}[!-~])?$")
}

fn idempotency_key() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "Execute this write once: a repeat with the same key and request gets the first answer again (with `Idempotent-Replayed: true`) for 24 h, on any server; the same key with another request is a 422, while the first is still running a 409. 1 to {} printable ASCII characters, bare or as a quoted string.",
            crate::idempotency::KEY_MAX_CHARS
        )))
        .pattern(Some(idempotency_key_pattern()))
        .build()
}

/// A write executed once per key (docs/api.md, "Idempotency-Key").
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKey {
    #[param(rename = "Idempotency-Key", schema_with = idempotency_key)]
    idempotency_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};
    use proptest::prelude::*;

    use super::*;

    /// A pattern without its anchors, for proptest to generate from.
    fn body(pattern: &str) -> String {
        pattern
            .trim_start_matches('^')
            .trim_end_matches('$')
            .to_owned()
    }

    proptest! {
        #[test]
        fn every_entity_tag_list_the_document_allows_is_parsed(
            value in proptest::string::string_regex(&body(&entity_tags_pattern())).expect("regex")
        ) {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_MATCH, HeaderValue::from_str(&value).expect("ascii"));
            prop_assert!(crate::request::entity_tags(&headers, header::IF_MATCH).is_ok(), "{value:?}");
        }

        #[test]
        fn every_idempotency_key_the_document_allows_is_taken(
            value in proptest::string::string_regex(&body(&idempotency_key_pattern())).expect("regex")
        ) {
            let header = HeaderValue::from_str(&value).expect("ascii");
            prop_assert!(crate::idempotency::parse_key(&header).is_ok(), "{value:?}");
        }
    }
}
