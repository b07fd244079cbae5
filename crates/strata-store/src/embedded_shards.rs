//! Shard groups with nothing installed: one SQLite file per group under the data directory,
//! and the shard map as a JSON file beside them. (Beside `shard` and `sqlite`, not in either:
//! it joins the two.)
//!
//! ```text
//! DATA/shard-map.json          the map (written once here; later versions by the resharder)
//! DATA/shards/s1/strata.db     group s1 (also holds sessions and idempotency records)
//! DATA/shards/s2/strata.db     group s2
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::StoreError;
use crate::changes::{ChangeFeed, UserChanges};
use crate::shard::group::ShardGroup;
use crate::shard::map::ShardMap;
use crate::shard::router::{GroupEngines, GroupOpener};
use crate::shard::slot::Strategy;
use crate::shard::source::read_map_file;
use crate::sqlite::{SqliteChangeFeed, SqliteStore};

/// The map file of a sharded data directory.
pub fn map_path(data: &Path) -> PathBuf {
    data.join("shard-map.json")
}

/// The directory of one group's SQLite file.
pub fn group_dir(data: &Path, group: &ShardGroup) -> PathBuf {
    data.join("shards").join(group.as_str())
}

/// The names `strata` gives `n` groups: `s1` … `sN`.
pub fn group_names(n: u16) -> Vec<ShardGroup> {
    (1..=n)
        .filter_map(|i| ShardGroup::parse(&format!("s{i}")).ok())
        .collect()
}

/// Opens each group's SQLite file as the router meets it.
pub struct SqliteGroups {
    data: PathBuf,
    feeds: Option<Arc<GroupFeeds>>,
}

impl SqliteGroups {
    pub fn new(data: impl Into<PathBuf>) -> Self {
        Self {
            data: data.into(),
            feeds: None,
        }
    }

    /// The same, also following the change log of every group it opens into `feeds` — before
    /// the router can send a call to the group.
    pub fn followed(data: impl Into<PathBuf>, feeds: Arc<GroupFeeds>) -> Self {
        Self {
            data: data.into(),
            feeds: Some(feeds),
        }
    }

    /// Opens one group's store.
    pub fn open_store(&self, group: &ShardGroup) -> Result<SqliteStore, StoreError> {
        Ok(SqliteStore::open(&group_dir(&self.data, group))?.store)
    }
}

impl GroupOpener for SqliteGroups {
    fn open(&self, group: &ShardGroup) -> Result<GroupEngines, StoreError> {
        let store = Arc::new(self.open_store(group)?);
        if let Some(feeds) = &self.feeds {
            feeds.follow(store.change_feed()?);
        }
        Ok(GroupEngines {
            store: store.clone(),
            accounts: store.clone(),
            emails: store,
        })
    }
}

impl crate::reshard::run::RowsOpener for SqliteGroups {
    fn rows(
        &self,
        group: &ShardGroup,
    ) -> Result<Arc<dyn crate::reshard::rows::GroupRows>, StoreError> {
        Ok(Arc::new(self.open_store(group)?))
    }
}

/// The change logs of every shard group a router has opened, polled as one.
///
/// A group a resharding adds is followed from the moment this process opens it, which is
/// before any call is routed to it; rows moving into it were moved by a cut-over that fenced
/// them in their old group, and a fence logs "anything may have changed" there, so no cache
/// keeps a value read before the move.
#[derive(Default)]
pub struct GroupFeeds {
    feeds: std::sync::Mutex<Vec<Arc<SqliteChangeFeed>>>,
}

impl GroupFeeds {
    fn follow(&self, feed: SqliteChangeFeed) {
        self.feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(feed));
    }
}

impl ChangeFeed for GroupFeeds {
    fn poll(&self) -> Result<UserChanges, StoreError> {
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut users = Vec::new();
        let mut everything = false;
        for feed in &feeds {
            match feed.poll()? {
                UserChanges::Nothing => {}
                UserChanges::Users(u) => users.extend(u),
                UserChanges::Everything => everything = true,
            }
        }
        Ok(if everything {
            UserChanges::Everything
        } else if users.is_empty() {
            UserChanges::Nothing
        } else {
            UserChanges::Users(users)
        })
    }
}

/// Publishes maps into a data directory's map file: compare-and-set on the version under a
/// lock file, written atomically (the routers read it with [`crate::shard::source::FileMapSource`]).
pub struct FileMapPublisher {
    data: PathBuf,
}

impl FileMapPublisher {
    pub fn new(data: impl Into<PathBuf>) -> Self {
        Self { data: data.into() }
    }
}

#[async_trait::async_trait]
impl crate::reshard::run::MapPublisher for FileMapPublisher {
    async fn current(&self) -> Result<ShardMap, StoreError> {
        read_map_file(&map_path(&self.data))
    }

    async fn publish(&self, expected: u64, map: &ShardMap) -> Result<(), StoreError> {
        let data = self.data.clone();
        let map = map.clone();
        tokio::task::spawn_blocking(move || publish_map(&data, expected, &map))
            .await
            .map_err(|e| StoreError::Unavailable(format!("the publish task failed: {e}")))?
    }
}

