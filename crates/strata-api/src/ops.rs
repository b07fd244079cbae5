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
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Response {
    Json(serde_json::json!({"status": "alive"})).into_response()
}

/// Ready: the data tier answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready"),
    (status = 503, description = "The data tier does not answer", body = crate::problem::Problem, content_type = "application/problem+json")))]
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
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut r = (StatusCode::OK, state.metrics.render()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
