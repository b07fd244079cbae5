//! Prometheus rule files generated from [`Objectives`]: recording rules for each objective's
//! error ratio over every window the alerts read, and the multiwindow, multi-burn-rate alerts
//! of the SRE workbook ("Alerting on SLOs", the sixth and recommended iteration).
//!
//! The burn rate is how fast the error budget is spent: an error ratio of `b × (1 − target)`
//! spends a 30-day budget in `30 / b` days. Each alert pairs a long window, which says the
//! burn has lasted long enough to matter, with a short one (a twelfth of it), which says it is
//! still going on, so that an alert stops soon after the burn does:
//!
//! | alert | severity | burn rate | long window | short window | budget spent when it fires |
//! |---|---|---|---|---|---|
//! | `SloFastBurn` | page | 14.4 | 1h | 5m | 2% |
//! | `SloMediumBurn` | page | 6 | 6h | 30m | 5% |
//! | `SloSlowBurn` | ticket | 1 | 3d | 6h | 10% |
//!
//! Recorded series are `slo:error_ratio:rate<window>` with labels `slo` (the objective's name)
//! and `sli` (`availability` or `latency`). Availability's error ratio is failed events over
//! all events; latency's is events slower than the threshold (`_count` minus the bucket at
//! `le`) over all events.

use super::{Objective, Objectives, budget};
use crate::yaml::Value;

/// Every window a recording rule is kept for.
pub const WINDOWS: [&str; 5] = ["5m", "30m", "1h", "6h", "3d"];

/// The recorded error ratio over `window`.
pub fn ratio_series(window: &str) -> String {
    format!("slo:error_ratio:rate{window}")
}

/// One multiwindow burn-rate alert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnAlert {
    pub name: &'static str,
    /// `page` or `ticket`.
    pub severity: &'static str,
    /// The burn rate both windows must exceed.
    pub factor: f64,
    pub long: &'static str,
    pub short: &'static str,
    /// The long window in hours.
    pub long_hours: f64,
}

/// The workbook's three alerts.
pub const BURN_ALERTS: [BurnAlert; 3] = [
    BurnAlert {
        name: "SloFastBurn",
        severity: "page",
        factor: 14.4,
        long: "1h",
        short: "5m",
        long_hours: 1.0,
    },
    BurnAlert {
        name: "SloMediumBurn",
        severity: "page",
        factor: 6.0,
        long: "6h",
        short: "30m",
        long_hours: 6.0,
    },
    BurnAlert {
        name: "SloSlowBurn",
        severity: "ticket",
        factor: 1.0,
        long: "3d",
        short: "6h",
        long_hours: 72.0,
    },
];

/// One service level indicator of an objective: availability, or latency.
#[derive(Debug, Clone, PartialEq)]
pub struct Sli {
    /// `availability` or `latency`.
    pub kind: &'static str,
    /// The target, in percent.
    pub target: f64,
    /// What a bad event is, for people ("errors", "events slower than 0.25 s").
    pub bad: String,
    ratio: Ratio,
}

/// The series an error ratio is computed from (selectors, matchers included).
#[derive(Debug, Clone, PartialEq)]
enum Ratio {
    /// Failed events over all events, on one counter.
    Failed { bad: String, all: String },
    /// Events above the threshold over all events, on a histogram: `(count - fast) / count`.
    Slow { count: String, fast: String },
}

impl Sli {
    /// The error ratio over `window`, as PromQL.
    pub fn expr(&self, window: &str) -> String {
        let sum_rate = |selector: &str| format!("sum(rate({selector}[{window}]))");
        match &self.ratio {
            // A status's series exists only once it has been answered: before the first
            // failure the failed side is 0, not absent (a tier with no traffic at all still
            // has no ratio, 0/0 being no sample).
            Ratio::Failed { bad, all } => {
                format!(
                    "(\n{}\nor vector(0)\n)\n/\n{}",
                    sum_rate(bad),
                    sum_rate(all)
                )
            }
            Ratio::Slow { count, fast } => format!(
                "(\n{count}\n-\n{fast}\n)\n/\n{count}",
                count = sum_rate(count),
                fast = sum_rate(fast)
            ),
        }
    }
}

