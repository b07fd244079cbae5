//! The topology file: which roles a deployment runs, how many of each, and how they are set up.
//!
//! ```toml
//! name = "default"
//!
//! [lb]            # load balancers: lb-1 on the public port (--port), the others on free ones
//! count = 1       # 1 to 8
//! algorithm = "round-robin"
//! # sticky_cookie = "pin"; tls_port = 8443 with tls_cert + tls_key, or dev_cert = true
//!
//! [api]           # stateless API servers
//! count = 3       # 1 to 64
//! # ports = [8081, 8082]   # fixed ports (without [lb], api-1 takes the public port)
//!
//! [data]
//! engine = "sqlite"   # the embedded default; or "postgres":
//! # engine = "postgres"
//! # replicas = 2        # streaming replicas strata up runs beside the primary (0 to 4)
//! # commit = "quorum"   # or "async"
//! # rejoin = "auto"     # or "manual": a fenced former primary waits for `strata db rejoin`
//! # url = "postgresql://USER@HOST:5432/DB"   # existing servers instead (no replicas/commit)
//!
//! [cache]             # L1 in every API server; shared L2 nodes that strata up runs:
//! # engine = "redis"  # or "memcached", "in-process" (L1 only), "off"
//! # nodes = 2         # 1 to 4 (in each data centre)
//!
//! [sessions]
//! # engine = "redis"  # a durable Redis of their own; default "database"
//!
//! [workers]           # photo workers on the embedded queue (none without the table)
//! # count = 2         # 0 to 64
//! # concurrency = 1   # jobs each processes at once
//!
//! [control]           # with PostgreSQL replicas: the controllers that fail over
//! # count = 3         # an odd number; more than 1 needs store = "etcd"
//! # store = "etcd"    # default "file"; etcd = ["http://HOST:PORT"] for one's own cluster
//! ```
//!
//! The tables are `name`, `api`, `lb`, `data`, `cache`, `sessions`, `control`, `workers`,
//! `queue`, `blobs`, `edge`, `observe`, `datacenter`, `link` and `dns` (`[dns]`: the authoritative DNS server in
//! front of the balancers, each of which then listens on an address of its own; see `dns.rs`).
//! PostgreSQL servers come from `[data]`, Redis and Memcached servers from `[cache]` and
//! `[sessions]`, etcd members from `[control]`: a file naming them as tables of their own is
//! refused with a hint. `[[datacenter]]` and `[[link]]` tables spread the deployment over
//! several data centres behind its DNS (see `datacenters.rs`).
//!
//! [`Topology::compile`] works like a compiler: it reads the whole file — every table through
//! the one field reader of `reader.rs`, each table in its own module — then checks what spans
//! tables (ports, engines installed), and returns every mistake at once, in line order, each
//! with its line.

mod api;
mod cache;
mod checks;
mod control;
mod data;
mod datacenters;
mod dns;
mod edge;
mod lb;
mod observe;
mod queue;
mod reader;
mod sessions;
mod workers;

use std::fmt;
use std::path::PathBuf;

use strata_engines::{Engine, NotInstalled};

use reader::{Document, Section, suggestion};

/// The most instances of one role kind.
pub const MAX_COUNT: i64 = 64;

pub use crate::roles::RoleKind;

/// The most shared cache nodes `strata up` runs (in each data centre, with data centres).
pub const MAX_CACHE_NODES: i64 = 4;

pub use datacenters::{DatacenterSpec, Degrees, LinkSpec, MAX_DATACENTRES};
pub use dns::{DnsPolicy, DnsSpec, LOCAL_DATACENTRE};
pub use edge::{EdgeSpec, MAX_EDGES, StaticFiles};
pub use observe::{ObserveSpec, SloChange};
pub use queue::{BlobsSpec, QueueSpec};
pub use strata_cache::CacheEngine;
pub use strata_cache::options::L1Coherence;
pub use strata_control::store_options::StoreKind;
pub use strata_control::{CommitMode, RejoinMode};
pub use strata_lb::AlgorithmName;

