//! `strata status`: what a running deployment looks like right now — each role's process, its
//! health (an HTTP `/healthz` for API servers, the balancer and the controller; a query for
//! database servers), and for PostgreSQL servers their place in the cluster (primary, replica
//! and how far behind, or fenced and waiting for `strata db rejoin`); with a DNS server, the
//! layered path from it to the API pool ([`crate::layers`]).
//!
//! Collection only; [`crate::present`] turns a [`Report`] into a table or JSON.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_control::cluster::awaiting_rejoin_path;
use strata_engines::postgres::SUPERUSER;
use strata_engines::process;
use strata_store::embedded_shards::GroupView;
use strata_store::postgres::{format_lsn, probe_node, probe_standbys};
use strata_store::shard::ShardMap;

use crate::control;
use crate::groups;
use crate::roles::RoleKind;
use crate::state::{self, DeploymentState, RoleState};

/// A database server's place in its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseView {
    Primary {
        lsn: String,
    },
    Replica {
        lsn: String,
        /// Bytes of WAL behind the primary.
        lag_bytes: u64,
    },
    /// A former primary that a failover fenced, stopped until `strata db rejoin` (under
    /// `rejoin = "manual"`).
    Fenced,
}

/// One role as `strata status` shows it.
#[derive(Debug, Clone)]
pub struct RoleReport {
    pub role: RoleState,
    pub alive: bool,
    pub healthy: bool,
    pub database: Option<DatabaseView>,
}

/// A deployment as `strata status` shows it.
#[derive(Debug, Clone)]
pub struct Report {
    pub dir: PathBuf,
    pub state: DeploymentState,
    pub supervisor_alive: bool,
    pub roles: Vec<RoleReport>,
    /// What the failover controller shows (`GET /cluster`), when the deployment runs one.
    pub control: Option<serde_json::Value>,
    /// What each PostgreSQL shard group's controller shows, by group (empty unless the
    /// deployment runs shard groups with replicas).
    pub group_controls: Vec<(String, serde_json::Value)>,
    /// The shard map and each shard group, when the data tier is sharded.
    pub shards: Option<(ShardMap, Vec<GroupView>)>,
    /// DNS → balancers → API pool, when the deployment runs a DNS server.
    pub path: Option<crate::layers::LayeredPath>,
}

impl Report {
    /// Sentences about the data tier's safety right now: a failover that waits for an
    /// election, and what asynchronous commit may lose.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(view) = &self.control {
            cluster_notes(view, "", &mut notes);
        }
        for (group, view) in &self.group_controls {
            cluster_notes(view, &format!("shard group {group}: "), &mut notes);
        }
        notes.dedup();
        notes
    }
}

/// Sentences about one cluster's safety, each starting with `prefix`.
fn cluster_notes(view: &serde_json::Value, prefix: &str, notes: &mut Vec<String>) {
    if let Some(message) = view["waiting"]["message"].as_str() {
        notes.push(format!("{prefix}{message}"));
    } else if let Some(failover) = view["cluster"]["failover"].as_object() {
        notes.push(format!(
            "{prefix}failover in progress: {} lost, {}",
            failover.get("from").and_then(|v| v.as_str()).unwrap_or("?"),
            match failover.get("to").and_then(|v| v.as_str()) {
                Some(to) => format!("{to} elected, being promoted"),
                None => "electing a standby".into(),
            }
        ));
    }
    if view["lossPossible"].as_bool() == Some(true) {
        notes.push(
            "commit = \"async\": a failover may lose the last writes the primary acknowledged (see docs/data.md)"
                .into(),
        );
    }
}

