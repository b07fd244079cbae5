//! `DIR/state.json`: what a running deployment looks like, for `status`, `down` and `logs` in
//! other terminals. The supervisor rewrites it atomically (temp file + rename) on every change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::roles::{RoleCommand, RoleKind};

pub const STATE_FILE: &str = "state.json";
pub const LOG_DIR: &str = "logs";
pub const DATA_DIR: &str = "data";

/// Where a role instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolePhase {
    Starting,
    Ready,
    Restarting,
    /// Crashed too often; the supervisor gave up on it.
    Failed,
    Stopped,
}

impl RolePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            RolePhase::Starting => "starting",
            RolePhase::Ready => "ready",
            RolePhase::Restarting => "restarting",
            RolePhase::Failed => "failed",
            RolePhase::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleState {
    pub name: String,
    pub kind: RoleKind,
    pub pid: Option<u32>,
    /// Listener name → `ip:port`.
    pub addrs: BTreeMap<String, String>,
    pub restarts: u32,
    pub state: RolePhase,
    /// Why the role is failed or restarting, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentState {
    pub topology: String,
    pub supervisor_pid: u32,
    /// True while the supervisor runs; false once it has stopped everything.
    pub running: bool,
    pub roles: Vec<RoleState>,
    /// Where the shard map of the deployment's PostgreSQL groups is published when it is not
    /// the file in DIR/data (`[control] store = "etcd"`: the control plane's etcd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_map: Option<ShardMapInEtcd>,
}

/// The shard map in the control plane's etcd: the key `PREFIX/shard-map`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMapInEtcd {
    /// The members' client endpoints when the etcd is one's own (`[control] etcd`); empty:
    /// the deployment's etcd roles, at the addresses they announced.
    #[serde(default)]
    pub endpoints: Vec<String>,
    pub prefix: String,
}

impl DeploymentState {
    pub fn all_ready(&self) -> bool {
        self.roles.iter().all(|r| r.state == RolePhase::Ready)
    }

    /// Where a load generator sends requests: the HTTP address of the first balancer (`lb-1`,
    /// or with data centres the first data centre's first, `us-east-lb-1`), else of the first
    /// API server — in plan order, which the state keeps.
    pub fn http_entry(&self) -> Option<String> {
        [RoleKind::Lb, RoleKind::Api].iter().find_map(|kind| {
            self.roles
                .iter()
                .filter(|r| r.kind == *kind)
                .find_map(|r| r.addrs.get("http").cloned())
        })
    }
}

pub fn state_path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

pub fn log_dir(dir: &Path) -> PathBuf {
    dir.join(LOG_DIR)
}

/// The error of a command that needs a deployment where there is none.
pub fn no_deployment(dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "no deployment in {}: start one with `strata up -d --dir {}`",
        dir.display(),
        dir.display()
    )
}

/// Reads the state file; `Ok(None)` when there is none.
pub fn read(dir: &Path) -> anyhow::Result<Option<DeploymentState>> {
    let path = state_path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a strata state file ({e}); remove it if no deployment runs there",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// The admin addresses of the edges of the deployment in `dir`, in the order `strata up`
/// started them (the shield first, so the edges in front of it cannot refill from it).
pub fn edge_admins(dir: &std::path::Path) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    let state = read(dir)?.ok_or_else(|| no_deployment(dir))?;
    let mut admins = Vec::new();
    for role in state.roles.iter().filter(|r| r.kind == RoleKind::Edge) {
        let addr = role.addrs.get("admin").ok_or_else(|| {
            anyhow::anyhow!(
                "{} has no admin address yet (it is {}): see `strata status --dir {}`",
                role.name,
                role.state.as_str(),
                dir.display()
            )
        })?;
        admins.push(addr.parse().map_err(|e| {
            anyhow::anyhow!("{}'s admin address {addr:?} is not ip:port: {e}", role.name)
        })?);
    }
    anyhow::ensure!(
        !admins.is_empty(),
        "the deployment in {} runs no edge: add an [edge] table to its topology",
        dir.display()
    );
    Ok(admins)
}

