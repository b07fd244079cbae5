//! `/users`: create, read, replace, merge-patch, delete and list user profiles.
//!
//! Reads go through the two-level cache (L1 in process, L2 shared when configured); writes
//! commit to the store first and then store the committed row (or a tombstone) in the cache at
//! every level — with the Redis invalidation bus, before answering, every server's L1 has
//! dropped the old version. This server never serves a value older than its own last write. Every response to a read carries a strong `ETag` (`"v<version>"`);
//! writes honour `If-Match` and answer 412 when it is stale. Write responses carry the commit
//! token in `Strata-Commit` (and, for browsers, the `strata-read-after` cookie); a read that
//! sends it back in `Strata-Read-After` (or the cookie) is served from state at least that new —
//! read-your-writes across API servers and replicas.

use std::sync::Arc;
use tracing::Instrument as _;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;
use strata_cache::tiered::{Entry, TieredError};
use strata_core::user::{IdField, User, UserId, UserProfile};
use strata_store::{Precondition, ReadRequirement, StoreError, StoredUser, WriteReceipt};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

use crate::auth::Principal;
use crate::commit::{cache_entry, cache_key, read_requirement, with_commit};
use crate::edge_purge::{LIST_KEY, user_key};
use crate::idempotency::ReservedId;
use crate::problem::ApiError;
use crate::request::{EntityTags, JsonKind, entity_tags, etag, json_body, user_id};
use crate::state::{AppState, PATCH_LOCK_STRIPES};

/// Page size limits for `GET /users`.
pub const LIST_DEFAULT_LIMIT: u32 = 20;
pub const LIST_MIN_LIMIT: u32 = 1;
pub const LIST_MAX_LIMIT: u32 = 100;

/// How many times a PATCH is re-applied after losing a race with another writer.
pub const PATCH_ATTEMPTS: u32 = 16;

/// Loads a user through the cache. `None` when absent or deleted.
async fn load(
    state: &AppState,
    id: UserId,
    need: ReadRequirement,
) -> Result<Option<Entry>, ApiError> {
    let key = cache_key(id);
    if need.at_least.is_some() {
        // A read-after requirement goes to the store, which knows commit positions; the result
        // then refreshes the cache.
        let found = state.store.get(id, need).await?;
        return Ok(match found {
            Some(stored) => {
                let entry = cache_entry(&stored);
                state.cache.offer(&key, entry.clone()).await;
                Some(entry)
            }
            None => None,
        });
    }
    let store = state.store.clone();
    let loader = move || {
        let store = store.clone();
        async move {
            Ok::<_, StoreError>(store.get(id, ReadRequirement::ANY).await?.map(|s| {
                let entry = cache_entry(&s);
                (entry.version, entry.body.unwrap_or_default())
            }))
        }
    };
    let entry = state
        .cache
        .get_or_load(&key, loader)
        .instrument(tracing::info_span!("cache.get"))
        .await
        .map_err(|e| match e {
            TieredError::Load(e) => ApiError::from(clone_store_error(&e)),
            TieredError::Overloaded => ApiError::Unavailable(
                "too many reads are waiting for the database; retry shortly".into(),
            ),
        })?;
    Ok(Some(entry).filter(|e| e.body.is_some()))
}

fn clone_store_error(e: &Arc<StoreError>) -> StoreError {
    match e.as_ref() {
        StoreError::NotFound(id) => StoreError::NotFound(*id),
        StoreError::AlreadyExists(id) => StoreError::AlreadyExists(*id),
        StoreError::EmailTaken => StoreError::EmailTaken,
        StoreError::NoAccount(e) => StoreError::NoAccount(e.clone()),
        StoreError::VersionMismatch {
            id,
            expected,
            actual,
        } => StoreError::VersionMismatch {
            id: *id,
            expected: *expected,
            actual: *actual,
        },
        StoreError::NotYetVisible { wanted, current } => StoreError::NotYetVisible {
            wanted: *wanted,
            current: *current,
        },
        StoreError::Unavailable(s) => StoreError::Unavailable(s.clone()),
        StoreError::Corrupt { id, detail } => StoreError::Corrupt {
            id: *id,
            detail: detail.clone(),
        },
        StoreError::Unusable(s) => StoreError::Unusable(s.clone()),
        StoreError::Moved {
            what,
            to,
            map_version,
        } => StoreError::Moved {
            what: what.clone(),
            to: to.clone(),
            map_version: *map_version,
        },
    }
}

