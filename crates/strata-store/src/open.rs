//! Opening the data tier from a role's options: the embedded SQLite database, or a PostgreSQL
//! primary with its streaming replicas behind a read/write split.
//!
//! [`DataOptions`] is the data tier's part of every command line that serves or loads users
//! (`strata serve`, `strata api`, `strata seed`, `strata admin`): `strata up` fills it in for
//! each API server it starts, and the role parses the same struct back, so the two cannot
//! disagree on a flag.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::Store;
use crate::accounts::{AccountStore, SessionStore};
use crate::changes::{ChangeFeed, ChangeFollower};
use crate::postgres::{PgConfig, PgStore};
use crate::replicated::{ReplicaPolicy, ReplicatedStore};
use crate::sqlite::SqliteStore;

/// Where users, accounts and sessions live, and how replicas are read.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct DataOptions {
    /// Data directory: the SQLite database lives here (created on first start).
    #[arg(long, env = "STRATA_DATA", default_value = ".strata/data")]
    pub data: PathBuf,
    /// Use PostgreSQL instead of the embedded SQLite: a URL such as
    /// postgresql://USER@HOST:PORT/DB (several hosts allowed, with
    /// target_session_attrs=read-write). The schema is created on first use. Never logged.
    #[arg(long, env = "STRATA_POSTGRES_URL", hide_env_values = true)]
    pub postgres: Option<String>,
    /// A streaming replica of that PostgreSQL primary to read from (repeat, or comma-separate
    /// in the environment). Reads go to healthy replicas in turn, skipping lagging ones; reads
    /// after a write (Strata-Read-After) only to a replica that has replayed it. Never logged.
    #[arg(
        long = "postgres-replica",
        env = "STRATA_POSTGRES_REPLICAS",
        value_delimiter = ',',
        hide_env_values = true,
        requires = "postgres"
    )]
    pub postgres_replicas: Vec<String>,
    /// A replica more than this many bytes of WAL behind the primary serves no reads.
    #[arg(long, env = "STRATA_REPLICA_MAX_LAG_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub replica_max_lag_bytes: u64,
    /// A replica behind the primary for longer than this (milliseconds) serves no reads.
    #[arg(long, env = "STRATA_REPLICA_MAX_LAG_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub replica_max_lag_ms: u64,
    /// Most connections this server opens to PostgreSQL.
    #[arg(long, env = "STRATA_POSTGRES_POOL", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub postgres_pool: u64,
    /// Spread users over this many shard groups (embedded: one SQLite file per group under
    /// DATA/shards/, the shard map in DATA/shard-map.json). A data directory that is already
    /// sharded is opened as its map says; this count must then match it.
    #[arg(long, env = "STRATA_SHARDS", value_parser = clap::value_parser!(u16).range(1..=255), conflicts_with = "postgres")]
    pub shards: Option<u16>,
    /// A shard group on PostgreSQL: NAME=URL (repeat, or `;`-separate in the environment:
    /// one URL may list several hosts with commas),
    /// e.g. s1=postgresql://strata@127.0.0.1:5432/strata. The shard map lives in DATA; with
    /// --shards N only the first N groups get slots at first (the rest are spares for
    /// `strata reshard`). Never logged.
    #[arg(
        long = "postgres-shard",
        env = "STRATA_POSTGRES_SHARDS",
        value_delimiter = ';',
        hide_env_values = true,
        conflicts_with = "postgres"
    )]
    pub postgres_shards: Vec<String>,
    /// Follow the shard map of the PostgreSQL groups in the control plane's etcd instead of
    /// DATA/shard-map.json: an etcd member's client endpoint, http://127.0.0.1:PORT (repeat
    /// for each member, or comma-separate in the environment). The map is the key
    /// PREFIX/shard-map (see --shard-map-etcd-prefix).
    #[arg(
        long = "shard-map-etcd",
        env = "STRATA_SHARD_MAP_ETCD",
        value_delimiter = ',',
        requires = "postgres_shards"
    )]
    pub shard_map_etcd: Vec<String>,
    /// The prefix of the deployment's keys in etcd (`strata up` uses /strata/NAME).
    #[arg(long = "shard-map-etcd-prefix", default_value = "/strata")]
    pub shard_map_etcd_prefix: String,
    /// The map's home as the process opened it from the two options above (the etcd client
    /// is the control plane's, which this tier may not depend on: the binary sets it).
    #[arg(skip)]
    #[serde(skip)]
    pub map_home: Option<crate::map_home::MapHomeHandle>,
}

impl DataOptions {
    /// The embedded engine in `data`, with every other setting at its default.
    pub fn sqlite(data: impl Into<PathBuf>) -> Self {
        Self {
            data: data.into(),
            postgres: None,
            postgres_replicas: Vec::new(),
            replica_max_lag_bytes: 16 * 1024 * 1024,
            replica_max_lag_ms: 5000,
            postgres_pool: 16,
            shards: None,
            postgres_shards: Vec::new(),
            shard_map_etcd: Vec::new(),
            shard_map_etcd_prefix: "/strata".into(),
            map_home: None,
        }
    }

