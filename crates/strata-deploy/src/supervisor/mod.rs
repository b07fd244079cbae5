//! The supervisor behind `strata up`: start every role of a [`Plan`] once the roles it depends
//! on are ready, restart the ones that crash, and stop them all — dependents first — on
//! request. It knows roles only by name and by what the plan says; nothing here is specific to
//! a tier.
//!
//! Each role is a child process of the `strata` executable (`strata api …`):
//! - **stdin** is a pipe the supervisor holds and never writes. Roles are started with
//!   `--exit-on-stdin-eof`, so when the supervisor dies — even by SIGKILL — the pipe closes and
//!   they exit: no orphans, without any platform-specific "parent death" call.
//! - **stdout** is read for the readiness line (bounded wait); every other line, and stderr,
//!   goes to `DIR/logs/<role>.log`.
//!
//! Restart policy ([`RestartPolicy`]): a role that exits unexpectedly is restarted after a
//! backoff that doubles from 100 ms to 5 s, on the port it had, with the same wiring; one that
//! crashes 5 times within 60 s is given up on (marked `failed`, reported on stderr and in the
//! state file) while the others keep serving.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use strata_core::ready::ReadyLine;
use strata_engines::process;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;

mod scaling;

use crate::plan::{Announced, Plan, RoleSpec, Wiring};
use crate::state::{self, DeploymentState, RolePhase, RoleState};

pub use strata_control::cluster::POSTGRES_DIR;
pub use strata_engines::postgres::{DATABASE as POSTGRES_DATABASE, SUPERUSER as POSTGRES_USER};

/// When and how often crashed roles are restarted.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// This many crashes within `window` and the role is given up on.
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
    /// The topology's name, for the state file.
    pub topology: String,
    pub plan: Plan,
    /// How long a role may take to print its readiness line.
    pub ready_timeout: Duration,
    /// How long a stopping role gets after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
    pub policy: RestartPolicy,
}

/// Exit status of a role that could not bind its listening address (see `strata_core::ready`).
const ADDRESS_IN_USE: i32 = strata_core::ready::EXIT_ADDRESS_IN_USE;

/// Why a role did not become ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureReason {
    /// Its listening address was taken (the role exited with
    /// `strata_core::ready::EXIT_ADDRESS_IN_USE`); `port` is the port it asked for.
    AddressInUse { port: u16 },
    /// It exited (or closed its output) before announcing readiness.
    Exited(String),
    /// No readiness line within the deadline.
    Timeout(Duration),
    /// It could not be started at all, or its command could not be built.
    NotStarted(String),
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureReason::AddressInUse { port } => write!(
                f,
                "its address is in use: another process listens on port {port}"
            ),
            FailureReason::Exited(how) => f.write_str(how),
            FailureReason::Timeout(t) => write!(f, "no readiness line within {} s", t.as_secs()),
            FailureReason::NotStarted(why) => f.write_str(why),
        }
    }
}

/// A role that did not become ready.
#[derive(Debug, Clone)]
pub struct StartFailure {
    pub role: String,
    pub reason: FailureReason,
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

/// A deployment that could not start: every role that failed (the others were stopped).
#[derive(Debug, Clone, thiserror::Error)]
pub struct StartError {
    pub failures: Vec<StartFailure>,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text: Vec<String> = self.failures.iter().map(ToString::to_string).collect();
        f.write_str(&text.join("\n"))
    }
}

impl StartError {
    /// The port a role could not listen on because it was taken, if that is why.
    pub fn port_in_use(&self) -> Option<u16> {
        self.failures.iter().find_map(|f| match f.reason {
            FailureReason::AddressInUse { port } => Some(port),
            _ => None,
        })
    }
}

/// The state of the deployment, shared by the role tasks and mirrored to `state.json`.
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

    fn role(&self, name: &str, f: impl FnOnce(&mut RoleState)) {
        self.update(|s| {
            if let Some(r) = s.roles.iter_mut().find(|r| r.name == name) {
                f(r);
            }
        });
    }

    /// What every role announced at its last start.
    fn announced(&self) -> Announced {
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.roles
            .iter()
            .map(|r| (r.name.clone(), r.addrs.clone()))
            .collect()
    }
}