/// Looks at every role of the deployment in `dir`.
pub async fn collect(dir: &Path) -> anyhow::Result<Report> {
    let state = state::read(dir)?.ok_or_else(|| state::no_deployment(dir))?;
    let supervisor_alive = process::is_alive(state.supervisor_pid);
    let positions = probe_databases(&state).await;
    let mut roles = Vec::new();
    for r in &state.roles {
        let alive = r.pid.is_some_and(process::is_alive);
        let healthy = match (alive, r.addrs.get("http"), r.addrs.get("postgres")) {
            // An edge answers for itself on its admin port (its public one asks the origin).
            (true, Some(_), _) if r.kind == RoleKind::Edge => match r.addrs.get("admin") {
                Some(admin) => control::http_healthy(admin, Duration::from_secs(1)).await,
                None => false,
            },
            (true, Some(addr), _)
                if matches!(r.kind, RoleKind::Prometheus | RoleKind::Alertmanager) =>
            {
                control::http_ok(addr, "/-/ready", Duration::from_secs(1)).await
            }
            (true, Some(addr), _) => control::http_healthy(addr, Duration::from_secs(1)).await,
            (true, None, Some(_)) => positions.contains_key(&r.name),
            (true, None, None) => engine_answers(r).await,
            _ => false,
        };
        roles.push(RoleReport {
            role: r.clone(),
            alive,
            healthy,
            database: database_view(dir, &r.name, &positions),
        });
    }
    let control = control_view(&state, None).await;
    let mut group_controls = Vec::new();
    let mut seen = Vec::new();
    for r in &state.roles {
        if let Some(g) = groups::group_of(&r.name).filter(|g| !seen.contains(g)) {
            seen.push(g);
            if let Some(view) = control_view(&state, Some(g)).await {
                group_controls.push((g.to_string(), view));
            }
        }
    }
    let shards = shards_of(dir, &state).await;
    let primary = positions
        .iter()
        .find(|(_, (in_recovery, _))| !*in_recovery)
        .map(|(name, _)| name.as_str());
    let standbys = match primary.and_then(|p| state.roles.iter().find(|r| r.name == p)) {
        Some(role) if state.roles.iter().any(|r| r.kind == RoleKind::Dns) => {
            match role.addrs.get("postgres") {
                Some(addr) => probe_standbys(
                    &format!("postgresql://{SUPERUSER}@{addr}/postgres"),
                    Duration::from_secs(1),
                )
                .await
                .ok(),
                None => None,
            }
        }
        _ => None,
    };
    let data = crate::layers::DataView {
        primary,
        standbys: standbys.as_deref(),
        loss_possible: control
            .as_ref()
            .and_then(|view| view["lossPossible"].as_bool()),
    };
    let path = crate::layers::collect(dir, &state, data).await;
    Ok(Report {
        dir: dir.to_path_buf(),
        state,
        supervisor_alive,
        roles,
        control,
        group_controls,
        shards,
        path,
    })
}

/// The data tier only, for the live dashboard: the database servers (each one's place in its
/// cluster, healthy when it answered its query) and the shard groups, without the other
/// roles' probes or the controllers' views (`control` and `group_controls` are empty).
pub async fn data_tier(dir: &Path) -> anyhow::Result<Report> {
    let state = state::read(dir)?.ok_or_else(|| state::no_deployment(dir))?;
    let supervisor_alive = process::is_alive(state.supervisor_pid);
    let positions = probe_databases(&state).await;
    let roles = state
        .roles
        .iter()
        .filter(|r| r.kind == RoleKind::Postgres)
        .map(|r| RoleReport {
            role: r.clone(),
            alive: r.pid.is_some_and(process::is_alive),
            healthy: positions.contains_key(&r.name),
            database: database_view(dir, &r.name, &positions),
        })
        .collect();
    let shards = shards_of(dir, &state).await;
    Ok(Report {
        dir: dir.to_path_buf(),
        state,
        supervisor_alive,
        roles,
        control: None,
        group_controls: Vec::new(),
        shards,
        path: None,
    })
}

