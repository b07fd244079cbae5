//! `strata up`: read and compile the topology (every mistake at once), plan it, and supervise
//! the roles — in this terminal, or detached in the background until every role is ready.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::Signal;
use strata_engines::process;

use crate::plan::{Plan, PlanContext};
use crate::present;
use crate::state;
use crate::supervisor::{self, RestartPolicy, SuperviseError, SupervisorConfig};
use crate::topology::{DEFAULT_TOPOLOGY, Environment, Topology};

/// How long `up -d` waits for the whole deployment to become ready.
const DETACH_READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Exit status of a detached supervisor whose public port was taken (so that `up -d` can say
/// so without reading its log).
pub const EXIT_PORT_IN_USE: i32 = strata_core::ready::EXIT_ADDRESS_IN_USE;

/// What `strata up` was asked to run.
#[derive(Debug, Clone)]
pub struct Up {
    /// The topology file; `None`: the built-in default.
    pub file: Option<PathBuf>,
    /// The deployment directory: state, logs and data live here.
    pub dir: PathBuf,
    /// The public entry port on 127.0.0.1 (0 picks a free port).
    pub port: u16,
}

/// Why `strata up` did not run the deployment.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// The public port is taken: nothing was left running.
    #[error(
        "{details}\nhint: is port {port} in use? Pass --port with another port (0 picks a free one)"
    )]
    PortInUse { port: u16, details: String },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Up {
    /// The topology, compiled: every mistake of the file (and every engine it needs that is
    /// not installed) at once, each with its line.
    pub fn topology(&self) -> anyhow::Result<Topology> {
        let (text, source) = match &self.file {
            Some(path) => (
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the topology file {}", path.display()))?,
                path.display().to_string(),
            ),
            None => (
                DEFAULT_TOPOLOGY.to_string(),
                "the default topology".to_string(),
            ),
        };
        Topology::compile(&text, self.port, &Environment::this_machine())
            .map_err(|e| anyhow::anyhow!("{source}: {e}"))
    }

    /// Refuses a directory where a deployment already runs.
    fn refuse_if_running(&self) -> anyhow::Result<()> {
        if let Some(state) = state::read(&self.dir)?
            && state.running
            && state.supervisor_pid != std::process::id()
            && process::is_alive(state.supervisor_pid)
        {
            anyhow::bail!(
                "a deployment is already running in {} (supervisor pid {}): run `strata down --dir {}` first, or pass another --dir",
                self.dir.display(),
                state.supervisor_pid,
                self.dir.display()
            );
        }
        Ok(())
    }

    /// Checks everything that can be checked before a process starts, and prepares the
    /// deployment directory.
    fn prepare(&self) -> anyhow::Result<Topology> {
        let topology = self.topology()?;
        self.refuse_if_running()?;
        std::fs::create_dir_all(state::log_dir(&self.dir)).with_context(|| {
            format!(
                "cannot create the deployment directory {}",
                self.dir.display()
            )
        })?;
        Ok(topology)
    }

    /// Runs the deployment in this process until SIGTERM or Ctrl-C. `on_ready` is told once
    /// every role is ready.
    pub async fn supervise(
        &self,
        exe: PathBuf,
        on_ready: impl FnOnce(&state::DeploymentState),
    ) -> Result<(), UpError> {
        let topology = self.prepare()?;
        let plan = Plan::compile(
            &topology,
            &PlanContext {
                dir: self.dir.clone(),
                public_port: self.port,
            },
        );
        let config = SupervisorConfig {
            exe,
            dir: self.dir.clone(),
            topology: topology.name.clone(),
            plan,
            ready_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            policy: RestartPolicy::default(),
        };
        match supervisor::run(config, strata_core::shutdown::requested(), on_ready).await {
            Ok(()) => Ok(()),
            Err(SuperviseError::Start(e)) => match e.port_in_use() {
                Some(port) if port == self.port && port != 0 => Err(UpError::PortInUse {
                    port,
                    details: e.to_string(),
                }),
                _ => Err(UpError::Other(e.into())),
            },
            Err(e) => Err(UpError::Other(e.into())),
        }
    }

    /// `up -d`: starts the supervisor in the background (`exe up --supervise …`) and waits
    /// until it reports every role ready; prints the endpoints.
    pub async fn detach(&self, exe: &Path) -> Result<(), UpError> {
        self.prepare()?;
        let log_path = state::log_dir(&self.dir).join("supervisor.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("up")
            .arg("--supervise")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--port")
            .arg(self.port.to_string());
        if let Some(file) = &self.file {
            cmd.arg("--file").arg(file);
        }
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().context("cannot open the log")?))
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().context("cannot start the supervisor")?;
        let pid = child.id();
        let deadline = Instant::now() + DETACH_READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().context("cannot watch the supervisor")? {
                let tail = supervisor::tail(&log_path, 20).join("\n");
                let details = format!("the deployment did not start ({status}):\n{tail}");
                return Err(if status.code() == Some(EXIT_PORT_IN_USE) {
                    UpError::PortInUse {
                        port: self.port,
                        details,
                    }
                } else {
                    UpError::Other(anyhow::anyhow!(details))
                });
            }
            if let Ok(Some(state)) = state::read(&self.dir)
                && state.supervisor_pid == pid
                && state.running
                && state.all_ready()
            {
                println!("{}", present::endpoints_table(&state));
                println!(
                    "Running in the background (supervisor pid {pid}). See `strata status --dir {0}`, `strata logs --dir {0}`; stop with `strata down --dir {0}`.",
                    self.dir.display()
                );
                return Ok(());
            }
            if Instant::now() >= deadline {
                process::signal(pid, Signal::SIGTERM);
                return Err(UpError::Other(anyhow::anyhow!(
                    "the deployment was not ready within {} s; it was stopped. See {}",
                    DETACH_READY_TIMEOUT.as_secs(),
                    log_path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
