//! Service level objectives: what "good" means for each tier, over a 30-day window, and the
//! Prometheus rules generated from it ([`rules`]).
//!
//! An [`Objective`] names the series a tier really exports — its request (or job) counter, the
//! label that marks a failure, and optionally a latency histogram — and two targets: the share
//! of events that must succeed, and the share that must be faster than a threshold. The
//! defaults ([`Objectives::defaults`]) are written against the metrics the roles register
//! (`strata_lb_*`, `strata_http_*`, `strata_edge_*`, `strata_queue_*`) and the `kind` label the
//! scrape configuration gives every target ([`crate::scrape`]), so the rules evaluate on real
//! series. `docs/observability.md` has the table.
//!
//! Objectives are checked as a whole before any rule is written ([`Objectives::new`]): every
//! mistake is reported at once.

pub mod rules;

use std::fmt;

/// How a label matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~` (a fully anchored RE2 regular expression)
    Re,
    /// `!~`
    NotRe,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        }
    }
}

/// One PromQL label matcher, `label="value"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
}

impl Matcher {
    /// `label="value"`.
    pub fn eq(label: &str, value: &str) -> Self {
        Self {
            label: label.into(),
            op: MatchOp::Eq,
            value: value.into(),
        }
    }

    /// `label=~"regex"`.
    pub fn re(label: &str, regex: &str) -> Self {
        Self {
            label: label.into(),
            op: MatchOp::Re,
            value: regex.into(),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let escaped = self.value.replace('\\', "\\\\").replace('"', "\\\"");
        write!(f, "{}{}\"{}\"", self.label, self.op.as_str(), escaped)
    }
}

/// The latency half of an objective: `target` percent of events faster than `threshold_seconds`,
/// read from a Prometheus histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    /// The histogram's base name: the rules read `<histogram>_bucket{le=…}` and
    /// `<histogram>_count`.
    pub histogram: String,
    /// The threshold; it must be one of the histogram's bucket bounds (`le`), or no series
    /// matches. The roles' buckets are `strata_core::telemetry::LATENCY_BUCKETS`.
    pub threshold_seconds: f64,
    /// The percentage of events that must be faster, in (0, 100).
    pub target: f64,
}

/// What one tier promises, over `window_days`.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    /// The tier's name: the `slo` label of every generated series and alert.
    pub name: String,
    /// Which targets are this tier's (the scrape configuration labels each with `kind`).
    pub selector: Vec<Matcher>,
    /// The counter of events (requests, jobs).
    pub requests: String,
    /// What marks a failed event on that counter (e.g. `status=~"5.."`).
    pub errors: Matcher,
    /// The percentage of events that must succeed, in (0, 100).
    pub availability: f64,
    /// The latency objective, when the tier exports a histogram.
    pub latency: Option<Latency>,
    /// The window the targets are measured over (the workbook's 30 days).
    pub window_days: u32,
}

/// The window every default objective is measured over.
pub const WINDOW_DAYS: u32 = 30;

impl Objective {
    /// The share of events allowed to fail: `1 - availability / 100`.
    pub fn error_budget(&self) -> f64 {
        budget(self.availability)
    }
}

/// `1 - target / 100`, rounded to 12 decimals so that 99.9 gives 0.001 exactly as printed.
pub(crate) fn budget(target: f64) -> f64 {
    ((100.0 - target) / 100.0 * 1e12).round() / 1e12
}

/// Every mistake found in a set of objectives, one sentence each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub Vec<String>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid objectives:")?;
        for problem in &self.0 {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Invalid {}

/// A checked set of objectives: names unique and legal, targets and thresholds in range.
#[derive(Debug, Clone, PartialEq)]
pub struct Objectives(Vec<Objective>);

impl Objectives {
    /// Checks `objectives`, reporting every mistake at once.
    pub fn new(objectives: Vec<Objective>) -> Result<Self, Invalid> {
        let mut problems = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for o in &objectives {
            check(o, &mut problems);
            if !seen.insert(o.name.as_str()) {
                problems.push(format!("objective {:?} is named twice", o.name));
            }
        }
        if problems.is_empty() {
            Ok(Self(objectives))
        } else {
            Err(Invalid(problems))
        }
    }

    /// The default objectives per tier (see `docs/observability.md`):
    ///
    /// | tier | events | failed when | availability | latency |
    /// |---|---|---|---|---|
    /// | `lb` | `strata_lb_requests_total` | `status=~"5.."` | 99.9% | 99% under 0.5 s (`strata_lb_request_duration_seconds`) |
    /// | `api` | `strata_http_requests_total` | `status=~"5.."` | 99.9% | 99% under 0.25 s (`strata_http_request_duration_seconds`) |
    /// | `edge` | `strata_edge_requests_total` | `outcome="error"` | 99.9% | 99% under 0.5 s (`strata_edge_request_duration_seconds`) |
    /// | `worker` | `strata_queue_jobs_total` | `outcome="dead_lettered"` | 99.9% | 99% under 10 s (`strata_queue_job_duration_seconds`) |
    ///
    /// Each selects its targets by `kind`, the label the scrape configuration gives them.
    pub fn defaults() -> Self {
        let tier =
            |name: &str, requests: &str, errors: Matcher, latency: Option<Latency>| Objective {
                name: name.into(),
                selector: vec![Matcher::eq("kind", name)],
                requests: requests.into(),
                errors,
                availability: 99.9,
                latency,
                window_days: WINDOW_DAYS,
            };
        let latency = |histogram: &str, threshold_seconds: f64| {
            Some(Latency {
                histogram: histogram.into(),
                threshold_seconds,
                target: 99.0,
            })
        };
        Self(vec![
            tier(
                "lb",
                "strata_lb_requests_total",
                Matcher::re("status", "5.."),
                latency("strata_lb_request_duration_seconds", 0.5),
            ),
            tier(
                "api",
                "strata_http_requests_total",
                Matcher::re("status", "5.."),
                latency("strata_http_request_duration_seconds", 0.25),
            ),
            tier(
                "edge",
                "strata_edge_requests_total",
                Matcher::eq("outcome", "error"),
                latency("strata_edge_request_duration_seconds", 0.5),
            ),
            tier(
                "worker",
                "strata_queue_jobs_total",
                Matcher::eq("outcome", "dead_lettered"),
                latency("strata_queue_job_duration_seconds", 10.0),
            ),
        ])
    }

    /// The objectives, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Objective> {
        self.0.iter()
    }

    /// The objective named `name`.
    pub fn get(&self, name: &str) -> Option<&Objective> {
        self.0.iter().find(|o| o.name == name)
    }
}

