//! Role processes: `strata serve` (stage 1: everything in one process) and `strata api` (one
//! API server of a larger topology, as `strata up` starts it).
//!
//! Both bind first, then print the readiness line on stdout (see `strata_core::ready`), then
//! serve until SIGTERM or Ctrl-C — and, for `api --exit-on-stdin-eof`, until stdin closes, which
//! is how a role dies with its supervisor even when the supervisor is killed with SIGKILL.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use strata_api::keys::KeyRing;
use strata_api::{AppState, Application};
use strata_core::id::SnowflakeGenerator;
use strata_core::ready::ReadyLine;
use strata_store::Store;
use strata_store::accounts::{AccountStore, SessionStore};
use strata_store::postgres::{PgConfig, PgStore};
use strata_store::redis_sessions::RedisSessions;
use strata_store::replicated::{ReplicaPolicy, ReplicatedStore};
use strata_store::sqlite::SqliteStore;

/// Options shared by every process that serves the users API.
#[derive(Debug, clap::Args)]
pub struct ServerOptions {
    /// Address to listen on (port 0 picks a free port; loopback by default).
    #[arg(long, env = "STRATA_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
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
    /// This server's node id for Snowflake ids, 0 to 1022 (1023 is reserved for `strata seed`).
    /// Every process that creates users at the same time needs its own.
    #[arg(long, env = "STRATA_NODE_ID", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1022))]
    pub node_id: u64,
    /// Upper bound of the in-process read cache (L1), in MiB.
    #[arg(long, env = "STRATA_CACHE_MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub cache_mib: u64,
    /// How long a user stays in the in-process cache (L1), in milliseconds. Without the Redis
    /// invalidation bus this bounds how stale another API process's L1 can be.
    #[arg(long, env = "STRATA_CACHE_TTL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub cache_ttl_ms: u64,
    /// Redis nodes as the shared cache (L2), `redis://HOST:PORT`, comma-separated: keys are
    /// spread over them by consistent hashing, and the first also carries the invalidation bus
    /// that keeps every API server's L1 coherent.
    #[arg(
        long,
        env = "STRATA_CACHE_REDIS",
        value_delimiter = ',',
        conflicts_with = "cache_memcached"
    )]
    pub cache_redis: Vec<String>,
    /// Memcached nodes as the shared cache (L2), `HOST:PORT`, comma-separated (consistent
    /// hashing). Memcached has no pub/sub: L1s then stay coherent only within --cache-ttl-ms.
    #[arg(long, env = "STRATA_CACHE_MEMCACHED", value_delimiter = ',')]
    pub cache_memcached: Vec<String>,
    /// How long a user stays in the shared cache (L2), in milliseconds.
    #[arg(long, env = "STRATA_CACHE_L2_TTL_MS", default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub cache_l2_ttl_ms: u64,
    /// How long a 404 is remembered, in milliseconds.
    #[arg(long, env = "STRATA_CACHE_NEGATIVE_TTL_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub cache_negative_ttl_ms: u64,
    /// Most cache misses this server loads from the database at once; more wait up to 2 s, then
    /// get 503 with Retry-After.
    #[arg(long, env = "STRATA_CACHE_MAX_LOADS", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub cache_max_loads: u64,
    /// Turn the read cache off entirely (every read goes to the database) — for comparisons.
    #[arg(long, env = "STRATA_CACHE_OFF")]
    pub no_cache: bool,
    /// Directory of the keys that sign access tokens, shared by every API server of a
    /// deployment (default: `keys` in the data directory; a key is created when there is none).
    #[arg(long, env = "STRATA_KEYS")]
    pub keys: Option<PathBuf>,
    /// Keep sessions in this Redis (`redis://HOST:PORT`; durable, not the cache's) instead of
    /// the database. Never logged.
    #[arg(long, env = "STRATA_SESSIONS_REDIS", hide_env_values = true)]
    pub sessions_redis: Option<String>,
    /// Lifetime of an access token, in seconds.
    #[arg(long, env = "STRATA_ACCESS_TTL_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub access_ttl_secs: u64,
    /// argon2id memory cost, in KiB.
    #[arg(long, env = "STRATA_ARGON2_MEMORY_KIB", default_value_t = 19 * 1024, value_parser = clap::value_parser!(u32).range(1024..=1_048_576))]
    pub argon2_memory_kib: u32,
    /// argon2id passes over memory.
    #[arg(long, env = "STRATA_ARGON2_ITERATIONS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub argon2_iterations: u32,
    /// Failed logins per email within 15 minutes before 429.
    #[arg(long, env = "STRATA_LOGIN_MAX_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub login_max_failures: u64,
    /// Failed logins per client address within 15 minutes before 429.
    #[arg(long, env = "STRATA_LOGIN_MAX_FAILURES_PER_IP", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub login_max_failures_per_ip: u64,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerOptions,
}

