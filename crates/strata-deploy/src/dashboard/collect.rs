//! The dashboard's one scrape loop: every second it reads the deployment's state, scrapes each
//! role's `/metrics` (and every few seconds its `/traces`), turns the counters into per-tier
//! points kept for five minutes, asks each balancer which backends it drains, and publishes one JSON snapshot that every page and every
//! `/events` client shares. However many clients watch, the roles are scraped once a second.
//! Every few seconds it also starts a reading of the data tier's shape ([`data`]), which the
//! snapshots carry once it ends.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use strata_engines::process;
use tokio::sync::{Notify, watch};

use super::alerts::{self, AlertsView};
use super::chaos::{Chaos, ChaosView};
use super::data::{DataTier, DataView};
use super::drain;
use super::metrics::{Point, Ring, TierMetrics, series_of};
use crate::roles::RoleKind;
use crate::state::{self, DeploymentState, RolePhase, RoleState};

/// How often the roles are scraped and a snapshot published.
pub const TICK: Duration = Duration::from_secs(1);
/// The longest one scrape may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_millis(800);
/// How many points each tier keeps: five minutes at one a second.
pub const HISTORY: usize = 300;
/// Traces and alerts are gathered every this many ticks.
const TRACE_EVERY: u64 = 5;
/// The data tier's shape is read every this many ticks.
const DATA_EVERY: u64 = 5;
/// The slowest traces shown, across roles.
pub const TRACES_SHOWN: usize = 8;
/// Asked of each role's `/traces`.
const TRACES_PER_ROLE: usize = 5;
/// The most of a scrape's body read.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// A role's health as the page colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ready,
    Starting,
    Down,
    /// Its process is stopped (SIGSTOP): alive, but it answers nothing.
    Frozen,
    /// Ready, but a balancer drains it: it gets no new requests through that balancer.
    Drained,
}

/// What a role's phase and process say about it: frozen when its process is alive but
/// stopped; ready only with its process alive; starting while a new process gets ready; down
/// when nothing serves — crashed or stopped and waiting for the supervisor's restart, failed,
/// stopped, or marked ready while its process is gone.
pub fn health_of(role: &RoleState, alive: bool, stopped: bool) -> Health {
    match role.state {
        RolePhase::Ready | RolePhase::Starting if alive && stopped => Health::Frozen,
        RolePhase::Ready if alive => Health::Ready,
        RolePhase::Starting => Health::Starting,
        _ => Health::Down,
    }
}

/// The tier a kind of role is drawn in, left to right.
pub fn tier_of(kind: RoleKind) -> &'static str {
    match kind {
        RoleKind::Edge | RoleKind::Dns => "edge",
        RoleKind::Lb => "lb",
        RoleKind::Api => "api",
        RoleKind::Cache
        | RoleKind::Postgres
        | RoleKind::Control
        | RoleKind::Etcd
        | RoleKind::Broker
        | RoleKind::ObjectStore
        // A relay carries the traffic of a link between data centres to a database server.
        | RoleKind::Relay => "data",
        RoleKind::Worker => "worker",
        RoleKind::Prometheus | RoleKind::Alertmanager | RoleKind::Dashboard => "observe",
    }
}

/// One role in a snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct RoleView {
    pub name: String,
    pub kind: RoleKind,
    pub tier: &'static str,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub state: RolePhase,
    pub health: Health,
    pub addrs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The balancers that drain this API server (none for most roles).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drained_by: Vec<String>,
}

/// A tier's series, oldest point first.
#[derive(Debug, Clone, Serialize)]
pub struct TierView {
    pub tier: &'static str,
    pub kind: RoleKind,
    pub series: Vec<Point>,
}

/// One of the slowest recent traces, its parts from every role that kept some.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TraceView {
    pub trace_id: String,
    pub name: String,
    pub duration_ms: f64,
    pub spans: u64,
    pub roles: Vec<String>,
}

/// What `/api/snapshot` answers and `/events` sends every second.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub at_ms: u64,
    pub seq: u64,
    pub topology: Option<String>,
    pub running: bool,
    /// This dashboard's own role, which it will not kill.
    pub dashboard: String,
    pub roles: Vec<RoleView>,
    pub tiers: Vec<TierView>,
    pub traces: Vec<TraceView>,
    /// What the deployment's Prometheus says is firing or pending; none without one.
    pub alerts: Option<AlertsView>,
    /// The chaos run started from the page, running or last ended; none before the first.
    pub chaos: Option<ChaosView>,
    /// The data tier's clusters (primary, replicas and their lag) and shard groups, as last
    /// read; none without PostgreSQL or shards, or before the first reading ends.
    pub data: Option<DataView>,
}