/// Whether `name` is a legal Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `name` is a legal label name (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`,
/// which Prometheus reserves).
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn check(o: &Objective, problems: &mut Vec<String>) {
    let at = format!("objective {:?}", o.name);
    if !is_label_name(&o.name) {
        problems.push(format!(
            "{at}: the name must be a word of letters, digits and `_` (it names series and groups)"
        ));
    }
    if !is_metric_name(&o.requests) {
        problems.push(format!("{at}: {:?} is not a legal metric name", o.requests));
    }
    for m in o.selector.iter().chain([&o.errors]) {
        if !is_label_name(&m.label) {
            problems.push(format!("{at}: {:?} is not a legal label name", m.label));
        }
    }
    check_target(&at, "availability", o.availability, problems);
    if o.window_days == 0 {
        problems.push(format!("{at}: the window must be at least one day"));
    }
    if let Some(l) = &o.latency {
        if !is_metric_name(&l.histogram) {
            problems.push(format!(
                "{at}: {:?} is not a legal metric name",
                l.histogram
            ));
        } else if l.histogram.ends_with("_bucket") || l.histogram.ends_with("_count") {
            problems.push(format!(
                "{at}: name the histogram without its suffix ({:?})",
                l.histogram
            ));
        }
        check_target(&at, "latency", l.target, problems);
        if !(l.threshold_seconds.is_finite() && l.threshold_seconds > 0.0) {
            problems.push(format!(
                "{at}: the latency threshold must be more than 0 seconds (got {})",
                l.threshold_seconds
            ));
        }
    }
}

fn check_target(at: &str, what: &str, target: f64, problems: &mut Vec<String>) {
    if !(target.is_finite() && target > 0.0 && target < 100.0) {
        problems.push(format!(
            "{at}: the {what} target must be a percentage between 0 and 100, both excluded (got {target})"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_name_the_series_the_roles_export() {
        let d = Objectives::defaults();
        assert!(Objectives::new(d.0.clone()).is_ok());
        let names: Vec<&str> = d.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["lb", "api", "edge", "worker"]);
        let api = d.get("api").expect("api");
        assert_eq!(api.requests, "strata_http_requests_total");
        assert_eq!(api.errors.to_string(), r#"status=~"5..""#);
        assert_eq!(api.error_budget(), 0.001);
        // Each latency threshold is a bucket bound the roles' histograms have.
        for o in d.iter() {
            if let Some(l) = &o.latency {
                assert!(
                    strata_core::telemetry::LATENCY_BUCKETS.contains(&l.threshold_seconds),
                    "{}: {} is no bucket bound",
                    o.name,
                    l.threshold_seconds
                );
            }
        }
    }

    #[test]
    fn every_mistake_is_reported_at_once() {
        let mut bad = Objectives::defaults().0;
        bad[0].availability = 100.0;
        bad[0].requests = "2xx-total".into();
        if let Some(l) = bad[0].latency.as_mut() {
            l.threshold_seconds = 0.0;
            l.target = -1.0;
        }
        bad[1].name = "lb".into();
        bad[2].selector.push(Matcher::eq("__name__", "x"));
        bad[3].name = "work er".into();
        bad[3].window_days = 0;
        let Err(e) = Objectives::new(bad) else {
            panic!("accepted");
        };
        let text = e.to_string();
        for expected in [
            "\"lb\": the availability target must be a percentage between 0 and 100",
            "\"2xx-total\" is not a legal metric name",
            "latency threshold must be more than 0 seconds (got 0)",
            "the latency target must be a percentage",
            "objective \"lb\" is named twice",
            "\"__name__\" is not a legal label name",
            "\"work er\": the name must be a word",
            "the window must be at least one day",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        assert_eq!(e.0.len(), 8, "{text}");
    }

    #[test]
    fn names_follow_prometheus_rules() {
        assert!(is_metric_name("slo:error_ratio:rate5m"));
        assert!(!is_metric_name("9lives"));
        assert!(!is_metric_name(""));
        assert!(is_label_name("kind"));
        assert!(!is_label_name("a:b"));
        assert!(!is_label_name("__reserved"));
        assert_eq!(
            Matcher::eq("path", r#"a"b\c"#).to_string(),
            r#"path="a\"b\\c""#
        );
    }
}
