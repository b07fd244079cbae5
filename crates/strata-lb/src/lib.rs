//! # strata-lb — the load balancer tier
//!
//! Tier: load balancer. Depends on `strata-core` only; it proxies HTTP to any backend and
//! knows nothing of the API behind it.

pub mod selection;
