//! The supervisor behind `strata up`: start every role instance, wait until each is ready,
//! restart the ones that crash, and stop them all on request.
//!
//! Each instance is a child process of the `strata` executable (`strata api …`):
//! - **stdin** is a pipe the supervisor holds and never writes. Roles are started with
//!   `--exit-on-stdin-eof`, so when the supervisor dies — even by SIGKILL — the pipe closes and
//!   they exit: no orphans, without any platform-specific "parent death" call.
//! - **stdout** is read for the readiness line (bounded wait); every other line, and stderr,
//!   goes to `DIR/logs/<role>.log`.
//!
//! Restart policy ([`RestartPolicy`]): an instance that exits unexpectedly is restarted after
//! a backoff that doubles from 100 ms to 5 s; one that crashes 5 times within 60 s is given up
//! on (marked `failed`, reported on stderr and in the state file) while the others keep
//! serving. The first API instance keeps the public port across restarts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use strata_core::ready::ReadyLine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;

use crate::control;
use crate::state::{self, DeploymentState, RolePhase, RoleState};
use crate::topology::{CacheEngine, DataEngine, RoleKind, SessionsEngine, Topology};

/// When and how often crashed instances are restarted.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// This many crashes within `window` and the instance is given up on.
    pub max_crashes: usize,
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_crashes: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// Everything the supervisor needs.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The `strata` executable.
    pub exe: PathBuf,
    /// The deployment directory (state, logs, data).
    pub dir: PathBuf,
    /// The public entry port (0 = any free port).
    pub public_port: u16,
    pub topology: Topology,
    /// How long an instance may take to print its readiness line.
    pub ready_timeout: Duration,
    /// How long a stopping instance gets after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
    pub policy: RestartPolicy,
}

/// One instance to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    pub name: String,
    pub kind: RoleKind,
    /// Port to listen on (0 = any free port). After the first start it is the port the
    /// instance got, so a restarted instance comes back where its clients expect it.
    pub port: u16,
    /// Kind-specific arguments (the listen address is added separately).
    pub args: Vec<String>,
    /// Environment for the role: settings that must not show in `ps` (a database URL may hold
    /// a password) go here rather than in `args`.
    pub env: Vec<(String, String)>,
}

impl InstanceSpec {
    fn listen_flag(&self) -> &'static str {
        match self.kind {
            RoleKind::Api => "--addr",
            RoleKind::Lb | RoleKind::Postgres | RoleKind::Control | RoleKind::Cache => "--listen",
        }
    }
}

pub use strata_control::cluster::POSTGRES_DIR;
pub use strata_engines::postgres::{DATABASE as POSTGRES_DATABASE, SUPERUSER as POSTGRES_USER};

/// The primary PostgreSQL server `strata up` runs for this topology, if any. It is told the
/// names of its replicas for the synchronous quorum.
pub fn plan_primary(topology: &Topology, dir: &Path) -> Option<InstanceSpec> {
    let DataEngine::Postgres {
        replicas,
        commit,
        rejoin,
    } = topology.data
    else {
        return None;
    };
    let standbys: Vec<String> = (2..=u16::from(replicas) + 1)
        .map(|i| format!("pg-{i}"))
        .collect();
    let mut args = vec![
        "--data".into(),
        dir.join(POSTGRES_DIR).join("pg-1").display().to_string(),
        "--commit".into(),
        value_name(commit),
        "--rejoin".into(),
        value_name(rejoin),
    ];
    if !standbys.is_empty() {
        args.push("--standbys".into());
        args.push(standbys.join(","));
    }
    Some(InstanceSpec {
        name: "pg-1".into(),
        kind: RoleKind::Postgres,
        port: 0,
        args,
        env: Vec::new(),
    })
}

/// `strata control` for the database servers at `nodes` (name, `127.0.0.1:PORT`), the first
/// being the primary; with no replicas there is nothing to fail over to, and no control role.
pub fn plan_control(
    topology: &Topology,
    dir: &Path,
    nodes: &[(String, String)],
) -> Option<InstanceSpec> {
    let DataEngine::Postgres { commit, .. } = topology.data else {
        return None;
    };
    if !topology.has_control() || nodes.is_empty() {
        return None;
    }
    let mut args = vec![
        "--postgres-dir".into(),
        dir.join(POSTGRES_DIR).display().to_string(),
        "--primary".into(),
        nodes[0].0.clone(),
        "--commit".into(),
        value_name(commit),
    ];
    for (name, addr) in nodes {
        args.push("--node".into());
        args.push(format!("{name}={addr}"));
    }
    Some(InstanceSpec {
        name: "control-1".into(),
        kind: RoleKind::Control,
        port: 0,
        args,
        env: Vec::new(),
    })
}

