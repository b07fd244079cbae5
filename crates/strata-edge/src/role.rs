//! `strata edge`: the edge as a role process — its command line ([`EdgeArgs`]) and startup
//! (validate, open the store, bind, announce readiness, serve until told to stop) — and
//! `strata edge purge`, which asks a running edge's admin API to purge ([`PurgeArgs`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use strata_core::ready::ReadyLine;

use crate::purge::PurgeRequest;
use crate::{Edge, EdgeConfig, StoreConfig};

/// A size in bytes, written `N`, `NKiB`, `NMiB`, `NGiB` (or `KB`/`MB`/`GB`, powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?} is not a size: write e.g. 512MiB, 2GiB or 1000000"))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "{other:?} is not a unit: use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
                ));
            }
        };
        n.checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= scale && self.0.is_multiple_of(scale) {
                return write!(f, "{}{unit}", self.0 / scale);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// `strata edge`: run the edge, or (`strata edge purge`) purge a running one. As a role of
/// `strata up` it is the edge alone: only its arguments are rendered.
#[derive(Debug, Clone, PartialEq, clap::Args, serde::Serialize)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct EdgeCommand {
    #[command(subcommand)]
    #[serde(skip)]
    pub action: Option<EdgeAction>,
    #[command(flatten)]
    #[serde(flatten)]
    pub args: EdgeArgs,
}

impl EdgeCommand {
    /// Run the edge with `args`.
    pub fn serve(args: EdgeArgs) -> Self {
        Self { action: None, args }
    }
}

#[derive(Debug, Clone, PartialEq, clap::Subcommand)]
pub enum EdgeAction {
    /// Purge a running edge's cache by URL, prefix or surrogate key (hard, or --soft: mark
    /// stale), through its admin API.
    Purge(PurgeArgs),
}

