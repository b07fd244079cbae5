//! The photo workers: `worker-1` … `worker-N`, each over the deployment's data directory (the
//! photo catalog, blobs and embedded queue live there, beside the API servers' SQLite data),
//! processing `concurrency` jobs at once. They start after the API servers, whose relays
//! publish the jobs, and stop before them.

use strata_photos::role::WorkerArgs;

use super::{Plan, PlanContext, RoleSpec, Wiring, names_of};
use crate::roles::{RoleCommand, RoleKind};
use crate::state::DATA_DIR;
use crate::topology::Topology;

/// The listener a worker announces.
pub const LISTENER: &str = "metrics";

/// The workers of `[workers]`.
pub fn plan(topology: &Topology, ctx: &PlanContext, plan: &mut Plan) {
    let photos = super::queue::PhotoWiring::of(topology, ctx);
    let mut depends_on = names_of(&plan.roles, RoleKind::Api);
    depends_on.extend(photos.depends_on());
    let concurrency = u64::from(topology.workers.concurrency);
    plan.roles.extend((1..=topology.workers.count).map(|i| {
        let name = format!("worker-{i}");
        let role_name = name.clone();
        let data_dir = ctx.path(&[DATA_DIR]);
        let photos = photos.clone();
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
                args.name = role_name.clone();
                args.exit_on_stdin_eof = true;
                Ok(RoleCommand::Worker(args))
            },
        )
    }));
}