/// The most controllers (and etcd members) `strata up` runs.
pub const MAX_CONTROLLERS: u8 = 7;

/// `[control]`: the controllers that fail over between PostgreSQL servers, and where the
/// cluster state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSpec {
    /// Controllers — and, with `store = "etcd"` and no `etcd` endpoints, etcd members — that
    /// `strata up` runs: an odd number.
    pub count: u8,
    pub store: StoreKind,
    /// An etcd cluster of one's own (`http://HOST:PORT` endpoints) instead of members that
    /// `strata up` runs.
    pub etcd: Vec<String>,
    /// How often the leading controller checks the primary (`check_interval_ms`; default 500).
    pub check_interval_ms: Option<u64>,
    /// Failed checks in a row before it fails over (`failures`; default 3).
    pub failures: Option<u32>,
}

impl Default for ControlSpec {
    fn default() -> Self {
        Self {
            count: 1,
            store: StoreKind::File,
            etcd: Vec::new(),
            check_interval_ms: None,
            failures: None,
        }
    }
}

/// What a topology is checked against besides its text: the engines installed on this
/// machine, and whether a service of one's own (an etcd endpoint) answers.
pub struct Environment<'a> {
    pub locate: &'a dyn Fn(Engine) -> Result<PathBuf, NotInstalled>,
    /// Whether the etcd endpoint (`http://HOST:PORT`) answers.
    pub answers: &'a dyn Fn(&str) -> bool,
}

impl Environment<'static> {
    /// This machine: the installed engines, and endpoints asked for their health.
    pub fn this_machine() -> Self {
        Self {
            locate: &Engine::locate,
            answers: &etcd_answers,
        }
    }

    /// Everything installed and answering: the file alone is judged.
    pub fn assumed() -> Self {
        Self {
            locate: &|_| Ok(PathBuf::new()),
            answers: &|_| true,
        }
    }
}

/// Whether the etcd member at `endpoint` answers its health check.
fn etcd_answers(endpoint: &str) -> bool {
    use std::net::ToSocketAddrs as _;
    let Ok(url) = strata_control::etcd::client::parse_endpoint(endpoint) else {
        return false;
    };
    let host_port = url.trim_start_matches("http://");
    host_port
        .to_socket_addrs()
        .map(|mut addrs| addrs.any(strata_engines::etcd::healthy))
        .unwrap_or(false)
}

/// `[cache]`: the in-process cache of every API server (L1), and optionally shared cache nodes
/// (L2) that `strata up` runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheSpec {
    /// `engine = "redis" | "memcached"` with `nodes`; `None` (`"in-process"`): L1 only.
    pub shared: Option<(CacheEngine, u8)>,
    /// Memory bound of each shared node, MiB (`max_mib`).
    pub max_mib: Option<u64>,
    /// L1 size per API server, MiB (`l1_mib`).
    pub l1_mib: Option<u64>,
    /// L1 entry life, ms (`l1_ttl_ms`).
    pub l1_ttl_ms: Option<u64>,
    /// `engine = "off"`: no caching at all (every read goes to the database) — for comparisons.
    pub off: bool,
    /// `coherence = "watch" | "ttl"`: how L1s stay coherent without the Redis bus (default
    /// `watch`: the embedded database's change log).
    pub coherence: Option<L1Coherence>,
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSpec {
    pub count: u16,
    /// Fixed ports of the instances after the first (the first takes the public port, until a
    /// load balancer does); instances without one listen on any free port.
    pub ports: Vec<u16>,
}

/// `[lb]`: load balancers (`lb-1` on the public port), each in front of every API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbSpec {
    /// Balancers (`lb-1` … `lb-N`), each in front of every API server.
    pub count: u16,
    pub algorithm: AlgorithmName,
    /// Sticky sessions: the name of the signed cookie (`sticky_cookie`).
    pub sticky_cookie: Option<String>,
    /// TLS termination on a second port (`tls_port`, with `tls_cert` + `tls_key` or
    /// `dev_cert = true`).
    pub tls: Option<LbTls>,
    /// Timeouts set in the table (the balancer's defaults for the others).
    pub timeouts: LbTimeouts,
}

