//! The edge's admin API, on its own port:
//!
//! - `POST /purge` with `{"url": "http://host/path"}`, `{"prefix": "/static/"}` or
//!   `{"key": "user-12"}`, and `"soft": true` to mark stale instead of removing; answers
//!   `{"purged": N, "kind": …, "mode": …}` (N may be 0: purging what is not there is no
//!   error); a malformed body is refused with 400 problem+json;
//! - `GET /metrics` (Prometheus text), `GET /healthz`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::purge::PurgeRequest;
use crate::serve::Shared;

/// The largest purge request body read.
const MAX_BODY: usize = 64 * 1024;

fn problem(status: StatusCode, detail: String) -> Response {
    let body = serde_json::json!({
        "type": "urn:strata:problem:invalid-purge",
        "title": "Invalid purge",
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

async fn purge(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let request: PurgeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                format!("the body is not a purge ({e})"),
            );
        }
    };
    let (selector, mode) = match request.parse() {
        Ok(p) => p,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e),
    };
    let purged = shared.store.purge(&selector, mode).await;
    shared.stats.purge(selector.kind(), mode.as_str(), purged);
    tracing::info!(
        kind = selector.kind(),
        mode = mode.as_str(),
        purged,
        "purged"
    );
    Json(serde_json::json!({"purged": purged, "kind": selector.kind(), "mode": mode.as_str()}))
        .into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let usage = shared.store.usage().await;
    let mut text = shared.stats.render(usage);
    // What the process records through the `metrics` facade: trace export counters.
    text.push_str(&strata_core::telemetry::prometheus().render());
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

pub fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/purge", post(purge))
        .route("/metrics", get(metrics))
        .merge(strata_lb::admin::trace_routes())
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "alive"})) }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}
