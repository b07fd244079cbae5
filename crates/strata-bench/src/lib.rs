//! # strata-bench — workloads
//!
//! Tier: none (tools that drive a deployment). Depends on `strata-core` (the user domain,
//! Snowflake ids), `strata-store` (loading users), `strata-deploy` (a running deployment's
//! roles, health and account store) and `strata-engines` (signalling processes).
//!
//! - [`seed`]: reproducible synthetic users (`strata seed`), generated on a thread ahead of
//!   bulk inserts, with a progress bar;
//! - [`chaos`]: `strata chaos`, real faults under open-loop load, and a verdict.
//!
//! The benchmark scripts in `bench/` build on these workloads.

pub mod chaos;
pub mod seed;