/// The URLs API servers use for a deployment's own PostgreSQL servers: the primary through every
/// server with `target_session_attrs=read-write` (so after a failover a new connection finds
/// the new primary by itself), and each server as a possible replica (only those in recovery
/// serve reads).
pub fn postgres_urls(nodes: &[(String, String)]) -> (String, Vec<String>) {
    let hosts: Vec<&str> = nodes.iter().map(|(_, a)| a.as_str()).collect();
    let primary = format!(
        "postgresql://{POSTGRES_USER}@{}/{POSTGRES_DATABASE}?target_session_attrs=read-write",
        hosts.join(",")
    );
    let replicas = hosts
        .iter()
        .map(|a| format!("postgresql://{POSTGRES_USER}@{a}/{POSTGRES_DATABASE}"))
        .collect();
    (primary, replicas)
}

/// The streaming replicas of the primary at `primary` (`127.0.0.1:PORT`).
pub fn plan_replicas(topology: &Topology, dir: &Path, primary: &str) -> Vec<InstanceSpec> {
    let DataEngine::Postgres {
        replicas, rejoin, ..
    } = topology.data
    else {
        return Vec::new();
    };
    (2..=u16::from(replicas) + 1)
        .map(|i| InstanceSpec {
            name: format!("pg-{i}"),
            kind: RoleKind::Postgres,
            port: 0,
            args: vec![
                "--data".into(),
                dir.join(POSTGRES_DIR)
                    .join(format!("pg-{i}"))
                    .display()
                    .to_string(),
                "--replica-of".into(),
                primary.into(),
                "--rejoin".into(),
                value_name(rejoin),
            ],
            env: Vec::new(),
        })
        .collect()
}

/// Where the shared cache servers of a deployment keep their files: `DIR/cache/<role>`.
pub const CACHE_DIR: &str = "cache";

/// The shared cache servers (`cache-1` …) `strata up` runs for this topology.
pub fn plan_cache(topology: &Topology, dir: &Path) -> Vec<InstanceSpec> {
    let Some((engine, nodes)) = topology.cache.shared else {
        return Vec::new();
    };
    (1..=nodes)
        .map(|i| InstanceSpec {
            name: format!("cache-{i}"),
            kind: RoleKind::Cache,
            port: 0,
            args: vec![
                "--engine".into(),
                engine.name().into(),
                "--max-mib".into(),
                topology.cache.max_mib.unwrap_or(256).to_string(),
                "--dir".into(),
                dir.join(CACHE_DIR)
                    .join(format!("cache-{i}"))
                    .display()
                    .to_string(),
            ],
            env: Vec::new(),
        })
        .collect()
}

/// Where the session Redis keeps its append-only file: `DIR/sessions/sessions-1`.
pub const SESSIONS_DIR: &str = "sessions";

/// The session store `strata up` runs when the topology keeps sessions in Redis: one durable
/// Redis (append-only file fsynced on every write, no eviction) as the role `sessions-1`.
pub fn plan_sessions(topology: &Topology, dir: &Path) -> Option<InstanceSpec> {
    (topology.sessions == SessionsEngine::Redis).then(|| InstanceSpec {
        name: "sessions-1".into(),
        kind: RoleKind::Cache,
        port: 0,
        args: vec![
            "--engine".into(),
            "redis".into(),
            "--durable".into(),
            "--max-mib".into(),
            "1024".into(),
            "--dir".into(),
            dir.join(SESSIONS_DIR)
                .join("sessions-1")
                .display()
                .to_string(),
        ],
        env: Vec::new(),
    })
}

/// The API servers' cache settings for a topology whose cache nodes listen at `addrs`.
pub fn cache_env(topology: &Topology, addrs: &[String]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let spec = &topology.cache;
    if spec.off {
        env.push(("STRATA_CACHE_OFF".into(), "true".into()));
    }
    if let Some(mib) = spec.l1_mib {
        env.push(("STRATA_CACHE_MIB".into(), mib.to_string()));
    }
    let l1_ttl = match (spec.l1_ttl_ms, spec.shared) {
        (Some(ms), _) => Some(ms),
        // With the Redis bus L1s are coherent, so L1 entries may live long.
        (None, Some((CacheEngine::Redis, _))) => Some(60_000),
        (None, _) => None,
    };
    if let Some(ms) = l1_ttl {
        env.push(("STRATA_CACHE_TTL_MS".into(), ms.to_string()));
    }
    match spec.shared {
        Some((CacheEngine::Redis, _)) if !addrs.is_empty() => {
            let urls: Vec<String> = addrs.iter().map(|a| format!("redis://{a}")).collect();
            env.push(("STRATA_CACHE_REDIS".into(), urls.join(",")));
        }
        Some((CacheEngine::Memcached, _)) if !addrs.is_empty() => {
            env.push(("STRATA_CACHE_MEMCACHED".into(), addrs.join(",")));
        }
        _ => {}
    }
    env
}