/// The edge role's command line.
#[derive(Debug, Clone, PartialEq, clap::Args, serde::Serialize)]
pub struct EdgeArgs {
    /// Address clients connect to.
    #[arg(long, env = "STRATA_EDGE_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Address of the admin API (`/purge`, `/metrics`); port 0 picks a free one.
    #[arg(long, env = "STRATA_EDGE_ADMIN", default_value = "127.0.0.1:0")]
    pub admin: SocketAddr,
    /// The origin server, as IP:PORT (a load balancer or an API server).
    #[arg(long, env = "STRATA_EDGE_ORIGIN", required = true)]
    #[serde(serialize_with = "strata_core::args::display_opt")]
    pub origin: Option<SocketAddr>,
    /// Memory for cached objects (e.g. 256MiB).
    #[arg(long, default_value = "256MiB")]
    #[serde(serialize_with = "strata_core::args::display")]
    pub memory: ByteSize,
    /// Directory of the disk cache, which survives restarts (default: memory only).
    #[arg(long, env = "STRATA_EDGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Disk for cached objects (with --cache-dir).
    #[arg(long, default_value = "1GiB")]
    #[serde(serialize_with = "strata_core::args::display")]
    pub disk: ByteSize,
    /// The largest object stored; larger responses pass through uncached.
    #[arg(long, default_value = "8MiB")]
    #[serde(serialize_with = "strata_core::args::display")]
    pub max_object: ByteSize,
    /// Milliseconds to open a connection to the origin.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(strata_lb::role::CONNECT_TIMEOUT_MS))]
    pub connect_timeout_ms: u64,
    /// Milliseconds until the origin's response head arrives.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(strata_lb::role::HEADER_TIMEOUT_MS))]
    pub header_timeout_ms: u64,
    /// Milliseconds for a whole response body to arrive from the origin.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub body_timeout_ms: u64,
    /// Milliseconds a request waits for another request's fetch of the same URL before it
    /// fetches for itself.
    #[arg(long, default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(strata_lb::role::TOTAL_TIMEOUT_MS))]
    pub total_timeout_ms: u64,
    /// Milliseconds a request waits for the origin to revalidate a stale copy that
    /// `stale-if-error` allows, before that copy is the answer (the revalidation goes on).
    /// 0: wait for the origin's answer or failure.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub stale_grace_ms: u64,
    /// Milliseconds an unused origin connection is kept open.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(strata_lb::role::IDLE_TIMEOUT_MS))]
    pub idle_timeout_ms: u64,
    /// Milliseconds a client has to send a whole request head (slowloris defence).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(strata_lb::role::CLIENT_HEADER_TIMEOUT_MS))]
    pub client_header_timeout_ms: u64,
    /// Client connections accepted at once; more are closed on accept.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Terminate TLS on this address too (needs --tls-cert or --dev-cert).
    #[arg(long)]
    pub tls_listen: Option<SocketAddr>,
    /// A certificate, as CERT.pem,KEY.pem or, for SNI, HOST=CERT.pem,KEY.pem (repeat for several).
    #[arg(long = "tls-cert")]
    #[serde(serialize_with = "strata_core::args::display_all")]
    pub tls_certs: Vec<strata_lb::tls::CertFiles>,
    /// Answer plain-HTTP requests with a 308 redirect to the same path on --tls-listen's port.
    #[arg(long)]
    pub https_redirect: bool,
    /// Generate a self-signed certificate for localhost and write it (PEM) to this path, so
    /// clients can trust it. For local use only.
    #[arg(long)]
    pub dev_cert: Option<PathBuf>,
    /// Serve the files of this directory under --static-prefix, without asking the origin.
    #[arg(long)]
    pub static_dir: Option<PathBuf>,
    /// The URL path prefix of --static-dir's files (starts and ends with /).
    #[arg(long, default_value = "/static/")]
    pub static_prefix: String,
    /// `max-age` of static files' Cache-Control, in seconds.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    pub static_max_age: u64,
    /// Send the paths under PREFIX to another origin, PREFIX stripped to `/`, as
    /// PREFIX=IP:PORT (e.g. /dashboard/=127.0.0.1:9000); PREFIX without its final slash is
    /// redirected to it. Cached by the same rules as the origin's answers. Repeat for several.
    #[arg(long = "route")]
    #[serde(serialize_with = "strata_core::args::display_all")]
    pub routes: Vec<crate::route::RouteSpec>,
    /// The share of new traces recorded (0 to 1); a request's own `traceparent` decides for
    /// its trace.
    #[arg(long, default_value_t = strata_core::trace::SampleRate::default())]
    #[serde(serialize_with = "strata_core::args::display")]
    pub trace_sample: strata_core::trace::SampleRate,
    /// This role's name in its topology.
    #[arg(long, default_value = "edge")]
    pub name: String,
    /// Exit when standard input reaches end-of-file (set by `strata up`).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

impl EdgeArgs {
    /// An edge on `listen` in front of `origin`, every other setting at its default (the
    /// same defaults clap gives; a test keeps the two in step).
    pub fn new(listen: SocketAddr, origin: SocketAddr) -> Self {
        Self {
            listen,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            origin: Some(origin),
            memory: ByteSize(256 << 20),
            cache_dir: None,
            disk: ByteSize(1 << 30),
            max_object: ByteSize(8 << 20),
            connect_timeout_ms: 1000,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            total_timeout_ms: 15_000,
            stale_grace_ms: 1000,
            idle_timeout_ms: 60_000,
            client_header_timeout_ms: 10_000,
            max_connections: 10_000,
            tls_listen: None,
            tls_certs: Vec::new(),
            https_redirect: false,
            dev_cert: None,
            static_dir: None,
            static_prefix: "/static/".into(),
            static_max_age: 3600,
            routes: Vec::new(),
            trace_sample: strata_core::trace::SampleRate::default(),
            name: "edge".into(),
            exit_on_stdin_eof: false,
        }
    }

