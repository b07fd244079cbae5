//! The web tier's one error type and its one mapping to HTTP: RFC 9457 problem details.
//!
//! Every failure a handler can meet is an [`ApiError`]; [`IntoResponse`] chooses the status,
//! the `type` URI and the body in one place, and logs the cause chain of server-side failures
//! once. Client errors name what was wrong precisely — field errors carry a JSON pointer into
//! the request body, parameter errors the parameter's name — and never echo internal details
//! (paths, SQL, backend addresses).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use strata_core::user::{FieldViolation, UserId};
use strata_photos::upload::UploadError;
use strata_store::StoreError;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem details object.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:strata:problem:…`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, for a person.
    pub detail: String,
    /// The request path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Every field or parameter at fault.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemItem>,
}

/// One field or parameter at fault.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProblemItem {
    /// A JSON pointer (RFC 6901) into the request body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// A query parameter or header name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    pub detail: String,
}

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("unsupported content type")]
    UnsupportedMediaType {
        expected: &'static str,
        got: Option<String>,
    },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body has invalid fields")]
    InvalidFields(Vec<FieldViolation>),
    #[error("invalid parameter {parameter}: {detail}")]
    InvalidParameter {
        parameter: &'static str,
        detail: String,
    },
    #[error("invalid user id {0:?}")]
    InvalidUserId(String),
    #[error("user {0} not found")]
    UserNotFound(UserId),
    #[error("no route for this path")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("precondition failed")]
    PreconditionFailed {
        id: UserId,
        current_version: Option<u64>,
    },
    #[error("a request body could not be read: {0}")]
    BodyRead(String),
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("the request took longer than {0:?}")]
    Timeout(std::time::Duration),
    #[error("internal error: {0}")]
    Internal(String),
    /// No credentials, or credentials that are not valid (401 + `WWW-Authenticate`).
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// Authenticated, but not allowed to do this (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A cookie-authenticated request without the matching `X-CSRF-Token` (403).
    #[error("missing or wrong CSRF token")]
    CsrfRejected,
    /// Wrong email or password — the same answer whether or not the email is registered.
    #[error("login failed")]
    LoginFailed,
    #[error("too many failed attempts")]
    TooManyAttempts { retry_after: std::time::Duration },
    #[error("the email is already registered")]
    EmailTaken,
    #[error("no such session")]
    SessionNotFound,
    /// Another request with this `Idempotency-Key` is being executed (409 + `Retry-After`).
    #[error("a request with this idempotency key is in progress")]
    IdempotencyConflict,
    /// The `Idempotency-Key` was used for a different request (422).
    #[error("the idempotency key was used for another request")]
    IdempotencyMismatch,
    /// A photo upload refused by its checks (413, 415 or 422).
    #[error("the photo was refused: {0}")]
    Photo(UploadError),
    /// A photo body over the limit, found while reading it (413).
    #[error("the photo is larger than {limit} bytes")]
    PhotoTooLarge { limit: usize },
    #[error("user {0} has no photo")]
    PhotoNotFound(UserId),
    #[error("no job {0}")]
    JobNotFound(u64),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => ApiError::UserNotFound(id),
            StoreError::VersionMismatch { id, actual, .. } => ApiError::PreconditionFailed {
                id,
                current_version: Some(actual),
            },
            // A move the router could not follow in time (a resharding cut-over): retry.
            StoreError::NotYetVisible { .. }
            | StoreError::Unavailable(_)
            | StoreError::Moved { .. } => ApiError::Unavailable(e.to_string()),
            StoreError::EmailTaken => ApiError::EmailTaken,
            StoreError::AlreadyExists(_)
            | StoreError::Corrupt { .. }
            | StoreError::Unusable(_)
            | StoreError::NoAccount(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_)
            | ApiError::InvalidParameter { .. }
            | ApiError::InvalidUserId(_)
            | ApiError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidFields(_) | ApiError::IdempotencyMismatch => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::PhotoTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Photo(e) => match e {
                UploadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                UploadError::UnsupportedContentType { .. }
                | UploadError::NotAnImage
                | UploadError::ContentTypeMismatch { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                UploadError::Truncated { .. }
                | UploadError::UnreadableHeader { .. }
                | UploadError::TooManyPixels { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            },
            ApiError::PhotoNotFound(_) | ApiError::JobNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::UserNotFound(_) | ApiError::NoRoute | ApiError::SessionNotFound => {
                StatusCode::NOT_FOUND
            }
            ApiError::Unauthenticated(_) | ApiError::LoginFailed => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::CsrfRejected => StatusCode::FORBIDDEN,
            ApiError::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::EmailTaken | ApiError::IdempotencyConflict => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::Unavailable(_) | ApiError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::MalformedJson(_) => ("malformed-json", "Malformed JSON"),
            ApiError::UnsupportedMediaType { .. } => {
                ("unsupported-media-type", "Unsupported media type")
            }
            ApiError::PayloadTooLarge { .. } => ("payload-too-large", "Request body too large"),
            ApiError::InvalidFields(_) => ("invalid-fields", "Invalid fields"),
            ApiError::InvalidParameter { .. } => ("invalid-parameter", "Invalid parameter"),
            ApiError::InvalidUserId(_) => ("invalid-user-id", "Invalid user id"),
            ApiError::UserNotFound(_) => ("user-not-found", "User not found"),
            ApiError::NoRoute => ("not-found", "Not found"),
            ApiError::MethodNotAllowed => ("method-not-allowed", "Method not allowed"),
            ApiError::PreconditionFailed { .. } => ("precondition-failed", "Precondition failed"),
            ApiError::BodyRead(_) => ("unreadable-body", "Unreadable request body"),
            ApiError::Unavailable(_) => ("unavailable", "Service unavailable"),
            ApiError::Timeout(_) => ("timeout", "Request timed out"),
            ApiError::Internal(_) => ("internal", "Internal server error"),
            ApiError::Unauthenticated(_) => ("unauthenticated", "Not authenticated"),
            ApiError::Forbidden(_) => ("forbidden", "Forbidden"),
            ApiError::CsrfRejected => ("csrf", "CSRF token missing or wrong"),
            ApiError::LoginFailed => ("login-failed", "Login failed"),
            ApiError::TooManyAttempts { .. } => ("too-many-attempts", "Too many attempts"),
            ApiError::EmailTaken => ("email-taken", "Email already registered"),
            ApiError::SessionNotFound => ("session-not-found", "Session not found"),
            ApiError::IdempotencyConflict => ("idempotency-conflict", "Request in progress"),
            ApiError::IdempotencyMismatch => ("idempotency-mismatch", "Idempotency key reused"),
            ApiError::PhotoTooLarge { .. } => ("photo-too-large", "Photo too large"),
            ApiError::Photo(e) => match e {
                UploadError::TooLarge { .. } => ("photo-too-large", "Photo too large"),
                UploadError::UnsupportedContentType { .. }
                | UploadError::NotAnImage
                | UploadError::ContentTypeMismatch { .. } => {
                    ("unsupported-image", "Not a JPEG, PNG or WebP image")
                }
                UploadError::Truncated { .. } | UploadError::UnreadableHeader { .. } => {
                    ("invalid-image", "Invalid image")
                }
                UploadError::TooManyPixels { .. } => ("image-too-large", "Too many pixels"),
            },
            ApiError::PhotoNotFound(_) => ("photo-not-found", "Photo not found"),
            ApiError::JobNotFound(_) => ("job-not-found", "Job not found"),
        }
    }

    /// The problem body (without `instance`).
    pub fn problem(&self) -> Problem {
        let (slug, title) = self.slug_title();
        let mut errors = Vec::new();
        let detail = match self {
            ApiError::MalformedJson(e) => format!("The request body is not valid JSON: {e}."),
            ApiError::UnsupportedMediaType { expected, got } => match got {
                Some(got) => format!("Content-Type {got:?} is not accepted here; send {expected}."),
                None => format!("The request has no Content-Type; send {expected}."),
            },
            ApiError::PayloadTooLarge { limit } => format!("The request body is larger than the limit of {limit} bytes."),
            ApiError::InvalidFields(v) => {
                errors = v
                    .iter()
                    .map(|f| ProblemItem { pointer: Some(f.pointer.clone()), parameter: None, detail: f.detail.clone() })
                    .collect();
                let n = v.len();
                format!("{n} field{} of the request body {} invalid; see `errors`.", if n == 1 { "" } else { "s" }, if n == 1 { "is" } else { "are" })
            }
            ApiError::InvalidParameter { parameter, detail } => {
                errors.push(ProblemItem { pointer: None, parameter: Some((*parameter).to_string()), detail: detail.clone() });
                format!("Parameter `{parameter}` is invalid: {detail}.")
            }
            ApiError::InvalidUserId(raw) => {
                let shown: String = raw.chars().take(40).collect();
                errors.push(ProblemItem {
                    pointer: None,
                    parameter: Some("id".into()),
                    detail: "must be an unsigned 64-bit integer in decimal".into(),
                });
                format!("{shown:?} is not a user id: ids are unsigned 64-bit integers in decimal, such as 12.")
            }
            ApiError::UserNotFound(id) => format!("There is no user with id {id}."),
            ApiError::NoRoute => "There is nothing at this path. See /openapi.json for the API.".into(),
            ApiError::MethodNotAllowed => "This method is not allowed on this path. See /openapi.json for the API.".into(),
            ApiError::PreconditionFailed { id, current_version } => match current_version {
                Some(_) => format!("User {id} has changed since the ETag in If-Match was issued; fetch it again and retry."),
                None => format!("If-Match did not match user {id}."),
            },
            ApiError::BodyRead(e) => format!("The request body could not be read: {e}."),
            ApiError::Unavailable(_) => "The service is temporarily unable to handle the request; retry after the time in Retry-After.".into(),
            ApiError::Timeout(d) => format!("The request did not complete within {} ms; retry later.", d.as_millis()),
            ApiError::Internal(_) => "The server met an internal error. It has been logged.".into(),
            ApiError::Unauthenticated(why) => format!("{why} Log in with POST /sessions, or refresh with POST /sessions/refresh."),
            ApiError::Forbidden(why) => why.clone(),
            ApiError::CsrfRejected => "A request authenticated by cookie must send the session's CSRF token in X-CSRF-Token.".into(),
            ApiError::LoginFailed => "The email or password is wrong.".into(),
            ApiError::TooManyAttempts { retry_after } => format!("Too many failed attempts; try again in {} s.", retry_after.as_secs().max(1)),
            ApiError::EmailTaken => {
                errors.push(ProblemItem { pointer: Some("/email".into()), parameter: None, detail: "is already registered".into() });
                "An account with this email already exists; log in instead.".into()
            }
            ApiError::SessionNotFound => "You have no session with this id.".into(),
            ApiError::IdempotencyConflict => {
                errors.push(ProblemItem { pointer: None, parameter: Some("Idempotency-Key".into()), detail: "is in use by a request still in progress".into() });
                "A request with this Idempotency-Key is still being executed; retry after the time in Retry-After to get its response.".into()
            }
            ApiError::IdempotencyMismatch => {
                errors.push(ProblemItem { pointer: None, parameter: Some("Idempotency-Key".into()), detail: "was used for a different request".into() });
                "This Idempotency-Key was used for a different request (another method, path or body); send a new key for a new request.".into()
            }
            ApiError::PhotoTooLarge { limit } => {
                errors.push(ProblemItem { pointer: Some(String::new()), parameter: None, detail: format!("is over {limit} bytes") });
                format!("The photo is larger than the limit of {limit} bytes.")
            }
            ApiError::Photo(e) => {
                // The header when it is the claim at fault, else the body (the JSON pointer
                // "" names the whole of it).
                let at_header = matches!(e, UploadError::UnsupportedContentType { .. } | UploadError::ContentTypeMismatch { .. });
                errors.push(ProblemItem {
                    pointer: (!at_header).then(String::new),
                    parameter: at_header.then(|| "Content-Type".to_string()),
                    detail: e.to_string(),
                });
                let mut detail = e.to_string();
                if let Some(first) = detail.get_mut(0..1) {
                    first.make_ascii_uppercase();
                }
                format!("{detail}. Nothing was stored.")
            }
            ApiError::PhotoNotFound(id) => format!("User {id} has no processed photo (an upload still being processed has its job at /jobs/{{id}})."),
            ApiError::JobNotFound(id) => format!("There is no photo job {id}."),
        };
        Problem {
            kind: format!("urn:strata:problem:{slug}"),
            title: title.into(),
            status: self.status().as_u16(),
            detail,
            instance: None,
            errors,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // The cause chain is logged once, here; the client sees only the generic detail.
            tracing::error!(error = %self, status = status.as_u16(), "request failed");
        }
        let problem = self.problem();
        let mut response = problem_response(status, &problem);
        if status == StatusCode::SERVICE_UNAVAILABLE
            || matches!(self, ApiError::IdempotencyConflict)
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ApiError::TooManyAttempts { retry_after } = &self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="strata", error="invalid_token""#),
            );
        }
        response
    }
}

/// Serializes a problem with the right media type.
pub fn problem_response(status: StatusCode, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}
