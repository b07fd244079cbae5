//! The photo workers: `worker-1` … `worker-N`, each over the deployment's data directory (the
//! photo catalog, blobs and embedded queue live there, beside the API servers' SQLite data),
//! processing `concurrency` jobs at once. They start after the API servers, whose relays
//! publish the jobs, and stop before them. `strata scale workers N` adds and removes workers
//! of a running deployment with the same [`WorkerTemplate`].

use std::sync::Arc;

use strata_photos::role::WorkerArgs;

use super::{Plan, PlanContext, RoleSpec, Wiring, names_of};
use crate::roles::{RoleCommand, RoleKind};
use crate::state::DATA_DIR;
use crate::topology::Topology;

/// The listener a worker announces.
pub const LISTENER: &str = "metrics";

/// Makes worker `i`'s role (`worker-<i>`), the same for every `i`: what the plan starts and
/// what scaling a running deployment adds.
#[derive(Clone)]
pub struct WorkerTemplate(Arc<dyn Fn(u16) -> RoleSpec + Send + Sync>);

impl std::fmt::Debug for WorkerTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerTemplate")
    }
}

impl WorkerTemplate {
    /// Worker `i`'s role.
    pub fn spec(&self, i: u16) -> RoleSpec {
        (self.0)(i)
    }
}

/// The name of worker `i`.
pub fn name(i: u16) -> String {
    format!("worker-{i}")
}

/// The index of a worker's role name (`worker-3` → 3).
pub fn index_of(name: &str) -> Option<u16> {
    name.strip_prefix("worker-")?.parse().ok()
}

/// The workers of `[workers]`, and the template for more.
pub fn plan(topology: &Topology, ctx: &PlanContext, plan: &mut Plan) {
    let photos = super::queue::PhotoWiring::of(topology, ctx);
    let mut depends_on = names_of(&plan.roles, RoleKind::Api);
    depends_on.extend(photos.depends_on());
    let concurrency = u64::from(topology.workers.concurrency);
    let data_dir = ctx.path(&[DATA_DIR]);
    // With edges, a worker purges a user's photo redirect when it changes, following the
    // edges' admin addresses in the deployment's state file (as the API servers do).
    let edges = topology
        .edge
        .as_ref()
        .map(|e| (ctx.path(&[crate::state::STATE_FILE]), e.profile_ttl_secs));
    let template = WorkerTemplate(Arc::new(move |i: u16| {
        let name = name(i);
        let role_name = name.clone();
        let data_dir = data_dir.clone();
        let (photos, edges) = (photos.clone(), edges.clone());
        RoleSpec::new(
            RoleKind::Worker,
            name,
            LISTENER,
            depends_on.clone(),
            move |w: &Wiring| {
                let mut args = WorkerArgs::new(data_dir.clone());
                photos.apply(w, &mut args.photos)?;
                args.listen = w.listen();
                args.concurrency = concurrency;
                if let Some((state_file, ttl)) = &edges {
                    args.edges.purge_edges_state = Some(state_file.clone());
                    args.shared_max_age_secs = *ttl;
                }
                args.name = role_name.clone();
                args.exit_on_stdin_eof = true;
                Ok(RoleCommand::Worker(Box::new(args)))
            },
        )
    }));
    plan.roles
        .extend((1..=topology.workers.count).map(|i| template.spec(i)));
    plan.workers = Some(template);
}