fn json_response(status: StatusCode, body: Bytes, version: u64) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        h.insert(header::ETAG, v);
    }
    // Profiles are public, but change: caches must revalidate (ETag makes that cheap).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Creates a user; the server assigns the id.
#[utoipa::path(post, path = "/users", tag = "users", security(("bearer" = []), ("cookie" = [], "csrf" = [])),
    params(crate::params::IdempotencyKey),
    request_body(content = crate::schema::UserInput, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `Location` names the new user", body = crate::schema::UserDoc,
            headers(("Location" = String, description = "`/users/{id}`"), ("ETag" = String, description = "`\"v1\"`"),
                    ("Strata-Commit" = u64, description = "The write's commit token, for `Strata-Read-After`"),
                    ("Idempotent-Replayed" = bool, description = "`true` on the stored answer to a repeated `Idempotency-Key`"))),
        (status = 400, description = "`malformed-json`: the body is not JSON; `unreadable-body`; `invalid-parameter`: a malformed `Idempotency-Key`", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::Unauthenticated,
        (status = 403, description = "`forbidden`: only an admin may create a profile without an account; `csrf`: a cookie-authenticated request without `X-CSRF-Token`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`idempotency-conflict`: a request with this `Idempotency-Key` is still running; see `Retry-After`", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before sending it again"))),
        crate::responses::BodyErrors,
        (status = 422, description = "`invalid-fields`: each field at fault, named by a JSON pointer; `idempotency-mismatch`: this `Idempotency-Key` was used for another request", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::ServerErrors,
    ))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    reserved: Option<axum::Extension<ReservedId>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    principal.require_admin("create a profile without an account (sign up with POST /accounts)")?;
    let doc = json_body(&headers, body, JsonKind::Json).await?;
    let profile = UserProfile::parse(&doc, IdField::Forbidden).map_err(ApiError::InvalidFields)?;
    // Under an Idempotency-Key every attempt creates the user with the id the key reserved.
    let reserved = reserved.map(|axum::Extension(ReservedId(id))| id);
    let id = match reserved {
        Some(id) => id,
        None => state
            .ids
            .next_id()
            .map_err(|e| ApiError::Unavailable(e.to_string()))?,
    };
    let user = User {
        id: UserId(id),
        profile,
    };
    let receipt = match state.store.create(&user).await {
        Err(StoreError::AlreadyExists(_)) if reserved.is_some() => {
            return created_before(&state, user.id).await;
        }
        other => other?,
    };
    let stored = StoredUser {
        user,
        version: receipt.version,
    };
    let entry = cache_entry(&stored);
    state
        .cache
        .write(&cache_key(stored.user.id), entry.clone())
        .await;
    // The list pages it now belongs on.
    state.edges.purge_lists();
    Ok(with_commit(created(UserId(id), entry), receipt))
}

