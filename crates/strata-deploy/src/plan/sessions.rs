//! The session store's role: with `[sessions] engine = "redis"`, one durable Redis of its own
//! (`sessions-1`: append-only file fsynced on every write, no eviction — never the cache's,
//! which evicts). With the default (`"database"`) sessions live in the data tier: no role.

use strata_cache::CacheEngine;
use strata_cache::node::CacheArgs;

use super::{Plan, PlanContext, RoleSpec, Wiring};
use crate::roles::{RoleCommand, RoleKind};
use crate::topology::{SessionsEngine, Topology};

/// Where the session Redis keeps its append-only file: `DIR/sessions/sessions-1`.
pub const SESSIONS_DIR: &str = "sessions";

/// The role's name.
pub const NAME: &str = "sessions-1";

/// Memory bound of the session Redis, MiB (full, it refuses writes rather than drop sessions).
pub const MAX_MIB: u64 = 1024;

/// The session store, when the topology keeps sessions in Redis.
pub fn plan(topology: &Topology, ctx: &PlanContext, plan: &mut Plan) {
    if topology.sessions != SessionsEngine::Redis {
        return;
    }
    let dir = ctx.path(&[SESSIONS_DIR, NAME]);
    plan.roles.push(RoleSpec::new(
        RoleKind::Cache,
        NAME,
        CacheEngine::Redis.name(),
        Vec::new(),
        move |w: &Wiring| {
            let mut args = CacheArgs::new(CacheEngine::Redis, dir.clone());
            args.listen = w.listen();
            args.durable = true;
            args.max_mib = MAX_MIB;
            args.name = NAME.into();
            args.exit_on_stdin_eof = true;
            Ok(RoleCommand::Cache(args))
        },
    ));
}
