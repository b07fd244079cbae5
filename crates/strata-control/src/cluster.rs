//! The cluster state: which PostgreSQL server of a deployment is the primary, which are
//! fenced or must rewind, which standbys the primary's synchronous quorum names, and the
//! failover in progress, if any. Published by `strata control` (the only writer), obeyed by
//! every `strata postgres` role.
//!
//! Every published change has a version one above the last. A server named in `fenced` was a
//! primary that lost its place: its role stops it at once and brings it back only as a replica
//! of the new primary (pg_rewind). A failover is published in two steps, so that a controller
//! restarted in between finishes the decision it finds instead of making another:
//! 1. `failover = { from, to: None }`, `primary = None`, the old primary fenced — no server may
//!    take writes, and the controller waits until enough standbys answer to elect safely;
//! 2. `to = Some(winner)`, `primary = Some(winner)` — the election is made; promotion, the
//!    quorum and re-pointing follow, then `failover = None`.
//!
//! In a file (`DIR/postgres/cluster.json`, written atomically and fsynced, file and directory)
//! on one machine; see [`crate::store`] for the stores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the PostgreSQL servers of a deployment keep their data: `DIR/postgres/<role>`, with
/// the cluster file beside them.
pub const POSTGRES_DIR: &str = "postgres";

/// The file, under the deployment's PostgreSQL directory.
pub const CLUSTER_FILE: &str = "cluster.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Grows by one with every published change.
    pub version: u64,
    /// The role name of the primary (`pg-2`); `None` while a failover waits for a standby it
    /// can safely promote — then no server may take writes.
    pub primary: Option<String>,
    /// Every server: role name → `127.0.0.1:PORT`.
    pub nodes: BTreeMap<String, String>,
    /// Former primaries that must not serve as primaries again (until they have rewound and
    /// stream from the primary).
    #[serde(default)]
    pub fenced: Vec<String>,
    /// Replicas that may hold WAL the primary never had (they were ahead of it, or out of
    /// reach, when it was elected): they rewind (pg_rewind) before they follow it.
    #[serde(default)]
    pub rewind: Vec<String>,
    /// The standbys the primary's `synchronous_standby_names` names (`ANY 1 (…)` under quorum
    /// commit; empty under asynchronous commit). An election must hear from all but one of them.
    #[serde(default)]
    pub sync: Vec<String>,
    /// The failover in progress.
    #[serde(default)]
    pub failover: Option<Failover>,
}

/// A failover in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failover {
    /// The primary that was lost (fenced when the failover began).
    pub from: String,
    /// The standby elected to take its place, once one is. From then on the failover only
    /// completes; it never elects again.
    pub to: Option<String>,
    /// When the failover began, in milliseconds since the Unix epoch.
    pub started_ms: u64,
}

impl ClusterState {
    /// The first state of a cluster whose primary is `primary`, its other servers all in the
    /// synchronous quorum when `quorum`.
    pub fn first(primary: &str, nodes: BTreeMap<String, String>, quorum: bool) -> Self {
        let sync = if quorum {
            nodes.keys().filter(|n| *n != primary).cloned().collect()
        } else {
            Vec::new()
        };
        Self {
            version: 1,
            primary: Some(primary.to_string()),
            nodes,
            fenced: Vec::new(),
            rewind: Vec::new(),
            sync,
            failover: None,
        }
    }

    /// The primary's address.
    pub fn primary_addr(&self) -> Option<&str> {
        self.primary
            .as_ref()
            .and_then(|p| self.nodes.get(p))
            .map(String::as_str)
    }

    /// Whether `name` is the primary and may take writes.
    pub fn is_primary(&self, name: &str) -> bool {
        self.primary.as_deref() == Some(name) && !self.fenced.iter().any(|f| f == name)
    }

    /// Whether `name` was fenced by a failover.
    pub fn is_fenced(&self, name: &str) -> bool {
        self.fenced.iter().any(|f| f == name)
    }

    /// Whether `name` must rewind before it follows the primary.
    pub fn must_rewind(&self, name: &str) -> bool {
        self.rewind.iter().any(|f| f == name)
    }

    /// The next version of this state, changed by `f`.
    pub fn next(&self, f: impl FnOnce(&mut ClusterState)) -> ClusterState {
        let mut next = self.clone();
        f(&mut next);
        next.version = self.version + 1;
        next
    }
}

/// The physical replication slot that the primary keeps for a server (`pg-2` → `pg_2`: slot
/// names are lower-case letters, digits and underscores).
pub fn slot_name(role: &str) -> String {
    role.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `DIR/postgres/cluster.json` given the PostgreSQL directory (`DIR/postgres`).
pub fn path(postgres_dir: &Path) -> PathBuf {
    postgres_dir.join(CLUSTER_FILE)
}

/// The file `strata db rejoin NODE` creates to ask a fenced former primary, waiting under
/// `rejoin = "manual"`, to rewind and follow the new primary.
pub fn rejoin_request_path(postgres_dir: &Path, role: &str) -> PathBuf {
    postgres_dir.join(format!("{role}.rejoin"))
}

/// The file a fenced former primary keeps while it waits for `strata db rejoin` (so that
/// `strata status` can say so).
pub fn awaiting_rejoin_path(postgres_dir: &Path, role: &str) -> PathBuf {
    postgres_dir.join(format!("{role}.awaiting-rejoin"))
}

/// Reads the file; `Ok(None)` when there is none yet.
pub fn read(postgres_dir: &Path) -> anyhow::Result<Option<ClusterState>> {
    let path = path(postgres_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{} is not a cluster state: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Writes the file atomically and durably, readable by the `postgres` user: a temporary file
/// written and fsynced, renamed over the old one, and the directory fsynced — so after a crash
/// the file holds the old state or the new one, whole, and a published change survives.
pub fn write(postgres_dir: &Path, state: &ClusterState) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(postgres_dir)?;
    let path = path(postgres_dir);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&text)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(postgres_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_safe_identifiers() {
        assert_eq!(slot_name("pg-2"), "pg_2");
        assert_eq!(slot_name("PG.3"), "pg_3");
    }

    #[test]
    fn a_cluster_state_round_trips_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read(dir.path()).expect("read").is_none());
        let nodes = [("pg-1", "127.0.0.1:5001"), ("pg-2", "127.0.0.1:5002")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let first = ClusterState::first("pg-1", nodes, true);
        assert_eq!(first.sync, ["pg-2"]);
        let state = first.next(|s| {
            s.primary = Some("pg-2".into());
            s.fenced = vec!["pg-1".into()];
        });
        assert_eq!(state.version, 2);
        write(dir.path(), &state).expect("write");
        let back = read(dir.path()).expect("read").expect("some");
        assert_eq!(back, state);
        assert_eq!(back.primary_addr(), Some("127.0.0.1:5002"));
        assert!(back.is_primary("pg-2") && !back.is_primary("pg-1") && back.is_fenced("pg-1"));
        // A state written before the failover fields existed still reads.
        std::fs::write(
            path(dir.path()),
            r#"{"version":3,"primary":"pg-1","nodes":{"pg-1":"127.0.0.1:1"},"fenced":[]}"#,
        )
        .expect("write");
        let old = read(dir.path()).expect("read").expect("some");
        assert_eq!((old.primary.as_deref(), old.failover), (Some("pg-1"), None));
        std::fs::write(path(dir.path()), "{").expect("garbage");
        assert!(read(dir.path()).is_err());
    }
}
