//! `[observe]`: Prometheus, run by `strata up`, scraping every role and evaluating the SLO
//! alerts (docs/observability.md).
//!
//! ```toml
//! [observe]
//! prometheus = true          # prometheus-1 (Debian: prometheus)
//! retention = "15d"          # how long samples are kept
//! retention_size = "1GB"     # the most its TSDB keeps on disk; the oldest blocks go first
//! scrape_interval_secs = 15  # how often every role is scraped and every rule evaluated
//! trace_sample = 0.01        # the share of requests traced where a trace starts (0 to 1)
//! dashboard = true           # dashboard-1: the live web page (`strata dashboard`)
//! ```
//!
//! `trace_sample` needs no Prometheus: the balancers, edges and API servers take it as their
//! `--trace-sample`, and every role keeps its recorded traces at `/traces`. Traces are exported
//! by OTLP when `strata up` runs with `OTEL_EXPORTER_OTLP_ENDPOINT` set (every role inherits
//! it).

use super::reader::Section;

/// `[observe]` as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveSpec {
    /// Run `prometheus-1`.
    pub prometheus: bool,
    pub retention: String,
    pub retention_size: String,
    pub scrape_interval_secs: u64,
    pub trace_sample: strata_core::trace::SampleRate,
    /// Run `dashboard-1`, the live dashboard.
    pub dashboard: bool,
}

impl Default for ObserveSpec {
    fn default() -> Self {
        Self {
            prometheus: false,
            retention: "15d".into(),
            retention_size: "1GB".into(),
            scrape_interval_secs: 15,
            trace_sample: strata_core::trace::SampleRate::default(),
            dashboard: false,
        }
    }
}

/// Reads `[observe]`.
pub(super) fn read(sec: &mut Section<'_>) -> ObserveSpec {
    let defaults = ObserveSpec::default();
    let prometheus = sec.bool("prometheus").unwrap_or(false);
    let dashboard = sec.bool("dashboard").unwrap_or(false);
    let retention = sec.string(
        "retention",
        "a Prometheus duration such as 15d, 12h or 2w",
        |s| strata_observe::node::parse_retention(s).is_ok(),
    );
    let retention_size = sec.string("retention_size", "a size such as 512MB or 1GB", |s| {
        strata_observe::node::parse_size(s).is_ok()
    });
    let scrape_interval_secs = sec.int("scrape_interval_secs", 1..=3600);
    let trace_sample = sec.typed(
        "trace_sample",
        "a number from 0 to 1 (the share of requests traced, e.g. 0.01)",
        |item| {
            item.as_float()
                .or_else(|| item.as_integer().map(|i| i as f64))
                .and_then(|f| strata_core::trace::SampleRate::new(f).ok())
        },
    );
    if !prometheus {
        for key in ["retention", "retention_size", "scrape_interval_secs"] {
            if sec.has(key) {
                sec.error(
                    key,
                    format!("`observe.{key}` sets up Prometheus: add prometheus = true"),
                );
            }
        }
    }
    ObserveSpec {
        prometheus,
        retention: retention.unwrap_or(defaults.retention),
        retention_size: retention_size.unwrap_or(defaults.retention_size),
        scrape_interval_secs: scrape_interval_secs.unwrap_or(defaults.scrape_interval_secs),
        trace_sample: trace_sample.unwrap_or(defaults.trace_sample),
        dashboard,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::super::*;

    #[test]
    fn prometheus_is_asked_for_and_its_settings_are_checked() {
        let t = Topology::parse(
            "[api]\ncount = 1\n[observe]\nprometheus = true\nretention = \"2d\"\nretention_size = \"512MB\"\nscrape_interval_secs = 5\n",
            8080,
        )
        .expect("valid");
        assert_eq!(
            t.observe,
            ObserveSpec {
                prometheus: true,
                retention: "2d".into(),
                retention_size: "512MB".into(),
                scrape_interval_secs: 5,
                trace_sample: strata_core::trace::SampleRate::default(),
                dashboard: false,
            }
        );
        let traced = Topology::parse("[api]\ncount = 1\n[observe]\ntrace_sample = 1\n", 8080)
            .expect("valid");
        assert_eq!(traced.observe.trace_sample.get(), 1.0);
        assert!(!traced.observe.prometheus, "tracing needs no Prometheus");
        let watched = Topology::parse("[api]\ncount = 1\n[observe]\ndashboard = true\n", 8080)
            .expect("valid");
        assert!(watched.observe.dashboard && !watched.observe.prometheus);
        assert_eq!(
            watched.instance_count(),
            2,
            "the API server and dashboard-1"
        );
        let e = errors("[api]\ncount = 1\n[observe]\ndashboard = \"yes\"\n");
        assert_eq!(e.len(), 1, "{e:#?}");
        let e = errors("[api]\ncount = 1\n[observe]\ntrace_sample = 1.5\n");
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].message.contains("from 0 to 1"), "{e:#?}");
        assert_eq!(t.instance_count(), 2, "the API server and prometheus-1");
        assert_eq!(
            Topology::parse("[api]\ncount = 1\n", 8080)
                .expect("valid")
                .observe,
            ObserveSpec::default()
        );
        let e = errors(
            "[api]\ncount = 1\n[observe]\nprometheus = true\nretention = \"forever\"\nretention_size = \"1 GB\"\nscrape_interval_secs = 0\n",
        );
        assert_eq!(e.len(), 3, "{e:#?}");
        let e = errors("[api]\ncount = 1\n[observe]\nretention = \"2d\"\n");
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].message.contains("add prometheus = true"), "{e:#?}");
    }
}