impl Default for LbSpec {
    fn default() -> Self {
        Self {
            count: 1,
            algorithm: AlgorithmName::RoundRobin,
            sticky_cookie: None,
            tls: None,
            timeouts: LbTimeouts::default(),
        }
    }
}

/// `[lb]` timeouts, in milliseconds, each in the range `strata lb` takes (`strata_lb::role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LbTimeouts {
    /// `connect_timeout_ms`.
    pub connect_ms: Option<u64>,
    /// `header_timeout_ms`.
    pub header_ms: Option<u64>,
    /// `total_timeout_ms`.
    pub total_ms: Option<u64>,
    /// `idle_timeout_ms`.
    pub idle_ms: Option<u64>,
    /// `client_header_timeout_ms`.
    pub client_header_ms: Option<u64>,
}

/// The balancer's TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbTls {
    /// 0: any free port.
    pub port: u16,
    /// PEM certificate chain and key; `None`: a self-signed certificate for local use.
    pub cert_and_key: Option<(String, String)>,
    /// Answer plain HTTP with a redirect to HTTPS (`https_redirect = true`).
    pub redirect: bool,
}

/// The most streaming replicas `strata up` runs.
pub const MAX_REPLICAS: i64 = 4;

/// The most shard groups a topology may have (a commit token names its group in 8 bits).
pub const MAX_SHARDS: i64 = 255;

/// The most PostgreSQL shard groups (spares included) `strata up` runs on one machine.
pub const MAX_POSTGRES_GROUPS: i64 = 16;

/// The data tier's engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataEngine {
    /// Embedded SQLite in the deployment directory.
    Sqlite,
    /// PostgreSQL servers that `strata up` creates and runs: a primary and `replicas`
    /// streaming replicas.
    Postgres {
        replicas: u8,
        commit: CommitMode,
        rejoin: RejoinMode,
    },
    /// Existing PostgreSQL servers, by URL (several hosts allowed). May hold a password: never
    /// shown.
    PostgresUrl { url: String },
}

/// `[sessions] engine`: where the API servers keep sessions and login-failure counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionsEngine {
    /// The data tier's database (SQLite embedded, the PostgreSQL primary).
    #[default]
    Database,
    /// A Redis of its own, durable (append-only file, fsync on every write, no eviction), run
    /// by `strata up` as the role `sessions-1`.
    Redis,
}

/// A validated topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub name: String,
    pub api: ApiSpec,
    /// The load balancer in front of the API servers, when the topology has one.
    pub lb: Option<LbSpec>,
    pub data: DataEngine,
    /// `[data] shards`: shard groups users are spread over (1: not sharded).
    pub shards: u16,
    /// `[data] spare_shards`: PostgreSQL shard groups run without slots, for `strata reshard`.
    pub spare_shards: u16,
    pub cache: CacheSpec,
    pub sessions: SessionsEngine,
    pub control: ControlSpec,
    pub workers: WorkersSpec,
    /// `[queue]`: the photo jobs' queue.
    pub queue: QueueSpec,
    /// `[blobs]`: the photos' blob store.
    pub blobs: BlobsSpec,
    /// CDN edges on the public entry, when the topology has them.
    pub edge: Option<EdgeSpec>,
    /// `[observe]`: Prometheus.
    pub observe: ObserveSpec,
    /// `[dns]`: the authoritative DNS server in front of the balancers, when the topology has
    /// one.
    pub dns: Option<DnsSpec>,
    /// `[[datacenter]]`: the data centres, in preference order (empty: one, unnamed).
    pub datacenters: Vec<DatacenterSpec>,
    /// `[[link]]`: the one-way delay between each pair of data centres.
    pub links: Vec<LinkSpec>,
}

/// `[workers]`: photo workers on the embedded queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkersSpec {
    /// Workers `strata up` runs (0 without the table).
    pub count: u16,
    /// Jobs each processes at once.
    pub concurrency: u16,
}

