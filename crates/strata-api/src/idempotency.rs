//! `Idempotency-Key` (IETF draft "The Idempotency-Key HTTP Header Field"): a `POST` or `PATCH`
//! that carries a key is executed once per key and user, whichever API server each attempt
//! reaches, and every repeat gets the first answer. docs/api.md states the guarantee.
//!
//! The middleware ([`per_user`] for authenticated routes, [`anonymous`] for sign-up) claims the
//! key in the shared session store ([`strata_store::idempotency`]) before the handler runs:
//! - first attempt: the handler runs with a [`ReservedId`] (the id a created resource takes —
//!   the same for every attempt under the key, so a re-execution recreates the same resource,
//!   never a second one); its answer is kept for [`RECORD_TTL`] unless it is a 5xx (then the
//!   claim is given back at once so that a retry can run) or its body is over
//!   [`MAX_STORED_BODY`] (given back too);
//! - a repeat while the first runs: 409 `idempotency-conflict` with `Retry-After: 1`;
//! - a repeat after: the kept answer (status, the headers in [`REPLAYED_HEADERS`], body) with
//!   `Idempotent-Replayed: true`;
//! - the key with another method, path, media type or body: 422 `idempotency-mismatch`.
//!
//! A claim holds for [`CLAIM_TTL`], longer than any request may run ([`REQUEST_TIMEOUT`]): a
//! server killed mid-request leaves a claim that lapses then, and the next attempt takes it over.
//! A request dropped without an answer (timeout, panic) gives its claim back at once.
//!
//! Metric: `strata_idempotency_total{outcome=executed|replayed|conflict|mismatch}`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use strata_store::accounts::{SessionStore, now_ms};
use strata_store::idempotency::{Begin, Claim, StoredResponse};

use crate::auth::{authenticate, random_b64};
use crate::observe::REQUEST_TIMEOUT;
use crate::problem::ApiError;
use crate::request::BODY_LIMIT_BYTES;
use crate::state::AppState;

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set (`true`) on an answer replayed from the store.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// How long a request's outcome is kept.
pub const RECORD_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a claim holds: longer than a request may take, so a live request never loses it.
pub const CLAIM_TTL: Duration = Duration::from_secs(REQUEST_TIMEOUT.as_secs() + 5);
/// Largest response body kept for replay.
pub const MAX_STORED_BODY: usize = 64 * 1024;
/// Longest key accepted, in characters.
pub const KEY_MAX_CHARS: usize = 255;
/// The response headers a replay carries (others, such as `Set-Cookie`, are never kept).
pub const REPLAYED_HEADERS: &[&str] = &[
    "content-type",
    "location",
    "etag",
    "cache-control",
    "strata-commit",
];

/// The id a resource created by this request takes: the same for every attempt under one key.
/// Handlers that create a resource use it instead of a fresh id when present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservedId(pub u64);

fn bad_key(detail: &str) -> ApiError {
    ApiError::InvalidParameter {
        parameter: "Idempotency-Key",
        detail: detail.into(),
    }
}

/// The key from the header's value: an sf-string (`"…"`, with `\"` and `\\` escapes) or the
/// bare text, 1 to 255 printable ASCII characters.
pub fn parse_key(raw: &HeaderValue) -> Result<String, ApiError> {
    const RULE: &str = "must be 1 to 255 printable ASCII characters, quoted (\"…\") or not";
    let text = raw.to_str().map_err(|_| bad_key(RULE))?.trim();
    let key = match text.strip_prefix('"') {
        Some(rest) => {
            let inner = rest.strip_suffix('"').ok_or_else(|| bad_key(RULE))?;
            let mut key = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(e @ ('"' | '\\')) => key.push(e),
                        _ => return Err(bad_key(RULE)),
                    },
                    '"' => return Err(bad_key(RULE)),
                    c => key.push(c),
                }
            }
            key
        }
        None => text.to_owned(),
    };
    let printable = key.chars().all(|c| (' '..='~').contains(&c));
    if key.is_empty() || key.chars().count() > KEY_MAX_CHARS || !printable {
        return Err(bad_key(RULE));
    }
    Ok(key)
}

