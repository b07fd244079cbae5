//! Shard groups on PostgreSQL: one database per group, each named with its URL
//! (`--postgres-shard s1=postgresql://…`), and the shard map as a JSON file in the data
//! directory, as embedded groups keep it. (Beside `shard` and `postgres`, not in either: it
//! joins the two.)
//!
//! Every group's database is a [`PgStore`] in shard-group mode: writes check the group's
//! fences under the fence lock (see `postgres::shard`). A URL may name several hosts with
//! `target_session_attrs=read-write`, so a group follows its own primary through a failover.
//! Groups given on the command line but not in the map yet are spares a resharding can move
//! slots to.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::StoreError;
use crate::map_home::{HomeSource, MapHome};
use crate::postgres::{PgConfig, PgStore};
use crate::shard::group::ShardGroup;
use crate::shard::map::ShardMap;
use crate::shard::router::{GroupEngines, GroupOpener};
use crate::shard::slot::Strategy;

/// Parses `NAME=URL` pairs, keeping their order; every mistake is listed.
pub fn parse_group_urls(pairs: &[String]) -> Result<Vec<(ShardGroup, String)>, StoreError> {
    let mut out: Vec<(ShardGroup, String)> = Vec::new();
    let mut mistakes = Vec::new();
    for pair in pairs {
        let split = pair
            .split_once('=')
            .filter(|(name, _)| !name.contains("://") && !name.contains('@'));
        let Some((name, url)) = split else {
            mistakes.push(format!(
                "{:?} is not NAME=URL (e.g. s1=postgresql://strata@127.0.0.1:5432/strata)",
                redact_pair(pair)
            ));
            continue;
        };
        match ShardGroup::parse(name.trim()) {
            Ok(group) if out.iter().any(|(g, _)| *g == group) => {
                mistakes.push(format!("shard group {group} is given twice"));
            }
            Ok(_) if url.trim().is_empty() => {
                mistakes.push(format!("shard group {name} has no URL after '='"));
            }
            Ok(group) => out.push((group, url.trim().to_string())),
            Err(e) => mistakes.push(e.to_string()),
        }
    }
    if !mistakes.is_empty() {
        return Err(StoreError::Unusable(format!(
            "--postgres-shard: {}",
            mistakes.join("; ")
        )));
    }
    Ok(out)
}

/// What of a pair can be shown: the group name, never the URL (it may hold a password).
fn redact_pair(pair: &str) -> String {
    if pair.contains("://") || pair.contains('@') {
        "(a URL)".into()
    } else {
        pair.to_string()
    }
}

/// Opens each group's database as the router (or a resharding) meets it, one pool per group.
pub struct PgGroups {
    /// The groups in the order given.
    order: Vec<ShardGroup>,
    configs: BTreeMap<ShardGroup, PgConfig>,
    opened: Mutex<BTreeMap<ShardGroup, PgStore>>,
}

impl PgGroups {
    pub fn new(groups: impl IntoIterator<Item = (ShardGroup, PgConfig)>) -> Self {
        let groups: Vec<_> = groups.into_iter().collect();
        Self {
            order: groups.iter().map(|(g, _)| g.clone()).collect(),
            configs: groups.into_iter().collect(),
            opened: Mutex::new(BTreeMap::new()),
        }
    }

    /// The groups this deployment has a database for, in the order given.
    pub fn groups(&self) -> &[ShardGroup] {
        &self.order
    }

