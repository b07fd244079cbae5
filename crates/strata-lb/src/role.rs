//! `strata lb`: the load balancer as a role process — its command line ([`LbArgs`], which
//! `strata up` fills in from a topology's `[lb]` table and this role parses back) and its
//! startup: validate, bind, announce readiness, serve until told to stop.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use anyhow::Context as _;
use strata_core::ready::ReadyLine;

use crate::{AlgorithmName, BackendSpec, HashOn, LbConfig, LoadBalancer};

/// Milliseconds `--connect-timeout-ms` (`[lb] connect_timeout_ms`) may be.
pub const CONNECT_TIMEOUT_MS: RangeInclusive<u64> = 1..=60_000;
/// Milliseconds `--header-timeout-ms` may be.
pub const HEADER_TIMEOUT_MS: RangeInclusive<u64> = 1..=600_000;
/// Milliseconds `--total-timeout-ms` may be.
pub const TOTAL_TIMEOUT_MS: RangeInclusive<u64> = 1..=3_600_000;
/// Milliseconds `--idle-timeout-ms` may be.
pub const IDLE_TIMEOUT_MS: RangeInclusive<u64> = 100..=3_600_000;
/// Milliseconds `--client-header-timeout-ms` may be.
pub const CLIENT_HEADER_TIMEOUT_MS: RangeInclusive<u64> = 100..=600_000;