/// The scrape loop's memory between ticks.
pub struct Collector {
    dir: PathBuf,
    name: String,
    http: reqwest::Client,
    previous: HashMap<String, TierMetrics>,
    last_tick: Option<Instant>,
    series: BTreeMap<&'static str, (RoleKind, Ring<Point>)>,
    traces: Vec<TraceView>,
    alerts: Option<AlertsView>,
    /// Each balancer's drained backends, as it last said ([`drain::drained_now`]).
    drains_known: BTreeMap<String, Vec<String>>,
    /// Backend name → the balancers that drain it.
    drained: BTreeMap<String, Vec<String>>,
    /// The chaos run started from the page.
    chaos: Arc<Chaos>,
    /// The data tier's shape, read in the background.
    data: DataTier,
    /// Snapshots published, for their `seq`.
    seq: u64,
    /// Scrapes done, for the traces' cadence.
    ticks: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Collector {
    pub fn new(dir: PathBuf, name: String, chaos: Arc<Chaos>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(SCRAPE_TIMEOUT)
            .connect_timeout(SCRAPE_TIMEOUT)
            .no_proxy()
            .build()?;
        Ok(Self {
            data: DataTier::new(dir.clone()),
            dir,
            name,
            http,
            previous: HashMap::new(),
            last_tick: None,
            series: BTreeMap::new(),
            traces: Vec::new(),
            alerts: None,
            drains_known: BTreeMap::new(),
            drained: BTreeMap::new(),
            chaos,
            seq: 0,
            ticks: 0,
        })
    }

    /// Scrapes once and returns the new snapshot.
    pub async fn tick(&mut self) -> Snapshot {
        self.ticks += 1;
        let state = self.read_state();
        let started = Instant::now();
        let elapsed = self.last_tick.map(|t| started.duration_since(t));
        self.last_tick = Some(started);
        if let Some(state) = &state {
            let http = self.http.clone();
            let mut known = std::mem::take(&mut self.drains_known);
            let (_, drained) = tokio::join!(
                self.scrape_metrics(state, elapsed),
                drain::drained_now(&http, state, &mut known)
            );
            self.drains_known = known;
            self.drained = drained;
            if self.ticks % DATA_EVERY == 1 {
                self.data.refresh();
            }
            if self.ticks % TRACE_EVERY == 1 {
                let (traces, alerts) =
                    tokio::join!(self.scrape_traces(state), self.scrape_alerts(state));
                self.traces = traces;
                self.alerts = alerts;
            }
        }
        self.snapshot(state.as_ref())
    }

    /// The roles as they are now, without scraping metrics (the balancers are asked what they
    /// drain): published at once after a button acted, so that the page shows the effect
    /// without waiting for the next tick.
    pub async fn refresh(&mut self) -> Snapshot {
        let state = self.read_state();
        if let Some(state) = &state {
            self.drained = drain::drained_now(&self.http, state, &mut self.drains_known).await;
        }
        self.snapshot(state.as_ref())
    }

    fn read_state(&self) -> Option<DeploymentState> {
        match state::read(&self.dir) {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the deployment's state");
                None
            }
        }
    }