/// SHA-256 (hex) of what makes two requests the same: method, path and query, media type, body.
pub fn fingerprint(method: &Method, path: &str, content_type: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [
        method.as_str().as_bytes(),
        path.as_bytes(),
        content_type.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn count(outcome: &'static str) {
    metrics::counter!("strata_idempotency_total", "outcome" => outcome).increment(1);
}

/// For routes that need a principal: the key is scoped to the authenticated user. A request
/// that does not authenticate goes on to the handler, which refuses it.
pub async fn per_user(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !applies(&req) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let scope = match authenticate(&state.auth, &parts).await {
        Ok(p) => {
            let scope = format!("u{}", p.user);
            // The handler's `Principal` is this one: the request is not authenticated twice.
            parts.extensions.insert(p);
            scope
        }
        Err(_) => return next.run(Request::from_parts(parts, body)).await,
    };
    guard(&state, &scope, Request::from_parts(parts, body), next)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// For routes anyone may call (sign-up): one scope for all; the fingerprint (which covers the
/// whole body) keeps one client's key from answering another's request.
pub async fn anonymous(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !applies(&req) {
        return next.run(req).await;
    }
    guard(&state, "anon", req, next)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

fn applies(req: &Request) -> bool {
    matches!(*req.method(), Method::POST | Method::PATCH)
        && req.headers().contains_key(IDEMPOTENCY_KEY)
}

/// Reads the request body (it is needed for the fingerprint), within the handlers' limit.
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, BODY_LIMIT_BYTES)
        .await
        .map_err(|e| {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return ApiError::PayloadTooLarge {
                        limit: BODY_LIMIT_BYTES,
                    };
                }
                source = s.source();
            }
            ApiError::BodyRead(e.to_string())
        })
}

/// Gives the claim back when the request ends without an outcome stored or given back: the
/// handler panicked, or the request was dropped (its time ran out).
struct ClaimGuard {
    store: Arc<dyn SessionStore>,
    key: String,
    owner: String,
    armed: bool,
}

impl ClaimGuard {
    async fn abandon(mut self) {
        self.armed = false;
        if let Err(e) = self.store.abandon_idempotent(&self.key, &self.owner).await {
            tracing::warn!(error = %e, "an idempotency claim could not be given back; it lapses by itself");
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (store, key, owner) = (self.store.clone(), self.key.clone(), self.owner.clone());
            rt.spawn(async move {
                let _ = store.abandon_idempotent(&key, &owner).await;
            });
        }
    }
}

