//! The account store of a deployment made by `strata up`: its PostgreSQL primary when it runs
//! PostgreSQL servers (found by asking each which one takes writes, whatever store holds the
//! cluster state), a router over its shard groups when it runs several, else its embedded
//! SQLite database. For operator actions (`strata admin
//! --dir`) and drills (`strata chaos`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use strata_engines::postgres::{DATABASE, SUPERUSER};
use strata_store::accounts::AccountStore;
use strata_store::postgres::{PgConfig, PgStore, probe_node};
use strata_store::sqlite::{DB_FILE, SqliteStore};

use crate::roles::RoleKind;
use crate::state;

/// The URL of the deployment's PostgreSQL primary, if it runs PostgreSQL servers.
pub async fn primary_url(dir: &Path) -> anyhow::Result<Option<String>> {
    let Some(deployment) = state::read(dir)? else {
        return Ok(None);
    };
    let servers: Vec<&String> = deployment
        .roles
        .iter()
        .filter(|r| r.kind == RoleKind::Postgres)
        .filter_map(|r| r.addrs.get("postgres"))
        .collect();
    if servers.is_empty() {
        return Ok(None);
    }
    for addr in servers {
        let url = format!("postgresql://{SUPERUSER}@{addr}/{DATABASE}");
        if let Ok(node) = probe_node(&url, Duration::from_secs(1)).await
            && !node.in_recovery
        {
            return Ok(Some(url));
        }
    }
    anyhow::bail!(
        "the deployment in {} has no primary right now (a failover may be waiting for an \
         election): try again once `strata status --dir {}` shows one",
        dir.display(),
        dir.display()
    )
}

/// The data options of the deployment in `dir` when it runs PostgreSQL shard groups: every
/// group's URL and the shard map's home, as its API servers have them (a small pool).
pub fn group_options(dir: &Path) -> anyhow::Result<Option<strata_store::open::DataOptions>> {
    let Some(deployment) = state::read(dir)? else {
        return Ok(None);
    };
    let groups = crate::groups::group_urls(&deployment);
    if groups.is_empty() {
        return Ok(None);
    }
    let mut options = strata_store::open::DataOptions::sqlite(dir.join(state::DATA_DIR));
    options.postgres_shards = groups;
    options.postgres_pool = 2;
    options.map_home = Some(strata_store::map_home::MapHomeHandle(
        crate::maps::of_deployment(dir, &deployment)?,
    ));
    Ok(Some(options))
}

/// The account store of the deployment in `dir`.
pub async fn open(dir: &Path) -> anyhow::Result<Arc<dyn AccountStore>> {
    if !dir.is_dir() {
        anyhow::bail!(
            "{} is not a deployment directory: pass the --dir that `strata up` used",
            dir.display()
        );
    }
    // Shard groups on PostgreSQL: through a router over every group, as the API servers.
    if let Some(options) = group_options(dir)? {
        return Ok(options.open().await?.accounts);
    }
    match primary_url(dir).await? {
        Some(url) => Ok(Arc::new(
            PgStore::connect(&PgConfig::new(url))
                .await
                .context("cannot reach the PostgreSQL database")?
                .store,
        )),
        None => open_sqlite(&dir.join(state::DATA_DIR)).await,
    }
}

/// The SQLite account store in a data directory that already holds a Strata database (its
/// router over the shard groups, when the directory is sharded).
pub async fn open_sqlite(data: &Path) -> anyhow::Result<Arc<dyn AccountStore>> {
    if let Some(engines) = strata_store::open::open_sharded_sqlite(data, None).await? {
        return Ok(engines.accounts);
    }
    if !data.join(DB_FILE).exists() {
        anyhow::bail!(
            "{} holds no Strata database: pass the --data directory the API servers use (or --dir of a deployment)",
            data.display()
        );
    }
    Ok(Arc::new(
        SqliteStore::open(data)
            .with_context(|| format!("cannot use {}", data.display()))?
            .store,
    ))
}
