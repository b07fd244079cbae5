//! Prometheus's role: `prometheus-1`, kept in `DIR/prometheus/`, with the SLO alerting rules of
//! every tier (`strata_observe::slo`, the defaults) written once into `rules/slo.yml` before it
//! starts. What it scrapes is `DIR/prometheus/targets.json`, which the supervisor rewrites with
//! every role's metrics address each time it writes the deployment's state
//! ([`crate::state::write`]), so Prometheus follows roles that restart on new ports or scale.
//!
//! With `[observe] alertmanager = true`, `alertmanager-1` (kept in `DIR/alertmanager/`) starts
//! first and Prometheus sends it the alerts that fire, with the always-firing watchdog
//! (`rules/watchdog.yml`) that proves the path; the supervisor restarts a role on its port, so
//! Prometheus's address for it holds.
//!
//! The live dashboard's role, `dashboard-1` (`[observe] dashboard = true`), reads the same
//! state file, so it depends on no role; it is planned before the edges, which depend on it
//! to send `/dashboard/` to it ([`super::edge`]).

use strata_observe::node::PrometheusArgs;

use super::{Plan, PlanContext, RoleSpec, Setup, Wiring};
use crate::roles::{RoleCommand, RoleKind};
use crate::topology::Topology;

/// The role's name.
pub const NAME: &str = "prometheus-1";
/// Alertmanager's role name.
pub const ALERTMANAGER: &str = "alertmanager-1";
/// Alertmanager's directory under the deployment's.
pub const ALERTMANAGER_DIR: &str = "alertmanager";
/// The dashboard role's name.
pub const DASHBOARD: &str = "dashboard-1";

pub use crate::state::PROMETHEUS_DIR;

/// The topology's trace sampling on every role where a trace may start: the balancers, the
/// edges and the API servers (behind a balancer, its decision travels in `traceparent`).
pub fn plan_tracing(topology: &Topology, plan: &mut Plan) {
    let sample = topology.observe.trace_sample;
    for role in &mut plan.roles {
        if matches!(role.kind, RoleKind::Lb | RoleKind::Edge | RoleKind::Api) {
            role.map_command(move |command| match command {
                RoleCommand::Lb(args) => args.trace_sample = sample,
                RoleCommand::Edge(edge) => edge.args.trace_sample = sample,
                RoleCommand::Api(args) => args.server.trace_sample = sample,
                _ => {}
            });
        }
    }
}

