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
//! alertmanager = true        # alertmanager-1 (Debian: prometheus-alertmanager): Prometheus
//!                            # sends it firing alerts (needs prometheus = true)
//! alert_webhook = "https://hooks.example.com/…"  # where Alertmanager notifies (default: kept
//!                            # and shown, sent nowhere)
//!
//! [observe.slo.api]          # a tier's objective (lb, api, edge, worker), each key optional
//! availability = 99.95       # percent of events that succeed, over 30 days
//! latency_ms = 100           # a latency histogram bucket: 0.5, 1, 2.5, 5, 10, … 10000
//! latency_target = 99.5      # percent of events faster than latency_ms
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
    /// Run `alertmanager-1`, where Prometheus sends firing alerts.
    pub alertmanager: bool,
    /// Where Alertmanager sends notifications (a webhook URL).
    pub alert_webhook: Option<String>,
    /// The tiers' objectives as `[observe.slo.<tier>]` changes them (the defaults otherwise:
    /// `strata_observe::slo::Objectives::defaults`).
    pub slo: Vec<(&'static str, SloChange)>,
}

/// What `[observe.slo.<tier>]` changes in a tier's default objective.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SloChange {
    /// Percent of events that must succeed, in (0, 100).
    pub availability: Option<f64>,
    /// The latency threshold, one of the histograms' bucket bounds.
    pub latency_seconds: Option<f64>,
    /// Percent of events that must be faster than the threshold, in (0, 100).
    pub latency_target: Option<f64>,
}

// Every value is a finite number (checked when read), so equality is an equivalence.
impl Eq for SloChange {}

/// The tiers that have objectives.
pub const SLO_TIERS: [&str; 4] = ["lb", "api", "edge", "worker"];

fn number(item: &toml_edit::Item) -> Option<f64> {
    item.as_float()
        .or_else(|| item.as_integer().map(|i| i as f64))
        .filter(|v| v.is_finite())
}

fn read_slo(sec: &mut Section<'_>) -> SloChange {
    let percent = "a percentage between 0 and 100, both excluded (e.g. 99.9)";
    let in_range = |v: f64| v > 0.0 && v < 100.0;
    let buckets: Vec<String> = strata_core::telemetry::LATENCY_BUCKETS
        .iter()
        .map(|b| format!("{}", b * 1000.0))
        .collect();
    let availability = sec.typed("availability", percent, |i| {
        number(i).filter(|v| in_range(*v))
    });
    let latency_target = sec.typed("latency_target", percent, |i| {
        number(i).filter(|v| in_range(*v))
    });
    let latency_seconds = sec.typed(
        "latency_ms",
        format!(
            "a latency bucket in milliseconds, one of {}",
            buckets.join(", ")
        ),
        |i| {
            let ms = number(i)?;
            strata_core::telemetry::LATENCY_BUCKETS
                .iter()
                .copied()
                .find(|b| (b * 1000.0 - ms).abs() < 1e-9)
        },
    );
    SloChange {
        availability,
        latency_seconds,
        latency_target,
    }
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
            alertmanager: false,
            alert_webhook: None,
            slo: Vec::new(),
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
    let alertmanager = sec.bool("alertmanager").unwrap_or(false);
    let alert_webhook = sec.string(
        "alert_webhook",
        "an http:// or https:// URL with a host, no spaces, at most 2048 bytes",
        |s| strata_observe::alertmanager::parse_webhook(s).is_ok(),
    );
    if alertmanager && !prometheus {
        sec.error(
            "alertmanager",
            "Alertmanager gets its alerts from the deployment's Prometheus: add prometheus = true",
        );
    }
    if alert_webhook.is_some() && !alertmanager {
        sec.error(
            "alert_webhook",
            "the webhook is where Alertmanager sends notifications: add alertmanager = true",
        );
    }
    let mut slo = Vec::new();
    sec.table("slo", |tiers| {
        for tier in SLO_TIERS {
            if let Some(change) = tiers.table(tier, read_slo) {
                slo.push((tier, change));
            }
        }
    });
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
        alertmanager,
        alert_webhook,
        slo,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::super::*;
    use super::SloChange;

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
                alertmanager: false,
                alert_webhook: None,
                slo: Vec::new(),
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
        let t = Topology::parse(
            "[api]\ncount = 1\n[observe]\nprometheus = true\n[observe.slo.api]\navailability = 99.95\nlatency_ms = 100\n[observe.slo.edge]\nlatency_target = 99.5\n",
            8080,
        )
        .expect("valid");
        let api = SloChange {
            availability: Some(99.95),
            latency_seconds: Some(0.1),
            latency_target: None,
        };
        let edge = SloChange {
            latency_target: Some(99.5),
            ..SloChange::default()
        };
        assert_eq!(t.observe.slo, vec![("api", api), ("edge", edge)]);
        let e = errors(
            "[api]\ncount = 1\n[observe]\nprometheus = true\n[observe.slo.api]\navailability = 100\nlatency_ms = 120\n[observe.slo.cdn]\n",
        );
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(
            e.iter().any(|e| e.message.contains("one of 0.5, 1, 2.5")),
            "{e:#?}"
        );
        assert!(
            e.iter().any(|e| e.message.contains("observe.slo.cdn")),
            "{e:#?}"
        );
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

    #[test]
    fn alertmanager_needs_prometheus_and_its_webhook_must_be_a_url() {
        let t = Topology::parse(
            "[api]\ncount = 1\n[observe]\nprometheus = true\nalertmanager = true\nalert_webhook = \"http://127.0.0.1:9/hook\"\n",
            8080,
        )
        .expect("valid");
        assert!(t.observe.alertmanager);
        assert_eq!(
            t.observe.alert_webhook.as_deref(),
            Some("http://127.0.0.1:9/hook")
        );
        assert_eq!(
            t.instance_count(),
            3,
            "API server, prometheus-1, alertmanager-1"
        );
        let e = errors(
            "[api]\ncount = 1\n[observe]\nalertmanager = true\nalert_webhook = \"ftp://x/\"\n",
        );
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e.iter()
                .any(|e| e.line == Some(4) && e.message.contains("prometheus = true")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|e| e.line == Some(5) && e.message.contains("http://")),
            "{e:#?}"
        );
        let e = errors(
            "[api]\ncount = 1\n[observe]\nprometheus = true\nalert_webhook = \"http://127.0.0.1:9/\"\n",
        );
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].message.contains("alertmanager = true"), "{e:#?}");
    }
}