/// `201 Created` with the user (its cache entry: the body and version), `ETag` and `Location`.
fn created(id: UserId, entry: Entry) -> Response {
    let mut r = json_response(
        StatusCode::CREATED,
        entry.body.unwrap_or_default(),
        entry.version,
    );
    if let Ok(v) = HeaderValue::from_str(&format!("/users/{id}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The answer to an attempt whose key's earlier attempt created the user and died before
/// answering: the user as stored now, as created.
async fn created_before(state: &AppState, id: UserId) -> Result<Response, ApiError> {
    let stored = state
        .store
        .get(id, ReadRequirement::ANY)
        .await?
        .ok_or_else(|| ApiError::Unavailable(format!("user {id} exists but cannot be read yet")))?;
    let mut r = created(id, cache_entry(&stored));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// Reads one user.
#[utoipa::path(get, path = "/users/{id}", tag = "users", security(()),
    params(crate::params::UserIdPath, crate::params::IfNoneMatch, crate::params::ReadAfter),
    responses(
        (status = 200, description = "The user", body = crate::schema::UserDoc,
            headers(("ETag" = String, description = "`\"v<version>\"`"))),
        (status = 304, description = "Not modified: `If-None-Match` names the current version",
            headers(("ETag" = String, description = "`\"v<version>\"`"))),
        (status = 400, description = "`invalid-user-id`: the id is not an unsigned 64-bit decimal; `invalid-parameter`: a malformed `If-None-Match` or `Strata-Read-After` (named in `errors[].parameter`)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`user-not-found`", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::ServerErrors,
    ))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = user_id(&raw)?;
    state.hot_keys.record(id.0);
    let need = read_requirement(&headers)?;
    let inm = entity_tags(&headers, header::IF_NONE_MATCH)?;
    let cached = load(&state, id, need)
        .await?
        .ok_or(ApiError::UserNotFound(id))?;
    let tag = etag(cached.version);
    if inm.is_some_and(|t| t.matches_weak(&tag)) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&tag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        r.headers_mut()
            .insert(header::VARY, HeaderValue::from_static(READ_VARY));
        edge_headers(&state, id, &mut r);
        return Ok(r);
    }
    let mut r = json_response(
        StatusCode::OK,
        cached.body.unwrap_or_default(),
        cached.version,
    );
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static(READ_VARY));
    edge_headers(&state, id, &mut r);
    Ok(r)
}

/// What a profile's answer tells the edges: its surrogate key, and how long they may keep it
/// and serve it stale (see [`crate::edge_purge`]).
fn edge_headers(state: &AppState, id: UserId, r: &mut Response) {
    state.edges.tag(r.headers_mut(), &user_key(id.0));
}

/// A read's answer depends on the read-your-writes token it was sent.
const READ_VARY: &str = "Strata-Read-After";

/// The precondition a write runs under, from `If-Match` and the current version.
fn precondition(
    if_match: &Option<EntityTags>,
    id: UserId,
    current: Option<u64>,
) -> Result<Precondition, ApiError> {
    match (if_match, current) {
        (None, _) => Ok(Precondition::None),
        (Some(_), None) => Err(ApiError::PreconditionFailed {
            id,
            current_version: None,
        }),
        (Some(tags), Some(v)) => {
            if tags.matches_strong(&etag(v)) {
                Ok(Precondition::VersionIs(v))
            } else {
                Err(ApiError::PreconditionFailed {
                    id,
                    current_version: Some(v),
                })
            }
        }
    }
}

/// The precondition of a PUT or DELETE. A single `"v<n>"` tag is handed to the store, which
/// checks it inside the write's transaction; anything else (`*`, several tags) is checked
/// against the current version first.
async fn write_precondition(
    state: &AppState,
    id: UserId,
    if_match: &Option<EntityTags>,
) -> Result<Precondition, ApiError> {
    match if_match {
        None => Ok(Precondition::None),
        Some(tags) => match tags.single_version() {
            Some(v) => Ok(Precondition::VersionIs(v)),
            None => {
                let current = state
                    .store
                    .get(id, ReadRequirement::ANY)
                    .await?
                    .map(|s| s.version);
                if current.is_none() {
                    return Err(ApiError::UserNotFound(id));
                }
                precondition(if_match, id, current)
            }
        },
    }
}

/// Replaces a user's whole profile.
#[utoipa::path(put, path = "/users/{id}", tag = "users", security(("bearer" = []), ("cookie" = [], "csrf" = [])),
    params(crate::params::UserIdPath, crate::params::IfMatch),
    request_body(content = crate::schema::UserInput, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced", body = crate::schema::UserDoc,
            headers(("ETag" = String, description = "`\"v<version>\"`"),
                    ("Strata-Commit" = u64, description = "The write's commit token, for `Strata-Read-After`"))),
        (status = 400, description = "`invalid-user-id`; `invalid-parameter`: a malformed `If-Match`; `malformed-json`; `unreadable-body`", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::Unauthenticated,
        (status = 403, description = "`forbidden`: not your profile, and you are not an admin; `csrf`: a cookie-authenticated request without `X-CSRF-Token`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`user-not-found`: ids are never chosen by clients, so a user must exist to be replaced", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 412, description = "`precondition-failed`: the user is not at the version `If-Match` names", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::BodyErrors,
        (status = 422, description = "`invalid-fields`: each field at fault, named by a JSON pointer (an `id` in the body must be the path's)", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::ServerErrors,
    ))]
pub async fn replace(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = user_id(&raw)?;
    principal.may_change(id)?;
    let if_match = entity_tags(&headers, header::IF_MATCH)?;
    let doc = json_body(&headers, body, JsonKind::Json).await?;
    let profile =
        UserProfile::parse(&doc, IdField::MayEqual(id)).map_err(ApiError::InvalidFields)?;
    let pre = write_precondition(&state, id, &if_match).await?;
    let receipt = state.store.replace(id, &profile, pre).await?;
    Ok(with_commit(
        commit_and_render(&state, User { id, profile }, receipt).await,
        receipt,
    ))
}

async fn commit_and_render(state: &AppState, user: User, receipt: WriteReceipt) -> Response {
    let id = user.id;
    let entry = cache_entry(&StoredUser {
        user,
        version: receipt.version,
    });
    state.cache.write(&cache_key(id), entry.clone()).await;
    state.edges.purge_user(id.0);
    json_response(
        StatusCode::OK,
        entry.body.unwrap_or_default(),
        receipt.version,
    )
}

/// Applies a JSON Merge Patch (RFC 7396).
#[utoipa::path(patch, path = "/users/{id}", tag = "users", security(("bearer" = []), ("cookie" = [], "csrf" = [])),
    params(crate::params::UserIdPath, crate::params::IfMatch, crate::params::IdempotencyKey),
    request_body(description = "A JSON Merge Patch (RFC 7396) of the user", content(
        (crate::schema::UserPatch = "application/merge-patch+json"),
        (crate::schema::UserPatch = "application/json"))),
    responses(
        (status = 200, description = "Patched", body = crate::schema::UserDoc,
            headers(("ETag" = String, description = "`\"v<version>\"`"),
                    ("Strata-Commit" = u64, description = "The write's commit token, for `Strata-Read-After`"),
                    ("Idempotent-Replayed" = bool, description = "`true` on the stored answer to a repeated `Idempotency-Key`"))),
        (status = 400, description = "`invalid-user-id`; `invalid-parameter`: a malformed `If-Match` or `Idempotency-Key`; `malformed-json`; `unreadable-body`", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::Unauthenticated,
        (status = 403, description = "`forbidden`: not your profile, and you are not an admin; `csrf`: a cookie-authenticated request without `X-CSRF-Token`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`user-not-found`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`idempotency-conflict`: a request with this `Idempotency-Key` is still running; see `Retry-After`", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before sending it again"))),
        (status = 412, description = "`precondition-failed`: the user is not at the version `If-Match` names", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::BodyErrors,
        (status = 422, description = "`invalid-fields`: the patched user would be invalid; each field at fault, named by a JSON pointer; `idempotency-mismatch`: this `Idempotency-Key` was used for another request", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::ServerErrors,
    ))]
pub async fn patch(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = user_id(&raw)?;
    principal.may_change(id)?;
    let if_match = entity_tags(&headers, header::IF_MATCH)?;
    let patch_doc = json_body(&headers, body, JsonKind::MergePatch).await?;
    // Read-modify-write under optimistic concurrency: the store applies the result only if
    // the user is still at the version the patch was applied to. Without If-Match a lost race
    // is retried on the fresh row; with If-Match it is the client's 412.
    // Patches of one user on this server take turns (a striped lock), so the retries below
    // only handle races with other servers.
    let _turn = state.patch_locks[(id.0 % PATCH_LOCK_STRIPES as u64) as usize]
        .lock()
        .await;
    for attempt in 0..PATCH_ATTEMPTS {
        if attempt > 0 {
            // Back off a little more on each lost race (1, 2, 4 … 32 ms).
            tokio::time::sleep(std::time::Duration::from_millis(1 << attempt.min(5))).await;
        }
        let current = state
            .store
            .get(id, ReadRequirement::ANY)
            .await?
            .ok_or(ApiError::UserNotFound(id))?;
        precondition(&if_match, id, Some(current.version))?;
        let mut doc: Value = current.user.to_value();
        json_patch::merge(&mut doc, &patch_doc);
        let profile =
            UserProfile::parse(&doc, IdField::MayEqual(id)).map_err(ApiError::InvalidFields)?;
        match state
            .store
            .replace(id, &profile, Precondition::VersionIs(current.version))
            .await
        {
            Ok(receipt) => {
                return Ok(with_commit(
                    commit_and_render(&state, User { id, profile }, receipt).await,
                    receipt,
                ));
            }
            Err(StoreError::VersionMismatch { .. }) if if_match.is_none() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Unavailable(format!(
        "user {id} is being changed concurrently; retry"
    )))
}

/// Deletes a user.
#[utoipa::path(delete, path = "/users/{id}", tag = "users", security(("bearer" = []), ("cookie" = [], "csrf" = [])),
    params(crate::params::UserIdPath, crate::params::IfMatch),
    responses(
        (status = 204, description = "Deleted, with its account, sessions and photo",
            headers(("Strata-Commit" = u64, description = "The write's commit token, for `Strata-Read-After`"))),
        (status = 400, description = "`invalid-user-id`; `invalid-parameter`: a malformed `If-Match`", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::Unauthenticated,
        (status = 403, description = "`forbidden`: not your profile, and you are not an admin; `csrf`: a cookie-authenticated request without `X-CSRF-Token`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`user-not-found`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 412, description = "`precondition-failed`: the user is not at the version `If-Match` names", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::ServerErrors,
    ))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = user_id(&raw)?;
    principal.may_change(id)?;
    let if_match = entity_tags(&headers, header::IF_MATCH)?;
    let pre = write_precondition(&state, id, &if_match).await?;
    let receipt = state.store.delete(id, pre).await?;
    state
        .cache
        .write(&cache_key(id), Entry::absent(receipt.version))
        .await;
    state.edges.purge_user(id.0);
    // The user's photo goes with them (and an upload still being processed is dropped).
    if let Some(photos) = &state.photos
        && let Err(e) = photos.delete(id.0).await
    {
        tracing::warn!(error = %e, user = %id, "the user is deleted but their photo could not be; DELETE /users/{{id}}/photo removes it");
    }
    // The account went with the user; its sessions end too.
    if let Err(e) = state
        .auth
        .sessions
        .revoke_all(id, strata_store::accounts::now_ms())
        .await
    {
        tracing::warn!(error = %e, user = %id, "the user is deleted but its sessions could not be revoked; they end when their access tokens fail the account check");
    }
    Ok(with_commit(StatusCode::NO_CONTENT.into_response(), receipt))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size.
    #[param(schema_with = limit_schema)]
    limit: Option<String>,
    /// The `nextCursor` of the previous page; leave it out for the first page.
    #[param(schema_with = cursor_schema)]
    cursor: Option<String>,
}

const CURSOR_PREFIX: &str = "after:";

#[derive(serde::Serialize)]
struct PageBody<'a> {
    users: Vec<&'a User>,
    #[serde(rename = "nextCursor")]
    next_cursor: Option<String>,
}

fn encode_cursor(after: UserId) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{after}"))
}

fn decode_cursor(raw: &str) -> Result<UserId, ApiError> {
    let bad = || {
        ApiError::InvalidParameter {
        parameter: "cursor",
        detail: "is not a cursor this API issued; use the nextCursor value of a previous page, or leave it out for the first page".into(),
    }
    };
    let bytes = URL_SAFE_NO_PAD.decode(raw.as_bytes()).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix(CURSOR_PREFIX)
        .and_then(|n| n.parse::<UserId>().ok())
        .ok_or_else(bad)
}

/// `limit` in the document: the page sizes the handler takes.
fn limit_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(LIST_MIN_LIMIT))
        .maximum(Some(LIST_MAX_LIMIT))
        .default(Some(LIST_DEFAULT_LIMIT.into()))
        .build()
}

