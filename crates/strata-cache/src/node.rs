//! `strata cache`: one shared cache server — Redis or Memcached, from the installed package —
//! run as a role of a topology. Loopback only, no persistence (a cache starts empty), bounded
//! memory with LRU eviction. Announces its address once the server answers; stops it on
//! SIGTERM, Ctrl-C or end of stdin, and exits if it dies (the supervisor restarts the role).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use strata_core::ready::ReadyLine;

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
    fn program(self) -> &'static str {
        match self {
            Engine::Redis => "redis-server",
            Engine::Memcached => "memcached",
        }
    }
    fn package(self) -> &'static str {
        match self {
            Engine::Redis => "redis-server",
            Engine::Memcached => "memcached",
        }
    }
    /// The engine's name, as a topology and the readiness line's listener write it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Redis => "redis",
            Engine::Memcached => "memcached",
        }
    }
    /// A request and the start of a healthy answer.
    fn probe(self) -> (&'static [u8], &'static [u8]) {
        match self {
            Engine::Redis => (b"PING\r\n", b"+PONG"),
            Engine::Memcached => (b"version\r\n", b"VERSION"),
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

fn answers(engine: Engine, addr: SocketAddr) -> bool {
    let (ask, expect) = engine.probe();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 32];
    s.write_all(ask).is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(expect))
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
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .context("cannot find a free port")?
    } else {
        args.listen.port()
    };
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let engine = args.engine;
    let mut cmd = tokio::process::Command::new(engine.program());
    match engine {
        Engine::Redis => {
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--maxmemory", &format!("{}mb", args.max_mib)]);
            if args.durable {
                cmd.args([
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ])
                .args(["--maxmemory-policy", "noeviction"]);
            } else {
                cmd.args(["--save", "", "--appendonly", "no"])
                    .args(["--maxmemory-policy", "allkeys-lru"]);
            }
            cmd.arg("--dir").arg(&args.dir);
        }
        Engine::Memcached => {
            cmd.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"])
                .args(["-m", &args.max_mib.to_string(), "-c", "4096"]);
            if nix::unistd::Uid::effective().is_root() {
                // Memcached refuses to run as root without naming a user to become.
                cmd.args(["-u", "nobody"]);
            }
        }
    }
    // The server's own output goes to this role's log (stderr); stdout carries only the
    // readiness line.
    let log = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("cannot attach the server's output")?;
    cmd.current_dir(&args.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "{} is not installed: apt-get install {} (or use [cache] engine = \"in-process\")",
                engine.program(),
                engine.package()
            )
        } else {
            anyhow::anyhow!("cannot start {}: {e}", engine.program())
        }
    })?;
    let pid = child.id().map(|p| Pid::from_raw(p as i32));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("{} exited at start ({status})", engine.program());
        }
        if tokio::task::spawn_blocking(move || answers(engine, addr))
            .await
            .unwrap_or(false)
        {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.start_kill();
            anyhow::bail!("{} did not answer on {addr} within 20 s", engine.program());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ReadyLine::new(&args.name)
        .with_addr(engine.name(), addr)
        .announce()
        .context("cannot write the readiness line")?;
    tracing::info!(role = %args.name, %addr, engine = engine.name(), max_mib = args.max_mib, "cache server is answering");

    tokio::select! {
        status = child.wait() => {
            let status = status.context("cannot watch the cache server")?;
            anyhow::bail!("{} exited ({status})", engine.program());
        }
        _ = strata_core::shutdown::signal(args.exit_on_stdin_eof) => {}
    }
    if let Some(pid) = pid {
        let _ = kill(pid, Signal::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    tracing::info!(role = %args.name, "cache server stopped");
    Ok(())
}
