//! The generated SLO rules, checked and tested by the real `promtool` (Debian's `prometheus`
//! package): `promtool check rules` on the generated file, and `promtool test rules` on
//! synthetic series — a healthy service, a burst of errors, slow burns, a latency burst.
//!
//! The expected alerts are not written by hand: [`Scenario::expect`] computes each window's
//! error ratio from the scenario's per-minute rates (exactly what `rate()` over counters
//! sampled every minute gives, since errors and totals are sampled together) and applies the
//! workbook's rule (both windows above factor × budget). Each scenario also asserts the story
//! it tells (which alerts fire, and roughly when), and every check point is kept away from a
//! threshold, so neither float rounding nor a minute's offset decides a result.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_observe::slo::rules::{self, BURN_ALERTS, BurnAlert};
use strata_observe::slo::{Matcher, Objective, Objectives};
use strata_observe::yaml::Value;

/// `promtool`, or a failure that says how to install it.
fn promtool() -> PathBuf {
    match strata_engines::install::locate_promtool() {
        Ok(path) => path,
        Err(_) => panic!(
            "promtool is not installed: install it with `apt-get install prometheus` \
             (scripts/test installs it when missing)"
        ),
    }
}

/// Runs `promtool <args>` in `dir`; the status, and its output for messages.
fn run_promtool(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "promtool {} in {} exited with {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_generated_rules_pass_promtool_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("slo.yml"),
        rules::rule_file(&Objectives::defaults()),
    )
    .expect("write");
    let (ok, out) = run_promtool(dir.path(), &["check", "rules", "slo.yml"]);
    assert!(ok, "{out}");
    // 8 indicators (availability and latency of 4 tiers) × (5 recording rules + 3 alerts).
    assert!(out.contains("64 rules found"), "{out}");
}

#[test]
fn promtool_check_catches_what_our_validation_cannot() {
    // A regular expression is checked by Prometheus, not by Objectives::new: the check must
    // really run and fail.
    let mut api = Objectives::defaults().get("api").expect("api").clone();
    api.errors = Matcher::re("status", "5.(");
    let objectives = Objectives::new(vec![api]).expect("valid for us");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("slo.yml"), rules::rule_file(&objectives)).expect("write");
    let (ok, out) = run_promtool(dir.path(), &["check", "rules", "slo.yml"]);
    assert!(!ok, "a broken regex passed:\n{out}");
}

/// Minutes of healthy traffic before anything happens: more than the longest window (3 days),
/// so that every window starts full of history.
const HEALTHY_MINUTES: u32 = 4400;
/// Events per minute.
const RATE: f64 = 1000.0;
/// The healthy service: 0.05% errors and 0.5% slow events (burn rate 0.5 for both the
/// availability (99.9%) and latency (99%) objectives of the API).
const HEALTHY: Phase = Phase {
    minutes: HEALTHY_MINUTES,
    errors: 0.0005,
    slow: 0.005,
};

/// A stretch of minutes at constant ratios of failed and slow events.
#[derive(Debug, Clone, Copy)]
struct Phase {
    minutes: u32,
    errors: f64,
    slow: f64,
}

struct Scenario {
    name: &'static str,
    phases: Vec<Phase>,
    /// Minutes after the healthy start at which the alerts are checked.
    checks: Vec<u32>,
}

/// An alert expected firing at a time: (alert, sli).
type Firing = Vec<(&'static str, &'static str)>;

impl Scenario {
    fn api() -> Objective {
        Objectives::defaults().get("api").expect("api").clone()
    }

    /// The ratio (errors or slow events) in minute `k` (1-based: the increase from sample
    /// k-1 to sample k).
    fn minute(&self, k: u32, slow: bool) -> f64 {
        let mut end = 0;
        for p in &self.phases {
            end += p.minutes;
            if k <= end {
                return if slow { p.slow } else { p.errors };
            }
        }
        panic!("minute {k} is past the scenario");
    }