#[derive(Debug, Clone, PartialEq, clap::Args, serde::Serialize)]
pub struct LbArgs {
    /// Address clients connect to.
    #[arg(long, env = "STRATA_LB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the admin API (`/admin/backends`, `/metrics`); port 0 picks a free one.
    #[arg(long, env = "STRATA_LB_ADMIN", default_value = "127.0.0.1:0")]
    pub admin: SocketAddr,
    /// A backend, as NAME=HOST:PORT or NAME=HOST:PORT@WEIGHT (repeat for each backend).
    #[arg(long = "backend", required = true)]
    #[serde(serialize_with = "strata_core::args::display_all")]
    pub backends: Vec<BackendSpec>,
    /// Balancing algorithm.
    #[arg(long, value_enum, default_value_t = AlgorithmName::RoundRobin)]
    pub algorithm: AlgorithmName,
    /// What consistent hashing hashes: `header:NAME`, `cookie:NAME` or `path`.
    #[arg(long, default_value = "path")]
    #[serde(serialize_with = "strata_core::args::display")]
    pub hash_on: HashOn,
    /// Path of the active health check.
    #[arg(long, default_value = "/healthz")]
    pub health_path: String,
    /// Milliseconds between active health checks.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub health_interval_ms: u64,
    /// Milliseconds a health check may take.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub health_timeout_ms: u64,
    /// Consecutive good checks that bring a backend back.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rise: u32,
    /// Consecutive failed checks that take a backend out.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub fall: u32,
    /// Consecutive failed requests (connect failure, reset, 5xx) that eject a backend.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub eject_after: u32,
    /// Milliseconds to open a backend connection.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(CONNECT_TIMEOUT_MS))]
    pub connect_timeout_ms: u64,
    /// Milliseconds until a backend's response head arrives.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(HEADER_TIMEOUT_MS))]
    pub header_timeout_ms: u64,
    /// Milliseconds for everything up to a response head: reading a buffered request body and
    /// every attempt and retry.
    #[arg(long, default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(TOTAL_TIMEOUT_MS))]
    pub total_timeout_ms: u64,
    /// Milliseconds an unused pooled backend connection is kept open.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(IDLE_TIMEOUT_MS))]
    pub idle_timeout_ms: u64,
    /// Milliseconds a client has to send a whole request head, and an idle keep-alive client
    /// connection stays open waiting for the next one (slowloris defence).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(CLIENT_HEADER_TIMEOUT_MS))]
    pub client_header_timeout_ms: u64,
    /// Requests per second allowed per client IP (0 = no limit); over it: 429 + Retry-After.
    #[arg(long, default_value_t = 0.0)]
    pub rate_limit: f64,
    /// Burst allowed per client IP above the rate.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_burst: u32,
    /// Client connections accepted at once; more are closed on accept.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Proxy worker threads, each with its own event loop and backend connections (0 = one per
    /// core).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=256))]
    pub workers: u64,
    /// Sticky sessions: the name of the signed cookie that pins a client to a backend.
    #[arg(long)]
    pub sticky_cookie: Option<String>,
    /// Key for the sticky cookie's signature, 64 hex digits (default: a random key per process).
    /// Balancers that share a key honour each other's cookies. Never logged.
    #[arg(long, env = "STRATA_LB_STICKY_KEY", hide_env_values = true)]
    pub sticky_key: Option<String>,
    /// Read the sticky cookie's key from this file instead (64 hex digits), so that the
    /// balancers of one deployment, and a restarted one, honour each other's cookies.
    #[arg(long, conflicts_with = "sticky_key")]
    pub sticky_key_file: Option<std::path::PathBuf>,
    /// Terminate TLS on this address too (needs --tls-cert or --dev-cert).
    #[arg(long)]
    pub tls_listen: Option<SocketAddr>,
    /// A certificate, as CERT.pem,KEY.pem or, for SNI, HOST=CERT.pem,KEY.pem (repeat for several).
    #[arg(long = "tls-cert")]
    #[serde(serialize_with = "strata_core::args::display_all")]
    pub tls_certs: Vec<crate::tls::CertFiles>,
    /// Generate a self-signed certificate for localhost and write it (PEM) to this path, so
    /// clients can trust it. For local use only.
    #[arg(long)]
    pub dev_cert: Option<std::path::PathBuf>,
    /// Answer plain-HTTP requests with a 308 redirect to the TLS listener.
    #[arg(long)]
    pub https_redirect: bool,
    /// This role's name in its topology.
    /// The local address of connections to backends (default: the system picks). Backends that
    /// trust only their balancer's address for `X-Forwarded-For` need it fixed; `strata up`
    /// uses 127.0.0.2.
    #[arg(long)]
    pub source_addr: Option<std::net::IpAddr>,
    /// A file that keeps drains across restarts: drains and undrains through the admin API
    /// rewrite it, and the balancer drains the backends it names when it starts.
    #[arg(long)]
    pub drain_file: Option<std::path::PathBuf>,
    /// The share of new traces recorded (0 to 1): requests that arrive without a valid
    /// `traceparent` start a trace, and this many of them are kept and exported. A request's
    /// own `traceparent` decides for its trace.
    #[arg(long, default_value_t = strata_core::trace::SampleRate::default())]
    #[serde(serialize_with = "strata_core::args::display")]
    pub trace_sample: strata_core::trace::SampleRate,
    #[arg(long, default_value = "lb")]
    pub name: String,
    /// Exit when standard input reaches end-of-file (set by `strata up`).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

impl LbArgs {
    /// A balancer listening on `listen` in front of `backends`, every other setting at its
    /// default (the same defaults clap gives; a test keeps the two in step).
    pub fn new(listen: SocketAddr, backends: Vec<BackendSpec>) -> Self {
        Self {
            listen,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            backends,
            algorithm: AlgorithmName::RoundRobin,
            hash_on: HashOn::Path,
            health_path: "/healthz".into(),
            health_interval_ms: 1000,
            health_timeout_ms: 500,
            rise: 2,
            fall: 2,
            eject_after: 3,
            connect_timeout_ms: 1000,
            header_timeout_ms: 10_000,
            total_timeout_ms: 15_000,
            idle_timeout_ms: 60_000,
            client_header_timeout_ms: 10_000,
            rate_limit: 0.0,
            rate_burst: 50,
            max_connections: 10_000,
            workers: 0,
            sticky_cookie: None,
            sticky_key: None,
            sticky_key_file: None,
            tls_listen: None,
            tls_certs: Vec::new(),
            dev_cert: None,
            https_redirect: false,
            source_addr: None,
            drain_file: None,
            trace_sample: strata_core::trace::SampleRate::default(),
            name: "lb".into(),
            exit_on_stdin_eof: false,
        }
    }
}

fn parse_key(hex: &str) -> anyhow::Result<[u8; 32]> {
    let bad = || {
        anyhow::anyhow!(
            "--sticky-key must be 64 hexadecimal digits (32 bytes), e.g. from `openssl rand -hex 32`"
        )
    };
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(key)
}

/// The sticky-cookie signer `args` ask for: its key from `--sticky-key-file`, `--sticky-key`,
/// or a random one per process.
fn sticky_of(args: &LbArgs) -> anyhow::Result<Option<crate::sticky::Sticky>> {
    let sticky_key = match &args.sticky_key_file {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .map(|text| text.trim().to_string())
                .map_err(|e| {
                    anyhow::anyhow!("cannot read --sticky-key-file {}: {e}", file.display())
                })?,
        ),
        None => args.sticky_key.clone(),
    };
    Ok(match (&args.sticky_cookie, &sticky_key) {
        (None, None) => None,
        (None, Some(_)) => {
            anyhow::bail!("--sticky-key and --sticky-key-file need --sticky-cookie NAME")
        }
        (Some(name), key) => {
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_name {
                anyhow::bail!(
                    "--sticky-cookie must be 1 to 64 letters, digits, '-' or '_' (got {name:?})"
                );
            }
            Some(match key {
                None => crate::sticky::Sticky::random(name.clone()),
                Some(hex) => crate::sticky::Sticky::with_key(name.clone(), parse_key(hex)?),
            })
        }
    })
}

