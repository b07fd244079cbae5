//! Profile photos: `PUT /users/{id}/photo` (checked at once, processed later: 202 and a job),
//! `GET /jobs/{id}`, `GET /users/{id}/photo?size=` (a redirect to the current content-addressed
//! URL), `GET /photos/{key}` (the bytes, cacheable forever: a key names one content) and
//! `DELETE /users/{id}/photo`. The checks, the catalog and the queue are the photo pipeline's
//! (`strata_photos`); this module is their HTTP face. A user's representation is unchanged:
//! the photo lives beside it, never in it.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use strata_blobs::BlobKey;
use strata_core::user::UserId;
use strata_photos::catalog::{Job, JobId, JobState};
use strata_photos::process::Size;
use strata_photos::upload::{Format, MAX_UPLOAD_BYTES, UploadError};
use strata_photos::{Photos, SubmitError};
use strata_store::ReadRequirement;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Principal;
use crate::problem::ApiError;
use crate::request::user_id;
use crate::state::AppState;

/// How long a content-addressed photo may be cached: a year, the most RFC 9111 caches keep.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// A photo job, as `GET /jobs/{id}` shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    /// The job's id.
    pub id: u64,
    /// Whose photo it is.
    pub user_id: u64,
    /// `queued`, `processing`, `done`, `failed` (its attempts used; an operator may replay it)
    /// or `superseded` (a newer upload or a delete came first).
    #[schema(pattern = "^(queued|processing|done|failed|superseded)$")]
    pub state: String,
    /// Times a worker has begun it.
    pub attempts: u32,
    /// Why its last attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where the photo is served, once the job is done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub photo: Option<String>,
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> Self {
        Self {
            id: job.id.0,
            user_id: job.user,
            state: job.state.as_str().into(),
            attempts: job.attempts,
            error: job.error.clone(),
            photo: (job.state == JobState::Done).then(|| format!("/users/{}/photo", job.user)),
        }
    }
}

/// The bytes of a JPEG, PNG or WebP image.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct PhotoBytes(Vec<u8>);

fn size_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(Size::ALL.iter().map(|s| s.as_str())))
        .default(Some(Size::Original.as_str().into()))
        .description(Some(
            "The longest side in pixels of the thumbnail, or the original (metadata removed).",
        ))
        .build()
}

fn job_id_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .minimum(Some(0))
        .description(Some("A job id, as `PUT /users/{id}/photo` answered it."))
        .build()
}

fn blob_key_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[0-9a-f]{64}$"))
        .description(Some(
            "The SHA-256 of the image's bytes, as a redirect from `/users/{id}/photo` names it.",
        ))
        .build()
}

/// `?size=` of `GET /users/{id}/photo`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SizeQuery {
    #[param(schema_with = size_schema)]
    size: Option<String>,
}

/// The job of `/jobs/{id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct JobIdPath {
    #[param(schema_with = job_id_schema)]
    id: u64,
}

/// The image of `/photos/{key}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct BlobKeyPath {
    #[param(schema_with = blob_key_schema)]
    key: String,
}

fn pipeline(state: &AppState) -> Result<&Photos, ApiError> {
    state
        .photos
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("this server runs without the photo pipeline".into()))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

/// Reads a photo body: 413 at once when `Content-Length` is over the limit, else while reading.
async fn photo_body(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(size) = declared
        && size > MAX_UPLOAD_BYTES
    {
        return Err(ApiError::Photo(UploadError::TooLarge {
            size,
            max: MAX_UPLOAD_BYTES,
        }));
    }
    match axum::body::to_bytes(body, MAX_UPLOAD_BYTES).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(e) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(ApiError::PhotoTooLarge {
                        limit: MAX_UPLOAD_BYTES,
                    });
                }
                source = s.source();
            }
            Err(ApiError::BodyRead(e.to_string()))
        }
    }
}