    /// The error ratio over the `window` minutes up to minute `t`.
    fn ratio(&self, t: u32, window: u32, slow: bool) -> f64 {
        let from = t.saturating_sub(window) + 1;
        let sum: f64 = (from..=t).map(|k| self.minute(k, slow)).sum();
        sum / f64::from(t + 1 - from)
    }

    /// Whether `alert` fires for the sli at minute `t`, and how close to a threshold either
    /// window is (relative distance).
    fn fires(&self, t: u32, alert: &BurnAlert, slow: bool, target: f64) -> (bool, f64) {
        let threshold = alert.factor * (100.0 - target) / 100.0;
        let long = self.ratio(t, window_minutes(alert.long), slow);
        let short = self.ratio(t, window_minutes(alert.short), slow);
        let margin = ((long - threshold) / threshold)
            .abs()
            .min(((short - threshold) / threshold).abs());
        (long > threshold && short > threshold, margin)
    }

    /// The alerts firing at `HEALTHY_MINUTES + after`, asserting the answer is clear-cut:
    /// no window within 5% of its threshold unless the other window already decides, and the
    /// same answer two minutes either side.
    fn expect(&self, after: u32) -> Firing {
        let api = Self::api();
        let latency_target = api.latency.as_ref().expect("latency").target;
        let t = HEALTHY_MINUTES + after;
        let mut out = Vec::new();
        for alert in &BURN_ALERTS {
            for (sli, slow, target) in [
                ("availability", false, api.availability),
                ("latency", true, latency_target),
            ] {
                let (now, _) = self.fires(t, alert, slow, target);
                for near in t - 2..=t + 2 {
                    assert_eq!(
                        self.fires(near, alert, slow, target).0,
                        now,
                        "{}: check point +{after}m is within two minutes of {} {sli} changing",
                        self.name,
                        alert.name
                    );
                }
                if now {
                    let (_, margin) = self.fires(t, alert, slow, target);
                    assert!(
                        margin > 0.05,
                        "{}: +{after}m is too close to a threshold",
                        self.name
                    );
                    out.push((alert.name, sli));
                }
            }
        }
        out
    }

    fn total_minutes(&self) -> u32 {
        self.phases.iter().map(|p| p.minutes).sum()
    }

    /// promtool's expanding notation for a counter growing by `per_minute(phase)` each minute.
    fn counter(&self, per_minute: impl Fn(&Phase) -> f64) -> String {
        let mut parts = vec!["0".to_string()];
        let mut value = 0.0;
        for p in &self.phases {
            let r = per_minute(p);
            let start = value + r;
            parts.push(if p.minutes == 1 {
                rules::num(start)
            } else {
                format!("{}+{}x{}", rules::num(start), rules::num(r), p.minutes - 1)
            });
            value += r * f64::from(p.minutes);
        }
        parts.join(" ")
    }

