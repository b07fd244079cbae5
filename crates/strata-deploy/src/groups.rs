//! PostgreSQL shard groups in a deployment made by `strata up`. Each group is a replicated
//! cluster of its own: servers `pg-<group>-1` (the first primary), `pg-<group>-2` … under
//! `DIR/postgres/<group>/`, controllers `control-<group>-1` … watching only them, and its
//! cluster state in that directory (or under `PREFIX/<group>` in etcd), so one group's
//! failover never touches another. An unsharded deployment keeps its plain names (`pg-1`,
//! `control-1`) and `DIR/postgres/`.
//!
//! Names and places are derived here once, for the plan, `strata status`, `strata db rejoin`,
//! the drills, and the operator commands that find the groups' databases from a running
//! deployment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use strata_control::cluster::POSTGRES_DIR;

use crate::roles::RoleKind;
use crate::state::DeploymentState;

/// The name of server `i` (1-based) of `group`, or of the one cluster.
pub fn server_name(group: Option<&str>, i: usize) -> String {
    match group {
        Some(g) => format!("pg-{g}-{i}"),
        None => format!("pg-{i}"),
    }
}

/// The name of controller `i` (1-based) of `group`, or of the one cluster.
pub fn controller_name(group: Option<&str>, i: usize) -> String {
    match group {
        Some(g) => format!("control-{g}-{i}"),
        None => format!("control-{i}"),
    }
}

/// The shard group a database server or controller belongs to: `pg-s1-2` and `control-s1-1`
/// are in `s1`; `pg-2` and `control-1` in none (the one cluster).
pub fn group_of(role: &str) -> Option<&str> {
    let rest = role
        .strip_prefix("pg-")
        .or_else(|| role.strip_prefix("control-"))?;
    let (group, index) = rest.rsplit_once('-')?;
    (!group.is_empty() && !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
        .then_some(group)
}

/// The PostgreSQL directory of the cluster `role` belongs to: `DIR/postgres` or
/// `DIR/postgres/<group>` (where its cluster state, rejoin requests and servers' data live).
pub fn postgres_dir(dir: &Path, role: &str) -> PathBuf {
    let base = dir.join(POSTGRES_DIR);
    match group_of(role) {
        Some(g) => base.join(g),
        None => base,
    }
}

/// The URL API servers use for one cluster's servers: the primary through every server with
/// `target_session_attrs=read-write` (so after a failover a new connection finds the new
/// primary by itself), and each server as a possible replica (only those in recovery serve
/// reads).
pub fn postgres_urls(nodes: &[SocketAddr]) -> (String, Vec<String>) {
    use strata_engines::postgres::{DATABASE, SUPERUSER};
    let hosts: Vec<String> = nodes.iter().map(ToString::to_string).collect();
    let primary = format!(
        "postgresql://{SUPERUSER}@{}/{DATABASE}?target_session_attrs=read-write",
        hosts.join(",")
    );
    let replicas = hosts
        .iter()
        .map(|a| format!("postgresql://{SUPERUSER}@{a}/{DATABASE}"))
        .collect();
    (primary, replicas)
}

/// The shard groups of a running deployment as `NAME=URL` pairs (what `--postgres-shard`
/// takes), in the order `strata up` planned them (the first `shards` hold slots at first):
/// empty when it runs no PostgreSQL shard groups.
pub fn group_urls(state: &DeploymentState) -> Vec<String> {
    let mut groups: Vec<(String, Vec<SocketAddr>)> = Vec::new();
    for r in &state.roles {
        if r.kind != RoleKind::Postgres {
            continue;
        }
        let (Some(group), Some(addr)) = (
            group_of(&r.name),
            r.addrs.get("postgres").and_then(|a| a.parse().ok()),
        ) else {
            continue;
        };
        match groups.iter_mut().find(|(g, _)| g == group) {
            Some((_, nodes)) => nodes.push(addr),
            None => groups.push((group.to_string(), vec![addr])),
        }
    }
    groups
        .into_iter()
        .map(|(g, nodes)| format!("{g}={}", postgres_urls(&nodes).0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_name_their_group_and_the_one_cluster_names_none() {
        assert_eq!(server_name(Some("s1"), 2), "pg-s1-2");
        assert_eq!(controller_name(Some("s12"), 1), "control-s12-1");
        assert_eq!(group_of("pg-s1-2"), Some("s1"));
        assert_eq!(group_of("control-s12-3"), Some("s12"));
        for plain in [
            "pg-1",
            "pg-12",
            "control-1",
            "api-1",
            "pg-",
            "pg-s1-",
            "pg--1",
            "lb-1",
        ] {
            assert_eq!(group_of(plain), None, "{plain}");
        }
        let dir = Path::new("/d");
        assert_eq!(postgres_dir(dir, "pg-s2-1"), Path::new("/d/postgres/s2"));
        assert_eq!(postgres_dir(dir, "pg-2"), Path::new("/d/postgres"));
    }

    #[test]
    fn a_running_deployment_gives_each_group_one_url_through_all_its_servers() {
        let role = |name: &str, kind, addr: &str| crate::state::RoleState {
            name: name.into(),
            kind,
            pid: None,
            addrs: [("postgres".to_string(), addr.to_string())].into(),
            restarts: 0,
            state: crate::state::RolePhase::Ready,
            last_error: None,
        };
        let state = DeploymentState {
            topology: "t".into(),
            shard_map: None,
            supervisor_pid: 1,
            running: true,
            roles: vec![
                role("pg-s1-1", RoleKind::Postgres, "127.0.0.1:1"),
                role("pg-s1-2", RoleKind::Postgres, "127.0.0.1:2"),
                role("pg-s2-1", RoleKind::Postgres, "127.0.0.1:3"),
                role("api-1", RoleKind::Api, "127.0.0.1:4"),
            ],
        };
        assert_eq!(
            group_urls(&state),
            [
                "s1=postgresql://strata@127.0.0.1:1,127.0.0.1:2/strata?target_session_attrs=read-write",
                "s2=postgresql://strata@127.0.0.1:3/strata?target_session_attrs=read-write",
            ]
        );
        let unsharded = DeploymentState {
            roles: vec![role("pg-1", RoleKind::Postgres, "127.0.0.1:1")],
            ..state
        };
        assert!(group_urls(&unsharded).is_empty());
    }
}
