//! `strata db rejoin NODE`: an operator action on the PostgreSQL servers of a deployment that
//! `strata up` runs. It brings a former primary that a failover fenced back as a replica of
//! the new primary. With `rejoin = "auto"` (the default) the fenced server's role does this by
//! itself whenever it starts, and the command only confirms it; with `rejoin = "manual"` the
//! role keeps the server stopped, its data untouched, until this command asks it to rewind
//! (`pg_rewind`) and follow the new primary — time to look at what the old primary wrote that
//! no replica received before rewinding discards it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use strata_control::cluster::{self, ClusterState};
use strata_engines::postgres::SUPERUSER as POSTGRES_USER;
use strata_store::postgres::{NodeStatus, format_lsn, probe_node};

use crate::roles::RoleKind;
use crate::state::{self, DeploymentState, RolePhase};

/// What the fenced server answers, if anything: `Ok(Some)` when it runs (primary or replica).
async fn probe(state: &DeploymentState, node: &str) -> Option<NodeStatus> {
    let role = state.roles.iter().find(|r| r.name == node)?;
    let addr = role.addrs.get("postgres")?;
    let url = format!("postgresql://{POSTGRES_USER}@{addr}/postgres");
    probe_node(&url, Duration::from_secs(1)).await.ok()
}

fn read_state(dir: &Path) -> anyhow::Result<DeploymentState> {
    state::read(dir)?.ok_or_else(|| state::no_deployment(dir))
}

/// Asks the fenced former primary `node` to rewind and follow the new primary, and waits (up
/// to `timeout`, with a spinner) until it streams from it.
pub async fn rejoin(dir: &Path, node: &str, timeout: Duration) -> anyhow::Result<()> {
    let state = read_state(dir)?;
    let databases: Vec<&str> = state
        .roles
        .iter()
        .filter(|r| r.kind == RoleKind::Postgres)
        .map(|r| r.name.as_str())
        .collect();
    anyhow::ensure!(
        !databases.is_empty(),
        "the deployment in {} runs no PostgreSQL servers of its own: nothing to rejoin",
        dir.display()
    );
    let Some(role) = state.roles.iter().find(|r| r.name == node) else {
        anyhow::bail!(
            "no database role {node:?} in {}: its database roles are {}",
            dir.display(),
            databases.join(", ")
        );
    };
    anyhow::ensure!(
        role.kind == RoleKind::Postgres,
        "{node} is a {} role, not a database server: its database roles are {}",
        role.kind.as_str(),
        databases.join(", ")
    );
    anyhow::ensure!(
        state.running && strata_engines::process::is_alive(state.supervisor_pid),
        "the deployment in {} is not running: start it with `strata up -d --dir {}` (a fenced \
         server rejoins when its role starts, or waits for this command under rejoin = \"manual\")",
        dir.display(),
        dir.display()
    );
    let postgres_dir = crate::groups::postgres_dir(dir, node);
    // The published state of its cluster, as the controllers show it (whatever store holds it).
    let group = crate::groups::group_of(node);
    let cluster: ClusterState = match crate::status::control_view(&state, group).await {
        Some(view) if !view["cluster"].is_null() => serde_json::from_value(view["cluster"].clone())
            .context("the controller's view of the cluster is not a cluster state")?,
        _ => match cluster::read(&postgres_dir)? {
            Some(c) => c,
            None => anyhow::bail!(
                "no failover has happened in {}: every server is where strata up put it, and \
                 {node} has nothing to rejoin",
                dir.display()
            ),
        },
    };
    anyhow::ensure!(
        cluster.primary.as_deref() != Some(node),
        "{node} is the primary (cluster version {}): only a former primary fenced by a failover \
         rejoins, as a replica of the primary",
        cluster.version
    );
    let Some(primary) = cluster.primary.clone() else {
        anyhow::bail!(
            "a failover is waiting for an election (cluster version {}): there is no primary to              follow yet; {node} can rejoin once one is elected (see `strata status --dir {}`)",
            cluster.version,
            dir.display()
        );
    };
    if let Some(status) = probe(&state, node).await
        && status.in_recovery
    {
        println!(
            "{node} is already a replica of {primary}, replayed up to {}",
            format_lsn(status.position.0)
        );
        return Ok(());
    }
    anyhow::ensure!(
        role.state != RolePhase::Failed,
        "the supervisor gave up on {node} after repeated crashes ({}): see `strata logs {node} \
         --dir {}`, then restart the deployment (`strata down`, `strata up -d`); a fenced server \
         rejoins when its role starts",
        role.last_error.as_deref().unwrap_or("no reason recorded"),
        dir.display()
    );

    let request = cluster::rejoin_request_path(&postgres_dir, node);
    std::fs::write(&request, format!("{primary}\n"))
        .with_context(|| format!("cannot write {}", request.display()))?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(format!(
        "{node}: rewinding and following {primary} (pg_rewind)"
    ));
    let started = Instant::now();
    loop {
        // The role may have restarted elsewhere in the meantime: read its address again.
        let state = read_state(dir)?;
        if let Some(status) = probe(&state, node).await
            && status.in_recovery
        {
            bar.finish_and_clear();
            println!(
                "{node} rejoined as a replica of {primary} in {:.1} s, replayed up to {}",
                started.elapsed().as_secs_f64(),
                format_lsn(status.position.0)
            );
            return Ok(());
        }
        if let Some(r) = state.roles.iter().find(|r| r.name == node)
            && r.state == RolePhase::Failed
        {
            bar.finish_and_clear();
            let _ = std::fs::remove_file(&request);
            anyhow::bail!(
                "{node} failed while rejoining and the supervisor gave up on it ({}): see \
                 `strata logs {node} --dir {}`",
                r.last_error.as_deref().unwrap_or("no reason recorded"),
                dir.display()
            );
        }
        if started.elapsed() >= timeout {
            bar.finish_and_clear();
            anyhow::bail!(
                "{node} is not streaming from {primary} after {} s: see `strata logs {node} --dir \
                 {}` (the request stays; the role takes it when it can)",
                timeout.as_secs(),
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
