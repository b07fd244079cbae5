//! OTLP export against a collector on a loopback port (a minimal HTTP endpoint that keeps what
//! it is sent, since the collector is the user's own): recorded spans arrive as OTLP/JSON with
//! their trace and parent ids; then the collector stops answering, and spans keep being made
//! without waiting on it — the export queue fills and what does not fit is dropped and
//! counted, and the batch the collector never answered is counted as failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_core::trace::{TraceContext, layer::TraceLayer, otlp};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt as _;

/// Reads one HTTP/1.1 request with a Content-Length body; `None` on anything else.
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string());
            }
        }
        if buf.len() > 64 << 20 {
            return None;
        }
    }
}

fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn sampled_trace(children: usize) -> TraceContext {
    let ctx = TraceContext::start(true);
    let root = tracing::info_span!(
        "request",
        trace_id = %ctx.trace_id,
        span_id = %ctx.span_id,
        sampled = true,
    );
    root.in_scope(|| {
        for _ in 0..children {
            let _db = tracing::info_span!("db.get", engine = "sqlite").entered();
        }
    });
    ctx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_and_a_collector_that_stops_answering_costs_only_dropped_spans() {
    let metrics = strata_core::telemetry::prometheus();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let answering = Arc::new(AtomicBool::new(true));
    let (bodies, mut received) = mpsc::channel::<String>(64);
    let collector = {
        let answering = answering.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                if !answering.load(Ordering::SeqCst) {
                    // A collector that hangs: the connection stays open, unanswered.
                    held.push(sock);
                    continue;
                }
                let (bodies, answering) = (bodies.clone(), answering.clone());
                tokio::spawn(async move {
                    while let Some(body) = read_request(&mut sock).await {
                        if !answering.load(Ordering::SeqCst) {
                            // Hangs on a connection it used to answer on, too.
                            std::future::pending::<()>().await;
                        }
                        let _ = bodies.send(body).await;
                        let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                        if sock.write_all(ok.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        })
    };
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(TraceLayer))
        .expect("the only subscriber of this test process");
    otlp::start(format!("http://{addr}/v1/traces"));

    let ctx = sampled_trace(2);
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans: Vec<Value> = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let body = tokio::time::timeout(left, received.recv())
            .await
            .expect("the collector got the trace in time")
            .expect("a body");
        let doc: Value = serde_json::from_str(&body).expect("OTLP/JSON");
        let service = &doc["resourceSpans"][0]["resource"]["attributes"][0];
        assert_eq!(service["key"], "service.name", "{doc:#}");
        let spans: Vec<Value> = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["traceId"] == ctx.trace_id.to_string())
            .cloned()
            .collect();
        if !spans.is_empty() {
            break spans;
        }
    };
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let root = spans
        .iter()
        .find(|s| s["name"] == "request")
        .expect("the root span");
    assert_eq!(root["spanId"], ctx.span_id.to_string());
    assert_eq!(root["kind"], 2, "the process's first span is SERVER");
    for child in spans.iter().filter(|s| s["name"] == "db.get") {
        assert_eq!(child["parentSpanId"], root["spanId"]);
        assert_eq!(child["attributes"][0]["key"], "engine");
        let (start, end): (u64, u64) = (
            child["startTimeUnixNano"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("start"),
            child["endTimeUnixNano"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("end"),
        );
        assert!(end >= start);
    }
    // Counted once the collector's answer is read.
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&metrics.render(), "strata_trace_spans_exported_total") < 3 {
        assert!(Instant::now() < deadline, "{}", metrics.render());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The collector stops answering. Many more traces than the queue holds are made at once:
    // none waits for the collector; the surplus is dropped and counted.
    answering.store(false, Ordering::SeqCst);
    let made = otlp::QUEUE * 4;
    for _ in 0..made {
        sampled_trace(0);
    }
    let dropped_full = counter(
        &metrics.render(),
        "strata_trace_spans_dropped_total{reason=\"queue_full\"}",
    );
    assert!(
        dropped_full > 0 && dropped_full <= made as u64,
        "dropped {dropped_full} of {made}: {}",
        metrics.render()
    );
    // The batch sent to the hanging collector times out and is counted as failed.
    let deadline = Instant::now() + otlp::TIMEOUT * 4;
    loop {
        let failed = counter(
            &metrics.render(),
            "strata_trace_spans_dropped_total{reason=\"export_failed\"}",
        );
        if failed > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed export counted: {}",
            metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    collector.abort();
}