/// Uploads a user's photo. It is checked at once — type sniffed from the bytes, completeness,
/// pixel dimensions from the header — and processed later by a worker: the answer is the job.
#[utoipa::path(put, path = "/users/{id}/photo", tag = "photos", security(("bearer" = []), ("cookie" = [], "csrf" = [])),
    params(crate::params::UserIdPath),
    request_body(description = "The image: JPEG, PNG or WebP, at most 10 MiB. `Content-Type` may be left out or `application/octet-stream`; if it names an image type, it must be the bytes' own.",
        content((PhotoBytes = "image/jpeg"), (PhotoBytes = "image/png"), (PhotoBytes = "image/webp"), (PhotoBytes = "application/octet-stream"))),
    responses(
        (status = 202, description = "Accepted: recorded and queued; the job tells when the photo is served", body = JobView,
            headers(("Location" = String, description = "`/jobs/{job id}`"))),
        (status = 400, description = "`invalid-user-id`; `unreadable-body`", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::Unauthenticated,
        (status = 403, description = "`forbidden`: not your profile, and you are not an admin; `csrf`: a cookie-authenticated request without `X-CSRF-Token`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`user-not-found`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "`photo-too-large`: over 10 MiB (10,485,760 bytes)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-image`: the bytes are no JPEG, PNG or WebP, or `Content-Type` names another type than the bytes' (named in `errors[].parameter`)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-image`: the file is truncated or its header unreadable; `image-too-large`: over 16,384 pixels a side or 50,000,000 pixels in all (read from the header: nothing is decoded)", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::ServerErrors,
    ))]
pub async fn upload(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = user_id(&raw)?;
    principal.may_change(id)?;
    let photos = pipeline(&state)?;
    let bytes = photo_body(&headers, body).await?;
    state
        .store
        .get(id, ReadRequirement::ANY)
        .await?
        .ok_or(ApiError::UserNotFound(id))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let job_id = state
        .ids
        .next_id()
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let job = photos
        .submit(JobId(job_id), id.0, bytes, content_type.as_deref())
        .await
        .map_err(|e| match e {
            SubmitError::Upload(u) => ApiError::Photo(u),
            SubmitError::Storage(s) => ApiError::Unavailable(s),
        })?;
    tracing::info!(user = %id, job = %job.id, format = job.format.as_str(), "Accepted a photo; its job is queued.");
    let mut r = (StatusCode::ACCEPTED, axum::Json(JobView::from(&job))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/jobs/{}", job.id)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// A photo job: where it is, and where its photo is served once done. Its user's (or an
/// admin's) to read.
#[utoipa::path(get, path = "/jobs/{id}", tag = "photos", security(("bearer" = []), ("cookie" = [])),
    params(JobIdPath),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "`invalid-parameter`: the id is not an unsigned 64-bit decimal", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::Unauthenticated,
        (status = 403, description = "`forbidden`: not your photo's job, and you are not an admin", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`job-not-found`", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::ServerErrors,
    ))]
pub async fn job(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id: u64 = raw.parse().map_err(|_| ApiError::InvalidParameter {
        parameter: "id",
        detail: "must be an unsigned 64-bit integer in decimal".into(),
    })?;
    let photos = pipeline(&state)?;
    let job = photos
        .job(JobId(id))
        .await
        .map_err(internal)?
        .ok_or(ApiError::JobNotFound(id))?;
    principal.may_change(UserId(job.user))?;
    Ok(axum::Json(JobView::from(&job)).into_response())
}