/// A started, ready role process.
struct Running {
    child: Child,
    /// Held, never written: closing it tells the role to exit.
    _stdin: ChildStdin,
    pid: u32,
    ready: ReadyLine,
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

/// Writes a role's file whole or not at all (a temporary file renamed over it), its directory
/// made first.
fn write_file(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// Starts `spec` on `port` with the addresses in `announced`, and waits for its readiness line.
async fn start_role(
    config: &SupervisorConfig,
    spec: &RoleSpec,
    port: u16,
    announced: &Announced,
) -> Result<Running, StartFailure> {
    let log_file = log_path(&config.dir, &spec.name);
    let fail = |reason: FailureReason| StartFailure {
        role: spec.name.clone(),
        reason,
        log_tail: tail(&log_file, 12),
    };
    let invocation = spec
        .invocation(&Wiring { port, announced })
        .map_err(|e| fail(FailureReason::NotStarted(e.to_string())))?;
    let files = spec
        .files(&Wiring { port, announced })
        .map_err(|e| fail(FailureReason::NotStarted(e.to_string())))?;
    for (path, contents) in files {
        write_file(&path, &contents).map_err(|e| {
            fail(FailureReason::NotStarted(format!(
                "cannot write {}: {e}",
                path.display()
            )))
        })?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file)
        .map_err(|e| {
            fail(FailureReason::NotStarted(format!(
                "cannot open {}: {e}",
                log_file.display()
            )))
        })?;
    let stderr_log = log.try_clone().map_err(|e| {
        fail(FailureReason::NotStarted(format!(
            "cannot open {}: {e}",
            log_file.display()
        )))
    })?;
    let mut cmd = Command::new(&config.exe);
    cmd.args(&invocation.args)
        .envs(invocation.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr_log))
        .kill_on_drop(true);
    for var in &invocation.env_remove {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().map_err(|e| {
        fail(FailureReason::NotStarted(format!(
            "cannot start {}: {e}",
            config.exe.display()
        )))
    })?;
    let pid = child.id().unwrap_or(0);
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.start_kill();
        return Err(fail(FailureReason::NotStarted(
            "its standard streams could not be attached".into(),
        )));
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
            let reason = match status {
                Ok(Ok(s)) if s.code() == Some(ADDRESS_IN_USE) => {
                    FailureReason::AddressInUse { port }
                }
                Ok(Ok(s)) => {
                    FailureReason::Exited(format!("it exited ({s}) before announcing readiness"))
                }
                _ => {
                    FailureReason::Exited("it closed its output before announcing readiness".into())
                }
            };
            let _ = child.start_kill();
            return Err(fail(reason));
        }
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(fail(FailureReason::Timeout(config.ready_timeout)));
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

async fn stop_role(mut running: Running, grace: Duration) {
    process::signal(running.pid, Signal::SIGTERM);
    // A role frozen from the dashboard (SIGSTOP to its whole tree) acts on the SIGTERM only
    // once it runs again, and its engine's processes must run to be stopped by it.
    process::signal_all(running.pid, Signal::SIGCONT);
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

fn mark_ready(shared: &SharedState, name: &str, running: &Running) {
    let (pid, addrs) = (running.pid, running.ready.addrs.clone());
    shared.role(name, |r| {
        r.pid = Some(pid);
        r.addrs = addrs;
        r.state = RolePhase::Ready;
        r.last_error = None;
    });
}

/// The port of the listener a role keeps across restarts, from its readiness line.
fn kept_port(spec: &RoleSpec, ready: &ReadyLine) -> Option<u16> {
    ready
        .addrs
        .get(spec.listener)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
}

/// Watches one role until shutdown: restarts it when it crashes, gives up when it keeps
/// crashing.
async fn watch_role(
    config: Arc<SupervisorConfig>,
    shared: SharedState,
    spec: RoleSpec,
    first: Running,
    mut shutdown: watch::Receiver<bool>,
) {
    let policy = config.policy;
    // Come back on the same port after a crash, so the roles that depend on it (the
    // balancer, API servers, replicas) still find it.
    let port = kept_port(&spec, &first.ready).unwrap_or(spec.port);
    let name = spec.name.clone();
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
                        stop_role(r, config.stop_grace).await;
                    }
                    shared.role(&name, |r| { r.state = RolePhase::Stopped; r.pid = None; });
                    return;
                }
            },
            None => "did not become ready".into(),
        };
        running = None;
        if crate::outage::is_held(&config.dir, &name) {
            // Held down (`strata datacenter kill`): no crash, no backoff; back once released.
            shared.role(&name, |r| (r.state, r.pid) = (RolePhase::Held, None));
            if !crate::outage::until_released(&config.dir, &name, &mut shutdown).await {
                shared.role(&name, |r| r.state = RolePhase::Stopped);
                return;
            }
            match start_role(&config, &spec, port, &shared.announced()).await {
                Ok(r) => {
                    mark_ready(&shared, &name, &r);
                    running = Some(r);
                }
                Err(failure) => tracing::warn!(role = %name, "{failure}"),
            }
            continue;
        }
        let now = Instant::now();
        crashes.push(now);
        crashes.retain(|t| now.duration_since(*t) <= policy.window);
        if crashes.len() >= policy.max_crashes {
            let message = format!(
                "{name} crashed {} times within {} s; giving up on it (last: {exit_reason}). See {}",
                crashes.len(),
                policy.window.as_secs(),
                log_path(&config.dir, &name).display()
            );
            eprintln!("strata up: {message}");
            tracing::error!(role = %name, "{message}");
            shared.role(&name, |r| {
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
        tracing::warn!(role = %name, reason = %exit_reason, backoff_ms = backoff.as_millis() as u64, "restarting");
        shared.role(&name, |r| {
            r.state = RolePhase::Restarting;
            r.pid = None;
            r.last_error = Some(exit_reason.clone());
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => {
                shared.role(&name, |r| r.state = RolePhase::Stopped);
                return;
            }
        }
        backoff = (backoff * 2).min(policy.max_backoff);
        let announced = shared.announced();
        match start_role(&config, &spec, port, &announced).await {
            Ok(r) => {
                shared.role(&name, |s| s.restarts += 1);
                mark_ready(&shared, &name, &r);
                running = Some(r);
            }
            Err(failure) => {
                tracing::warn!(role = %name, "{failure}");
                shared.role(&name, |s| s.restarts += 1);
            }
        }
    }
}

/// Starts every role of the plan, each once the roles it depends on are ready (roles whose
/// dependencies are ready start together). Stops starting at the first failure and returns
/// every failure, with whatever did start.
async fn start_in_order(
    config: &Arc<SupervisorConfig>,
    shared: &SharedState,
) -> (BTreeMap<String, Running>, Vec<StartFailure>) {
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut announced = Announced::new();
    let mut failures = Vec::new();
    let mut waiting: Vec<&RoleSpec> = config.plan.roles.iter().collect();
    let mut starting = tokio::task::JoinSet::new();
    loop {
        if failures.is_empty() {
            let (ready, rest): (Vec<&RoleSpec>, Vec<&RoleSpec>) = waiting
                .into_iter()
                .partition(|r| r.depends_on.iter().all(|d| announced.contains_key(d)));
            waiting = rest;
            for spec in ready {
                let (config, spec, announced) = (config.clone(), spec.clone(), announced.clone());
                starting.spawn(async move {
                    let result = start_role(&config, &spec, spec.port, &announced).await;
                    (spec.name, result)
                });
            }
        }
        let Some(joined) = starting.join_next().await else {
            break;
        };
        match joined {
            Ok((name, Ok(r))) => {
                mark_ready(shared, &name, &r);
                announced.insert(name.clone(), r.ready.addrs.clone());
                running.insert(name, r);
            }
            Ok((_, Err(failure))) => failures.push(failure),
            Err(e) => failures.push(StartFailure {
                role: "?".into(),
                reason: FailureReason::NotStarted(e.to_string()),
                log_tail: Vec::new(),
            }),
        }
    }
    if failures.is_empty() && !waiting.is_empty() {
        // Only a plan whose dependencies name no role can get here.
        failures.extend(waiting.iter().map(|r| StartFailure {
            role: r.name.clone(),
            reason: FailureReason::NotStarted(format!(
                "it waits for roles that never started: {}",
                r.depends_on.join(", ")
            )),
            log_tail: Vec::new(),
        }));
    }
    (running, failures)
}

/// Runs a deployment until `shutdown` resolves. `on_ready` is called once every role has
/// announced readiness. If any role fails to become ready at start, whatever started is
/// stopped and every failure returned.
pub async fn run(
    config: SupervisorConfig,
    shutdown: impl std::future::Future<Output = ()>,
    on_ready: impl FnOnce(&DeploymentState),
) -> Result<(), SuperviseError> {
    for d in [
        config.dir.clone(),
        state::log_dir(&config.dir),
        config.dir.join(state::DATA_DIR),
    ] {
        std::fs::create_dir_all(&d).map_err(|e| SuperviseError::Directory {
            path: d.clone(),
            source: e,
        })?;
    }
    let roles: Vec<RoleState> = config
        .plan
        .roles
        .iter()
        .map(|r| RoleState {
            name: r.name.clone(),
            kind: r.kind,
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
            topology: config.topology.clone(),
            shard_map: config.plan.shard_map.clone(),
            supervisor_pid: std::process::id(),
            running: true,
            roles,
        })),
    };
    shared.update(|_| {});
    let config = Arc::new(config);

    for setup in &config.plan.setup {
        setup.run().map_err(|source| SuperviseError::Setup {
            what: setup.what,
            source,
        })?;
    }
    let (mut running, failures) = start_in_order(&config, &shared).await;
    if !failures.is_empty() {
        for name in stop_order(&config.plan) {
            if let Some(r) = running.remove(&name) {
                stop_role(r, config.stop_grace).await;
            }
        }
        shared.update(|s| {
            s.running = false;
            for r in &mut s.roles {
                r.pid = None;
                r.state = RolePhase::Stopped;
            }
        });
        return Err(SuperviseError::Start(StartError { failures }));
    }
    on_ready(&shared.update(|_| {}));

    let mut watchers = scaling::Watchers::new();
    for spec in &config.plan.roles {
        if let Some(r) = running.remove(&spec.name) {
            let watcher = scaling::watch(&config, &shared, spec.clone(), r);
            watchers.insert(spec.name.clone(), watcher);
        }
    }
    scaling::serve(&config, &shared, &mut watchers, shutdown).await;
    // Dependents first: the balancer before the API servers (which finish their requests),
    // the API servers before the databases and caches they use (with data centres, each
    // data centre's cache servers after its own API servers, the only ones that use them).
    for wave in stop_waves(&config.plan) {
        let mut tasks = Vec::new();
        for name in wave {
            if let Some((stop, task)) = watchers.remove(&name) {
                let _ = stop.send(true);
                tasks.push(task);
            }
        }
        for task in tasks {
            let _ = task.await;
        }
    }
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

/// Why the supervisor could not run a deployment.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("cannot create {}: {source}", path.display())]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot {what}: {source:#}")]
    Setup {
        what: &'static str,
        source: anyhow::Error,
    },
    #[error(transparent)]
    Start(StartError),
}

