//! # strata-bench — workloads
//!
//! Tier: none (tools that drive a deployment). Depends on `strata-core` (the user domain,
//! Snowflake ids), `strata-store` (loading users), `strata-deploy` (a running deployment's
//! roles, health and account store), `strata-engines` (signalling processes, a private
//! RabbitMQ broker), `strata-photos` (the photo worker's rendering, images and poison files
//! to upload), `strata-queue` (the queue engines) and `strata-edge` (its memory store, replayed
//! by `strata cache-load edge`).
//!
//! - [`seed`]: reproducible synthetic users (`strata seed`), generated on a thread ahead of
//!   bulk inserts, with a progress bar;
//! - [`chaos`]: `strata chaos`, real faults under open-loop load, and a verdict;
//! - [`cache_load`]: `strata cache-load`, fresh seeded request traces sent to the API servers,
//!   their offline replay through ideal caches, and stampede trials;
//! - [`upload_load`]: `strata upload-load`, photo uploads at a fixed rate and an account of
//!   every job (for the queue tier's burst and fault benchmarks);
//! - [`photo_load`]: `strata photo-load`, seeded synthetic photos and the worker's rendering
//!   of them timed on one thread, phase by phase;
//! - [`queue_load`]: `strata queue-load`, messages per second and latency through the
//!   embedded queue or RabbitMQ, publishers and consumers at once.
//!
//! The benchmark scripts in `bench/` build on these workloads.

pub mod cache_load;
pub mod chaos;
pub mod photo_load;
pub mod queue_load;
pub mod seed;
pub mod upload_load;
