//! # strata-cache — the cache tier
//!
//! Tier: cache. Depends on `strata-core` (shutdown, readiness) and `strata-engines` (running
//! Redis and Memcached) only: it caches versioned bytes for whoever asks.
//!
//! - [`kv`]: the textbook interface (`set`/`get`/`delete`/`get_or_load`, plus `add` and a
//!   versioned compare-and-set) with one contract for every backend: [`moka_kv`] in process,
//!   [`redis_kv`] and [`memcached_kv`] shared, [`sharded`] for several nodes by consistent
//!   hashing, [`guard`] for a circuit breaker around any of them.
//! - [`tiered`]: the two-level read-through cache the API uses — L1 in process over an optional
//!   L2 — with no stale put-back, stampede control, negative caching and a load limit.
//! - [`bus`]: the Redis invalidation bus that keeps every server's L1 coherent.
//! - [`watch`]: the same without Redis, for servers sharing one database: L1 applies the data
//!   tier's change log (a [`watch::ChangeSource`]) before it serves.
//! - [`options`]: an API server's cache settings, and the cache built from them.
//! - [`node`]: one shared cache server (Redis or Memcached) run as a role (`strata cache`).
//!
//! Why versions and an acknowledged bus rather than TTLs or Redis client tracking: see
//! `docs/cache.md`.

pub mod bus;
pub mod guard;
pub mod kv;
mod lease;
pub mod memcached_kv;
pub mod moka_kv;
pub mod node;
pub mod options;
pub mod redis_kv;
pub mod sharded;
pub mod tiered;
pub mod watch;

pub use kv::CacheError;
pub use node::Engine as CacheEngine;
