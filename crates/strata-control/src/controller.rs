//! `strata control`: watches the PostgreSQL primary of a deployment and fails over when it is
//! gone.
//!
//! Every `--check-interval-ms` (500) it asks the primary `SELECT pg_is_in_recovery()` over a
//! fresh connection, with a deadline of the interval. After `--failures` (3) failed checks in a
//! row:
//! 1. it picks the most advanced replica that answers — the one that has *received* the most
//!    WAL (it replays all of it when promoted) — so under quorum commit every acknowledged write
//!    is on the new primary;
//! 2. it publishes the new cluster state (`DIR/postgres/cluster.json`, version + 1) with the old
//!    primary fenced, and kills the old primary's server if it still runs (a stalled one
//!    included): from then on nothing can commit there, and its role brings it back only as a
//!    replica (pg_rewind);
//! 3. it promotes the replica (`pg_promote`), gives it a replication slot and the synchronous
//!    quorum for every other server, and re-points the other replicas at it
//!    (`ALTER SYSTEM SET primary_conninfo`, reload).
//!
//! API servers need no message: they connect to the primary through a multi-host URL with
//! `target_session_attrs=read-write`, so their next connection finds the new primary, and their
//! replica probes see which servers are in recovery. `GET /cluster` shows the current state,
//! `/metrics` the checks and failovers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use strata_core::ready::ReadyLine;
use strata_engines::postgres::SUPERUSER as POSTGRES_USER;
use strata_store::postgres::{format_lsn, probe_node};

use crate::cluster::{self, ClusterState, slot_name};
use crate::pgnode::CommitMode;

#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct ControlArgs {
    /// Address of the control API (`/cluster`, `/healthz`, `/metrics`).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The deployment's PostgreSQL directory (`DIR/postgres`), where `cluster.json` lives.
    #[arg(long)]
    pub postgres_dir: PathBuf,
    /// A database server, `NAME=127.0.0.1:PORT` (repeat for each).
    #[arg(long = "node", required = true)]
    #[serde(serialize_with = "strata_core::args::display_all")]
    pub nodes: Vec<NodeAddr>,
    /// The primary when no cluster state has been published yet.
    #[arg(long, default_value = "pg-1")]
    pub primary: String,
    /// Time between checks of the primary, in milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub check_interval_ms: u64,
    /// Failed checks in a row before failing over.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub failures: u32,
    /// How the new primary waits for replicas (as the topology's `data.commit`).
    #[arg(long, value_enum, default_value = "quorum")]
    pub commit: CommitMode,
    /// This role's name in its topology.
    #[arg(long, default_value = "control-1")]
    pub name: String,
    /// Exit when standard input reaches end-of-file.
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

/// A database server the controller watches: `NAME=127.0.0.1:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    pub name: String,
    pub addr: SocketAddr,
}

