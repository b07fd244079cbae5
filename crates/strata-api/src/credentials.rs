//! What logging in and changing a password share: checking a password field and an email field,
//! the login limits (every attempt counted before any password is checked), and the cookies a
//! browser session is cleared with.

use axum::http::header;
use axum::http::request::Parts;
use axum::response::Response;
use serde_json::Value;
use strata_core::email::Email;
use strata_core::user::FieldViolation;
use strata_store::accounts::now_ms;

use crate::auth::{
    self, ACCESS_COOKIE, CSRF_COOKIE, PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS, REFRESH_COOKIE,
};
use crate::problem::ApiError;
use crate::state::AppState;

pub(crate) fn check_password(
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

pub(crate) fn email_field(doc: &Value) -> Result<Email, FieldViolation> {
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

/// A login attempt (or a password change's check of the current password), counted against the
/// account's limit — per email, registered or not, so a 429 reveals nothing — and the client
/// address's.
pub(crate) struct CountedAttempt {
    account_key: String,
    ip_key: Option<String>,
}

impl CountedAttempt {
    /// Counts this attempt *before* any password is checked — an increment that returns the new
    /// count, atomic in the shared session store — so that of any number of attempts at once no
    /// more than the limit are ever checked. 429 when a limit is reached.
    pub(crate) async fn count(
        state: &AppState,
        email: &Email,
        parts: &Parts,
    ) -> Result<Self, ApiError> {
        let attempt = CountedAttempt {
            account_key: format!("login:account:{}", auth::refresh_hash(email.as_str())),
            ip_key: crate::client::client_ip(parts, &state.auth.trusted_proxies)
                .map(|ip| format!("login:ip:{ip}")),
        };
        let sessions = &state.auth.sessions;
        let (now, window) = (now_ms(), state.auth.failure_window);
        let account_key = attempt.account_key.as_str();
        if sessions.count_failure(account_key, window, now).await?
            > state.auth.max_failures_per_account
        {
            metrics::counter!("strata_auth_login_limited_total", "by" => "account").increment(1);
            let (_, left) = sessions.failures(account_key, now).await?;
            return Err(ApiError::TooManyAttempts { retry_after: left });
        }
        if let Some(k) = attempt.ip_key.as_deref()
            && sessions.count_failure(k, window, now).await? > state.auth.max_failures_per_ip
        {
            // Refused for the address: this attempt is not the account's.
            sessions.discount_failure(account_key).await?;
            metrics::counter!("strata_auth_login_limited_total", "by" => "ip").increment(1);
            let (_, left) = sessions.failures(k, now).await?;
            return Err(ApiError::TooManyAttempts { retry_after: left });
        }
        Ok(attempt)
    }

    /// The password was right: not a failure after all. The account starts afresh, the address
    /// gets its count back.
    pub(crate) async fn succeeded(self, state: &AppState) -> Result<(), ApiError> {
        state
            .auth
            .sessions
            .clear_failures(&self.account_key)
            .await?;
        if let Some(k) = &self.ip_key {
            state.auth.sessions.discount_failure(k).await?;
        }
        Ok(())
    }
}

pub(crate) fn cleared_cookies(mut r: Response) -> Response {
    for name in [ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE] {
        r.headers_mut().append(
            header::SET_COOKIE,
            auth::set_cookie(name, "", std::time::Duration::ZERO),
        );
    }
    r
}
