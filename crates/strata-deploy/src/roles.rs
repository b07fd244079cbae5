//! Every kind of role process `strata up` can run, each with its one typed command line.
//!
//! A role's arguments are one struct, owned by the crate of its tier (`strata_lb::role::LbArgs`,
//! `strata_control::pgnode::PostgresArgs`, …): the plan builds it, [`crate::argv`] renders it
//! to the child's command line and environment, and the child parses the very same struct with
//! clap. A flag the planner writes that the role does not take cannot compile; a value whose
//! written and parsed forms disagree fails the plan's round-trip test.
//!
//! Adding a role kind: a variant here (its arguments), one in [`RoleKind`], and how it runs in
//! [`crate::runner`] (apart, so that a role run by this crate — the dashboard — may read the
//! state and the role kinds without a module cycle).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One role process's command: `strata <kind> <args>`.
#[derive(Debug, Clone, PartialEq, clap::Subcommand, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoleCommand {
    /// Run one API server role (as `strata up` starts it); prints a readiness line when bound.
    Api(Box<strata_api::role::ApiArgs>),
    /// Run the load balancer role: an L7 HTTP proxy in front of API servers.
    Lb(Box<strata_lb::role::LbArgs>),
    /// Run the control role: watch the PostgreSQL primary and fail over when it is gone.
    Control(strata_control::controller::ControlArgs),
    /// Run one shared cache server (Redis or Memcached) as a role, as `strata up` does.
    Cache(strata_cache::node::CacheArgs),
    /// Run one PostgreSQL server (primary or streaming replica) as a role, as `strata up` does.
    Postgres(strata_control::pgnode::PostgresArgs),
    /// Run one member of the control plane's etcd cluster: the first starts a new cluster, the
    /// others join it (`--join`).
    Etcd(strata_control::etcd::node::EtcdArgs),
    /// Run a photo worker: resize uploaded photos from the queue, drain on SIGTERM.
    Worker(Box<strata_photos::role::WorkerArgs>),
    /// Run the CDN edge role: a caching reverse proxy (RFC 9111) in front of an origin, with a
    /// memory and disk store; or `strata edge purge` to purge a running edge's cache.
    Edge(Box<strata_edge::role::EdgeCommand>),
    Rabbitmq(strata_queue::broker::BrokerArgs),
    S3(strata_blobs::node::S3NodeArgs),
    /// Run the geo-DNS server: an authoritative server for the deployment's zone that answers
    /// with the healthy balancers of the data centre its policy picks (docs/dns.md).
    Dns(strata_dns::DnsArgs),
    /// Run Prometheus as a role: it scrapes every role found in its targets file and evaluates
    /// the SLO alerting rules (docs/observability.md).
    Prometheus(strata_observe::PrometheusArgs),
    /// Run Alertmanager as a role: Prometheus sends it the alerts that fire, and it notifies a
    /// webhook (docs/observability.md).
    Alertmanager(strata_observe::alertmanager::AlertmanagerArgs),
    /// Run the live dashboard: a web page of the deployment's roles, tiers and traces, with
    /// kill, restart and freeze buttons for admins (docs/observability.md).
    Dashboard(DashboardArgs),
    /// Run a delaying TCP relay: the link between two data centres, each direction's bytes
    /// delivered `--delay-ms` later (docs/datacenters.md).
    Relay(strata_link::RelayArgs),
}

impl RoleCommand {
    /// The kind of role this command runs.
    pub fn kind(&self) -> RoleKind {
        match self {
            RoleCommand::Api(_) => RoleKind::Api,
            RoleCommand::Lb(_) => RoleKind::Lb,
            RoleCommand::Control(_) => RoleKind::Control,
            RoleCommand::Cache(_) => RoleKind::Cache,
            RoleCommand::Postgres(_) => RoleKind::Postgres,
            RoleCommand::Etcd(_) => RoleKind::Etcd,
            RoleCommand::Worker(_) => RoleKind::Worker,
            RoleCommand::Edge(_) => RoleKind::Edge,
            RoleCommand::Rabbitmq(_) => RoleKind::Broker,
            RoleCommand::S3(_) => RoleKind::ObjectStore,
            RoleCommand::Dns(_) => RoleKind::Dns,
            RoleCommand::Prometheus(_) => RoleKind::Prometheus,
            RoleCommand::Alertmanager(_) => RoleKind::Alertmanager,
            RoleCommand::Dashboard(_) => RoleKind::Dashboard,
            RoleCommand::Relay(_) => RoleKind::Relay,
        }
    }
}

/// The kinds of role, as the state file and `strata status` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleKind {
    /// `strata api`: a stateless API server.
    Api,
    /// `strata lb`: the load balancer on the public port.
    Lb,
    /// `strata postgres`: one PostgreSQL server (primary or streaming replica) run by Strata.
    Postgres,
    /// `strata control`: watches the primary and fails over to a replica.
    Control,
    /// `strata cache`: one Redis or Memcached server run by Strata (the shared cache, L2, or the
    /// session store).
    Cache,
    /// `strata etcd`: one member of the control plane's etcd cluster.
    Etcd,
    /// `strata worker`: a photo worker on the embedded queue.
    Worker,
    /// `strata edge`: a CDN edge (or the shield in front of the origin).
    Edge,
    /// `strata rabbitmq`: the RabbitMQ node the photo jobs travel through.
    Broker,
    /// `strata s3`: the SeaweedFS node that holds the photos' blobs.
    #[serde(rename = "object-store")]
    ObjectStore,
    /// `strata dns`: the geo-DNS server in front of the data centres' balancers.
    Dns,
    /// `strata prometheus`: Prometheus, scraping every role.
    Prometheus,
    /// `strata alertmanager`: where Prometheus sends firing alerts.
    Alertmanager,
    /// `strata dashboard`: the live dashboard of the deployment.
    Dashboard,
    /// `strata relay`: a delaying relay on a link between two data centres.
    Relay,
}

impl RoleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::Api => "api",
            RoleKind::Lb => "lb",
            RoleKind::Postgres => "postgres",
            RoleKind::Control => "control",
            RoleKind::Cache => "cache",
            RoleKind::Etcd => "etcd",
            RoleKind::Worker => "worker",
            RoleKind::Edge => "edge",
            RoleKind::Broker => "broker",
            RoleKind::ObjectStore => "object-store",
            RoleKind::Dns => "dns",
            RoleKind::Prometheus => "prometheus",
            RoleKind::Alertmanager => "alertmanager",
            RoleKind::Dashboard => "dashboard",
            RoleKind::Relay => "relay",
        }
    }
}

/// `strata dashboard …`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct DashboardArgs {
    /// The deployment's directory (its `state.json` says where every role is).
    #[arg(long)]
    pub dir: PathBuf,
    /// Loopback address to serve the page on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// This role's name in its topology (it will not kill itself).
    #[arg(long, default_value = "dashboard")]
    pub name: String,
    /// Exit when standard input reaches end-of-file (set by `strata up`).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

impl DashboardArgs {
    /// The listener the dashboard announces (here, beside its arguments, so that the plan
    /// names it without depending on the dashboard).
    pub const LISTENER: &'static str = "http";

    /// The dashboard of the deployment in `dir`, every other setting at its default.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            name: "dashboard".into(),
            exit_on_stdin_eof: false,
        }
    }
}