    /// Connects to every group and applies pending migrations; true for each group whose
    /// schema this call created.
    pub async fn migrate_all(&self) -> Result<BTreeMap<ShardGroup, bool>, StoreError> {
        let mut created = BTreeMap::new();
        for (group, config) in &self.configs {
            let opened = PgStore::connect(config).await.map_err(|e| match e {
                StoreError::Unusable(m) => {
                    StoreError::Unusable(format!("shard group {group}: {m}"))
                }
                StoreError::Unavailable(m) => {
                    StoreError::Unusable(format!("shard group {group}: {m}"))
                }
                other => other,
            })?;
            self.lock()
                .insert(group.clone(), opened.store.into_shard_group());
            created.insert(group.clone(), opened.created);
        }
        Ok(created)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ShardGroup, PgStore>> {
        self.opened.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One group's store (shared by every caller).
    pub fn open_store(&self, group: &ShardGroup) -> Result<PgStore, StoreError> {
        if let Some(store) = self.lock().get(group) {
            return Ok(store.clone());
        }
        let config = self.configs.get(group).ok_or_else(|| {
            StoreError::Unusable(format!(
                "shard group {group} has no database: give it with --postgres-shard {group}=URL"
            ))
        })?;
        let store = PgStore::connect_lazily(config)?.into_shard_group();
        Ok(self.lock().entry(group.clone()).or_insert(store).clone())
    }
}

impl GroupOpener for PgGroups {
    fn open(&self, group: &ShardGroup) -> Result<GroupEngines, StoreError> {
        let store = Arc::new(self.open_store(group)?);
        Ok(GroupEngines {
            store: store.clone(),
            accounts: store.clone(),
            emails: store,
        })
    }
}

impl crate::reshard::run::RowsOpener for PgGroups {
    fn rows(
        &self,
        group: &ShardGroup,
    ) -> Result<Arc<dyn crate::reshard::rows::GroupRows>, StoreError> {
        Ok(Arc::new(self.open_store(group)?))
    }
}

/// The shard map of PostgreSQL groups in its home: the one published (every group of which
/// must have a database), or a new even hash map over the first `shards` groups given (all of
/// them when `shards` is not set). True when this call published it.
pub async fn ensure_map(
    home: &dyn MapHome,
    given: &[ShardGroup],
    shards: Option<u16>,
) -> Result<(ShardMap, bool), StoreError> {
    let check = |map: ShardMap| {
        let missing: Vec<String> = map
            .groups()
            .iter()
            .filter(|g| !given.contains(g))
            .map(|g| g.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(StoreError::Unusable(format!(
                "the shard map in {} names groups without a database: {} (give each with --postgres-shard NAME=URL)",
                home.place(),
                missing.join(", ")
            )));
        }
        Ok(map)
    };
    if let Some(map) = home.load().await? {
        return Ok((check(map)?, false));
    }
    let n = usize::from(shards.unwrap_or(given.len() as u16));
    if n == 0 || n > given.len() {
        return Err(StoreError::Unusable(format!(
            "--shards {n} asks for more groups than the {} given with --postgres-shard",
            given.len()
        )));
    }
    let map = ShardMap::even(Strategy::Hash, given[..n].to_vec())
        .map_err(|e| StoreError::Unusable(format!("cannot make {n} shard groups: {e}")))?;
    if home.create(&map).await? {
        return Ok((map, true));
    }
    let first = home.load().await?.ok_or_else(|| {
        StoreError::Unavailable(format!("the shard map in {} vanished", home.place()))
    })?;
    Ok((check(first)?, false))
}

/// The map of PostgreSQL groups, from its home, and each group's view (users and fences read
/// from its database; `None` users when it cannot be reached).
pub async fn describe(
    home: &dyn MapHome,
    groups: &PgGroups,
) -> Result<(ShardMap, Vec<crate::embedded_shards::GroupView>), StoreError> {
    let map = HomeSource::current_of(home).await?;
    let mut views = Vec::new();
    for g in map.groups() {
        let (users, fences, place) = match groups.open_store(g) {
            Ok(store) => (
                store.count_users().await.ok(),
                store.fences().await.map_or(0, |f| f.len()),
                store.describe().to_string(),
            ),
            Err(_) => (None, 0, "(no database given)".to_string()),
        };
        views.push(crate::embedded_shards::GroupView::of(
            &map,
            g,
            users,
            fences,
            place.into(),
        ));
    }
    Ok((map, views))
}

/// Groups from `NAME=URL` pairs, connected and migrated.
pub async fn connect_groups(pairs: &[String], pool: usize) -> Result<PgGroups, StoreError> {
    let groups = PgGroups::new(parse_group_urls(pairs)?.into_iter().map(|(g, url)| {
        let mut config = PgConfig::new(url);
        config.max_connections = pool;
        (g, config)
    }));
    groups.migrate_all().await?;
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_urls_are_name_equals_url_and_every_mistake_is_listed() {
        let ok = parse_group_urls(&["s1=postgresql://a/b".into(), "s2=postgresql://c/d".into()])
            .expect("valid");
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].0.as_str(), "s2");
        let e = parse_group_urls(&[
            "postgresql://u:secret@h/db".into(),
            "postgresql://u:secret@h/db?sslmode=require".into(),
            "S1=postgresql://a/b".into(),
            "s2=".into(),
            "s3=x".into(),
            "s3=y".into(),
        ])
        .expect_err("refused")
        .to_string();
        for why in ["not NAME=URL", "lowercase", "no URL", "given twice"] {
            assert!(e.contains(why), "{why}: {e}");
        }
        assert!(!e.contains("secret"), "{e}");
    }
}
