//! # strata-engines — the external engines Strata runs
//!
//! Tier: none (infrastructure shared by the roles that run engines and by the tests). Depends
//! on no other Strata crate.
//!
//! Strata never writes its own database, cache server or broker: it runs the real ones from
//! the installed packages. This crate is the one place that finds them, starts them and
//! watches them:
//! - [`process`]: liveness, process trees and signals, as the supervisor, the failover
//!   controller and the engine roles use them;
//! - [`postgres`], the names every PostgreSQL server Strata runs shares.

pub mod postgres;
pub mod process;
