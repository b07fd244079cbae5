//! Logging setup shared by every role.
//!
//! Logs go to stderr — stdout carries only the readiness line — as JSON when stderr is not a
//! terminal (a log file, a collector) and as compact text when a person is watching. The level
//! comes from `STRATA_LOG` (same syntax as `RUST_LOG`), default `info`.
//!
//! Metrics: one Prometheus recorder per process ([`prometheus`]), with explicit histogram
//! buckets; names follow `strata_<tier>_<thing>_<unit>`.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use tracing::Level;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, filter};

/// Installs the global subscriber: the log lines (filtered by `STRATA_LOG`) and the trace
/// recorder ([`crate::trace::layer`], which sees spans at `info` and above whatever the log
/// level), and, inside a Tokio runtime, starts the OTLP exporter when the environment names a
/// collector ([`crate::trace::otlp`]). Calling it twice is harmless (the second call does
/// nothing).
///
/// A JSON log line lists the spans it was written in (`spans`), so a line written while a
/// request is served carries the request's `trace_id`.
pub fn init() {
    let filter = EnvFilter::try_from_env("STRATA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let traces = crate::trace::layer::TraceLayer.with_filter(filter::filter_fn(|m| {
        m.is_span() && *m.level() <= Level::INFO
    }));
    let logs = if std::io::stderr().is_terminal() {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .compact()
            .with_target(false)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_filter(filter)
            .boxed()
    };
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok();
    if installed && tokio::runtime::Handle::try_current().is_ok() {
        crate::trace::otlp::start_from_env();
    }
}

/// Latency histogram buckets (seconds) for every `*_seconds` metric: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder, installed on first use; every role renders its
/// `/metrics` from the returned handle.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding program): then this
            // handle renders only what it recorded, which is still valid output.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
