//! The data tier's roles: the PostgreSQL servers `strata up` runs (`pg-1`, the primary at
//! first, and `pg-2` … its streaming replicas; with shard groups `pg-s1-1` … per group). Each
//! reads its cluster's state from the control plane's store (see [`super::control`]), so with
//! an etcd store they start after its members. SQLite and existing servers (`url`) need no role.

use strata_control::cluster::POSTGRES_DIR;
use strata_control::pgnode::PostgresArgs;

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
    for group in clusters {
        let names: Vec<String> = (1..=usize::from(replicas) + 1)
            .map(|i| groups::server_name(group, i))
            .collect();
        let store = super::control::group_store(&store, group);
        for (i, name) in names.iter().enumerate() {
            let data = ctx.path(&[POSTGRES_DIR, group.unwrap_or(""), name]);
            let standbys = names[1..].to_vec();
            let primary = i == 0;
            let (role_name, first) = (name.clone(), names[0].clone());
            let store = store.clone();
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
                        args.replica_of = Some(w.addr(&first, LISTENER)?);
                    }
                    Ok(RoleCommand::Postgres(args))
                },
            ));
        }
    }
}
