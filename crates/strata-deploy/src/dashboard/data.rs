//! The data tier's shape in the snapshot: each PostgreSQL cluster (the one cluster, or each
//! shard group's) with its primary and its replicas and how far behind each is, and each shard
//! group's slots and users. Read with [`crate::status::data_tier`] — what `strata status`
//! shows — every few seconds, off the scrape loop's path and within [`DATA_TIMEOUT`], so that
//! a slow database never holds a snapshot back.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;

use crate::present;
use crate::status::{DatabaseView, Report};

/// The longest one reading of the data tier may take.
pub const DATA_TIMEOUT: Duration = Duration::from_secs(4);
/// A replica this many bytes of WAL behind its primary is drawn as far behind.
pub const FAR_BEHIND: u64 = 16 * 1024 * 1024;
/// The slot ranges shown of each shard group (its count is always shown).
const SLOT_RANGES_SHOWN: usize = 4;

/// The data tier in a snapshot.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DataView {
    /// Each PostgreSQL cluster, in planned order.
    pub clusters: Vec<ClusterView>,
    /// The shard groups, when the data tier is sharded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardsView>,
    /// Why the view is older than it should be (the last reading failed or took too long).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One PostgreSQL cluster: a primary streaming to its replicas.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClusterView {
    /// Its shard group; none for the one cluster of an unsharded data tier.
    pub group: Option<String>,
    /// The server that answers as primary, if any does now.
    pub primary: Option<String>,
    pub replicas: Vec<ReplicaView>,
    /// Servers that do not answer (down, restarting, frozen), fenced ones aside.
    pub down: Vec<String>,
    /// Former primaries that a failover fenced, waiting for `strata db rejoin`.
    pub fenced: Vec<String>,
}

/// A replica and how far behind its primary it is.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplicaView {
    pub name: String,
    /// Bytes of WAL behind the primary.
    pub lag_bytes: u64,
    /// The lag as the page prints it ("0 B", "1.2 MiB").
    pub lag: String,
    /// At least [`FAR_BEHIND`] behind.
    pub far_behind: bool,
}

/// The shard map's groups.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShardsView {
    pub map_version: u64,
    pub groups: Vec<ShardGroupView>,
}

/// One shard group.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShardGroupView {
    pub group: String,
    pub slot_count: usize,
    /// Its first slot ranges (`0-1023`), at most [`SLOT_RANGES_SHOWN`].
    pub slots: Vec<String>,
    /// Whether it has more slot ranges than those shown.
    pub more_slots: bool,
    /// Users in its database, when it could be read.
    pub users: Option<u64>,
    pub pinned: usize,
    pub fences: usize,
}

/// A number of bytes as the page prints it: `0 B`, `512 B`, `1.2 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The data tier of `report` (from [`crate::status::data_tier`] or `collect`); none when it
/// has neither a PostgreSQL server nor shard groups.
pub fn view_of(report: &Report) -> Option<DataView> {
    let is_fenced = |name: &str| {
        report
            .roles
            .iter()
            .any(|r| r.role.name == name && r.database == Some(DatabaseView::Fenced))
    };
    let clusters: Vec<ClusterView> = present::database_clusters(report)
        .into_iter()
        .map(|g| {
            let (fenced, down) = g.other.into_iter().partition(|name| is_fenced(name));
            ClusterView {
                group: Some(g.group).filter(|g| !g.is_empty()),
                primary: g.primary,
                replicas: g
                    .replicas
                    .into_iter()
                    .map(|(name, lag_bytes)| ReplicaView {
                        name,
                        lag_bytes,
                        lag: human_bytes(lag_bytes),
                        far_behind: lag_bytes >= FAR_BEHIND,
                    })
                    .collect(),
                down,
                fenced,
            }
        })
        .collect();
    let shards = report.shards.as_ref().map(|(map, groups)| ShardsView {
        map_version: map.version(),
        groups: groups
            .iter()
            .map(|g| ShardGroupView {
                group: g.group.clone(),
                slot_count: g.slot_count,
                slots: g.slots.iter().take(SLOT_RANGES_SHOWN).cloned().collect(),
                more_slots: g.slots.len() > SLOT_RANGES_SHOWN,
                users: g.users,
                pinned: g.pinned,
                fences: g.fences,
            })
            .collect(),
    });
    (!clusters.is_empty() || shards.is_some()).then_some(DataView {
        clusters,
        shards,
        error: None,
    })
}

/// The data tier as last read, refreshed in the background.
pub struct DataTier {
    dir: PathBuf,
    latest: Arc<Mutex<Option<DataView>>>,
    reading: Option<JoinHandle<()>>,
}

