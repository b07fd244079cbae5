//! # strata-bench — workloads
//!
//! Tier: none (a tool that drives the data tier). Depends on `strata-core` (the user domain,
//! Snowflake ids) and `strata-store` (loading users).
//!
//! - [`seed`]: reproducible synthetic users (`strata seed`), generated on a thread ahead of
//!   bulk inserts, with a progress bar.
//!
//! The benchmark scripts in `bench/` build on these workloads.

pub mod seed;
