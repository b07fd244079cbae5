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
            let text =
                strata_observe::slo::rules::rule_file(&strata_observe::slo::Objectives::defaults());
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
        crate::dashboard::LISTENER,
        Vec::new(),
        move |w: &Wiring| {
            let mut args = crate::dashboard::DashboardArgs::new(dir.clone());
            args.listen = w.listen();
            args.name = DASHBOARD.into();
            args.exit_on_stdin_eof = true;
            Ok(RoleCommand::Dashboard(args))
        },
    ));
}
