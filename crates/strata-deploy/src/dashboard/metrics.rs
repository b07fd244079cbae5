//! From each role's `/metrics` text to a tier's requests per second, p99 latency and error
//! ratio: the counters and histogram buckets of two scrapes a second apart, subtracted.
//!
//! Only the few series the dashboard draws are kept from a scrape ([`TierMetrics`]); a counter
//! that went down (the role restarted) counts from zero, as Prometheus's `rate` does. The p99
//! is read from the cumulative buckets the way `histogram_quantile` reads them: the bucket the
//! 99th percentile falls in, and a linear guess inside it.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::roles::RoleKind;

/// Which series a tier's rate, errors and latency come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierSeries {
    /// The event counter (`…_total`).
    pub requests: &'static str,
    /// The latency histogram's name (without `_bucket`).
    pub duration: &'static str,
    /// The label that marks a failed event, and what marks it.
    pub error_label: &'static str,
    pub failed: Failed,
    /// Routes (the `route` label) left out: the deployment's own probes and scrapes, which
    /// would otherwise show as a steady few requests a second on an idle tier.
    pub ignored_routes: &'static [&'static str],
    /// The gauge of messages waiting, summed (workers only: API servers export the outbox's
    /// queue under the same name).
    pub depth: Option<&'static str>,
}

/// What the supervisor, the balancer, `strata status` and this dashboard ask of an API server.
const OPS_ROUTES: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/traces",
    "/traces/{trace_id}",
];

/// What a failed event's label value looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// A 5xx status.
    ServerError,
    /// Exactly this value.
    Is(&'static str),
}

impl Failed {
    fn matches(self, value: &str) -> bool {
        match self {
            Failed::ServerError => value.len() == 3 && value.starts_with('5'),
            Failed::Is(v) => value == v,
        }
    }
}

/// The series of a kind of role, for the kinds whose tier the dashboard draws.
pub fn series_of(kind: RoleKind) -> Option<TierSeries> {
    Some(match kind {
        RoleKind::Api => TierSeries {
            requests: "strata_http_requests_total",
            duration: "strata_http_request_duration_seconds",
            error_label: "status",
            failed: Failed::ServerError,
            ignored_routes: OPS_ROUTES,
            depth: None,
        },
        RoleKind::Lb => TierSeries {
            requests: "strata_lb_requests_total",
            duration: "strata_lb_request_duration_seconds",
            error_label: "status",
            failed: Failed::ServerError,
            ignored_routes: &[],
            depth: None,
        },
        RoleKind::Edge => TierSeries {
            requests: "strata_edge_requests_total",
            duration: "strata_edge_request_duration_seconds",
            error_label: "outcome",
            failed: Failed::Is("error"),
            ignored_routes: &[],
            depth: None,
        },
        RoleKind::Worker => TierSeries {
            requests: "strata_queue_jobs_total",
            duration: "strata_queue_job_duration_seconds",
            error_label: "outcome",
            failed: Failed::Is("dead_lettered"),
            ignored_routes: &[],
            depth: Some(QUEUE_DEPTH),
        },
        _ => return None,
    })
}

/// The queue depth gauge workers export (summed over queues and states).
pub const QUEUE_DEPTH: &str = "strata_queue_messages";

/// One sample line: its metric name, labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

impl Sample<'_> {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one line of the Prometheus text format; `None` for comments, blanks and anything
/// malformed (a scrape is read as well as it can be, never refused whole).
pub fn parse_line(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `k="v",k2="v2"}` → the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

/// What one scrape of one role says about its tier: cumulative totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TierMetrics {
    pub requests: f64,
    pub errors: f64,
    /// Cumulative count per bucket bound (`le`), summed over every label set.
    pub buckets: BTreeMap<Bound, f64>,
    /// A worker's queue depth.
    pub depth: Option<f64>,
}

/// A bucket's upper bound, ordered (`+Inf` last).
#[derive(Debug, Clone, Copy)]
pub struct Bound(pub f64);

impl PartialEq for Bound {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Bound {}

impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl TierMetrics {
    /// The tier's series out of a whole `/metrics` text.
    pub fn read(text: &str, series: &TierSeries) -> TierMetrics {
        let mut m = TierMetrics::default();
        let bucket = format!("{}_bucket", series.duration);
        for sample in text.lines().filter_map(parse_line) {
            if !sample.value.is_finite()
                || sample.value < 0.0
                || sample
                    .label("route")
                    .is_some_and(|r| series.ignored_routes.contains(&r))
            {
                continue;
            }
            if sample.name == series.requests {
                m.requests += sample.value;
                if sample
                    .label(series.error_label)
                    .is_some_and(|v| series.failed.matches(v))
                {
                    m.errors += sample.value;
                }
            } else if sample.name == bucket {
                let le = match sample.label("le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => match v.parse::<f64>() {
                        Ok(le) if !le.is_nan() => le,
                        _ => continue,
                    },
                    None => continue,
                };
                *m.buckets.entry(Bound(le)).or_default() += sample.value;
            } else if Some(sample.name) == series.depth {
                *m.depth.get_or_insert(0.0) += sample.value;
            }
        }
        m
    }