/// One mistake in a topology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyError {
    /// 1-based line, when the mistake has one.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every mistake of a file, shown one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TopologyErrors(pub Vec<TopologyError>);

impl fmt::Display for TopologyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "the topology has {n} mistake{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

/// The built-in default: a load balancer in front of three API servers on the embedded SQLite
/// data tier, and a photo worker.
pub const DEFAULT_TOPOLOGY: &str = include_str!("../../../../deploy/03-load-balancer.toml");

impl Topology {
    /// The built-in default topology.
    pub fn default_topology() -> Self {
        Topology {
            name: "default".into(),
            api: ApiSpec {
                count: 3,
                ports: Vec::new(),
            },
            lb: Some(LbSpec {
                algorithm: AlgorithmName::RoundRobin,
                ..LbSpec::default()
            }),
            data: DataEngine::Sqlite,
            shards: 1,
            spare_shards: 0,
            cache: CacheSpec::default(),
            sessions: SessionsEngine::Database,
            control: ControlSpec::default(),
            workers: WorkersSpec {
                count: 1,
                concurrency: 1,
            },
            queue: QueueSpec::Embedded,
            blobs: BlobsSpec::Fs,
            edge: None,
            observe: ObserveSpec::default(),
            dns: None,
            datacenters: Vec::new(),
            links: Vec::new(),
        }
    }

    /// Parses and validates a topology file. `public_port` is the port `strata up` will give
    /// the public entry (0 = any): a role's fixed port must not clash with it. Whether the
    /// engines it needs are installed is not checked: see [`Topology::compile`].
    pub fn parse(text: &str, public_port: u16) -> Result<Self, TopologyErrors> {
        Self::compile(text, public_port, &Environment::assumed())
    }

    /// Parses and validates a topology file as [`Topology::parse`] does, and checks it against
    /// `env` (normally [`Environment::this_machine`]): every engine it needs `strata up` to run
    /// is installed, every etcd endpoint of one's own answers. Every mistake is returned at
    /// once, in line order.
    pub fn compile(
        text: &str,
        public_port: u16,
        env: &Environment<'_>,
    ) -> Result<Self, TopologyErrors> {
        let doc = Document::parse(text).map_err(|e| TopologyErrors(vec![e]))?;
        let mut errors = Vec::new();
        let mut root = doc.root(&mut errors);
        let topology = read(&mut root);
        root.finish_with(unknown_table);
        checks::ports(&topology, &doc, public_port, &mut errors);
        checks::engines(&topology, &doc, env.locate, &mut errors);
        checks::control(&topology, &doc, env.answers, &mut errors);
        checks::dns(&topology, &doc, &mut errors);
        checks::edge(&topology, &doc, &mut errors);
        // Stable: mistakes on one line keep the order they were found in.
        errors.sort_by_key(|e| e.line);
        if errors.is_empty() {
            Ok(topology)
        } else {
            Err(TopologyErrors(errors))
        }
    }

    /// Total role instances.
    pub fn instance_count(&self) -> usize {
        usize::from(self.api.count)
            + self.lb.as_ref().map_or(0, |lb| usize::from(lb.count))
            + self.database_nodes()
            + self.controllers()
            + self.etcd_members()
            + self.cache_nodes()
            + usize::from(self.sessions == SessionsEngine::Redis)
            + usize::from(self.workers.count)
            + usize::from(self.queue == QueueSpec::RabbitMq)
            + usize::from(matches!(self.blobs, BlobsSpec::SeaweedFs { .. }))
            + self.edges()
            + usize::from(self.observe.prometheus)
            + usize::from(self.observe.alertmanager)
            + usize::from(self.observe.dashboard)
            + usize::from(self.dns.is_some())
            + self.relays()
    }

    /// Edges `strata up` runs, the shield included: in each data centre when there are
    /// `[[datacenter]]` tables.
    pub fn edges(&self) -> usize {
        let places = self.datacenters.len().max(1);
        self.edge.as_ref().map_or(0, |e| {
            (usize::from(e.count) + usize::from(e.shield)) * places
        })
    }

