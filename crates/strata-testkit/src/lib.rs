//! # strata-testkit — real engines for tests
//!
//! Test support only (a dev-dependency; no tier depends on it at run time). Depends on no
//! Strata crate.
//!
//! Tests that exercise PostgreSQL run the real server: [`PgServer`] finds the installed
//! binaries (Debian's `postgresql-15`, or `$STRATA_PG_BIN`), runs `initdb` in a temporary
//! directory, and starts `postgres` on a free loopback port — as the `postgres` user when the
//! test runs as root, because PostgreSQL refuses to run as root. Nothing listens on a fixed
//! port and nothing outside the temporary directory is touched, so a machine that already runs
//! PostgreSQL on 5432 is left alone. The server is stopped and its directory removed on drop.
//!
//! [`RedisServer`] and [`MemcachedServer`] do the same for `redis-server` and `memcached`
//! (no persistence; Memcached as `nobody` when root, as it requires).
//!
//! Faults are real: `kill9` sends SIGKILL, `pause` SIGSTOP.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The superuser every test cluster is created with (trust authentication on loopback only).
pub const PG_USER: &str = "strata";

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free loopback port: {e}"))
}

/// Where the PostgreSQL server binaries are: `$STRATA_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<major>/bin` that has `initdb`.
pub fn pg_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("STRATA_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").exists() {
            Ok(dir)
        } else {
            Err(format!(
                "STRATA_PG_BIN={} has no initdb: point it at PostgreSQL's bin directory",
                dir.display()
            ))
        };
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| no_postgres())?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(no_postgres)
}

fn no_postgres() -> String {
    "PostgreSQL server binaries not found: install Debian's postgresql-15 (./scripts/test does) \
     or set STRATA_PG_BIN"
        .into()
}

