//! # strata-control — the control plane
//!
//! Tier: control. Depends on `strata-core`, `strata-engines` (running PostgreSQL) and
//! `strata-store` (its probe of a PostgreSQL server's role and WAL position). No tier depends
//! on it at run time: the data path keeps serving when the control plane is down.
//!
//! - [`cluster`]: `DIR/postgres/cluster.json`, which server is the primary and which are
//!   fenced — published by the controller, obeyed by every PostgreSQL role;
//! - [`pgnode`]: one PostgreSQL server as a role (`strata postgres`): create, copy, rejoin
//!   (pg_rewind), fence;
//! - [`controller`]: the failover controller (`strata control`): checks the primary, elects the
//!   most advanced replica, fences the old primary, promotes and re-points.
//!
//! Guarantees: under quorum commit a failover promotes a replica holding every acknowledged
//! write that any answering replica holds; a fenced former primary never takes writes again
//! before it has rewound and follows the new primary.

pub mod cluster;
pub mod controller;
pub mod pgnode;
pub mod store;

pub use pgnode::{CommitMode, RejoinMode};