#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub server: ServerOptions,
    /// This role's name in its topology (shown in the readiness line and logs).
    #[arg(long, default_value = "api")]
    pub name: String,
    /// Exit when standard input reaches end-of-file (set by `strata up`, so that roles never
    /// outlive their supervisor).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    run_server(args.server, "serve", false).await
}

pub async fn api(args: ApiArgs) -> anyhow::Result<()> {
    run_server(args.server, &args.name, args.exit_on_stdin_eof).await
}

async fn run_server(
    opts: ServerOptions,
    role: &str,
    exit_on_stdin_eof: bool,
) -> anyhow::Result<()> {
    strata_core::telemetry::init();
    let engines = open_engines(
        &opts.data,
        opts.postgres.as_deref(),
        opts.postgres_pool as usize,
    )
    .await?;
    let (store, where_) = with_replicas(engines.store, engines.where_, &opts)?;
    let ids = SnowflakeGenerator::new(opts.node_id).context("invalid --node-id")?;
    let (cache, cache_where) = crate::cache::build(&opts).await?;
    let (accounts, auth) = build_auth(&opts, engines.accounts, engines.sessions).await?;
    let state = AppState::new(store, accounts, auth, ids, cache);
    let app = Application::build(opts.addr, state).await.with_context(|| {
        format!("cannot listen on {}: is another process using that port? Pass another --addr (port 0 picks a free one)", opts.addr)
    })?;
    let addr = app.addr();
    ReadyLine::new(role)
        .with_addr("http", addr)
        .announce()
        .context("cannot write the readiness line")?;
    tracing::info!(role, %addr, data = %where_, cache = %cache_where, node_id = opts.node_id, "serving the users API on http://{addr}/users/12");
    app.run_until_stopped(shutdown_signal(exit_on_stdin_eof))
        .await
        .context("the server failed")?;
    tracing::info!(role, "stopped after finishing in-flight requests");
    Ok(())
}

/// The account store (the primary database), the session store and the signing keys.
async fn build_auth(
    opts: &ServerOptions,
    accounts: Arc<dyn AccountStore>,
    database_sessions: Arc<dyn SessionStore>,
) -> anyhow::Result<(Arc<dyn AccountStore>, strata_api::auth::AuthConfig)> {
    let sessions: Arc<dyn SessionStore> = match &opts.sessions_redis {
        Some(url) => Arc::new(
            RedisSessions::connect(url)
                .await
                .context("cannot reach the session store given by --sessions-redis")?,
        ),
        None => database_sessions,
    };
    let keys_dir = opts.keys.clone().unwrap_or_else(|| opts.data.join("keys"));
    let keys = KeyRing::open(&keys_dir).map_err(anyhow::Error::msg)?;
    let mut auth = strata_api::auth::AuthConfig::new(keys, sessions);
    auth.access_ttl = Duration::from_secs(opts.access_ttl_secs);
    auth.password.memory_kib = opts.argon2_memory_kib;
    auth.password.iterations = opts.argon2_iterations;
    auth.max_failures_per_account = opts.login_max_failures;
    auth.max_failures_per_ip = opts.login_max_failures_per_ip;
    Ok((accounts, auth))
}