/// A number as PromQL and people read it: at most 12 decimals, no trailing zeros.
pub fn num(x: f64) -> String {
    let s = format!("{x:.12}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// `metric{m1, m2}`, or `metric` with no matchers.
fn selector(metric: &str, matchers: &[String]) -> String {
    if matchers.is_empty() {
        metric.to_string()
    } else {
        format!("{metric}{{{}}}", matchers.join(","))
    }
}

/// The indicators of `o`: availability always, latency when it has a histogram.
pub fn slis(o: &Objective) -> Vec<Sli> {
    let base: Vec<String> = o.selector.iter().map(ToString::to_string).collect();
    let mut bad = base.clone();
    bad.push(o.errors.to_string());
    let mut out = vec![Sli {
        kind: "availability",
        target: o.availability,
        bad: "errors".into(),
        ratio: Ratio::Failed {
            bad: selector(&o.requests, &bad),
            all: selector(&o.requests, &base),
        },
    }];
    if let Some(l) = &o.latency {
        let threshold = num(l.threshold_seconds);
        // The exporter writes bounds as Rust prints them ("10"); Prometheus 3 rewrites
        // integral ones as "10.0". Both are matched.
        let le = if l.threshold_seconds.fract() == 0.0 {
            format!("le=~\"{threshold}|{threshold}.0\"")
        } else {
            format!("le=\"{threshold}\"")
        };
        let mut fast = base.clone();
        fast.push(le);
        out.push(Sli {
            kind: "latency",
            target: l.target,
            bad: format!("events slower than {threshold} s"),
            ratio: Ratio::Slow {
                count: selector(&format!("{}_count", l.histogram), &base),
                fast: selector(&format!("{}_bucket", l.histogram), &fast),
            },
        });
    }
    out
}

/// The alert's condition for `sli` of `o`.
fn alert_expr(o: &Objective, sli: &Sli, a: &BurnAlert) -> String {
    let labels = format!("{{slo=\"{}\",sli=\"{}\"}}", o.name, sli.kind);
    let threshold = format!("({} * {})", num(a.factor), num(budget(sli.target)));
    format!(
        "{long}{labels} > {threshold}\nand\n{short}{labels} > {threshold}",
        long = ratio_series(a.long),
        short = ratio_series(a.short),
    )
}

/// The alert's `summary` and `description` annotations for `sli` of `o`: what burns and how
/// fast. Static text (no `$value`), so a test can expect it exactly.
pub fn annotations(o: &Objective, sli: &Sli, a: &BurnAlert) -> [(&'static str, String); 2] {
    let allowed = budget(sli.target);
    let summary = format!(
        "{} {}: error budget burning at {}x or faster",
        o.name,
        sli.kind,
        num(a.factor)
    );
    let window_hours = f64::from(o.window_days) * 24.0;
    let description = format!(
        "The {} tier's {} objective ({}% over {} days) has had more than {}% {} over the last {} \
         and over the last {}: a burn rate above {}, which spends the whole error budget in {} \
         days ({}% of it per {}).",
        o.name,
        sli.kind,
        num(sli.target),
        o.window_days,
        num(a.factor * allowed * 100.0),
        sli.bad,
        a.long,
        a.short,
        num(a.factor),
        num((f64::from(o.window_days) / a.factor * 10.0).round() / 10.0),
        num((a.factor * a.long_hours / window_hours * 1000.0).round() / 10.0),
        a.long,
    );
    [("summary", summary), ("description", description)]
}

/// The labels every alert of `sli` of `o` carries, beyond those of the series (`slo`, `sli`).
pub fn alert_labels(a: &BurnAlert) -> [(&'static str, String); 2] {
    [
        ("severity", a.severity.to_string()),
        ("burn_rate", num(a.factor)),
    ]
}

/// The rule group of one objective: its recording rules, then its alerts.
fn group(o: &Objective) -> Value {
    let mut rules = Vec::new();
    let slis = slis(o);
    for sli in &slis {
        for w in WINDOWS {
            rules.push(Value::map([
                ("record", Value::str(ratio_series(w))),
                ("expr", Value::str(sli.expr(w))),
                (
                    "labels",
                    Value::map([("slo", Value::str(&o.name)), ("sli", Value::str(sli.kind))]),
                ),
            ]));
        }
    }
    for sli in &slis {
        for a in &BURN_ALERTS {
            // `slo` and `sli` are on the series already; repeated here so that the group's
            // alerts differ by their labels too (promtool's lint asks for it).
            let mut labels = vec![
                ("slo".to_string(), Value::str(&o.name)),
                ("sli".to_string(), Value::str(sli.kind)),
            ];
            labels.extend(alert_labels(a).map(|(k, v)| (k.to_string(), Value::Str(v))));
            let annotations = annotations(o, sli, a).map(|(k, v)| (k, Value::Str(v)));
            rules.push(Value::map([
                ("alert", Value::str(a.name)),
                ("expr", Value::str(alert_expr(o, sli, a))),
                ("labels", Value::Map(labels)),
                ("annotations", Value::map(annotations)),
            ]));
        }
    }
    Value::map([
        ("name", Value::str(format!("slo-{}", o.name))),
        ("rules", Value::List(rules)),
    ])
}

/// The rule file for `objectives`: one group per objective.
pub fn rule_file(objectives: &Objectives) -> String {
    let header = "# Generated by Strata from its service level objectives; do not edit.\n";
    let groups = objectives.iter().map(group).collect();
    format!(
        "{header}{}",
        Value::map([("groups", Value::List(groups))]).render()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_printed_as_people_write_them() {
        assert_eq!(num(0.001), "0.001");
        assert_eq!(num(14.4), "14.4");
        assert_eq!(num(6.0), "6");
        assert_eq!(num(budget(99.9)), "0.001");
        assert_eq!(num(budget(99.0)), "0.01");
        assert_eq!(num(0.0), "0");
    }

    #[test]
    fn the_rules_record_every_window_and_alert_on_both_windows_of_each_pair() {
        let objectives = Objectives::defaults();
        let text = rule_file(&objectives);
        // 4 tiers, each with latency: 8 indicators × 5 windows, and 8 × 3 alerts.
        assert_eq!(text.matches("- record: ").count(), 40);
        assert_eq!(text.matches("- alert: ").count(), 24);
        assert!(text.contains(
            r#"expr: "(\nsum(rate(strata_http_requests_total{kind=\"api\",status=~\"5..\"}[5m]))\nor vector(0)\n)\n/\nsum(rate(strata_http_requests_total{kind=\"api\"}[5m]))""#
        ), "{text}");
        assert!(text.contains(
            r#"strata_http_request_duration_seconds_bucket{kind=\"api\",le=\"0.25\"}[1h]"#
        ));
        assert!(text.contains(
            r#"strata_queue_job_duration_seconds_bucket{kind=\"worker\",le=~\"10|10.0\"}[3d]"#
        ));
        assert!(text.contains(
            r#"expr: "slo:error_ratio:rate1h{slo=\"api\",sli=\"availability\"} > (14.4 * 0.001)\nand\nslo:error_ratio:rate5m{slo=\"api\",sli=\"availability\"} > (14.4 * 0.001)""#
        ));
        assert!(
            text.contains(r#"slo:error_ratio:rate3d{slo=\"lb\",sli=\"latency\"} > (1 * 0.01)"#)
        );
        assert!(text.contains(
            r#"strata_edge_request_duration_seconds_bucket{kind=\"edge\",le=\"0.5\"}[6h]"#
        ));
    }

    #[test]
    fn matcher_values_are_escaped_and_taken_literally() {
        let mut o = Objectives::defaults().get("edge").expect("edge").clone();
        o.errors = crate::slo::Matcher::eq("outcome", r#"a"{window}\"#);
        let expr = slis(&o)[0].expr("5m");
        assert_eq!(
            expr,
            "(\n".to_string()
                + r#"sum(rate(strata_edge_requests_total{kind="edge",outcome="a\"{window}\\"}[5m]))"#
                + "\nor vector(0)\n)\n/\nsum(rate(strata_edge_requests_total{kind=\"edge\"}[5m]))"
        );
    }

    #[test]
    fn annotations_say_what_burns_and_how_fast() {
        let objectives = Objectives::defaults();
        let api = objectives.get("api").expect("api");
        let slis = slis(api);
        let [(_, summary), (_, description)] = annotations(api, &slis[0], &BURN_ALERTS[0]);
        assert_eq!(
            summary,
            "api availability: error budget burning at 14.4x or faster"
        );
        assert_eq!(
            description,
            "The api tier's availability objective (99.9% over 30 days) has had more than 1.44% \
             errors over the last 1h and over the last 5m: a burn rate above 14.4, which spends \
             the whole error budget in 2.1 days (2% of it per 1h)."
        );
        let [_, (_, slow)] = annotations(api, &slis[1], &BURN_ALERTS[2]);
        assert!(
            slow.contains("more than 1% events slower than 0.25 s over the last 3d"),
            "{slow}"
        );
        assert!(slow.contains("(10% of it per 3d)"), "{slow}");
        let [_, (_, medium)] = annotations(api, &slis[0], &BURN_ALERTS[1]);
        assert!(medium.contains("in 5 days (5% of it per 6h)"), "{medium}");
    }
}
