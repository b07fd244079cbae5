//! `/accounts` and `/sessions`: sign up, log in, refresh, log out, list and revoke sessions,
//! and `/.well-known/jwks.json`.
//!
//! Nothing here is kept in the server: accounts live in the data tier, sessions in the shared
//! session store, signing keys in the deployment's key directory — any server can serve any of
//! these requests, and a server can die between two of them.
//!
//! Answers never tell whether an email is registered, except `POST /accounts`, which must say
//! that it could not create the account (see docs/accounts.md).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use strata_core::email::Email;
use strata_core::user::{FieldViolation, IdField, User, UserId, UserProfile};
use strata_store::accounts::{Account, Rotation, Session, now_ms};

use crate::auth::{
    self, ACCESS_COOKIE, CSRF_COOKIE, CSRF_HEADER, PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS,
    Principal, REFRESH_COOKIE, RefreshToken,
};
use crate::commit::{cache_key, with_commit};
use crate::problem::ApiError;
use crate::request::{JsonKind, json_body, user_id};
use crate::state::AppState;

const USER_AGENT_MAX_CHARS: usize = 200;

fn check_password(
    raw: Option<&Value>,
    pointer: &str,
    fresh: bool,
) -> Result<String, FieldViolation> {
    let Some(Value::String(p)) = raw else {
        return Err(FieldViolation::new(
            pointer,
            "is required and must be a string",
        ));
    };
    let chars = p.chars().count();
    if chars > PASSWORD_MAX_CHARS {
        return Err(FieldViolation::new(
            pointer,
            format!("must be at most {PASSWORD_MAX_CHARS} characters"),
        ));
    }
    if fresh && chars < PASSWORD_MIN_CHARS {
        return Err(FieldViolation::new(
            pointer,
            format!("must be at least {PASSWORD_MIN_CHARS} characters"),
        ));
    }
    if p.is_empty() {
        return Err(FieldViolation::new(pointer, "must not be empty"));
    }
    Ok(p.clone())
}

fn email_field(doc: &Value) -> Result<Email, FieldViolation> {
    match doc.get("email") {
        Some(Value::String(e)) => {
            Email::parse(e).map_err(|why| FieldViolation::new("/email", why.to_string()))
        }
        _ => Err(FieldViolation::new(
            "/email",
            "is required and must be a string",
        )),
    }
}

fn account_view(account: &Account) -> Value {
    json!({
        "id": account.user_id.0,
        "email": account.email,
        "roles": account.roles,
        "createdAt": account.created_ms,
    })
}

