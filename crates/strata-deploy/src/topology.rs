//! The topology file: which roles a deployment runs, and how many of each.
//!
//! ```toml
//! name = "default"
//!
//! [api]           # stateless API servers
//! count = 3       # 1 to 64
//! # ports = [8081, 8082]   # fixed ports of api-2, api-3 … (api-1 takes the public --port)
//!
//! [data]
//! engine = "sqlite"   # the embedded default; or "postgres":
//! # engine = "postgres"
//! # replicas = 2        # streaming replicas strata up runs beside the primary (0 to 4)
//! # commit = "quorum"   # or "async"
//! # rejoin = "auto"     # or "manual": a fenced former primary waits for `strata db rejoin`
//! # url = "postgresql://USER@HOST:5432/DB"   # existing servers instead (no replicas/commit)
//! ```
//!
//! Role kinds are an enum, so the load balancer, workers, CDN edges, DNS, the control plane and
//! the engines (PostgreSQL, Redis, Memcached, RabbitMQ) arrive as new variants with their own
//! tables. Until then a file naming them is refused with "not available in this version".
//!
//! [`Topology::parse`] checks the whole file and returns every mistake, each with its line.

use std::fmt;

use toml::Value;

/// The most instances of one role kind.
pub const MAX_COUNT: i64 = 64;

pub use crate::roles::RoleKind;

/// Top-level tables that will name role kinds or engines in later versions.
const PLANNED_KINDS: &[&str] = &[
    "worker",
    "edge",
    "dns",
    "control",
    "queue",
    "postgres",
    "redis",
    "memcached",
    "rabbitmq",
];
const KNOWN_TOP_LEVEL: &[&str] = &["name", "api", "lb", "data", "cache", "sessions"];

/// The most shared cache nodes `strata up` runs.
pub const MAX_CACHE_NODES: i64 = 4;

pub use strata_cache::CacheEngine;
pub use strata_control::{CommitMode, RejoinMode};
pub use strata_lb::AlgorithmName;

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
}

const CACHE_KEYS: &[&str] = &["engine", "nodes", "max_mib", "l1_mib", "l1_ttl_ms"];

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSpec {
    pub count: u16,
    /// Fixed ports of the instances after the first (the first takes the public port, until a
    /// load balancer does); instances without one listen on any free port.
    pub ports: Vec<u16>,
}

/// `[lb]`: one load balancer on the public port, in front of every API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbSpec {
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

const LB_KEYS: &[&str] = &[
    "count",
    "algorithm",
    "sticky_cookie",
    "tls_port",
    "tls_cert",
    "tls_key",
    "dev_cert",
    "https_redirect",
    "connect_timeout_ms",
    "header_timeout_ms",
    "total_timeout_ms",
    "idle_timeout_ms",
    "client_header_timeout_ms",
];

/// The most streaming replicas `strata up` runs.
pub const MAX_REPLICAS: i64 = 4;

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
    pub cache: CacheSpec,
    pub sessions: SessionsEngine,
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

/// The built-in default: three API servers on the embedded SQLite data tier.
pub const DEFAULT_TOPOLOGY: &str = "name = \"default\"\n\n[lb]\ncount = 1\nalgorithm = \"round-robin\"\n\n[api]\ncount = 3\n\n[data]\nengine = \"sqlite\"\n";