/// The default objectives with the topology's `[observe.slo.<tier>]` changes applied,
/// checked again as a whole.
pub fn objectives(
    changes: &[(&'static str, crate::topology::SloChange)],
) -> anyhow::Result<strata_observe::slo::Objectives> {
    let changed = strata_observe::slo::Objectives::defaults()
        .iter()
        .cloned()
        .map(|mut objective| {
            for (_, change) in changes.iter().filter(|(tier, _)| *tier == objective.name) {
                if let Some(a) = change.availability {
                    objective.availability = a;
                }
                if let Some(latency) = &mut objective.latency {
                    if let Some(t) = change.latency_seconds {
                        latency.threshold_seconds = t;
                    }
                    if let Some(t) = change.latency_target {
                        latency.target = t;
                    }
                }
            }
            objective
        })
        .collect();
    strata_observe::slo::Objectives::new(changed).map_err(anyhow::Error::new)
}

/// Prometheus, when the topology asks for it.
pub fn plan(topology: &Topology, ctx: &PlanContext, plan: &mut Plan) {
    let spec = topology.observe.clone();
    if !spec.prometheus {
        return;
    }
    let dir = ctx.path(&[PROMETHEUS_DIR]);
    let rules = PrometheusArgs::new(dir.clone()).rules_path();
    let (slo, watchdog) = (spec.slo.clone(), spec.alertmanager);
    plan.setup
        .push(Setup::new("write the SLO alerting rules", move || {
            std::fs::create_dir_all(&rules)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", rules.display()))?;
            let text = strata_observe::slo::rules::rule_file(&objectives(&slo)?);
            strata_observe::scrape::write_atomically(&rules.join("slo.yml"), &text)?;
            let watchdog_file = rules.join("watchdog.yml");
            if watchdog {
                let text = strata_observe::alertmanager::watchdog_rule_file();
                strata_observe::scrape::write_atomically(&watchdog_file, &text)
            } else {
                match std::fs::remove_file(&watchdog_file) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(anyhow::anyhow!(
                        "cannot remove {}: {e}",
                        watchdog_file.display()
                    )),
                    _ => Ok(()),
                }
            }
        }));
    let mut depends_on = Vec::new();
    if spec.alertmanager {
        plan_alertmanager(&spec, ctx, plan);
        depends_on.push(ALERTMANAGER.to_string());
    }
    plan.roles.push(RoleSpec::new(
        RoleKind::Prometheus,
        NAME,
        strata_observe::node::LISTENER,
        depends_on,
        move |w: &Wiring| {
            let mut args = PrometheusArgs::new(dir.clone());
            if spec.alertmanager {
                args.alertmanager = Some(w.addr(ALERTMANAGER, strata_observe::daemon::LISTENER)?);
                args.alert_resend_delay_secs = resend_delay_secs(spec.scrape_interval_secs);
            }
            args.listen = w.listen();
            args.retention = spec.retention.clone();
            args.retention_size = spec.retention_size.clone();
            args.scrape_interval_secs = spec.scrape_interval_secs;
            args.name = NAME.into();
            args.exit_on_stdin_eof = true;
            Ok(RoleCommand::Prometheus(args))
        },
    ));
}

/// How often Prometheus sends a firing alert again: 4 scrape intervals, from 5 s to 60 s
/// (Prometheus's default, which the default 15 s interval gives). Its first sending, at start,
/// can come before Prometheus has discovered its Alertmanager and is dropped, so a
/// fast-scraping deployment should not wait a minute for its alerts.
pub fn resend_delay_secs(scrape_interval_secs: u64) -> u64 {
    scrape_interval_secs.saturating_mul(4).clamp(5, 60)
}

/// Alertmanager, in front of which Prometheus is planned.
fn plan_alertmanager(spec: &crate::topology::ObserveSpec, ctx: &PlanContext, plan: &mut Plan) {
    let dir = ctx.path(&[ALERTMANAGER_DIR]);
    let webhook = spec.alert_webhook.clone();
    plan.roles.push(RoleSpec::new(
        RoleKind::Alertmanager,
        ALERTMANAGER,
        strata_observe::daemon::LISTENER,
        Vec::new(),
        move |w: &Wiring| {
            let mut args = strata_observe::alertmanager::AlertmanagerArgs::new(dir.clone());
            args.listen = w.listen();
            args.webhook = webhook.clone();
            args.name = ALERTMANAGER.into();
            args.exit_on_stdin_eof = true;
            Ok(RoleCommand::Alertmanager(args))
        },
    ));
}

/// The live dashboard, when the topology asks for it.
pub fn plan_dashboard(topology: &Topology, ctx: &PlanContext, plan: &mut Plan) {
    if !topology.observe.dashboard {
        return;
    }
    let dir = ctx.dir.clone();
    plan.roles.push(RoleSpec::new(
        RoleKind::Dashboard,
        DASHBOARD,
        crate::roles::DashboardArgs::LISTENER,
        Vec::new(),
        move |w: &Wiring| {
            let mut args = crate::roles::DashboardArgs::new(dir.clone());
            args.listen = w.listen();
            args.name = DASHBOARD.into();
            args.exit_on_stdin_eof = true;
            Ok(RoleCommand::Dashboard(args))
        },
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::SloChange;

    #[test]
    fn the_topology_changes_a_tiers_objective_and_leaves_the_others() {
        let change = SloChange {
            availability: Some(99.95),
            latency_seconds: Some(0.1),
            latency_target: Some(99.5),
        };
        let o = objectives(&[("api", change)]).expect("valid");
        let api = o.get("api").expect("api");
        assert_eq!(api.availability, 99.95);
        let latency = api.latency.as_ref().expect("latency");
        assert_eq!((latency.threshold_seconds, latency.target), (0.1, 99.5));
        let defaults = strata_observe::slo::Objectives::defaults();
        assert_eq!(o.get("lb"), defaults.get("lb"));
        let text = strata_observe::slo::rules::rule_file(&o);
        assert!(
            text.contains(
                r#"strata_http_request_duration_seconds_bucket{kind=\"api\",le=\"0.1\"}"#
            ),
            "{text}"
        );
        assert_eq!(objectives(&[]).expect("valid"), defaults);
    }
}
