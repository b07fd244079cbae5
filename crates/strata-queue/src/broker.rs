//! `strata rabbitmq`: one RabbitMQ node — from the installed `rabbitmq-server` — run as a role
//! of a topology (`[queue] engine = "rabbitmq"`). Loopback only; its data (definitions and the
//! quorum queues' logs) is kept in `--dir`, under a node name that does not change with its
//! ports, so a node started again — by the supervisor after a crash, or by another `strata up`
//! — finds every message it had confirmed.
//!
//! The role announces `amqp` once the node answers the AMQP handshake, stops the node cleanly
//! on SIGTERM, Ctrl-C or end of stdin, and exits with an error when the node dies, so the
//! supervisor restarts it. How the node is laid out, started and killed is
//! `strata_engines::rabbitmq`, shared with the tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use strata_core::ready::ReadyLine;
use strata_engines::rabbitmq::{self, Node, Ports};
use strata_engines::{Engine, Log};

/// The listener the role announces.
pub const LISTENER: &str = "amqp";

/// How long a node may take to recover its queues and open its listener.
const START_WITHIN: Duration = Duration::from_secs(90);

/// `strata rabbitmq …`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct BrokerArgs {
    /// Loopback address of the AMQP listener (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The node's directory: its data, configuration, cookie and logs.
    #[arg(long)]
    pub dir: PathBuf,
    /// This role's name in its topology (also the node's name).
    #[arg(long, default_value = "rabbitmq")]
    pub name: String,
    /// Exit when standard input reaches end-of-file (set by `strata up`).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

impl BrokerArgs {
    /// A node kept in `dir`, every other setting at its default.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            name: "rabbitmq".into(),
            exit_on_stdin_eof: false,
        }
    }
}

/// The URL of the node a role announced at `addr`: the default virtual host as `guest`, whom
/// RabbitMQ admits from loopback only.
pub fn url_of(addr: SocketAddr) -> String {
    format!("amqp://guest:guest@{addr}/%2f")
}

/// Runs the node until told to stop.
pub async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    strata_core::telemetry::init();
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "--listen must be a loopback address (the node admits `guest` from loopback only): got {}",
        args.listen
    );
    if let Err(missing) = Engine::RabbitMq.locate() {
        anyhow::bail!(
            "{missing}\nhint: apt-get install rabbitmq-server (or use [queue] engine = \"embedded\")"
        );
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let mut ports = Ports::free().context("cannot find free ports")?;
    if args.listen.port() != 0 {
        ports.amqp = args.listen.port();
    }
    let node = Node::new(&args.dir, ports).with_stable_name(&node_name(&args.name));
    let addr = node.addr();
    // Started from a blocking thread: the node's start script is a child of this process.
    let mut broker =
        tokio::task::spawn_blocking(move || rabbitmq::start(node, &Log::Stderr, START_WITHIN))
            .await
            .context("the start task failed")??;
    let node_name = broker.node().name().to_string();
    // Listening for the stop signal before announcing (a SIGTERM right after the readiness
    // line stops the role cleanly).
    let stop =
        strata_core::shutdown::signal_or_exit(args.exit_on_stdin_eof, || broker.is_running());
    ReadyLine::new(&args.name)
        .with_addr(LISTENER, addr)
        .announce()
        .context("cannot write the readiness line")?;
    tracing::info!(role = %args.name, %addr, node = %node_name, "RabbitMQ is answering");
    if !stop.await {
        anyhow::bail!("the RabbitMQ node {node_name} exited");
    }
    tokio::task::spawn_blocking(move || broker.stop(Duration::from_secs(6)))
        .await
        .context("the stop task failed")?;
    tracing::info!(role = %args.name, "RabbitMQ stopped");
    Ok(())
}

/// The node's name: the role's, reduced to what an Erlang node name may hold.
fn node_name(role: &str) -> String {
    let cleaned: String = role
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("strata-{cleaned}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_stable_and_plain() {
        assert_eq!(node_name("rabbitmq-1"), "strata-rabbitmq-1");
        assert_eq!(node_name("a b@c"), "strata-a_b_c");
        assert_eq!(
            url_of(SocketAddr::from(([127, 0, 0, 1], 5999))),
            "amqp://guest:guest@127.0.0.1:5999/%2f"
        );
    }
}
