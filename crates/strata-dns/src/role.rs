//! `strata dns`: the server as a role process — its command line ([`DnsArgs`]) and its
//! startup: validate everything (reporting every mistake at once), check the balancers once,
//! bind, announce readiness, serve until told to stop.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use strata_core::ready::ReadyLine;

use crate::config::{DnsConfig, Policy};
use crate::geoip::GeoDb;
use crate::server::DnsServer;

/// The listener the role announces (UDP and TCP share its port).
pub const LISTENER: &str = "dns";

/// `strata dns …`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct DnsArgs {
    /// The zone, its services, policy and data centres (TOML; see docs/dns.md).
    #[arg(long)]
    pub config: PathBuf,
    /// A MaxMind-format GeoIP database (GeoLite2/GeoIP2 City or Country); needed by policy "geo".
    #[arg(long)]
    pub geoip: Option<PathBuf>,
    /// Loopback address for UDP and TCP (port 0 picks one free for both).
    #[arg(long, env = "STRATA_DNS_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// This role's name in its topology.
    #[arg(long, default_value = "dns")]
    pub name: String,
    /// Exit when standard input reaches end-of-file (set by `strata up`).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

impl DnsArgs {
    /// A server of the configuration at `config`, every other setting at its default.
    pub fn new(config: PathBuf) -> Self {
        Self {
            config,
            geoip: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            name: "dns".into(),
            exit_on_stdin_eof: false,
        }
    }
}

/// Reads and checks everything the arguments name, reporting every mistake at once.
pub fn load(args: &DnsArgs) -> anyhow::Result<(DnsConfig, Option<GeoDb>)> {
    let mut problems = Vec::new();
    if !args.listen.ip().is_loopback() {
        problems.push(format!(
            "--listen must be a loopback address (127.0.0.0/8 or ::1): got {}",
            args.listen
        ));
    }
    let config = DnsConfig::from_file(&args.config)
        .map_err(|e| problems.push(format!("{e:#}")))
        .ok();
    let geo = match &args.geoip {
        Some(path) if !path.is_file() => {
            problems.push(format!("--geoip {}: no such file", path.display()));
            None
        }
        Some(path) => GeoDb::open(path)
            .map_err(|e| problems.push(format!("{e:#}")))
            .ok(),
        None => {
            if config.as_ref().is_some_and(|c| c.policy == Policy::Geo) {
                problems.push(
                    "policy \"geo\" needs a GeoIP database: pass --geoip PATH (a MaxMind-format .mmdb)"
                        .into(),
                );
            }
            None
        }
    };
    match config {
        Some(config) if problems.is_empty() => Ok((config, geo)),
        _ => anyhow::bail!("{}", problems.join("\n")),
    }
}

/// Runs the server until SIGTERM, Ctrl-C or (with `--exit-on-stdin-eof`) its supervisor's
/// exit.
pub async fn run(args: DnsArgs) -> anyhow::Result<()> {
    strata_core::telemetry::init();
    let (config, geo) = load(&args)?;
    let (zone, policy) = (config.zone.to_ascii(), config.policy);
    let server = DnsServer::build(config, geo, args.listen)
        .await
        .with_context(|| format!("cannot start the DNS server on {}", args.listen))?;
    let addr = server.addr();
    // Listening for the stop signal before announcing: a SIGTERM right after the readiness
    // line drains the server.
    let stop = strata_core::shutdown::signal_or_exit(args.exit_on_stdin_eof, || true);
    ReadyLine::new(&args.name)
        .with_addr(LISTENER, addr)
        .announce()
        .context("cannot write the readiness line")?;
    tracing::info!(role = %args.name, %addr, %zone, ?policy, "answering DNS over UDP and TCP");
    tokio::select! {
        () = server.run() => anyhow::bail!("the DNS server stopped serving"),
        _ = stop => {}
    }
    tracing::info!(role = %args.name, "DNS server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        dns: DnsArgs,
    }

    #[test]
    fn the_constructor_has_the_defaults_of_the_command_line() {
        use clap::Parser as _;
        // The environment could override the listen address; these tests never set it.
        let parsed = Cli::try_parse_from(["dns", "--config", "dns.toml"]).expect("parses");
        assert_eq!(parsed.dns, DnsArgs::new(PathBuf::from("dns.toml")));
    }

    #[test]
    fn every_startup_mistake_is_reported_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("dns.toml");
        std::fs::write(
            &config,
            "zone = \"strata.test.\"\nservices = [\"www\"]\npolicy = \"geo\"\n[[datacenter]]\nname = \"a\"\nbalancers = [\"127.0.0.1:1\"]\nlatitude = 1.0\nlongitude = 2.0\n",
        )
        .expect("write");
        let mut args = DnsArgs::new(config);
        args.listen = "10.0.0.1:53".parse().expect("addr");
        let e = load(&args).expect_err("two mistakes").to_string();
        assert!(e.contains("loopback"), "{e}");
        assert!(e.contains("needs a GeoIP database"), "{e}");
        args.geoip = Some(dir.path().join("missing.mmdb"));
        let e = load(&args).expect_err("missing file").to_string();
        assert!(e.contains("no such file"), "{e}");
    }
}
