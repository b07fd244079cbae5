//! What people read: the endpoints table `strata up` prints once every role is ready, and
//! `strata status` as a table or as JSON (whose shape scripts rely on).

use serde_json::{Value, json};
use strata_engines::postgres::{DATABASE, SUPERUSER};
use strata_store::embedded_shards::GroupView;
use strata_store::shard::{ShardMap, Strategy};

use crate::roles::RoleKind;
use crate::state::DeploymentState;
use crate::status::{DatabaseView, Report};

/// Left-aligned columns separated by two spaces.
pub fn format_rows<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The endpoints table printed once a deployment is ready.
pub fn endpoints_table(state: &DeploymentState) -> String {
    let mut rows = vec![["ROLE", "KIND", "PID", "STATE", "ENDPOINT"].map(String::from)];
    for r in &state.roles {
        let endpoint = match (r.addrs.get("http"), r.addrs.get("postgres")) {
            (Some(a), _) if r.kind == RoleKind::Control => format!("http://{a}/cluster"),
            (Some(a), _) if r.kind == RoleKind::Dashboard => format!("http://{a}/"),
            (Some(a), _) => format!("http://{a}/users/12"),
            (None, Some(a)) => format!("postgresql://{SUPERUSER}@{a}/{DATABASE}"),
            // The broker admits `guest` from loopback only: the URL `strata queue --url` takes.
            (None, None) if r.kind == RoleKind::Broker => r
                .addrs
                .get(strata_queue::broker::LISTENER)
                .map(|a| {
                    a.parse()
                        .map_or_else(|_| a.clone(), strata_queue::broker::url_of)
                })
                .unwrap_or_default(),
            (None, None) if r.kind == RoleKind::ObjectStore => r
                .addrs
                .get(strata_blobs::node::LISTENER)
                .map(|a| format!("http://{a}"))
                .unwrap_or_default(),
            (None, None) => r.addrs.values().cloned().collect::<Vec<_>>().join(" "),
        };
        let endpoint = if endpoint.is_empty() {
            "-".into()
        } else {
            endpoint
        };
        rows.push([
            r.name.clone(),
            r.kind.as_str().into(),
            r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            r.state.as_str().into(),
            endpoint,
        ]);
    }
    let mut out = format_rows(&rows);
    out.push_str(&dashboard_line(state));
    out
}

/// Where a deployment's live dashboard answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DashboardUrls {
    /// On its own port (loopback).
    pub own: Option<String>,
    /// Under `/dashboard/` of each edge clients reach, the public entry's first: `strata up`
    /// routes that prefix to the dashboard on every edge but the shield.
    pub public: Vec<String>,
}

/// Where the live dashboard of `state` answers, when the deployment runs one.
pub fn dashboard_urls(state: &DeploymentState) -> Option<DashboardUrls> {
    let dashboard = state.roles.iter().find(|r| r.kind == RoleKind::Dashboard)?;
    let public = state
        .roles
        .iter()
        .filter(|r| r.kind == RoleKind::Edge && r.name != crate::plan::edge::SHIELD)
        .filter_map(|r| r.addrs.get("http"))
        .map(|a| format!("http://{a}{}", crate::plan::edge::DASHBOARD_PREFIX))
        .collect();
    Some(DashboardUrls {
        own: dashboard.addrs.get("http").map(|a| format!("http://{a}/")),
        public,
    })
}

/// `the dashboard on the public entry: http://…/dashboard/ (and on every edge)`, when the
/// edges serve it; else nothing.
fn dashboard_line(state: &DeploymentState) -> String {
    let Some(urls) = dashboard_urls(state) else {
        return String::new();
    };
    match urls.public.split_first() {
        None => String::new(),
        Some((first, [])) => format!("the dashboard on the public entry: {first}\n"),
        Some((first, _)) => format!(
            "the dashboard on the public entry: {first} (and /dashboard/ of every other edge)\n"
        ),
    }
}