/// Replaces the map file with `map` if it holds version `expected` and `map` is the next one.
pub fn publish_map(data: &Path, expected: u64, map: &ShardMap) -> Result<(), StoreError> {
    let fail = |e: std::io::Error| {
        StoreError::Unavailable(format!(
            "cannot publish the shard map in {}: {e}",
            data.display()
        ))
    };
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data.join("shard-map.lock"))
        .map_err(fail)?;
    lock.lock().map_err(fail)?;
    let path = map_path(data);
    let current = read_map_file(&path)?;
    if current.version() != expected || map.version() != expected + 1 {
        return Err(StoreError::Unavailable(format!(
            "the shard map changed under this resharding (now version {}, expected {expected}): run the command again to resume",
            current.version()
        )));
    }
    let text = serde_json::to_string_pretty(map)
        .map_err(|e| StoreError::Unusable(format!("cannot write the shard map: {e}")))?;
    let tmp = data.join(".shard-map.publish.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(fail)?;
    if let Ok(d) = std::fs::File::open(data) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What [`ensure_map`] found.
#[derive(Debug)]
pub struct EnsuredMap {
    pub map: ShardMap,
    /// True when this call wrote the first map (the data directory was new).
    pub created: bool,
}

/// The data directory's shard map: the one it has, or — when it has none and `shards` asks for
/// more than one group — a new even hash map of `shards` groups. Refuses a count that differs
/// from the map's (that is a resharding) and an unsharded database (whose users would vanish
/// from view). `Ok(None)`: the directory is not sharded and none was asked for.
pub fn ensure_map(data: &Path, shards: Option<u16>) -> Result<Option<EnsuredMap>, StoreError> {
    let path = map_path(data);
    if path.exists() {
        let map = read_map_file(&path)?;
        if let Some(n) = shards
            && usize::from(n) != map.groups().len()
        {
            return Err(StoreError::Unusable(format!(
                "{} holds {} shard groups, not {n}: drop --shards (or [data] shards) to use it as it is, or change the count with `strata reshard --shards {n}`",
                data.display(),
                map.groups().len()
            )));
        }
        return Ok(Some(EnsuredMap {
            map,
            created: false,
        }));
    }
    let n = match shards {
        None | Some(1) => return Ok(None),
        Some(0) => {
            return Err(StoreError::Unusable(
                "--shards must be at least 1 (1 means not sharded)".into(),
            ));
        }
        Some(n) => n,
    };
    if data.join(crate::sqlite::DB_FILE).exists() {
        return Err(StoreError::Unusable(format!(
            "{} holds an unsharded database: its users would not be seen by {n} shard groups. Use another --data directory for a sharded deployment (moving an unsharded database into shard groups is not supported yet)",
            data.display()
        )));
    }
    let map = ShardMap::even(Strategy::Hash, group_names(n))
        .map_err(|e| StoreError::Unusable(format!("cannot make {n} shard groups: {e}")))?;
    let created = write_new(&path, &map)?;
    // Another process may have written the first map at the same moment: use whichever won.
    let map = if created { map } else { read_map_file(&path)? };
    Ok(Some(EnsuredMap { map, created }))
}

/// Writes `map` to `path` unless a file is there; true if this call wrote it. Atomic: the
/// document is written and synced under a temporary name, then linked into place (a link
/// fails when the name exists, so two writers cannot both win).
pub(crate) fn write_new(path: &Path, map: &ShardMap) -> Result<bool, StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Unusable(format!("cannot create {}: {e}", dir.display())))?;
    let text = serde_json::to_string_pretty(map)
        .map_err(|e| StoreError::Unusable(format!("cannot write the shard map: {e}")))?;
    let tmp = dir.join(format!(".shard-map.{}.tmp", std::process::id()));
    let fail = |e: std::io::Error| {
        StoreError::Unusable(format!(
            "cannot write the shard map {}: {e}",
            path.display()
        ))
    };
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    drop(f);
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(fail(e)),
    }
}

/// One shard group as `strata status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupView {
    pub group: String,
    /// Its slots as compact ranges (`0-1023`).
    pub slots: Vec<String>,
    pub slot_count: usize,
    /// Users pinned to it.
    pub pinned: usize,
    /// Users in its file (leftover copies of moved slots included), when it could be read.
    pub users: Option<u64>,
    /// Slot ranges it has handed to other groups and still refuses (its fences).
    pub fences: usize,
    /// Where its data is: its SQLite file, or its PostgreSQL server and database (never a
    /// password).
    pub file: PathBuf,
}

impl GroupView {
    /// The view of group `g` of `map`, with what was read from its database.
    pub fn of(
        map: &ShardMap,
        g: &ShardGroup,
        users: Option<u64>,
        fences: usize,
        file: PathBuf,
    ) -> Self {
        let slots = map.slots_of(g);
        Self {
            group: g.to_string(),
            slot_count: slots.len(),
            slots: crate::shard::slot::SlotRange::runs(slots)
                .iter()
                .map(|r| r.to_string())
                .collect(),
            pinned: map.pins().values().filter(|p| *p == g).count(),
            users,
            fences,
            file,
        }
    }
}

/// The map of a sharded data directory and each group's view; `None` when it is not sharded.
pub async fn describe(data: &Path) -> Result<Option<(ShardMap, Vec<GroupView>)>, StoreError> {
    let path = map_path(data);
    if !path.exists() {
        return Ok(None);
    }
    let map = read_map_file(&path)?;
    let groups = SqliteGroups::new(data);
    let mut views = Vec::new();
    for g in map.groups() {
        let file = group_dir(data, g).join(crate::sqlite::DB_FILE);
        let (users, fences) = if file.exists() {
            match groups.open_store(g) {
                Ok(store) => (
                    store.count_users().await.ok(),
                    store.fences().await.map_or(0, |f| f.len()),
                ),
                Err(_) => (None, 0),
            }
        } else {
            (None, 0)
        };
        views.push(GroupView::of(&map, g, users, fences, file));
    }
    Ok(Some((map, views)))
}