/// Each running PostgreSQL server of `state` that answered its query (within a second, all
/// asked at once): whether it is in recovery, and its WAL position.
async fn probe_databases(state: &DeploymentState) -> HashMap<String, (bool, u64)> {
    let probes = state.roles.iter().filter_map(|r| {
        let addr = r.addrs.get("postgres")?;
        if r.addrs.contains_key("http") || !r.pid.is_some_and(process::is_alive) {
            return None;
        }
        let url = format!("postgresql://{SUPERUSER}@{addr}/postgres");
        Some(async move {
            let node = probe_node(&url, Duration::from_secs(1)).await.ok()?;
            Some((r.name.clone(), (node.in_recovery, node.position.0)))
        })
    });
    futures_util::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Server `name`'s place in its cluster: primary or replica as it answered (a replica's lag
/// in bytes of WAL against the position of its own cluster's primary), fenced when a failover
/// left it waiting for `strata db rejoin`, else unknown.
fn database_view(
    dir: &Path,
    name: &str,
    positions: &HashMap<String, (bool, u64)>,
) -> Option<DatabaseView> {
    let group = groups::group_of(name);
    let primary = positions
        .iter()
        .find(|(other, (in_recovery, _))| !in_recovery && groups::group_of(other) == group)
        .map(|(_, (_, position))| *position);
    match positions.get(name) {
        Some((false, position)) => Some(DatabaseView::Primary {
            lsn: format_lsn(*position),
        }),
        Some((true, position)) => Some(DatabaseView::Replica {
            lsn: format_lsn(*position),
            lag_bytes: primary.map_or(0, |p| p.saturating_sub(*position)),
        }),
        None if awaiting_rejoin_path(&groups::postgres_dir(dir, name), name).exists() => {
            Some(DatabaseView::Fenced)
        }
        None => None,
    }
}

/// The shard map and each shard group, when the data tier is sharded (SQLite files, or
/// PostgreSQL groups asked within a few seconds).
async fn shards_of(dir: &Path, state: &DeploymentState) -> Option<(ShardMap, Vec<GroupView>)> {
    let urls = groups::group_urls(state);
    if urls.is_empty() {
        strata_store::embedded_shards::describe(&dir.join(state::DATA_DIR))
            .await
            .unwrap_or(None)
    } else {
        match crate::maps::of_deployment(dir, state) {
            Ok(home) => postgres_shards(home.as_ref(), &urls).await,
            Err(_) => None,
        }
    }
}

/// The map and each PostgreSQL shard group (its users and fences read from its primary);
/// `None` when the groups cannot be reached within a few seconds.
async fn postgres_shards(
    home: &dyn strata_store::map_home::MapHome,
    urls: &[String],
) -> Option<(ShardMap, Vec<GroupView>)> {
    let describe = async {
        let groups = strata_store::pg_shards::connect_groups(urls, 1)
            .await
            .ok()?;
        strata_store::pg_shards::describe(home, &groups).await.ok()
    };
    tokio::time::timeout(Duration::from_secs(5), describe)
        .await
        .ok()
        .flatten()
}

/// What the controllers of one cluster (a shard group's, or with `None` the one cluster's)
/// show (`GET /cluster`): the leading one's view, else any (with several controllers the
/// others are standbys, whose view is the published state).
pub async fn control_view(
    state: &DeploymentState,
    group: Option<&str>,
) -> Option<serde_json::Value> {
    let mut any = None;
    for r in &state.roles {
        if r.kind != RoleKind::Control
            || groups::group_of(&r.name) != group
            || !r.pid.is_some_and(process::is_alive)
        {
            continue;
        }
        let Some(addr) = r.addrs.get("http") else {
            continue;
        };
        if let Some(view) = control::http_json(addr, "/cluster", Duration::from_secs(1)).await {
            if view["leading"] == true {
                return Some(view);
            }
            any.get_or_insert(view);
        }
    }
    any
}

/// Whether the engine a role runs (Redis, Memcached, an etcd member) answers its probe.
async fn engine_answers(role: &RoleState) -> bool {
    // A worker answers `/healthz` beside its `/metrics`; SeaweedFS's S3 gateway has one too.
    if let Some(addr) = role.addrs.get("metrics").or_else(|| role.addrs.get("s3")) {
        return control::http_healthy(addr, Duration::from_secs(1)).await;
    }
    if let Some(addr) = role.addrs.get(strata_dns::LISTENER) {
        let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
            return false;
        };
        return tokio::task::spawn_blocking(move || {
            strata_dns::probe::answers(addr, Duration::from_secs(1))
        })
        .await
        .unwrap_or(false);
    }
    if let Some(addr) = role.addrs.get(strata_link::LISTENER) {
        // A relay serves while it accepts connections (what is behind it is its target's
        // health, shown on the target's own line).
        let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
            return false;
        };
        return tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
            .await
            .is_ok_and(|c| c.is_ok());
    }
    if let Some(addr) = role.addrs.get("etcd") {
        return control::http_json(addr, "/health", Duration::from_secs(1))
            .await
            .is_some_and(|h| h["health"] == "true");
    }
    let probes = [
        ("redis", strata_engines::redis::PROBE),
        ("memcached", strata_engines::memcached::PROBE),
        ("amqp", strata_engines::rabbitmq::PROBE),
    ];
    let Some((addr, probe)) = probes.iter().find_map(|(listener, probe)| {
        let addr: std::net::SocketAddr = role.addrs.get(*listener)?.parse().ok()?;
        Some((addr, *probe))
    }) else {
        return false;
    };
    tokio::task::spawn_blocking(move || probe.answers(addr))
        .await
        .unwrap_or(false)
}

impl Report {
    /// Whether the supervisor runs and says the deployment runs.
    pub fn running(&self) -> bool {
        self.state.running && self.supervisor_alive
    }
}
