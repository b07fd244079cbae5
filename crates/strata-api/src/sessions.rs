//! `/sessions` and `/.well-known/jwks.json`: log in, refresh, list and revoke sessions, log
//! out, and the public keys that verify access tokens.
//!
//! Sessions live in the shared session store and signing keys in the deployment's key
//! directory: any server can serve any of these requests, and a server can die between two of
//! them. Answers never tell whether an email is registered (see docs/accounts.md).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use strata_core::user::{FieldViolation, UserId};
use strata_store::accounts::{Rotation, Session, now_ms};

use crate::auth::{
    self, ACCESS_COOKIE, CSRF_COOKIE, CSRF_HEADER, Principal, REFRESH_COOKIE, RefreshToken,
};
use crate::credentials::{CountedAttempt, check_password, cleared_cookies, email_field};
use crate::problem::ApiError;
use crate::request::{JsonKind, json_body};
use crate::state::AppState;

const USER_AGENT_MAX_CHARS: usize = 200;

/// What a login or refresh answers: tokens in the body, or in cookies for browsers.
fn token_response(
    state: &AppState,
    status: StatusCode,
    account_user: UserId,
    roles: &[String],
    session: &Session,
    refresh: &RefreshToken,
    cookies: bool,
) -> Result<Response, ApiError> {
    let csrf = cookies.then(|| auth::csrf_token(&refresh.secret));
    let access = auth::issue_access_token(
        &state.auth,
        account_user,
        &session.id,
        roles,
        csrf.as_deref(),
    )?;
    let ttl = state.auth.access_ttl;
    let refresh_left =
        std::time::Duration::from_millis(session.expires_ms.saturating_sub(now_ms()));
    let mut body = json!({
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
        "session_id": session.id,
        "user_id": account_user.0,
    });
    if let Some(csrf) = &csrf {
        body["csrf_token"] = json!(csrf);
    } else {
        body["access_token"] = json!(access);
        body["refresh_token"] = json!(refresh.encode());
    }
    let mut r = (status, Json(body)).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(csrf) = &csrf {
        h.append(
            header::SET_COOKIE,
            auth::set_cookie(ACCESS_COOKIE, &access, ttl),
        );
        h.append(
            header::SET_COOKIE,
            auth::set_cookie(REFRESH_COOKIE, &refresh.encode(), refresh_left),
        );
        h.append(
            header::SET_COOKIE,
            auth::set_cookie(CSRF_COOKIE, csrf, refresh_left),
        );
    }
    Ok(r)
}

fn wants_cookies(doc: &Value) -> Result<bool, ApiError> {
    match doc.get("cookies") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::InvalidFields(vec![FieldViolation::new(
            "/cookies",
            "must be true (browser mode: tokens in cookies) or false",
        )])),
    }
}

