//! The control plane's roles: with PostgreSQL replicas, the controllers that fail over between
//! them (`control-1` …; with shard groups `control-s1-1` … for each group) and, with `store = "etcd"` and no etcd of one's own, the etcd members
//! that hold the cluster state (`etcd-1` …). Members join one by one — `etcd-2` through
//! `etcd-1`, `etcd-3` through both — because a member is added to a cluster only once the last
//! one added is connected.

use std::sync::Arc;

use strata_control::cluster::POSTGRES_DIR;
use strata_control::controller::{ControlArgs, NodeAddr};
use strata_control::etcd::node::EtcdArgs;
use strata_control::store_options::{StoreKind, StoreOptions};

use super::{Plan, PlanContext, PlanError, RoleSpec, Wiring, names_of};
use crate::groups;
use crate::roles::{RoleCommand, RoleKind};
use crate::topology::{DataEngine, Topology};

/// The listener every etcd role announces.
pub const LISTENER: &str = "etcd";

/// Where the etcd members keep their data: `DIR/etcd/<role>`.
pub const ETCD_DIR: &str = "etcd";

/// Builds a role's store options from what the etcd members announced.
pub type StoreBuilder = Arc<dyn Fn(&Wiring) -> Result<StoreOptions, PlanError> + Send + Sync>;

/// The control plane's store as the roles that read it see it: the etcd members they must wait
/// for (planned here, once), and how to build their `--state-store` options.
pub fn store(topology: &Topology, plan: &mut Plan) -> (Vec<String>, StoreBuilder) {
    let spec = &topology.control;
    if spec.store == StoreKind::File {
        return (Vec::new(), Arc::new(|_: &Wiring| Ok(StoreOptions::file())));
    }
    let prefix = deployment_prefix(topology);
    if !spec.etcd.is_empty() {
        let endpoints = spec.etcd.clone();
        return (
            Vec::new(),
            Arc::new(move |_: &Wiring| {
                let mut options = StoreOptions::etcd(endpoints.clone());
                options.etcd_prefix = prefix.clone();
                Ok(options)
            }),
        );
    }
    let members = names_of(&plan.roles, RoleKind::Etcd);
    (
        members.clone(),
        Arc::new(move |w: &Wiring| {
            let endpoints = members
                .iter()
                .map(|m| Ok(format!("http://{}", w.addr(m, LISTENER)?)))
                .collect::<Result<Vec<_>, PlanError>>()?;
            let mut options = StoreOptions::etcd(endpoints);
            options.etcd_prefix = prefix.clone();
            Ok(options)
        }),
    )
}

/// The etcd members a topology asks `strata up` to run; planned before the database servers,
/// which read the state from them.
pub fn plan_members(topology: &Topology, ctx: &PlanContext, plan: &mut Plan) {
    for i in 1..=topology.etcd_members() {
        let name = format!("etcd-{i}");
        let before: Vec<String> = (1..i).map(|j| format!("etcd-{j}")).collect();
        let data = ctx.path(&[ETCD_DIR, &name]);
        let role_name = name.clone();
        plan.roles.push(RoleSpec::new(
            RoleKind::Etcd,
            name,
            LISTENER,
            before.clone(),
            move |w: &Wiring| {
                let mut args = EtcdArgs::new(data.clone());
                args.listen = w.listen();
                args.join = before
                    .iter()
                    .map(|m| Ok(format!("http://{}", w.addr(m, LISTENER)?)))
                    .collect::<Result<Vec<_>, PlanError>>()?;
                args.name = role_name.clone();
                args.exit_on_stdin_eof = true;
                Ok(RoleCommand::Etcd(args))
            },
        ));
    }
}

/// A cluster's store: the deployment's, with a shard group's clusters each under its own etcd
/// prefix (`PREFIX/<group>`: its own state and its own leader election). The file store keeps
/// each group's state in its own directory already.
pub fn group_store(store: &StoreBuilder, group: Option<&str>) -> StoreBuilder {
    let Some(group) = group.map(prefix_safe) else {
        return store.clone();
    };
    let store = store.clone();
    Arc::new(move |w: &Wiring| {
        let mut options = store(w)?;
        if options.state_store == StoreKind::Etcd {
            options.etcd_prefix = format!("{}/{group}", options.etcd_prefix);
        }
        Ok(options)
    })
}

/// The controllers, after every database server (and every etcd member): `[control] count`
/// for each cluster, watching only that cluster's servers.
pub fn plan(topology: &Topology, ctx: &PlanContext, plan: &mut Plan) {
    let DataEngine::Postgres { commit, .. } = topology.data else {
        return;
    };
    if topology.controllers() == 0 {
        return;
    }
    let databases = names_of(&plan.roles, RoleKind::Postgres);
    let (members, store) = store(topology, plan);
    let groups = topology.postgres_groups();
    let clusters: Vec<Option<&str>> = if groups.is_empty() {
        vec![None]
    } else {
        groups.iter().map(|g| Some(g.as_str())).collect()
    };
    for group in clusters {
        let nodes: Vec<String> = databases
            .iter()
            .filter(|n| groups::group_of(n) == group)
            .cloned()
            .collect();
        let postgres_dir = ctx.path(&[POSTGRES_DIR, group.unwrap_or("")]);
        let store = group_store(&store, group);
        for i in 1..=usize::from(topology.control.count) {
            let name = groups::controller_name(group, i);
            let role_name = name.clone();
            let (nodes, postgres_dir, store) = (nodes.clone(), postgres_dir.clone(), store.clone());
            let (check_interval_ms, failures) = (
                topology.control.check_interval_ms,
                topology.control.failures,
            );
            let routes = super::datacenters::database_routes(topology);
            let depends_on = nodes
                .iter()
                .chain(&members)
                .cloned()
                .chain(routes.iter().map(|(_, _, relay)| relay.clone()))
                .collect();
            plan.roles.push(RoleSpec::new(
                RoleKind::Control,
                name,
                "http",
                depends_on,
                move |w: &Wiring| {
                    let addrs = nodes
                        .iter()
                        .map(|n| {
                            Ok(NodeAddr {
                                name: n.clone(),
                                addr: w.addr(n, super::POSTGRES_LISTENER)?,
                            })
                        })
                        .collect::<Result<Vec<_>, PlanError>>()?;
                    let mut args = ControlArgs::new(postgres_dir.clone(), addrs);
                    args.listen = w.listen();
                    args.primary = nodes[0].clone();
                    args.routes = routes
                        .iter()
                        .map(|(from, to, relay)| {
                            Ok(strata_control::route::Route {
                                from: from.clone(),
                                to: to.clone(),
                                addr: w.addr(relay, strata_link::LISTENER)?,
                            })
                        })
                        .collect::<Result<Vec<_>, PlanError>>()?;
                    args.commit = commit;
                    if let Some(ms) = check_interval_ms {
                        args.check_interval_ms = ms;
                    }
                    if let Some(n) = failures {
                        args.failures = n;
                    }
                    args.store = store(w)?;
                    args.name = role_name.clone();
                    args.exit_on_stdin_eof = true;
                    Ok(RoleCommand::Control(args))
                },
            ));
        }
    }
}

/// A topology name as a key segment: letters, digits, `-` and `_`.
/// The prefix of a deployment's keys in etcd: `/strata/NAME` (the cluster state, each shard
/// group's under `/strata/NAME/<group>`, and the shard map at `/strata/NAME/shard-map`).
pub fn deployment_prefix(topology: &Topology) -> String {
    format!("/strata/{}", prefix_safe(&topology.name))
}

fn prefix_safe(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() {
        "unnamed".into()
    } else {
        safe
    }
}
