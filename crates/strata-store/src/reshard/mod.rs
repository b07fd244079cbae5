//! Online resharding: moving slot ranges between shard groups while the service runs.
//!
//! - [`rows`]: what a resharding reads and writes in a group's database (rows as stored, the
//!   change log, fences), whatever the engine;
//! - [`plan`]: what to reshard and its plan, refused before anything moves when impossible;
//! - [`scan`]: checksums of a slot range, and deleting copies;
//! - [`journal`]: how far a resharding got, so that it resumes after being killed;
//! - [`run`]: the resharder — capture, copy, catch up, cut over chunk by chunk with a verified
//!   short write pause, clean up; abort before cut-over.
pub mod journal;
pub mod plan;
pub mod rows;
pub mod run;
pub mod scan;
