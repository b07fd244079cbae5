//! The bounded in-process store of finished traces: the most recent ones and the slowest, as
//! this process saw them (its own spans of each trace). Every role serves it at `/traces`
//! ([`index_json`]) and `/traces/{trace_id}` ([`trace_json`]); the dashboard joins the parts
//! of one trace from every role.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;

use super::{SpanId, TraceId};

/// Traces kept in the "recent" list.
pub const RECENT: usize = 256;
/// Traces kept in the "slowest" list.
pub const SLOWEST: usize = 32;
/// Spans kept of one trace in one process (more are counted, not kept).
pub const MAX_SPANS: usize = 128;
/// Attributes kept per span.
pub const MAX_ATTRIBUTES: usize = 16;
/// Bytes kept of one attribute value.
pub const MAX_VALUE: usize = 256;

/// One finished span.
#[derive(Clone, Debug, Serialize)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The span it was made in, in this process or (for the first span of a process) the
    /// caller's span.
    pub parent_id: Option<SpanId>,
    pub name: &'static str,
    /// Start, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    pub duration_nanos: u64,
    pub attributes: Vec<(&'static str, String)>,
}

/// This process's part of one trace: its first span and every span made inside it.
#[derive(Clone, Debug, Serialize)]
pub struct LocalTrace {
    pub service: &'static str,
    pub root: SpanRecord,
    pub spans: Vec<SpanRecord>,
    /// Spans beyond [`MAX_SPANS`], not kept.
    pub spans_dropped: u32,
}

impl LocalTrace {
    pub fn span_count(&self) -> usize {
        1 + self.spans.len()
    }
}

impl Serialize for TraceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for SpanId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The store.
#[derive(Debug, Default)]
pub struct TraceStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    recent: VecDeque<Arc<LocalTrace>>,
    /// Sorted slowest first.
    slowest: Vec<Arc<LocalTrace>>,
    finished: u64,
}

impl TraceStore {
    /// Keeps a finished trace (the oldest recent one and the fastest of the slowest make
    /// room).
    pub fn insert(&self, trace: impl Into<Arc<LocalTrace>>) {
        let trace = trace.into();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.finished += 1;
        if inner.recent.len() == RECENT {
            inner.recent.pop_front();
        }
        inner.recent.push_back(trace.clone());
        let d = trace.root.duration_nanos;
        if inner.slowest.len() < SLOWEST
            || inner
                .slowest
                .last()
                .is_some_and(|last| last.root.duration_nanos < d)
        {
            let at = inner
                .slowest
                .partition_point(|t| t.root.duration_nanos >= d);
            inner.slowest.insert(at, trace);
            inner.slowest.truncate(SLOWEST);
        }
    }

    /// Up to `limit` recent traces, newest first.
    pub fn recent(&self, limit: usize) -> Vec<Arc<LocalTrace>> {
        self.inner
            .lock()
            .map(|i| i.recent.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    /// Up to `limit` of the slowest traces kept, slowest first.
    pub fn slowest(&self, limit: usize) -> Vec<Arc<LocalTrace>> {
        self.inner
            .lock()
            .map(|i| i.slowest.iter().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    /// Every part of `trace_id` this process still keeps.
    pub fn get(&self, trace_id: TraceId) -> Vec<Arc<LocalTrace>> {
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        let mut found: Vec<Arc<LocalTrace>> = inner
            .recent
            .iter()
            .chain(inner.slowest.iter())
            .filter(|t| t.root.trace_id == trace_id)
            .cloned()
            .collect();
        found.sort_by_key(|t| (t.root.start_unix_nanos, t.root.span_id));
        found.dedup_by(|a, b| Arc::ptr_eq(a, b));
        found
    }

    /// Traces finished since the process started.
    pub fn finished(&self) -> u64 {
        self.inner.lock().map(|i| i.finished).unwrap_or(0)
    }
}

/// The process's store.
pub fn global() -> &'static TraceStore {
    static STORE: OnceLock<TraceStore> = OnceLock::new();
    STORE.get_or_init(TraceStore::default)
}

#[derive(Serialize)]
struct Summary<'a> {
    trace_id: TraceId,
    name: &'static str,
    start_unix_nanos: u64,
    duration_nanos: u64,
    spans: usize,
    attributes: &'a [(&'static str, String)],
}

