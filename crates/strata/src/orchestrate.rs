//! `strata up`, `down`, `status` and `logs`: their command lines, over `strata-deploy`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use strata_deploy::launch::{EXIT_PORT_IN_USE, Up, UpError};
use strata_deploy::{control, present, state, status};

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Topology file (TOML). Default: three API servers on the embedded SQLite data tier.
    #[arg(short = 'f', long = "file", env = "STRATA_TOPOLOGY")]
    pub file: Option<PathBuf>,
    /// Deployment directory: state, logs and data live here.
    #[arg(long, env = "STRATA_DIR", default_value = ".strata")]
    pub dir: PathBuf,
    /// Public entry port on 127.0.0.1 (0 picks a free port).
    #[arg(long, env = "STRATA_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Detach once every role is ready (stop it later with `strata down`).
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Internal: run as the detached supervisor.
    #[arg(long, hide = true)]
    pub supervise: bool,
}

#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// Deployment directory.
    #[arg(long, env = "STRATA_DIR", default_value = ".strata")]
    pub dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Deployment directory.
    #[arg(long, env = "STRATA_DIR", default_value = ".strata")]
    pub dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Print the deployment's metrics endpoints as a Prometheus file-based discovery targets
    /// file (for `file_sd_configs` of a Prometheus of one's own).
    #[arg(long, conflicts_with = "json")]
    pub prometheus_targets: bool,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Deployment directory.
    #[arg(long, env = "STRATA_DIR", default_value = ".strata")]
    pub dir: PathBuf,
    /// Only this role (e.g. `api-2`; `supervisor` for the detached supervisor's own log).
    pub role: Option<String>,
    /// Keep printing new lines as they are written (Ctrl-C to stop).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only lines at or after a time: a duration back from now (`30s`, `10m`, `2h`, `1d`) or an
    /// RFC 3339 time (`2026-11-30T03:50:00Z`).
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<strata_deploy::logs::Since>,
    /// Only lines at this level or above: trace, debug, info, warn or error.
    #[arg(long, value_name = "LEVEL")]
    pub level: Option<strata_deploy::logs::Level>,
    /// Only lines matching this regular expression (anywhere in the line).
    #[arg(long, value_name = "REGEX")]
    pub grep: Option<strata_deploy::logs::Grep>,
    /// Only lines whose `trace_id` field (or a span's) is this W3C trace id (32 hex digits).
    #[arg(long, value_name = "TRACE_ID")]
    pub trace: Option<strata_deploy::logs::TraceId>,
    /// Only lines whose `request_id` field (or a span's) is this id (`X-Request-Id`).
    #[arg(long, value_name = "REQUEST_ID")]
    pub request: Option<strata_deploy::logs::RequestId>,
    /// Print one JSON object per line, with a `role` field, instead of `role | line`.
    #[arg(long)]
    pub json: bool,
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let up = Up {
        file: args.file,
        dir: args.dir,
        port: args.port,
    };
    let exe = std::env::current_exe().context("cannot find the strata executable")?;
    if args.detach && !args.supervise {
        return up.detach(&exe).await.map_err(Into::into);
    }
    strata_core::telemetry::init();
    let supervise = args.supervise;
    let dir = up.dir.clone();
    let result = up
        .supervise(exe, |state| {
            if !supervise {
                println!("{}", present::endpoints_table(state));
                println!(
                    "Every role is ready. Ctrl-C stops them all. Logs: strata logs --dir {}",
                    dir.display()
                );
            }
        })
        .await;
    match result {
        Ok(()) => {
            if !supervise {
                eprintln!("stopped every role");
            }
            Ok(())
        }
        // The detached supervisor tells `up -d` why by its exit status.
        Err(e @ UpError::PortInUse { .. }) if supervise => {
            eprintln!("error: {e}");
            std::process::exit(EXIT_PORT_IN_USE);
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn down(args: DownArgs) -> anyhow::Result<()> {
    if state::read(&args.dir)?.is_none() {
        return Err(state::no_deployment(&args.dir));
    }
    let report = control::down(&args.dir, Duration::from_secs(15)).await?;
    if report.stopped.is_empty() && report.killed.is_empty() {
        println!("nothing was running in {}", args.dir.display());
    } else {
        if !report.stopped.is_empty() {
            println!("stopped: {}", report.stopped.join(", "));
        }
        if !report.killed.is_empty() {
            println!(
                "killed after the grace period: {}",
                report.killed.join(", ")
            );
        }
    }
    Ok(())
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    if args.prometheus_targets {
        let state = strata_deploy::state::read(&args.dir)?
            .ok_or_else(|| strata_deploy::state::no_deployment(&args.dir))?;
        let targets = strata_deploy::state::metrics_targets(&state);
        print!("{}", strata_observe::scrape::targets_file(&targets));
        return Ok(());
    }
    let report = status::collect(&args.dir).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&present::status_json(&report))?
        );
    } else {
        print!("{}", present::status_table(&report));
    }
    Ok(())
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    use strata_deploy::logs::{Filter, Options, Timestamp};
    let options = Options {
        role: args.role,
        follow: args.follow,
        json: args.json,
        filter: Filter {
            since: args.since.map(|s| s.resolve(Timestamp::now())),
            level: args.level,
            grep: args.grep,
            trace: args.trace,
            request: args.request,
        },
    };
    strata_deploy::logs::print(&args.dir, &options).await
}
