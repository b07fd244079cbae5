//! `strata etcd`: one member of the control plane's etcd cluster, as a supervised role.
//!
//! Members are started without knowing each other's ports in advance:
//! - the **first** member (no `--join`) starts a new one-member cluster;
//! - a **joining** member (`--join ENDPOINT`, a member already running) picks free client and
//!   peer ports, asks that member to add it (`member add` with its peer URL — retried while
//!   etcd refuses, as it does until the last member added has been up for a few seconds), and
//!   starts with the member list it gets back as `--initial-cluster`, state `existing`;
//! - a member that has **data** just starts: it belongs to a cluster already.
//!
//! A member keeps its two ports in `DATA/ports.json` and reuses them when it restarts: the
//! others know it by its peer URL. Its etcd data is `DATA/etcd`, its process id
//! `DATA/etcd.pid` (so an instance of this role killed with SIGKILL leaves no member running
//! that the next one cannot stop).
//!
//! The role prints `{"ready":true,"role":NAME,"addrs":{"etcd":"127.0.0.1:PORT"}}` once the
//! member is healthy (a joining one: also listed as started), stops etcd on SIGTERM, Ctrl-C or
//! end of stdin, and exits with an error when etcd dies, so the supervisor restarts it. How
//! etcd is found, argued and probed is `strata_engines::etcd`.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use strata_core::ready::ReadyLine;
use strata_engines::daemon::free_port;
use strata_engines::etcd::{self, InitialState, Member};
use strata_engines::{Log, process};

use super::client::{self, EtcdClient, parse_endpoint};

/// How long a joining member keeps asking to be added.
const JOIN_WITHIN: Duration = Duration::from_secs(120);
/// How long a member may take to become healthy.
const READY_WITHIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct EtcdArgs {
    /// Client address on 127.0.0.1 (port 0 picks a free one, kept for restarts).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The member's directory: etcd's data, the ports it keeps.
    #[arg(long)]
    pub data: PathBuf,
    /// A running member to join the cluster through, `http://127.0.0.1:PORT` (repeat; none for
    /// the first member, which starts a new cluster).
    #[arg(long = "join", value_name = "ENDPOINT", value_parser = parse_endpoint)]
    pub join: Vec<String>,
    /// This role's name in its topology, and the member's name in the cluster.
    #[arg(long, default_value = "etcd-1")]
    pub name: String,
    /// Exit (stopping etcd) when standard input reaches end-of-file.
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

impl EtcdArgs {
    /// The first member of a new cluster keeping its data in `data`, every other setting at its
    /// default.
    pub fn new(data: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data,
            join: Vec::new(),
            name: "etcd-1".into(),
            exit_on_stdin_eof: false,
        }
    }
}

/// The ports a member keeps across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Ports {
    client: u16,
    peer: u16,
}

const PORTS_FILE: &str = "ports.json";
const PID_FILE: &str = "etcd.pid";

/// The ports to use: those kept in `DATA/ports.json` (the client port unless `--listen` names
/// one), else free ones — written back before anything else learns them.
fn ports(args: &EtcdArgs) -> anyhow::Result<Ports> {
    let path = args.data.join(PORTS_FILE);
    let saved: Option<Ports> = match std::fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not this member's ports: fix or remove it",
                path.display()
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let client = match (args.listen.port(), saved) {
        (0, Some(saved)) => saved.client,
        (0, None) => free_port().context("cannot find a free port")?,
        (port, _) => port,
    };
    let peer = match saved {
        Some(saved) => saved.peer,
        None => loop {
            let port = free_port().context("cannot find a free port")?;
            if port != client {
                break port;
            }
        },
    };
    let ports = Ports { client, peer };
    if saved != Some(ports) {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&ports)?)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ports)
}