/// `POST /accounts`: `{"email", "password", "profile": {…}}` → 201 with the account.
#[utoipa::path(post, path = "/accounts", tag = "accounts",
    request_body(content = crate::schema::AccountInput, content_type = "application/json"),
    responses(
        (status = 201, description = "The account and its public profile"),
        (status = 409, description = "The email is registered", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let doc = json_body(&headers, body, JsonKind::Json).await?;
    if !doc.is_object() {
        return Err(ApiError::InvalidFields(vec![FieldViolation::new(
            "",
            "must be an object with email, password and profile",
        )]));
    }
    let mut violations = Vec::new();
    if let Some(obj) = doc.as_object() {
        for key in obj.keys() {
            if !matches!(key.as_str(), "email" | "password" | "profile") {
                violations.push(FieldViolation::new(
                    format!("/{key}"),
                    "is not a field of an account (email, password, profile)",
                ));
            }
        }
    }
    let email = email_field(&doc).map_err(|v| violations.push(v)).ok();
    let password = check_password(doc.get("password"), "/password", true)
        .map_err(|v| violations.push(v))
        .ok();
    let profile = match doc.get("profile") {
        Some(p) => UserProfile::parse(p, IdField::Forbidden)
            .map_err(|vs| {
                violations.extend(vs.into_iter().map(|v| FieldViolation {
                    pointer: format!("/profile{}", v.pointer),
                    detail: v.detail,
                }));
            })
            .ok(),
        None => {
            violations.push(FieldViolation::new(
                "/profile",
                "is required: the public profile",
            ));
            None
        }
    };
    let (Some(email), Some(password), Some(profile), true) =
        (email, password, profile, violations.is_empty())
    else {
        return Err(ApiError::InvalidFields(violations));
    };
    // Fail fast on a taken email before paying for the hash (the insert checks again).
    if state.accounts.account_by_email(&email).await?.is_some() {
        return Err(ApiError::EmailTaken);
    }
    let hash = state.auth.hash_password(&password).await?;
    let id = state
        .ids
        .next_id()
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let user = User {
        id: UserId(id),
        profile,
    };
    let receipt = state.accounts.create_account(&user, &email, &hash).await?;
    state
        .cache
        .write(
            &cache_key(user.id),
            strata_cache::tiered::Entry::present(
                receipt.version,
                serde_json::to_vec(&user).unwrap_or_default().into(),
            ),
        )
        .await;
    metrics::counter!("strata_auth_accounts_created_total").increment(1);
    // Serialized straight from the types, never through a `serde_json::Value` (whose maps sort
    // their keys): the embedded user is byte for byte what `GET /users/{id}` answers.
    #[derive(serde::Serialize)]
    struct Created<'a> {
        id: u64,
        email: &'a Email,
        roles: [&'a str; 0],
        user: &'a User,
    }
    let body = Created {
        id,
        email: &email,
        roles: [],
        user: &user,
    };
    let mut r = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/users/{id}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(with_commit(r, receipt))
}

/// `GET /accounts/{id}`: the account (email, roles) — its owner and admins only.
#[utoipa::path(get, path = "/accounts/{id}", tag = "accounts", security(("bearer" = [])),
    params(("id" = u64, Path, description = "User id")),
    responses(
        (status = 200, description = "The account", body = crate::schema::AccountView),
        (status = 401, description = "Not authenticated", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not yours, and you are not an admin", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_one(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = user_id(&raw)?;
    if principal.user != id && !principal.is_admin() {
        return Err(ApiError::Forbidden(
            "An account is visible only to its owner and to admins.".into(),
        ));
    }
    let account = state
        .accounts
        .account(id)
        .await?
        .ok_or(ApiError::UserNotFound(id))?;
    let mut r = Json(account_view(&account)).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    Ok(r)
}

/// The limits' keys: per email (registered or not — so a 429 reveals nothing) and per address.
fn limit_keys(email: &Email, parts: &Parts) -> (String, Option<String>) {
    (
        format!("login:account:{}", auth::refresh_hash(email.as_str())),
        auth::client_ip(parts).map(|ip| format!("login:ip:{ip}")),
    )
}

/// Counts this attempt against the account's and the address's limits *before* any password
/// is checked — an increment that returns the new count, atomic in the shared session store —
/// so that of any number of attempts at once no more than the limit are ever checked. An
/// attempt that turns out to succeed is taken back (see [`login`]).
async fn count_attempt(
    state: &AppState,
    account_key: &str,
    ip_key: Option<&str>,
) -> Result<(), ApiError> {
    let sessions = &state.auth.sessions;
    let (now, window) = (now_ms(), state.auth.failure_window);
    if sessions.count_failure(account_key, window, now).await? > state.auth.max_failures_per_account
    {
        metrics::counter!("strata_auth_login_limited_total", "by" => "account").increment(1);
        let (_, left) = sessions.failures(account_key, now).await?;
        return Err(ApiError::TooManyAttempts { retry_after: left });
    }
    if let Some(k) = ip_key
        && sessions.count_failure(k, window, now).await? > state.auth.max_failures_per_ip
    {
        // Refused for the address: this attempt is not the account's.
        sessions.discount_failure(account_key).await?;
        metrics::counter!("strata_auth_login_limited_total", "by" => "ip").increment(1);
        let (_, left) = sessions.failures(k, now).await?;
        return Err(ApiError::TooManyAttempts { retry_after: left });
    }
    Ok(())
}

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
#[utoipa::path(post, path = "/sessions", tag = "accounts",
    request_body(content = crate::schema::LoginInput, content_type = "application/json"),
    responses(
        (status = 201, description = "Logged in", body = crate::schema::TokenResponse),
        (status = 401, description = "Wrong email or password (the same answer for both)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed attempts; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
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
    let (account_key, ip_key) = limit_keys(&email, &parts);
    count_attempt(&state, &account_key, ip_key.as_deref()).await?;
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
    // Not a failure after all: the account starts afresh, the address gets its count back.
    state.auth.sessions.clear_failures(&account_key).await?;
    if let Some(k) = &ip_key {
        state.auth.sessions.discount_failure(k).await?;
    }
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
        ip: auth::client_ip(&parts)
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
#[utoipa::path(post, path = "/sessions/refresh", tag = "accounts",
    request_body(content = crate::schema::RefreshInput, content_type = "application/json"),
    responses(
        (status = 200, description = "New tokens; the presented refresh token is spent", body = crate::schema::TokenResponse),
        (status = 401, description = "Not valid, or already used (the session is then revoked)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Cookie mode without the CSRF token", body = crate::problem::Problem, content_type = "application/problem+json"),
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
#[utoipa::path(get, path = "/sessions", tag = "accounts", security(("bearer" = [])),
    responses(
        (status = 200, description = "My active sessions: {\"sessions\": [...]}", body = Vec<crate::schema::SessionView>),
        (status = 401, description = "Not authenticated", body = crate::problem::Problem, content_type = "application/problem+json"),
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

fn cleared_cookies(mut r: Response) -> Response {
    for name in [ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE] {
        r.headers_mut().append(
            header::SET_COOKIE,
            auth::set_cookie(name, "", std::time::Duration::ZERO),
        );
    }
    r
}

/// `DELETE /sessions/current`: log out.
#[utoipa::path(delete, path = "/sessions/current", tag = "accounts", security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "Not authenticated", body = crate::problem::Problem, content_type = "application/problem+json"),
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
#[utoipa::path(delete, path = "/sessions/{id}", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id: 32 hexadecimal digits")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "You have no such session", body = crate::problem::Problem, content_type = "application/problem+json"),
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
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "accounts",
    responses((status = 200, description = "The JWK Set that verifies access tokens")))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut r = Json(state.auth.keys.jwks()).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    r
}

/// `PUT /accounts/{id}/password`: `{"current_password", "new_password"}` → 204. The owner must
/// give the current password (checked, and counted against the login limits like a login); an
/// admin may set anyone else's without it. Every session of the account ends at once, on every
/// server — including the caller's: whoever knew the old password is signed out with it.
#[utoipa::path(put, path = "/accounts/{id}/password", tag = "accounts", security(("bearer" = [])),
    params(("id" = u64, Path, description = "User id")),
    request_body(content = crate::schema::PasswordChange, content_type = "application/json"),
    responses(
        (status = 204, description = "Changed; every session of the account has ended"),
        (status = 401, description = "Not authenticated, or the current password is wrong", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not yours, and you are not an admin", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong current passwords; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let id = user_id(&raw)?;
    let own = principal.user == id;
    if !own && !principal.is_admin() {
        return Err(ApiError::Forbidden(
            "You may change only your own password; an admin may change anyone's.".into(),
        ));
    }
    let (parts, body) = request.into_parts();
    let doc = json_body(&parts.headers, body, JsonKind::Json).await?;
    let mut violations = Vec::new();
    if let Some(obj) = doc.as_object() {
        for key in obj.keys() {
            if !matches!(key.as_str(), "current_password" | "new_password") {
                violations.push(FieldViolation::new(
                    format!("/{key}"),
                    "is not a field of a password change (current_password, new_password)",
                ));
            }
        }
    } else {
        violations.push(FieldViolation::new(
            "",
            "must be an object with current_password and new_password",
        ));
    }
    let new = check_password(doc.get("new_password"), "/new_password", true)
        .map_err(|v| violations.push(v))
        .ok();
    // The owner proves they still hold the account; an admin acting on another account does not
    // need (and cannot know) its password.
    let current = if own {
        check_password(doc.get("current_password"), "/current_password", false)
            .map_err(|v| violations.push(v))
            .ok()
    } else {
        None
    };
    let (Some(new), true) = (new, violations.is_empty()) else {
        return Err(ApiError::InvalidFields(violations));
    };
    let account = state
        .accounts
        .account(id)
        .await?
        .ok_or(ApiError::UserNotFound(id))?;
    if let Some(current) = current {
        let (account_key, ip_key) = limit_keys(&account.email, &parts);
        count_attempt(&state, &account_key, ip_key.as_deref()).await?;
        if !state
            .auth
            .verify_password(&current, Some(&account.password_hash))
            .await?
        {
            return Err(ApiError::Unauthenticated(
                "The current password is wrong.".into(),
            ));
        }
        state.auth.sessions.clear_failures(&account_key).await?;
        if let Some(k) = &ip_key {
            state.auth.sessions.discount_failure(k).await?;
        }
    }
    let hash = state.auth.hash_password(&new).await?;
    state.accounts.set_password(id, &hash).await?;
    // After the new hash is stored: a login that checked the old one and creates its session
    // from now on sees the hash change and ends that session itself (see `login`).
    let ended = state.auth.sessions.revoke_all(id, now_ms()).await?;
    metrics::counter!("strata_auth_password_changes_total").increment(1);
    tracing::info!(user = %id, sessions_ended = ended, by_admin = !own, "password changed");
    Ok(cleared_cookies(StatusCode::NO_CONTENT.into_response()))
}