/// `strata status` as a table, with the reasons of failed or restarting roles below it.
pub fn status_table(report: &Report) -> String {
    let mut out = format!(
        "deployment {:?} in {}: supervisor pid {} {}\n",
        report.state.topology,
        report.dir.display(),
        report.state.supervisor_pid,
        if report.running() {
            "running"
        } else {
            "not running"
        }
    );
    let mut rows = vec![
        [
            "ROLE", "KIND", "PID", "STATE", "HEALTH", "RESTARTS", "ADDRESS",
        ]
        .map(String::from),
    ];
    for r in &report.roles {
        let role = &r.role;
        let addrs = role.addrs.values().cloned().collect::<Vec<_>>().join(" ");
        rows.push([
            role.name.clone(),
            role.kind.as_str().into(),
            role.pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            role.state.as_str().into(),
            match (r.alive, r.healthy) {
                (true, true) => "healthy".into(),
                (true, false) => "unhealthy".into(),
                _ => "down".into(),
            },
            role.restarts.to_string(),
            match &r.database {
                Some(DatabaseView::Replica { lsn, lag_bytes }) => {
                    format!("{addrs}  replica at {lsn}, {lag_bytes} B behind")
                }
                Some(DatabaseView::Primary { lsn }) => format!("{addrs}  primary at {lsn}"),
                Some(DatabaseView::Fenced) => format!(
                    "{addrs}  fenced: stopped until `strata db rejoin {}`",
                    role.name
                ),
                None => addrs,
            },
        ]);
    }
    out.push_str(&format_rows(&rows));
    out.push_str(&dashboard_line(&report.state));
    if let Some(path) = &report.path {
        out.push('\n');
        out.push_str(&path.text());
    }
    if let Some((map, groups)) = &report.shards {
        // PostgreSQL groups run by `strata up`: each group's servers where it is.
        let servers = database_groups(report);
        let mut groups = groups.clone();
        for g in &mut groups {
            if let Some(s) = servers.iter().find(|s| s.group == g.group) {
                g.file = s.describe().into();
            }
        }
        out.push('\n');
        out.push_str(&shards_table(map, &groups));
    }
    for r in &report.roles {
        if let Some(e) = &r.role.last_error {
            out.push_str(&format!("{}: {e}\n", r.role.name));
        }
    }
    for note in report.notes() {
        out.push_str(&note);
        out.push('\n');
    }
    out
}

/// The shard map and its groups, as `strata status` and `strata shard show` print them.
pub fn shards_table(map: &ShardMap, groups: &[GroupView]) -> String {
    let strategy = match map.strategy() {
        Strategy::Hash => "hash".to_string(),
        Strategy::Range => "range".to_string(),
        Strategy::Modulo(n) => format!("modulo({n})"),
    };
    let mut out = format!(
        "shard map version {} ({strategy} strategy, {} pinned users):\n",
        map.version(),
        map.pins().len()
    );
    let mut rows =
        vec![["GROUP", "SLOTS", "USERS", "PINNED", "FENCES", "DATABASE"].map(String::from)];
    for g in groups {
        let mut slots = g
            .slots
            .iter()
            .take(4)
            .cloned()
            .collect::<Vec<_>>()
            .join(",");
        if g.slots.len() > 4 {
            slots.push_str(",…");
        }
        rows.push([
            g.group.clone(),
            format!("{slots} ({})", g.slot_count),
            g.users.map_or_else(|| "?".into(), |n| n.to_string()),
            g.pinned.to_string(),
            g.fences.to_string(),
            g.file.display().to_string(),
        ]);
    }
    out.push_str(&format_rows(&rows));
    out
}

/// One PostgreSQL cluster's servers as `strata status` shows them.
pub struct GroupServers {
    /// The shard group; empty for the one cluster of an unsharded data tier.
    pub group: String,
    /// The server that answers as primary, if any does now.
    pub primary: Option<String>,
    /// Each replica and its lag in bytes of WAL.
    pub replicas: Vec<(String, u64)>,
    /// Servers that do not answer (down, restarting, fenced).
    pub other: Vec<String>,
}

impl GroupServers {
    fn describe(&self) -> String {
        let mut parts = vec![match &self.primary {
            Some(p) => format!("primary {p}"),
            None => "no primary".to_string(),
        }];
        parts.extend(
            self.replicas
                .iter()
                .map(|(r, lag)| format!("replica {r} ({lag} B behind)")),
        );
        parts.extend(self.other.iter().map(|o| format!("{o} down")));
        parts.join(", ")
    }
}

/// The servers of each PostgreSQL shard group of the report, in planned order.
pub fn database_groups(report: &Report) -> Vec<GroupServers> {
    database_clusters(report)
        .into_iter()
        .filter(|g| !g.group.is_empty())
        .collect()
}