/// An etcd member left running by an earlier instance of this role: stop it.
fn stop_leftover(data: &Path, etcd_dir: &Path) {
    let pid_file = data.join(PID_FILE);
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok());
    if let Some(pid) = pid
        && process::is_alive(pid)
        && etcd::is_member_of(pid, etcd_dir)
    {
        tracing::warn!(
            pid,
            "stopping an etcd member left running by an earlier instance"
        );
        process::terminate(
            pid,
            Signal::SIGTERM,
            Duration::from_secs(10),
            Signal::SIGKILL,
            Duration::from_secs(5),
        );
    }
    let _ = std::fs::remove_file(pid_file);
}

/// Joins the cluster through `args.join`: adds this member (unless an earlier start did), and
/// returns it with the cluster's members as `--initial-cluster`.
async fn join(args: &EtcdArgs, ports: Ports, etcd_dir: PathBuf) -> anyhow::Result<Member> {
    let client = EtcdClient::new(args.join.clone(), Duration::from_secs(2))?;
    let peer = etcd::url(ports.peer);
    let deadline = Instant::now() + JOIN_WITHIN;
    let mut said = false;
    let members = loop {
        let attempt = async {
            // Added by an earlier start that stopped before etcd wrote its data?
            let members = client.members().await?;
            if members.iter().any(|m| m.peer_urls.contains(&peer)) {
                return Ok(members);
            }
            client
                .add_member(std::slice::from_ref(&peer))
                .await
                .map(|(_, all)| all)
        };
        match attempt.await {
            Ok(members) => break members,
            Err(e) if Instant::now() < deadline => {
                if !said {
                    tracing::info!(error = %e, "cannot join the cluster yet; retrying");
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot join the etcd cluster through {} within {} s",
                        args.join.join(", "),
                        JOIN_WITHIN.as_secs()
                    )
                });
            }
        }
    };
    tracing::info!(%peer, members = members.len(), "added to the etcd cluster");
    let initial_cluster = members
        .iter()
        .flat_map(|m| {
            let name = if m.peer_urls.contains(&peer) {
                args.name.clone()
            } else if m.name.is_empty() {
                // Added, not started yet: etcd matches members by peer URL, not by name.
                format!("unstarted-{:x}", m.id)
            } else {
                m.name.clone()
            };
            m.peer_urls.iter().map(move |u| (name.clone(), u.clone()))
        })
        .collect();
    Ok(Member {
        name: args.name.clone(),
        data_dir: etcd_dir,
        client_port: ports.client,
        peer_port: ports.peer,
        initial_cluster,
        state: InitialState::Existing,
        token: etcd::TOKEN.to_string(),
    })
}

/// Waits until the cluster lists this member as started (it has published its name).
async fn wait_listed(member: &Member) -> anyhow::Result<()> {
    let client = EtcdClient::new(vec![member.client_url()], Duration::from_secs(2))?;
    let peer = member.peer_url();
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let listed = client.members().await.map(|all| {
            all.iter()
                .any(|m| m.peer_urls.contains(&peer) && m.name == member.name)
        });
        match listed {
            Ok(true) => return Ok(()),
            Ok(false) | Err(client::EtcdError::Unreachable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(false) => anyhow::bail!("the cluster does not list {} as started", member.name),
            Err(e) => return Err(e).context("cannot list the cluster's members"),
        }
    }
}

/// Runs the member until SIGTERM, Ctrl-C or (with `--exit-on-stdin-eof`) end of stdin.
pub async fn run(args: EtcdArgs) -> anyhow::Result<()> {
    strata_core::telemetry::init();
    let stop = strata_core::shutdown::signal(args.exit_on_stdin_eof);
    run_until(args, stop).await
}