/// A user's photo at one size: a redirect to its content-addressed URL, which changes when
/// the photo does (browsers revalidate it; the edges may keep it, purged when it changes; the
/// image behind it may be cached forever).
#[utoipa::path(get, path = "/users/{id}/photo", tag = "photos", security(()),
    params(crate::params::UserIdPath, SizeQuery),
    responses(
        (status = 307, description = "Where the image is: `/photos/{key}`",
            headers(("Location" = String, description = "`/photos/{key}`"), ("Cache-Control" = String, description = "`no-cache`"),
                    ("Surrogate-Key" = String, description = "`user-{id}`: purged from the edges when the photo changes"),
                    ("CDN-Cache-Control" = String, description = "How long the edges may keep it, as for the profile (only when the server purges edges)"))),
        (status = 400, description = "`invalid-user-id`; `invalid-parameter`: `size` is not 64, 128, 512 or original, or is given twice", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`photo-not-found`: no photo, or its first upload is still being processed", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::ServerErrors,
    ))]
pub async fn get_photo(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    query: Result<Query<SizeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let id = user_id(&raw)?;
    let Query(query) = query.map_err(|e| ApiError::InvalidParameter {
        parameter: "size",
        detail: e.body_text(),
    })?;
    let size = match query.size.as_deref() {
        None => Size::Original,
        Some(s) => Size::parse(s).ok_or_else(|| ApiError::InvalidParameter {
            parameter: "size",
            detail: "must be one of 64, 128, 512, original".into(),
        })?,
    };
    let photos = pipeline(&state)?;
    let photo = photos
        .photo(id.0)
        .await
        .map_err(internal)?
        .ok_or(ApiError::PhotoNotFound(id))?;
    let key = photo.key(size).ok_or(ApiError::PhotoNotFound(id))?;
    let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/photos/{key}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    // Edges may keep it like the profile, filed under the user's key: the worker that makes
    // a new photo the user's purges it, and so does a delete.
    state
        .edges
        .tag(r.headers_mut(), &crate::edge_purge::user_key(id.0));
    Ok(r)
}

/// An image by its content address: immutable, so cached for a year by any cache.
#[utoipa::path(get, path = "/photos/{key}", tag = "photos", security(()),
    params(BlobKeyPath),
    responses(
        (status = 200, description = "The image", content(
            (PhotoBytes = "image/jpeg"), (PhotoBytes = "image/png"), (PhotoBytes = "image/webp")),
            headers(("Cache-Control" = String, description = "`public, max-age=31536000, immutable`"),
                    ("ETag" = String, description = "The key, quoted"))),
        (status = 304, description = "Not modified (`If-None-Match` named this key)"),
        (status = 400, description = "`invalid-parameter`: the key is not 64 lower-case hexadecimal digits", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no photo is served from this key (any more)", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::ServerErrors,
    ))]
pub async fn image(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = BlobKey::parse(&raw).map_err(|_| ApiError::InvalidParameter {
        parameter: "key",
        detail: "must be 64 lower-case hexadecimal digits".into(),
    })?;
    let tag = format!("\"{key}\"");
    let photos = pipeline(&state)?;
    let bytes = photos
        .published(&key)
        .await
        .map_err(internal)?
        .ok_or(ApiError::NoRoute)?;
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == tag || t.trim() == "*")
        });
    let mut r = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mime = Format::sniff(&bytes).map_or("application/octet-stream", Format::mime);
        let mut r = (StatusCode::OK, bytes).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
        r
    };
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    Ok(r)
}

/// Deletes a user's photo (and drops an upload still being processed).
#[utoipa::path(delete, path = "/users/{id}/photo", tag = "photos", security(("bearer" = []), ("cookie" = [], "csrf" = [])),
    params(crate::params::UserIdPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid-user-id`", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::Unauthenticated,
        (status = 403, description = "`forbidden`: not your profile, and you are not an admin; `csrf`: a cookie-authenticated request without `X-CSRF-Token`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`photo-not-found`", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::responses::ServerErrors,
    ))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = user_id(&raw)?;
    principal.may_change(id)?;
    let photos = pipeline(&state)?;
    if !photos.delete(id.0).await.map_err(internal)? {
        return Err(ApiError::PhotoNotFound(id));
    }
    state.edges.purge(crate::edge_purge::user_key(id.0));
    Ok(StatusCode::NO_CONTENT.into_response())
}
