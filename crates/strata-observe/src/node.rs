//! `strata prometheus`: the installed Prometheus (Debian's `prometheus`) run as a role of a
//! deployment — the observability tier's metrics store and rule engine. Loopback only.
//!
//! Everything it keeps is under `--dir`: its generated `prometheus.yml` and its TSDB in
//! `data/`. It scrapes the targets listed in `--targets-file` (file-based discovery, rewritten
//! by whoever places roles: see [`crate::scrape`]) and loads every `*.yml` in `--rules-dir`
//! (the SLO rules of [`crate::slo::rules`]). Retention is bounded by time and by size, the first
//! reached wins.
//!
//! The role is ready when Prometheus answers `GET /-/ready` with 200 (its TSDB is open); it
//! then announces the `http` listener, stops Prometheus on SIGTERM, Ctrl-C or end of stdin,
//! and exits with an error when Prometheus dies, so its supervisor restarts it.
//!
//! Prometheus cannot report the port it bound, so port 0 is resolved here to a port that was
//! free a moment ago; should another process take it first, Prometheus exits at start and the
//! role tries another (three times).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use strata_engines::{Engine, Log, Server};

use crate::daemon;
use crate::scrape::{self, ScrapeConfig};

/// The listener the role announces.
pub const LISTENER: &str = daemon::LISTENER;

/// How long Prometheus may take to open its TSDB (replaying a large WAL takes a while).
const START_WITHIN: Duration = Duration::from_secs(120);

/// `strata prometheus …`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct PrometheusArgs {
    /// Loopback address of Prometheus's HTTP API and UI (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Its directory: the generated prometheus.yml and the TSDB (`data/`).
    #[arg(long)]
    pub dir: PathBuf,
    /// The file-based discovery targets file (default: `<dir>/targets.json`, made empty if
    /// missing).
    #[arg(long)]
    pub targets_file: Option<PathBuf>,
    /// The directory whose `*.yml` rule files are loaded (default: `<dir>/rules`).
    #[arg(long)]
    pub rules_dir: Option<PathBuf>,
    /// How long samples are kept (a Prometheus duration: 15d, 12h, 2w).
    #[arg(long, default_value = "15d", value_parser = parse_retention)]
    pub retention: String,
    /// The most the TSDB may hold on disk (512MB, 1GB, …); the oldest blocks go first.
    #[arg(long, default_value = "1GB", value_parser = parse_size)]
    pub retention_size: String,
    /// How often targets are scraped and rules evaluated, in seconds.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub scrape_interval_secs: u64,
    /// How often a firing alert is sent again, in seconds (Prometheus's default is 60). An
    /// alert sent before the Alertmanager is discovered (at start) is dropped and waits this
    /// long; Alertmanager forgets an alert 4 × this after the last one.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub alert_resend_delay_secs: u64,
    /// An Alertmanager to send firing alerts to (`strata alertmanager`'s address); none:
    /// alerts are only evaluated, and shown by Prometheus and the dashboard.
    #[arg(long)]
    pub alertmanager: Option<SocketAddr>,
    /// This role's name in its topology.
    #[arg(long, default_value = "prometheus")]
    pub name: String,
    /// Exit when standard input reaches end-of-file (set by `strata up`).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

impl PrometheusArgs {
    /// A Prometheus kept in `dir`, every other setting at its default.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            targets_file: None,
            rules_dir: None,
            retention: "15d".into(),
            retention_size: "1GB".into(),
            scrape_interval_secs: 15,
            alert_resend_delay_secs: 60,
            alertmanager: None,
            name: "prometheus".into(),
            exit_on_stdin_eof: false,
        }
    }

    /// The targets file it reads.
    pub fn targets_path(&self) -> PathBuf {
        self.targets_file
            .clone()
            .unwrap_or_else(|| self.dir.join("targets.json"))
    }

    /// The directory of rule files it loads.
    pub fn rules_path(&self) -> PathBuf {
        self.rules_dir
            .clone()
            .unwrap_or_else(|| self.dir.join("rules"))
    }

    /// Its configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("prometheus.yml")
    }

    /// Its TSDB.
    pub fn data_path(&self) -> PathBuf {
        self.dir.join("data")
    }
}

/// A Prometheus duration: one or more `<number><unit>` with units ms, s, m, h, d, w, y.
pub fn parse_retention(s: &str) -> Result<String, String> {
    let units = ["ms", "s", "m", "h", "d", "w", "y"];
    let mut rest = s;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let unit = units
            .iter()
            .filter(|u| rest[digits..].starts_with(*u))
            .max_by_key(|u| u.len());
        match unit {
            Some(u) if digits > 0 => rest = &rest[digits + u.len()..],
            _ => return Err(format!("{s:?} is not a duration such as 15d, 12h or 2w")),
        }
        parts += 1;
    }
    if parts == 0 {
        return Err("the retention time is empty".into());
    }
    Ok(s.to_string())
}

/// A Prometheus size: `<number><unit>` with units B, KB, MB, GB, TB, PB, EB.
pub fn parse_size(s: &str) -> Result<String, String> {
    let digits = s.chars().take_while(char::is_ascii_digit).count();
    let unit = &s[digits..];
    if digits > 0 && ["B", "KB", "MB", "GB", "TB", "PB", "EB"].contains(&unit) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a size such as 512MB or 1GB"))
    }
}