/// A role command as the deployment in a directory completes it: `strata edge purge --dir DIR`
/// gets the admin addresses of that deployment's edges ([`edge_admins`]); any other command is
/// returned as it is.
pub fn completed(mut command: RoleCommand) -> anyhow::Result<RoleCommand> {
    if let RoleCommand::Edge(edge) = &mut command
        && let Some(strata_edge::role::EdgeAction::Purge(purge)) = &mut edge.action
        && let Some(dir) = &purge.dir
    {
        purge.admins = edge_admins(dir)?;
    }
    Ok(command)
}

/// Writes the state file atomically.
/// Prometheus's directory under a deployment's (`[observe] prometheus = true`): its
/// configuration, rules, targets file and TSDB.
pub const PROMETHEUS_DIR: &str = "prometheus";

/// Writes the state file atomically; with Prometheus in the deployment, its targets file too,
/// so it scrapes every role where the role is now.
pub fn write(dir: &Path, state: &DeploymentState) -> std::io::Result<()> {
    let path = state_path(dir);
    let tmp = dir.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
    let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, &path)?;
    let prometheus = dir.join(PROMETHEUS_DIR);
    if prometheus.is_dir() {
        let targets = strata_observe::PrometheusArgs::new(prometheus).targets_path();
        strata_observe::scrape::write_targets(&targets, &metrics_targets(state))
            .map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// Where each role serves `/metrics`, for Prometheus (`strata status --prometheus-targets`
/// prints the same for a Prometheus of one's own): API servers on their HTTP port, balancers
/// and edges on their admin port, workers on their metrics port, Prometheus and Alertmanager
/// on their own.
pub fn metrics_targets(state: &DeploymentState) -> Vec<strata_observe::scrape::Target> {
    state
        .roles
        .iter()
        .filter_map(|r| {
            let listener = match r.kind {
                RoleKind::Api | RoleKind::Prometheus | RoleKind::Alertmanager => "http",
                RoleKind::Lb | RoleKind::Edge => "admin",
                RoleKind::Worker => "metrics",
                _ => return None,
            };
            Some(strata_observe::scrape::Target {
                role: r.name.clone(),
                kind: r.kind.as_str().to_string(),
                addr: r.addrs.get(listener)?.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_round_trips_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()).expect("read"), None);
        let state = DeploymentState {
            topology: "t".into(),
            shard_map: None,
            supervisor_pid: 7,
            running: true,
            roles: vec![RoleState {
                name: "api-1".into(),
                kind: RoleKind::Api,
                pid: Some(9),
                addrs: BTreeMap::from([("http".into(), "127.0.0.1:1".into())]),
                restarts: 0,
                state: RolePhase::Ready,
                last_error: None,
            }],
        };
        write(dir.path(), &state).expect("write");
        assert_eq!(read(dir.path()).expect("read"), Some(state));
        std::fs::write(state_path(dir.path()), b"garbage").expect("write");
        assert!(read(dir.path()).is_err());
    }

    #[test]
    fn the_entry_is_the_first_balancer_else_the_first_api_server() {
        let role = |name: &str, kind, port: u16| RoleState {
            name: name.into(),
            kind,
            pid: Some(1),
            addrs: BTreeMap::from([("http".into(), format!("127.0.0.1:{port}"))]),
            restarts: 0,
            state: RolePhase::Ready,
            last_error: None,
        };
        let mut state = DeploymentState {
            topology: "t".into(),
            shard_map: None,
            supervisor_pid: 7,
            running: true,
            roles: vec![
                role("us-east-api-1", RoleKind::Api, 1),
                role("us-east-lb-1", RoleKind::Lb, 2),
                role("us-west-lb-1", RoleKind::Lb, 3),
            ],
        };
        assert_eq!(state.http_entry().as_deref(), Some("127.0.0.1:2"));
        state.roles.retain(|r| r.kind == RoleKind::Api);
        assert_eq!(state.http_entry().as_deref(), Some("127.0.0.1:1"));
        state.roles.clear();
        assert_eq!(state.http_entry(), None);
    }
}
