//! # strata-control — the control plane
//!
//! Tier: control. Depends on `strata-core`, `strata-engines` (running PostgreSQL and etcd) and
//! `strata-store` (its probe of a PostgreSQL server's role and WAL position). No tier depends
//! on it at run time: the data path keeps serving when the control plane is down.
//!
//! - [`cluster`]: `DIR/postgres/cluster.json`, which server is the primary and which are
//!   fenced — published by the controller, obeyed by every PostgreSQL role;
//! - [`pgnode`]: one PostgreSQL server as a role (`strata postgres`): create, copy, rejoin
//!   (pg_rewind), fence;
//! - [`controller`]: the failover controller (`strata control`): checks the primary, elects the
//!   most advanced replica, fences the old primary, promotes and re-points;
//! - [`route`]: how one server reaches another when not at its published address (through
//!   the relay of a link between data centres);
//! - [`store`]: where the cluster state lives, behind one interface (`StateStore`): a
//!   compare-and-set publish by the controller that leads; the file store;
//! - [`shard_map`]: the shard map (`strata_store::shard`) published beside the cluster state,
//!   by compare-and-set on its version (`ShardMapStore`, for the file store and etcd);
//! - [`store_options`]: which store a process uses (`--state-store file|etcd`, `--etcd`);
//! - [`etcd`]: the control plane on etcd — a client of etcd's JSON gateway, the state and the
//!   controllers' leadership in etcd (`EtcdStore`), and one etcd member as a role
//!   (`strata etcd`).
//!
//! Guarantees: under quorum commit a failover promotes a replica holding every acknowledged
//! write that any answering replica holds; a fenced former primary never takes writes again
//! before it has rewound and follows the new primary; with the state in etcd, a controller
//! that no longer leads (deposed, or frozen past its lease) cannot publish.

pub mod cluster;
pub mod controller;
pub mod etcd;
pub mod map_home;
pub mod pgnode;
pub mod route;
pub mod shard_map;
pub mod store;
pub mod store_options;

pub use pgnode::{CommitMode, RejoinMode};
