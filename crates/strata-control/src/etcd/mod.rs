//! The control plane on etcd, as Patroni runs it: the cluster state and the controllers'
//! leadership in an etcd cluster of its own, so that losing any one machine — a controller's or
//! an etcd member's — loses neither the state nor the ability to fail over.
//!
//! - [`client`]: a small etcd v3 client over etcd's JSON gateway (HTTP/1.1 + JSON): keys,
//!   transactions, leases, a watch, membership. No gRPC crate: `etcd-client` needs `protoc` to
//!   build, and a machine with only Rust must build Strata;
//! - [`store`]: [`store::EtcdStore`], the [`crate::store::StateStore`] on etcd — a publish is one
//!   transaction that checks the version read and that the writer still leads under its lease;
//! - [`node`]: one etcd member as a role (`strata etcd`): the first member starts a new
//!   cluster, the others join it through a member they are told (`member add`), each keeps its
//!   ports for its restarts.
//!
//! Which store a process uses is chosen by [`crate::store_options::StoreOptions`].

pub mod client;
pub mod node;
pub mod store;

pub use client::{EtcdClient, EtcdError};
pub use store::EtcdStore;
