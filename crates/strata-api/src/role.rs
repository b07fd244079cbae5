//! The API server as a process: `strata serve` (stage 1: everything in one process) and
//! `strata api` (one API server of a larger topology, as `strata up` starts it).
//!
//! [`ServerOptions`] is the whole command line of an API server. Each tier contributes its own
//! part — [`DataOptions`] from the data tier, [`CacheOptions`] from the cache tier,
//! [`AuthOptions`] here — and `strata up` fills in the same struct that the role parses.
//!
//! Both bind first, then print the readiness line on stdout (see `strata_core::ready`), then
//! serve until SIGTERM or Ctrl-C — and, for `api --exit-on-stdin-eof`, until stdin closes, which
//! is how a role dies with its supervisor even when the supervisor is killed with SIGKILL.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use strata_cache::options::CacheOptions;
use strata_core::id::SnowflakeGenerator;
use strata_core::ready::ReadyLine;
use strata_photos::role::PhotoOptions;
use strata_queue::QueuePolicy;
use strata_store::accounts::{AccountStore, SessionStore};
use strata_store::open::DataOptions;
use strata_store::redis_sessions::RedisSessions;

use crate::auth::AuthConfig;
use crate::client::TrustedProxies;
use crate::keys::KeyRing;
use crate::server::Application;
use crate::state::AppState;

/// Everything an API server is told on its command line.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct ServerOptions {
    /// Address to listen on (port 0 picks a free port; loopback by default).
    #[arg(long, env = "STRATA_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    #[command(flatten)]
    #[serde(flatten)]
    pub data: DataOptions,
    /// This server's node id for Snowflake ids, 0 to 1022 (1023 is reserved for `strata seed`).
    /// Every process that creates users at the same time needs its own.
    #[arg(long, env = "STRATA_NODE_ID", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1022))]
    pub node_id: u64,
    #[command(flatten)]
    #[serde(flatten)]
    pub cache: CacheOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub auth: AuthOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub photos: PhotoOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub edges: crate::edge_purge::EdgeOptions,
    /// The share of new traces recorded (0 to 1) for requests that arrive without a valid
    /// `traceparent` (behind a balancer, its decision travels in the header).
    #[arg(long, default_value_t = strata_core::trace::SampleRate::default())]
    #[serde(serialize_with = "strata_core::args::display")]
    pub trace_sample: strata_core::trace::SampleRate,
}

/// Sessions, signing keys, password hashing and login limits.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct AuthOptions {
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
    /// A proxy whose `X-Forwarded-For`/`Forwarded` names the client (for the per-address login
    /// limits and the sessions list): an address or a CIDR block; repeat for several. Requests
    /// from any other peer are counted against the peer's own address. `strata up` names its
    /// balancer.
    #[arg(long = "trusted-proxy", env = "STRATA_TRUSTED_PROXIES", value_delimiter = ',', value_parser = crate::client::parse_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for AuthOptions {
    fn default() -> Self {
        Self {
            keys: None,
            sessions_redis: None,
            access_ttl_secs: 600,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            login_max_failures: 5,
            login_max_failures_per_ip: 50,
            trusted_proxies: Vec::new(),
        }
    }
}

impl ServerOptions {
    /// A server on `addr` over the SQLite database in `data`, every other setting at its
    /// default (the same defaults clap gives; a test keeps the two in step).
    pub fn new(addr: SocketAddr, data: PathBuf) -> Self {
        Self {
            addr,
            data: DataOptions::sqlite(data),
            node_id: 0,
            cache: CacheOptions::default(),
            auth: AuthOptions::default(),
            photos: PhotoOptions::default(),
            edges: crate::edge_purge::EdgeOptions::default(),
            trace_sample: strata_core::trace::SampleRate::default(),
        }
    }
}

/// A background task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `strata serve`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct ServeArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub server: ServerOptions,
}

/// `strata api`: one API server of a topology.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct ApiArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub server: ServerOptions,
    /// This role's name in its topology (shown in the readiness line and logs).
    #[arg(long, default_value = "api")]
    pub name: String,
    /// Exit when standard input reaches end-of-file (set by `strata up`, so that roles never
    /// outlive their supervisor).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

/// Runs `strata serve` until SIGTERM or Ctrl-C. Stage 1 is one process: it also runs a photo
/// worker.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    run_server(args.server, "serve", false).await
}

/// Runs `strata api` until SIGTERM, Ctrl-C or (with `--exit-on-stdin-eof`) its supervisor's
/// exit.
pub async fn api(args: ApiArgs) -> anyhow::Result<()> {
    run_server(args.server, &args.name, args.exit_on_stdin_eof).await
}

