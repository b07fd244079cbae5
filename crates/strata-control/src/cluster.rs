//! `DIR/postgres/cluster.json`: which PostgreSQL server of a deployment is the primary.
//!
//! Written by `strata control` (atomically: temp file + rename), read by every `strata
//! postgres` role when it starts and, while it runs as a primary, every 200 ms. The version
//! grows by one with every failover. A server named in `fenced` was a primary that lost its
//! place: its role stops it at once and brings it back only as a replica of the new primary
//! (pg_rewind), so no router can ever send it writes again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the PostgreSQL servers of a deployment keep their data: `DIR/postgres/<role>`, with
/// this file beside them.
pub const POSTGRES_DIR: &str = "postgres";

/// The file, under the deployment's PostgreSQL directory.
pub const CLUSTER_FILE: &str = "cluster.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Grows by one with every change of primary.
    pub version: u64,
    /// The role name of the primary (`pg-2`).
    pub primary: String,
    /// Every server: role name → `127.0.0.1:PORT`.
    pub nodes: BTreeMap<String, String>,
    /// Former primaries that must not serve as primaries again.
    #[serde(default)]
    pub fenced: Vec<String>,
}

impl ClusterState {
    /// The primary's address.
    pub fn primary_addr(&self) -> Option<&str> {
        self.nodes.get(&self.primary).map(String::as_str)
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

/// Writes the file atomically, readable by the `postgres` user.
pub fn write(postgres_dir: &Path, state: &ClusterState) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(postgres_dir)?;
    let path = path(postgres_dir);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, &path)
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
        let state = ClusterState {
            version: 2,
            primary: "pg-2".into(),
            nodes: [("pg-1", "127.0.0.1:5001"), ("pg-2", "127.0.0.1:5002")]
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            fenced: vec!["pg-1".into()],
        };
        write(dir.path(), &state).expect("write");
        let back = read(dir.path()).expect("read").expect("some");
        assert_eq!(back, state);
        assert_eq!(back.primary_addr(), Some("127.0.0.1:5002"));
        std::fs::write(path(dir.path()), "{").expect("garbage");
        assert!(read(dir.path()).is_err());
    }
}
