//! The cache tier's roles: the shared cache servers (Redis or Memcached) that `strata up` runs
//! for `[cache] engine = "redis" | "memcached"`, `nodes` of them: `cache-1` … — or, with
//! `[[datacenter]]` tables, `nodes` in each data centre, named like its other roles
//! (`us-east-cache-1`, `us-west-cache-1` …, [`super::datacenters::role_name`]), each with its
//! own directory `DIR/cache/<role>`. The API servers of a data centre use its own cache servers
//! only ([`names`]), so cache traffic never crosses a link: no relay is planned for a cache
//! server. The data centre's layout lists them, so `strata datacenter kill` takes them down
//! with it. The in-process cache (L1) lives inside each API server and needs no role.
//!
//! Coherence is per data centre: a write stores its version in, and invalidates through the
//! Redis bus of, its own data centre's cache servers only. Another data centre's L2 may serve
//! the row it had for up to the L2 TTL (`--cache-l2-ttl-ms`, 1 h by default), and its L1s for
//! up to `l1_ttl_ms` (10 min by default with Redis): nothing carries invalidations across a link.

use strata_cache::node::CacheArgs;

use super::{Plan, PlanContext, RoleSpec, Wiring};
use crate::roles::{RoleCommand, RoleKind};
use crate::topology::Topology;

/// Where the shared cache servers of a deployment keep their files: `DIR/cache/<role>`.
pub const CACHE_DIR: &str = "cache";

/// Memory bound of each shared cache server when the topology sets none, MiB.
pub const DEFAULT_MAX_MIB: u64 = 256;

/// The shared cache servers of data centre `datacentre` (0-based; `None` without data
/// centres): `cache-1` … or `us-east-cache-1` …; none without a shared cache (or for a data
/// centre the topology does not have).
pub fn names(topology: &Topology, datacentre: Option<usize>) -> Vec<String> {
    let Some((_, nodes)) = topology.cache.shared else {
        return Vec::new();
    };
    let nodes = u16::from(nodes);
    match datacentre {
        None => (1..=nodes).map(|i| format!("cache-{i}")).collect(),
        Some(d) => topology.datacenters.get(d).map_or_else(Vec::new, |dc| {
            (1..=nodes)
                .map(|i| super::datacenters::role_name(&dc.name, "cache", i))
                .collect()
        }),
    }
}

/// The shared cache servers: `nodes` of them, or `nodes` in each data centre.
pub fn plan(topology: &Topology, ctx: &PlanContext, plan: &mut Plan) {
    let Some((engine, _)) = topology.cache.shared else {
        return;
    };
    let max_mib = topology.cache.max_mib.unwrap_or(DEFAULT_MAX_MIB);
    // Each data centre's servers serve its own API servers only (`api.rs`): nothing reaches
    // them across a link, so — unlike the PostgreSQL servers — they need no relay
    // (`datacenters::plan_relays_to`), and `datacenters::database_wires` is not for them.
    let servers: Vec<String> = if topology.has_datacentres() {
        (0..topology.datacenters.len())
            .flat_map(|d| names(topology, Some(d)))
            .collect()
    } else {
        names(topology, None)
    };
    plan.roles.extend(servers.into_iter().map(|name| {
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
