//! The edge's counters, and `/metrics` in Prometheus' text format.
//!
//! Counters are per edge (atomics in [`Stats`]), not in the process-wide recorder, so that
//! two edges in one process (the tests run several) each report their own. Names follow
//! `strata_edge_<thing>_<unit>`.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How a request was answered: the label of `strata_edge_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// From the store, fresh.
    Hit,
    /// From the origin; stored when it could be.
    Miss,
    /// From the store, stale (`stale-while-revalidate` or `stale-if-error`).
    Stale,
    /// From the store after the origin confirmed it (`304 Not Modified`).
    Revalidated,
    /// Straight to the origin: a method the edge does not cache.
    Pass,
    /// Answered by the edge itself with an error.
    Error,
    /// A static file the edge serves itself.
    Static,
    /// A route's prefix without its final slash, redirected to it by the edge itself.
    Redirect,
}

const OUTCOMES: [Outcome; 8] = [
    Outcome::Hit,
    Outcome::Miss,
    Outcome::Stale,
    Outcome::Revalidated,
    Outcome::Pass,
    Outcome::Error,
    Outcome::Static,
    Outcome::Redirect,
];

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Revalidated => "revalidated",
            Outcome::Pass => "pass",
            Outcome::Error => "error",
            Outcome::Static => "static",
            Outcome::Redirect => "redirect",
        }
    }
}

/// What the store holds now, for the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub memory_objects: u64,
    pub memory_bytes: u64,
    pub disk_objects: u64,
    pub disk_bytes: u64,
}

/// (kind, mode) → (purges, objects purged).
type PurgeCount = ((&'static str, &'static str), (u64, u64));