async fn guard(
    state: &AppState,
    scope: &str,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let mut keys = req.headers().get_all(IDEMPOTENCY_KEY).iter();
    let raw = keys.next().ok_or_else(|| bad_key("is missing"))?;
    if keys.next().is_some() {
        return Err(bad_key("must be sent once"));
    }
    let key = format!("{scope}:{}", parse_key(raw)?);
    let (mut parts, body) = req.into_parts();
    crate::request::refuse_declared_oversize(&parts.headers)?;
    let body = read_body(body).await?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let claim = Claim {
        fingerprint: fingerprint(&parts.method, path, content_type, &body),
        owner: random_b64(16),
        resource_id: state
            .ids
            .next_id()
            .map_err(|e| ApiError::Unavailable(e.to_string()))?,
        now_ms: now_ms(),
        claim_ttl: CLAIM_TTL,
        record_ttl: RECORD_TTL,
    };
    let store = state.auth.sessions.clone();
    let reserved = match store.begin_idempotent(&key, &claim).await? {
        Begin::Started { resource_id } => resource_id,
        Begin::InProgress => {
            count("conflict");
            return Err(ApiError::IdempotencyConflict);
        }
        Begin::Mismatch => {
            count("mismatch");
            return Err(ApiError::IdempotencyMismatch);
        }
        Begin::Done(stored) => {
            count("replayed");
            return Ok(replay(stored));
        }
    };
    count("executed");
    let claim_guard = ClaimGuard {
        store: store.clone(),
        key: key.clone(),
        owner: claim.owner.clone(),
        armed: true,
    };
    parts.extensions.insert(ReservedId(reserved));
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    if response.status().is_server_error() {
        // The server's own failure: let a retry run the request again.
        claim_guard.abandon().await;
        return Ok(response);
    }
    let (head, body) = response.into_parts();
    let small = body
        .size_hint()
        .exact()
        .is_some_and(|n| n as usize <= MAX_STORED_BODY);
    if !small {
        claim_guard.abandon().await;
        return Ok(Response::from_parts(head, body));
    }
    let bytes = match axum::body::to_bytes(body, MAX_STORED_BODY).await {
        Ok(b) => b,
        Err(e) => {
            claim_guard.abandon().await;
            return Err(ApiError::Internal(format!("a response body failed: {e}")));
        }
    };
    let stored = StoredResponse {
        status: head.status.as_u16(),
        headers: REPLAYED_HEADERS
            .iter()
            .filter_map(|name| {
                let v = head.headers.get(*name)?.to_str().ok()?;
                Some(((*name).to_owned(), v.to_owned()))
            })
            .collect(),
        body: bytes.to_vec(),
    };
    match store.finish_idempotent(&key, &claim.owner, &stored).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!("an idempotency claim lapsed before its request finished"),
        Err(e) => {
            tracing::warn!(error = %e, "an idempotent request's answer could not be kept; its claim lapses by itself")
        }
    }
    let mut done = claim_guard;
    done.armed = false;
    Ok(Response::from_parts(head, Body::from(bytes)))
}

/// A kept answer, as first given.
fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut r = (status, stored.body).into_response();
    r.headers_mut().remove(header::CONTENT_TYPE);
    for (name, value) in &stored.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(value),
        ) {
            r.headers_mut().insert(n, v);
        }
    }
    r.headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> Result<String, ApiError> {
        parse_key(&HeaderValue::from_str(raw).map_err(|_| bad_key("not a header value"))?)
    }

    #[test]
    fn keys_are_sf_strings_or_bare_printable_text() {
        assert_eq!(
            key("\"8e03978e-40d5\"").ok().as_deref(),
            Some("8e03978e-40d5")
        );
        assert_eq!(key("abc").ok().as_deref(), Some("abc"));
        assert_eq!(key(r#""a\"b\\c""#).ok().as_deref(), Some(r#"a"b\c"#));
        assert_eq!(key(&"k".repeat(255)).ok().map(|k| k.len()), Some(255));
        for bad in [
            "",
            "\"\"",
            "\"open",
            "\"a\"b\"",
            r#""\x""#,
            &"k".repeat(256),
        ] {
            assert!(key(bad).is_err(), "{bad:?} must be refused");
        }
        let non_ascii = HeaderValue::from_bytes("clé".as_bytes()).expect("opaque bytes");
        assert!(parse_key(&non_ascii).is_err());
    }

    #[test]
    fn fingerprints_tell_requests_apart() {
        let a = fingerprint(&Method::POST, "/users", "application/json", b"{}");
        assert_eq!(
            a,
            fingerprint(&Method::POST, "/users", "application/json", b"{}")
        );
        assert_ne!(
            a,
            fingerprint(&Method::PATCH, "/users", "application/json", b"{}")
        );
        assert_ne!(
            a,
            fingerprint(&Method::POST, "/users/1", "application/json", b"{}")
        );
        assert_ne!(a, fingerprint(&Method::POST, "/users", "text/plain", b"{}"));
        assert_ne!(
            a,
            fingerprint(&Method::POST, "/users", "application/json", b"{ }")
        );
        // Lengths are framed: moving bytes between parts changes the fingerprint.
        assert_ne!(
            fingerprint(&Method::POST, "/a", "bc", b""),
            fingerprint(&Method::POST, "/ab", "c", b"")
        );
    }
}
