//! # strata-engines — the external engines Strata runs
//!
//! Tier: none. Depends on no Strata crate. Used by the engine roles (`strata postgres` and
//! `strata etcd` in strata-control, `strata cache` in strata-cache) at run time and by
//! strata-testkit in tests, so that a server is found, owned and started the same way in both.
//!
//! Strata never writes its own database, cache server or broker: it runs the real ones from
//! the installed packages. This crate is the one place that finds them, starts them and
//! watches them:
//! - [`install`]: which engines are installed and where, and what to install when one is not;
//! - [`process`]: liveness, process trees and signals by pid, as the supervisor, the failover
//!   controller and the engine roles use them (stopping with grace, waiting until stopped);
//! - [`daemon`]: a server process this process started — its output to a log (a file, or
//!   this process's stderr), waiting until it answers (or exits, or a deadline passes),
//!   kill -9, pause and resume, stop with grace — and one-shot programs run to the end;
//! - [`postgres`]: PostgreSQL — the server owner (the `postgres` user when root), data
//!   directories it can use, `initdb`, starting `postgres` and waiting for `pg_isready`,
//!   `psql`, `pg_basebackup`, `pg_rewind`, `postgresql.auto.conf`, leftover postmasters;
//! - [`redis`] and [`memcached`]: their argument lists for each way Strata runs them, their
//!   readiness probes, starting them;
//! - [`etcd`]: one member of an etcd cluster (the control plane's store) — its argument list
//!   (a new cluster, or joining one), its readiness probe (`/health`), starting it;
//! - [`rabbitmq`]: one RabbitMQ node (the queue tier's broker) — its private directories,
//!   configuration, Erlang cookie and port mapper, its readiness probe (the AMQP greeting),
//!   starting it, killing it with SIGKILL and starting it again on the same data;
//! - [`seaweedfs`]: SeaweedFS (`weed server -s3`, the blob tier's S3-compatible storage) — its
//!   eight loopback ports, its directory, an S3 identity so every request is signed, its
//!   readiness (the gateway healthy and a volume server known), kill -9 and restart on its data.
//!
//! The roles keep what is theirs (which server to follow, fencing, readiness lines, their
//! flags); the test kit keeps temporary directories and free-port retries.
//!
//! Next engines go here the same way, one file each with the same shape (arguments per mode,
//! a readiness probe, `start` returning a [`daemon::Server`]). Prometheus is an [`Engine`]
//! (located here, with `promtool`); how it is configured and run is `strata-observe`'s, its
//! only user.

pub mod daemon;
pub mod etcd;
pub mod install;
pub mod memcached;
pub mod postgres;
pub mod process;
pub mod rabbitmq;
pub mod redis;
pub mod seaweedfs;

pub use daemon::{Log, Server};
pub use install::{Engine, NotInstalled};

/// Why an engine could not be found, prepared or started.
#[derive(Debug)]
pub enum Error {
    /// The engine's program is not installed.
    NotInstalled(NotInstalled),
    /// Anything else, as a sentence that names what failed and why.
    Failed(String),
}

/// This crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotInstalled(e) => e.fmt(f),
            Error::Failed(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

impl From<NotInstalled> for Error {
    fn from(e: NotInstalled) -> Self {
        Error::NotInstalled(e)
    }
}

/// `io::Result` → [`Result`] with a sentence saying what was being done (the cause follows
/// it after a colon).
pub(crate) trait Context<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::io::Result<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Failed(format!("{}: {e}", what())))
    }
}
