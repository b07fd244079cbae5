//! `strata control`: watches the PostgreSQL primary of a deployment and fails over when it is
//! gone — without losing an acknowledged write, even when a second fault comes with the first.
//!
//! Every `--check-interval-ms` (500) it asks the primary `SELECT pg_is_in_recovery()` over a
//! fresh connection, with a deadline of the interval. After `--failures` (3) failed checks in a
//! row it fails over, in steps that are each published before they act (see [`crate::cluster`]),
//! so that a controller restarted at any point finishes what it finds and never decides twice:
//! 1. **fence**: publish that there is no primary and the old one is fenced, then kill the old
//!    primary's server (verified to be that server) — a stalled one included. From then on
//!    nothing commits there, and its role brings it back only as a replica (pg_rewind);
//! 2. **elect** ([`election`]): ask every standby how much WAL it has received. Under quorum
//!    commit (`ANY 1` of N standbys) only answers from all N make a safe choice; with fewer it
//!    waits — writes get 503 with Retry-After, `GET /cluster` and `strata status` say why
//!    ("failover waiting: 1 of 2 standbys reachable") — and elects as soon as they answer. The
//!    most advanced is chosen; standbys that did not answer must rewind before they follow;
//! 3. **promote** ([`actions`]): publish the winner, then `pg_promote`, open it to writes, give
//!    it the replication slots and the synchronous quorum of the standbys that answered, re-point
//!    those standbys, and publish that the failover is done.
//!
//! While the primary is healthy it also watches who streams from it: a fenced or rewound server
//! that streams again is cleared and, under quorum commit, joins the synchronous quorum — the
//! state first, the primary's setting after, so an election never counts fewer standbys than
//! the primary waits for. After any fault the cluster returns to full health by itself.
//!
//! API servers need no message: they connect to the primary through a multi-host URL with
//! `target_session_attrs=read-write`, so their next connection finds the new primary, and their
//! replica probes see which servers are in recovery. `GET /cluster` shows the state and any
//! wait, `/metrics` the checks and failovers.

pub mod actions;
pub mod election;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use strata_core::ready::ReadyLine;
use strata_store::postgres::format_lsn;

use crate::cluster::{ClusterState, Failover};
use crate::pgnode::CommitMode;
use crate::store::{StateError, StateStore};
use crate::store_options::StoreOptions;
use election::{Answer, Decision};

#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct ControlArgs {
    /// Address of the control API (`/cluster`, `/healthz`, `/metrics`).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The deployment's PostgreSQL directory (`DIR/postgres`), where `cluster.json` lives
    /// with the file store.
    #[arg(long)]
    pub postgres_dir: PathBuf,
    /// Where the cluster state lives.
    #[command(flatten)]
    #[serde(flatten)]
    pub store: StoreOptions,
    /// A database server, `NAME=127.0.0.1:PORT` (repeat for each).
    #[arg(long = "node", required = true)]
    #[serde(serialize_with = "strata_core::args::display_all")]
    pub nodes: Vec<NodeAddr>,
    /// How a server reaches another when not at its address above, `FROM:TO=HOST:PORT`
    /// (repeat for each): a standby is re-pointed at a new primary through its route.
    #[arg(long = "route")]
    #[serde(serialize_with = "strata_core::args::display_all")]
    pub routes: Vec<crate::route::Route>,
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
            store: StoreOptions::file(),
            nodes,
            routes: Vec::new(),
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
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    pub cluster: Option<ClusterState>,
    pub commit: CommitMode,
    /// Under asynchronous commit a failover may lose the last acknowledged writes.
    pub loss_possible: bool,
    pub consecutive_failures: u32,
    pub last_failover_ms: Option<u64>,
    /// Why a failover does not complete yet, while it waits.
    pub waiting: Option<Waiting>,
    /// Whether this controller leads (with several controllers, one does).
    pub leading: bool,
}

/// A failover that waits for enough standbys to elect safely.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Waiting {
    pub reachable: usize,
    pub needed: usize,
    /// The sentence `strata status` shows.
    pub message: String,
}

type Shared = Arc<Mutex<View>>;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The controller: its settings, its store, and what it shows.
struct Controller {
    args: ControlArgs,
    store: Arc<dyn StateStore>,
    shared: Shared,
    /// Deadline of one step against one server.
    step: Duration,
}

