//! `strata cache`: one shared cache server — Redis or Memcached, from the installed package —
//! run as a role of a topology. Loopback only, no persistence (a cache starts empty), bounded
//! memory with LRU eviction. Announces its address once the server answers; stops it on
//! SIGTERM, Ctrl-C or end of stdin, and exits if it dies (the supervisor restarts the role).
//!
//! This file is the role: its flags, its readiness line, its shutdown. The servers' argument
//! lists, probes and processes are `strata_engines::{redis, memcached}`, shared with the test
//! kit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use strata_core::ready::ReadyLine;
use strata_engines::daemon::{Probe, free_port};
use strata_engines::{Log, Server, memcached, process, redis};

/// The shared cache engines: what `strata cache --engine` runs and a topology's `[cache]
/// engine` names.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// Redis: also carries the invalidation bus that keeps the API servers' L1s coherent.
    Redis,
    /// Memcached: no pub/sub, so L1s stay coherent only within their TTL.
    Memcached,
}

impl Engine {
    /// The installed engine that runs it.
    fn installed(self) -> strata_engines::Engine {
        match self {
            Engine::Redis => strata_engines::Engine::Redis,
            Engine::Memcached => strata_engines::Engine::Memcached,
        }
    }
    fn program(self) -> &'static str {
        self.installed().program()
    }
    /// The engine's name, as a topology and the readiness line's listener write it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Redis => "redis",
            Engine::Memcached => "memcached",
        }
    }
    /// Starts the server (without waiting for it), its output to this role's log (stderr),
    /// whose stdout carries only the readiness line.
    fn spawn(self, port: u16, dir: &Path, max_mib: u64, durable: bool) -> anyhow::Result<Server> {
        let spawned = match self {
            Engine::Redis => {
                let mode = if durable {
                    redis::Mode::Durable { max_mib }
                } else {
                    redis::Mode::Cache { max_mib }
                };
                redis::spawn(port, dir, mode, &Log::Stderr)
            }
            Engine::Memcached => {
                memcached::spawn(port, dir, memcached::Mode::Cache { max_mib }, &Log::Stderr)
            }
        };
        spawned.map_err(|e| match e {
            strata_engines::Error::NotInstalled(_) => anyhow::anyhow!(
                "{} is not installed: apt-get install {} (or use [cache] engine = \"in-process\")",
                self.program(),
                self.installed().package()
            ),
            e => e.into(),
        })
    }
    /// A request and the start of a healthy answer.
    fn probe(self) -> Probe {
        match self {
            Engine::Redis => redis::PROBE,
            Engine::Memcached => memcached::PROBE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct CacheArgs {
    /// Loopback address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    #[arg(long, value_enum)]
    pub engine: Engine,
    /// Memory bound; past it the least recently used entries are evicted.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub max_mib: u64,
    /// Working directory of the server.
    #[arg(long)]
    pub dir: PathBuf,
    /// Run Redis as a store, not a cache: an append-only file fsynced on every write, no
    /// eviction (a full Redis refuses writes instead of dropping sessions). For the session store.
    #[arg(long)]
    pub durable: bool,
    /// This role's name in its topology.
    #[arg(long, default_value = "cache")]
    pub name: String,
    /// Exit when standard input reaches end-of-file (set by `strata up`).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

impl CacheArgs {
    /// A cache server of `engine` with its files in `dir`, every other setting at its default.
    pub fn new(engine: Engine, dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            engine,
            max_mib: 256,
            dir,
            durable: false,
            name: "cache".into(),
            exit_on_stdin_eof: false,
        }
    }
}

pub async fn run(args: CacheArgs) -> anyhow::Result<()> {
    strata_core::telemetry::init();
    anyhow::ensure!(
        !args.durable || matches!(args.engine, Engine::Redis),
        "--durable needs --engine redis: Memcached keeps nothing on disk"
    );
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "--listen must be a loopback address (the cache servers strata runs have no password): got {}",
        args.listen
    );
    let port = if args.listen.port() == 0 {
        free_port().context("cannot find a free port")?
    } else {
        args.listen.port()
    };
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let engine = args.engine;
    // Spawned from this (the role's main) thread, so that the server is listed as its child;
    // killed if dropped: an error from here on takes the server down with the role.
    let server = engine.spawn(port, &args.dir, args.max_mib, args.durable)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let answering = tokio::task::spawn_blocking(move || {
        server.wait_answering(addr, engine.probe(), Duration::from_secs(20))
    });
    let mut server = answering.await.context("the start task failed")??;
    // Listening for the stop signal before announcing readiness: a SIGTERM sent the moment
    // the role is ready stops it cleanly.
    let stop = strata_core::shutdown::signal(args.exit_on_stdin_eof);
    ReadyLine::new(&args.name)
        .with_addr(engine.name(), addr)
        .announce()
        .context("cannot write the readiness line")?;
    tracing::info!(role = %args.name, %addr, engine = engine.name(), max_mib = args.max_mib, "cache server is answering");

    let pid = server.pid();
    let exited = tokio::task::spawn_blocking(move || server.wait());
    tokio::pin!(exited);
    tokio::select! {
        status = &mut exited => {
            let status = status
                .context("cannot watch the cache server")?
                .context("cannot watch the cache server")?;
            anyhow::bail!("{} exited ({status})", engine.program());
        }
        _ = stop => {}
    }
    let _ = tokio::task::spawn_blocking(move || {
        process::terminate(
            pid,
            Signal::SIGTERM,
            Duration::from_secs(5),
            Signal::SIGKILL,
            Duration::from_secs(5),
        )
    })
    .await;
    let _ = exited.await;
    tracing::info!(role = %args.name, "cache server stopped");
    Ok(())
}
