//! The cache tier's roles: the shared cache servers (`cache-1` …, Redis or Memcached) that
//! `strata up` runs for `[cache] engine = "redis" | "memcached"`. The in-process cache (L1)
//! lives inside each API server and needs no role.

use strata_cache::node::CacheArgs;

use super::{Plan, PlanContext, RoleSpec, Wiring};
use crate::roles::{RoleCommand, RoleKind};
use crate::topology::Topology;

/// Where the shared cache servers of a deployment keep their files: `DIR/cache/<role>`.
pub const CACHE_DIR: &str = "cache";

/// Memory bound of each shared cache server when the topology sets none, MiB.
pub const DEFAULT_MAX_MIB: u64 = 256;

/// The shared cache servers.
pub fn plan(topology: &Topology, ctx: &PlanContext, plan: &mut Plan) {
    let Some((engine, nodes)) = topology.cache.shared else {
        return;
    };
    let max_mib = topology.cache.max_mib.unwrap_or(DEFAULT_MAX_MIB);
    plan.roles.extend((1..=nodes).map(|i| {
        let name = format!("cache-{i}");
        let dir = ctx.path(&[CACHE_DIR, &name]);
        let role_name = name.clone();
        RoleSpec::new(
            RoleKind::Cache,
            name,
            engine.name(),
            Vec::new(),
            move |w: &Wiring| {
                let mut args = CacheArgs::new(engine, dir.clone());
                args.listen = w.listen();
                args.max_mib = max_mib;
                args.name = role_name.clone();
                args.exit_on_stdin_eof = true;
                Ok(RoleCommand::Cache(args))
            },
        )
    }));
}
