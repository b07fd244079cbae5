//! The trace view: `GET /api/traces/{trace_id}` asks every role that keeps traces (edges,
//! balancers, API servers, workers) for its part of one trace (`GET /traces/{trace_id}`), all
//! at once, each with the scrape's timeout and body cap, and answers the spans of every role
//! in one list, earliest first, each naming its role — what the page draws as a waterfall.
//! A role that does not answer in time is listed as such rather than waited for.

use std::path::Path;

use serde::Serialize;

use super::collect::{self, get_text};
use super::problem::Problem;
use crate::roles::RoleKind;
use crate::state;

/// The most spans answered (each role keeps at most 128 of a trace).
pub const MAX_SPANS: usize = 1024;
/// The longest text kept of a span's name or attribute.
const MAX_TEXT: usize = 256;
/// The most attributes kept of a span.
const MAX_ATTRIBUTES: usize = 16;

/// One span of the trace, with the role that kept it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanView {
    pub role: String,
    pub span_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    pub name: String,
    pub start_unix_nanos: u64,
    pub duration_nanos: u64,
    pub attributes: Vec<(String, String)>,
}

/// The answer: the spans, and which roles were asked and did not answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceSpans {
    pub trace_id: String,
    pub spans: Vec<SpanView>,
    /// Spans beyond [`MAX_SPANS`], left out.
    pub spans_left_out: usize,
    pub roles_asked: Vec<String>,
    pub roles_silent: Vec<String>,
}

/// A trace id as the roles take it: 32 lower-case hexadecimal digits, not all zeros.
pub fn parse_trace_id(id: &str) -> Result<&str, Problem> {
    let valid = id.len() == 32
        && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && id.bytes().any(|b| b != b'0');
    if valid {
        Ok(id)
    } else {
        Err(Problem::BadTraceId(id.chars().take(64).collect()))
    }
}

fn text(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or("").chars().take(MAX_TEXT).collect()
}

/// The spans of every role's answer, earliest first, at most `max`.
pub fn merge(trace_id: &str, parts: &[(String, serde_json::Value)], max: usize) -> TraceSpans {
    let mut spans = Vec::new();
    for (role, doc) in parts {
        for s in doc["spans"].as_array().into_iter().flatten() {
            if s["trace_id"].as_str().is_some_and(|t| t != trace_id) {
                continue;
            }
            let attributes = s["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .take(MAX_ATTRIBUTES)
                .map(|kv| (text(&kv[0]), text(&kv[1])))
                .collect();
            spans.push(SpanView {
                role: role.clone(),
                span_id: text(&s["span_id"]),
                parent_id: s["parent_id"]
                    .as_str()
                    .map(|p| p.chars().take(32).collect()),
                name: text(&s["name"]),
                start_unix_nanos: s["start_unix_nanos"].as_u64().unwrap_or(0),
                duration_nanos: s["duration_nanos"].as_u64().unwrap_or(0),
                attributes,
            });
        }
    }
    spans.sort_by_key(|s| (s.start_unix_nanos, std::cmp::Reverse(s.duration_nanos)));
    let spans_left_out = spans.len().saturating_sub(max);
    spans.truncate(max);
    TraceSpans {
        trace_id: trace_id.to_string(),
        spans,
        spans_left_out,
        roles_asked: Vec::new(),
        roles_silent: Vec::new(),
    }
}

/// Every role's part of trace `trace_id` in the deployment in `dir`; 404 when no role keeps
/// any of it, 503 when none that answered does and some did not answer.
pub async fn spans(
    http: &reqwest::Client,
    dir: &Path,
    trace_id: &str,
) -> Result<TraceSpans, Problem> {
    let id = parse_trace_id(trace_id)?;
    let state = state::read(dir)
        .map_err(|e| Problem::Unavailable(format!("{e}")))?
        .ok_or_else(|| Problem::Unavailable("No deployment runs in this directory.".into()))?;
    let targets: Vec<_> = state::metrics_targets(&state)
        .into_iter()
        .filter(|t| t.kind != RoleKind::Prometheus.as_str())
        .collect();
    let asks = targets
        .iter()
        .map(|t| get_text(http, format!("http://{}/traces/{id}", t.addr)));
    let bodies = futures_util::future::join_all(asks).await;
    let mut parts = Vec::new();
    let mut silent = Vec::new();
    for (target, body) in targets.iter().zip(bodies) {
        match body.and_then(|b| serde_json::from_str(&b).ok()) {
            Some(doc) => parts.push((target.role.clone(), doc)),
            None => silent.push(target.role.clone()),
        }
    }
    let mut found = merge(id, &parts, MAX_SPANS);
    if found.spans.is_empty() && !silent.is_empty() {
        return Err(Problem::Unavailable(format!(
            "No role that answered keeps a span of trace {id}, and {} did not answer in time.",
            silent.join(", ")
        )));
    }
    if found.spans.is_empty() {
        return Err(Problem::TraceNotFound(id.to_string()));
    }
    found.roles_asked = targets.into_iter().map(|t| t.role).collect();
    found.roles_silent = silent;
    Ok(found)
}

/// The client the trace view asks the roles with: the scrape's timeouts.
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(collect::SCRAPE_TIMEOUT)
        .connect_timeout(collect::SCRAPE_TIMEOUT)
        .no_proxy()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn a_trace_id_is_32_lower_case_hex_digits_not_all_zeros() {
        assert_eq!(parse_trace_id(ID).ok(), Some(ID));
        for bad in [
            "",
            "00000000000000000000000000000000",
            "4BF92F3577B34DA6A3CE929D0E0E4736",
            "4bf92f3577b34da6a3ce929d0e0e473",
            "../../../../../../etc/passwd/xxxx",
        ] {
            let p = parse_trace_id(bad).expect_err(bad);
            assert_eq!(p.fault().map(|f| f.0), Some("trace_id"), "{bad}");
        }
    }

    #[test]
    fn every_role_s_spans_are_one_list_earliest_first_bounded() {
        let span = |id: &str, parent: Option<&str>, name: &str, start: u64| {
            json!({"trace_id": ID, "span_id": id, "parent_id": parent, "name": name,
                "start_unix_nanos": start, "duration_nanos": 1000, "attributes": [["http.route", "/users"]]})
        };
        let lb =
            json!({"service": "strata-lb", "trace_id": ID, "spans": [span("a", None, "lb", 10)]});
        let api = json!({"service": "strata-api", "trace_id": ID, "spans": [
            span("c", Some("b"), "store.get", 30), span("b", Some("a"), "GET /users", 20),
            {"trace_id": "ffffffffffffffffffffffffffffffff", "span_id": "z", "name": "other"}]});
        let all = merge(
            ID,
            &[("lb-1".into(), lb.clone()), ("api-1".into(), api)],
            10,
        );
        let names: Vec<_> = all
            .spans
            .iter()
            .map(|s| (s.role.as_str(), s.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("lb-1", "lb"),
                ("api-1", "GET /users"),
                ("api-1", "store.get")
            ],
            "another trace's span is left out"
        );
        assert_eq!(all.spans[1].parent_id.as_deref(), Some("a"));
        assert_eq!(
            all.spans[0].attributes,
            [("http.route".to_string(), "/users".to_string())]
        );
        let few = merge(ID, &[("lb-1".into(), lb.clone()), ("lb-2".into(), lb)], 1);
        assert_eq!((few.spans.len(), few.spans_left_out), (1, 1));
    }
}