async fn run_server(
    opts: ServerOptions,
    role: &str,
    exit_on_stdin_eof: bool,
) -> anyhow::Result<()> {
    strata_core::telemetry::init();
    strata_core::trace::layer::set_service(if role == "serve" { "serve" } else { "api" });
    crate::observe::set_trace_sampler(opts.trace_sample.sampler());
    let engines = opts.data.open().await?;
    let ids = SnowflakeGenerator::new(opts.node_id).context("invalid --node-id")?;
    let (cache, mut cache_where) = opts.cache.build().await?;
    if opts.cache.watches_database()
        && let Some(changes) = engines.changes.clone()
    {
        cache.attach_watch(Arc::new(crate::coherence::UserChangeSource(changes)));
        cache_where.push_str(", kept coherent by the database's change log");
    }
    // On PostgreSQL, the log is followed in the background from the server this one reads
    // from: another data centre's writes reach this one's caches as its replica applies them.
    let _follow = match (&engines.follower, opts.cache.no_cache) {
        (Some(follower), false) => {
            cache_where.push_str(", following the database's change log");
            Some(AbortOnDrop(tokio::spawn(crate::coherence::follow_changes(
                follower.clone(),
                cache.clone(),
                crate::edge_purge::EdgePurger::followed(&opts.edges),
            ))))
        }
        _ => None,
    };
    let auth = build_auth(&opts, engines.sessions, engines.accounts).await?;
    let photos = opts
        .photos
        .open(&opts.data.data, QueuePolicy::default(), 1)
        .await
        .with_context(|| {
            format!(
                "cannot open the photo pipeline ({})",
                opts.photos.describe(&opts.data.data)
            )
        })?;
    let (relay_stop, relay_stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = {
        let photos = photos.clone();
        tokio::spawn(async move {
            photos
                .relay(async move {
                    let _ = relay_stopped.await;
                })
                .await
        })
    };
    let edges = crate::edge_purge::EdgePurger::start(&opts.edges);
    // Stage 1 (`strata serve`) processes its own photos; in a topology, `strata worker`s do.
    let (worker_stop, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = (role == "serve").then(|| {
        let worker = strata_photos::worker::Worker {
            catalog: photos.catalog.clone(),
            queue: photos.queue.clone(),
            blobs: photos.blobs.clone(),
            heartbeat: QueuePolicy::default().visibility_timeout / 3,
            edges: edges.purger(),
        };
        tokio::spawn(worker.run(1, Duration::from_secs(30), async move {
            let _ = worker_stopped.await;
        }))
    });
    let mut state = AppState::new(engines.store, auth, ids, cache).with_photos(photos);
    state.edges = edges;
    let app = Application::build(opts.addr, state).await.with_context(|| {
        format!("cannot listen on {}: is another process using that port? Pass another --addr (port 0 picks a free one)", opts.addr)
    })?;
    let addr = app.addr();
    // Listening for the stop signal before announcing readiness: a SIGTERM sent the moment
    // the role is ready stops it cleanly.
    let stop = strata_core::shutdown::signal(exit_on_stdin_eof);
    ReadyLine::new(role)
        .with_addr("http", addr)
        .announce()
        .context("cannot write the readiness line")?;
    tracing::info!(role, %addr, data = %engines.describe, cache = %cache_where, node_id = opts.node_id, "serving the users API on http://{addr}/users/12");
    app.run_until_stopped(stop)
        .await
        .context("the server failed")?;
    let _ = relay_stop.send(());
    let _ = relay.await;
    let _ = worker_stop.send(());
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    tracing::info!(role, "stopped after finishing in-flight requests");
    Ok(())
}

/// The session store (Redis when given, else the database's), the account store and the
/// signing keys.
async fn build_auth(
    opts: &ServerOptions,
    database_sessions: Arc<dyn SessionStore>,
    accounts: Arc<dyn AccountStore>,
) -> anyhow::Result<AuthConfig> {
    let sessions: Arc<dyn SessionStore> = match &opts.auth.sessions_redis {
        Some(url) => Arc::new(
            RedisSessions::connect(url)
                .await
                .context("cannot reach the session store given by --sessions-redis")?,
        ),
        None => database_sessions,
    };
    let keys_dir = opts
        .auth
        .keys
        .clone()
        .unwrap_or_else(|| opts.data.data.join("keys"));
    let keys = KeyRing::open(&keys_dir).map_err(anyhow::Error::msg)?;
    let mut auth = AuthConfig::new(keys, sessions, accounts);
    auth.access_ttl = Duration::from_secs(opts.auth.access_ttl_secs);
    auth.password.memory_kib = opts.auth.argon2_memory_kib;
    auth.password.iterations = opts.auth.argon2_iterations;
    auth.max_failures_per_account = opts.auth.login_max_failures;
    auth.max_failures_per_ip = opts.auth.login_max_failures_per_ip;
    auth.trusted_proxies = TrustedProxies::new(opts.auth.trusted_proxies.clone());
    Ok(auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerOptions,
    }

    #[test]
    fn the_constructor_has_the_defaults_of_the_command_line() {
        use clap::Parser as _;
        let parsed =
            Cli::try_parse_from(["api", "--addr", "127.0.0.1:0", "--data", "/d"]).expect("parses");
        assert_eq!(
            parsed.server,
            ServerOptions::new("127.0.0.1:0".parse().expect("addr"), "/d".into())
        );
    }
}