    /// The edge's configuration, or every reason these arguments do not make one.
    pub fn config(&self) -> anyhow::Result<EdgeConfig> {
        let origin = self
            .origin
            .context("--origin IP:PORT is required: the server the edge caches")?;
        if self.memory.0 < 1 << 20 {
            anyhow::bail!("--memory must be at least 1MiB (got {})", self.memory);
        }
        if self.max_object.0 == 0 || self.max_object.0 > self.memory.0 / 2 {
            anyhow::bail!(
                "--max-object must be more than 0 and at most half of --memory ({}), got {}",
                self.memory,
                self.max_object
            );
        }
        let mut config = EdgeConfig::new(self.listen, self.admin, origin);
        config.trace_sampler = self.trace_sample.sampler();
        config.store = StoreConfig {
            memory_bytes: self.memory.0,
            disk: self.cache_dir.clone().map(|dir| (dir, self.disk.0)),
            max_object: self.max_object.0,
        };
        config.timeouts.connect = Duration::from_millis(self.connect_timeout_ms);
        config.timeouts.header = Duration::from_millis(self.header_timeout_ms);
        config.timeouts.total = Duration::from_millis(self.total_timeout_ms);
        config.timeouts.idle = Duration::from_millis(self.idle_timeout_ms);
        config.timeouts.client_header = Duration::from_millis(self.client_header_timeout_ms);
        config.body_timeout = Duration::from_millis(self.body_timeout_ms);
        config.stale_grace = Duration::from_millis(self.stale_grace_ms);
        config.max_connections = self.max_connections as usize;
        if let Some(listen) = self.tls_listen {
            let mut certs = Vec::new();
            for files in &self.tls_certs {
                certs.push(strata_lb::tls::load(files)?);
            }
            if let Some(out) = &self.dev_cert {
                certs.push(strata_lb::tls::dev_cert(out)?);
            }
            if certs.is_empty() {
                anyhow::bail!(
                    "--tls-listen needs a certificate: pass --tls-cert CERT.pem,KEY.pem or --dev-cert PATH"
                );
            }
            config.tls = Some(strata_lb::TlsListen {
                listen,
                config: strata_lb::tls::server_config(certs)?,
                redirect_http: self.https_redirect,
            });
        } else if !self.tls_certs.is_empty() || self.dev_cert.is_some() || self.https_redirect {
            anyhow::bail!("--tls-cert, --dev-cert and --https-redirect need --tls-listen ADDR");
        }
        if let Some(dir) = &self.static_dir {
            let prefix = &self.static_prefix;
            if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.len() > 256 {
                anyhow::bail!(
                    "--static-prefix must start and end with / (e.g. /static/), got {prefix:?}"
                );
            }
            if !dir.is_dir() {
                anyhow::bail!("--static-dir {} is not a directory", dir.display());
            }
            config.files = Some(crate::files::StaticFiles {
                dir: dir.clone(),
                prefix: prefix.clone(),
                max_age: self.static_max_age,
            });
        }
        let static_prefix = config.files.as_ref().map(|f| f.prefix.as_str());
        crate::route::check(&self.routes, static_prefix).map_err(anyhow::Error::msg)?;
        config.routes = self.routes.clone();
        Ok(config)
    }
}

/// `strata edge purge`'s command line.
#[derive(Debug, Clone, PartialEq, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(false)))]
#[command(group(clap::ArgGroup::new("where").required(true).multiple(false)))]
pub struct PurgeArgs {
    /// An edge's admin address (`admin` in its readiness line). Repeat (or separate with
    /// commas) to purge several edges, in the order given: a shield before the edges in front
    /// of it, so they cannot refill from it.
    #[arg(
        long = "admin",
        env = "STRATA_EDGE_ADMIN",
        group = "where",
        value_delimiter = ','
    )]
    pub admins: Vec<SocketAddr>,
    /// Every edge of the deployment `strata up` runs in this directory, the shield first
    /// (resolved to their admin addresses by `strata`, which reads the deployment's state).
    #[arg(long, group = "where")]
    pub dir: Option<std::path::PathBuf>,
    /// Purge one URL: http://host/path?query (that host) or /path?query (every host).
    #[arg(long, group = "what")]
    pub url: Option<String>,
    /// Purge every URL under a prefix (http://host/prefix or /prefix).
    #[arg(long, group = "what")]
    pub prefix: Option<String>,
    /// Purge every object the origin tagged with this surrogate key (`Surrogate-Key`).
    #[arg(long, group = "what")]
    pub key: Option<String>,
    /// Mark stale instead of removing: the next request revalidates with the origin.
    #[arg(long)]
    pub soft: bool,
    /// Seconds to wait for the edge's answer.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub timeout_secs: u64,
}

/// Runs `strata edge` or `strata edge purge`.
pub async fn main(command: EdgeCommand) -> anyhow::Result<()> {
    match command.action {
        Some(EdgeAction::Purge(args)) => {
            let mut failed = Vec::new();
            for (admin, answer) in purge(&args).await? {
                match answer {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("error: {admin}: {e:#}");
                        failed.push(admin.to_string());
                    }
                }
            }
            if !failed.is_empty() {
                anyhow::bail!(
                    "the purge did not reach {} of {} edges ({}): run it again for them",
                    failed.len(),
                    args.admins.len(),
                    failed.join(", ")
                );
            }
            Ok(())
        }
        None => run(command.args).await,
    }
}