    /// What happened between `earlier` and `self`; a counter that went down restarted, so all of
    /// its current value is new.
    pub fn since(&self, earlier: &TierMetrics) -> TierMetrics {
        let delta = |now: f64, then: f64| if now >= then { now - then } else { now };
        let restarted = self.requests < earlier.requests;
        let buckets = self
            .buckets
            .iter()
            .map(|(le, now)| {
                let then = if restarted {
                    0.0
                } else {
                    earlier.buckets.get(le).copied().unwrap_or(0.0)
                };
                (*le, delta(*now, then))
            })
            .collect();
        let (requests, errors) = if restarted {
            (self.requests, self.errors)
        } else {
            (
                delta(self.requests, earlier.requests),
                delta(self.errors, earlier.errors),
            )
        };
        TierMetrics {
            requests,
            errors,
            buckets,
            depth: self.depth,
        }
    }

    /// Adds another role's numbers of the same tier.
    pub fn add(&mut self, other: &TierMetrics) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (le, n) in &other.buckets {
            *self.buckets.entry(*le).or_default() += n;
        }
        if let Some(d) = other.depth {
            *self.depth.get_or_insert(0.0) += d;
        }
    }
}

/// The `q` quantile (0 to 1) of cumulative buckets, as `histogram_quantile` computes it: `None`
/// without observations; the largest finite bound when it falls in the `+Inf` bucket.
pub fn quantile(q: f64, buckets: &BTreeMap<Bound, f64>) -> Option<f64> {
    let total = buckets.iter().next_back().map(|(_, n)| *n)?;
    if total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (Bound(le), count) in buckets {
        if *count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            if *count <= below {
                return Some(*le);
            }
            return Some(lower + (le - lower) * (rank - below) / (count - below));
        }
        lower = *le;
        below = *count;
    }
    Some(lower)
}

/// One point of a tier's series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub rps: f64,
    /// The 99th percentile in milliseconds; `None` when nothing was observed.
    pub p99_ms: Option<f64>,
    /// Failed events over all events; `None` without events.
    pub error_ratio: Option<f64>,
    /// Messages waiting in the queue (workers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<f64>,
}

impl Point {
    /// A tier's point from what happened in its roles over `seconds`.
    pub fn of(at_ms: u64, delta: &TierMetrics, seconds: f64) -> Point {
        let seconds = seconds.max(0.001);
        Point {
            at_ms,
            rps: delta.requests / seconds,
            p99_ms: quantile(0.99, &delta.buckets).map(|s| s * 1000.0),
            error_ratio: (delta.requests > 0.0).then(|| (delta.errors / delta.requests).min(1.0)),
            depth: delta.depth,
        }
    }
}

