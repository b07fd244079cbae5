//! `strata postgres`: one PostgreSQL server as a supervised role, as `strata up` runs it.
//!
//! PostgreSQL does the replication; this role prepares and watches one server:
//! - **primary** (no `--replica-of`): `initdb` on first start (superuser `strata`, trust
//!   authentication — the server listens on 127.0.0.1 only), then `postgres` with replication
//!   settings on the command line, and the `strata` database created once;
//! - **replica** (`--replica-of HOST:PORT`): on first start `pg_basebackup -R` from the primary
//!   into an empty directory, creating a physical replication slot named after the role, so the
//!   primary keeps the WAL this replica still needs; then `postgres` as a hot standby;
//! - with `--standbys pg-2,pg-3 --commit quorum` the primary acknowledges a commit once any one
//!   of them has flushed it (`synchronous_standby_names = 'ANY 1 ("pg-2", "pg-3")'`); replicas
//!   name themselves with `cluster_name`.
//!
//! A former primary fenced by a failover rejoins as a replica of the new primary when it starts
//! (`pg_rewind`), or with `--rejoin manual` waits, its data untouched, for `strata db rejoin`. A
//! replica the controller lists as one that must rewind (it may hold WAL the new primary never
//! had) rewinds the same way before it follows. While a failover waits for an election there is
//! no primary to follow: a server that is not the primary waits for one to be published.
//!
//! **No writes before the state says so.** A server that starts as a primary starts refusing
//! writes (`default_transaction_read_only`), and opens only once the published cluster state
//! confirms it is the primary. While it runs, the role watches the state: fenced (another was
//! made primary, or a failover began), or listed as one that must rewind, it kills its server
//! at once — backends included — and exits; the supervisor restarts it as a replica.
//!
//! When started as root, the server runs as the `postgres` user (PostgreSQL refuses root), which
//! then owns the data directory. The role prints its readiness line once the server accepts
//! connections, stops the server (fast shutdown) on SIGTERM, Ctrl-C or end of stdin, and exits
//! with an error when the server dies, so the supervisor restarts both.
//!
//! This file is the role's logic only: which server to follow, fencing, the manual rejoin, the
//! readiness line, watching the server. How PostgreSQL is found, owned, created, started,
//! copied, rewound and configured is `strata_engines::postgres`, shared with the test kit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::Signal;
use strata_core::ready::ReadyLine;
use strata_engines::daemon::free_port;
use strata_engines::postgres::{
    self, DATABASE as POSTGRES_DATABASE, InitOptions, Postgres, SUPERUSER as POSTGRES_USER,
};
use strata_engines::{Log, process};

use crate::cluster::{self, ClusterState, slot_name};
use crate::store::StateStore;
use crate::store_options::StoreOptions;

/// How a primary waits for its replicas before acknowledging a commit: `strata postgres
/// --commit`, `strata control --commit` and a topology's `[data] commit`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum CommitMode {
    /// `synchronous_standby_names = 'ANY 1 (…)'`: a commit is acknowledged once at least one
    /// replica has flushed it, so losing the primary loses no acknowledged write.
    Quorum,
    /// Asynchronous replication: faster commits; a failover may lose the last writes.
    Async,
}

