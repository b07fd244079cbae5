//! # strata-engines — the external engines Strata runs
//!
//! Tier: none (infrastructure shared by the roles that run engines and by the tests). Depends
//! on no other Strata crate.
//!
//! Strata never writes its own database, cache server or broker: it runs the real ones from
//! the installed packages. This crate is the one place that finds them, starts them and
//! watches them:
//! - [`install`]: which engines are installed and where, and what to install when one is not;
//! - [`process`]: liveness, process trees and signals, as the supervisor, the failover
//!   controller and the engine roles use them;
//! - [`postgres`], the names every PostgreSQL server Strata runs shares.

pub mod install;
pub mod postgres;

pub use install::{Engine, NotInstalled};
pub mod process;