    /// Shared cache servers `strata up` runs: `[cache] nodes`, in each data centre when there
    /// are `[[datacenter]]` tables.
    pub fn cache_nodes(&self) -> usize {
        let places = self.datacenters.len().max(1);
        self.cache
            .shared
            .map_or(0, |(_, n)| usize::from(n) * places)
    }

    /// Whether `strata up` runs `strata control` (automatic failover): with PostgreSQL
    /// replicas it runs.
    pub fn has_control(&self) -> bool {
        matches!(self.data, DataEngine::Postgres { replicas, .. } if replicas > 0)
    }

    /// Controllers `strata up` runs (with PostgreSQL replicas): `[control] count` for each
    /// replicated cluster (each shard group is one).
    pub fn controllers(&self) -> usize {
        if self.has_control() {
            usize::from(self.control.count) * self.postgres_clusters()
        } else {
            0
        }
    }

    /// etcd members `strata up` runs: `[control] count`, with `store = "etcd"` and no etcd of
    /// one's own (the clusters of all shard groups share them, each under its own prefix).
    pub fn etcd_members(&self) -> usize {
        if self.control.store == StoreKind::Etcd
            && self.control.etcd.is_empty()
            && self.has_control()
        {
            usize::from(self.control.count)
        } else {
            0
        }
    }

    /// PostgreSQL servers `strata up` runs: a primary and its replicas per cluster (0 for
    /// SQLite or a URL).
    pub fn database_nodes(&self) -> usize {
        match self.data {
            DataEngine::Postgres { replicas, .. } => {
                (1 + usize::from(replicas)) * self.postgres_clusters()
            }
            _ => 0,
        }
    }