impl DataTier {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            latest: Arc::new(Mutex::new(None)),
            reading: None,
        }
    }

    /// Starts one reading unless one is under way; it replaces the view when it ends, or
    /// after [`DATA_TIMEOUT`] keeps the last view with an error saying so.
    pub fn refresh(&mut self) {
        if self.reading.as_ref().is_some_and(|r| !r.is_finished()) {
            return;
        }
        let (dir, latest) = (self.dir.clone(), self.latest.clone());
        self.reading = Some(tokio::spawn(async move {
            let read = tokio::time::timeout(DATA_TIMEOUT, crate::status::data_tier(&dir)).await;
            let mut view = match latest.lock() {
                Ok(view) => view,
                Err(poisoned) => poisoned.into_inner(),
            };
            match read {
                Ok(Ok(report)) => *view = view_of(&report),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the data tier");
                    *view = None;
                }
                Err(_) => {
                    if let Some(view) = view.as_mut() {
                        view.error = Some(format!(
                            "the data tier did not answer within {} s; this is its last view",
                            DATA_TIMEOUT.as_secs()
                        ));
                    }
                }
            }
        }));
    }

    /// The latest view.
    pub fn view(&self) -> Option<DataView> {
        match self.latest.lock() {
            Ok(view) => view.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl Drop for DataTier {
    fn drop(&mut self) {
        if let Some(reading) = self.reading.take() {
            reading.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::RoleKind;
    use crate::state::{DeploymentState, RolePhase, RoleState};
    use crate::status::RoleReport;

    fn server(name: &str, database: Option<DatabaseView>) -> RoleReport {
        RoleReport {
            role: RoleState {
                name: name.into(),
                kind: RoleKind::Postgres,
                pid: Some(1),
                addrs: Default::default(),
                restarts: 0,
                state: RolePhase::Ready,
                last_error: None,
            },
            alive: database.is_some(),
            healthy: database.is_some(),
            database,
        }
    }

    fn report(roles: Vec<RoleReport>) -> Report {
        let state: DeploymentState = serde_json::from_value(serde_json::json!({
            "topology": "t", "supervisor_pid": 1, "running": true, "roles": []
        }))
        .expect("a state");
        Report {
            dir: PathBuf::from("/nonexistent"),
            state,
            supervisor_alive: true,
            roles,
            control: None,
            group_controls: Vec::new(),
            shards: None,
            path: None,
        }
    }

    fn replica(lag_bytes: u64) -> Option<DatabaseView> {
        Some(DatabaseView::Replica {
            lsn: "0/0".into(),
            lag_bytes,
        })
    }

    #[test]
    fn bytes_print_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1_258_291), "1.2 MiB");
        assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn the_one_cluster_has_its_primary_and_replicas_with_their_lag() {
        let primary = Some(DatabaseView::Primary { lsn: "0/0".into() });
        let view = view_of(&report(vec![
            server("pg-1", primary),
            server("pg-2", replica(0)),
            server("pg-3", replica(FAR_BEHIND + 1)),
            server("pg-4", None),
            server("pg-5", Some(DatabaseView::Fenced)),
        ]))
        .expect("a data tier");
        assert_eq!(view.clusters.len(), 1, "{view:?}");
        let c = &view.clusters[0];
        assert_eq!(c.group, None);
        assert_eq!(c.primary.as_deref(), Some("pg-1"));
        assert_eq!(c.replicas.len(), 2);
        assert_eq!(
            (c.replicas[0].name.as_str(), c.replicas[0].lag.as_str()),
            ("pg-2", "0 B")
        );
        assert!(!c.replicas[0].far_behind);
        assert_eq!(c.replicas[1].lag, "16.0 MiB");
        assert!(c.replicas[1].far_behind, "{c:?}");
        assert_eq!(c.down, ["pg-4"]);
        assert_eq!(c.fenced, ["pg-5"]);
        let json = serde_json::to_value(&view).expect("JSON");
        assert_eq!(json["clusters"][0]["replicas"][0]["lag_bytes"], 0);
        assert!(json.get("shards").is_none(), "{json}");
    }

    #[test]
    fn shard_groups_are_clusters_of_their_own() {
        let primary = || Some(DatabaseView::Primary { lsn: "0/0".into() });
        let view = view_of(&report(vec![
            server("pg-s1-1", primary()),
            server("pg-s1-2", replica(2048)),
            server("pg-s2-1", None),
            server("pg-s2-2", primary()),
        ]))
        .expect("a data tier");
        let groups: Vec<_> = view
            .clusters
            .iter()
            .map(|c| (c.group.as_deref(), c.primary.as_deref(), c.replicas.len()))
            .collect();
        assert_eq!(
            groups,
            [
                (Some("s1"), Some("pg-s1-1"), 1),
                (Some("s2"), Some("pg-s2-2"), 0)
            ]
        );
        assert_eq!(view.clusters[0].replicas[0].lag, "2.0 KiB");
        assert_eq!(view.clusters[1].down, ["pg-s2-1"]);
    }

    #[test]
    fn each_shard_group_shows_its_slots_and_users() {
        use strata_store::embedded_shards::GroupView;
        use strata_store::shard::{ShardGroup, ShardMap, Strategy};
        let names = ["s1", "s2"].map(|g| ShardGroup::parse(g).expect("a group name"));
        let map = ShardMap::even(Strategy::Hash, names.to_vec()).expect("a map");
        let groups = vec![
            GroupView::of(&map, &names[0], Some(12), 0, PathBuf::from("s1.db")),
            GroupView::of(&map, &names[1], None, 1, PathBuf::from("s2.db")),
        ];
        let mut r = report(Vec::new());
        r.shards = Some((map, groups));
        let view = view_of(&r).expect("a data tier");
        assert!(view.clusters.is_empty(), "SQLite groups: {view:?}");
        let shards = view.shards.expect("shards");
        assert_eq!(shards.map_version, 1);
        let (s1, s2) = (&shards.groups[0], &shards.groups[1]);
        assert_eq!((s1.group.as_str(), s1.users), ("s1", Some(12)));
        assert_eq!(s2.users, None);
        assert_eq!(s2.fences, 1);
        assert!(s1.slot_count > 0 && s1.slot_count + s2.slot_count > s1.slot_count);
        assert_eq!(s1.slots.len(), 1, "one contiguous range: {s1:?}");
        assert!(!s1.more_slots);
    }

    #[test]
    fn no_database_and_no_shards_is_no_data_tier() {
        assert_eq!(view_of(&report(Vec::new())), None);
    }
}
