//! The admin API, on its own port: see and change the backend set at runtime.
//!
//! - `GET /admin/backends` — every backend with health, ejection, drain state, in-flight
//!   requests and counters;
//! - `PUT /admin/backends` — `{"backends":[{"name":"api-1","addr":"127.0.0.1:4001","weight":1}]}`
//!   replaces the set; an invalid body is refused (400, problem+json) and the old set keeps
//!   serving; requests in flight to removed backends finish;
//! - `POST /admin/backends/{name}/drain` and `/undrain` — stop or resume new requests (kept
//!   in the drain file when there is one: [`crate::drains`]);
//! - `GET /traces` and `GET /traces/{trace_id}` — recorded traces (`strata_core::trace`);
//! - `GET /metrics` (Prometheus), `GET /healthz`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::Pool;
use crate::pool::BackendSpec;

#[derive(Clone)]
struct AdminState {
    pool: Arc<Pool>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Where drains are kept, and the lock that makes each rewrite see the drains before it.
    drain_file: Option<Arc<(std::path::PathBuf, tokio::sync::Mutex<()>)>>,
}

fn problem(status: StatusCode, detail: String) -> Response {
    let body = serde_json::json!({"type": "urn:strata:problem:invalid-backends", "title": "Invalid backend set", "status": status.as_u16(), "detail": detail});
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendSet {
    backends: Vec<BackendSpec>,
}

async fn list(State(s): State<AdminState>) -> Response {
    Json(serde_json::json!({"pool": s.pool.name, "algorithm": s.pool.algorithm, "backends": s.pool.views()})).into_response()
}

async fn replace(State(s): State<AdminState>, body: axum::body::Bytes) -> Response {
    let set: BackendSet = match serde_json::from_slice(&body) {
        Ok(set) => set,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                format!("the body is not a backend set ({e}); the previous set keeps serving"),
            );
        }
    };
    let mut names = std::collections::HashSet::new();
    for b in &set.backends {
        if b.name.is_empty() || b.name.len() > 64 || !names.insert(b.name.clone()) {
            return problem(
                StatusCode::BAD_REQUEST,
                format!(
                    "backend names must be unique, 1 to 64 characters ({:?}); the previous set keeps serving",
                    b.name
                ),
            );
        }
        if b.weight == 0 || b.weight > 1000 {
            return problem(
                StatusCode::BAD_REQUEST,
                format!(
                    "backend {} has weight {}: weights are 1 to 1000; the previous set keeps serving",
                    b.name, b.weight
                ),
            );
        }
    }
    s.pool.set_backends(&set.backends);
    tracing::info!(count = set.backends.len(), "backend set replaced");
    list(State(s)).await
}

async fn drain(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    set_drain(s, name, true).await
}

async fn undrain(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    set_drain(s, name, false).await
}

async fn set_drain(s: AdminState, name: String, draining: bool) -> Response {
    let _kept = match &s.drain_file {
        Some(file) => Some(file.1.lock().await),
        None => None,
    };
    if s.pool.set_draining(&name, draining) {
        if let Some(file) = &s.drain_file {
            let (path, drained) = (file.0.clone(), s.pool.drained());
            let saved = tokio::task::spawn_blocking(move || crate::drains::save(&path, &drained))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r);
            if let Err(e) = saved {
                // The drain holds in this process; only a restart would forget it.
                tracing::warn!(file = %file.0.display(), "cannot keep the drain: {e}");
            }
        }
        Json(serde_json::json!({"backend": name, "draining": draining})).into_response()
    } else {
        problem(
            StatusCode::NOT_FOUND,
            format!("there is no backend named {name:?}"),
        )
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let mut r = s.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

pub fn router(pool: Arc<Pool>) -> axum::Router {
    router_with_drain_file(pool, None)
}

/// The admin API, keeping drains in `drain_file` when one is given.
pub fn router_with_drain_file(
    pool: Arc<Pool>,
    drain_file: Option<std::path::PathBuf>,
) -> axum::Router {
    let state = AdminState {
        pool,
        metrics: strata_core::telemetry::prometheus(),
        drain_file: drain_file.map(|p| Arc::new((p, tokio::sync::Mutex::new(())))),
    };
    axum::Router::new()
        .route("/admin/backends", get(list).put(replace))
        .route("/admin/backends/{name}/drain", post(drain))
        .route("/admin/backends/{name}/undrain", post(undrain))
        .route("/metrics", get(metrics))
        .merge(trace_routes())
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "alive"})) }),
        )
        .with_state(state)
}

/// `GET /traces` and `GET /traces/{trace_id}`, for any role's admin router (the edge's too).
pub fn trace_routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
        .route("/traces", get(traces))
        .route("/traces/{trace_id}", get(trace))
}

/// `GET /traces?limit=N`: this process's recent and slowest recorded traces.
async fn traces(axum::extract::RawQuery(query): axum::extract::RawQuery) -> Response {
    let limit = strata_core::trace::store::limit_from_query(query.as_deref());
    json_text(StatusCode::OK, strata_core::trace::store::index_json(limit))
}

/// `GET /traces/{trace_id}`: the spans of one trace this process keeps.
async fn trace(Path(trace_id): Path<String>) -> Response {
    let (status, content_type, body) = strata_core::trace::store::trace_response(&trace_id);
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        [(header::CONTENT_TYPE, content_type)],
        body,
    )
        .into_response()
}

fn json_text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
