//! The `tracing` layer that records the spans of sampled traces.
//!
//! A span joins a trace in one of two ways:
//! - it declares `trace_id` (and `span_id`, `parent_id`, `sampled`) itself — the first span
//!   of a request in this process, made from its `traceparent`;
//! - it is opened inside a span that belongs to a trace: it gets a new span id, its parent is
//!   that span.
//!
//! When a span closes, its record goes up to its parent; when the first span of the process's
//! part closes, the whole part goes to the [store](super::store) and, when a collector is
//! configured, to the [OTLP exporter](super::otlp). Spans of unsampled traces are not
//! recorded at all (their fields still reach the log lines).

use std::fmt;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::store::{self, LocalTrace, MAX_ATTRIBUTES, MAX_SPANS, MAX_VALUE, SpanRecord};
use super::{SpanId, TraceId, otlp};

pub use super::{service, set_service};

/// The layer (installed by [`crate::telemetry::init`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct TraceLayer;

/// What a recorded span carries while it is open.
struct SpanData {
    trace_id: TraceId,
    span_id: SpanId,
    parent_id: Option<SpanId>,
    /// The first span of this process's part of the trace.
    local_root: bool,
    started: Instant,
    start_unix_nanos: u64,
    attributes: Vec<(&'static str, String)>,
    /// Finished spans made inside this one.
    children: Vec<SpanRecord>,
    dropped: u32,
}

impl SpanData {
    fn adopt(&mut self, record: SpanRecord, grandchildren: Vec<SpanRecord>, dropped: u32) {
        self.dropped += dropped;
        for r in std::iter::once(record).chain(grandchildren) {
            if self.children.len() < MAX_SPANS {
                self.children.push(r);
            } else {
                self.dropped += 1;
            }
        }
    }
}

impl<S> Layer<S> for TraceLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let (trace_id, span_id, parent_id, local_root) = match fields.trace_id {
            Some(trace_id) => {
                if !fields.sampled {
                    return;
                }
                (
                    trace_id,
                    fields.span_id.unwrap_or_else(SpanId::random),
                    fields.parent_id,
                    true,
                )
            }
            None => {
                let Some(parent) = span.parent() else {
                    return;
                };
                let ext = parent.extensions();
                let Some(p) = ext.get::<SpanData>() else {
                    return;
                };
                (p.trace_id, SpanId::random(), Some(p.span_id), false)
            }
        };
        let data = SpanData {
            trace_id,
            span_id,
            parent_id,
            local_root,
            started: Instant::now(),
            start_unix_nanos: unix_nanos(),
            attributes: fields.attributes,
            children: Vec::new(),
            dropped: 0,
        };
        span.extensions_mut().insert(data);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut ext = span.extensions_mut();
        if let Some(data) = ext.get_mut::<SpanData>() {
            let mut fields = Fields {
                attributes: std::mem::take(&mut data.attributes),
                ..Fields::default()
            };
            values.record(&mut fields);
            data.attributes = fields.attributes;
            // A caller's span learnt after the span was made (recorded into `parent_id`).
            if data.local_root
                && let Some(parent) = fields.parent_id
            {
                data.parent_id = Some(parent);
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(data) = span.extensions_mut().remove::<SpanData>() else {
            return;
        };
        let record = SpanRecord {
            trace_id: data.trace_id,
            span_id: data.span_id,
            parent_id: data.parent_id,
            name: span.name(),
            start_unix_nanos: data.start_unix_nanos,
            duration_nanos: u64::try_from(data.started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            attributes: data.attributes,
        };
        if !data.local_root
            && let Some(parent) = span.parent()
        {
            let mut ext = parent.extensions_mut();
            if let Some(p) = ext.get_mut::<SpanData>() {
                p.adopt(record, data.children, data.dropped);
                return;
            }
        }
        // The first span of this process's part (or one that outlived its parent).
        let mut spans = data.children;
        spans.sort_by_key(|s| s.start_unix_nanos);
        // One copy, shared by the store and the exporter.
        let trace = std::sync::Arc::new(LocalTrace {
            service: service(),
            root: record,
            spans,
            spans_dropped: data.dropped,
        });
        otlp::offer(&trace);
        store::global().insert(trace);
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Reads a span's fields: the trace ones parsed, the others kept as attributes (bounded).
#[derive(Default)]
struct Fields {
    trace_id: Option<TraceId>,
    span_id: Option<SpanId>,
    parent_id: Option<SpanId>,
    sampled: bool,
    attributes: Vec<(&'static str, String)>,
}

impl Fields {
    fn text(&mut self, field: &Field, value: &str) {
        match field.name() {
            "trace_id" => self.trace_id = TraceId::parse(value),
            "span_id" => self.span_id = SpanId::parse(value),
            "parent_id" => self.parent_id = SpanId::parse(value),
            "message" => {}
            name => {
                let mut v = value.to_owned();
                if v.len() > MAX_VALUE {
                    let mut cut = MAX_VALUE;
                    while !v.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    v.truncate(cut);
                }
                if let Some(slot) = self.attributes.iter_mut().find(|(k, _)| *k == name) {
                    slot.1 = v;
                } else if self.attributes.len() < MAX_ATTRIBUTES {
                    self.attributes.push((name, v));
                }
            }
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "sampled" {
            self.sampled = value;
        } else {
            self.text(field, if value { "true" } else { "false" });
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.text(field, &value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.text(field, &value.to_string());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.text(field, &value.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::super::TraceContext;
    use super::*;
    use tracing::Instrument as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn spans_of_a_sampled_trace_are_kept_with_their_parents_and_unsampled_ones_are_not() {
        let subscriber = tracing_subscriber::registry().with(TraceLayer);
        let caller = TraceContext::start(true);
        let here = caller.child();
        let unsampled = TraceContext::start(false);
        tracing::subscriber::with_default(subscriber, || {
            let root = tracing::info_span!(
                "request",
                trace_id = %here.trace_id,
                span_id = %here.span_id,
                parent_id = tracing::field::Empty,
                sampled = here.sampled,
                route = "/users/{id}",
                status = tracing::field::Empty,
            );
            root.record("parent_id", tracing::field::display(caller.span_id));
            root.in_scope(|| {
                let db = tracing::info_span!("db.get", engine = "sqlite");
                db.in_scope(|| {
                    let _inner = tracing::info_span!("db.connection").entered();
                });
                let _cache = tracing::info_span!("cache.get").entered();
            });
            root.record("status", 200);
            drop(root);
            let quiet = tracing::info_span!(
                "request",
                trace_id = %unsampled.trace_id,
                span_id = %unsampled.span_id,
                sampled = false,
            );
            quiet.in_scope(|| {
                let _db = tracing::info_span!("db.get").entered();
            });
        });
        let parts = store::global().get(here.trace_id);
        assert_eq!(parts.len(), 1);
        let part = &parts[0];
        assert_eq!(part.root.span_id, here.span_id);
        assert_eq!(part.root.parent_id, Some(caller.span_id));
        assert!(
            part.root
                .attributes
                .contains(&("status", "200".to_string()))
        );
        assert!(
            part.root
                .attributes
                .contains(&("route", "/users/{id}".to_string()))
        );
        let names: Vec<&str> = part.spans.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            ["db.get", "db.connection", "cache.get"],
            "by start time"
        );
        let db = &part.spans[0];
        assert_eq!(db.parent_id, Some(here.span_id));
        assert_eq!(part.spans[1].parent_id, Some(db.span_id));
        assert_eq!(part.spans[2].parent_id, Some(here.span_id));
        assert!(part.spans.iter().all(|s| s.trace_id == here.trace_id));
        assert!(store::global().get(unsampled.trace_id).is_empty());
    }

    #[tokio::test]
    async fn a_trace_crosses_awaits_with_instrument() {
        let subscriber = tracing_subscriber::registry().with(TraceLayer);
        let _guard = tracing::subscriber::set_default(subscriber);
        let ctx = TraceContext::start(true);
        async {
            tokio::task::yield_now()
                .instrument(tracing::info_span!("queue.publish"))
                .await;
        }
        .instrument(tracing::info_span!(
            "job",
            trace_id = %ctx.trace_id,
            span_id = %ctx.span_id,
            sampled = true,
        ))
        .await;
        let parts = store::global().get(ctx.trace_id);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].spans.len(), 1);
        assert_eq!(parts[0].spans[0].name, "queue.publish");
    }
}