    /// The PostgreSQL shard groups `strata up` runs, `s1` … (spares last): none when the
    /// data tier is one cluster (or not run by `strata up`).
    pub fn postgres_groups(&self) -> Vec<String> {
        let sharded = self.shards > 1 || self.spare_shards > 0;
        match self.data {
            DataEngine::Postgres { .. } if sharded => (1..=self.shards + self.spare_shards)
                .map(|i| format!("s{i}"))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Replicated PostgreSQL clusters `strata up` runs: one per shard group, or the one.
    fn postgres_clusters(&self) -> usize {
        self.postgres_groups().len().max(1)
    }
}

/// Reads the top level: `name` and every table, each by its own module. A table that is
/// missing or wrong leaves its default, so that every other mistake is still found.
fn read(root: &mut Section<'_>) -> Topology {
    let name = root
        .string("name", "a non-empty string of at most 64 characters", |s| {
            !s.trim().is_empty() && s.chars().count() <= 64
        })
        .unwrap_or_else(|| "unnamed".to_string());
    let api = root.table("api", api::read);
    let lb = root.table("lb", lb::read);
    let datacentres = root.has("datacenter");
    let data = root.table("data", |sec| data::read(sec, datacentres));
    if !root.has("api") {
        root.error("api", "a topology needs an `[api]` table with `count = N`");
    }
    let mut topology = Topology {
        name,
        api: api.unwrap_or(ApiSpec {
            count: 0,
            ports: Vec::new(),
        }),
        lb,
        data: data
            .as_ref()
            .map_or(DataEngine::Sqlite, |d| d.engine.clone()),
        shards: data.as_ref().map_or(1, |d| d.shards),
        spare_shards: data.map_or(0, |d| d.spare_shards),
        cache: root.table("cache", cache::read).unwrap_or_default(),
        sessions: root.table("sessions", sessions::read).unwrap_or_default(),
        control: root.table("control", control::read).unwrap_or_default(),
        workers: root.table("workers", workers::read).unwrap_or_default(),
        queue: root.table("queue", queue::read_queue).unwrap_or_default(),
        blobs: root.table("blobs", queue::read_blobs).unwrap_or_default(),
        edge: root.table("edge", edge::read),
        observe: root.table("observe", observe::read).unwrap_or_default(),
        dns: root.table("dns", dns::read),
        datacenters: Vec::new(),
        links: Vec::new(),
    };
    datacenters::read(root, &mut topology);
    topology
}

/// The mistake of a top-level key that is not one of `tables` (those read): a role this
/// version does not have, an engine that comes from another table, or a typo.
fn unknown_table(key: &str, tables: &[&str]) -> String {
    match key {
        "postgres" => "there is no `[postgres]` table: PostgreSQL servers come from `[data] \
                       engine = \"postgres\"` with `replicas` (the controllers that fail over \
                       between them from `[control]`)"
            .to_string(),
        "etcd" => "there is no `[etcd]` table: the control plane's etcd members come from \
                   `[control] store = \"etcd\"` (with `count`), or `etcd = [endpoints]` for \
                   one's own"
            .to_string(),
        "redis" => "there is no `[redis]` table: shared Redis cache servers come from `[cache] \
                    engine = \"redis\"` (a Redis for sessions from `[sessions] engine = \"redis\"`)"
            .to_string(),
        "worker" => "there is no `[worker]` table: photo workers come from `[workers]` with \
                     `count` (and `concurrency`)"
            .to_string(),
        "rabbitmq" => "there is no `[rabbitmq]` table: a RabbitMQ broker comes from `[queue] \
                       engine = \"rabbitmq\"`"
            .to_string(),
        "seaweedfs" | "s3" => "there is no such table: an S3-compatible object store comes from \
                               `[blobs] engine = \"seaweedfs\"` (or \"s3\" with `endpoint`)"
            .to_string(),
        "memcached" => "there is no `[memcached]` table: shared Memcached servers come from \
                        `[cache] engine = \"memcached\"`"
            .to_string(),
        "datacentre" | "datacenters" | "datacentres" => {
            "data centres are `[[datacenter]]` tables (docs/datacenters.md)".to_string()
        }
        other => format!(
            "unknown role or section `{other}`{}",
            suggestion(other, tables)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mistakes of an invalid topology (public port 8080), for every section's tests.
    pub(super) fn errors(text: &str) -> Vec<TopologyError> {
        Topology::parse(text, 8080).expect_err("invalid").0
    }

    #[test]
    fn every_preset_in_deploy_is_a_valid_topology() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("deploy/") {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            if let Err(e) = Topology::parse(&text, 8080) {
                panic!("{} is not valid: {e}", path.display());
            }
            seen += 1;
        }
        assert!(seen >= 6, "the presets were found ({seen})");
    }

    #[test]
    fn the_default_topology_is_three_api_servers_on_sqlite() {
        let t = Topology::parse(DEFAULT_TOPOLOGY, 8080).expect("valid");
        assert_eq!(t, Topology::default_topology());
    }

    #[test]
    fn every_mistake_is_reported_at_once_with_its_line() {
        let text = "name = \"x\"\n[api]\ncount = 0\nportz = 1\n[apii]\ncount = 1\n[datacenter]\nname = \"eu\"\n[data]\nengine = \"mysql\"\n";
        let e = errors(text);
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(e.len(), 5, "{shown:#?}");
        assert!(
            shown.iter().any(|s| s.starts_with("line 3:")
                && s.contains("between 1 and 64")
                && s.ends_with("`api.count` must be between 1 and 64, not 0")),
            "{shown:#?}"
        );
        assert!(
            shown.iter().any(|s| s.starts_with("line 4:")
                && s.contains("api.portz")
                && s.contains("`ports`")),
            "{shown:#?}"
        );
        assert!(
            shown.iter().any(|s| s.starts_with("line 5:")
                && s.contains("unknown role")
                && s.contains("did you mean `api`")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("line 7:") && s.contains("tables written `[[datacenter]]`")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("line 10:") && s.contains("postgres")),
            "{shown:#?}"
        );
        let lines: Vec<Option<usize>> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, [Some(3), Some(4), Some(5), Some(7), Some(10)]);
    }

    #[test]
    fn the_file_of_strata_ups_test_and_the_docs_example_reads_as_documented() {
        let text = "name = \"bad\"\n[api]\ncount = 0\nports = [9001]\n[apis]\ncount = 2\n[datacenter]\nname = \"eu\"\n";
        let shown = Topology::parse(text, 0).expect_err("invalid").to_string();
        assert!(
            shown.starts_with(
                "the topology has 3 mistakes:\n  \
                 - line 3: `api.count` must be between 1 and 64, not 0\n  \
                 - line 5: unknown role or section `apis` (did you mean `api`?)\n  \
                 - line 7: `datacenter` must be tables written `[[datacenter]]`, not a table"
            ),
            "{shown}"
        );
    }

    #[test]
    fn mistakes_in_four_sections_are_all_reported_with_their_lines() {
        let text = "name = \"x\"\n\
                    [api]\ncount = 3\nportz = [1]\n\
                    [lb]\nalgorithm = \"fastest\"\n\
                    [data]\nengine = \"postgres\"\nreplicas = 9\n\
                    [cache]\nengine = \"redis\"\nnodes = 0\n\
                    [sessions]\nengine = \"files\"\n";
        let e = errors(text);
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "line 4: unknown key `api.portz` (did you mean `ports`?) (known: count, ports)",
                "line 6: `lb.algorithm` must be one of \"round-robin\", \"weighted-round-robin\", \
                 \"least-connections\", \"power-of-two\", \"ip-hash\", \"consistent-hash\" or \
                 \"random\", not \"fastest\"",
                "line 9: `data.replicas` must be between 0 and 4, not 9",
                "line 12: `cache.nodes` must be between 1 and 4, not 0",
                "line 14: `sessions.engine` must be \"database\" or \"redis\", not \"files\"",
            ]
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = errors("name = \"x\"\n[api\ncount = 1\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(2), "{e:?}");
        assert!(e[0].message.contains("not valid TOML"));
    }

    #[test]
    fn a_missing_api_table_and_bad_types_are_reported() {
        let e = errors("name = 5\ndata = 1\n");
        assert_eq!(e.len(), 3, "{e:?}");
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "a topology needs an `[api]` table with `count = N`",
                "line 1: `name` must be a non-empty string of at most 64 characters, not 5",
                "line 2: `data` must be a table, not 1",
            ]
        );
    }