/// Creates the role's directories, writes `prometheus.yml`, and makes an empty targets file
/// when there is none (Prometheus then scrapes nothing until one is written).
pub fn prepare(args: &PrometheusArgs) -> anyhow::Result<()> {
    for dir in [args.dir.clone(), args.data_path(), args.rules_path()] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let targets = args.targets_path();
    if !targets.exists() {
        scrape::write_targets(&targets, &[])?;
    }
    let config = ScrapeConfig {
        interval: Duration::from_secs(args.scrape_interval_secs),
        targets_file: targets,
        rule_files: vec![
            args.rules_path()
                .join("*.yml")
                .to_string_lossy()
                .into_owned(),
        ],
        alertmanagers: args.alertmanager.into_iter().collect(),
    };
    scrape::write_atomically(&args.config_path(), &scrape::prometheus_yml(&config))
}

/// The installed `prometheus` with the role's flags, listening on `addr`.
pub fn command(args: &PrometheusArgs, addr: SocketAddr) -> anyhow::Result<Command> {
    let program = Engine::Prometheus.locate()?;
    let flag = |name: &str, value: &Path| {
        let mut arg = std::ffi::OsString::from(name);
        arg.push("=");
        arg.push(value);
        arg
    };
    let mut cmd = Command::new(program);
    cmd.arg(flag("--config.file", &args.config_path()))
        .arg(flag("--storage.tsdb.path", &args.data_path()))
        .arg(format!("--storage.tsdb.retention.time={}", args.retention))
        .arg(format!(
            "--storage.tsdb.retention.size={}",
            args.retention_size
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg(format!(
            "--rules.alert.resend-delay={}s",
            args.alert_resend_delay_secs
        ))
        .current_dir(&args.dir);
    Ok(cmd)
}

/// Whether the Prometheus at `addr` answers `GET /-/ready` with 200.
pub fn ready(addr: SocketAddr) -> bool {
    daemon::ready(addr)
}

/// Prepares the role's directory, starts Prometheus and waits until it is [`ready`]. With
/// port 0 in `args.listen`, a free port is picked (see [`daemon::start`]). Blocking: async
/// callers use `spawn_blocking`.
pub fn start(
    args: &PrometheusArgs,
    log: &Log,
    within: Duration,
) -> anyhow::Result<(Server, SocketAddr)> {
    daemon::start(
        "Prometheus",
        args.listen,
        log,
        within,
        || prepare(args),
        |addr| command(args, addr),
    )
}

/// Runs Prometheus until told to stop.
pub async fn run(args: PrometheusArgs) -> anyhow::Result<()> {
    let (name, exit) = (args.name.clone(), args.exit_on_stdin_eof);
    daemon::run_role(Engine::Prometheus, name, exit, move || {
        start(&args, &Log::Stderr, START_WITHIN)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: PrometheusArgs,
    }

    #[test]
    fn the_defaults_keep_everything_in_the_directory_with_bounded_retention() {
        let cli = Cli::try_parse_from(["t", "--dir", "/srv/p"]).expect("parse");
        assert_eq!(cli.args, PrometheusArgs::new("/srv/p".into()));
        assert_eq!(cli.args.targets_path(), Path::new("/srv/p/targets.json"));
        assert_eq!(cli.args.rules_path(), Path::new("/srv/p/rules"));
        let cli = Cli::try_parse_from([
            "t",
            "--dir",
            "/p",
            "--retention",
            "2w3d",
            "--retention-size",
            "512MB",
        ])
        .expect("parse");
        assert_eq!(
            (
                cli.args.retention.as_str(),
                cli.args.retention_size.as_str()
            ),
            ("2w3d", "512MB")
        );
    }

    #[test]
    fn bad_retention_settings_are_refused() {
        for bad in [
            ["--retention", "15"],
            ["--retention", "d"],
            ["--retention", "1x"],
            ["--retention-size", "1G"],
            ["--retention-size", "GB"],
        ] {
            let mut argv = vec!["t", "--dir", "/p"];
            argv.extend(bad);
            assert!(Cli::try_parse_from(&argv).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_listener_off_loopback_is_refused_before_anything_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = PrometheusArgs::new(dir.path().join("p"));
        args.listen = "0.0.0.0:0".parse().expect("addr");
        let e = start(&args, &Log::Stderr, Duration::from_secs(1)).expect_err("refused");
        assert!(e.to_string().contains("loopback"), "{e}");
        assert!(!dir.path().join("p").exists(), "nothing was written");
    }

    #[test]
    fn prepare_writes_the_configuration_and_an_empty_targets_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = PrometheusArgs::new(dir.path().to_path_buf());
        prepare(&args).expect("prepare");
        let yml = std::fs::read_to_string(args.config_path()).expect("config");
        assert!(
            yml.contains(&format!("{:?}", args.targets_path().display().to_string())),
            "{yml}"
        );
        assert!(yml.contains("/rules/*.yml\""), "{yml}");
        assert!(yml.contains("scrape_interval: \"15s\""), "{yml}");
        assert_eq!(
            std::fs::read_to_string(args.targets_path()).expect("targets"),
            "[]\n"
        );
        assert!(args.data_path().is_dir() && args.rules_path().is_dir());
    }
}