    /// Opens the engines and, with replicas, puts them behind the primary (read/write split
    /// with read-your-writes).
    pub async fn open(&self) -> anyhow::Result<Engines> {
        if !self.postgres_shards.is_empty() {
            return self.open_postgres_shards().await;
        }
        if self.postgres.is_none()
            && let Some(engines) = open_sharded_sqlite(&self.data, self.shards).await?
        {
            return Ok(engines);
        }
        let engines = open_engines(
            &self.data,
            self.postgres.as_deref(),
            self.postgres_pool as usize,
        )
        .await?;
        self.with_replicas(engines)
    }

    /// The PostgreSQL shard groups of `--postgres-shard`, behind a router following the map
    /// in its home (the data directory, or the control plane's etcd).
    async fn open_postgres_shards(&self) -> anyhow::Result<Engines> {
        let groups =
            crate::pg_shards::connect_groups(&self.postgres_shards, self.postgres_pool as usize)
                .await?;
        let names = groups.groups().to_vec();
        std::fs::create_dir_all(&self.data)
            .with_context(|| format!("cannot create data directory {}", self.data.display()))?;
        let home = self.map_home()?;
        let (map, created) =
            crate::pg_shards::ensure_map(home.as_ref(), &names, self.shards).await?;
        let sessions = Arc::new(groups.open_store(&map.groups()[0])?);
        let source = Arc::new(crate::map_home::HomeSource(home.clone()));
        let router = crate::shard::router::ShardedStore::open(
            source,
            Arc::new(groups),
            crate::shard::router::RouterOptions::default(),
        )
        .await?;
        let router = Arc::new(router);
        router.watch(Duration::from_millis(500));
        let engines = Engines {
            store: router.clone(),
            accounts: router,
            sessions,
            // Shard groups are not followed yet: L1s keep the TTL bound there.
            changes: None,
            follower: None,
            describe: format!(
                "postgres ({} shard groups, map version {} in {})",
                map.groups().len(),
                map.version(),
                home.place()
            ),
        };
        if created
            && crate::ensure_canonical_user(engines.store.as_ref())
                .await
                .context("cannot insert the canonical user 12")?
        {
            tracing::info!(data = %engines.describe, "created new shard groups with the canonical user 12");
        }
        Ok(engines)
    }

    /// Where the PostgreSQL groups' shard map lives: the home the binary set, else the file in
    /// the data directory. Asking for etcd without a home set is refused (only the binary can
    /// reach etcd).
    pub fn map_home(&self) -> anyhow::Result<Arc<dyn crate::map_home::MapHome>> {
        match (&self.map_home, self.shard_map_etcd.is_empty()) {
            (Some(home), _) => Ok(home.0.clone()),
            (None, true) => Ok(Arc::new(crate::map_home::FileMapHome::new(&self.data))),
            (None, false) => anyhow::bail!(
                "--shard-map-etcd: this program cannot reach etcd by itself; run `strata api` (or `strata serve`), which can"
            ),
        }
    }

    fn with_replicas(&self, engines: Engines) -> anyhow::Result<Engines> {
        let (Some(url), false) = (&self.postgres, self.postgres_replicas.is_empty()) else {
            return Ok(engines);
        };
        let mut primary_config = PgConfig::new(url.clone());
        primary_config.max_connections = self.postgres_pool as usize;
        let primary = PgStore::connect_lazily(&primary_config)
            .context("cannot use the PostgreSQL database given by --postgres")?;
        let replicas: Vec<PgConfig> = self
            .postgres_replicas
            .iter()
            .map(|u| {
                let mut c = PgConfig::new(u.clone());
                c.max_connections = self.postgres_pool as usize;
                c.connect_timeout = Duration::from_millis(500);
                c.call_timeout = Duration::from_secs(2);
                // A replica that does not answer is skipped, not waited for.
                c.reconnect_for = Duration::ZERO;
                c
            })
            .collect();
        let policy = ReplicaPolicy {
            max_lag_bytes: self.replica_max_lag_bytes,
            max_lag: Duration::from_millis(self.replica_max_lag_ms),
            ..ReplicaPolicy::default()
        };
        let n = replicas.len();
        let follower = match replicas.first() {
            Some(first) => Some(follower(first.clone())?),
            None => engines.follower.clone(),
        };
        Ok(Engines {
            follower,
            store: Arc::new(ReplicatedStore::new(primary, &replicas, policy)),
            describe: format!(
                "{} with {n} replica{}",
                engines.describe,
                if n == 1 { "" } else { "s" }
            ),
            ..engines
        })
    }
}