/// Every counter of one edge.
#[derive(Debug, Default)]
pub struct Stats {
    requests: [AtomicU64; OUTCOMES.len()],
    pub stale_while_revalidate: AtomicU64,
    pub stale_if_error: AtomicU64,
    /// Stale answers `stale-if-error` allowed because the origin took longer than the grace.
    pub stale_grace: AtomicU64,
    pub revalidations_not_modified: AtomicU64,
    pub revalidations_modified: AtomicU64,
    pub revalidations_failed: AtomicU64,
    pub collapsed: AtomicU64,
    pub origin_fetches: AtomicU64,
    pub bytes_from_cache: AtomicU64,
    pub bytes_from_origin: AtomicU64,
    pub disk_errors: AtomicU64,
    pub invalidations: AtomicU64,
    /// (kind, mode) → (purges, objects purged).
    purges: Mutex<Vec<PurgeCount>>,
    /// Reason → responses not stored.
    not_stored: Mutex<Vec<(&'static str, u64)>>,
    /// Requests by time to answer: per bucket of `LATENCY_BUCKETS` (not cumulative), then
    /// all of them and their sum in nanoseconds.
    latency: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_nanos: AtomicU64,
}

use strata_core::telemetry::LATENCY_BUCKETS;

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Stats {
    pub fn request(&self, outcome: Outcome) {
        let i = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(0);
        bump(&self.requests[i], 1);
    }

    /// One request answered after `took` (from its head to its answer's head).
    pub fn latency(&self, took: std::time::Duration) {
        let seconds = took.as_secs_f64();
        let i = LATENCY_BUCKETS.partition_point(|bound| *bound < seconds);
        if let Some(bucket) = self.latency.get(i) {
            bump(bucket, 1);
        }
        bump(&self.latency_count, 1);
        bump(
            &self.latency_sum_nanos,
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        );
    }

    pub fn requests(&self, outcome: Outcome) -> u64 {
        let i = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(0);
        self.requests[i].load(Ordering::Relaxed)
    }

    pub fn add(counter: &AtomicU64, by: u64) {
        bump(counter, by);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn purge(&self, kind: &'static str, mode: &'static str, objects: u64) {
        let mut purges = self.purges.lock().unwrap_or_else(|p| p.into_inner());
        match purges.iter_mut().find(|(k, _)| *k == (kind, mode)) {
            Some((_, (n, o))) => {
                *n += 1;
                *o += objects;
            }
            None => purges.push(((kind, mode), (1, objects))),
        }
    }

    pub fn not_stored(&self, reason: &'static str) {
        let mut counts = self.not_stored.lock().unwrap_or_else(|p| p.into_inner());
        match counts.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => counts.push((reason, 1)),
        }
    }

    /// The Prometheus text exposition of every counter, and of `usage`.
    pub fn render(&self, usage: Usage) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP strata_edge_requests_total Requests answered, by how: hit, miss, stale, revalidated, pass, error, static.\n# TYPE strata_edge_requests_total counter"
        );
        for (i, o) in OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "strata_edge_requests_total{{outcome=\"{}\"}} {}",
                o.as_str(),
                self.requests[i].load(Ordering::Relaxed)
            );
        }
        let simple: [(&str, &str, &str, u64); 8] = [
            (
                "strata_edge_collapsed_requests_total",
                "counter",
                "Requests that waited for another's origin fetch instead of making their own.",
                Self::get(&self.collapsed),
            ),
            (
                "strata_edge_origin_fetches_total",
                "counter",
                "Requests the edge sent to the origin.",
                Self::get(&self.origin_fetches),
            ),
            (
                "strata_edge_cache_bytes_total",
                "counter",
                "Body bytes answered from the store.",
                Self::get(&self.bytes_from_cache),
            ),
            (
                "strata_edge_origin_bytes_total",
                "counter",
                "Body bytes received from the origin.",
                Self::get(&self.bytes_from_origin),
            ),
            (
                "strata_edge_disk_errors_total",
                "counter",
                "Disk store writes, reads or removals that failed (the edge serves on from memory).",
                Self::get(&self.disk_errors),
            ),
            (
                "strata_edge_invalidations_total",
                "counter",
                "URLs invalidated by an unsafe request (RFC 9111 section 4.4).",
                Self::get(&self.invalidations),
            ),
            (
                "strata_edge_stored_objects",
                "gauge",
                "Objects held in memory.",
                usage.memory_objects,
            ),
            (
                "strata_edge_stored_bytes",
                "gauge",
                "Bytes held in memory.",
                usage.memory_bytes,
            ),
        ];
        for (name, kind, help, value) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP strata_edge_disk_objects Objects held on disk.\n# TYPE strata_edge_disk_objects gauge\nstrata_edge_disk_objects {}",
            usage.disk_objects
        );
        let _ = writeln!(
            out,
            "# HELP strata_edge_disk_bytes Bytes held on disk.\n# TYPE strata_edge_disk_bytes gauge\nstrata_edge_disk_bytes {}",
            usage.disk_bytes
        );
        let _ = writeln!(
            out,
            "# HELP strata_edge_stale_served_total Stale answers, by what allowed them (stale-grace: stale-if-error, the origin slower than the grace).\n# TYPE strata_edge_stale_served_total counter"
        );
        for (reason, v) in [
            ("stale-while-revalidate", &self.stale_while_revalidate),
            ("stale-if-error", &self.stale_if_error),
            ("stale-grace", &self.stale_grace),
        ] {
            let _ = writeln!(
                out,
                "strata_edge_stale_served_total{{reason=\"{reason}\"}} {}",
                Self::get(v)
            );
        }
        let _ = writeln!(
            out,
            "# HELP strata_edge_revalidations_total Conditional requests to the origin, by result.\n# TYPE strata_edge_revalidations_total counter"
        );
        for (result, v) in [
            ("not-modified", &self.revalidations_not_modified),
            ("modified", &self.revalidations_modified),
            ("failed", &self.revalidations_failed),
        ] {
            let _ = writeln!(
                out,
                "strata_edge_revalidations_total{{result=\"{result}\"}} {}",
                Self::get(v)
            );
        }
        let _ = writeln!(
            out,
            "# HELP strata_edge_purges_total Purges, by what they named and how.\n# TYPE strata_edge_purges_total counter"
        );
        let _ = writeln!(
            out,
            "# HELP strata_edge_purged_objects_total Objects removed or marked stale by purges.\n# TYPE strata_edge_purged_objects_total counter"
        );
        for ((kind, mode), (n, objects)) in
            self.purges.lock().unwrap_or_else(|p| p.into_inner()).iter()
        {
            let _ = writeln!(
                out,
                "strata_edge_purges_total{{kind=\"{kind}\",mode=\"{mode}\"}} {n}\nstrata_edge_purged_objects_total{{kind=\"{kind}\",mode=\"{mode}\"}} {objects}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP strata_edge_not_stored_total Cacheable-method responses the edge did not store, by reason.\n# TYPE strata_edge_not_stored_total counter"
        );
        for (reason, n) in self
            .not_stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "strata_edge_not_stored_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let name = "strata_edge_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a request's head to its answer's head.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency) {
            cumulative += Self::get(bucket);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = Self::get(&self.latency_count);
        let sum = Self::get(&self.latency_sum_nanos) as f64 / 1e9;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_rendered_with_its_type() {
        let s = Stats::default();
        s.request(Outcome::Hit);
        s.purge("url", "soft", 2);
        s.not_stored("set-cookie");
        let text = s.render(Usage {
            memory_objects: 3,
            ..Usage::default()
        });
        assert!(text.contains("strata_edge_requests_total{outcome=\"hit\"} 1"));
        assert!(text.contains("strata_edge_purged_objects_total{kind=\"url\",mode=\"soft\"} 2"));
        assert!(text.contains("strata_edge_not_stored_total{reason=\"set-cookie\"} 1"));
        assert!(text.contains("strata_edge_stored_objects 3"));
        s.latency(std::time::Duration::from_millis(3));
        s.latency(std::time::Duration::from_secs(60));
        let text = s.render(Usage::default());
        let d = "strata_edge_request_duration_seconds";
        assert!(
            text.contains(&format!("{d}_bucket{{le=\"0.0025\"}} 0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{d}_bucket{{le=\"0.005\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{d}_bucket{{le=\"10\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{d}_bucket{{le=\"+Inf\"}} 2\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{d}_count 2\n")), "{text}");
        assert!(text.contains(&format!("{d}_sum 60.003\n")), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            let name = [d, name]
                .into_iter()
                .find(|family| {
                    name.strip_prefix(family)
                        .is_some_and(|rest| ["", "_bucket", "_sum", "_count"].contains(&rest))
                })
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} has no TYPE"
            );
        }
    }
}
