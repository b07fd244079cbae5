//! # strata-deploy — topologies and the local orchestrator
//!
//! Tier: deployment (it runs the others). Depends on `strata-core`, `strata-engines`, and on
//! each role's crate — `strata-api`, `strata-lb`, `strata-cache`, `strata-control`,
//! `strata-photos` — for the role's typed arguments (and `strata-store` for `strata status`'s
//! database probe and the resharding commands). No tier
//! depends on it.
//!
//! A topology file goes through, in order:
//! - [`topology`]: the compiler — every section read into typed structs by one field reader,
//!   then whole-topology checks (ports, installed engines); every mistake at once, with lines;
//! - [`plan`]: the topology as role specs — name, kind, typed command ([`roles::RoleCommand`]),
//!   port, the roles it depends on — one file per tier;
//! - [`argv`]: a typed command rendered to the role process's command line and environment;
//! - [`supervisor`]: starts roles in dependency order, waits for their readiness lines,
//!   restarts crashed roles with backoff, gives up on a role that keeps crashing, and stops
//!   dependents first;
//! - [`launch`]: `strata up` in the foreground or detached.
//!
//! Around a running deployment: [`state`] (`DIR/state.json`, read from other terminals),
//! [`status`] and [`present`] (`strata status`, tables; [`layers`]: DNS → balancers → API
//! pool), [`logs`], [`control`] (health probes
//! and `strata down`), [`dashboard`] (`strata dashboard`, the live web page with alerts,
//! traces, and kill, restart and freeze buttons), [`rejoin`] (`strata db rejoin`), [`accounts`] (its account store, for
//! `strata admin` and drills), [`shards`] (`strata reshard`, `strata shard`: the shard groups
//! of a data directory), [`groups`] (the names and places of PostgreSQL shard groups),
//! [`outage`] (`strata datacenter kill|start`: a whole data centre held down and brought back).
//!
//! Guarantees: nothing starts unless the whole topology is valid; a deployment that cannot
//! become ready is torn down and the reason shown; when the supervisor stops — by request or
//! killed outright — no role process outlives it (roles exit when their stdin pipe closes).

pub mod accounts;
pub mod argv;
pub mod control;
pub mod dashboard;
pub mod groups;
pub mod launch;
pub mod layers;
pub mod logs;
pub mod maps;
pub mod outage;
pub mod plan;
pub mod present;
pub mod rejoin;
pub mod roles;
pub mod runner;
pub mod scale;
pub mod shards;
pub mod state;
pub mod status;
pub mod supervisor;
pub mod topology;