    /// The `promtool test rules` file for this scenario.
    fn test_file(&self) -> String {
        let api = Self::api();
        let threshold = rules::num(api.latency.as_ref().expect("latency").threshold_seconds);
        let series = |name: String, values: String| {
            Value::map([("series", Value::Str(name)), ("values", Value::Str(values))])
        };
        let input = vec![
            series(
                r#"strata_http_requests_total{kind="api",status="200"}"#.into(),
                self.counter(|p| RATE * (1.0 - p.errors)),
            ),
            series(
                r#"strata_http_requests_total{kind="api",status="503"}"#.into(),
                self.counter(|p| RATE * p.errors),
            ),
            series(
                format!(
                    r#"strata_http_request_duration_seconds_bucket{{kind="api",le="{threshold}"}}"#
                ),
                self.counter(|p| RATE * (1.0 - p.slow)),
            ),
            series(
                r#"strata_http_request_duration_seconds_bucket{kind="api",le="+Inf"}"#.into(),
                self.counter(|_| RATE),
            ),
            series(
                r#"strata_http_request_duration_seconds_count{kind="api"}"#.into(),
                self.counter(|_| RATE),
            ),
        ];
        let slis = rules::slis(&api);
        let mut checks = Vec::new();
        for &after in &self.checks {
            let firing = self.expect(after);
            for alert in &BURN_ALERTS {
                let alerts: Vec<Value> = firing
                    .iter()
                    .filter(|(name, _)| *name == alert.name)
                    .map(|(_, kind)| {
                        let sli = slis.iter().find(|s| s.kind == *kind).expect("sli");
                        let mut labels = vec![
                            ("slo".to_string(), Value::str(&api.name)),
                            ("sli".to_string(), Value::str(sli.kind)),
                        ];
                        labels.extend(
                            rules::alert_labels(alert).map(|(k, v)| (k.to_string(), Value::Str(v))),
                        );
                        let annotations =
                            rules::annotations(&api, sli, alert).map(|(k, v)| (k, Value::Str(v)));
                        Value::map([
                            ("exp_labels", Value::Map(labels)),
                            ("exp_annotations", Value::map(annotations)),
                        ])
                    })
                    .collect();
                checks.push(Value::map([
                    (
                        "eval_time",
                        Value::str(format!("{}m", HEALTHY_MINUTES + after)),
                    ),
                    ("alertname", Value::str(alert.name)),
                    ("exp_alerts", Value::List(alerts)),
                ]));
            }
        }
        Value::map([
            ("rule_files", Value::List(vec![Value::str("slo.yml")])),
            // Rules every 5 minutes (check points are on that grid): days of series stay quick
            // to evaluate.
            ("evaluation_interval", Value::str("5m")),
            (
                "tests",
                Value::List(vec![Value::map([
                    ("interval", Value::str("1m")),
                    ("input_series", Value::List(input)),
                    ("alert_rule_test", Value::List(checks)),
                ])]),
            ),
        ])
        .render()
    }

    /// Runs `promtool test rules` on this scenario; fails with promtool's output.
    fn run(&self) {
        assert!(
            self.checks.iter().all(|c| c % 5 == 0),
            "{}: check points must be on the 5-minute evaluation grid",
            self.name
        );
        assert!(
            self.checks
                .iter()
                .all(|&c| HEALTHY_MINUTES + c + 2 <= self.total_minutes()),
            "{}: a check point is past the series",
            self.name
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("slo.yml"),
            rules::rule_file(&Objectives::defaults()),
        )
        .expect("write rules");
        std::fs::write(dir.path().join("test.yml"), self.test_file()).expect("write test");
        let (ok, out) = run_promtool(dir.path(), &["test", "rules", "test.yml"]);
        assert!(ok, "{}:\n{out}", self.name);
        assert!(out.contains("SUCCESS"), "{out}");
    }
}

fn window_minutes(w: &str) -> u32 {
    let (n, unit) = w.split_at(w.len() - 1);
    let n: u32 = n.parse().expect("window");
    match unit {
        "m" => n,
        "h" => n * 60,
        "d" => n * 1440,
        other => panic!("unit {other}"),
    }
}

fn then(minutes: u32, errors: f64, slow: f64) -> Phase {
    Phase {
        minutes,
        errors,
        slow,
    }
}

#[test]
fn a_healthy_service_fires_nothing() {
    let s = Scenario {
        name: "healthy",
        phases: vec![HEALTHY, then(700, HEALTHY.errors, HEALTHY.slow)],
        checks: vec![0, 60, 360, 690],
    };
    for &c in &s.checks {
        assert!(s.expect(c).is_empty());
    }
    s.run();
}

