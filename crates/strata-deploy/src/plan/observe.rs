//! Prometheus's role: `prometheus-1`, kept in `DIR/prometheus/`, with the SLO alerting rules of
//! every tier (`strata_observe::slo`, the defaults) written once into `rules/slo.yml` before it
//! starts. What it scrapes is `DIR/prometheus/targets.json`, which the supervisor rewrites with
//! every role's metrics address each time it writes the deployment's state
//! ([`crate::state::write`]), so Prometheus follows roles that restart on new ports or scale.
//!
//! The live dashboard's role, `dashboard-1` (`[observe] dashboard = true`), reads the same
//! state file, so it depends on no role and starts last.

use strata_observe::node::PrometheusArgs;

use super::{Plan, PlanContext, RoleSpec, Setup, Wiring};
use crate::roles::{RoleCommand, RoleKind};
use crate::topology::Topology;

/// The role's name.
pub const NAME: &str = "prometheus-1";
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
    plan.setup
        .push(Setup::new("write the SLO alerting rules", move || {
            std::fs::create_dir_all(&rules)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", rules.display()))?;
            let text = strata_observe::slo::rules::rule_file(&objectives(&spec.slo)?);
            strata_observe::scrape::write_atomically(&rules.join("slo.yml"), &text)
        }));
    plan.roles.push(RoleSpec::new(
        RoleKind::Prometheus,
        NAME,
        strata_observe::node::LISTENER,
        Vec::new(),
        move |w: &Wiring| {
            let mut args = PrometheusArgs::new(dir.clone());
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
