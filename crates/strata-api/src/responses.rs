//! The responses that several operations share, for their annotations to name: the answers of
//! authentication, of the body reader and of the server's own limits. Each names its problem
//! `type` (after `urn:strata:problem:`); the statuses particular to an operation are listed with
//! it. Every error body is a [`Problem`] in `application/problem+json`.

use utoipa::IntoResponses;

use crate::problem::Problem;

/// No valid access token.
#[derive(IntoResponses)]
#[response(
    status = 401,
    description = "`unauthenticated`: no access token, or one that is malformed, forged, expired, or whose session ended (logged out, revoked, expired).",
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"strata\", error=\"invalid_token\"`"))
)]
#[allow(dead_code)]
pub struct Unauthenticated(Problem);

/// What reading a JSON body can refuse besides malformed JSON (a 400 each operation lists).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum BodyErrors {
    #[response(
        status = 413,
        description = format!("`payload-too-large`: the body is over {} bytes.", crate::request::BODY_LIMIT_BYTES),
        content_type = "application/problem+json"
    )]
    TooLarge(Problem),
    #[response(
        status = 415,
        description = "`unsupported-media-type`: the body is not sent as a media type this operation takes.",
        content_type = "application/problem+json"
    )]
    MediaType(Problem),
}

/// The server's own failures, on every operation that reaches the data tier.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum ServerErrors {
    #[response(
        status = 500,
        description = "`internal`: a bug or corrupt stored data; the cause is logged, never sent.",
        content_type = "application/problem+json"
    )]
    Internal(Problem),
    #[response(
        status = 503,
        description = "`unavailable`: the data tier, the session store or the id generator cannot answer now (or has not reached the commit in `Strata-Read-After`); `timeout`: the request took over the deadline (as for every operation).",
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))
    )]
    Unavailable(Problem),
}

/// The one failure of an operation that needs nothing but the process: the request deadline.
#[derive(IntoResponses)]
#[response(
    status = 503,
    description = format!("`timeout`: the request took over {} s.", crate::observe::REQUEST_TIMEOUT.as_secs()),
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))
)]
#[allow(dead_code)]
pub struct TimedOut(Problem);
