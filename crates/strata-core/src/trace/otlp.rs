//! Export to an OpenTelemetry collector: OTLP over HTTP with the JSON encoding
//! (`POST {endpoint}/v1/traces`, `application/json`), configured by the standard variables
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL) or `OTEL_EXPORTER_OTLP_ENDPOINT` (the
//! base, `/v1/traces` appended).
//!
//! A collector that is slow or unreachable never slows a request: finished traces go into a
//! bounded queue ([`QUEUE`] traces) with `try_send`, and what does not fit is dropped and
//! counted (`strata_trace_spans_dropped_total{reason="queue_full"}`); a batch the collector
//! does not take within [`TIMEOUT`] is dropped and counted (`reason="export_failed"`).
//! Exported spans are counted in `strata_trace_spans_exported_total`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::store::{LocalTrace, SpanRecord};

/// Finished traces waiting for export.
pub const QUEUE: usize = 1024;
/// Spans sent in one request at most.
pub const BATCH_SPANS: usize = 512;
/// How long a batch waits for more spans.
pub const LINGER: Duration = Duration::from_secs(1);
/// How long the collector may take to answer one batch.
pub const TIMEOUT: Duration = Duration::from_secs(3);

static SENDER: OnceLock<mpsc::Sender<Arc<LocalTrace>>> = OnceLock::new();

/// The collector's traces URL from the environment: `Ok(None)` when none is configured, an
/// error naming the variable when its value is not an http(s) URL.
pub fn endpoint_from_env() -> Result<Option<String>, String> {
    endpoint_from(
        std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").ok(),
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok(),
    )
}

/// [`endpoint_from_env`] on given values of the two variables.
pub fn endpoint_from(full: Option<String>, base: Option<String>) -> Result<Option<String>, String> {
    let (name, url) = match (full, base) {
        (Some(u), _) if !u.trim().is_empty() => {
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", u.trim().to_owned())
        }
        (_, Some(u)) if !u.trim().is_empty() => (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("{}/v1/traces", u.trim().trim_end_matches('/')),
        ),
        _ => return Ok(None),
    };
    let ok = reqwest::Url::parse(&url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if !ok {
        return Err(format!(
            "{name} must be an http:// or https:// URL of an OTLP collector (e.g. http://127.0.0.1:4318): got {url:?}"
        ));
    }
    Ok(Some(url))
}

/// Starts the exporter to `url` (once per process; later calls do nothing). Must run inside
/// a Tokio runtime.
pub fn start(url: String) {
    let (tx, rx) = mpsc::channel(QUEUE);
    if SENDER.set(tx).is_err() {
        return;
    }
    describe();
    tokio::spawn(run(url, rx));
}

/// Starts the exporter when the environment names a collector; logs a bad setting and goes
/// on without one.
pub fn start_from_env() {
    match endpoint_from_env() {
        Ok(Some(url)) => {
            tracing::info!(%url, "exporting traces by OTLP");
            start(url);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "trace export is off"),
    }
}

/// Hands a finished trace to the exporter, if one runs; never waits.
pub(crate) fn offer(trace: &Arc<LocalTrace>) {
    let Some(tx) = SENDER.get() else {
        return;
    };
    if tx.try_send(trace.clone()).is_err() {
        metrics::counter!("strata_trace_spans_dropped_total", "reason" => "queue_full")
            .increment(trace.span_count() as u64);
    }
}

fn describe() {
    metrics::describe_counter!(
        "strata_trace_spans_exported_total",
        "Spans accepted by the OTLP collector."
    );
    metrics::describe_counter!(
        "strata_trace_spans_dropped_total",
        "Spans not exported, by reason: queue_full (the collector was not keeping up), export_failed."
    );
}

async fn run(url: String, mut rx: mpsc::Receiver<Arc<LocalTrace>>) {
    let client = match reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the OTLP client; trace export is off");
            return;
        }
    };
    let mut batch: Vec<Arc<LocalTrace>> = Vec::new();
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut spans = first.span_count();
        batch.push(first);
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while spans < BATCH_SPANS {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(t) => {
                        spans += t.span_count();
                        batch.push(t);
                    }
                    None => break,
                },
                () = &mut linger => break,
            }
        }
        let body = encode(&batch);
        let sent = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                metrics::counter!("strata_trace_spans_exported_total").increment(spans as u64);
            }
            outcome => {
                metrics::counter!("strata_trace_spans_dropped_total", "reason" => "export_failed")
                    .increment(spans as u64);
                let why = match outcome {
                    Ok(r) => format!("the collector answered {}", r.status()),
                    Err(e) => e.to_string(),
                };
                tracing::debug!(%why, spans, "OTLP export failed");
            }
        }
        batch.clear();
    }
}

