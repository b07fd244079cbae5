//! Operational endpoints: liveness, readiness and metrics. (`/openapi.json` is served by the
//! module that assembles the document, which describes these endpoints too.)

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::problem::ApiError;
use crate::state::AppState;

/// How long `/readyz` waits for the data tier.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Alive: the process serves HTTP. Says nothing about its dependencies.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses(
    (status = 200, description = "Alive", body = crate::schema::Alive),
    crate::responses::TimedOut))]
pub async fn healthz() -> Response {
    Json(serde_json::json!({"status": "alive"})).into_response()
}

/// Ready: the data tier answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), responses(
    (status = 200, description = "Ready", body = crate::schema::Ready),
    (status = 503, description = "`unavailable`: the data tier does not answer; `timeout`", body = crate::problem::Problem, content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying.")))))]
pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(
            serde_json::json!({"status": "ready", "data": state.store.engine()}),
        )
        .into_response()),
        Ok(Err(e)) => Err(ApiError::Unavailable(format!("data tier: {e}"))),
        Err(_) => Err(ApiError::Unavailable(
            "data tier did not answer in time".into(),
        )),
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()), responses(
    (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
    crate::responses::TimedOut))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(photos) = &state.photos {
        photos.record_queue_gauges().await;
    }
    let mut text = state.metrics.render();
    text.push_str(&state.hot_keys.render());
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `GET /traces?limit=N`: this server's recent and slowest recorded traces (see
/// `strata_core::trace`).
pub async fn traces(axum::extract::RawQuery(query): axum::extract::RawQuery) -> Response {
    let limit = strata_core::trace::store::limit_from_query(query.as_deref());
    json_text(strata_core::trace::store::index_json(limit))
}

/// `GET /traces/{trace_id}`: the spans of one trace this server keeps (none: an empty list).
pub async fn trace(
    axum::extract::Path(trace_id): axum::extract::Path<String>,
) -> Result<Response, crate::problem::ApiError> {
    strata_core::trace::store::trace_json(&trace_id)
        .map(json_text)
        .ok_or_else(|| crate::problem::ApiError::InvalidParameter {
            parameter: "trace_id",
            detail: "a trace id is 32 lower-case hexadecimal digits, not all zeros".into(),
        })
}

fn json_text(body: String) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