/// The API instances of a topology: without a load balancer `api-1` takes the public port;
/// the others (all of them, with a load balancer) their fixed port or any free one. Node ids
/// 1, 2, 3 … keep Snowflake ids unique across servers. With `postgres` (a URL) they use
/// PostgreSQL, else the SQLite database in `data`.
pub fn plan(
    topology: &Topology,
    public_port: u16,
    data: &Path,
    postgres: Option<&str>,
    replicas: &[String],
    cache_env: &[(String, String)],
) -> Vec<InstanceSpec> {
    let has_lb = topology.lb.is_some();
    let mut fixed = topology.api.ports.iter().copied();
    (0..topology.api.count)
        .map(|i| InstanceSpec {
            name: format!("api-{}", i + 1),
            kind: RoleKind::Api,
            port: if i == 0 && !has_lb {
                public_port
            } else {
                fixed.next().unwrap_or(0)
            },
            args: vec![
                "--data".into(),
                data.display().to_string(),
                "--node-id".into(),
                (i + 1).to_string(),
            ],
            env: postgres
                .map(|url| {
                    let mut env = vec![("STRATA_POSTGRES_URL".to_string(), url.to_string())];
                    if !replicas.is_empty() {
                        env.push(("STRATA_POSTGRES_REPLICAS".to_string(), replicas.join(",")));
                    }
                    env
                })
                .unwrap_or_default()
                .into_iter()
                .chain(cache_env.iter().cloned())
                .collect(),
        })
        .collect()
}

/// The load balancer instance, in front of the API instances that are running at `addrs`.
pub fn plan_lb(
    topology: &Topology,
    public_port: u16,
    backends: &[(String, String)],
    dir: &Path,
) -> Option<InstanceSpec> {
    let lb = topology.lb.as_ref()?;
    let mut args = vec![
        "--admin".into(),
        "127.0.0.1:0".into(),
        "--algorithm".into(),
        value_name(lb.algorithm),
    ];
    for (name, addr) in backends {
        args.push("--backend".into());
        args.push(format!("{name}={addr}"));
    }
    if let Some(cookie) = &lb.sticky_cookie {
        args.push("--sticky-cookie".into());
        args.push(cookie.clone());
    }
    for (flag, ms) in [
        ("--connect-timeout-ms", lb.timeouts.connect_ms),
        ("--header-timeout-ms", lb.timeouts.header_ms),
        ("--total-timeout-ms", lb.timeouts.total_ms),
        ("--idle-timeout-ms", lb.timeouts.idle_ms),
        ("--client-header-timeout-ms", lb.timeouts.client_header_ms),
    ] {
        if let Some(ms) = ms {
            args.push(flag.into());
            args.push(ms.to_string());
        }
    }
    if let Some(tls) = &lb.tls {
        args.push("--tls-listen".into());
        args.push(format!("127.0.0.1:{}", tls.port));
        match &tls.cert_and_key {
            Some((cert, key)) => {
                args.push("--tls-cert".into());
                args.push(format!("{cert},{key}"));
            }
            None => {
                // Written where clients of this deployment find it to trust.
                args.push("--dev-cert".into());
                args.push(dir.join("lb-1-dev-cert.pem").display().to_string());
            }
        }
        if tls.redirect {
            args.push("--https-redirect".into());
        }
    }
    Some(InstanceSpec {
        name: "lb-1".into(),
        kind: RoleKind::Lb,
        port: public_port,
        args,
        env: Vec::new(),
    })
}

fn value_name<T: clap::ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// The state of the deployment, shared by the instance tasks and mirrored to `state.json`.
#[derive(Clone)]
struct SharedState {
    dir: PathBuf,
    inner: Arc<Mutex<DeploymentState>>,
}

impl SharedState {
    fn update(&self, f: impl FnOnce(&mut DeploymentState)) -> DeploymentState {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        if let Err(e) = state::write(&self.dir, &s) {
            tracing::warn!(error = %e, "cannot write the state file");
        }
        s.clone()
    }

    fn role(&self, index: usize, f: impl FnOnce(&mut RoleState)) {
        self.update(|s| {
            if let Some(r) = s.roles.get_mut(index) {
                f(r);
            }
        });
    }
}

