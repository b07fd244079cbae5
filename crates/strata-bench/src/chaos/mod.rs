//! `strata chaos`: a fault injector with a verdict, for people who want to see their deployment
//! survive.
//!
//! Against a running deployment (`strata up -d`), under a steady open-loop load of
//! authenticated writes and reads through its entry point ([`load`]), it applies a schedule of
//! real faults — kill -9, stop/continue, restart — to any of its roles ([`faults`]), stops,
//! waits for the deployment to return to full health, reads back every write it acknowledged,
//! and prints the verdict: acknowledged writes lost (must be 0), failed and wrong reads, each
//! outage's length, and the time back to full health. `--seed` repeats a randomized schedule;
//! `--faults` and `--targets` restrict it; `--json` prints the verdict for CI. The exit status
//! is 1 when an acknowledged write was lost or the deployment did not return to full health.
//!
//! Everything is bounded: the run's length, the rate, the requests in flight, each request's
//! deadline, the wait for health. Targets are the deployment's own loopback addresses.

pub mod faults;
pub mod load;
mod verdict;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use faults::{FaultKind, Schedule, Stopped, Target};
pub use verdict::Verdict;

/// `strata chaos`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// The deployment directory (of a deployment started with `strata up -d`).
    #[arg(long, env = "STRATA_DIR", default_value = ".strata")]
    pub dir: PathBuf,
    /// How long the load and the faults last, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=86_400))]
    pub duration_secs: u64,
    /// Writes per second, and as many reads (open loop: at this rate whatever the answers).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=2_000))]
    pub rate: u32,
    /// Seed of the fault schedule: the same seed gives the same faults at the same moments
    /// (default: a random one, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The kinds of fault to apply.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [FaultKind::Kill, FaultKind::Stop, FaultKind::Restart])]
    pub faults: Vec<FaultKind>,
    /// The kinds of role faults may hit (`lb` is left out by default: it is the deployment's
    /// only entry point).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Target::Postgres, Target::Api, Target::Control, Target::Cache, Target::Etcd])]
    pub targets: Vec<Target>,
    /// Fewest seconds between two faults.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub min_gap_secs: u64,
    /// Most seconds between two faults.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub max_gap_secs: u64,
    /// How long a stop lasts, in seconds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub stop_secs: u64,
    /// The chance that a fault comes with a second one, on another role, while it lasts.
    #[arg(long, default_value_t = 0.3)]
    pub pair_probability: f64,
    /// How long to wait, after the last fault, for the deployment to return to full health.
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub health_timeout_secs: u64,
    /// Load only, no faults: the same open-loop load and verdict while something else happens
    /// to the deployment (a resharding, an upgrade).
    #[arg(long)]
    pub no_faults: bool,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the verdict (JSON) to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs the drill and prints its verdict; fails when a write was lost or health never came