/// The servers of each PostgreSQL cluster of the report, in planned order: the one cluster
/// (its `group` empty) or each shard group.
pub fn database_clusters(report: &Report) -> Vec<GroupServers> {
    let mut groups: Vec<GroupServers> = Vec::new();
    for r in &report.roles {
        if r.role.kind != RoleKind::Postgres {
            continue;
        }
        let group = crate::groups::group_of(&r.role.name).unwrap_or("");
        let at = match groups.iter().position(|g| g.group == group) {
            Some(at) => at,
            None => {
                groups.push(GroupServers {
                    group: group.to_string(),
                    primary: None,
                    replicas: Vec::new(),
                    other: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[at];
        let name = r.role.name.clone();
        match &r.database {
            Some(DatabaseView::Primary { .. }) => g.primary = Some(name),
            Some(DatabaseView::Replica { lag_bytes, .. }) => g.replicas.push((name, *lag_bytes)),
            _ => g.other.push(name),
        }
    }
    groups
}

/// `strata status --json`.
pub fn status_json(report: &Report) -> Value {
    json!({
        "topology": report.state.topology,
        "dir": report.dir,
        "supervisor": {"pid": report.state.supervisor_pid, "alive": report.supervisor_alive},
        "running": report.running(),
        "control": report.control,
        "shards": report.shards.as_ref().map(|(map, groups)| json!({"map": map, "groups": groups})),
        "databaseGroups": database_groups(report).iter().map(|g| json!({
            "group": g.group, "primary": g.primary,
            "replicas": g.replicas.iter().map(|(name, lag)| json!({"name": name, "lagBytes": lag})).collect::<Vec<_>>(),
            "down": g.other,
        })).collect::<Vec<_>>(),
        "notes": report.notes(),
        "dashboard": dashboard_urls(&report.state),
        "path": report.path.as_ref().map(crate::layers::LayeredPath::json),
        "roles": report.roles.iter().map(|r| {
            let role = &r.role;
            json!({
                "name": role.name, "kind": role.kind, "pid": role.pid, "alive": r.alive,
                "healthy": r.healthy, "addrs": role.addrs, "restarts": role.restarts,
                "state": role.state, "lastError": role.last_error,
                "database": r.database.as_ref().map(|d| match d {
                    DatabaseView::Primary { lsn } => json!({"role": "primary", "lsn": lsn, "lagBytes": 0}),
                    DatabaseView::Replica { lsn, lag_bytes } => json!({"role": "replica", "lsn": lsn, "lagBytes": lag_bytes}),
                    DatabaseView::Fenced => json!({"role": "fenced", "awaitingRejoin": true}),
                }),
            })
        }).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{RolePhase, RoleState};

    fn role(name: &str, kind: RoleKind, http: &str) -> RoleState {
        RoleState {
            name: name.into(),
            kind,
            pid: Some(1),
            addrs: [("http".to_string(), http.to_string())].into(),
            restarts: 0,
            state: RolePhase::Ready,
            last_error: None,
        }
    }

    #[test]
    fn the_dashboard_is_named_on_the_public_entry_when_edges_route_it() {
        let mut state = DeploymentState {
            topology: "t".into(),
            supervisor_pid: 1,
            running: true,
            roles: vec![
                role("dashboard-1", RoleKind::Dashboard, "127.0.0.1:9000"),
                role("edge-shield", RoleKind::Edge, "127.0.0.1:9001"),
                role("edge-1", RoleKind::Edge, "127.0.0.1:8080"),
                role("edge-2", RoleKind::Edge, "127.0.0.1:9002"),
            ],
            shard_map: None,
        };
        let urls = dashboard_urls(&state).expect("a dashboard");
        assert_eq!(urls.own.as_deref(), Some("http://127.0.0.1:9000/"));
        assert_eq!(
            urls.public,
            [
                "http://127.0.0.1:8080/dashboard/",
                "http://127.0.0.1:9002/dashboard/"
            ]
        );
        assert!(
            endpoints_table(&state).ends_with(
                "the dashboard on the public entry: http://127.0.0.1:8080/dashboard/ (and \
                 /dashboard/ of every other edge)\n"
            ),
            "{}",
            endpoints_table(&state)
        );
        state.roles.retain(|r| r.kind != RoleKind::Edge);
        assert!(
            dashboard_urls(&state)
                .expect("a dashboard")
                .public
                .is_empty()
        );
        assert!(!endpoints_table(&state).contains("public entry"));
        state.roles.clear();
        assert_eq!(dashboard_urls(&state), None);
    }
}