impl std::str::FromStr for NodeAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (name, addr) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}` is not NAME=HOST:PORT"))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not HOST:PORT (an IP address and a port)"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!(
                "`{name}` is not a role name (letters, digits, dashes)"
            ));
        }
        Ok(NodeAddr {
            name: name.to_string(),
            addr,
        })
    }
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.addr)
    }
}

impl ControlArgs {
    /// A controller of the servers `nodes` whose PostgreSQL directory is `postgres_dir`, every
    /// other setting at its default.
    pub fn new(postgres_dir: PathBuf, nodes: Vec<NodeAddr>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            postgres_dir,
            nodes,
            primary: "pg-1".into(),
            check_interval_ms: 500,
            failures: 3,
            commit: CommitMode::Quorum,
            name: "control-1".into(),
            exit_on_stdin_eof: false,
        }
    }
}

/// What the control API shows.
#[derive(Clone, serde::Serialize)]
struct View {
    cluster: ClusterState,
    consecutive_failures: u32,
    last_failover_ms: Option<u64>,
}

type Shared = Arc<Mutex<View>>;

/// Connects to one server with a deadline; the connection's driver runs until the client is
/// dropped.
async fn connect(addr: &str, timeout: Duration) -> anyhow::Result<tokio_postgres::Client> {
    let mut config: tokio_postgres::Config = node_url(addr).parse().context("bad node address")?;
    config.connect_timeout(timeout);
    let (client, connection) = tokio::time::timeout(timeout, config.connect(tokio_postgres::NoTls))
        .await
        .context("no answer in time")?
        .context("cannot connect")?;
    tokio::spawn(connection);
    Ok(client)
}

/// A server's URL for probes.
fn node_url(addr: &str) -> String {
    format!("postgresql://{POSTGRES_USER}@{addr}/postgres")
}

/// One check of the primary: it answers within `timeout` (connecting included) and is not in
/// recovery.
async fn check_primary(addr: &str, timeout: Duration) -> anyhow::Result<()> {
    let status = probe_node(&node_url(addr), timeout).await?;
    anyhow::ensure!(!status.in_recovery, "the primary is in recovery");
    Ok(())
}

/// How much WAL a replica has received (it replays all of it when promoted), if it answers
/// and is a replica.
async fn replica_position(addr: &str, timeout: Duration) -> Option<u64> {
    let status = probe_node(&node_url(addr), timeout).await.ok()?;
    status.in_recovery.then_some(status.received.0)
}

/// Kills a server — its postmaster and every backend — by the pid in its `postmaster.pid`
/// (SIGKILL works on stalled, stopped processes too).
fn kill_server(data: &Path) {
    if let Some(pid) = strata_engines::postgres::postmaster_pid(data) {
        strata_engines::process::signal_tree(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

/// Picks the most advanced replica, publishes it as the primary with the old primary fenced,
/// and kills the old primary's server. Returns the new state; [`complete`] does the rest.
async fn elect(
    args: &ControlArgs,
    old: &ClusterState,
    timeout: Duration,
) -> anyhow::Result<ClusterState> {
    let mut positions = Vec::new();
    for (name, addr) in &old.nodes {
        if *name == old.primary {
            continue;
        }
        if let Some(lsn) = replica_position(addr, timeout).await {
            positions.push((lsn, name.clone()));
        }
    }
    // The most advanced; on a tie, the first by name.
    positions.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let (lsn, winner) = positions
        .first()
        .cloned()
        .context("no replica answers: nothing to promote (will try again)")?;
    let mut fenced = old.fenced.clone();
    fenced.retain(|n| *n != winner);
    if !fenced.contains(&old.primary) {
        fenced.push(old.primary.clone());
    }
    let new = ClusterState {
        version: old.version + 1,
        primary: winner.clone(),
        nodes: old.nodes.clone(),
        fenced,
    };
    // Fence first: once this is published the old primary's role stops its server and brings
    // it back only as a replica; killing it here too closes the gap of the role's polling.
    cluster::write(&args.postgres_dir, &new).context("cannot publish the cluster state")?;
    kill_server(&args.postgres_dir.join(&old.primary));
    tracing::warn!(
        old = %old.primary, new = %winner, lsn = %format_lsn(lsn), version = new.version,
        "failing over: the primary is fenced; promoting the most advanced replica"
    );
    Ok(new)
}

/// Promotes the published primary (if it is not yet), gives it the replication slots and the
/// synchronous quorum of the other servers, and re-points the other replicas at it. Safe to
/// run again until it succeeds.
async fn complete(
    args: &ControlArgs,
    state: &ClusterState,
    timeout: Duration,
) -> anyhow::Result<()> {
    let winner = &state.primary;
    let winner_addr = state.primary_addr().context("the primary has no address")?;
    let client = connect(winner_addr, timeout).await?;
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await?
        .try_get(0)?;
    if in_recovery {
        let promoted = tokio::time::timeout(
            Duration::from_secs(30),
            client.query_one("SELECT pg_promote(true, 25)", &[]),
        )
        .await
        .context("pg_promote took over 30 s")?
        .context("pg_promote failed")?;
        anyhow::ensure!(
            promoted.try_get::<_, bool>(0)?,
            "{winner} was not promoted in time"
        );
    }
    let others: Vec<&String> = state.nodes.keys().filter(|n| *n != winner).collect();
    for other in &others {
        let slot = slot_name(other);
        client
            .execute(
                &format!(
                    "SELECT pg_create_physical_replication_slot('{slot}', true) WHERE NOT EXISTS \
                     (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}')"
                ),
                &[],
            )
            .await
            .with_context(|| format!("cannot create the slot of {other}"))?;
    }
    let names = match (args.commit, others.is_empty()) {
        (CommitMode::Quorum, false) => format!(
            "ANY 1 ({})",
            others
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => String::new(),
    };
    // ALTER SYSTEM cannot run in a transaction block: one statement per call.
    client
        .batch_execute(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{}'",
            names.replace('\'', "''")
        ))
        .await
        .context("cannot set the synchronous quorum")?;
    client
        .execute("SELECT pg_reload_conf()", &[])
        .await
        .context("cannot reload the configuration")?;

    // The other replicas follow the new primary (the fenced ones follow it when their role
    // restarts them).
    let (host, port) = winner_addr
        .rsplit_once(':')
        .context("an address is HOST:PORT")?;
    for (name, addr) in &state.nodes {
        if name == winner || state.fenced.contains(name) {
            continue;
        }
        let conninfo =
            format!("host={host} port={port} user={POSTGRES_USER} application_name={name}");
        let result = async {
            let c = connect(addr, timeout).await?;
            c.batch_execute(&format!("ALTER SYSTEM SET primary_conninfo = '{conninfo}'"))
                .await
                .context("ALTER SYSTEM failed")?;
            c.execute("SELECT pg_reload_conf()", &[])
                .await
                .context("reload failed")
        }
        .await;
        if let Err(e) = result {
            // It follows the published state when its role next starts it.
            tracing::warn!(replica = %name, error = %format!("{e:#}"), "cannot re-point a replica now");
        }
    }
    Ok(())
}

/// Runs [`complete`] for a published failover; true when it is done (metrics and the view are
/// updated), false when it must be tried again.
async fn finish(
    args: &ControlArgs,
    shared: &Shared,
    state: &ClusterState,
    started: Instant,
    timeout: Duration,
) -> bool {
    match complete(args, state, timeout).await {
        Ok(()) => {
            metrics::counter!("strata_control_failovers_total").increment(1);
            let took = started.elapsed().as_millis() as u64;
            shared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last_failover_ms = Some(took);
            tracing::warn!(primary = %state.primary, took_ms = took, "failover done");
            true
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "completing the failover failed; retrying");
            false
        }
    }
}

pub async fn run(args: ControlArgs) -> anyhow::Result<()> {
    strata_core::telemetry::init();
    let metrics = strata_core::telemetry::prometheus();
    let nodes: BTreeMap<String, String> = args
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.addr.to_string()))
        .collect();
    anyhow::ensure!(
        nodes.contains_key(&args.primary),
        "--primary {} is not one of the --node names",
        args.primary
    );
    let state = match cluster::read(&args.postgres_dir)? {
        Some(mut s) => {
            s.nodes = nodes;
            s
        }
        None => ClusterState {
            version: 1,
            primary: args.primary.clone(),
            nodes,
            fenced: Vec::new(),
        },
    };
    cluster::write(&args.postgres_dir, &state).context("cannot publish the cluster state")?;
    let shared: Shared = Arc::new(Mutex::new(View {
        cluster: state,
        consecutive_failures: 0,
        last_failover_ms: None,
    }));

    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/cluster",
            get(|State(s): State<Shared>| async move {
                Json(s.lock().unwrap_or_else(|p| p.into_inner()).clone())
            }),
        )
        .route("/metrics", get(move || async move { metrics.render() }))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    ReadyLine::new(&args.name)
        .with_addr("http", addr)
        .announce()
        .context("cannot write the readiness line")?;
    tracing::info!(%addr, "watching the primary");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let interval = Duration::from_millis(args.check_interval_ms);
    let watch = async {
        let mut failures = 0u32;
        // A failover that was published but not yet completed (promotion, quorum, re-pointing).
        let mut incomplete: Option<Instant> = None;
        // Checks start every interval, however long the last one took (a check of a stalled
        // primary takes the whole interval).
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let current = shared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .cluster
                .clone();
            let step_timeout = interval.max(Duration::from_millis(300));
            if let Some(started) = incomplete {
                if finish(&args, &shared, &current, started, step_timeout).await {
                    incomplete = None;
                }
                continue;
            }
            let Some(addr) = current.primary_addr().map(str::to_string) else {
                continue;
            };
            match check_primary(&addr, interval.mul_f32(0.9)).await {
                Ok(()) => {
                    metrics::counter!("strata_control_checks_total", "result" => "ok").increment(1);
                    failures = 0;
                }
                Err(e) => {
                    metrics::counter!("strata_control_checks_total", "result" => "failed")
                        .increment(1);
                    failures += 1;
                    tracing::warn!(primary = %current.primary, failures, error = %format!("{e:#}"), "primary check failed");
                }
            }
            if failures >= args.failures {
                let started = Instant::now();
                match elect(&args, &current, step_timeout).await {
                    Ok(new) => {
                        failures = 0;
                        shared.lock().unwrap_or_else(|p| p.into_inner()).cluster = new.clone();
                        // Straight on, not at the next tick: every millisecond here is downtime.
                        if !finish(&args, &shared, &new, started, step_timeout).await {
                            incomplete = Some(started);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "failover failed; retrying")
                    }
                }
            }
            shared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .consecutive_failures = failures;
        }
    };
    tokio::select! {
        () = watch => {}
        () = strata_core::shutdown::signal(args.exit_on_stdin_eof) => {}
    }
    server.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_name_equals_address() {
        let parse_node = |s: &str| s.parse::<NodeAddr>();
        assert_eq!(
            parse_node("pg-2=127.0.0.1:5433"),
            Ok(NodeAddr {
                name: "pg-2".to_string(),
                addr: "127.0.0.1:5433".parse().expect("addr")
            })
        );
        assert!(parse_node("pg-2").is_err());
        assert!(parse_node("pg 2=127.0.0.1:1").is_err());
        assert!(parse_node("pg-2=localhost").is_err());
    }
}