    async fn scrape_metrics(&mut self, state: &DeploymentState, elapsed: Option<Duration>) {
        let targets: Vec<_> = state::metrics_targets(state)
            .into_iter()
            .filter_map(|t| {
                let kind = state.roles.iter().find(|r| r.name == t.role)?.kind;
                Some((t, kind, series_of(kind)?))
            })
            .collect();
        let scrapes = targets.iter().map(|(t, _, _)| {
            let url = format!("http://{}/metrics", t.addr);
            get_text(&self.http, url)
        });
        let bodies = futures_util::future::join_all(scrapes).await;
        let mut deltas: BTreeMap<&'static str, (RoleKind, TierMetrics, bool)> = BTreeMap::new();
        let mut seen = HashMap::new();
        for ((target, kind, series), body) in targets.iter().zip(bodies) {
            let tier = deltas
                .entry(tier_of(*kind))
                .or_insert_with(|| (*kind, TierMetrics::default(), false));
            let Some(body) = body else { continue };
            let now = TierMetrics::read(&body, series);
            if let Some(before) = self.previous.get(&target.role) {
                tier.1.add(&now.since(before));
                tier.2 = true;
            }
            seen.insert(target.role.clone(), now);
        }
        // A role gone from the state is forgotten; one that did not answer keeps its last
        // numbers, so its next answer is compared with them.
        self.previous
            .retain(|role, _| state.roles.iter().any(|r| &r.name == role));
        self.previous.extend(seen);
        let Some(elapsed) = elapsed else { return };
        let at_ms = now_ms();
        for (tier, (kind, delta, measured)) in deltas {
            let ring = &mut self
                .series
                .entry(tier)
                .or_insert_with(|| (kind, Ring::new(HISTORY)))
                .1;
            if measured {
                ring.push(Point::of(at_ms, &delta, elapsed.as_secs_f64()));
            }
        }
    }

    async fn scrape_traces(&self, state: &DeploymentState) -> Vec<TraceView> {
        let targets: Vec<_> = state::metrics_targets(state)
            .into_iter()
            .filter(|t| t.kind != RoleKind::Prometheus.as_str())
            .collect();
        let fetches = targets.iter().map(|t| {
            let url = format!("http://{}/traces?limit={TRACES_PER_ROLE}", t.addr);
            get_text(&self.http, url)
        });
        let bodies = futures_util::future::join_all(fetches).await;
        let mut by_role = Vec::new();
        for (target, body) in targets.iter().zip(bodies) {
            if let Some(doc) = body.and_then(|b| serde_json::from_str(&b).ok()) {
                by_role.push((target.role.clone(), doc));
            }
        }
        slowest_traces(&by_role, TRACES_SHOWN)
    }

    /// The alerts of the deployment's first Prometheus role, when it runs one.
    async fn scrape_alerts(&self, state: &DeploymentState) -> Option<AlertsView> {
        let prometheus = state
            .roles
            .iter()
            .find(|r| r.kind == RoleKind::Prometheus)?;
        let body = match prometheus.addrs.get("http") {
            Some(addr) => get_text(&self.http, format!("http://{addr}/api/v1/alerts")).await,
            None => None,
        };
        Some(alerts::view_of(&prometheus.name, body.as_deref()))
    }