/// The uid/gid to run PostgreSQL as: the `postgres` user when we are root, else ourselves.
fn run_as() -> Result<Option<(u32, u32)>, String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(u)) => Ok(Some((u.uid.as_raw(), u.gid.as_raw()))),
        _ => Err(
            "running as root, and there is no `postgres` user to run PostgreSQL as (installing \
             postgresql-15 creates it)"
                .into(),
        ),
    }
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
    bin: PathBuf,
    /// Holds the data directory, the socket directory and the log; removed on drop.
    root: tempfile::TempDir,
    port: u16,
    options: PgOptions,
    owner: Option<(u32, u32)>,
    child: Option<Child>,
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
        let bin = pg_bin_dir()?;
        let owner = run_as()?;
        let server = Self::prepare("strata-pg-", bin, owner, options)?;
        server.initdb()?;
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
        let server = Self::prepare(
            "strata-pg-replica-",
            primary.bin.clone(),
            primary.owner,
            options,
        )?;
        let out = server
            .command("pg_basebackup")
            .arg("-D")
            .arg(server.data_dir())
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                PG_USER,
                "-p",
                &primary.port.to_string(),
            ])
            .args(["-R", "-X", "stream", "-c", "fast"])
            .output()
            .map_err(|e| format!("cannot run pg_basebackup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pg_basebackup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        server.launch_on_a_free_port()
    }

    /// Runs one SQL statement with psql and returns what it printed (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .command("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                PG_USER,
                "-p",
                &self.port.to_string(),
            ])
            .args(["-d", db, "-v", "ON_ERROR_STOP=1", "-tAc", sql])
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A temporary root with `data` and `sock` directories the server owner can use.
    fn prepare(
        prefix: &str,
        bin: PathBuf,
        owner: Option<(u32, u32)>,
        options: PgOptions,
    ) -> Result<Self, String> {
        let root = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        // The postgres user must be able to reach its directories inside ours.
        set_mode(root.path(), 0o755)?;
        for dir in ["data", "sock"] {
            let path = root.path().join(dir);
            std::fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            set_mode(&path, 0o700)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(|e| format!("cannot give {} to postgres: {e}", path.display()))?;
            }
        }
        Ok(Self {
            bin,
            root,
            port: 0,
            options,
            owner,
            child: None,
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

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(self.root.path())
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn initdb(&self) -> Result<(), String> {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", PG_USER, "--auth=trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    fn launch(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("cannot open the server log: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot open the server log: {e}"))?;
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg("listen_addresses=127.0.0.1")
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.root.path().join("sock").display()
            ))
            .arg("-c")
            .arg(format!(
                "fsync={}",
                if self.options.fsync { "on" } else { "off" }
            ));
        for (name, value) in &self.options.settings {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        let child = cmd
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("cannot run postgres: {e}"))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    /// Waits until the server accepts connections.
    fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "postgres exited ({status}) before it was ready: {}",
                    self.log_tail()
                ));
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-U", PG_USER, "-d", "postgres"])
                .args(["-p", &self.port.to_string(), "-t", "1"])
                .stdin(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "postgres did not accept connections within {within:?}: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" | ")
    }

    fn log_path(&self) -> PathBuf {
        self.root.path().join("postgres.log")
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                PG_USER,
                "-p",
                &self.port.to_string(),
                name,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run createdb: {e}"));
        assert!(
            out.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        self.url_for(name)
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// `kill -9` of the postmaster (its backends notice and exit). The data directory stays.
    pub fn kill9(&mut self) {
        self.signal(Signal::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the server stalls, connections stay open and unanswered. Returns once the
    /// postmaster is stopped.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
        if let Some(pid) = self.pid() {
            wait_stopped(pid);
        }
    }

    /// SIGCONT after [`PgServer::pause`].
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// Stops the server ("immediate" shutdown) and waits for it; the data directory stays.
    pub fn stop(&mut self) {
        self.signal(Signal::SIGCONT);
        self.signal(Signal::SIGQUIT);
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
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
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
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

/// Waits (up to 1 s) until every thread of a process is stopped, as `/proc` reports it (a
/// signal is delivered asynchronously, and a multi-threaded server stops thread by thread).
fn wait_stopped(pid: u32) {
    let stopped = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return true; // gone
        };
        tasks.filter_map(Result::ok).all(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            matches!(state, Some("T") | Some("t") | None)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(1);
    while !stopped() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set permissions of {}: {e}", path.display()))
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
        let out = Command::new(pg.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-U", PG_USER, "-p", &port.to_string()])
            .args(["-d", "kit", "-tAc", "SELECT current_database()"])
            .output()
            .expect("psql");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "kit");
    }
}

/// A server process of its own (Redis, Memcached) on a free loopback port, killed on drop.
#[derive(Debug)]
pub struct Daemon {
    program: &'static str,
    args: Vec<String>,
    /// Holds the log (and for Redis its working directory); removed on drop.
    root: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// What to send and what the answer starts with once the server is ready.
    probe: (&'static [u8], &'static [u8]),
}

impl Daemon {
    fn start(
        program: &'static str,
        args: impl Fn(u16, &Path) -> Vec<String>,
        probe: (&'static [u8], &'static [u8]),
    ) -> Result<Self, String> {
        let root = tempfile::Builder::new()
            .prefix(&format!("strata-{program}-"))
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let mut daemon = Daemon {
            program,
            args: Vec::new(),
            root,
            port: 0,
            child: None,
            probe,
        };
        // A free port can be taken between our check and the server's bind: try a few.
        let mut last = String::new();
        for _ in 0..3 {
            daemon.port = free_port();
            daemon.args = args(daemon.port, daemon.root.path());
            match daemon.launch() {
                Ok(()) => return Ok(daemon),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn launch(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.root.path().join("server.log"))
            .map_err(|e| format!("cannot open the log: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot open the log: {e}"))?;
        let child = Command::new(self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run {} ({e}): install it (Debian: apt-get install {}; ./scripts/test does)",
                    self.program,
                    if self.program == "redis-server" { "redis-server" } else { "memcached" }
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log = std::fs::read_to_string(self.root.path().join("server.log"))
                    .unwrap_or_default();
                return Err(format!(
                    "{} exited ({status}): {}",
                    self.program,
                    log.trim()
                ));
            }
            if self.answers() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("{} did not answer within 15 s", self.program));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends the probe and checks the answer.
    fn answers(&self) -> bool {
        use std::io::{Read as _, Write as _};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(self.probe.0).is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(self.probe.1))
    }

    fn signal(&self, signal: Signal) {
        if let Some(child) = &self.child {
            let _ = kill(Pid::from_raw(child.id() as i32), signal);
        }
    }

    fn stop(&mut self) {
        self.signal(Signal::SIGCONT);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
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
        self.signal(Signal::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// SIGSTOP: connections stay open and unanswered. Returns once the process is stopped (a
    /// signal is delivered asynchronously).
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
        if let Some(child) = &self.child {
            wait_stopped(child.id());
        }
    }

    /// SIGCONT after [`Daemon::pause`].
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
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
                Err(e) => panic!("cannot restart {}: {e}", self.program),
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
        Daemon::start(
            "redis-server",
            |port, dir| {
                [
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    &dir.display().to_string(),
                ]
                .into_iter()
                .map(String::from)
                .collect()
            },
            (b"PING\r\n", b"+PONG"),
        )
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
        let as_root = nix::unistd::Uid::effective().is_root();
        Daemon::start(
            "memcached",
            move |port, _| {
                let mut args: Vec<String> = [
                    "-l",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "0",
                    "-m",
                    "64",
                ]
                .into_iter()
                .map(String::from)
                .collect();
                if as_root {
                    // Memcached refuses to run as root without naming a user to become.
                    args.extend(["-u".to_string(), "nobody".to_string()]);
                }
                args
            },
            (b"version\r\n", b"VERSION"),
        )
        .map(MemcachedServer)
        .unwrap_or_else(|e| panic!("cannot start Memcached: {e}"))
    }
}

derefs_to_daemon!(MemcachedServer);

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