/// back.
pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.pair_probability),
        "--pair-probability must be between 0 and 1 (got {})",
        args.pair_probability
    );
    anyhow::ensure!(
        args.min_gap_secs <= args.max_gap_secs,
        "--min-gap-secs ({}) must not exceed --max-gap-secs ({})",
        args.min_gap_secs,
        args.max_gap_secs
    );
    let deployment = strata_deploy::state::read(&args.dir)?
        .ok_or_else(|| strata_deploy::state::no_deployment(&args.dir))?;
    anyhow::ensure!(
        deployment.running && strata_engines::process::is_alive(deployment.supervisor_pid),
        "the deployment in {} is not running: start it with `strata up -d --dir {}`",
        args.dir.display(),
        args.dir.display()
    );
    let entry = deployment
        .http_entry()
        .context("the deployment has no balancer and no API server to send requests to")?;
    // Only kinds of role the deployment runs.
    let targets: Vec<Target> = args
        .targets
        .iter()
        .copied()
        .filter(|t| deployment.roles.iter().any(|r| r.kind.as_str() == t.name()))
        .collect();
    anyhow::ensure!(
        !targets.is_empty() || args.faults.is_empty(),
        "the deployment runs none of the roles --targets names ({}): it runs {}",
        args.targets
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", "),
        deployment
            .roles
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let seed = args.seed.unwrap_or_else(rand::random);
    let duration = Duration::from_secs(args.duration_secs);
    let schedule = Schedule {
        seed,
        kinds: if args.no_faults {
            Vec::new()
        } else {
            args.faults.clone()
        },
        targets,
        min_gap: Duration::from_secs(args.min_gap_secs),
        max_gap: Duration::from_secs(args.max_gap_secs),
        stop_for: Duration::from_secs(args.stop_secs),
        pair_probability: args.pair_probability,
    };
    let plan = schedule.plan(duration);
    if !args.json {
        eprintln!(
            "chaos: {} s at {} writes/s and {} reads/s through {entry}, {} faults, seed {seed}",
            args.duration_secs,
            args.rate,
            args.rate,
            plan.len()
        );
    }
    let session = Arc::new(
        load::Session::admin(&args.dir, &entry, &format!("chaos-{seed}@strata.test")).await?,
    );

    let started = Instant::now();
    let load = tokio::spawn(load::run(session.clone(), f64::from(args.rate), duration));
    let dir = args.dir.clone();
    let quiet = args.json;
    // Stopped processes, and when each resumes. Interrupted, the drill resumes them all first:
    // it never leaves a deployment frozen.
    let frozen: Arc<std::sync::Mutex<Vec<(Instant, Stopped)>>> = Arc::default();
    {
        let frozen = frozen.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                for (_, stopped) in frozen.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
                    faults::resume(&stopped);
                }
                eprintln!("chaos: interrupted; every stopped process was resumed");
                std::process::exit(130);
            }
        });
    }
    let injector = tokio::spawn(async move {
        let mut applied = Vec::new();
        let stopped = frozen;
        for fault in plan {
            let wait = fault.at.saturating_sub(started.elapsed());
            tokio::time::sleep(wait).await;
            resume_due(&stopped);
            let (done, stop) = faults::apply(&dir, &fault, started.elapsed().as_secs_f64());
            if !quiet {
                eprintln!(
                    "{:7.1} s  {:?} {}: {}",
                    done.at_s, done.kind, done.role, done.detail
                );
            }
            if let Some(stop) = stop {
                stopped
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((Instant::now() + fault.stop_for, stop));
            }
            applied.push(done);
        }
        // Every stop ends, at its time.
        while !stopped.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            resume_due(&stopped);
        }
        (applied, started.elapsed())
    });
    let outcome = load.await.context("the load task failed")?;
    let (applied, faults_ended) = injector.await.context("the fault task failed")?;

    // Back to full health, then every acknowledged write read back.
    let healthy =
        verdict::wait_for_health(&args.dir, Duration::from_secs(args.health_timeout_secs)).await;
    // From the end of the last fault (the load may have gone on after it) to now.
    let health_after =
        healthy.then(|| started.elapsed().saturating_sub(faults_ended).as_secs_f64());
    let lost = verdict::read_back(&session, &outcome.acked).await;
    let verdict = Verdict::new(seed, &args, applied, &outcome, lost, health_after, healthy);
    let json = serde_json::to_string_pretty(&verdict)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &json).with_context(|| format!("cannot write {}", out.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", verdict.text());
    }
    anyhow::ensure!(
        verdict.lost == 0,
        "{} acknowledged writes were lost",
        verdict.lost
    );
    anyhow::ensure!(
        healthy,
        "the deployment did not return to full health within {} s (see `strata status --dir {}`)",
        args.health_timeout_secs,
        args.dir.display()
    );
    Ok(())
}

/// Ends every stop that has lasted long enough — unless another stop of the same process or
/// link lasts longer (a pair of faults on one link: it heals when the later cut ends).
fn resume_due(stopped: &std::sync::Mutex<Vec<(Instant, Stopped)>>) {
    let now = Instant::now();
    let mut stopped = stopped.lock().unwrap_or_else(|p| p.into_inner());
    let (due, last): (Vec<_>, Vec<_>) = stopped.drain(..).partition(|(until, _)| *until <= now);
    *stopped = last;
    for (_, stop) in due {
        if !stopped.iter().any(|(_, other)| *other == stop) {
            faults::resume(&stop);
        }
    }
}
