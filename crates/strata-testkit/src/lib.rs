//! # strata-testkit — real engines for tests
//!
//! Tier: none — test support only (a dev-dependency; no tier depends on it at run time).
//! Depends on strata-engines alone (never the reverse), which finds, owns and starts every engine exactly
//! as the roles do at run time; this crate adds what tests need on top: a temporary directory
//! per server, a free port (another is tried if it is taken before the server binds it),
//! panics that say why, and faults.
//!
//! Tests that exercise PostgreSQL run the real server: [`PgServer`] finds the installed
//! binaries (Debian's `postgresql-15`, or `$STRATA_PG_BIN`), runs `initdb` in a temporary
//! directory, and starts `postgres` on a free loopback port — as the `postgres` user when the
//! test runs as root, because PostgreSQL refuses to run as root. Nothing listens on a fixed
//! port and nothing outside the temporary directory is touched, so a machine that already runs
//! PostgreSQL on 5432 is left alone. The server is stopped and its directory removed on drop.
//!
//! [`RedisServer`] and [`MemcachedServer`] do the same for `redis-server` and `memcached`
//! (no persistence; Memcached as `nobody` when root, as it requires), and [`EtcdServer`] for
//! `etcd` (a one-member cluster on two free ports; never 2379/2380).
//!
//! Faults are real: `kill9` sends SIGKILL, `pause` SIGSTOP.
//!
//! [`engines`] re-exports `strata-engines` for tests that drive an engine's own mechanics (a
//! RabbitMQ node killed and restarted on its data, say), so a tier's tests depend on the test
//! kit alone.

pub use strata_engines as engines;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use strata_engines::postgres::{self, InitOptions, Postgres};
use strata_engines::{Log, Server, etcd, memcached, process, redis};

/// The superuser every test cluster is created with (trust authentication on loopback only).
pub const PG_USER: &str = postgres::SUPERUSER;

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    strata_engines::daemon::free_port()
        .unwrap_or_else(|e| panic!("cannot find a free loopback port: {e}"))
}

/// Where the PostgreSQL server binaries are: `$STRATA_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<major>/bin` that has a server.
pub fn pg_bin_dir() -> Result<PathBuf, String> {
    postgres::bin_dir().map_err(|e| e.to_string())
}

/// Settings of a test server.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// `fsync` on or off. Off (the default) is safe against process kills — the operating
    /// system keeps the written pages — and makes tests fast; only a machine crash loses data.
    pub fsync: bool,
    /// Extra `-c name=value` settings.
    pub settings: Vec<(String, String)>,
}

/// A PostgreSQL server of its own, for one test.
#[derive(Debug)]
pub struct PgServer {
    pg: Postgres,
    /// Holds the data directory, the socket directory and the log; removed on drop.
    root: tempfile::TempDir,
    port: u16,
    options: PgOptions,
    server: Option<Server>,
}

impl PgServer {
    /// Creates a new cluster (`initdb`) and starts it. Panics with the reason when it cannot.
    pub fn start() -> Self {
        Self::start_with(PgOptions::default())
    }

    /// As [`PgServer::start`], with settings.
    pub fn start_with(options: PgOptions) -> Self {
        Self::try_start(options).unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"))
    }

    /// Creates and starts a cluster, or says why not.
    pub fn try_start(options: PgOptions) -> Result<Self, String> {
        let pg = Postgres::find().map_err(|e| e.to_string())?;
        let server = Self::prepare("strata-pg-", pg, options)?;
        // A throwaway cluster need not wait for its files to reach the disk.
        let init = InitOptions {
            checksums: false,
            no_sync: true,
        };
        server
            .pg
            .initdb(&server.data_dir(), init, &server.log())
            .map_err(|e| e.to_string())?;
        server.launch_on_a_free_port()
    }

    /// A streaming replica of `primary`: `pg_basebackup -R` into a new directory, started as a
    /// hot standby on its own free port.
    pub fn start_replica_of(primary: &PgServer) -> Self {
        Self::try_start_replica_of(primary, PgOptions::default())
            .unwrap_or_else(|e| panic!("cannot start a PostgreSQL replica: {e}"))
    }