    #[test]
    fn engines_and_roles_of_other_versions_named_as_tables_get_a_hint() {
        let text = "[postgres]\nport = 5432\n[control]\n[redis]\n[memcached]\n[worker]\ncount = 2\n\
                    [api]\ncount = 1\nqueue.count = 1\n[rabbitmq]\n";
        let e = errors(text);
        let at = |line: usize| {
            e.iter()
                .find(|e| e.line == Some(line))
                .map(|e| e.message.as_str())
                .unwrap_or_default()
        };
        assert_eq!(e.len(), 7, "{e:#?}");
        assert!(
            at(1).contains("come from `[data] engine = \"postgres\"` with `replicas`"),
            "{e:#?}"
        );
        // [control] is a table of its own, which needs PostgreSQL replicas to fail over.
        assert!(
            at(3).contains("needs `[data] engine = \"postgres\"` with `replicas`"),
            "{e:#?}"
        );
        assert!(at(4).contains("`[cache] engine = \"redis\"`"), "{e:#?}");
        assert!(at(4).contains("`[sessions] engine = \"redis\"`"), "{e:#?}");
        assert!(at(5).contains("`[cache] engine = \"memcached\"`"), "{e:#?}");
        assert!(
            at(6).contains("photo workers come from `[workers]`"),
            "{e:#?}"
        );
        // `queue.count` under [api] is a key of `api`; [rabbitmq] is an engine of `[queue]`.
        assert!(at(10).contains("unknown key `api.queue`"), "{e:#?}");
        assert!(
            at(11).contains("comes from `[queue] engine = \"rabbitmq\"`"),
            "{e:#?}"
        );
        let e = errors("[api]\ncount = 1\n[sesions]\nengine = \"redis\"\n");
        assert_eq!(
            e[0].message,
            "unknown role or section `sesions` (did you mean `sessions`?)"
        );
    }
}