fn summary(t: &LocalTrace) -> Summary<'_> {
    Summary {
        trace_id: t.root.trace_id,
        name: t.root.name,
        start_unix_nanos: t.root.start_unix_nanos,
        duration_nanos: t.root.duration_nanos,
        spans: t.span_count(),
        attributes: &t.root.attributes,
    }
}

/// `GET /traces`: this process's recent and slowest traces (summaries), newest and slowest
/// first, at most `limit` of each (bounded by the store's sizes).
pub fn index_json(limit: usize) -> String {
    let store = global();
    let recent = store.recent(limit);
    let slowest = store.slowest(limit);
    serde_json::json!({
        "service": super::service(),
        "finished": store.finished(),
        "recent": recent.iter().map(|t| summary(t)).collect::<Vec<_>>(),
        "slowest": slowest.iter().map(|t| summary(t)).collect::<Vec<_>>(),
    })
    .to_string()
}

/// `GET /traces/{trace_id}`: every span of the trace this process keeps, or `None` when the id
/// is malformed (the caller answers 400) — an unknown id gives an empty list.
pub fn trace_json(trace_id: &str) -> Option<String> {
    let id = TraceId::parse(trace_id)?;
    let parts = global().get(id);
    let spans: Vec<&SpanRecord> = parts
        .iter()
        .flat_map(|t| std::iter::once(&t.root).chain(t.spans.iter()))
        .collect();
    Some(
        serde_json::json!({
            "service": super::service(),
            "trace_id": id,
            "spans": spans,
        })
        .to_string(),
    )
}

/// `GET /traces/{trace_id}` as an HTTP answer for any role's server: status, content type
/// and body — the spans as JSON, or a problem+json naming the field when the id is malformed.
pub fn trace_response(trace_id: &str) -> (u16, &'static str, String) {
    match trace_json(trace_id) {
        Some(body) => (200, "application/json", body),
        None => {
            let detail: String = trace_id.chars().take(64).collect();
            let problem = serde_json::json!({
                "type": "urn:strata:problem:invalid-parameter",
                "title": "Invalid parameter",
                "status": 400,
                "detail": format!("{detail:?} is not a trace id: 32 lower-case hexadecimal digits, not all zeros"),
                "field": "trace_id",
            });
            (400, "application/problem+json", problem.to_string())
        }
    }
}

/// Parses the `limit` query parameter of `/traces` (default 20, at most [`RECENT`]).
pub fn limit_from_query(query: Option<&str>) -> usize {
    query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("limit="))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(20)
        .min(RECENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(ms: u64) -> LocalTrace {
        LocalTrace {
            service: "test",
            root: SpanRecord {
                trace_id: TraceId::random(),
                span_id: SpanId::random(),
                parent_id: None,
                name: "request",
                start_unix_nanos: ms,
                duration_nanos: ms * 1_000_000,
                attributes: Vec::new(),
            },
            spans: Vec::new(),
            spans_dropped: 0,
        }
    }

    #[test]
    fn the_store_keeps_the_newest_and_the_slowest_within_its_bounds() {
        let store = TraceStore::default();
        let slow = trace(5_000);
        let slow_id = slow.root.trace_id;
        store.insert(slow);
        for i in 0..(RECENT as u64 + 50) {
            store.insert(trace(i % 100));
        }
        let recent = store.recent(usize::MAX);
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].root.start_unix_nanos, (RECENT as u64 + 49) % 100);
        let slowest = store.slowest(usize::MAX);
        assert_eq!(slowest.len(), SLOWEST);
        assert_eq!(
            slowest[0].root.trace_id, slow_id,
            "evicted from recent, kept as slowest"
        );
        assert!(
            slowest
                .windows(2)
                .all(|w| w[0].root.duration_nanos >= w[1].root.duration_nanos)
        );
        assert_eq!(store.get(slow_id).len(), 1);
        assert_eq!(store.finished(), RECENT as u64 + 51);
    }

    #[test]
    fn the_limit_parameter_is_bounded() {
        assert_eq!(limit_from_query(None), 20);
        assert_eq!(limit_from_query(Some("limit=5")), 5);
        assert_eq!(limit_from_query(Some("x=1&limit=100000")), RECENT);
        assert_eq!(limit_from_query(Some("limit=abc")), 20);
    }
}