/// Runs the member until `stop` resolves (then stops etcd and returns), or until etcd exits
/// (an error).
pub async fn run_until(args: EtcdArgs, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.listen.ip() == Ipv4Addr::LOCALHOST,
        "--listen must be on 127.0.0.1 (etcd's members here have no TLS): got {}",
        args.listen
    );
    anyhow::ensure!(
        !args.name.is_empty()
            && args
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "--name `{}` is not a member name (letters, digits, dashes)",
        args.name
    );
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create {}", args.data.display()))?;
    let etcd_dir = args.data.join("etcd");
    stop_leftover(&args.data, &etcd_dir);
    let ports = ports(&args)?;
    let has_data = etcd_dir.join("member").is_dir();
    let joining = !has_data && !args.join.is_empty();
    let member = if has_data {
        // Its cluster is in its data: the initial cluster is ignored.
        let mut member = Member::first(&args.name, etcd_dir, ports.client, ports.peer);
        member.state = InitialState::Existing;
        member
    } else if joining {
        join(&args, ports, etcd_dir).await?
    } else {
        Member::first(&args.name, etcd_dir, ports.client, ports.peer)
    };

    // Spawned from this (the role's main) thread, so that etcd is listed as its child; killed
    // if dropped: an error from here on takes the member down with the role.
    let server = etcd::spawn(&member, &Log::Stderr)?;
    let pid_file = args.data.join(PID_FILE);
    std::fs::write(&pid_file, format!("{}\n", server.pid()))
        .with_context(|| format!("cannot write {}", pid_file.display()))?;
    let addr = member.client_addr();
    let healthy = tokio::task::spawn_blocking(move || {
        server.wait_ready(addr, READY_WITHIN, || etcd::healthy(addr))
    });
    let mut server = healthy.await.context("the start task failed")??;
    if joining {
        wait_listed(&member).await?;
    }
    ReadyLine::new(&args.name)
        .with_addr("etcd", addr)
        .announce()
        .context("cannot write the readiness line")?;
    tracing::info!(role = %args.name, %addr, peer = %member.peer_url(), "etcd member is healthy");

    let pid = server.pid();
    let exited = tokio::task::spawn_blocking(move || server.wait());
    tokio::pin!(exited);
    tokio::select! {
        status = &mut exited => {
            let _ = std::fs::remove_file(&pid_file);
            let status = status.context("cannot watch etcd")?.context("cannot watch etcd")?;
            anyhow::bail!("etcd exited ({status})");
        }
        () = stop => {}
    }
    let _ = tokio::task::spawn_blocking(move || {
        process::terminate(
            pid,
            Signal::SIGTERM,
            Duration::from_secs(10),
            Signal::SIGKILL,
            Duration::from_secs(5),
        )
    })
    .await;
    let _ = exited.await;
    let _ = std::fs::remove_file(&pid_file);
    tracing::info!(role = %args.name, "etcd member stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constructor_has_clap_s_defaults_and_joins_are_endpoints() {
        use clap::Parser as _;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            etcd: EtcdArgs,
        }
        let parsed = Cli::try_parse_from(["etcd", "--data", "/d"]).expect("parses");
        assert_eq!(parsed.etcd, EtcdArgs::new("/d".into()));
        let joining = Cli::try_parse_from(["etcd", "--data", "/d", "--join", "127.0.0.1:2401"])
            .expect("parses");
        assert_eq!(joining.etcd.join, ["http://127.0.0.1:2401"]);
        assert!(Cli::try_parse_from(["etcd", "--data", "/d", "--join", "https://a:1"]).is_err());
    }

    #[test]
    fn ports_are_picked_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = EtcdArgs::new(dir.path().to_path_buf());
        let first = ports(&args).expect("ports");
        assert_ne!(first.client, first.peer);
        assert_eq!(ports(&args).expect("ports"), first, "kept");
        args.listen.set_port(first.client.wrapping_add(1).max(1));
        let moved = ports(&args).expect("ports");
        assert_eq!(
            (moved.client, moved.peer),
            (args.listen.port(), first.peer),
            "an explicit client port wins; the peer port stays"
        );
        std::fs::write(dir.path().join(PORTS_FILE), "{").expect("garbage");
        assert!(ports(&args).is_err());
    }
}