/// What a fenced former primary does when its role starts: `strata postgres --rejoin` and a
/// topology's `[data] rejoin`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum RejoinMode {
    /// Rewind (`pg_rewind`) and follow the new primary at once.
    Auto,
    /// Wait for `strata db rejoin`, leaving the data directory as the failover left it.
    Manual,
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct PostgresArgs {
    /// Loopback address the server listens on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The server's data directory (created on first start).
    #[arg(long)]
    pub data: PathBuf,
    /// Where the cluster state lives (the file store: beside the data directory).
    #[command(flatten)]
    #[serde(flatten)]
    pub store: StoreOptions,
    /// Run as a streaming replica of the primary at this address.
    #[arg(long)]
    pub replica_of: Option<SocketAddr>,
    /// How this server reaches another when not at its published address,
    /// `THIS:OTHER=HOST:PORT` (repeat for each): it follows a primary through its route.
    #[arg(long = "route")]
    #[serde(serialize_with = "strata_core::args::display_all")]
    pub routes: Vec<crate::route::Route>,
    /// The replicas' role names, for the primary's synchronous quorum (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub standbys: Vec<String>,
    /// How the primary waits for its replicas before acknowledging a commit.
    #[arg(long, value_enum, default_value = "quorum")]
    pub commit: CommitMode,
    /// What this server does when it starts as a fenced former primary: rewind and follow the
    /// new primary at once (`auto`), or wait, untouched, for `strata db rejoin NAME` (`manual`).
    #[arg(long, value_enum, default_value = "auto")]
    pub rejoin: RejoinMode,
    /// This role's name in its topology (also the replica's name on the primary).
    #[arg(long, default_value = "pg-1")]
    pub name: String,
    /// Exit (stopping the server) when standard input reaches end-of-file.
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

impl PostgresArgs {
    /// A primary (no `replica_of`) keeping its data in `data`, every other setting at its
    /// default.
    pub fn new(data: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data,
            store: StoreOptions::file(),
            replica_of: None,
            routes: Vec::new(),
            standbys: Vec::new(),
            commit: CommitMode::Quorum,
            rejoin: RejoinMode::Auto,
            name: "pg-1".into(),
            exit_on_stdin_eof: false,
        }
    }
}

/// Quotes a role name for `synchronous_standby_names`.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', ""))
}

/// A postmaster left running by an earlier instance of this role (one killed with SIGKILL
/// cannot stop its server): stop it, so that this instance starts the server afresh.
fn stop_leftover(data: &Path) {
    if let Some(pid) = postgres::running_postmaster(data) {
        tracing::warn!(pid, "stopping a server left running by an earlier instance");
        postgres::stop_postmaster(pid);
    }
}

/// One server's files, and the installed PostgreSQL that runs it, for the setup steps that run
/// before it starts.
#[derive(Clone)]
struct Node {
    pg: Postgres,
    data: PathBuf,
    name: String,
}

impl Node {
    /// Runs one SQL statement at `addr` and returns what it printed (unaligned, tuples only).
    fn psql(&self, addr: &str, sql: &str) -> anyhow::Result<String> {
        Ok(self.pg.psql(addr, "postgres", sql)?)
    }

    /// Runs statements one after another in one session (so a `SET` holds for the next ones).
    fn psql_session(&self, addr: &str, statements: &[&str]) -> anyhow::Result<String> {
        Ok(self.pg.psql_session(addr, "postgres", statements)?)
    }

