//! # strata-deploy — topologies and the local orchestrator
//!
//! Tier: deployment. Depends only on `strata-core` (the readiness line). It knows the command
//! line of each role process (`strata api …`), never the code behind it.
//!
//! - [`topology`]: the TOML file that names a deployment's roles and how many of each, and its
//!   validation, which reports every mistake at once before anything starts;
//! - [`state`]: `DIR/state.json`, the record of a running deployment that `status`, `down` and
//!   `logs` read from another terminal;
//! - [`supervisor`]: starts every role instance, waits for readiness, restarts crashed roles
//!   with backoff, gives up on a role that keeps crashing, and stops everything on request;
//! - [`control`]: liveness and health probes, and stopping a deployment from outside.
//!
//! Guarantees: nothing starts unless the whole topology is valid; a deployment that cannot
//! become ready is torn down and the reason shown; when the supervisor stops — by request or
//! killed outright — no role process outlives it (roles exit when their stdin pipe closes).

pub mod argv;
pub mod control;
pub mod launch;
pub mod logs;
pub mod plan;
pub mod present;
pub mod rejoin;
pub mod roles;
pub mod state;
pub mod status;
pub mod supervisor;
pub mod topology;