/// The OTLP/JSON body for `traces` (`ExportTraceServiceRequest`): ids in hex, times as
/// decimal strings of nanoseconds, kind SERVER for a process's first span of a trace and
/// INTERNAL for the others.
pub fn encode(traces: &[Arc<LocalTrace>]) -> Value {
    let mut spans = Vec::new();
    for t in traces {
        spans.push(span_json(&t.root, 2));
        spans.extend(t.spans.iter().map(|s| span_json(s, 1)));
    }
    let service = traces.first().map_or("strata", |t| t.service);
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": format!("strata-{service}")}},
                {"key": "service.namespace", "value": {"stringValue": "strata"}},
            ]},
            "scopeSpans": [{
                "scope": {"name": "strata", "version": env!("CARGO_PKG_VERSION")},
                "spans": spans,
            }],
        }],
    })
}

fn span_json(s: &SpanRecord, kind: u8) -> Value {
    let mut v = json!({
        "traceId": s.trace_id.to_string(),
        "spanId": s.span_id.to_string(),
        "name": s.name,
        "kind": kind,
        "startTimeUnixNano": s.start_unix_nanos.to_string(),
        "endTimeUnixNano": s.start_unix_nanos.saturating_add(s.duration_nanos).to_string(),
        "attributes": s.attributes.iter().map(|(k, v)| json!({
            "key": k, "value": {"stringValue": v}
        })).collect::<Vec<_>>(),
    });
    if let Some(p) = s.parent_id {
        v["parentSpanId"] = json!(p.to_string());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::super::{SpanId, TraceId};
    use super::*;

    #[test]
    fn the_collector_url_comes_from_either_variable_and_is_checked() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(endpoint_from(None, None), Ok(None));
        assert_eq!(
            endpoint_from(None, s("http://127.0.0.1:4318/")),
            Ok(s("http://127.0.0.1:4318/v1/traces"))
        );
        assert_eq!(
            endpoint_from(s("https://c.example/otlp"), s("http://ignored")),
            Ok(s("https://c.example/otlp"))
        );
        let err = endpoint_from(s("grpc://127.0.0.1:4317"), None).expect_err("bad scheme");
        assert!(err.contains("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), "{err}");
        assert!(endpoint_from(None, s("not a url")).is_err());
    }

    #[test]
    fn the_body_follows_the_otlp_json_encoding() {
        let trace_id = TraceId::random();
        let root = SpanRecord {
            trace_id,
            span_id: SpanId::random(),
            parent_id: Some(SpanId::random()),
            name: "request",
            start_unix_nanos: 1_700_000_000_000_000_000,
            duration_nanos: 1_500,
            attributes: vec![("route", "/users/{id}".into())],
        };
        let child = SpanRecord {
            span_id: SpanId::random(),
            parent_id: Some(root.span_id),
            name: "db.get",
            ..root.clone()
        };
        let t = Arc::new(LocalTrace {
            service: "api",
            root: root.clone(),
            spans: vec![child.clone()],
            spans_dropped: 0,
        });
        let body = encode(&[t]);
        let spans = &body["resourceSpans"][0]["scopeSpans"][0]["spans"];
        assert_eq!(spans.as_array().map(Vec::len), Some(2));
        assert_eq!(spans[0]["traceId"], trace_id.to_string());
        assert_eq!(spans[0]["kind"], 2);
        assert_eq!(spans[0]["endTimeUnixNano"], "1700000000000001500");
        assert_eq!(spans[1]["parentSpanId"], root.span_id.to_string());
        assert_eq!(spans[0]["attributes"][0]["key"], "route");
        assert_eq!(
            body["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "strata-api"
        );
    }
}