    /// Waits until the server at `addr` is up and a primary (not in recovery).
    fn wait_for_primary(&self, addr: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let why = match self.psql(addr, "SELECT pg_is_in_recovery()") {
                Ok(answer) if answer == "f" => return Ok(()),
                Ok(_) => "it is in recovery".to_string(),
                Err(e) => e.to_string(),
            };
            anyhow::ensure!(
                Instant::now() < deadline,
                "the primary at {addr} did not come up within 120 s ({why})"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Makes sure the primary keeps a physical replication slot for this server. The slot
    /// reserves WAL from its creation: an unreserved one that only gets its position once
    /// pg_basebackup streams can be invalidated by a checkpoint running meanwhile (another
    /// replica's copy), which ends the copy.
    fn ensure_slot(&self, primary: &str) -> anyhow::Result<()> {
        let slot = slot_name(&self.name);
        self.psql(
            primary,
            &format!(
                "SELECT pg_create_physical_replication_slot('{slot}', true) WHERE NOT EXISTS \
                 (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}')"
            ),
        )
        .map(|_| ())
    }

    /// Points this standby at `primary` (in `postgresql.auto.conf`, where `ALTER SYSTEM` can
    /// change it again at run time).
    fn follow(&self, primary: &str) -> anyhow::Result<()> {
        let (host, port) = primary
            .rsplit_once(':')
            .context("an address is HOST:PORT")?;
        Ok(postgres::set_auto_conf(
            &self.data,
            &[
                (
                    "primary_conninfo",
                    format!(
                        "host={host} port={port} user={POSTGRES_USER} application_name={}",
                        self.name
                    ),
                ),
                ("primary_slot_name", slot_name(&self.name)),
            ],
        )?)
    }

    fn initdb(&self, standbys: &[String]) -> anyhow::Result<()> {
        tracing::info!(data = %self.data.display(), "creating a new cluster (initdb)");
        // Checksums catch corrupt pages, and let pg_rewind work on a server that crashed (its
        // crash recovery runs without our command-line settings).
        let options = InitOptions {
            checksums: true,
            no_sync: false,
        };
        self.pg.initdb(&self.data, options, &Log::Stderr)?;
        // In postgresql.auto.conf, not on the command line: strata control changes it with
        // ALTER SYSTEM after a failover, which a command-line setting would override.
        let names = if standbys.is_empty() {
            String::new()
        } else {
            format!(
                "ANY 1 ({})",
                standbys
                    .iter()
                    .map(|s| quoted(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        Ok(postgres::set_auto_conf(
            &self.data,
            &[("synchronous_standby_names", names)],
        )?)
    }

    fn basebackup(&self, primary: &str) -> anyhow::Result<()> {
        tracing::info!(%primary, data = %self.data.display(), "copying the primary (pg_basebackup)");
        self.ensure_slot(primary)?;
        let slot = slot_name(&self.name);
        self.pg
            .basebackup(&self.data, primary, Some(&slot), &Log::Stderr)?;
        self.follow(primary)
    }

    /// A former primary comes back as a replica of the new one: `pg_rewind` undoes whatever it
    /// wrote after the two diverged (never an acknowledged write under quorum commit: those
    /// reached a replica, and failover picks the most advanced one). If rewinding fails, the
    /// directory is copied afresh.
    fn rejoin(&self, primary: &str, why: &str) -> anyhow::Result<()> {
        tracing::warn!(%primary, "{why}: rewinding (pg_rewind) to follow the primary");
        self.ensure_slot(primary)?;
        // A just-promoted primary records its new timeline in its control file only at its
        // next checkpoint; until then pg_rewind sees one timeline and wrongly finds nothing to
        // undo.
        self.psql(primary, "CHECKPOINT")?;
        match self.pg.rewind(&self.data, primary, &Log::Stderr) {
            Ok(()) => self.follow(primary),
            Err(e) => {
                tracing::warn!(error = %e, "pg_rewind failed: copying the primary afresh");
                postgres::clear_dir(&self.data)?;
                self.basebackup(primary)
            }
        }
    }

    /// Everything before the server starts: create, copy, rejoin or re-point it. `primary` is
    /// the server to follow (`None`: run as the primary); `state` the published cluster state.
    fn prepare(
        &self,
        primary: Option<&str>,
        state: Option<&ClusterState>,
        standbys: &[String],
    ) -> anyhow::Result<()> {
        // DIR/postgres/<role>: the deployment's two directories above it are ours to open.
        self.pg.prepare_data_dir(&self.data, 2)?;
        stop_leftover(&self.data);
        let exists = self.data.join("PG_VERSION").exists();
        let standby = self.data.join("standby.signal").exists();
        let must_rewind = state.is_some_and(|s| s.must_rewind(&self.name));
        match (exists, primary) {
            (false, None) => self.initdb(standbys),
            (false, Some(primary)) => {
                self.wait_for_primary(primary)?;
                self.basebackup(primary)
            }
            (true, Some(primary)) if !standby => {
                self.wait_for_primary(primary)?;
                self.rejoin(primary, "this server was a primary and is fenced")
            }
            (true, Some(primary)) if must_rewind => {
                self.wait_for_primary(primary)?;
                self.rejoin(primary, "this replica may hold WAL the primary never had")
            }
            (true, Some(primary)) => {
                self.wait_for_primary(primary)?;
                self.ensure_slot(primary)?;
                self.follow(primary)
            }
            (true, None) => Ok(()),
        }
    }
}

/// Where this server stands in the published state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Standing {
    fenced: bool,
    must_rewind: bool,
}

impl Standing {
    fn of(state: Option<&ClusterState>, name: &str) -> Self {
        Self {
            fenced: state.is_some_and(|s| s.is_fenced(name)),
            must_rewind: state.is_some_and(|s| s.must_rewind(name)),
        }
    }
}

/// The server this one follows: `None` when it is the primary (the published one, or with no
/// state yet the one started without `--replica-of`). While a failover waits for an election
/// there is none to follow: this waits until a primary is published (or shutdown).
async fn source(
    store: &dyn StateStore,
    state: Option<ClusterState>,
    name: &str,
    replica_of: Option<SocketAddr>,
    routes: &[crate::route::Route],
) -> anyhow::Result<(Option<String>, Option<ClusterState>)> {
    let Some(mut state) = state else {
        return Ok((replica_of.map(|a| a.to_string()), None));
    };
    loop {
        if state.primary.as_deref() == Some(name) {
            return Ok((None, Some(state)));
        }
        if let Some(addr) = state.primary_addr() {
            // Through this server's route to the primary, when it has one.
            let addr = state
                .primary
                .as_deref()
                .and_then(|p| crate::route::via(routes, name, p))
                .map_or_else(|| addr.to_string(), |a| a.to_string());
            return Ok((Some(addr), Some(state)));
        }
        tracing::warn!(
            version = state.version,
            "no primary is published (a failover waits for an election): waiting for one"
        );
        while let Ok(None) = store.newer(state.version, Duration::from_secs(5)).await {}
        state = match store.load().await {
            Ok(Some(s)) => s,
            _ => state,
        };
    }
}

/// The primary that fenced this server, when its directory holds a primary (no
/// `standby.signal`) and the published cluster state does not name it the primary: a start now
/// means a rejoin. (`"none yet"` while a failover waits for an election.)
fn fenced_by(data: &Path, state: Option<&ClusterState>, name: &str) -> Option<String> {
    if !data.join("PG_VERSION").exists() || data.join("standby.signal").exists() {
        return None;
    }
    let state = state?;
    (!state.is_primary(name)).then(|| {
        state
            .primary
            .clone()
            .unwrap_or_else(|| "none yet".to_string())
    })
}

/// Resolves with the reason to stop this server now: the published state fenced it, listed it
/// among the replicas that must rewind, or — while it runs as a primary — names no primary or
/// another. Changes are measured against `at_start`, where it stood when it was prepared: a
/// rejoined server stays listed as fenced until the controller sees it stream.
async fn watch_state(
    store: &dyn StateStore,
    name: &str,
    runs_as_primary: bool,
    at_start: Standing,
) -> String {
    let why = |s: &ClusterState| -> Option<String> {
        let now = Standing::of(Some(s), name);
        let primary = s.primary.as_deref().unwrap_or("no server");
        if now.fenced && !at_start.fenced {
            return Some(format!("fenced: {primary} is the primary now"));
        }
        if now.must_rewind && !at_start.must_rewind {
            return Some("the controller listed this replica as one that must rewind".into());
        }
        (runs_as_primary && !s.is_primary(name))
            .then(|| format!("fenced: {primary} is the primary now"))
    };
    // The state as it is now, then each newer version as soon as it is published: a watch on
    // etcd, a read every 100 ms of the file.
    let mut seen = 0;
    loop {
        let next = if seen == 0 {
            store.load().await
        } else {
            store.newer(seen, Duration::from_secs(5)).await
        };
        match next {
            Ok(Some(s)) => {
                seen = s.version;
                if let Some(why) = why(&s) {
                    return why;
                }
            }
            Ok(None) => {}
            // The store is out of reach: the server keeps running as it is (the data path does
            // not depend on the control plane), and the watch tries again.
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

pub async fn run(args: PostgresArgs) -> anyhow::Result<()> {
    strata_core::telemetry::init();
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "--listen must be a loopback address (the servers strata runs trust local connections): got {}",
        args.listen
    );
    let pg = Postgres::find()?;
    let mut port = if args.listen.port() == 0 {
        free_port().context("cannot find a free port")?
    } else {
        args.listen.port()
    };
    let data = args.data.clone();
    // DIR/postgres: where strata control publishes which server is the primary.
    let postgres_dir = data.parent().map(Path::to_path_buf).unwrap_or_default();
    let node = Node {
        pg: pg.clone(),
        data: data.clone(),
        name: args.name.clone(),
    };
    // A reader: it never leads, it obeys what the controller publishes.
    let store = args.store.open(&postgres_dir)?;
    let state = store.load().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "ignoring the cluster state");
        None
    });
    // A fenced former primary under `rejoin = "manual"` waits, its data untouched, for
    // `strata db rejoin`. It says it is ready (on the port it keeps), so the supervisor does
    // not count it as crashed, while nothing listens there.
    let mut announced = false;
    let request = cluster::rejoin_request_path(&postgres_dir, &args.name);
    let awaiting = cluster::awaiting_rejoin_path(&postgres_dir, &args.name);
    let _ = std::fs::remove_file(&awaiting);
    match fenced_by(&data, state.as_ref(), &args.name) {
        Some(primary) if args.rejoin == RejoinMode::Manual && !request.exists() => {
            ReadyLine::new(&args.name)
                .with_addr("postgres", SocketAddr::new(args.listen.ip(), port))
                .announce()
                .context("cannot write the readiness line")?;
            announced = true;
            std::fs::write(&awaiting, format!("{primary}\n"))
                .with_context(|| format!("cannot write {}", awaiting.display()))?;
            tracing::warn!(
                role = %args.name, %primary,
                "fenced: {primary} is the primary now; this server stays stopped, its data untouched, until `strata db rejoin {}`",
                args.name
            );
            let asked = async {
                while !request.exists() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            tokio::select! {
                _ = asked => {}
                _ = strata_core::shutdown::signal(args.exit_on_stdin_eof) => {
                    let _ = std::fs::remove_file(&awaiting);
                    return Ok(());
                }
            }
            tracing::info!(role = %args.name, %primary, "asked to rejoin: rewinding and following {primary}");
        }
        _ => {}
    }
    let _ = std::fs::remove_file(&request);
    // Read again: a manual rejoin may have waited through another failover.
    let state = store.load().await.unwrap_or(state);
    let (primary, state) = tokio::select! {
        found = source(store.as_ref(), state, &args.name, args.replica_of, &args.routes) => found?,
        _ = strata_core::shutdown::signal(args.exit_on_stdin_eof) => return Ok(()),
    };
    let at_start = Standing::of(state.as_ref(), &args.name);
    let setup = {
        let node = node.clone();
        let primary = primary.clone();
        let standbys = match args.commit {
            CommitMode::Quorum => args.standbys.clone(),
            CommitMode::Async => Vec::new(),
        };
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            node.prepare(primary.as_deref(), state.as_ref(), &standbys)
        })
    };
    setup.await.context("the setup task failed")??;
    let runs_as_primary = !data.join("standby.signal").exists();
    if runs_as_primary {
        // It opens to writes only once the published state says it is the primary.
        postgres::set_auto_conf(&data, &[("default_transaction_read_only", "on".into())])?;
    }

    let settings: Vec<(&str, String)> = vec![
        ("listen_addresses", args.listen.ip().to_string()),
        // No Unix socket: every client, local ones included, comes over loopback TCP.
        ("unix_socket_directories", String::new()),
        ("cluster_name", args.name.clone()),
        ("wal_level", "replica".into()),
        // Needed by pg_rewind, which brings a failed primary back as a replica.
        ("wal_log_hints", "on".into()),
        ("hot_standby", "on".into()),
        ("hot_standby_feedback", "on".into()),
        ("max_wal_senders", "10".into()),
        ("max_replication_slots", "10".into()),
        ("wal_receiver_status_interval", "1s".into()),
        // A replica whose primary vanished retries (and notices a promotion request) after
        // this; PostgreSQL's 5 s default would put 5 s into every failover.
        ("wal_retrieve_retry_interval", "200ms".into()),
        // A server rewound after a failover replays from the last checkpoint the two servers
        // shared, which may be up to max_wal_size back: the primary keeps more WAL than that,
        // so the rewound server finds it (a promoted standby has recycled its older segments).
        ("max_wal_size", "256MB".into()),
        ("wal_keep_size", "512MB".into()),
        ("log_line_prefix", "%m [%p] ".into()),
    ];
    // The server's output goes to this role's log (stderr), never to stdout (the readiness
    // pipe). Spawned from this (the role's main) thread, so that it is listed as its child. A
    // server that does not come up is stopped, and the error says why.
    //
    // A port chosen free at start may have been taken meanwhile (a base backup takes seconds,
    // and other programs pick free ports too): with no port asked for, a server that does not
    // come up is tried again on a new free port, a few times.
    let mut attempt = 0;
    let mut server = loop {
        attempt += 1;
        let server = pg.spawn(&data, port, &settings, &Log::Stderr)?;
        let waiter = pg.clone();
        let ready = tokio::task::spawn_blocking(move || {
            waiter.wait_ready(server, port, Duration::from_secs(120))
        });
        match ready.await.context("the readiness task failed")? {
            Ok(server) => break server,
            Err(e) if args.listen.port() == 0 && attempt < 3 => {
                tracing::warn!(error = %e, port, "PostgreSQL did not come up; trying another free port");
                port = free_port().context("cannot find a free port")?;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let server_pid = server.pid();
    if runs_as_primary {
        let local = format!("127.0.0.1:{port}");
        // With no state published yet, the server started without --replica-of is the
        // primary (the controller publishes it so); otherwise the state must name it.
        let confirmed = match store.load().await {
            Ok(Some(s)) => s.is_primary(&args.name),
            Ok(None) => args.replica_of.is_none(),
            Err(_) => false,
        };
        if !confirmed {
            process::signal_tree(server_pid, Signal::SIGKILL);
            anyhow::bail!(
                "the published cluster state does not name {} the primary: not opening it to writes",
                args.name
            );
        }
        node.psql_session(
            &local,
            &[
                "ALTER SYSTEM SET default_transaction_read_only = off",
                "SELECT pg_reload_conf()",
            ],
        )?;
        // The API servers' database, created once. Locally committed: the replicas it would
        // otherwise wait for start after this role is ready.
        let exists = node.psql(
            &local,
            &format!("SELECT 1 FROM pg_database WHERE datname = '{POSTGRES_DATABASE}'"),
        )?;
        if exists != "1" {
            node.psql_session(
                &local,
                &[
                    "SET synchronous_commit = local",
                    &format!("CREATE DATABASE {POSTGRES_DATABASE}"),
                ],
            )?;
        }
    }
    let _ = std::fs::remove_file(&awaiting);
    let addr = SocketAddr::new(args.listen.ip(), port);
    if !announced {
        ReadyLine::new(&args.name)
            .with_addr("postgres", addr)
            .announce()
            .context("cannot write the readiness line")?;
    }
    tracing::info!(role = %args.name, %addr, replica_of = ?args.replica_of, "PostgreSQL is accepting connections");

    let exited = tokio::task::spawn_blocking(move || server.wait());
    tokio::pin!(exited);
    let stop = watch_state(store.as_ref(), &args.name, runs_as_primary, at_start);
    tokio::select! {
        status = &mut exited => {
            let status = status.context("cannot watch postgres")?.context("cannot watch postgres")?;
            anyhow::bail!("postgres exited ({status})");
        }
        why = stop => {
            // It must not take another write, nor stream on: stop it at once — its backends
            // too, which would otherwise finish what they are doing.
            process::signal_tree(server_pid, Signal::SIGKILL);
            let _ = exited.await;
            anyhow::bail!("{why}; this server stopped and will come back as a replica of the primary");
        }
        _ = strata_core::shutdown::signal(args.exit_on_stdin_eof) => {}
    }
    // Fast shutdown: roll back open transactions, checkpoint, stop; after 30 s, immediate
    // shutdown.
    let _ = tokio::task::spawn_blocking(move || {
        process::terminate(
            server_pid,
            Signal::SIGINT,
            Duration::from_secs(30),
            Signal::SIGQUIT,
            Duration::from_secs(10),
        )
    })
    .await;
    let _ = exited.await;
    tracing::info!(role = %args.name, "PostgreSQL stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standby_names_are_quoted_identifiers() {
        assert_eq!(quoted("pg-2"), "\"pg-2\"");
        assert_eq!(quoted("a\"b"), "\"ab\"");
    }
}
