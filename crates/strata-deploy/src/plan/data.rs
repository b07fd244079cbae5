//! The data tier's roles: the PostgreSQL servers `strata up` runs (`pg-1`, the primary at
//! first, and `pg-2` … its streaming replicas; with shard groups `pg-s1-1` … per group). Each
//! reads its cluster's state from the control plane's store (see [`super::control`]), so with
//! an etcd store they start after its members. SQLite and existing servers (`url`) need no role.

use strata_control::cluster::POSTGRES_DIR;
use strata_control::pgnode::PostgresArgs;
use strata_control::route::Route;

use super::{Plan, PlanContext, RoleSpec, Wiring};
use crate::groups;
use crate::roles::{RoleCommand, RoleKind};
use crate::topology::{DataEngine, Topology};

/// The listener every PostgreSQL role announces.
pub const LISTENER: &str = super::POSTGRES_LISTENER;

/// The database servers: one replicated cluster, or one per shard group (each with its own
/// directory, cluster state and primary; see [`crate::groups`]).
pub fn plan(topology: &Topology, ctx: &PlanContext, plan: &mut Plan) {
    let DataEngine::Postgres {
        replicas,
        commit,
        rejoin,
    } = topology.data
    else {
        return;
    };
    let groups = topology.postgres_groups();
    let clusters: Vec<Option<&str>> = if groups.is_empty() {
        vec![None]
    } else {
        groups.iter().map(|g| Some(g.as_str())).collect()
    };
    let (store_roles, store) = super::control::store(topology, plan);
    // With data centres, servers reach those of the others through relays.
    let routes = super::datacenters::database_routes(topology);
    for group in clusters {
        let names: Vec<String> = (1..=usize::from(replicas) + 1)
            .map(|i| groups::server_name(group, i))
            .collect();
        let store = super::control::group_store(&store, group);
        for (i, name) in names.iter().enumerate() {
            let data = ctx.path(&[POSTGRES_DIR, group.unwrap_or(""), name]);
            let standbys = names[1..].to_vec();
            let primary = i == 0;
            let store = store.clone();
            let mine: Vec<(String, String)> = routes
                .iter()
                .filter(|(from, _, _)| from == name)
                .map(|(_, to, relay)| (to.clone(), relay.clone()))
                .collect();
            // A replica first copies and follows the first server: through its relay, when
            // that one is in another data centre.
            let first = mine
                .iter()
                .find(|(to, _)| *to == names[0])
                .map_or((names[0].clone(), LISTENER), |(_, relay)| {
                    (relay.clone(), strata_link::LISTENER)
                });
            let role_name = name.clone();
            plan.roles.push(RoleSpec::new(
                RoleKind::Postgres,
                name.clone(),
                LISTENER,
                if primary {
                    store_roles.clone()
                } else {
                    store_roles
                        .iter()
                        .cloned()
                        .chain([names[0].clone()])
                        .chain((first.0 != names[0]).then(|| first.0.clone()))
                        .collect()
                },
                move |w: &Wiring| {
                    let mut args = PostgresArgs::new(data.clone());
                    args.store = store(w)?;
                    args.listen = w.listen();
                    args.name = role_name.clone();
                    args.exit_on_stdin_eof = true;
                    // Every server may be a fenced primary one day: each is told how to rejoin.
                    args.rejoin = rejoin;
                    if primary {
                        // The primary waits for its replicas by name (the synchronous quorum).
                        args.commit = commit;
                        args.standbys = standbys.clone();
                    } else {
                        args.replica_of = Some(w.addr(&first.0, first.1)?);
                    }
                    // Routes through relays planned after this server are known from its
                    // restarts on (a first primary needs none until it follows another).
                    args.routes = mine
                        .iter()
                        .filter_map(|(to, relay)| {
                            Some(Route {
                                from: role_name.clone(),
                                to: to.clone(),
                                addr: w.addr(relay, strata_link::LISTENER).ok()?,
                            })
                        })
                        .collect();
                    Ok(RoleCommand::Postgres(args))
                },
            ));
            if group.is_none() {
                super::datacenters::plan_relays_to(topology, ctx, i, plan);
            }
        }
    }
}
