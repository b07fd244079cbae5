//! `strata scale workers N`: changes the number of photo workers of a running deployment.
//!
//! The command writes the wanted count to `DIR/scale.json` (atomically) and sends the
//! supervisor SIGUSR1; the supervisor reads the file and starts `worker-<k+1>` … `worker-N`
//! (each as the plan starts workers, then watched and restarted like every role) or stops the
//! highest-numbered ones (SIGTERM: each drains — finishes or hands back its jobs — before it
//! exits) and drops them from the state file. The command then polls the state file until
//! exactly N workers are ready, and fails, saying why, when one cannot start.
//!
//! The topology file is not changed: the next `strata up` on it runs its own count again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::Signal;
use strata_engines::process;

use crate::plan::workers;
use crate::roles::RoleKind;
use crate::state::{self, RolePhase, RoleState};

/// The request file in a deployment directory.
pub const REQUEST_FILE: &str = "scale.json";

/// The most workers a deployment runs on one machine (as `[workers] count`).
pub const MAX_WORKERS: u16 = 64;

/// `strata scale …`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    #[command(subcommand)]
    pub tier: ScaleTier,
    /// Deployment directory.
    #[arg(long, env = "STRATA_DIR", default_value = ".strata", global = true)]
    pub dir: PathBuf,
    /// How long to wait for the deployment to reach the count.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ScaleTier {
    /// Photo workers: start more, or stop (after draining) the highest-numbered ones.
    Workers {
        /// How many workers should run (0 to 64).
        #[arg(value_parser = clap::value_parser!(u16).range(0..=i64::from(MAX_WORKERS)))]
        count: u16,
    },
}

/// What the supervisor is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScaleRequest {
    pub workers: u16,
}

/// Runs `strata scale`.
pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    let ScaleTier::Workers { count } = args.tier;
    let dir = &args.dir;
    let deployment = state::read(dir)?.ok_or_else(|| state::no_deployment(dir))?;
    if !deployment.running || !process::is_alive(deployment.supervisor_pid) {
        anyhow::bail!(
            "the deployment in {} is not running: start it with `strata up --dir {}`",
            dir.display(),
            dir.display()
        );
    }
    let before = workers_in(&deployment.roles).len();
    write_request(dir, ScaleRequest { workers: count })?;
    process::signal(deployment.supervisor_pid, Signal::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    loop {
        let now = state::read(dir)?.ok_or_else(|| state::no_deployment(dir))?;
        let workers = workers_in(&now.roles);
        if let Some(failed) = workers.iter().find(|r| r.state == RolePhase::Failed) {
            anyhow::bail!(
                "{} could not start: {}\nhint: `strata logs --dir {}` shows why",
                failed.name,
                failed.last_error.as_deref().unwrap_or("no reason given"),
                dir.display()
            );
        }
        if workers.len() == usize::from(count)
            && workers.iter().all(|r| r.state == RolePhase::Ready)
        {
            let names: Vec<&str> = workers.iter().map(|r| r.name.as_str()).collect();
            println!(
                "workers: {before} → {count}{}{}",
                if names.is_empty() { "" } else { " (" },
                if names.is_empty() {
                    String::new()
                } else {
                    format!("{})", names.join(", "))
                }
            );
            return Ok(());
        }
        if !now.running || !process::is_alive(now.supervisor_pid) {
            anyhow::bail!("the deployment stopped before reaching {count} workers");
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the deployment did not reach {count} ready workers within {} s (it has {}): see `strata status --dir {}`",
                args.timeout_secs,
                workers.len(),
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The worker roles of a state, in index order.
fn workers_in(roles: &[RoleState]) -> Vec<&RoleState> {
    let mut out: Vec<&RoleState> = roles
        .iter()
        .filter(|r| r.kind == RoleKind::Worker)
        .collect();
    out.sort_by_key(|r| workers::index_of(&r.name));
    out
}

fn write_request(dir: &Path, request: ScaleRequest) -> anyhow::Result<()> {
    let path = dir.join(REQUEST_FILE);
    let tmp = dir.join(format!("{REQUEST_FILE}.tmp"));
    let text = serde_json::to_string(&request).context("the scale request")?;
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The request in `dir`, if there is a readable one.
pub fn read_request(dir: &Path) -> Option<ScaleRequest> {
    let text = std::fs::read_to_string(dir.join(REQUEST_FILE)).ok()?;
    let request: ScaleRequest = serde_json::from_str(&text).ok()?;
    (request.workers <= MAX_WORKERS).then_some(request)
}