impl Controller {
    fn view(&self, f: impl FnOnce(&mut View)) {
        f(&mut self.shared.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Publishes `next` over `current`; false (logged) when it could not.
    async fn publish(&self, current: &ClusterState, next: &ClusterState) -> bool {
        match self.store.publish(Some(current.version), next).await {
            Ok(()) => {
                self.view(|v| v.cluster = Some(next.clone()));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, version = next.version, "cannot publish the cluster state");
                false
            }
        }
    }

    /// The server's data directory (the deployment's layout: `DIR/postgres/<name>`).
    fn data_of(&self, name: &str) -> PathBuf {
        self.args.postgres_dir.join(name)
    }

    /// Step 1: fence the lost primary and publish that a failover waits for an election.
    async fn fence(&self, state: &ClusterState, lost: &str) -> Option<ClusterState> {
        let next = state.next(|s| {
            s.primary = None;
            if !s.is_fenced(lost) {
                s.fenced.push(lost.to_string());
            }
            s.failover = Some(Failover {
                from: lost.to_string(),
                to: None,
                started_ms: now_ms(),
            });
        });
        if !self.publish(state, &next).await {
            return None;
        }
        // Published first: from now on its role keeps it down; killing it here too closes the
        // gap of the role's polling, and stops a stalled one for good.
        let killed = actions::kill_server(&self.data_of(lost));
        tracing::warn!(
            lost,
            killed,
            version = next.version,
            "failing over: the primary is fenced; electing a standby"
        );
        Some(next)
    }

    /// Step 2: ask the standbys and elect one when that is safe.
    async fn elect(&self, state: &ClusterState, failover: &Failover) -> Option<ClusterState> {
        let candidates: Vec<String> = state
            .nodes
            .keys()
            .filter(|n| **n != failover.from && !state.is_fenced(n) && !state.must_rewind(n))
            .cloned()
            .collect();
        let probes = candidates.iter().map(|name| async move {
            let addr = state.nodes.get(name)?;
            let received = actions::standby_position(addr, self.step).await?;
            Some(Answer {
                name: name.clone(),
                received,
            })
        });
        let answers: Vec<Answer> = futures_util::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect();
        match election::decide(self.args.commit, &state.sync, &candidates, &answers) {
            Decision::Wait { reachable, needed } => {
                let message = format!(
                    "failover waiting: {reachable} of {needed} standbys reachable (the primary {} is fenced; a standby is promoted once all the standbys that may hold its last acknowledged writes answer)",
                    failover.from
                );
                let changed = self.shared.lock().map_or(true, |v| {
                    v.waiting.as_ref().map(|w| (w.reachable, w.needed)) != Some((reachable, needed))
                });
                if changed {
                    tracing::warn!(reachable, needed, "{message}");
                }
                self.view(|v| {
                    v.waiting = Some(Waiting {
                        reachable,
                        needed,
                        message,
                    })
                });
                None
            }
            Decision::Promote {
                name,
                received,
                rewind,
            } => {
                let sync: Vec<String> = match self.args.commit {
                    CommitMode::Quorum => answers
                        .iter()
                        .map(|a| a.name.clone())
                        .filter(|n| *n != name)
                        .collect(),
                    CommitMode::Async => Vec::new(),
                };
                let next = state.next(|s| {
                    s.primary = Some(name.clone());
                    if let Some(f) = &mut s.failover {
                        f.to = Some(name.clone());
                    }
                    for r in &rewind {
                        if !s.must_rewind(r) {
                            s.rewind.push(r.clone());
                        }
                    }
                    s.sync = sync;
                });
                if !self.publish(state, &next).await {
                    return None;
                }
                self.view(|v| v.waiting = None);
                tracing::warn!(
                    new = %name, lsn = %format_lsn(received), version = next.version, ?rewind,
                    "elected the most advanced standby"
                );
                Some(next)
            }
        }
    }

    /// Step 3: promote the elected server, give it its slots and quorum, re-point the other
    /// standbys, and publish that the failover is done. Safe to run again until it succeeds.
    async fn complete(&self, state: &ClusterState, winner: &str) -> anyhow::Result<ClusterState> {
        let winner_addr = state
            .nodes
            .get(winner)
            .context("the elected server has no address")?;
        let client = actions::promote(winner_addr, self.step).await?;
        let others: Vec<&String> = state.nodes.keys().filter(|n| *n != winner).collect();
        actions::ensure_slots(&client, &others).await?;
        actions::set_quorum(&client, &state.sync).await?;
        // The standbys that answered follow the new primary now; fenced servers and those that
        // must rewind follow it when their role restarts them.
        for name in others {
            if state.is_fenced(name) || state.must_rewind(name) {
                continue;
            }
            let Some(addr) = state.nodes.get(name) else {
                continue;
            };
            // Through the standby's route to the new primary, when it has one.
            let to = crate::route::via(&self.args.routes, name, winner)
                .map_or_else(|| winner_addr.clone(), |a| a.to_string());
            if let Err(e) = actions::repoint(name, addr, &to, self.step).await {
                // It follows the published state when its role next starts it.
                tracing::warn!(replica = %name, error = %format!("{e:#}"), "cannot re-point a replica now");
            }
        }
        let next = state.next(|s| s.failover = None);
        anyhow::ensure!(
            self.publish(state, &next).await,
            "cannot publish the end of the failover"
        );
        Ok(next)
    }

    /// While the primary is healthy: servers that were fenced or had to rewind and stream from
    /// it again are cleared and join the quorum — published first, then set on the primary.
    async fn heal(&self, state: &ClusterState) -> Option<ClusterState> {
        let primary_addr = state.primary_addr()?;
        let streaming = actions::streaming(primary_addr, self.step).await.ok()?;
        let returned: Vec<&String> = state
            .fenced
            .iter()
            .chain(&state.rewind)
            .filter(|n| streaming.contains(n))
            .collect();
        let quorum = self.args.commit == CommitMode::Quorum;
        let missing: Vec<&String> = if quorum {
            streaming
                .iter()
                .filter(|n| state.nodes.contains_key(*n) && !state.sync.contains(n))
                .collect()
        } else {
            Vec::new()
        };
        if returned.is_empty() && missing.is_empty() {
            return None;
        }
        let next = state.next(|s| {
            s.fenced.retain(|n| !returned.contains(&n));
            s.rewind.retain(|n| !returned.contains(&n));
            if quorum {
                for n in returned.iter().chain(&missing) {
                    if !s.sync.contains(n) {
                        s.sync.push((*n).clone());
                    }
                }
                s.sync.sort();
            }
        });
        if !self.publish(state, &next).await {
            return None;
        }
        tracing::info!(back = ?returned, quorum = ?next.sync, "servers stream from the primary again");
        if quorum {
            match actions::connect(primary_addr, self.step).await {
                Ok(client) => {
                    if let Err(e) = actions::set_quorum(&client, &next.sync).await {
                        tracing::warn!(error = %format!("{e:#}"), "cannot widen the quorum now");
                    }
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot widen the quorum now"),
            }
        }
        Some(next)
    }
}

/// The state this controller starts from: the published one (with the servers' current
/// addresses), or the first one.
async fn initial_state(args: &ControlArgs, store: &dyn StateStore) -> anyhow::Result<ClusterState> {
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
    loop {
        let current = store.load().await?;
        let (expected, next) = match &current {
            Some(s) if s.nodes == nodes => return Ok(s.clone()),
            // Roles came back on other ports (a new `strata up` of the same directory).
            Some(s) => (Some(s.version), s.next(|n| n.nodes = nodes.clone())),
            None => (
                None,
                ClusterState::first(
                    &args.primary,
                    nodes.clone(),
                    args.commit == CommitMode::Quorum,
                ),
            ),
        };
        match store.publish(expected, &next).await {
            Ok(()) => return Ok(next),
            Err(StateError::Conflict { .. }) => continue,
            Err(e) => return Err(e).context("cannot publish the cluster state"),
        }
    }
}

pub async fn run(args: ControlArgs) -> anyhow::Result<()> {
    strata_core::telemetry::init();
    let metrics = strata_core::telemetry::prometheus();
    let store: Arc<dyn StateStore> = args.store.open(&args.postgres_dir)?;
    let shared: Shared = Arc::new(Mutex::new(View {
        cluster: None,
        commit: args.commit,
        loss_possible: args.commit == CommitMode::Async,
        consecutive_failures: 0,
        last_failover_ms: None,
        waiting: None,
        leading: false,
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
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    // Listening for the stop signal before announcing readiness: a SIGTERM sent the moment
    // the role is ready stops it cleanly.
    let stop = strata_core::shutdown::signal(args.exit_on_stdin_eof);
    // Ready once it answers: a controller that does not lead (another one does) is a standby,
    // ready to take over, not a role that failed to start.
    ReadyLine::new(&args.name)
        .with_addr("http", addr)
        .announce()
        .context("cannot write the readiness line")?;
    tracing::info!(%addr, store = %store.describe(), "campaigning to lead");

    let interval = Duration::from_millis(args.check_interval_ms);
    let controller = Controller {
        step: interval.max(Duration::from_millis(300)),
        args,
        store,
        shared,
    };
    let watch = watch(&controller, interval);
    tokio::select! {
        () = watch => {}
        () = stop => {}
    }
    // Another controller leads at once, not when this one's lead would have expired.
    controller.store.resign().await;
    server.abort();
    Ok(())
}

/// The refresh loop never ends; this keeps `select!`'s types honest.
fn unreachable_refresh() -> Result<(), StateError> {
    Err(StateError::Unavailable("the view refresh ended".into()))
}

/// The loop: check, fence, elect, complete, heal — whichever the published state calls for.
async fn watch(c: &Controller, interval: Duration) {
    let mut failures = 0u32;
    let mut last_heal = Instant::now();
    let mut leading = false;
    // Checks start every interval, however long the last one took (a check of a stalled
    // primary takes the whole interval).
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if leading && !c.store.leads().await {
            // Deposed, or cut off from the store past its lead: whatever it decided before may
            // be stale. It acts again only once it leads again, from the published state.
            leading = false;
            c.view(|v| v.leading = false);
            tracing::error!(
                "this controller no longer leads: it stops acting until it leads again"
            );
        }
        if !leading {
            if let Ok(Some(s)) = c.store.load().await {
                c.view(|v| v.cluster = Some(s));
            }
            // Waits while another controller leads (a standby keeps its view fresh meanwhile).
            let campaign = c.store.lead(&c.args.name);
            let refresh = async {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Ok(Some(s)) = c.store.load().await {
                        c.view(|v| v.cluster = Some(s));
                    }
                }
            };
            let led = tokio::select! {
                led = campaign => led,
                () = refresh => unreachable_refresh(),
            };
            if let Err(e) = led {
                tracing::warn!(error = %e, "cannot campaign for the lead");
                continue;
            }
            match initial_state(&c.args, c.store.as_ref()).await {
                Ok(state) => c.view(|v| v.cluster = Some(state)),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot read or publish the state");
                    continue;
                }
            }
            leading = true;
            failures = 0;
            c.view(|v| v.leading = true);
            tracing::warn!(store = %c.store.describe(), "this controller leads: watching the primary");
        }
        let mut state = match c.store.load().await {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster state");
                continue;
            }
        };
        c.view(|v| v.cluster = Some(state.clone()));
        // Straight from one step to the next: every millisecond here is downtime.
        loop {
            let next = match state.failover.clone() {
                Some(Failover {
                    to: Some(to),
                    started_ms,
                    ..
                }) => match c.complete(&state, &to).await {
                    Ok(done) => {
                        let took = now_ms().saturating_sub(started_ms);
                        metrics::counter!("strata_control_failovers_total").increment(1);
                        c.view(|v| v.last_failover_ms = Some(took));
                        tracing::warn!(primary = %to, took_ms = took, "failover done");
                        failures = 0;
                        Some(done)
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "completing the failover failed; retrying");
                        None
                    }
                },
                Some(failover) => c.elect(&state, &failover).await,
                None => {
                    let Some(addr) = state.primary_addr().map(str::to_string) else {
                        break;
                    };
                    match actions::check_primary(&addr, interval.mul_f32(0.9)).await {
                        Ok(()) => {
                            metrics::counter!("strata_control_checks_total", "result" => "ok")
                                .increment(1);
                            failures = 0;
                        }
                        Err(e) => {
                            metrics::counter!("strata_control_checks_total", "result" => "failed")
                                .increment(1);
                            failures += 1;
                            tracing::warn!(primary = ?state.primary, failures, error = %format!("{e:#}"), "primary check failed");
                        }
                    }
                    c.view(|v| v.consecutive_failures = failures);
                    match (&state.primary, failures >= c.args.failures) {
                        (Some(lost), true) => {
                            let lost = lost.clone();
                            c.fence(&state, &lost).await
                        }
                        _ if failures == 0 && last_heal.elapsed() >= Duration::from_secs(1) => {
                            last_heal = Instant::now();
                            c.heal(&state).await;
                            None
                        }
                        _ => None,
                    }
                }
            };
            match next {
                Some(n) => state = n,
                None => break,
            }
        }
    }
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