/// A started, ready instance.
struct Running {
    child: Child,
    /// Held, never written: closing it tells the role to exit.
    _stdin: ChildStdin,
    pid: u32,
    ready: ReadyLine,
}

/// Why an instance did not become ready.
#[derive(Debug)]
pub struct StartFailure {
    pub role: String,
    pub reason: String,
    pub log_tail: Vec<String>,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} did not become ready: {}", self.role, self.reason)?;
        if !self.log_tail.is_empty() {
            write!(f, "\nlast lines of its log:")?;
            for line in &self.log_tail {
                write!(f, "\n  {line}")?;
            }
        }
        Ok(())
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn log_path(dir: &Path, role: &str) -> PathBuf {
    state::log_dir(dir).join(format!("{role}.log"))
}

async fn start_instance(
    config: &SupervisorConfig,
    spec: &InstanceSpec,
) -> Result<Running, StartFailure> {
    let log_file = log_path(&config.dir, &spec.name);
    let fail = |reason: String| StartFailure {
        role: spec.name.clone(),
        reason,
        log_tail: tail(&log_file, 12),
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file)
        .map_err(|e| fail(format!("cannot open {}: {e}", log_file.display())))?;
    let stderr_log = log
        .try_clone()
        .map_err(|e| fail(format!("cannot open {}: {e}", log_file.display())))?;
    let mut cmd = Command::new(&config.exe);
    cmd.arg(spec.kind.as_str())
        .arg(spec.listen_flag())
        .arg(format!("127.0.0.1:{}", spec.port))
        .args(&spec.args)
        .arg("--name")
        .arg(&spec.name)
        .arg("--exit-on-stdin-eof")
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr_log))
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start {}: {e}", config.exe.display())))?;
    let pid = child.id().unwrap_or(0);
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.start_kill();
        return Err(fail("its standard streams could not be attached".into()));
    };
    let mut log_out = tokio::fs::File::from_std(log);
    let mut lines = BufReader::new(stdout).lines();
    let wait_ready = async {
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => match ReadyLine::parse(&line) {
                    Some(ready) => return Some(ready),
                    None => {
                        let _ = log_out.write_all(format!("{line}\n").as_bytes()).await;
                    }
                },
                _ => return None,
            }
        }
    };
    let ready = match tokio::time::timeout(config.ready_timeout, wait_ready).await {
        Ok(Some(ready)) => ready,
        Ok(None) => {
            let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            let how = match status {
                Ok(Ok(s)) => format!("it exited ({s}) before announcing readiness"),
                _ => "it closed its output before announcing readiness".into(),
            };
            let _ = child.start_kill();
            return Err(fail(how));
        }
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(fail(format!(
                "no readiness line within {} s",
                config.ready_timeout.as_secs()
            )));
        }
    };
    // Keep copying what the role prints on stdout into its log.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if log_out
                .write_all(format!("{line}\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    Ok(Running {
        child,
        _stdin: stdin,
        pid,
        ready,
    })
}

async fn stop_instance(mut running: Running, grace: Duration) {
    control::signal(running.pid, Signal::SIGTERM);
    if tokio::time::timeout(grace, running.child.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            pid = running.pid,
            "did not stop within the grace period: killing it"
        );
        let _ = running.child.kill().await;
    }
}

fn mark_ready(shared: &SharedState, index: usize, running: &Running) {
    let (pid, addrs) = (running.pid, running.ready.addrs.clone());
    shared.role(index, |r| {
        r.pid = Some(pid);
        r.addrs = addrs;
        r.state = RolePhase::Ready;
        r.last_error = None;
    });
}