/// Asks each edge of `args.admins`, in order, to purge; each one's JSON answer or why it has
/// none. A purge that names nothing valid is refused before any edge is asked.
pub async fn purge(args: &PurgeArgs) -> anyhow::Result<Vec<(SocketAddr, anyhow::Result<String>)>> {
    let request = PurgeRequest {
        url: args.url.clone(),
        prefix: args.prefix.clone(),
        key: args.key.clone(),
        soft: args.soft,
    };
    // Refused here, with the reason, rather than by the edge.
    request.parse().map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        !args.admins.is_empty(),
        "no edge to purge: give --admin ADDR (an edge's admin address) or --dir DIR (a \
         deployment with edges)"
    );
    let body = Bytes::from(serde_json::to_vec(&request)?);
    let mut answers = Vec::with_capacity(args.admins.len());
    for admin in &args.admins {
        let answer = purge_one(*admin, body.clone(), args.timeout_secs).await;
        answers.push((*admin, answer));
    }
    Ok(answers)
}

/// One edge's purge: its JSON answer.
async fn purge_one(admin: SocketAddr, body: Bytes, timeout_secs: u64) -> anyhow::Result<String> {
    let exchange = async move {
        let stream = tokio::net::TcpStream::connect(admin)
            .await
            .with_context(|| format!("cannot connect to the edge's admin API at {admin}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let req = http::Request::post("/purge")
            .header(http::header::HOST, admin.to_string())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the edge's answer: {e}"))?
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if !status.is_success() {
            let detail = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
                .unwrap_or(text);
            anyhow::bail!("the edge refused the purge ({status}): {detail}");
        }
        Ok::<_, anyhow::Error>(text)
    };
    tokio::time::timeout(Duration::from_secs(timeout_secs), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("the edge at {admin} did not answer within {timeout_secs}s"))?
}

/// Runs the edge until SIGTERM, Ctrl-C or (with `--exit-on-stdin-eof`) its supervisor's exit.
pub async fn run(args: EdgeArgs) -> anyhow::Result<()> {
    strata_core::telemetry::init();
    strata_core::trace::layer::set_service("edge");
    let config = args.config()?;
    let listen = config.listen;
    let edge = Edge::build(config).await.with_context(|| {
        format!("cannot start the edge on {listen}: is another process using that port? Pass another --listen (port 0 picks a free one)")
    })?;
    let addr = edge.addr()?;
    let admin = edge.admin_addr()?;
    let mut ready = ReadyLine::new(&args.name)
        .with_addr("http", addr)
        .with_addr("admin", admin);
    if let Some(tls) = edge.tls_addr() {
        ready = ready.with_addr("https", tls);
    }
    let stop = strata_core::shutdown::signal(args.exit_on_stdin_eof);
    ready
        .announce()
        .context("cannot write the readiness line")?;
    tracing::info!(role = %args.name, %addr, %admin, "caching http://{addr}/");
    edge.run_until_stopped(stop)
        .await
        .context("the edge failed")?;
    tracing::info!(role = %args.name, "stopped after finishing in-flight requests");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        edge: EdgeCommand,
    }

    #[test]
    fn the_constructor_has_the_defaults_of_the_command_line() {
        let parsed = Cli::try_parse_from([
            "edge",
            "--listen",
            "127.0.0.1:80",
            "--origin",
            "127.0.0.1:1",
        ])
        .expect("parses");
        assert_eq!(parsed.edge.action, None);
        assert_eq!(
            parsed.edge.args,
            EdgeArgs::new(
                "127.0.0.1:80".parse().expect("addr"),
                "127.0.0.1:1".parse().expect("addr")
            )
        );
    }

    #[test]
    fn purge_needs_exactly_one_selector_but_no_origin() {
        let parsed = Cli::try_parse_from([
            "edge",
            "purge",
            "--admin",
            "127.0.0.1:9",
            "--key",
            "k",
            "--soft",
        ])
        .expect("parses");
        let Some(EdgeAction::Purge(p)) = parsed.edge.action else {
            panic!("a purge");
        };
        assert_eq!(p.admins.len(), 1);
        assert_eq!((p.key.as_deref(), p.soft), (Some("k"), true));
        assert!(Cli::try_parse_from(["edge", "purge", "--admin", "127.0.0.1:9"]).is_err());
        let by_dir = Cli::try_parse_from(["edge", "purge", "--dir", "/d", "--url", "/a"])
            .expect("a deployment instead of addresses");
        let Some(EdgeAction::Purge(p)) = by_dir.edge.action else {
            panic!("a purge");
        };
        assert_eq!(p.dir.as_deref(), Some(std::path::Path::new("/d")));
        assert!(
            Cli::try_parse_from([
                "edge",
                "purge",
                "--dir",
                "/d",
                "--admin",
                "127.0.0.1:9",
                "--url",
                "/a"
            ])
            .is_err(),
            "one or the other"
        );
        assert!(
            Cli::try_parse_from(["edge", "purge", "--url", "/a"]).is_err(),
            "somewhere to purge"
        );
        assert!(
            Cli::try_parse_from([
                "edge",
                "purge",
                "--admin",
                "127.0.0.1:9",
                "--url",
                "/a",
                "--key",
                "k"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from(["edge"]).is_err(),
            "the role needs --origin"
        );
    }

    #[test]
    fn routes_parse_and_a_bad_one_is_refused_with_the_reason() {
        let parsed = Cli::try_parse_from([
            "edge",
            "--origin",
            "127.0.0.1:1",
            "--route",
            "/dashboard/=127.0.0.1:2",
            "--route",
            "/other/=127.0.0.1:3",
        ])
        .expect("parses");
        let routes: Vec<String> = parsed
            .edge
            .args
            .routes
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(routes, ["/dashboard/=127.0.0.1:2", "/other/=127.0.0.1:3"]);
        assert!(parsed.edge.args.config().is_ok());
        for (bad, why) in [
            ("dashboard/=127.0.0.1:2", "start and end with /"),
            ("/dashboard/=nowhere", "not an address"),
        ] {
            let e = Cli::try_parse_from(["edge", "--origin", "127.0.0.1:1", "--route", bad])
                .expect_err(bad);
            assert_eq!(e.exit_code(), 2, "a usage error");
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        let mut args = parsed.edge.args;
        args.routes
            .push("/dashboard/api/=127.0.0.1:4".parse().expect("route"));
        let e = args.config().expect_err("overlapping routes");
        assert!(e.to_string().contains("overlap"), "{e}");
    }

    #[test]
    fn sizes_parse_with_units_and_print_back() {
        assert_eq!("512MiB".parse::<ByteSize>(), Ok(ByteSize(512 << 20)));
        assert_eq!("2 GiB".parse::<ByteSize>(), Ok(ByteSize(2 << 30)));
        assert_eq!("1000".parse::<ByteSize>(), Ok(ByteSize(1000)));
        assert_eq!("1MB".parse::<ByteSize>(), Ok(ByteSize(1_000_000)));
        assert!("MiB".parse::<ByteSize>().is_err());
        assert!("5 parsecs".parse::<ByteSize>().is_err());
        assert!("99999999999TiB".parse::<ByteSize>().is_err());
        for s in ["256MiB", "1GiB", "1000", "3KiB"] {
            assert_eq!(s.parse::<ByteSize>().expect("size").to_string(), s);
        }
    }

    #[test]
    fn impossible_sizes_are_refused_with_the_reason() {
        let mut args = EdgeArgs::new(
            "127.0.0.1:0".parse().expect("addr"),
            "127.0.0.1:1".parse().expect("addr"),
        );
        args.max_object = ByteSize(200 << 20);
        let e = args.config().expect_err("too large");
        assert!(e.to_string().contains("--max-object"));
        args.memory = ByteSize(10);
        assert!(
            args.config()
                .expect_err("too small")
                .to_string()
                .contains("--memory")
        );
    }

    #[test]
    fn tls_needs_both_a_listener_and_a_certificate() {
        let mut args = EdgeArgs::new(
            "127.0.0.1:0".parse().expect("addr"),
            "127.0.0.1:1".parse().expect("addr"),
        );
        args.tls_listen = Some("127.0.0.1:0".parse().expect("addr"));
        let e = args.config().expect_err("no certificate");
        assert!(e.to_string().contains("certificate"), "{e}");
        args.tls_listen = None;
        args.dev_cert = Some("dev.pem".into());
        let e = args.config().expect_err("no listener");
        assert!(e.to_string().contains("--tls-listen"), "{e}");
        args.dev_cert = None;
        args.https_redirect = true;
        let e = args.config().expect_err("a redirect to no listener");
        assert!(e.to_string().contains("--tls-listen"), "{e}");
    }
}