/// Runs the balancer until SIGTERM, Ctrl-C or (with `--exit-on-stdin-eof`) its supervisor's
/// exit.
pub async fn run(args: LbArgs) -> anyhow::Result<()> {
    strata_core::telemetry::init();
    strata_core::trace::layer::set_service("lb");
    let algorithm = args.algorithm.with(args.hash_on.clone());
    let mut names = std::collections::HashSet::new();
    for b in &args.backends {
        if !names.insert(b.name.clone()) {
            anyhow::bail!(
                "two backends are named {:?}: give each --backend its own name",
                b.name
            );
        }
    }
    let sticky = sticky_of(&args)?;
    let mut config = LbConfig::new(args.listen, args.admin, args.backends);
    config.sticky = sticky;
    config.algorithm = algorithm;
    config.health.path = args.health_path;
    config.health.interval = Duration::from_millis(args.health_interval_ms);
    config.health.timeout = Duration::from_millis(args.health_timeout_ms);
    config.health.rise = args.rise;
    config.health.fall = args.fall;
    config.outlier.consecutive_failures = args.eject_after;
    config.timeouts.connect = Duration::from_millis(args.connect_timeout_ms);
    config.timeouts.header = Duration::from_millis(args.header_timeout_ms);
    config.timeouts.total = Duration::from_millis(args.total_timeout_ms);
    config.timeouts.idle = Duration::from_millis(args.idle_timeout_ms);
    config.timeouts.client_header = Duration::from_millis(args.client_header_timeout_ms);
    config.max_connections = args.max_connections as usize;
    config.workers = args.workers as usize;
    config.source = args.source_addr;
    config.trace_sampler = args.trace_sample.sampler();
    config.drain_file = args.drain_file.clone();
    if !args.rate_limit.is_finite() || args.rate_limit < 0.0 {
        anyhow::bail!(
            "--rate-limit must be a number of requests per second, 0 or more (got {})",
            args.rate_limit
        );
    }
    config.rate_limit = (args.rate_limit > 0.0).then_some((args.rate_limit, args.rate_burst));
    if let Some(tls_listen) = args.tls_listen {
        let mut certs = Vec::new();
        for files in &args.tls_certs {
            certs.push(crate::tls::load(files)?);
        }
        if let Some(out) = &args.dev_cert {
            certs.push(crate::tls::dev_cert(out)?);
        }
        if certs.is_empty() {
            anyhow::bail!(
                "--tls-listen needs a certificate: pass --tls-cert CERT.pem,KEY.pem or --dev-cert PATH"
            );
        }
        config.tls = Some(crate::TlsListen {
            listen: tls_listen,
            config: crate::tls::server_config(certs)?,
            redirect_http: args.https_redirect,
        });
    } else if !args.tls_certs.is_empty() || args.dev_cert.is_some() || args.https_redirect {
        anyhow::bail!("--tls-cert, --dev-cert and --https-redirect need --tls-listen ADDR");
    }
    let listen = config.listen;
    let lb = LoadBalancer::build(config).await.with_context(|| {
        format!("cannot listen on {listen}: is another process using that port? Pass another --listen (port 0 picks a free one)")
    })?;
    let addr = lb.addr()?;
    let admin = lb.admin_addr()?;
    let mut ready = ReadyLine::new(&args.name)
        .with_addr("http", addr)
        .with_addr("admin", admin);
    if let Some(tls) = lb.tls_addr() {
        ready = ready.with_addr("https", tls);
    }
    // Listening for the stop signal before announcing readiness: a SIGTERM sent the moment
    // the role is ready stops it cleanly.
    let stop = strata_core::shutdown::signal(args.exit_on_stdin_eof);
    ready
        .announce()
        .context("cannot write the readiness line")?;
    tracing::info!(role = %args.name, %addr, %admin, "load balancing http://{addr}/");
    lb.run_until_stopped(stop)
        .await
        .context("the load balancer failed")?;
    tracing::info!(role = %args.name, "stopped after finishing in-flight requests");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        lb: LbArgs,
    }

    #[test]
    fn balancers_that_read_one_key_file_honour_each_others_cookies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("sticky.key");
        std::fs::write(&file, format!("{}\n", "ab".repeat(32))).expect("write");
        let mut args = LbArgs::new("127.0.0.1:0".parse().expect("addr"), Vec::new());
        args.sticky_cookie = Some("pin".into());
        args.sticky_key_file = Some(file.clone());
        let (one, two) = (
            sticky_of(&args).expect("ok").expect("sticky"),
            sticky_of(&args).expect("ok").expect("sticky"),
        );
        assert_eq!(
            two.backend_in(&one.value_for("api-2")).as_deref(),
            Some("api-2")
        );
        args.sticky_key_file = None;
        let random = sticky_of(&args).expect("ok").expect("sticky");
        assert_eq!(
            random.backend_in(&one.value_for("api-2")),
            None,
            "another key"
        );
        args.sticky_key_file = Some(dir.path().join("missing"));
        let e = sticky_of(&args).expect_err("no file");
        assert!(
            e.to_string().contains("cannot read --sticky-key-file"),
            "{e}"
        );
        args.sticky_key_file = Some(file);
        args.sticky_cookie = None;
        let e = sticky_of(&args).expect_err("a key without a cookie");
        assert!(e.to_string().contains("need --sticky-cookie"), "{e}");
    }

    #[test]
    fn the_constructor_has_the_defaults_of_the_command_line() {
        use clap::Parser as _;
        let backend = "a=127.0.0.1:1".parse::<BackendSpec>().expect("valid");
        let parsed = Cli::try_parse_from([
            "lb",
            "--listen",
            "127.0.0.1:80",
            "--backend",
            "a=127.0.0.1:1",
        ])
        .expect("parses");
        assert_eq!(
            parsed.lb,
            LbArgs::new("127.0.0.1:80".parse().expect("addr"), vec![backend])
        );
    }

    #[test]
    fn backends_parse_with_optional_weights_and_bad_ones_explain_themselves() {
        let parse_backend = |s: &str| s.parse::<BackendSpec>();
        let parse_hash_on = |s: &str| s.parse::<HashOn>();
        let b = parse_backend("api-1=127.0.0.1:4001@3").expect("valid");
        assert_eq!(
            (b.name.as_str(), b.addr.port(), b.weight),
            ("api-1", 4001, 3)
        );
        assert!(
            parse_backend("127.0.0.1:4001")
                .expect_err("no name")
                .contains("NAME=HOST:PORT")
        );
        assert!(
            parse_backend("a=localhost:1")
                .expect_err("not an ip")
                .contains("IP:PORT")
        );
        assert!(parse_backend("a=127.0.0.1:1@0").is_err());
        assert_eq!(
            parse_hash_on("header:X-User").expect("valid"),
            HashOn::Header("x-user".into())
        );
        assert!(parse_hash_on("query").is_err());
        assert_eq!(parse_key(&"ab".repeat(32)).expect("valid"), [0xab; 32]);
        assert!(parse_key("abc").is_err() && parse_key(&"zz".repeat(32)).is_err());
    }
}
