//! `strata alertmanager`: the installed Alertmanager (Debian's `prometheus-alertmanager`) run
//! as a role of a deployment, where its Prometheus sends the alerts that fire. Loopback only,
//! gossip off (one Alertmanager; its cluster port would otherwise open on every interface).
//!
//! Everything it keeps is under `--dir`: its generated `alertmanager.yml` and its silences and
//! notification log in `data/`. Alerts are grouped by name and sent to one receiver: a
//! webhook (`--webhook URL`, resolved alerts too) — the way Alertmanager reaches chat, paging
//! and ticket systems — or, without one, nobody: the alerts are kept and shown by its UI and
//! API (`GET /api/v2/alerts`), and silences work.
//!
//! Prometheus also fires `StrataWatchdog` ([`watchdog_rule_file`]) whenever an Alertmanager is
//! configured: an alert that always fires, so that a receiver which stops hearing it knows the
//! path from Prometheus through Alertmanager is broken (the "dead man's switch" of
//! kube-prometheus).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use strata_engines::{Engine, Log, Server};

use crate::daemon;
use crate::yaml::Value;

/// The listener the role announces.
pub const LISTENER: &str = daemon::LISTENER;

/// The alert that always fires while alerts get through.
pub const WATCHDOG: &str = "StrataWatchdog";

/// How long Alertmanager may take to start.
const START_WITHIN: Duration = Duration::from_secs(60);

/// The longest webhook URL taken.
const MAX_URL: usize = 2048;

/// `strata alertmanager …`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct AlertmanagerArgs {
    /// Loopback address of Alertmanager's HTTP API and UI (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Its directory: the generated alertmanager.yml and its state (`data/`).
    #[arg(long)]
    pub dir: PathBuf,
    /// Where notifications go: an http:// or https:// URL that takes Alertmanager's webhook
    /// JSON. None: alerts are kept and shown, and sent nowhere.
    #[arg(long, value_parser = parse_webhook)]
    pub webhook: Option<String>,
    /// How long the first alert of a group waits for others before it is sent, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub group_wait_secs: u64,
    /// This role's name in its topology.
    #[arg(long, default_value = "alertmanager")]
    pub name: String,
    /// Exit when standard input reaches end-of-file (set by `strata up`).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

impl AlertmanagerArgs {
    /// An Alertmanager kept in `dir` that notifies nobody, every other setting at its default.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            webhook: None,
            group_wait_secs: 10,
            name: "alertmanager".into(),
            exit_on_stdin_eof: false,
        }
    }

    /// Its configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("alertmanager.yml")
    }

    /// Its silences and notification log.
    pub fn data_path(&self) -> PathBuf {
        self.dir.join("data")
    }
}

/// A webhook URL: http or https, a host, no spaces or control characters, at most 2 KiB.
pub fn parse_webhook(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    match host {
        None => Err(format!(
            "{s:?} is not a webhook URL: it must start with http:// or https://"
        )),
        Some("") => Err(format!("{s:?} has no host")),
        Some(_) if s.len() > MAX_URL => Err(format!("the webhook URL is over {MAX_URL} bytes")),
        Some(_) if s.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Err(format!("{s:?} contains a space or a control character"))
        }
        Some(_) => Ok(s.to_string()),
    }
}

/// `alertmanager.yml`: every alert grouped by name, sent to the webhook or to nobody.
pub fn config_yml(args: &AlertmanagerArgs) -> String {
    let receiver = match &args.webhook {
        Some(url) => Value::map([
            ("name", Value::str("webhook")),
            (
                "webhook_configs",
                Value::List(vec![Value::map([
                    ("url", Value::str(url)),
                    ("send_resolved", Value::Plain("true".into())),
                ])]),
            ),
        ]),
        None => Value::map([("name", Value::str("nobody"))]),
    };
    let name = if args.webhook.is_some() {
        "webhook"
    } else {
        "nobody"
    };
    let doc = Value::map([
        (
            "route",
            Value::map([
                ("receiver", Value::str(name)),
                ("group_by", Value::List(vec![Value::str("alertname")])),
                (
                    "group_wait",
                    Value::str(format!("{}s", args.group_wait_secs)),
                ),
                ("group_interval", Value::str("1m")),
                ("repeat_interval", Value::str("4h")),
            ]),
        ),
        ("receivers", Value::List(vec![receiver])),
    ]);
    format!("# Generated by Strata; do not edit.\n{}", doc.render())
}