/// `POST /sessions`: `{"email", "password", "cookies"?}` → 201 with tokens.
#[utoipa::path(post, path = "/sessions", tag = "accounts", security(()),
    request_body(content = crate::schema::LoginInput, content_type = "application/json"),
    responses(
        (status = 201, description = "Logged in. In browser mode (`cookies: true`) the tokens are in `Set-Cookie` and only `csrf_token` is in the body", body = crate::schema::TokenResponse),
        (status = 400, description = "`malformed-json`: the body is not JSON; `unreadable-body`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "`login-failed`: wrong email or password (the same answer for both)", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::BodyErrors,
        (status = 422, description = "`invalid-fields`: a missing or malformed email or password, or `cookies` not a boolean", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too-many-attempts`: too many failed logins for this email or from this address", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until the window of failed attempts ends"))),
        crate::responses::ServerErrors,
    ))]
pub async fn login(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let doc = json_body(&parts.headers, body, JsonKind::Json).await?;
    let mut violations = Vec::new();
    let email = email_field(&doc).map_err(|v| violations.push(v)).ok();
    let password = check_password(doc.get("password"), "/password", false)
        .map_err(|v| violations.push(v))
        .ok();
    let cookies = wants_cookies(&doc)?;
    let (Some(email), Some(password), true) = (email, password, violations.is_empty()) else {
        return Err(ApiError::InvalidFields(violations));
    };
    let attempt = CountedAttempt::count(&state, &email, &parts).await?;
    let account = state.accounts.account_by_email(&email).await?;
    let ok = state
        .auth
        .verify_password(
            &password,
            account.as_ref().map(|a| a.password_hash.as_str()),
        )
        .await?;
    let Some(account) = account.filter(|_| ok) else {
        // Counted already, before the check.
        metrics::counter!("strata_auth_logins_total", "outcome" => "failed").increment(1);
        return Err(ApiError::LoginFailed);
    };
    attempt.succeeded(&state).await?;
    let now = now_ms();
    let session = Session {
        id: auth::new_session_id(),
        user_id: account.user_id,
        created_ms: now,
        expires_ms: now + state.auth.session_ttl.as_millis() as u64,
        last_used_ms: now,
        generation: 0,
        revoked: false,
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(USER_AGENT_MAX_CHARS).collect())
            .unwrap_or_default(),
        ip: crate::client::client_ip(&parts, &state.auth.trusted_proxies)
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
    };
    let refresh = RefreshToken::new(&session.id);
    state
        .auth
        .sessions
        .create_session(&session, &auth::refresh_hash(&refresh.secret))
        .await?;
    // A password change between the check above and the session's creation must not leave
    // this session alive: the change stores the new hash, then ends every session. Reading the
    // hash again after creating the session closes the gap from this side.
    let still = state.accounts.account(account.user_id).await?;
    if still.as_ref().map(|a| a.password_hash.as_str()) != Some(account.password_hash.as_str()) {
        state.auth.sessions.revoke(&session.id).await?;
        metrics::counter!("strata_auth_logins_total", "outcome" => "failed").increment(1);
        return Err(ApiError::LoginFailed);
    }
    metrics::counter!("strata_auth_logins_total", "outcome" => "ok").increment(1);
    token_response(
        &state,
        StatusCode::CREATED,
        account.user_id,
        &account.roles,
        &session,
        &refresh,
        cookies,
    )
}

/// `POST /sessions/refresh`: `{"refresh_token"}` (or the refresh cookie + `X-CSRF-Token`) →
/// a new access token and a new refresh token; the old refresh token is spent.
#[utoipa::path(post, path = "/sessions/refresh", tag = "accounts", security((), ("refresh_cookie" = [], "csrf" = [])),
    request_body(content = crate::schema::RefreshInput, content_type = "application/json"),
    responses(
        (status = 200, description = "New tokens; the presented refresh token is spent", body = crate::schema::TokenResponse),
        (status = 400, description = "`malformed-json`: the body is not JSON; `unreadable-body`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthenticated`: not a valid refresh token, or one already used (the session is then revoked)", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"strata\", error=\"invalid_token\"`"))),
        (status = 403, description = "`csrf`: the refresh cookie without the session's `X-CSRF-Token`", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::BodyErrors,
        (status = 422, description = "`invalid-fields`: no `refresh_token` string", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::ServerErrors,
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let invalid = || ApiError::Unauthenticated("The refresh token is not valid.".into());
    let (raw, cookies) = match auth::cookie(&parts.headers, REFRESH_COOKIE) {
        Some(c) if parts.headers.get(header::CONTENT_TYPE).is_none() => (c.to_owned(), true),
        _ => {
            let doc = json_body(&parts.headers, body, JsonKind::Json).await?;
            match doc.get("refresh_token") {
                Some(Value::String(t)) => (t.clone(), false),
                _ => {
                    return Err(ApiError::InvalidFields(vec![FieldViolation::new(
                        "/refresh_token",
                        "is required and must be the refresh token a login returned",
                    )]));
                }
            }
        }
    };
    let token = RefreshToken::parse(&raw).ok_or_else(invalid)?;
    if cookies {
        let sent = parts
            .headers
            .get(&CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::CsrfRejected)?;
        if !auth::same(sent, &auth::csrf_token(&token.secret)) {
            return Err(ApiError::CsrfRejected);
        }
    }
    let next = RefreshToken::new(&token.session_id);
    let outcome = state
        .auth
        .sessions
        .rotate(
            &token.session_id,
            &auth::refresh_hash(&token.secret),
            &auth::refresh_hash(&next.secret),
            now_ms(),
        )
        .await?;
    match outcome {
        Rotation::Rotated(session) => {
            // Roles may have changed since login: read them again.
            let roles = state
                .accounts
                .account(session.user_id)
                .await?
                .map(|a| a.roles)
                .ok_or_else(invalid)?;
            metrics::counter!("strata_auth_refreshes_total", "outcome" => "ok").increment(1);
            token_response(
                &state,
                StatusCode::OK,
                session.user_id,
                &roles,
                &session,
                &next,
                cookies,
            )
        }
        Rotation::Reused => {
            tracing::warn!(session = %token.session_id, "a spent refresh token was replayed: the session is revoked");
            metrics::counter!("strata_auth_refreshes_total", "outcome" => "reused").increment(1);
            Err(ApiError::Unauthenticated(
                "This refresh token was already used: the session has been revoked; log in again."
                    .into(),
            ))
        }
        Rotation::Refused => {
            metrics::counter!("strata_auth_refreshes_total", "outcome" => "refused").increment(1);
            Err(invalid())
        }
    }
}

fn session_view(s: &Session, current: &str) -> Value {
    json!({
        "id": s.id,
        "createdAt": s.created_ms,
        "lastUsedAt": s.last_used_ms,
        "expiresAt": s.expires_ms,
        "userAgent": s.user_agent,
        "ip": s.ip,
        "current": s.id == current,
    })
}

/// `GET /sessions`: the caller's active sessions.
#[utoipa::path(get, path = "/sessions", tag = "accounts", security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "My active sessions", body = crate::schema::SessionList),
        crate::responses::Unauthenticated,
        crate::responses::ServerErrors,
    ))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    let sessions = state
        .auth
        .sessions
        .sessions_of(principal.user, now_ms())
        .await?;
    let items: Vec<Value> = sessions
        .iter()
        .map(|s| session_view(s, &principal.session_id))
        .collect();
    let mut r = Json(json!({ "sessions": items })).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    Ok(r)
}