#[test]
fn a_burst_of_errors_pages_within_the_minutes_the_fast_windows_imply_and_stops_after_it() {
    // 10% errors (burn rate 100) for 40 minutes, then healthy again. The 1h window passes
    // 14.4 × 0.1% after 60 × (1.44% − 0.05%) / (10% − 0.05%) ≈ 8.4 minutes.
    let s = Scenario {
        name: "burst",
        phases: vec![
            HEALTHY,
            then(40, 0.1, HEALTHY.slow),
            then(200, HEALTHY.errors, HEALTHY.slow),
        ],
        checks: vec![5, 15, 30, 50, 80],
    };
    assert!(s.expect(5).is_empty(), "too early for any window");
    assert_eq!(s.expect(15), [("SloFastBurn", "availability")]);
    assert_eq!(
        s.expect(30),
        [
            ("SloFastBurn", "availability"),
            ("SloMediumBurn", "availability"),
            ("SloSlowBurn", "availability")
        ]
    );
    // Ten minutes after the burst the 5m window is clean: the fast page resolves although
    // the 1h window is still far above its threshold.
    assert!(s.ratio(HEALTHY_MINUTES + 50, 60, false) > 14.4 * 0.001);
    assert_eq!(
        s.expect(50),
        [
            ("SloMediumBurn", "availability"),
            ("SloSlowBurn", "availability")
        ]
    );
    assert_eq!(s.expect(80), [("SloSlowBurn", "availability")]);
    s.run();
}

#[test]
fn a_slow_burn_at_eight_times_pages_only_through_the_six_hour_window() {
    // 0.8% errors: burn rate 8, above 6 but below 14.4.
    let s = Scenario {
        name: "burn 8",
        phases: vec![HEALTHY, then(620, 0.008, HEALTHY.slow)],
        checks: vec![60, 240, 340, 600],
    };
    assert!(s.expect(60).is_empty());
    assert!(s.expect(240).is_empty(), "6h window not yet above 0.6%");
    assert_eq!(
        s.expect(340),
        [
            ("SloMediumBurn", "availability"),
            ("SloSlowBurn", "availability")
        ]
    );
    assert!(!s.expect(600).iter().any(|(a, _)| *a == "SloFastBurn"));
    s.run();
}

#[test]
fn a_burn_at_three_times_only_opens_a_ticket() {
    // 0.3% errors: burn rate 3, below 6; the 3d window passes 0.1% after about 14 hours.
    let s = Scenario {
        name: "burn 3",
        phases: vec![HEALTHY, then(1000, 0.003, HEALTHY.slow)],
        checks: vec![360, 780, 960],
    };
    assert!(s.expect(360).is_empty());
    assert!(s.expect(780).is_empty());
    assert_eq!(s.expect(960), [("SloSlowBurn", "availability")]);
    s.run();
}

#[test]
fn slow_requests_burn_the_latency_objective_not_availability() {
    // 20% of requests slower than the API's 0.25 s: burn rate 20 on a 99% objective.
    let s = Scenario {
        name: "latency",
        phases: vec![HEALTHY, then(70, HEALTHY.errors, 0.2)],
        checks: vec![10, 50],
    };
    assert!(s.expect(10).is_empty());
    assert_eq!(s.expect(50), [("SloFastBurn", "latency")]);
    s.run();
}

#[test]
fn a_wrong_expectation_fails_the_promtool_test() {
    // The harness itself: promtool must fail when told an alert fires that does not.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("slo.yml"),
        rules::rule_file(&Objectives::defaults()),
    )
    .expect("write rules");
    let healthy = Scenario {
        name: "healthy",
        phases: vec![HEALTHY, then(30, HEALTHY.errors, HEALTHY.slow)],
        checks: vec![10],
    };
    let lie = healthy.test_file().replacen(
        "exp_alerts: []",
        "exp_alerts:\n          - exp_labels:\n              slo: \"api\"",
        1,
    );
    assert_ne!(lie, healthy.test_file());
    std::fs::write(dir.path().join("test.yml"), lie).expect("write test");
    let (ok, out) = run_promtool(dir.path(), &["test", "rules", "test.yml"]);
    assert!(!ok, "promtool accepted a wrong expectation:\n{out}");
    assert!(out.contains("got:"), "failed for another reason:\n{out}");
}