/// The roles grouped into stop waves: each wave holds the roles no remaining role depends on.
pub fn stop_waves(plan: &Plan) -> Vec<Vec<String>> {
    let mut left: BTreeSet<&str> = plan.roles.iter().map(|r| r.name.as_str()).collect();
    let mut waves = Vec::new();
    while !left.is_empty() {
        let wave: Vec<String> = plan
            .roles
            .iter()
            .filter(|r| left.contains(r.name.as_str()))
            .filter(|r| {
                !plan
                    .dependents(&r.name)
                    .any(|d| left.contains(d.name.as_str()))
            })
            .map(|r| r.name.clone())
            .collect();
        if wave.is_empty() {
            // A cycle (the plan's check forbids it): stop the rest together.
            waves.push(left.iter().map(|s| s.to_string()).collect());
            break;
        }
        for name in &wave {
            left.remove(name.as_str());
        }
        waves.push(wave);
    }
    waves
}

/// Every role, in the order it is stopped.
pub fn stop_order(plan: &Plan) -> Vec<String> {
    stop_waves(plan).into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanContext;
    use crate::topology::Topology;

    /// The plan of a valid topology, its public port 8080, in `/d`.
    fn plan_of(text: &str) -> Plan {
        let topology = Topology::parse(text, 8080).expect("valid");
        Plan::compile(
            &topology,
            &PlanContext {
                dir: "/d".into(),
                public_port: 8080,
            },
        )
    }

    #[test]
    fn roles_stop_after_every_role_that_depends_on_them() {
        let plan = plan_of(
            "[lb]\n[api]\ncount = 2\n[data]\nengine = \"postgres\"\nreplicas = 1\n[cache]\nengine = \"redis\"\n",
        );
        assert_eq!(
            stop_waves(&plan),
            [
                // Nothing depends on the controller: it stops first, so that stopping the
                // databases later is never taken for a failure.
                vec!["control-1".to_string(), "lb-1".into()],
                vec!["api-1".into(), "api-2".into()],
                vec!["pg-2".into(), "cache-1".into()],
                vec!["pg-1".into()],
            ]
        );
    }

    #[test]
    fn each_data_centres_cache_servers_stop_after_its_own_api_servers() {
        let plan = plan_of(
            "[lb]\n[api]\ncount = 2\n[data]\nengine = \"postgres\"\n[dns]\n[cache]\nengine = \"redis\"\n\
             [[datacenter]]\nname = \"us-east\"\n[[datacenter]]\nname = \"us-west\"\n\
             [[link]]\nbetween = [\"us-east\", \"us-west\"]\none_way_ms = 5\n",
        );
        let waves = stop_waves(&plan);
        let wave_of = |name: &str| {
            waves
                .iter()
                .position(|w| w.iter().any(|n| n == name))
                .unwrap_or_else(|| panic!("{name} in {waves:?}"))
        };
        for dc in ["us-east", "us-west"] {
            let cache = wave_of(&format!("{dc}-cache-1"));
            for api in 1..=2 {
                assert!(
                    wave_of(&format!("{dc}-api-{api}")) < cache,
                    "{dc}: {waves:?}"
                );
            }
        }
        // Every role is stopped once.
        let stopped = stop_order(&plan);
        assert_eq!(stopped.len(), plan.roles.len(), "{stopped:?}");
    }
}