    /// As [`PgServer::start_replica_of`], or says why not.
    pub fn try_start_replica_of(primary: &PgServer, options: PgOptions) -> Result<Self, String> {
        let server = Self::prepare("strata-pg-replica-", primary.pg.clone(), options)?;
        server
            .pg
            .basebackup(&server.data_dir(), &primary.addr(), None, &server.log())
            .map_err(|e| e.to_string())?;
        server.launch_on_a_free_port()
    }

    /// Runs one SQL statement with psql and returns what it printed (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.pg
            .psql(&self.addr(), db, sql)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A temporary root with `data` and `sock` directories the server owner can use.
    fn prepare(prefix: &str, pg: Postgres, options: PgOptions) -> Result<Self, String> {
        let root = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        for dir in ["data", "sock"] {
            // ROOT/dir: the owner must be able to cross our temporary root to reach it.
            pg.prepare_data_dir(&root.path().join(dir), 1)
                .map_err(|e| e.to_string())?;
        }
        Ok(Self {
            pg,
            root,
            port: 0,
            options,
            server: None,
        })
    }

    /// Starts the server on a free port. A port can be taken between our check and the
    /// server's bind: a few are tried.
    fn launch_on_a_free_port(mut self) -> Result<Self, String> {
        let mut last = String::new();
        for _ in 0..3 {
            self.port = free_port();
            match self.launch() {
                Ok(()) => return Ok(self),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn launch(&mut self) -> Result<(), String> {
        let mut settings = vec![
            ("listen_addresses".to_string(), "127.0.0.1".to_string()),
            (
                "unix_socket_directories".to_string(),
                self.root.path().join("sock").display().to_string(),
            ),
            (
                "fsync".to_string(),
                if self.options.fsync { "on" } else { "off" }.to_string(),
            ),
        ];
        settings.extend(self.options.settings.iter().cloned());
        let server = self
            .pg
            .start(
                &self.data_dir(),
                self.port,
                &settings,
                &self.log(),
                Duration::from_secs(30),
            )
            .map_err(|e| e.to_string())?;
        self.server = Some(server);
        Ok(())
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        self.log().tail(8)
    }

    /// The server's log (the output of initdb and pg_basebackup too).
    fn log(&self) -> Log {
        Log::File(self.root.path().join("postgres.log"))
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The postmaster's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Server::pid)
    }

    /// A connection URL for database `db`.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgresql://{PG_USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// A connection URL for the `postgres` database.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// Creates an empty database and returns its URL: one per test keeps tests apart.
    pub fn create_database(&self, name: &str) -> String {
        let out = self
            .pg
            .command("createdb")
            .args(["-h", "127.0.0.1", "-U", PG_USER])
            .args(["-p", &self.port.to_string(), name])
            .output()
            .unwrap_or_else(|e| panic!("cannot run createdb: {e}"));
        assert!(
            out.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        self.url_for(name)
    }

    /// `kill -9` of the postmaster. Returns once its backends, which notice and exit, are gone
    /// too (up to 5 s): until then one could still answer a query on a pooled connection. The
    /// data directory stays.
    pub fn kill9(&mut self) {
        if let Some(server) = self.server.take() {
            let backends = process::children(server.pid());
            server.kill9();
            let deadline = Instant::now() + Duration::from_secs(5);
            for pid in backends {
                process::wait_gone(pid, deadline.saturating_duration_since(Instant::now()));
            }
        }
    }

    /// SIGSTOP: the server stalls, connections stay open and unanswered. Returns once the
    /// postmaster is stopped.
    pub fn pause(&self) {
        if let Some(server) = &self.server {
            server.pause();
        }
    }

    /// SIGCONT after [`PgServer::pause`].
    pub fn resume(&self) {
        if let Some(server) = &self.server {
            server.resume();
        }
    }

    /// Stops the server ("immediate" shutdown) and waits for it; the data directory stays.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop(Signal::SIGQUIT, Duration::from_secs(10));
        }
    }

    /// Starts the server again on the same port, after [`PgServer::stop`] or
    /// [`PgServer::kill9`] (crash recovery runs then).
    pub fn restart(&mut self) {
        self.stop();
        // Backends of a killed postmaster may still hold its shared memory for a moment.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("cannot restart PostgreSQL: {e}"),
            }
        }
    }

