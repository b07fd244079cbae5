//! # strata-bench — workloads
//!
//! Tier: none (tools that drive a deployment). Depends on `strata-core` (the user domain,
//! Snowflake ids), `strata-store` (loading users), `strata-deploy` (a running deployment's
//! roles, health and account store), `strata-engines` (signalling processes) and
//! `strata-photos` (images to upload, poison files).
//!
//! - [`seed`]: reproducible synthetic users (`strata seed`), generated on a thread ahead of
//!   bulk inserts, with a progress bar;
//! - [`chaos`]: `strata chaos`, real faults under open-loop load, and a verdict;
//! - [`cache_load`]: `strata cache-load`, fresh seeded request traces sent to the API servers,
//!   their offline replay through ideal caches, and stampede trials;
//! - [`upload_load`]: `strata upload-load`, photo uploads at a fixed rate and an account of
//!   every job (for the queue tier's burst and fault benchmarks).
//!
//! The benchmark scripts in `bench/` build on these workloads.

pub mod cache_load;
pub mod chaos;
pub mod seed;
pub mod upload_load;