/// Finds the line of `[table]` (key `None`) or of `key =` inside `[table]` (or at top level).
fn line_of(text: &str, table: Option<&str>, key: Option<&str>) -> Option<usize> {
    let mut current: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            if key.is_none() && table == Some(name.as_str()) {
                return Some(i + 1);
            }
            current = Some(name);
            continue;
        }
        if let Some(key) = key
            && current.as_deref() == table
        {
            let k = line
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            if line.contains('=') && k == key {
                return Some(i + 1);
            }
        }
    }
    None
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            row.push((prev[j] + cost).min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

fn suggestion(word: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Integer(n) => n.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Boolean(b) => b.to_string(),
        other => type_name(other).to_string(),
    }
}

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
            cache: CacheSpec::default(),
            sessions: SessionsEngine::Database,
        }
    }

    /// Parses and validates a topology file. `public_port` is the port `strata up` will give
    /// the public entry (0 = any): a role's fixed port must not clash with it.
    pub fn parse(text: &str, public_port: u16) -> Result<Self, TopologyErrors> {
        let table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                let line = e
                    .span()
                    .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
                return Err(TopologyErrors(vec![TopologyError {
                    line,
                    message: format!("not valid TOML: {}", e.message()),
                }]));
            }
        };
        let mut errors = Vec::new();
        let mut err =
            |line: Option<usize>, message: String| errors.push(TopologyError { line, message });

        for key in table.keys() {
            if KNOWN_TOP_LEVEL.contains(&key.as_str()) {
                continue;
            }
            let line = line_of(text, Some(key), None).or_else(|| line_of(text, None, Some(key)));
            if PLANNED_KINDS.contains(&key.as_str()) {
                err(
                    line,
                    format!(
                        "role `{key}` is not available in this version of strata (available: api, lb)"
                    ),
                );
            } else {
                let mut all: Vec<&str> = KNOWN_TOP_LEVEL.to_vec();
                all.extend_from_slice(PLANNED_KINDS);
                err(
                    line,
                    format!("unknown role or section `{key}`{}", suggestion(key, &all)),
                );
            }
        }

        let name = match table.get("name") {
            None => "unnamed".to_string(),
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 64 => s.clone(),
            Some(v) => {
                err(
                    line_of(text, None, Some("name")),
                    format!(
                        "`name` must be a non-empty string of at most 64 characters, not {}",
                        type_name(v)
                    ),
                );
                String::new()
            }
        };

        let mut api = ApiSpec {
            count: 0,
            ports: Vec::new(),
        };
        match table.get("api") {
            None => err(
                None,
                "a topology needs an `[api]` table with `count = N`".into(),
            ),
            Some(Value::Table(t)) => {
                for key in t.keys() {
                    if key != "count" && key != "ports" {
                        err(
                            line_of(text, Some("api"), Some(key)),
                            format!(
                                "unknown key `api.{key}`{} (known: count, ports)",
                                suggestion(key, &["count", "ports"])
                            ),
                        );
                    }
                }
                let count_line = line_of(text, Some("api"), Some("count"))
                    .or_else(|| line_of(text, Some("api"), None));
                match t.get("count") {
                    None => err(count_line, "`api.count` is required (1 to 64)".into()),
                    Some(Value::Integer(n)) if (1..=MAX_COUNT).contains(n) => api.count = *n as u16,
                    Some(Value::Integer(n)) => err(
                        count_line,
                        format!("`api.count` must be between 1 and {MAX_COUNT}, not {n}"),
                    ),
                    Some(v) => err(
                        count_line,
                        format!(
                            "`api.count` must be an integer between 1 and {MAX_COUNT}, not {}",
                            type_name(v)
                        ),
                    ),
                }
                let ports_line = line_of(text, Some("api"), Some("ports"));
                match t.get("ports") {
                    None => {}
                    Some(Value::Array(items)) => {
                        for item in items {
                            match item {
                                Value::Integer(p) if (1..=65535).contains(p) => {
                                    api.ports.push(*p as u16)
                                }
                                other => err(
                                    ports_line,
                                    format!(
                                        "`api.ports` entries must be port numbers from 1 to 65535, not {}",
                                        show(other)
                                    ),
                                ),
                            }
                        }
                        let without_public = usize::from(api.count)
                            - usize::from(!table.contains_key("lb") && api.count > 0);
                        if api.count > 0 && items.len() > without_public {
                            err(
                                ports_line,
                                format!(
                                    "`api.ports` lists {} ports but only {without_public} API servers need one (those not on the public port)",
                                    items.len()
                                ),
                            );
                        }
                    }
                    Some(v) => err(
                        ports_line,
                        format!(
                            "`api.ports` must be an array of port numbers, not {}",
                            type_name(v)
                        ),
                    ),
                }
            }
            Some(v) => err(
                line_of(text, None, Some("api")),
                format!("`api` must be a table, not {}", type_name(v)),
            ),
        }

        let mut lb = None;
        match table.get("lb") {
            None => {}
            Some(Value::Table(t)) => {
                for key in t.keys() {
                    if !LB_KEYS.contains(&key.as_str()) {
                        err(
                            line_of(text, Some("lb"), Some(key)),
                            format!(
                                "unknown key `lb.{key}`{} (known: {})",
                                suggestion(key, LB_KEYS),
                                LB_KEYS.join(", ")
                            ),
                        );
                    }
                }
                match t.get("count") {
                    None | Some(Value::Integer(1)) => {}
                    Some(v) => err(
                        line_of(text, Some("lb"), Some("count")),
                        format!(
                            "`lb.count` must be 1 in this version (one load balancer takes the public port), not {}",
                            show(v)
                        ),
                    ),
                }
                let algorithm_names: Vec<String> =
                    <AlgorithmName as clap::ValueEnum>::value_variants()
                        .iter()
                        .filter_map(clap::ValueEnum::to_possible_value)
                        .map(|p| p.get_name().to_string())
                        .collect();
                let algorithm_names: Vec<&str> =
                    algorithm_names.iter().map(String::as_str).collect();
                let known_algorithms = algorithm_names.as_slice();
                let algorithm = match t.get("algorithm") {
                    None => AlgorithmName::RoundRobin,
                    Some(Value::String(a)) if known_algorithms.contains(&a.as_str()) => {
                        <AlgorithmName as clap::ValueEnum>::from_str(a, false)
                            .unwrap_or(AlgorithmName::RoundRobin)
                    }
                    Some(v) => {
                        let hint = match v {
                            Value::String(a) => suggestion(a, known_algorithms),
                            _ => String::new(),
                        };
                        err(
                            line_of(text, Some("lb"), Some("algorithm")),
                            format!(
                                "`lb.algorithm` must be one of {}, not {}{hint}",
                                known_algorithms.join(", "),
                                show(v)
                            ),
                        );
                        AlgorithmName::RoundRobin
                    }
                };
                let at = |key: &str| {
                    line_of(text, Some("lb"), Some(key)).or_else(|| line_of(text, Some("lb"), None))
                };
                let sticky_cookie = match t.get("sticky_cookie") {
                    None => None,
                    Some(Value::String(c))
                        if !c.is_empty()
                            && c.len() <= 64
                            && c.chars()
                                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch)) =>
                    {
                        Some(c.clone())
                    }
                    Some(v) => {
                        err(
                            at("sticky_cookie"),
                            format!(
                                "`lb.sticky_cookie` must be a cookie name (letters, digits, - _ .; up to 64), not {}",
                                show(v)
                            ),
                        );
                        None
                    }
                };
                let string =
                    |key: &str, errors: &mut dyn FnMut(Option<usize>, String)| match t.get(key) {
                        None => None,
                        Some(Value::String(p)) if !p.trim().is_empty() => Some(p.clone()),
                        Some(v) => {
                            errors(
                                at(key),
                                format!("`lb.{key}` must be a file path, not {}", show(v)),
                            );
                            None
                        }
                    };
                let cert = string("tls_cert", &mut err);
                let key = string("tls_key", &mut err);
                let dev_cert = match t.get("dev_cert") {
                    None => false,
                    Some(Value::Boolean(b)) => *b,
                    Some(v) => {
                        err(
                            at("dev_cert"),
                            format!("`lb.dev_cert` must be true or false, not {}", show(v)),
                        );
                        false
                    }
                };
                let redirect = match t.get("https_redirect") {
                    None => false,
                    Some(Value::Boolean(b)) => *b,
                    Some(v) => {
                        err(
                            at("https_redirect"),
                            format!("`lb.https_redirect` must be true or false, not {}", show(v)),
                        );
                        false
                    }
                };
                let tls_port = match t.get("tls_port") {
                    None => None,
                    Some(Value::Integer(p)) if (0..=65535).contains(p) => Some(*p as u16),
                    Some(v) => {
                        err(
                            at("tls_port"),
                            format!("`lb.tls_port` must be a port, 0 to 65535, not {}", show(v)),
                        );
                        None
                    }
                };
                let tls = match (tls_port, cert, key, dev_cert) {
                    (None, None, None, false) => {
                        if redirect {
                            err(
                                at("https_redirect"),
                                "`lb.https_redirect` needs TLS: set `tls_port`".into(),
                            );
                        }
                        None
                    }
                    (Some(port), Some(c), Some(k), false) => Some(LbTls {
                        port,
                        cert_and_key: Some((c, k)),
                        redirect,
                    }),
                    (Some(port), None, None, true) => Some(LbTls {
                        port,
                        cert_and_key: None,
                        redirect,
                    }),
                    (None, ..) => {
                        err(
                            at("tls_port"),
                            "TLS settings need `lb.tls_port` (0 picks a free port)".into(),
                        );
                        None
                    }
                    (Some(_), _, _, true) => {
                        err(
                            at("dev_cert"),
                            "`lb.dev_cert = true` cannot go with `tls_cert`/`tls_key`: choose one"
                                .into(),
                        );
                        None
                    }
                    (Some(_), ..) => {
                        err(
                            at("tls_port"),
                            "`lb.tls_port` needs `tls_cert` and `tls_key` (PEM files), or `dev_cert = true` for a self-signed certificate".into(),
                        );
                        None
                    }
                };
                if let (Some(tls), true) = (&tls, public_port != 0)
                    && tls.port == public_port
                {
                    err(
                        at("tls_port"),
                        format!(
                            "`lb.tls_port` {} clashes with the public port (see --port)",
                            tls.port
                        ),
                    );
                }
                let mut timeouts = LbTimeouts::default();
                for (key, range, slot) in [
                    (
                        "connect_timeout_ms",
                        strata_lb::role::CONNECT_TIMEOUT_MS,
                        &mut timeouts.connect_ms,
                    ),
                    (
                        "header_timeout_ms",
                        strata_lb::role::HEADER_TIMEOUT_MS,
                        &mut timeouts.header_ms,
                    ),
                    (
                        "total_timeout_ms",
                        strata_lb::role::TOTAL_TIMEOUT_MS,
                        &mut timeouts.total_ms,
                    ),
                    (
                        "idle_timeout_ms",
                        strata_lb::role::IDLE_TIMEOUT_MS,
                        &mut timeouts.idle_ms,
                    ),
                    (
                        "client_header_timeout_ms",
                        strata_lb::role::CLIENT_HEADER_TIMEOUT_MS,
                        &mut timeouts.client_header_ms,
                    ),
                ] {
                    let (min, max) = (*range.start(), *range.end());
                    match t.get(key) {
                        None => {}
                        Some(Value::Integer(ms)) if (min as i64..=max as i64).contains(ms) => {
                            *slot = Some(*ms as u64);
                        }
                        Some(v) => err(
                            at(key),
                            format!(
                                "`lb.{key}` must be a number of milliseconds from {min} to {max}, not {}",
                                show(v)
                            ),
                        ),
                    }
                }
                lb = Some(LbSpec {
                    algorithm,
                    sticky_cookie,
                    tls,
                    timeouts,
                });
            }
            Some(v) => err(
                line_of(text, None, Some("lb")),
                format!("`lb` must be a table, not {}", type_name(v)),
            ),
        }

        let mut data = DataEngine::Sqlite;
        match table.get("data") {
            None => {}
            Some(Value::Table(t)) => {
                const DATA_KEYS: &[&str] = &["engine", "replicas", "commit", "rejoin", "url"];
                for key in t.keys() {
                    if !DATA_KEYS.contains(&key.as_str()) {
                        err(
                            line_of(text, Some("data"), Some(key)),
                            format!(
                                "unknown key `data.{key}`{} (known: {})",
                                suggestion(key, DATA_KEYS),
                                DATA_KEYS.join(", ")
                            ),
                        );
                    }
                }
                let at = |key: &str| {
                    line_of(text, Some("data"), Some(key))
                        .or_else(|| line_of(text, Some("data"), None))
                };
                let postgres = match t.get("engine") {
                    None => false,
                    Some(Value::String(s)) if s == "sqlite" => false,
                    Some(Value::String(s)) if s == "postgres" => true,
                    Some(v) => {
                        err(
                            at("engine"),
                            format!(
                                "`data.engine` must be \"sqlite\" or \"postgres\", not {}",
                                show(v)
                            ),
                        );
                        false
                    }
                };
                let replicas = match t.get("replicas") {
                    None => None,
                    Some(Value::Integer(n)) if (0..=MAX_REPLICAS).contains(n) => Some(*n as u8),
                    Some(v) => {
                        err(
                            at("replicas"),
                            format!(
                                "`data.replicas` must be an integer from 0 to {MAX_REPLICAS}, not {}",
                                show(v)
                            ),
                        );
                        None
                    }
                };
                let commit = match t.get("commit") {
                    None => None,
                    Some(Value::String(s)) if s == "quorum" => Some(CommitMode::Quorum),
                    Some(Value::String(s)) if s == "async" => Some(CommitMode::Async),
                    Some(v) => {
                        err(
                            at("commit"),
                            format!(
                                "`data.commit` must be \"quorum\" or \"async\", not {}",
                                show(v)
                            ),
                        );
                        None
                    }
                };
                let rejoin = match t.get("rejoin") {
                    None => None,
                    Some(Value::String(s)) if s == "auto" => Some(RejoinMode::Auto),
                    Some(Value::String(s)) if s == "manual" => Some(RejoinMode::Manual),
                    Some(v) => {
                        err(
                            at("rejoin"),
                            format!(
                                "`data.rejoin` must be \"auto\" or \"manual\", not {}",
                                show(v)
                            ),
                        );
                        None
                    }
                };
                let url = match t.get("url") {
                    None => None,
                    Some(Value::String(s))
                        if s.starts_with("postgres://")
                            || s.starts_with("postgresql://")
                            || s.contains("host=") =>
                    {
                        Some(s.clone())
                    }
                    Some(_) => {
                        // Never echo the value: a URL may hold a password.
                        err(
                            at("url"),
                            "`data.url` must be a PostgreSQL URL such as \"postgresql://USER@HOST:5432/DB\"".into(),
                        );
                        None
                    }
                };
                if !postgres {
                    for key in ["replicas", "commit", "rejoin", "url"] {
                        if t.contains_key(key) {
                            err(
                                at(key),
                                format!(
                                    "`data.{key}` needs engine = \"postgres\": the embedded SQLite engine is one file \
                                     in one place, with no replicas. Use engine = \"postgres\" with replicas = 2"
                                ),
                            );
                        }
                    }
                } else if let Some(url) = url {
                    for key in ["replicas", "commit", "rejoin"] {
                        if t.contains_key(key) {
                            err(
                                at(key),
                                format!(
                                    "`data.{key}` cannot go with `data.url`: with a URL Strata uses existing \
                                     servers and their own replication; drop `url` to let strata up run them"
                                ),
                            );
                        }
                    }
                    data = DataEngine::PostgresUrl { url };
                } else {
                    data = DataEngine::Postgres {
                        replicas: replicas.unwrap_or(0),
                        commit: commit.unwrap_or(CommitMode::Quorum),
                        rejoin: rejoin.unwrap_or(RejoinMode::Auto),
                    };
                }
            }
            Some(v) => err(
                line_of(text, None, Some("data")),
                format!("`data` must be a table, not {}", type_name(v)),
            ),
        }

        let mut cache = CacheSpec::default();
        match table.get("cache") {
            None => {}
            Some(Value::Table(t)) => {
                for key in t.keys() {
                    if !CACHE_KEYS.contains(&key.as_str()) {
                        err(
                            line_of(text, Some("cache"), Some(key)),
                            format!(
                                "unknown key `cache.{key}`{} (known: {})",
                                suggestion(key, CACHE_KEYS),
                                CACHE_KEYS.join(", ")
                            ),
                        );
                    }
                }
                let at = |key: &str| {
                    line_of(text, Some("cache"), Some(key))
                        .or_else(|| line_of(text, Some("cache"), None))
                };
                let off = matches!(t.get("engine"), Some(Value::String(s)) if s == "off");
                let engine = match t.get("engine") {
                    None => None,
                    Some(Value::String(s)) if s == "off" => None,
                    Some(Value::String(s)) if s == "in-process" => None,
                    Some(Value::String(s)) if s == "redis" => Some(CacheEngine::Redis),
                    Some(Value::String(s)) if s == "memcached" => Some(CacheEngine::Memcached),
                    Some(v) => {
                        err(
                            at("engine"),
                            format!(
                                "`cache.engine` must be \"in-process\", \"redis\", \"memcached\" or \"off\", not {}",
                                show(v)
                            ),
                        );
                        None
                    }
                };
                let nodes = match t.get("nodes") {
                    None => 1,
                    Some(Value::Integer(n)) if (1..=MAX_CACHE_NODES).contains(n) => *n as u8,
                    Some(v) => {
                        err(
                            at("nodes"),
                            format!(
                                "`cache.nodes` must be an integer from 1 to {MAX_CACHE_NODES}, not {}",
                                show(v)
                            ),
                        );
                        1
                    }
                };
                if engine.is_none() {
                    for key in ["nodes", "max_mib"] {
                        if t.contains_key(key) {
                            err(
                                at(key),
                                format!(
                                    "`cache.{key}` needs a shared cache: add engine = \"redis\" (or \"memcached\")"
                                ),
                            );
                        }
                    }
                }
                let mut number = |key: &str, range: std::ops::RangeInclusive<i64>| match t.get(key)
                {
                    None => None,
                    Some(Value::Integer(n)) if range.contains(n) => Some(*n as u64),
                    Some(v) => {
                        err(
                            at(key),
                            format!(
                                "`cache.{key}` must be an integer from {} to {}, not {}",
                                range.start(),
                                range.end(),
                                show(v)
                            ),
                        );
                        None
                    }
                };
                cache = CacheSpec {
                    shared: engine.map(|e| (e, nodes)),
                    max_mib: number("max_mib", 1..=65_536),
                    l1_mib: number("l1_mib", 1..=65_536),
                    l1_ttl_ms: number("l1_ttl_ms", 1..=86_400_000),
                    off,
                };
            }
            Some(v) => err(
                line_of(text, None, Some("cache")),
                format!("`cache` must be a table, not {}", type_name(v)),
            ),
        }

        let mut sessions = SessionsEngine::Database;
        match table.get("sessions") {
            None => {}
            Some(Value::Table(t)) => {
                for key in t.keys().filter(|k| k.as_str() != "engine") {
                    err(
                        line_of(text, Some("sessions"), Some(key)),
                        format!("unknown key `sessions.{key}` (known: engine)"),
                    );
                }
                match t.get("engine") {
                    None => {}
                    Some(Value::String(e)) if e == "database" => {}
                    Some(Value::String(e)) if e == "redis" => sessions = SessionsEngine::Redis,
                    Some(v) => err(
                        line_of(text, Some("sessions"), Some("engine")),
                        format!(
                            "`sessions.engine` must be \"database\" or \"redis\", not {}",
                            match v {
                                Value::String(e) => format!("{e:?}"),
                                other => type_name(other).to_string(),
                            }
                        ),
                    ),
                }
            }
            Some(v) => err(
                line_of(text, None, Some("sessions")),
                format!("`sessions` must be a table, not {}", type_name(v)),
            ),
        }

        // Fixed ports: each must differ from every other and from the public port.
        let mut fixed: Vec<(String, u16, Option<usize>)> = Vec::new();
        let ports_line = line_of(text, Some("api"), Some("ports"));
        let first_fixed = if table.contains_key("lb") { 1 } else { 2 };
        for (i, p) in api.ports.iter().enumerate() {
            fixed.push((format!("api-{}", i + first_fixed), *p, ports_line));
        }
        for (i, (role, port, line)) in fixed.iter().enumerate() {
            if public_port != 0 && *port == public_port {
                err(
                    *line,
                    format!(
                        "port {port} of {role} clashes with the public port {public_port} (see --port)"
                    ),
                );
            }
            for (other, other_port, _) in &fixed[..i] {
                if other_port == port {
                    err(
                        *line,
                        format!("port {port} of {role} clashes with port {other_port} of {other}"),
                    );
                }
            }
        }

        if errors.is_empty() {
            Ok(Topology {
                name,
                api,
                lb,
                data,
                cache,
                sessions,
            })
        } else {
            Err(TopologyErrors(errors))
        }
    }

    /// Total role instances.
    pub fn instance_count(&self) -> usize {
        usize::from(self.api.count)
            + usize::from(self.lb.is_some())
            + self.database_nodes()
            + usize::from(self.has_control())
            + self.cache_nodes()
            + usize::from(self.sessions == SessionsEngine::Redis)
    }

    /// Shared cache servers `strata up` runs.
    pub fn cache_nodes(&self) -> usize {
        self.cache.shared.map_or(0, |(_, n)| usize::from(n))
    }

    /// Whether `strata up` runs `strata control` (automatic failover): with PostgreSQL
    /// replicas it runs.
    pub fn has_control(&self) -> bool {
        matches!(self.data, DataEngine::Postgres { replicas, .. } if replicas > 0)
    }

    /// PostgreSQL servers `strata up` runs: the primary and its replicas (0 for SQLite or a URL).
    pub fn database_nodes(&self) -> usize {
        match self.data {
            DataEngine::Postgres { replicas, .. } => 1 + usize::from(replicas),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<TopologyError> {
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
    fn the_sessions_table_chooses_the_database_or_a_redis_of_its_own() {
        let t = Topology::parse("[api]\ncount = 3\n", 8080).expect("valid");
        assert_eq!(t.sessions, SessionsEngine::Database);
        let t = Topology::parse("[api]\ncount = 3\n[sessions]\nengine = \"redis\"\n", 8080)
            .expect("valid");
        assert_eq!(t.sessions, SessionsEngine::Redis);
        assert_eq!(
            t.instance_count(),
            3 + 1,
            "3 API servers and the session Redis"
        );
        let e = errors("[api]\ncount = 3\n[sessions]\nengine = \"memcached\"\nttl = 5\n");
        assert!(
            e.iter()
                .any(|x| x.line == Some(4) && x.message.contains("\"memcached\"")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|x| x.line == Some(5) && x.message.contains("sessions.ttl")),
            "{e:?}"
        );
    }

    #[test]
    fn the_default_topology_is_three_api_servers_on_sqlite() {
        let t = Topology::parse(DEFAULT_TOPOLOGY, 8080).expect("valid");
        assert_eq!(t, Topology::default_topology());
    }

    #[test]
    fn every_mistake_is_reported_at_once_with_its_line() {
        let text = "name = \"x\"\n[api]\ncount = 0\nportz = 1\n[apii]\ncount = 1\n[worker]\ncount = 1\n[data]\nengine = \"mysql\"\n";
        let e = errors(text);
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(e.len(), 5, "{shown:#?}");
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("line 3:") && s.contains("between 1 and 64")),
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
                .any(|s| s.starts_with("line 7:") && s.contains("not available in this version")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("line 10:") && s.contains("postgres")),
            "{shown:#?}"
        );
    }

    #[test]
    fn the_cache_table_names_an_engine_and_its_nodes_and_refuses_what_does_not_fit() {
        let t = Topology::parse(
            "[cache]\nengine = \"redis\"\nnodes = 2\nmax_mib = 128\nl1_ttl_ms = 60000\n[api]\ncount = 3\n",
            8080,
        )
        .expect("valid");
        assert_eq!(t.cache.shared, Some((CacheEngine::Redis, 2)));
        assert_eq!(t.cache.max_mib, Some(128));
        assert_eq!(t.cache.l1_ttl_ms, Some(60_000));
        assert_eq!(t.cache_nodes(), 2);
        assert_eq!(t.instance_count(), 3 + 2, "3 API servers and 2 cache nodes");
        let t = Topology::parse("[cache]\nl1_mib = 32\n[api]\ncount = 3\n", 8080).expect("valid");
        assert_eq!(t.cache.shared, None);
        assert!(!t.cache.off);
        let t =
            Topology::parse("[cache]\nengine = \"off\"\n[api]\ncount = 3\n", 8080).expect("valid");
        assert!(t.cache.off && t.cache.shared.is_none());
        assert_eq!(t.cache_nodes(), 0);

        let e = errors("[cache]\nengine = \"varnish\"\nnodes = 9\n[api]\ncount = 3\n");
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("line 2:") && s.contains("\"redis\"")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("line 3:") && s.contains("from 1 to 4")),
            "{shown:#?}"
        );
        let e = errors("[cache]\nnodes = 2\nl1_ttl_ms = 0\nsize = 1\n[api]\ncount = 3\n");
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(e.len(), 3, "{shown:#?}");
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("line 2:") && s.contains("needs a shared cache")),
            "{shown:#?}"
        );
    }

    #[test]
    fn the_balancer_takes_sticky_sessions_and_tls_and_refuses_what_does_not_fit() {
        let t = Topology::parse(
            "[lb]\nsticky_cookie = \"pin\"\ntls_port = 8443\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nhttps_redirect = true\n[api]\ncount = 1\n",
            8080,
        )
        .expect("valid");
        let lb = t.lb.expect("lb");
        assert_eq!(lb.sticky_cookie.as_deref(), Some("pin"));
        assert_eq!(
            lb.tls,
            Some(LbTls {
                port: 8443,
                cert_and_key: Some(("c.pem".into(), "k.pem".into())),
                redirect: true
            })
        );
        let t = Topology::parse(
            "[lb]\ntls_port = 0\ndev_cert = true\n[api]\ncount = 1\n",
            8080,
        )
        .expect("valid");
        assert_eq!(t.lb.and_then(|l| l.tls).map(|t| t.cert_and_key), Some(None));
        let t = Topology::parse(
            "[lb]\nconnect_timeout_ms = 250\nidle_timeout_ms = 5000\n[api]\ncount = 1\n",
            8080,
        )
        .expect("valid");
        assert_eq!(
            t.lb.map(|l| l.timeouts),
            Some(LbTimeouts {
                connect_ms: Some(250),
                idle_ms: Some(5000),
                ..LbTimeouts::default()
            })
        );

        for (bad, says) in [
            ("tls_port = 8443\n", "needs `tls_cert` and `tls_key`"),
            (
                "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
                "need `lb.tls_port`",
            ),
            (
                "tls_port = 8443\ndev_cert = true\ntls_cert = \"c\"\ntls_key = \"k\"\n",
                "choose one",
            ),
            ("https_redirect = true\n", "needs TLS"),
            (
                "tls_port = 8080\ndev_cert = true\n",
                "clashes with the public port",
            ),
            ("sticky_cookie = \"a b\"\n", "cookie name"),
            ("tls_port = 70000\ndev_cert = true\n", "0 to 65535"),
            ("idle_timeout_ms = 5\n", "milliseconds from 100 to 3600000"),
            (
                "total_timeout_ms = \"15s\"\n",
                "`lb.total_timeout_ms` must be a number",
            ),
        ] {
            let e = errors(&format!("[lb]\n{bad}[api]\ncount = 1\n"));
            assert!(
                e.iter()
                    .any(|e| e.message.contains(says) && e.line.is_some()),
                "{bad:?} should say {says:?}: {e:?}"
            );
        }
    }

    #[test]
    fn postgres_with_replicas_or_by_url_and_what_cannot_go_together() {
        let t = Topology::parse(
            "[api]\ncount = 2\n[data]\nengine = \"postgres\"\nreplicas = 2\ncommit = \"async\"\nrejoin = \"manual\"\n",
            8080,
        )
        .expect("valid");
        assert_eq!(
            t.data,
            DataEngine::Postgres {
                replicas: 2,
                commit: CommitMode::Async,
                rejoin: RejoinMode::Manual,
            }
        );
        assert_eq!(
            t.instance_count(),
            6,
            "2 API servers, a primary, 2 replicas and the control role"
        );
        assert!(t.has_control());
        let t = Topology::parse("[api]\ncount = 1\n[data]\nengine = \"postgres\"\n", 8080)
            .expect("valid");
        assert_eq!(
            t.data,
            DataEngine::Postgres {
                replicas: 0,
                commit: CommitMode::Quorum,
                rejoin: RejoinMode::Auto,
            },
            "quorum commit and automatic rejoin are the defaults"
        );
        let url = "postgresql://app:secret@db1:5432,db2:5432/strata";
        let t = Topology::parse(
            &format!("[api]\ncount = 1\n[data]\nengine = \"postgres\"\nurl = \"{url}\"\n"),
            8080,
        )
        .expect("valid");
        assert_eq!(t.data, DataEngine::PostgresUrl { url: url.into() });
        assert_eq!(
            t.instance_count(),
            1,
            "no database role for existing servers"
        );

        // Replicas on the embedded engine: refused, saying what to use instead.
        let e = errors("[api]\ncount = 1\n[data]\nreplicas = 2\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, Some(4));
        assert!(e[0].message.contains("engine = \"postgres\""), "{e:?}");
        // A URL with replicas, bad counts and modes; a bad URL is never echoed.
        let e = errors(
            "[api]\ncount = 1\n[data]\nengine = \"postgres\"\nurl = \"postgresql://x@h/d\"\nreplicas = 1\n",
        );
        assert!(e[0].message.contains("cannot go with `data.url`"), "{e:?}");
        let e = errors(
            "[api]\ncount = 1\n[data]\nengine = \"postgres\"\nreplicas = 5\ncommit = \"sync\"\nurl = \"hunter2\"\n",
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e.iter().all(|e| !e.message.contains("hunter2")), "{e:?}");
        let e = errors("[api]\ncount = 1\n[data]\nengine = \"postgres\"\nrejoin = \"never\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, Some(5));
        assert!(e[0].message.contains("\"auto\" or \"manual\""), "{e:?}");
        let e = errors("[api]\ncount = 1\n[data]\nrejoin = \"manual\"\n");
        assert!(
            e[0].message.contains("needs engine = \"postgres\""),
            "{e:?}"
        );
    }

    #[test]
    fn counts_must_be_integers_in_range() {
        for bad in ["-1", "65", "\"three\"", "2.5"] {
            let e = errors(&format!("[api]\ncount = {bad}\n"));
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert_eq!(e[0].line, Some(2));
        }
        assert!(Topology::parse("[api]\ncount = 64\n", 8080).is_ok());
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
    }

    #[test]
    fn a_load_balancer_takes_the_public_port_and_its_settings_are_checked() {
        let t = Topology::parse(
            "[lb]\nalgorithm = \"least-connections\"\n[api]\ncount = 2\nports = [9001, 9002]\n",
            8080,
        )
        .expect("valid");
        assert_eq!(
            t.lb,
            Some(LbSpec {
                algorithm: AlgorithmName::LeastConnections,
                ..LbSpec::default()
            })
        );
        assert_eq!(t.instance_count(), 3);
        let e = errors("[lb]\ncount = 2\nalgorithm = \"round-robbin\"\n[api]\ncount = 1\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].message.contains("must be 1"), "{e:?}");
        assert!(e[1].message.contains("did you mean `round-robin`"), "{e:?}");
    }

    #[test]
    fn fixed_ports_that_clash_are_refused() {
        let t = Topology::parse("[api]\ncount = 3\nports = [9001, 9002]\n", 8080).expect("valid");
        assert_eq!(t.api.ports, vec![9001, 9002]);
        let e = errors("[api]\ncount = 3\nports = [9001, 9001]\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].message.contains("clashes with port 9001 of api-2"),
            "{e:?}"
        );
        let e = errors("[api]\ncount = 3\nports = [8080, 70000]\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e.iter().any(|x| x.message.contains("public port 8080")),
            "{e:?}"
        );
        let e = errors("[api]\ncount = 2\nports = [9001, 9002]\n");
        assert!(
            e[0].message.contains("only 1 API servers need one"),
            "{e:?}"
        );
        assert_eq!(e[0].line, Some(3));
    }
}