/// Watches one instance until shutdown: restarts it when it crashes, gives up when it keeps
/// crashing.
async fn watch_instance(
    config: Arc<SupervisorConfig>,
    shared: SharedState,
    index: usize,
    mut spec: InstanceSpec,
    first: Running,
    mut shutdown: watch::Receiver<bool>,
) {
    let policy = config.policy;
    // Come back on the same port after a crash, so the load balancer (or a client) still
    // finds this instance.
    if let Some(port) = ["http", "postgres", "redis", "memcached"]
        .iter()
        .find_map(|key| first.ready.addrs.get(*key))
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
    {
        spec.port = port;
    }
    let mut running = Some(first);
    let mut crashes: Vec<Instant> = Vec::new();
    let mut backoff = policy.initial_backoff;
    loop {
        let exit_reason = match running.as_mut() {
            Some(r) => tokio::select! {
                status = r.child.wait() => match status {
                    Ok(s) => format!("exited unexpectedly ({s})"),
                    Err(e) => format!("could not be waited for: {e}"),
                },
                _ = shutdown.changed() => {
                    if let Some(r) = running.take() {
                        stop_instance(r, config.stop_grace).await;
                    }
                    shared.role(index, |r| { r.state = RolePhase::Stopped; r.pid = None; });
                    return;
                }
            },
            None => "did not become ready".into(),
        };
        running = None;
        let now = Instant::now();
        crashes.push(now);
        crashes.retain(|t| now.duration_since(*t) <= policy.window);
        if crashes.len() >= policy.max_crashes {
            let message = format!(
                "{} crashed {} times within {} s; giving up on it (last: {exit_reason}). See {}",
                spec.name,
                crashes.len(),
                policy.window.as_secs(),
                log_path(&config.dir, &spec.name).display()
            );
            eprintln!("strata up: {message}");
            tracing::error!(role = %spec.name, "{message}");
            shared.role(index, |r| {
                r.state = RolePhase::Failed;
                r.pid = None;
                r.last_error = Some(message.clone());
            });
            let _ = shutdown.changed().await;
            return;
        }
        if crashes.len() == 1 {
            backoff = policy.initial_backoff;
        }
        tracing::warn!(role = %spec.name, reason = %exit_reason, backoff_ms = backoff.as_millis() as u64, "restarting");
        shared.role(index, |r| {
            r.state = RolePhase::Restarting;
            r.pid = None;
            r.last_error = Some(exit_reason.clone());
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => {
                shared.role(index, |r| r.state = RolePhase::Stopped);
                return;
            }
        }
        backoff = (backoff * 2).min(policy.max_backoff);
        match start_instance(&config, &spec).await {
            Ok(r) => {
                shared.role(index, |s| s.restarts += 1);
                mark_ready(&shared, index, &r);
                running = Some(r);
            }
            Err(failure) => {
                tracing::warn!(role = %spec.name, "{failure}");
                shared.role(index, |s| s.restarts += 1);
            }
        }
    }
}

/// Starts `specs` at once (their state indexes begin at `first_index`), appending each result
/// to `started`; returns the failures.
async fn start_all(
    config: &Arc<SupervisorConfig>,
    shared: &SharedState,
    specs: &[InstanceSpec],
    first_index: usize,
    started: &mut Vec<Option<Running>>,
) -> Vec<StartFailure> {
    let mut starting = tokio::task::JoinSet::new();
    for (offset, spec) in specs.iter().cloned().enumerate() {
        let config = config.clone();
        starting.spawn(async move { (offset, start_instance(&config, &spec).await) });
    }
    let mut results: Vec<Option<Running>> = (0..specs.len()).map(|_| None).collect();
    let mut failures = Vec::new();
    while let Some(joined) = starting.join_next().await {
        match joined {
            Ok((offset, Ok(running))) => {
                mark_ready(shared, first_index + offset, &running);
                results[offset] = Some(running);
            }
            Ok((_, Err(failure))) => failures.push(failure),
            Err(e) => failures.push(StartFailure {
                role: "?".into(),
                reason: e.to_string(),
                log_tail: Vec::new(),
            }),
        }
    }
    started.extend(results);
    failures
}

/// Runs a deployment until `shutdown` resolves. `on_ready` is called once every instance has
/// announced readiness. Returns an error (after stopping whatever started) if any instance
/// fails to become ready at start.
pub async fn run(
    config: SupervisorConfig,
    shutdown: impl std::future::Future<Output = ()>,
    on_ready: impl FnOnce(&DeploymentState),
) -> anyhow::Result<()> {
    for d in [
        config.dir.clone(),
        state::log_dir(&config.dir),
        config.dir.join(state::DATA_DIR),
    ] {
        std::fs::create_dir_all(&d)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", d.display()))?;
    }
    let data_dir = config.dir.join(state::DATA_DIR);
    let topology = &config.topology;
    let has_lb = topology.lb.is_some();
    // Every role's name and kind, in start order: database servers, API servers, balancer.
    let mut names: Vec<(String, RoleKind)> = (1..=topology.database_nodes())
        .map(|i| (format!("pg-{i}"), RoleKind::Postgres))
        .collect();
    if topology.has_control() {
        names.push(("control-1".into(), RoleKind::Control));
    }
    names.extend((1..=topology.cache_nodes()).map(|i| (format!("cache-{i}"), RoleKind::Cache)));
    if topology.sessions == SessionsEngine::Redis {
        names.push(("sessions-1".into(), RoleKind::Cache));
    }
    names.extend((1..=topology.api.count).map(|i| (format!("api-{i}"), RoleKind::Api)));
    if has_lb {
        names.push(("lb-1".into(), RoleKind::Lb));
    }
    let roles: Vec<RoleState> = names
        .iter()
        .map(|(name, kind)| RoleState {
            name: name.clone(),
            kind: *kind,
            pid: None,
            addrs: Default::default(),
            restarts: 0,
            state: RolePhase::Starting,
            last_error: None,
        })
        .collect();
    let shared = SharedState {
        dir: config.dir.clone(),
        inner: Arc::new(Mutex::new(DeploymentState {
            topology: topology.name.clone(),
            supervisor_pid: std::process::id(),
            running: true,
            roles,
        })),
    };
    shared.update(|_| {});
    let config = Arc::new(config);
    let topology = &config.topology;

    // Phases, each waiting for the one before: the primary; its replicas (which copy it); the
    // API servers (which use it); the load balancer (which needs their addresses).
    let mut specs: Vec<InstanceSpec> = Vec::new();
    let mut started: Vec<Option<Running>> = Vec::new();
    let mut failures = Vec::new();
    let addr_of = |started: &[Option<Running>], index: usize, key: &str| {
        started
            .get(index)
            .and_then(|r| r.as_ref())
            .and_then(|r| r.ready.addrs.get(key).cloned())
    };
    let mut postgres_url = match &topology.data {
        DataEngine::PostgresUrl { url } => Some(url.clone()),
        _ => None,
    };
    let mut replica_urls: Vec<String> = Vec::new();
    if let Some(primary) = plan_primary(topology, &config.dir) {
        failures = start_all(
            &config,
            &shared,
            std::slice::from_ref(&primary),
            0,
            &mut started,
        )
        .await;
        specs.push(primary);
        if let Some(addr) = addr_of(&started, 0, "postgres") {
            let replicas = plan_replicas(topology, &config.dir, &addr);
            if failures.is_empty() && !replicas.is_empty() {
                let first = specs.len();
                failures = start_all(&config, &shared, &replicas, first, &mut started).await;
            }
            specs.extend(replicas);
            let nodes: Vec<(String, String)> = specs
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some((s.name.clone(), addr_of(&started, i, "postgres")?)))
                .collect();
            let (primary_url, replicas) = postgres_urls(&nodes);
            postgres_url = Some(primary_url);
            if nodes.len() > 1 {
                replica_urls = replicas;
            }
            if failures.is_empty()
                && let Some(control) = plan_control(topology, &config.dir, &nodes)
            {
                failures = start_all(
                    &config,
                    &shared,
                    std::slice::from_ref(&control),
                    specs.len(),
                    &mut started,
                )
                .await;
                specs.push(control);
            }
        }
    }
    let mut cache_addrs: Vec<String> = Vec::new();
    if failures.is_empty() {
        let caches = plan_cache(topology, &config.dir);
        if !caches.is_empty() {
            let first = specs.len();
            failures = start_all(&config, &shared, &caches, first, &mut started).await;
            let key = topology
                .cache
                .shared
                .map_or("redis", |(engine, _)| engine.name());
            cache_addrs = (first..first + caches.len())
                .filter_map(|i| addr_of(&started, i, key))
                .collect();
            specs.extend(caches);
        }
    }
    let mut api_env = cache_env(topology, &cache_addrs);
    if failures.is_empty()
        && let Some(sessions) = plan_sessions(topology, &config.dir)
    {
        let at = specs.len();
        let one = vec![sessions];
        failures = start_all(&config, &shared, &one, at, &mut started).await;
        if let Some(addr) = addr_of(&started, at, "redis") {
            api_env.push(("STRATA_SESSIONS_REDIS".into(), format!("redis://{addr}")));
        }
        specs.extend(one);
    }
    if failures.is_empty() {
        let apis = plan(
            topology,
            config.public_port,
            &data_dir,
            postgres_url.as_deref(),
            &replica_urls,
            &api_env,
        );
        failures = start_all(&config, &shared, &apis, specs.len(), &mut started).await;
        let first_api = specs.len();
        specs.extend(apis);
        if failures.is_empty()
            && let Some(lb) = {
                let backends: Vec<(String, String)> = specs[first_api..]
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        Some((s.name.clone(), addr_of(&started, first_api + i, "http")?))
                    })
                    .collect();
                plan_lb(topology, config.public_port, &backends, &config.dir)
            }
        {
            failures = start_all(
                &config,
                &shared,
                std::slice::from_ref(&lb),
                specs.len(),
                &mut started,
            )
            .await;
            specs.push(lb);
        }
    }
    if !failures.is_empty() {
        for running in started.into_iter().flatten() {
            stop_instance(running, config.stop_grace).await;
        }
        shared.update(|s| {
            s.running = false;
            for r in &mut s.roles {
                r.pid = None;
                r.state = RolePhase::Stopped;
            }
        });
        let text: Vec<String> = failures.iter().map(ToString::to_string).collect();
        anyhow::bail!("{}", text.join("\n"));
    }
    on_ready(&shared.update(|_| {}));

    // Stopping goes the other way: balancer and API servers first (they finish their requests),
    // the database servers last.
    let (stop_apps, apps_rx) = watch::channel(false);
    let (stop_databases, databases_rx) = watch::channel(false);
    let mut apps = tokio::task::JoinSet::new();
    let mut databases = tokio::task::JoinSet::new();
    for (index, (spec, running)) in specs.into_iter().zip(started).enumerate() {
        if let Some(running) = running {
            // Servers of data (databases, caches) stop after the applications that use them.
            let (set, rx) = if matches!(spec.kind, RoleKind::Postgres | RoleKind::Cache) {
                (&mut databases, databases_rx.clone())
            } else {
                (&mut apps, apps_rx.clone())
            };
            set.spawn(watch_instance(
                config.clone(),
                shared.clone(),
                index,
                spec,
                running,
                rx,
            ));
        }
    }
    shutdown.await;
    let _ = stop_apps.send(true);
    while apps.join_next().await.is_some() {}
    let _ = stop_databases.send(true);
    while databases.join_next().await.is_some() {}
    shared.update(|s| {
        s.running = false;
        for r in &mut s.roles {
            r.pid = None;
            if r.state != RolePhase::Failed {
                r.state = RolePhase::Stopped;
            }
        }
    });
    Ok(())
}

