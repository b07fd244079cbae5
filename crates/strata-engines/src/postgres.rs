//! PostgreSQL as Strata runs it: the names every server Strata creates shares.

/// The superuser of the servers Strata runs (trust authentication, loopback only).
pub const SUPERUSER: &str = "strata";
/// The database the API servers use on the servers Strata runs.
pub const DATABASE: &str = "strata";