/// The engines one store connection serves: users, accounts and (unless Redis holds them)
/// sessions. (Opening one SQLite directory twice in a process gives the same store.)
pub struct Engines {
    pub store: Arc<dyn Store>,
    pub accounts: Arc<dyn AccountStore>,
    pub sessions: Arc<dyn SessionStore>,
    /// Where the data is, for logs (never a password).
    pub describe: String,
    /// The log of committed user changes, on a connection of its own, for keeping API
    /// servers' in-process caches coherent: the embedded engine (every group's, when sharded);
    /// `None` for PostgreSQL.
    pub changes: Option<Arc<dyn ChangeFeed>>,
    /// The same log on PostgreSQL, followed in the background from the server this API server
    /// reads from (its first replica, else the primary): `None` on the embedded engine and for
    /// shard groups.
    pub follower: Option<Arc<dyn ChangeFollower>>,
}

impl std::fmt::Debug for Engines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engines")
            .field("describe", &self.describe)
            .finish_non_exhaustive()
    }
}

/// The change follower on the server of `config`: short deadlines, no retrying within a poll
/// (the next poll comes soon).
fn follower(mut config: PgConfig) -> anyhow::Result<Arc<dyn ChangeFollower>> {
    config.connect_timeout = Duration::from_millis(500);
    config.call_timeout = Duration::from_secs(1);
    config.reconnect_for = Duration::ZERO;
    let follower = crate::postgres::PgChangeFollower::open(&config)
        .context("cannot follow the PostgreSQL change log")?;
    Ok(Arc::new(follower))
}

/// Opens the shard groups of a sharded embedded data directory (creating them when `shards`
/// asks for more than one and the directory is new); `None` when it is not sharded.
pub async fn open_sharded_sqlite(
    data: &Path,
    shards: Option<u16>,
) -> anyhow::Result<Option<Engines>> {
    let Some(ensured) = crate::embedded_shards::ensure_map(data, shards)? else {
        return Ok(None);
    };
    let feeds = Arc::new(crate::embedded_shards::GroupFeeds::default());
    let groups = crate::embedded_shards::SqliteGroups::followed(data, feeds.clone());
    let first = ensured.map.groups()[0].clone();
    // Sessions, login counters and idempotency records are not per user: the first group
    // keeps them (deployments at scale keep sessions in Redis).
    let sessions = Arc::new(groups.open_store(&first)?);
    let source = Arc::new(crate::shard::source::FileMapSource::new(
        crate::embedded_shards::map_path(data),
    ));
    let router = crate::shard::router::ShardedStore::open(
        source,
        Arc::new(groups),
        crate::shard::router::RouterOptions::default(),
    )
    .await?;
    let router = Arc::new(router);
    router.watch(std::time::Duration::from_millis(500));
    let describe = format!(
        "{} ({} shard groups, map version {})",
        data.display(),
        ensured.map.groups().len(),
        ensured.map.version()
    );
    let engines = Engines {
        store: router.clone(),
        accounts: router,
        sessions,
        describe,
        changes: Some(feeds),
        follower: None,
    };
    if ensured.created
        && crate::ensure_canonical_user(engines.store.as_ref())
            .await
            .context("cannot insert the canonical user 12")?
    {
        tracing::info!(data = %engines.describe, "created new shard groups with the canonical user 12");
    }
    Ok(Some(engines))
}

/// Opens PostgreSQL at `postgres` (a URL) when given, else SQLite in `data`, inserting the
/// canonical user 12 into a new database.
pub async fn open_engines(
    data: &Path,
    postgres: Option<&str>,
    pool: usize,
) -> anyhow::Result<Engines> {
    let (engines, created) = match postgres {
        Some(url) => {
            let mut config = PgConfig::new(url);
            config.max_connections = pool;
            let opened = PgStore::connect(&config)
                .await
                .context("cannot use the PostgreSQL database given by --postgres")?;
            let describe = format!("postgres {}", opened.store.describe());
            let pg = Arc::new(opened.store);
            (
                Engines {
                    store: pg.clone(),
                    accounts: pg.clone(),
                    sessions: pg,
                    describe,
                    changes: None,
                    follower: Some(follower(PgConfig::new(url))?),
                },
                opened.created,
            )
        }
        None => {
            let opened = SqliteStore::open(data)
                .with_context(|| format!("cannot use data directory {}", data.display()))?;
            let changes: Arc<dyn ChangeFeed> =
                Arc::new(opened.store.change_feed().with_context(|| {
                    format!("cannot follow the change log in {}", data.display())
                })?);
            let sqlite = Arc::new(opened.store);
            (
                Engines {
                    store: sqlite.clone(),
                    accounts: sqlite.clone(),
                    sessions: sqlite,
                    describe: data.display().to_string(),
                    changes: Some(changes),
                    follower: None,
                },
                opened.created,
            )
        }
    };
    if created
        && crate::ensure_canonical_user(engines.store.as_ref())
            .await
            .context("cannot insert the canonical user 12")?
    {
        tracing::info!(data = %engines.describe, "created a new database with the canonical user 12");
    }
    Ok(engines)
}