    /// The root of this server's temporary directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_on_a_free_port_survives_a_kill_and_restarts() {
        let mut pg = PgServer::start();
        let port = pg.port();
        assert_ne!(port, 5432, "never the standard port");
        let url = pg.create_database("kit");
        assert!(url.ends_with("/kit"));
        let before = pg.pid().expect("running");
        pg.kill9();
        assert!(pg.pid().is_none());
        pg.restart();
        assert_eq!(pg.port(), port, "restarts on the same port");
        assert_ne!(pg.pid(), Some(before));
        // The database created before the kill is still there.
        assert_eq!(pg.psql("kit", "SELECT current_database()"), "kit");
    }
}

/// The engines a [`Daemon`] can be.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Redis,
    Memcached,
}

impl Kind {
    fn program(self) -> &'static str {
        match self {
            Kind::Redis => strata_engines::Engine::Redis.program(),
            Kind::Memcached => strata_engines::Engine::Memcached.program(),
        }
    }

    #[cfg(test)]
    fn probe(self) -> strata_engines::daemon::Probe {
        match self {
            Kind::Redis => redis::PROBE,
            Kind::Memcached => memcached::PROBE,
        }
    }
}

/// A server process of its own (Redis, Memcached) on a free loopback port, killed on drop.
#[derive(Debug)]
pub struct Daemon {
    kind: Kind,
    /// Holds the log (and for Redis its working directory); removed on drop.
    root: tempfile::TempDir,
    port: u16,
    server: Option<Server>,
}

impl Daemon {
    fn start(kind: Kind) -> Result<Self, String> {
        let root = tempfile::Builder::new()
            .prefix(&format!("strata-{}-", kind.program()))
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let mut daemon = Daemon {
            kind,
            root,
            port: 0,
            server: None,
        };
        // A free port can be taken between our check and the server's bind: try a few.
        let mut last = String::new();
        for _ in 0..3 {
            daemon.port = free_port();
            match daemon.launch() {
                Ok(()) => return Ok(daemon),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn launch(&mut self) -> Result<(), String> {
        let (port, dir) = (self.port, self.root.path());
        let log = Log::File(dir.join("server.log"));
        let within = Duration::from_secs(15);
        let server = match self.kind {
            Kind::Redis => redis::start(port, dir, redis::Mode::Plain, &log, within),
            Kind::Memcached => memcached::start(port, dir, memcached::Mode::Plain, &log, within),
        };
        self.server = Some(server.map_err(|e| e.to_string())?);
        Ok(())
    }

    /// Sends the probe and checks the answer.
    #[cfg(test)]
    fn answers(&self) -> bool {
        self.kind
            .probe()
            .answers(std::net::SocketAddr::from(([127, 0, 0, 1], self.port)))
    }

    fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill9();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Daemon {
    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.stop();
    }

    /// SIGSTOP: connections stay open and unanswered. Returns once the process is stopped (a
    /// signal is delivered asynchronously).
    pub fn pause(&self) {
        if let Some(server) = &self.server {
            server.pause();
        }
    }

    /// SIGCONT after [`Daemon::pause`].
    pub fn resume(&self) {
        if let Some(server) = &self.server {
            server.resume();
        }
    }

    /// Starts it again on the same port (empty: these test servers keep no data).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("cannot restart {}: {e}", self.kind.program()),
            }
        }
    }
}

/// Redis and Memcached servers are a [`Daemon`] each: its controls (`addr`, `kill9`, `pause`,
/// `resume`, `restart`) are theirs.
macro_rules! derefs_to_daemon {
    ($name:ident) => {
        impl std::ops::Deref for $name {
            type Target = Daemon;
            fn deref(&self) -> &Daemon {
                &self.0
            }
        }
        impl std::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut Daemon {
                &mut self.0
            }
        }
    };
}