/// Opens the configured engine (PostgreSQL with `--postgres`, SQLite otherwise), inserting the
/// canonical user 12 into a new database. Returns the store and where it is, for logs.
/// The engines one store connection serves: users, accounts and (unless Redis holds them)
/// sessions. One SQLite store per process: opening the file twice in one process would let
/// the second open's file checks drop the first one's locks.
pub(crate) struct Engines {
    pub store: Arc<dyn Store>,
    pub accounts: Arc<dyn AccountStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub where_: String,
}

/// Opens the configured engine (PostgreSQL with `--postgres`, SQLite otherwise), inserting the
/// canonical user 12 into a new database.
pub(crate) async fn open_engines(
    data: &std::path::Path,
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
            let where_ = format!("postgres {}", opened.store.describe());
            let pg = Arc::new(opened.store);
            (
                Engines {
                    store: pg.clone(),
                    accounts: pg.clone(),
                    sessions: pg,
                    where_,
                },
                opened.created,
            )
        }
        None => {
            let opened = SqliteStore::open(data)
                .with_context(|| format!("cannot use data directory {}", data.display()))?;
            let sqlite = Arc::new(opened.store);
            (
                Engines {
                    store: sqlite.clone(),
                    accounts: sqlite.clone(),
                    sessions: sqlite,
                    where_: data.display().to_string(),
                },
                opened.created,
            )
        }
    };
    if created
        && strata_store::ensure_canonical_user(engines.store.as_ref())
            .await
            .context("cannot insert the canonical user 12")?
    {
        tracing::info!(data = %engines.where_, "created a new database with the canonical user 12");
    }
    Ok(engines)
}

/// [`open_engines`], for callers that need only the users store.
pub(crate) async fn open_store(
    data: &std::path::Path,
    postgres: Option<&str>,
    pool: usize,
) -> anyhow::Result<(Arc<dyn Store>, String)> {
    let engines = open_engines(data, postgres, pool).await?;
    Ok((engines.store, engines.where_))
}

/// Puts the replicas (if any) behind the primary store: read/write split with
/// read-your-writes.
fn with_replicas(
    store: Arc<dyn Store>,
    where_: String,
    opts: &ServerOptions,
) -> anyhow::Result<(Arc<dyn Store>, String)> {
    let (Some(url), false) = (&opts.postgres, opts.postgres_replicas.is_empty()) else {
        return Ok((store, where_));
    };
    let mut primary_config = PgConfig::new(url.clone());
    primary_config.max_connections = opts.postgres_pool as usize;
    let primary = PgStore::connect_lazily(&primary_config)
        .context("cannot use the PostgreSQL database given by --postgres")?;
    let replicas: Vec<PgConfig> = opts
        .postgres_replicas
        .iter()
        .map(|u| {
            let mut c = PgConfig::new(u.clone());
            c.max_connections = opts.postgres_pool as usize;
            c.connect_timeout = Duration::from_millis(500);
            c.call_timeout = Duration::from_secs(2);
            // A replica that does not answer is skipped, not waited for.
            c.reconnect_for = Duration::ZERO;
            c
        })
        .collect();
    let policy = ReplicaPolicy {
        max_lag_bytes: opts.replica_max_lag_bytes,
        max_lag: Duration::from_millis(opts.replica_max_lag_ms),
        ..ReplicaPolicy::default()
    };
    let n = replicas.len();
    drop(store);
    Ok((
        Arc::new(ReplicatedStore::new(primary, &replicas, policy)),
        format!("{where_} with {n} replica{}", if n == 1 { "" } else { "s" }),
    ))
}

/// Resolves on SIGTERM, SIGINT, or (optionally) end-of-file on stdin.
pub(crate) async fn shutdown_signal(exit_on_stdin_eof: bool) {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let stdin_eof = async {
        if !exit_on_stdin_eof {
            return std::future::pending::<()>().await;
        }
        // A plain thread, not tokio's stdin: a blocking read inside the runtime would keep the
        // runtime (and so the process) from exiting after shutdown.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            use std::io::Read as _;
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 256];
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            let _ = tx.send(());
        });
        let _ = rx.await;
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM received: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received: draining"),
        _ = stdin_eof => tracing::info!("supervisor gone (stdin closed): draining"),
    }
}