/// `cursor` in the document: exactly the cursors [`encode_cursor`] makes for ids of up to 19
/// digits (every id a server issues: Snowflakes are below 2^63), each of which
/// [`decode_cursor`] takes back. Base64 turns 3 bytes into 4 characters, and the prefix is whole
/// groups, so each group of 3 digits after it encodes alone; and since every ASCII digit is
/// `0x3_`, each character of a group depends on one digit only: the first two on the first
/// digit, the third on the second, the last on the third.
fn cursor_pattern() -> String {
    let encode = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let digits = || b'0'..=b'9';
    let alternatives = |f: &dyn Fn(u8) -> String| {
        let all: Vec<String> = digits().map(f).collect();
        format!("(?:{})", all.join("|"))
    };
    let class = |f: &dyn Fn(u8) -> char| format!("[{}]", digits().map(f).collect::<String>());
    let nth = |s: String, n: usize| s.chars().nth(n).unwrap_or('=');
    let first = alternatives(&|x| encode(&[x, b'0', b'0'])[..2].to_owned());
    let second = class(&|y| nth(encode(&[b'0', y, b'0']), 2));
    let third = class(&|z| nth(encode(&[b'0', b'0', z]), 3));
    let group = format!("(?:{first}{second}{third})");
    let one = alternatives(&|x| encode(&[x]));
    let two = format!("{first}{}", class(&|y| nth(encode(&[b'0', y]), 2)));
    // The most digits that always fit a u64.
    let most = u64::MAX.to_string().len() - 1;
    format!(
        "^{}(?:{group}{{1,{}}}|{group}{{0,{}}}{one}|{group}{{0,{}}}{two})$",
        encode(CURSOR_PREFIX.as_bytes()),
        most / 3,
        (most - 1) / 3,
        (most - 2) / 3
    )
}