/// The endpoints table printed once a deployment is ready.
pub fn endpoints_table(state: &DeploymentState) -> String {
    let mut rows = vec![[
        "ROLE".to_string(),
        "KIND".into(),
        "PID".into(),
        "STATE".into(),
        "ENDPOINT".into(),
    ]];
    for r in &state.roles {
        let endpoint = match (r.addrs.get("http"), r.addrs.get("postgres")) {
            (Some(a), _) if r.kind == RoleKind::Control => format!("http://{a}/cluster"),
            (Some(a), _) => format!("http://{a}/users/12"),
            (None, Some(a)) => format!("postgresql://{POSTGRES_USER}@{a}/{POSTGRES_DATABASE}"),
            (None, None) => "-".into(),
        };
        let state = r.state.as_str().to_string();
        rows.push([
            r.name.clone(),
            r.kind.as_str().into(),
            r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            state,
            endpoint,
        ]);
    }
    format_rows(&rows)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{ApiSpec, DataEngine};

    #[test]
    fn cache_nodes_are_planned_and_the_api_servers_are_told_where_they_are() {
        let t = Topology::parse(
            "[cache]\nengine = \"redis\"\nnodes = 2\n[api]\ncount = 3\n",
            8080,
        )
        .expect("valid");
        let nodes = plan_cache(&t, Path::new("/d"));
        assert_eq!(
            nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["cache-1", "cache-2"]
        );
        assert!(nodes[1].args.contains(&"/d/cache/cache-2".to_string()));
        assert!(nodes.iter().all(|n| n.kind == RoleKind::Cache));
        let env = cache_env(&t, &["127.0.0.1:7001".into(), "127.0.0.1:7002".into()]);
        assert!(env.contains(&(
            "STRATA_CACHE_REDIS".into(),
            "redis://127.0.0.1:7001,redis://127.0.0.1:7002".into()
        )));
        assert!(
            env.contains(&("STRATA_CACHE_TTL_MS".into(), "60000".into())),
            "coherent L1s may keep entries long: {env:?}"
        );
        let apis = plan(&t, 8080, Path::new("/d"), None, &[], &env);
        assert!(apis.iter().all(|a| a.env == env));

        let t = Topology::parse("[cache]\nengine = \"memcached\"\n[api]\ncount = 3\n", 8080)
            .expect("valid");
        let env = cache_env(&t, &["127.0.0.1:7001".into()]);
        assert_eq!(
            env,
            [(
                "STRATA_CACHE_MEMCACHED".to_string(),
                "127.0.0.1:7001".to_string()
            )],
            "without a bus L1 keeps its short default TTL"
        );
        assert!(plan_cache(&Topology::default_topology(), Path::new("/d")).is_empty());
    }

    #[test]
    fn the_first_api_takes_the_public_port_unless_a_balancer_does() {
        let t = Topology {
            name: "t".into(),
            api: ApiSpec {
                count: 3,
                ports: vec![9002],
            },
            lb: None,
            data: DataEngine::Sqlite,
            cache: Default::default(),
            sessions: Default::default(),
        };
        let p = plan(&t, 8080, Path::new("/d"), None, &[], &[]);
        let ports: Vec<(&str, u16, &str)> = p
            .iter()
            .map(|s| (s.name.as_str(), s.port, s.args[3].as_str()))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("api-1", 8080, "1"),
                ("api-2", 9002, "2"),
                ("api-3", 0, "3")
            ]
        );
        assert!(plan_lb(&t, 8080, &[], Path::new("/d")).is_none());
        let with_lb = Topology {
            lb: Some(crate::topology::LbSpec {
                algorithm: crate::topology::AlgorithmName::Random,
                sticky_cookie: Some("pin".into()),
                tls: Some(crate::topology::LbTls {
                    port: 8443,
                    cert_and_key: None,
                    redirect: true,
                }),
                timeouts: crate::topology::LbTimeouts {
                    total_ms: Some(3000),
                    ..Default::default()
                },
            }),
            ..t
        };
        let p = plan(&with_lb, 8080, Path::new("/d"), None, &[], &[]);
        assert_eq!(
            p.iter().map(|s| s.port).collect::<Vec<_>>(),
            vec![9002, 0, 0],
            "with a balancer no API takes the public port"
        );
        let lb = plan_lb(
            &with_lb,
            8080,
            &[("api-1".into(), "127.0.0.1:9002".into())],
            Path::new("/d"),
        )
        .expect("lb");
        for expected in [
            "--sticky-cookie",
            "pin",
            "--tls-listen",
            "127.0.0.1:8443",
            "--dev-cert",
            "/d/lb-1-dev-cert.pem",
            "--https-redirect",
            "--total-timeout-ms",
            "3000",
        ] {
            assert!(
                lb.args.contains(&expected.to_string()),
                "{expected}: {:?}",
                lb.args
            );
        }
        assert_eq!(lb.port, 8080);
        assert!(
            lb.args.contains(&"api-1=127.0.0.1:9002".to_string())
                && lb.args.contains(&"random".to_string())
        );
    }

    #[test]
    fn a_postgres_topology_plans_a_primary_its_replicas_and_apis_on_the_primary() {
        let t = Topology {
            name: "t".into(),
            api: ApiSpec {
                count: 2,
                ports: Vec::new(),
            },
            lb: None,
            data: DataEngine::Postgres {
                replicas: 2,
                commit: crate::topology::CommitMode::Quorum,
                rejoin: crate::topology::RejoinMode::Auto,
            },
            cache: Default::default(),
            sessions: Default::default(),
        };
        let primary = plan_primary(&t, Path::new("/d")).expect("a primary");
        assert_eq!(primary.name, "pg-1");
        assert!(
            primary.args.contains(&"pg-2,pg-3".to_string()),
            "{:?}",
            primary.args
        );
        assert!(primary.args.contains(&"/d/postgres/pg-1".to_string()));
        let replicas = plan_replicas(&t, Path::new("/d"), "127.0.0.1:5999");
        assert_eq!(
            replicas.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["pg-2", "pg-3"]
        );
        assert!(
            replicas
                .iter()
                .all(|r| r.args.contains(&"127.0.0.1:5999".to_string()))
        );
        assert!(
            std::iter::once(&primary)
                .chain(&replicas)
                .all(|r| r.args.windows(2).any(|w| w == ["--rejoin", "auto"])),
            "every server may be a fenced primary one day: each is told how to rejoin"
        );
        let url = "postgresql://strata@127.0.0.1:5999/strata";
        let replica = "postgresql://strata@127.0.0.1:6000/strata".to_string();
        let apis = plan(
            &t,
            8080,
            Path::new("/d/data"),
            Some(url),
            std::slice::from_ref(&replica),
            &[],
        );
        let expected = [
            ("STRATA_POSTGRES_URL".to_string(), url.to_string()),
            ("STRATA_POSTGRES_REPLICAS".to_string(), replica.clone()),
        ];
        assert!(apis.iter().all(|a| a.env == expected), "{apis:?}");
        assert!(
            apis.iter()
                .all(|a| !a.args.iter().any(|x| x.contains("postgresql://"))),
            "the URL is passed in the environment, never on the command line"
        );
        assert!(
            plan_primary(
                &Topology {
                    data: DataEngine::Sqlite,
                    ..t
                },
                Path::new("/d")
            )
            .is_none()
        );
    }
}