/// The last `capacity` points, oldest first; the oldest goes when a new one comes.
#[derive(Debug, Clone)]
pub struct Ring<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T> Ring<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            items: VecDeque::with_capacity(capacity.min(1024)),
            capacity: capacity.max(1),
        }
    }

    pub fn push(&mut self, item: T) {
        while self.items.len() >= self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: &str = "\
# HELP strata_http_requests_total Requests.
# TYPE strata_http_requests_total counter
strata_http_requests_total{method=\"GET\",route=\"/users/{id}\",status=\"200\"} 90
strata_http_requests_total{method=\"GET\",route=\"/a,b}\\\"c\",status=\"503\"} 10
strata_http_requests_total{method=\"GET\",route=\"/x\",status=\"404\"} 5
strata_http_request_duration_seconds_bucket{route=\"/users/{id}\",le=\"0.005\"} 50
strata_http_request_duration_seconds_bucket{route=\"/users/{id}\",le=\"0.01\"} 80
strata_http_request_duration_seconds_bucket{route=\"/users/{id}\",le=\"0.1\"} 100
strata_http_request_duration_seconds_bucket{route=\"/users/{id}\",le=\"+Inf\"} 100
strata_http_request_duration_seconds_sum{route=\"/users/{id}\"} 1.5
strata_http_request_duration_seconds_count{route=\"/users/{id}\"} 100
strata_http_request_duration_seconds_bucket{route=\"/x\",le=\"0.005\"} 5
strata_http_request_duration_seconds_bucket{route=\"/x\",le=\"0.01\"} 5
strata_http_request_duration_seconds_bucket{route=\"/x\",le=\"0.1\"} 5
strata_http_request_duration_seconds_bucket{route=\"/x\",le=\"+Inf\"} 5
strata_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"200\"} 1000
strata_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"+Inf\"} 400
strata_queue_messages{queue=\"outbox\",state=\"ready\"} 7
garbage line {
strata_http_requests_total{status=\"500\"} NaN
";

    fn api() -> TierSeries {
        series_of(RoleKind::Api).expect("api series")
    }

    #[test]
    fn a_line_with_escaped_label_values_and_braces_is_read_whole() {
        let s = parse_line("m{a=\"x}\\\"y\",b=\"2\"} 3.5 1700000000").expect("a sample");
        assert_eq!(s.name, "m");
        assert_eq!(s.label("a"), Some("x}\"y"));
        assert_eq!(s.label("b"), Some("2"));
        assert_eq!(s.value, 3.5);
        assert_eq!(parse_line("plain 7").map(|s| s.value), Some(7.0));
        assert_eq!(parse_line("# HELP x y"), None);
        assert_eq!(parse_line("m{a=\"unterminated} 1"), None);
        assert_eq!(parse_line("m{a=\"1\"} notanumber"), None);
    }

    #[test]
    fn the_tier_counters_and_buckets_are_summed_over_label_sets() {
        let m = TierMetrics::read(API, &api());
        assert_eq!(m.requests, 105.0, "scrapes and probes left out");
        assert_eq!(m.errors, 10.0, "5xx only: a 404 is the client's");
        assert_eq!(m.buckets.get(&Bound(0.005)), Some(&55.0));
        assert_eq!(m.buckets.get(&Bound(f64::INFINITY)), Some(&105.0));
        assert_eq!(m.depth, None);
        let worker = series_of(RoleKind::Worker).expect("worker");
        let text = "strata_queue_jobs_total{outcome=\"done\"} 4\nstrata_queue_jobs_total{outcome=\"dead_lettered\"} 1\nstrata_queue_messages{queue=\"p\",state=\"ready\"} 3\nstrata_queue_messages{queue=\"p\",state=\"unacked\"} 2\n";
        let w = TierMetrics::read(text, &worker);
        assert_eq!((w.requests, w.errors, w.depth), (5.0, 1.0, Some(5.0)));
    }

    #[test]
    fn rates_come_from_deltas_and_a_restarted_role_counts_from_zero() {
        let before = TierMetrics::read(API, &api());
        let later = API.replace("status=\"200\"} 90", "status=\"200\"} 290");
        let later = later.replace("le=\"+Inf\"} 100", "le=\"+Inf\"} 300");
        let after = TierMetrics::read(&later, &api());
        let delta = after.since(&before);
        assert_eq!(delta.requests, 200.0);
        assert_eq!(delta.errors, 0.0);
        let p = Point::of(1, &delta, 2.0);
        assert_eq!(p.rps, 100.0);
        assert_eq!(p.error_ratio, Some(0.0));
        // Every new observation was above 0.1 s: the p99 is the largest finite bound.
        assert_eq!(p.p99_ms, Some(100.0));
        let restarted = TierMetrics::read("strata_http_requests_total{status=\"500\"} 3\n", &api());
        let d = restarted.since(&after);
        assert_eq!((d.requests, d.errors), (3.0, 3.0));
        let idle = Point::of(1, &after.since(&after), 1.0);
        assert_eq!((idle.rps, idle.p99_ms, idle.error_ratio), (0.0, None, None));
    }

    #[test]
    fn the_p99_is_interpolated_inside_its_bucket() {
        let b = |pairs: &[(f64, f64)]| pairs.iter().map(|(l, n)| (Bound(*l), *n)).collect();
        // 100 observations: 90 under 10 ms, 10 between 10 and 20 ms.
        let buckets = b(&[(0.01, 90.0), (0.02, 100.0), (f64::INFINITY, 100.0)]);
        let p99 = quantile(0.99, &buckets).expect("a p99");
        assert!((p99 - 0.019).abs() < 1e-9, "{p99}");
        let p50 = quantile(0.5, &buckets).expect("a p50");
        assert!((p50 - 0.01 * 50.0 / 90.0).abs() < 1e-9, "{p50}");
        assert_eq!(
            quantile(0.99, &b(&[(0.01, 0.0), (f64::INFINITY, 0.0)])),
            None
        );
        assert_eq!(quantile(0.99, &BTreeMap::new()), None);
        assert_eq!(quantile(1.5, &buckets), None);
    }

    #[test]
    fn the_ring_keeps_the_last_points_only() {
        let mut ring = Ring::new(3);
        assert!(ring.is_empty());
        for i in 0..10 {
            ring.push(i);
        }
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.iter().copied().collect::<Vec<_>>(), vec![7, 8, 9]);
        let mut one = Ring::new(0);
        one.push(1);
        one.push(2);
        assert_eq!(one.iter().copied().collect::<Vec<_>>(), vec![2]);
    }
}
