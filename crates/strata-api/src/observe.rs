//! Cross-cutting request handling, as one middleware: request ids, a total-time limit, one
//! structured log line per request, and Prometheus metrics.
//!
//! Metric names follow `strata_<tier>_<thing>_<unit>`:
//! - `strata_http_requests_total{method,route,status}` — request rate by route and status;
//! - `strata_http_errors_total{method,route,status}` — responses with status ≥ 500 or 4xx;
//! - `strata_http_request_duration_seconds{method,route,status}` — latency histogram with
//!   explicit buckets from 0.5 ms to 10 s;
//! - `strata_http_requests_in_flight` — gauge;
//! - `strata_idempotency_total{outcome}` — keyed requests (see `idempotency`).
//!
//! `route` is the matched route template (`/users/{id}`), never the raw path, so label
//! cardinality stays bounded; unmatched paths are counted as `unmatched`.
//!
//! Traces: the request continues the trace of its `traceparent` (the balancer's span as the
//! parent) or starts one (sampled at `--trace-sample`); its span `api` has the data and cache
//! calls made while serving it as children, and [`strata_core::trace::current`] hands the
//! context to work that leaves the process (a photo job).

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;

use strata_core::trace::Sampler;
use tracing::Instrument as _;

use crate::problem::ApiError;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static(strata_core::trace::TRACEPARENT);
/// Total time a request may take before it is answered 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The process-wide Prometheus recorder, with this tier's metrics described.
pub fn metrics_handle() -> PrometheusHandle {
    let handle = strata_core::telemetry::prometheus();
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_counter!(
            "strata_http_requests_total",
            "HTTP requests served, by method, route and status."
        );
        metrics::describe_counter!(
            "strata_http_errors_total",
            "HTTP requests answered with a 4xx or 5xx status."
        );
        metrics::describe_histogram!(
            "strata_http_request_duration_seconds",
            metrics::Unit::Seconds,
            "Time from request head to response head."
        );
        metrics::describe_gauge!(
            "strata_http_requests_in_flight",
            "Requests being served now."
        );
        metrics::describe_counter!(
            "strata_idempotency_total",
            "Requests with an Idempotency-Key, by outcome: executed, replayed, conflict, mismatch."
        );
    });
    handle
}

static TRACE_SAMPLER: std::sync::OnceLock<Sampler> = std::sync::OnceLock::new();

/// The sampling of traces this server starts (the first call wins; default 1%).
pub fn set_trace_sampler(sampler: Sampler) {
    let _ = TRACE_SAMPLER.set(sampler);
}

/// The middleware: wraps every request.
pub async fn observe(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let request_id = match req.headers().get(&REQUEST_ID) {
        Some(v) if strata_core::request_id::is_valid(v.as_bytes()) => v.clone(),
        _ => {
            let v = HeaderValue::from_str(&strata_core::request_id::generate())
                .unwrap_or(HeaderValue::from_static("unknown"));
            req.headers_mut().insert(REQUEST_ID, v.clone());
            v
        }
    };
    let sampler = TRACE_SAMPLER.get_or_init(Sampler::default);
    let (trace, parent) = strata_core::trace::continue_or_start(
        req.headers().get(TRACEPARENT).map(HeaderValue::as_bytes),
        sampler,
    );
    let span = tracing::info_span!(
        "api",
        trace_id = %trace.trace_id,
        span_id = %trace.span_id,
        parent_id = parent.map(tracing::field::display),
        sampled = trace.sampled,
        method = %method,
        route = %route,
        status = tracing::field::Empty,
    );
    let in_flight = metrics::gauge!("strata_http_requests_in_flight");
    in_flight.increment(1.0);
    let run = strata_core::trace::scope(trace, next.run(req)).instrument(span.clone());
    let mut response = match tokio::time::timeout(REQUEST_TIMEOUT, run).await {
        Ok(r) => r,
        Err(_) => ApiError::Timeout(REQUEST_TIMEOUT).into_response(),
    };
    in_flight.decrement(1.0);
    let elapsed = start.elapsed();
    let status = response.status();
    response
        .headers_mut()
        .insert(REQUEST_ID, request_id.clone());
    let labels = [
        ("method", method.to_string()),
        ("route", route.clone()),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("strata_http_requests_total", &labels).increment(1);
    if status.is_client_error() || status.is_server_error() {
        metrics::counter!("strata_http_errors_total", &labels).increment(1);
    }
    metrics::histogram!("strata_http_request_duration_seconds", &labels)
        .record(elapsed.as_secs_f64());
    span.record("status", status.as_u16());
    let _in_span = span.enter();
    tracing::info!(
        method = %method,
        route = %route,
        status = status.as_u16(),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        request_id = %String::from_utf8_lossy(request_id.as_bytes()),
        trace_id = %trace.trace_id,
        "request"
    );
    response
}