    fn snapshot(&mut self, state: Option<&DeploymentState>) -> Snapshot {
        self.seq += 1;
        let roles = state
            .map(|s| {
                s.roles
                    .iter()
                    .map(|r| {
                        let drained_by = match r.kind {
                            RoleKind::Api => self.drained.get(&r.name).cloned().unwrap_or_default(),
                            _ => Vec::new(),
                        };
                        let health = health_of(
                            r,
                            r.pid.is_some_and(process::is_alive),
                            r.pid.is_some_and(process::is_stopped),
                        );
                        RoleView {
                            name: r.name.clone(),
                            kind: r.kind,
                            tier: tier_of(r.kind),
                            pid: r.pid,
                            restarts: r.restarts,
                            state: r.state,
                            health: match health {
                                Health::Ready if !drained_by.is_empty() => Health::Drained,
                                other => other,
                            },
                            addrs: r.addrs.clone(),
                            last_error: r.last_error.clone(),
                            drained_by,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Snapshot {
            at_ms: now_ms(),
            seq: self.seq,
            topology: state.map(|s| s.topology.clone()),
            running: state.is_some_and(|s| s.running),
            dashboard: self.name.clone(),
            roles,
            tiers: self
                .series
                .iter()
                .map(|(tier, (kind, ring))| TierView {
                    tier,
                    kind: *kind,
                    series: ring.iter().cloned().collect(),
                })
                .collect(),
            traces: self.traces.clone(),
            alerts: self.alerts.clone(),
            chaos: self.chaos.view(),
            data: self.data.view(),
        }
    }
}

/// The slowest traces among every role's `/traces` answer, the parts of one trace (the edge's,
/// the balancer's, the API server's) joined by trace id: its longest duration, its spans
/// summed, the roles that kept a part.
pub fn slowest_traces(by_role: &[(String, serde_json::Value)], shown: usize) -> Vec<TraceView> {
    let mut merged: BTreeMap<String, TraceView> = BTreeMap::new();
    for (role, doc) in by_role {
        let lists = ["slowest", "recent"].map(|k| doc[k].as_array().cloned().unwrap_or_default());
        let mut counted = std::collections::HashSet::new();
        for t in lists.iter().flatten() {
            let Some(id) = t["trace_id"].as_str().filter(|id| id.len() <= 64) else {
                continue;
            };
            if !counted.insert(id.to_string()) {
                continue;
            }
            let duration_ms = t["duration_nanos"].as_f64().unwrap_or(0.0) / 1e6;
            let name: String = t["name"].as_str().unwrap_or("").chars().take(80).collect();
            let spans = t["spans"].as_u64().unwrap_or(0);
            let view = merged.entry(id.to_string()).or_insert_with(|| TraceView {
                trace_id: id.to_string(),
                name: name.clone(),
                duration_ms: 0.0,
                spans: 0,
                roles: Vec::new(),
            });
            if duration_ms > view.duration_ms {
                view.duration_ms = duration_ms;
                view.name = name;
            }
            view.spans += spans;
            view.roles.push(role.clone());
        }
    }
    let mut all: Vec<TraceView> = merged.into_values().collect();
    all.sort_by(|a, b| b.duration_ms.total_cmp(&a.duration_ms));
    all.truncate(shown);
    all
}

/// `GET url`'s body when it answers 2xx in time, read up to [`MAX_BODY`].
pub async fn get_text(http: &reqwest::Client, url: String) -> Option<String> {
    let mut response = http.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > MAX_BODY {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).ok()
}

/// Runs the loop until the receivers are all gone, publishing each snapshot as JSON; a
/// `nudge` (a button acted) publishes the roles as they are at once.
pub async fn run(mut collector: Collector, publish: watch::Sender<Arc<str>>, nudge: Arc<Notify>) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let snapshot = tokio::select! {
            _ = ticks.tick() => collector.tick().await,
            () = nudge.notified() => collector.refresh().await,
        };
        match serde_json::to_string(&snapshot) {
            Ok(json) => {
                if publish.send(json.into()).is_err() {
                    return;
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot serialise the snapshot"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_trace_seen_by_several_roles_is_one_line_with_its_longest_duration() {
        let edge = json!({"recent": [], "slowest": [
            {"trace_id": "a", "name": "edge", "duration_nanos": 9_000_000, "spans": 1},
            {"trace_id": "b", "name": "edge", "duration_nanos": 1_000_000, "spans": 1}]});
        let api = json!({"recent": [
            {"trace_id": "a", "name": "GET /users/{id}", "duration_nanos": 5_000_000, "spans": 3}],
            "slowest": [
            {"trace_id": "a", "name": "GET /users/{id}", "duration_nanos": 5_000_000, "spans": 3},
            {"trace_id": "c", "name": "api", "duration_nanos": 20_000_000, "spans": 2}]});
        let traces = slowest_traces(&[("edge-1".into(), edge), ("api-1".into(), api)], 2);
        assert_eq!(traces.len(), 2, "bounded: {traces:?}");
        assert_eq!(traces[0].trace_id, "c");
        assert_eq!(traces[1].trace_id, "a");
        assert_eq!(traces[1].duration_ms, 9.0);
        assert_eq!(traces[1].spans, 4, "each role's part counted once");
        assert_eq!(
            traces[1].roles,
            vec!["edge-1".to_string(), "api-1".to_string()]
        );
    }

    #[test]
    fn health_follows_the_phase_and_the_process() {
        let mut role = RoleState {
            name: "api-1".into(),
            kind: RoleKind::Api,
            pid: Some(1),
            addrs: BTreeMap::new(),
            restarts: 0,
            state: RolePhase::Ready,
            last_error: None,
        };
        assert_eq!(health_of(&role, true, false), Health::Ready);
        assert_eq!(health_of(&role, false, false), Health::Down);
        assert_eq!(health_of(&role, true, true), Health::Frozen);
        role.state = RolePhase::Restarting;
        assert_eq!(
            health_of(&role, false, false),
            Health::Down,
            "nothing serves"
        );
        role.state = RolePhase::Starting;
        assert_eq!(health_of(&role, true, false), Health::Starting);
        assert_eq!(health_of(&role, true, true), Health::Frozen);
        role.state = RolePhase::Failed;
        assert_eq!(health_of(&role, true, false), Health::Down);
    }
}