fn cursor_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(cursor_pattern()))
        .build()
}

/// Lists users in ascending id order, a page at a time. The cursor names the last id of the
/// previous page, so pages stay stable while users are added or removed.
#[utoipa::path(get, path = "/users", tag = "users", security(()),
    params(ListQuery, crate::params::ReadAfter),
    responses(
        (status = 200, description = "A page of users", body = crate::schema::UserPage,
            headers(("Link" = String, description = "`</users?limit=…&cursor=…>; rel=\"next\"` unless this is the last page"))),
        (status = 400, description = "`invalid-parameter`: a bad `limit`, `cursor` or `Strata-Read-After` (named in `errors[].parameter`)", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::ServerErrors,
    ))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::InvalidParameter {
        parameter: "query",
        detail: e.body_text(),
    })?;
    let limit = match q.limit.as_deref() {
        None => LIST_DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if (LIST_MIN_LIMIT..=LIST_MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::InvalidParameter {
                    parameter: "limit",
                    detail: format!(
                        "must be a whole number from {LIST_MIN_LIMIT} to {LIST_MAX_LIMIT} (got {raw:?})"
                    ),
                });
            }
        },
    };
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let need = read_requirement(&headers)?;
    let page = state.store.list(after, limit, need).await?;
    let next = page.next_after.map(encode_cursor);
    let users: Vec<&User> = page.users.iter().map(|s| &s.user).collect();
    // Serialized from a struct, not a `Value`, so each user keeps the canonical field order.
    let mut r = Json(PageBody {
        users,
        next_cursor: next.clone(),
    })
    .into_response();
    if let Some(next) = &next
        && let Ok(v) = HeaderValue::from_str(&format!(
            "</users?limit={limit}&cursor={next}>; rel=\"next\""
        ))
    {
        r.headers_mut().insert(header::LINK, v);
    }
    // Kept by the edges like a profile, and purged by any user's write.
    let h = r.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static(READ_VARY));
    state.edges.tag(h, LIST_KEY);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_cursors_are_refused() {
        let c = encode_cursor(UserId(123456789));
        assert_eq!(decode_cursor(&c).ok(), Some(UserId(123456789)));
        assert!(decode_cursor("not-a-cursor!").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("before:5")).is_err());
    }
}