/// The rule file of [`WATCHDOG`], loaded by Prometheus beside the SLO rules.
pub fn watchdog_rule_file() -> String {
    let rule = Value::map([
        ("alert", Value::str(WATCHDOG)),
        ("expr", Value::str("vector(1)")),
        ("labels", Value::map([("severity", Value::str("none"))])),
        (
            "annotations",
            Value::map([(
                "summary",
                Value::str(
                    "Always firing. A receiver that stops getting it knows alerts no longer get \
                     from Prometheus through Alertmanager to it.",
                ),
            )]),
        ),
    ]);
    let doc = Value::map([(
        "groups",
        Value::List(vec![Value::map([
            ("name", Value::str("strata-watchdog")),
            ("rules", Value::List(vec![rule])),
        ])]),
    )]);
    format!("# Generated by Strata; do not edit.\n{}", doc.render())
}

/// Creates the role's directories and writes `alertmanager.yml`.
pub fn prepare(args: &AlertmanagerArgs) -> anyhow::Result<()> {
    for dir in [args.dir.clone(), args.data_path()] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    crate::scrape::write_atomically(&args.config_path(), &config_yml(args))
}

/// The installed Alertmanager with the role's flags, listening on `addr`, gossip off.
pub fn command(args: &AlertmanagerArgs, addr: SocketAddr) -> anyhow::Result<Command> {
    let program = Engine::Alertmanager.locate()?;
    let flag = |name: &str, value: &Path| {
        let mut arg = std::ffi::OsString::from(name);
        arg.push("=");
        arg.push(value);
        arg
    };
    let mut cmd = Command::new(program);
    cmd.arg(flag("--config.file", &args.config_path()))
        .arg(flag("--storage.path", &args.data_path()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--cluster.listen-address=")
        .current_dir(&args.dir);
    Ok(cmd)
}

/// Prepares the role's directory, starts Alertmanager and waits until it is ready. Blocking.
pub fn start(
    args: &AlertmanagerArgs,
    log: &Log,
    within: Duration,
) -> anyhow::Result<(Server, SocketAddr)> {
    daemon::start(
        "Alertmanager",
        args.listen,
        log,
        within,
        || prepare(args),
        |addr| command(args, addr),
    )
}

/// Runs Alertmanager until told to stop.
pub async fn run(args: AlertmanagerArgs) -> anyhow::Result<()> {
    let (name, exit) = (args.name.clone(), args.exit_on_stdin_eof);
    daemon::run_role(Engine::Alertmanager, name, exit, move || {
        start(&args, &Log::Stderr, START_WITHIN)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_must_be_http_urls_with_a_host() {
        assert!(parse_webhook("http://127.0.0.1:9000/hook").is_ok());
        assert!(parse_webhook("https://hooks.example.com/T0/B0?x=1").is_ok());
        for bad in [
            "ftp://x/",
            "127.0.0.1:9000",
            "http://",
            "https:///path",
            "http://a b/",
            "http://a/\n",
        ] {
            assert!(parse_webhook(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_webhook(&format!("http://a/{}", "x".repeat(MAX_URL))).is_err());
    }

    #[test]
    fn the_configuration_routes_every_alert_to_the_webhook_or_to_nobody() {
        let mut args = AlertmanagerArgs::new("/p".into());
        let yml = config_yml(&args);
        assert!(yml.contains("receiver: \"nobody\""), "{yml}");
        assert!(!yml.contains("webhook_configs"), "{yml}");
        args.webhook = Some("http://127.0.0.1:9/h\"ook".into());
        let yml = config_yml(&args);
        assert!(yml.contains("receiver: \"webhook\""), "{yml}");
        // Quoted and escaped: a URL cannot change the document's structure.
        assert!(
            yml.contains("url: \"http://127.0.0.1:9/h\\\"ook\""),
            "{yml}"
        );
        assert!(yml.contains("send_resolved: true"), "{yml}");
        assert!(yml.contains("group_wait: \"10s\""), "{yml}");
    }

    #[test]
    fn the_watchdog_always_fires() {
        let text = watchdog_rule_file();
        assert!(text.contains("alert: \"StrataWatchdog\""), "{text}");
        assert!(text.contains("expr: \"vector(1)\""), "{text}");
    }

    #[test]
    fn a_listener_off_loopback_is_refused_before_anything_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = AlertmanagerArgs::new(dir.path().join("a"));
        args.listen = "0.0.0.0:0".parse().expect("addr");
        let e = start(&args, &Log::Stderr, Duration::from_secs(1)).expect_err("refused");
        assert!(e.to_string().contains("loopback"), "{e}");
        assert!(!dir.path().join("a").exists(), "nothing was written");
    }
}