/// `DELETE /sessions/current`: log out.
#[utoipa::path(delete, path = "/sessions/current", tag = "accounts", security(("bearer" = []), ("cookie" = [], "csrf" = [])),
    responses(
        (status = 204, description = "Logged out; the session's cookies are cleared"),
        crate::responses::Unauthenticated,
        (status = 403, description = "`csrf`: a cookie-authenticated request without `X-CSRF-Token`", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::ServerErrors,
    ))]
pub async fn logout(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    state.auth.sessions.revoke(&principal.session_id).await?;
    metrics::counter!("strata_auth_logouts_total").increment(1);
    Ok(cleared_cookies(StatusCode::NO_CONTENT.into_response()))
}

/// `DELETE /sessions/{id}`: revoke one of the caller's sessions (admins: anyone's).
#[utoipa::path(delete, path = "/sessions/{id}", tag = "accounts", security(("bearer" = []), ("cookie" = [], "csrf" = [])),
    params(crate::params::SessionIdPath),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "`invalid-parameter`: the id is not a session id (`errors[].parameter` is `id`)", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::Unauthenticated,
        (status = 403, description = "`csrf`: a cookie-authenticated request without `X-CSRF-Token`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`session-not-found`: you have no session with this id (another user's looks the same)", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::ServerErrors,
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let well_formed = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if !well_formed {
        return Err(ApiError::InvalidParameter {
            parameter: "id",
            detail: "must be a session id: 32 hexadecimal digits, as GET /sessions lists them"
                .into(),
        });
    }
    let id = id.to_ascii_lowercase();
    let session = state.auth.sessions.session(&id).await?;
    // Another user's session is reported exactly like a missing one.
    match session {
        Some(s) if s.user_id == principal.user || principal.is_admin() => {
            state.auth.sessions.revoke(&id).await?;
            let r = StatusCode::NO_CONTENT.into_response();
            Ok(if id == principal.session_id {
                cleared_cookies(r)
            } else {
                r
            })
        }
        _ => Err(ApiError::SessionNotFound),
    }
}

/// `GET /.well-known/jwks.json`: the public keys that verify access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "accounts", security(()),
    responses(
        (status = 200, description = "The JWK Set that verifies access tokens", body = crate::schema::JwkSet),
        crate::responses::TimedOut,
    ))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut r = Json(state.auth.keys.jwks()).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    r
}