/// A Redis server of its own (`redis-server` from the installed package): no persistence,
/// loopback only, a free port.
#[derive(Debug)]
pub struct RedisServer(Daemon);

impl RedisServer {
    /// Starts it, or panics with the reason (and how to install Redis).
    pub fn start() -> Self {
        Daemon::start(Kind::Redis)
            .map(RedisServer)
            .unwrap_or_else(|e| panic!("cannot start Redis: {e}"))
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.0.port)
    }
}

derefs_to_daemon!(RedisServer);

/// A Memcached server of its own (`memcached` from the installed package), 64 MiB, TCP only on
/// a free loopback port.
#[derive(Debug)]
pub struct MemcachedServer(Daemon);

impl MemcachedServer {
    /// Starts it, or panics with the reason (and how to install Memcached).
    pub fn start() -> Self {
        Daemon::start(Kind::Memcached)
            .map(MemcachedServer)
            .unwrap_or_else(|e| panic!("cannot start Memcached: {e}"))
    }
}

derefs_to_daemon!(MemcachedServer);

/// An etcd member of its own (`etcd` from the installed `etcd-server`): a one-member cluster,
/// client and peer ports free loopback ports, its data in a temporary directory. Killed on drop.
#[derive(Debug)]
pub struct EtcdServer {
    root: tempfile::TempDir,
    member: etcd::Member,
    server: Option<Server>,
}

impl EtcdServer {
    /// Starts it, or panics with the reason (and how to install etcd).
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|e| panic!("cannot start etcd: {e}"))
    }

    fn try_start() -> Result<Self, String> {
        let root = tempfile::Builder::new()
            .prefix("strata-etcd-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let data = root.path().join("data");
        let log = Log::File(root.path().join("etcd.log"));
        let mut last = String::new();
        // A free port can be taken between our check and etcd's bind: try a few.
        for _ in 0..3 {
            let member = etcd::Member::first("etcd-1", data.clone(), free_port(), free_port());
            match etcd::start(&member, &log, Duration::from_secs(30)) {
                Ok(server) => {
                    return Ok(EtcdServer {
                        root,
                        member,
                        server: Some(server),
                    });
                }
                Err(e) => last = e.to_string(),
            }
            let _ = std::fs::remove_dir_all(&data);
        }
        Err(last)
    }

    fn launch(&mut self) -> Result<(), String> {
        let log = Log::File(self.root.path().join("etcd.log"));
        let server = etcd::start(&self.member, &log, Duration::from_secs(30));
        self.server = Some(server.map_err(|e| e.to_string())?);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill9();
        }
    }

    /// Its client endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.member.client_url()
    }

    /// Its client port.
    pub fn port(&self) -> u16 {
        self.member.client_port
    }

    /// Whether it answers `/health` with `{"health":"true"}`.
    pub fn healthy(&self) -> bool {
        etcd::healthy(self.member.client_addr())
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.stop();
    }

    /// SIGSTOP: connections stay open and unanswered.
    pub fn pause(&self) {
        if let Some(server) = &self.server {
            server.pause();
        }
    }

    /// SIGCONT after [`EtcdServer::pause`].
    pub fn resume(&self) {
        if let Some(server) = &self.server {
            server.resume();
        }
    }

    /// Starts it again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("cannot restart etcd: {e}"),
            }
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod daemon_tests {
    use super::*;

    #[test]
    fn redis_and_memcached_start_on_free_ports_and_come_back_after_a_kill() {
        let mut redis = RedisServer::start();
        let memcached = MemcachedServer::start();
        assert_ne!(redis.port(), 6379, "never the standard port");
        assert_ne!(memcached.port(), 11211, "never the standard port");
        assert!(redis.answers() && memcached.answers());
        redis.kill9();
        assert!(!redis.answers(), "a killed server does not answer");
        redis.restart();
        assert!(
            redis.answers(),
            "it answers again after a restart, on the same port"
        );
        memcached.pause();
        assert!(!memcached.answers(), "a paused server does not answer");
        memcached.resume();
        assert!(memcached.answers());
    }
}
