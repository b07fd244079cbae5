//! # strata-photos — the photo pipeline
//!
//! Tier: queue (its first workload: profile photos processed asynchronously). Depends on
//! `strata-core`, `strata-queue` (the [`strata_queue::Queue`] trait and the embedded engine)
//! and `strata-blobs` (where the bytes go); the web tier depends on it to accept uploads, and
//! the binary runs its worker role. It knows nothing of HTTP.
//!
//! The path of a photo:
//! 1. [`upload::inspect`] at the edge: size, type sniffed from the bytes, completeness, pixel
//!    dimensions from the header — a bad upload is refused before anything is stored;
//! 2. [`service::Photos::submit`]: the raw bytes into the blob store, then the job, the user's
//!    pending photo and an outbox row in **one catalog transaction** ([`catalog`]);
//! 3. the [`relay`] publishes outbox rows to the queue and marks them sent (a crash between
//!    commit and publish loses nothing);
//! 4. the [`worker`] renders every size ([`process`]: decoded under limits, metadata dropped
//!    by re-encoding, resized with SIMD), stores them content-addressed and applies the result
//!    to the catalog exactly once, however often the job is delivered.
//!
//! [`role`] is `strata worker`. [`testdata`] makes images for tests (this crate's and the web
//! tier's).

pub mod catalog;
pub mod process;
pub mod relay;
pub mod role;
pub mod service;
pub mod testdata;
pub mod upload;
pub mod worker;

pub use service::{PhotoDirs, Photos, SubmitError};
