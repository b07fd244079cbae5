//! `/accounts`: sign up, read an account, change a password.
//!
//! Nothing here is kept in the server: accounts live in the data tier, sessions in the shared
//! session store — any server can serve any of these requests, and a server can die between two
//! of them. Logging in, sessions and tokens are in `sessions`.
//!
//! Answers never tell whether an email is registered, except `POST /accounts`, which must say
//! that it could not create the account (see docs/accounts.md).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use strata_core::email::Email;
use strata_core::user::{FieldViolation, IdField, User, UserId, UserProfile};
use strata_store::accounts::{Account, now_ms};

use crate::auth::Principal;
use crate::commit::{cache_key, with_commit};
use crate::credentials::{CountedAttempt, check_password, cleared_cookies, email_field};
use crate::problem::ApiError;
use crate::request::{JsonKind, json_body, user_id};
use crate::state::AppState;

fn account_view(account: &Account) -> Value {
    json!({
        "id": account.user_id.0,
        "email": account.email,
        "roles": account.roles,
        "createdAt": account.created_ms,
    })
}

/// `POST /accounts`: `{"email", "password", "profile": {…}}` → 201 with the account.
#[utoipa::path(post, path = "/accounts", tag = "accounts", security(()),
    params(crate::params::IdempotencyKey),
    request_body(content = crate::schema::AccountInput, content_type = "application/json"),
    responses(
        (status = 201, description = "The account and its public profile", body = crate::schema::AccountCreated,
            headers(("Location" = String, description = "`/users/{id}`: the public profile"),
                    ("Strata-Commit" = u64, description = "The write's commit token, for `Strata-Read-After`"),
                    ("Idempotent-Replayed" = bool, description = "`true` on the stored answer to a repeated `Idempotency-Key`"))),
        (status = 400, description = "`malformed-json`: the body is not JSON; `unreadable-body`; `invalid-parameter`: a malformed `Idempotency-Key`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`email-taken`: the email is registered (pointer `/email`); `idempotency-conflict`: a request with this `Idempotency-Key` is still running (with `Retry-After`)", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::BodyErrors,
        (status = 422, description = "`invalid-fields`: a bad email (`/email`), a password too short or long (`/password`), a bad profile (`/profile/…`), an unknown field; `idempotency-mismatch`: this `Idempotency-Key` was used for another request", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::ServerErrors,
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
    state.edges.purge_lists();
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
#[utoipa::path(get, path = "/accounts/{id}", tag = "accounts", security(("bearer" = []), ("cookie" = [])),
    params(crate::params::UserIdPath),
    responses(
        (status = 200, description = "The account", body = crate::schema::AccountView),
        (status = 400, description = "`invalid-user-id`: the id is not an unsigned 64-bit decimal", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::Unauthenticated,
        (status = 403, description = "`forbidden`: not yours, and you are not an admin", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`user-not-found`: no account has this id (admins only: others get 403)", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::ServerErrors,
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

/// `PUT /accounts/{id}/password`: `{"current_password", "new_password"}` → 204. The owner must
/// give the current password (checked, and counted against the login limits like a login); an
/// admin may set anyone else's without it. Every session of the account ends at once, on every
/// server — including the caller's: whoever knew the old password is signed out with it.
#[utoipa::path(put, path = "/accounts/{id}/password", tag = "accounts", security(("bearer" = []), ("cookie" = [], "csrf" = [])),
    params(crate::params::UserIdPath),
    request_body(content = crate::schema::PasswordChange, content_type = "application/json"),
    responses(
        (status = 204, description = "Changed; every session of the account has ended and the caller's cookies are cleared"),
        (status = 400, description = "`invalid-user-id`: the id is not an unsigned 64-bit decimal; `malformed-json`: the body is not JSON; `unreadable-body`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthenticated`: no valid access token, or the current password is wrong", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"strata\", error=\"invalid_token\"`"))),
        (status = 403, description = "`forbidden`: not yours, and you are not an admin; `csrf`: a cookie-authenticated request without `X-CSRF-Token`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`user-not-found`: no account has this id (admins only: others get 403)", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::BodyErrors,
        (status = 422, description = "`invalid-fields`: `new_password` too short or long, `current_password` missing (owners), an unknown field", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too-many-attempts`: too many wrong current passwords or failed logins for this account or address", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until the window of failed attempts ends"))),
        crate::responses::ServerErrors,
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
        let attempt = CountedAttempt::count(&state, &account.email, &parts).await?;
        if !state
            .auth
            .verify_password(&current, Some(&account.password_hash))
            .await?
        {
            return Err(ApiError::Unauthenticated(
                "The current password is wrong.".into(),
            ));
        }
        attempt.succeeded(&state).await?;
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
