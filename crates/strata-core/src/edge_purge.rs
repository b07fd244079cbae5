//! Purging the CDN edges: the client side of an edge's `POST /purge`, for every role whose
//! writes change what the edges keep — API servers (a profile, the list pages) and photo
//! workers (a user's photo redirect).
//!
//! - edges are purged **in order** (a shield before the edges in front of it, so that they
//!   cannot refill from it), each **retried until it confirms** (a `2xx` from its admin API's
//!   `POST /purge`), with back-off from 50 ms to 2 s, until the caller's give-up time — past
//!   that the edge's copy has expired by itself, and the edge is counted as given up on;
//! - purges run in the background, up to 64 at once; the queue holds 10,000 (a purge that finds
//!   it full is counted as dropped: its edges' copies are stale until they expire);
//! - metrics: `strata_edge_purge_seconds` (from the purge's request until the last edge
//!   confirmed) and `strata_edge_purges_total{result="confirmed"|"gave_up"|"dropped"}`.
//! - a purge names a surrogate key (`{"key": "user-12"}`), or a path prefix on every host
//!   (`{"prefix": "/users"}`) when which objects changed is not known.
//!
//! Which edges ([`PurgeTargets`]): `--purge-edge ADMIN_ADDR` (repeat; in order), and/or
//! `--purge-edges-state FILE`, a deployment's `state.json` as `strata up` writes it, re-read
//! when it changes: every role of kind `edge` by its `admin` address, in the file's order
//! (`strata up` lists the shield first). Such an edge is known by its role name: each retry
//! looks its address up again, so an edge restarted on a new admin port is followed, even
//! mid-purge.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Semaphore, mpsc};

/// Which edges a role purges: its command-line flags.
#[derive(Debug, Clone, PartialEq, Eq, Default, clap::Args, serde::Serialize)]
pub struct PurgeTargets {
    /// An edge's admin address to purge when what it keeps changes (repeat, in order: a shield
    /// before the edges in front of it).
    #[arg(long = "purge-edge", value_name = "ADDR")]
    #[serde(serialize_with = "crate::args::display_all")]
    pub purge_edges: Vec<SocketAddr>,
    /// A deployment's state file (`strata up`'s DIR/state.json) whose `edge` roles to purge,
    /// re-read when it changes.
    #[arg(long, value_name = "FILE")]
    pub purge_edges_state: Option<PathBuf>,
    /// Only the state file's edges whose role names start with this (`us-east-edge-`: one
    /// data centre's); not a flag of its own: an API server sets it for the edges it purges
    /// as it follows its database's change log.
    #[arg(skip)]
    #[serde(skip)]
    pub named: Option<String>,
}

impl PurgeTargets {
    /// Whether there is any edge to purge.
    pub fn is_empty(&self) -> bool {
        self.purge_edges.is_empty() && self.purge_edges_state.is_none()
    }
}

/// Purges in the background at once.
const IN_FLIGHT: usize = 64;
/// Purges waiting.
const QUEUE: usize = 10_000;
/// One purge request's deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The surrogate key of a user's objects at the edges: the profile and the photo's redirects.
pub fn user_key(id: u64) -> String {
    format!("user-{id}")
}

/// What a purge removes from an edge: every object tagged with a surrogate key, or every URL
/// under a path prefix (on every host).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Purge {
    Key(String),
    Prefix(String),
}

impl Purge {
    /// The body of the edge's `POST /purge` for it.
    fn body(&self) -> String {
        match self {
            Purge::Key(key) => serde_json::json!({ "key": key }),
            Purge::Prefix(prefix) => serde_json::json!({ "prefix": prefix }),
        }
        .to_string()
    }
}

impl std::fmt::Display for Purge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Purge::Key(key) => write!(f, "key {key}"),
            Purge::Prefix(prefix) => write!(f, "prefix {prefix}"),
        }
    }
}

/// Sends purges to the edges in the background (cheap to clone; inactive without edges).
#[derive(Clone, Default)]
pub struct EdgePurger {
    queue: Option<mpsc::Sender<(Purge, Instant)>>,
}

impl std::fmt::Debug for EdgePurger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgePurger")
            .field("active", &self.queue.is_some())
            .finish()
    }
}

impl EdgePurger {
    /// A purger for `targets` that retries each edge for up to `give_up_after` (longer than the
    /// edges may keep what is purged); inactive without edges. Its background task runs on the
    /// current runtime.
    pub fn start(targets: &PurgeTargets, give_up_after: Duration) -> Self {
        if targets.is_empty() {
            return Self::default();
        }
        let edges = Edges {
            fixed: targets.purge_edges.clone(),
            state: targets.purge_edges_state.clone(),
            named: targets.named.clone(),
            seen: Mutex::new((None, Vec::new())),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, Arc::new(edges), give_up_after));
        Self { queue: Some(tx) }
    }

    /// Whether purges go anywhere.
    pub fn is_active(&self) -> bool {
        self.queue.is_some()
    }

    /// Purges what surrogate key `key` tags from every edge, in the background.
    pub fn purge(&self, key: String) {
        self.send(Purge::Key(key));
    }

    /// Purges every URL under the path `prefix` (on every host) from every edge, in the
    /// background.
    pub fn purge_prefix(&self, prefix: String) {
        self.send(Purge::Prefix(prefix));
    }

    fn send(&self, purge: Purge) {
        let Some(queue) = &self.queue else {
            return;
        };
        if queue.try_send((purge, Instant::now())).is_err() {
            metrics::counter!("strata_edge_purges_total", "result" => "dropped").increment(1);
            tracing::warn!(
                "the edge purge queue is full: a purge is dropped (the copies expire by themselves)"
            );
        }
    }
}

/// Where the edges are: fixed addresses, then those of a state file (re-read on change).
struct Edges {
    fixed: Vec<SocketAddr>,
    state: Option<PathBuf>,
    /// Only the state file's edges named with this prefix.
    named: Option<String>,
    /// The state file's modification time when last read, and its edges.
    seen: Mutex<(Option<SystemTime>, Vec<NamedEdge>)>,
}

/// An edge's name and admin address.
type NamedEdge = (String, SocketAddr);

impl Edges {
    /// Every edge, by name (a fixed one is named by its address), with its address now.
    fn current(&self) -> Vec<(String, SocketAddr)> {
        let mut all: Vec<(String, SocketAddr)> =
            self.fixed.iter().map(|a| (a.to_string(), *a)).collect();
        if let Some(path) = &self.state {
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if modified != seen.0 {
                let mut edges = edges_of_state(path);
                if let Some(prefix) = &self.named {
                    edges.retain(|(name, _)| name.starts_with(prefix.as_str()));
                }
                *seen = (modified, edges);
            }
            all.extend(
                seen.1
                    .iter()
                    .filter(|(_, a)| !self.fixed.contains(a))
                    .cloned(),
            );
        }
        all
    }

    /// The address of the edge named `name` now.
    fn address_of(&self, name: &str) -> Option<SocketAddr> {
        self.current()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }
}

/// The `edge` roles of a `strata up` state file with their admin addresses, in its order;
/// none when it cannot be read.
pub fn edges_of_state(path: &Path) -> Vec<(String, SocketAddr)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(state) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    state["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["kind"] == "edge")
        .filter_map(|r| {
            let admin = r["addrs"]["admin"].as_str()?.parse().ok()?;
            Some((r["name"].as_str()?.to_string(), admin))
        })
        .collect()
}

async fn run(
    mut queue: mpsc::Receiver<(Purge, Instant)>,
    edges: Arc<Edges>,
    give_up_after: Duration,
) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CALL_TIMEOUT));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some((purge, since)) = queue.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (client, edges) = (client.clone(), edges.clone());
        tokio::spawn(async move {
            let deadline = since + give_up_after;
            let mut confirmed = true;
            for (edge, _) in edges.current() {
                if !purge_one(&client, &edges, &edge, &purge, deadline).await {
                    confirmed = false;
                    tracing::warn!(%edge, %purge, "an edge did not confirm a purge in time: its copy expires by itself");
                }
            }
            let result = if confirmed { "confirmed" } else { "gave_up" };
            metrics::counter!("strata_edge_purges_total", "result" => result).increment(1);
            if confirmed {
                metrics::histogram!("strata_edge_purge_seconds")
                    .record(since.elapsed().as_secs_f64());
            }
            drop(permit);
        });
    }
}

/// Sends `purge` to the edge named `edge`, retrying (at its address of the moment) until it
/// confirms or `deadline` passes.
async fn purge_one(
    client: &Client<HttpConnector, Full<Bytes>>,
    edges: &Edges,
    edge: &str,
    purge: &Purge,
    deadline: Instant,
) -> bool {
    let body = Bytes::from(purge.body());
    let mut backoff = Duration::from_millis(50);
    loop {
        let request = edges.address_of(edge).map(|admin| {
            hyper::Request::post(format!("http://{admin}/purge"))
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))
        });
        if let Some(Ok(request)) = request
            && let Ok(Ok(response)) =
                tokio::time::timeout(CALL_TIMEOUT, client.request(request)).await
            && response.status().is_success()
        {
            return true;
        }
        if Instant::now() + backoff > deadline {
            return false;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edges_of_a_state_file_are_its_edge_roles_admin_addresses_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(
            &path,
            r#"{"roles": [
                {"name": "api-1", "kind": "api", "addrs": {"http": "127.0.0.1:1"}},
                {"name": "edge-shield", "kind": "edge", "addrs": {"http": "127.0.0.1:2", "admin": "127.0.0.1:3"}},
                {"name": "edge-1", "kind": "edge", "addrs": {"http": "127.0.0.1:4", "admin": "127.0.0.1:5"}},
                {"name": "edge-2", "kind": "edge", "addrs": {"http": "127.0.0.1:6"}}
            ]}"#,
        )
        .expect("write");
        let found: Vec<String> = edges_of_state(&path)
            .iter()
            .map(|(n, a)| format!("{n}={a}"))
            .collect();
        assert_eq!(found, ["edge-shield=127.0.0.1:3", "edge-1=127.0.0.1:5"]);
        assert!(edges_of_state(&dir.path().join("missing.json")).is_empty());
    }

    /// An edge's admin API that answers every `POST /purge` 200 and keeps its bodies.
    async fn recording_edge() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
        let kept = bodies.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = s.read(&mut chunk).await {
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).into_owned();
                        // One small request a connection at a time: its body ends in `}`.
                        if let Some((_, body)) = text.split_once("\r\n\r\n")
                            && body.ends_with('}')
                        {
                            kept.lock().expect("bodies").push(body.to_string());
                            buf.clear();
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                            if s.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, bodies)
    }

    #[tokio::test]
    async fn a_purge_names_a_surrogate_key_or_a_path_prefix() {
        let (edge, bodies) = recording_edge().await;
        let purger = EdgePurger::start(
            &PurgeTargets {
                purge_edges: vec![edge],
                ..PurgeTargets::default()
            },
            Duration::from_secs(10),
        );
        purger.purge("user-12".into());
        purger.purge_prefix("/users".into());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut seen = bodies.lock().expect("bodies").clone();
            if seen.len() == 2 {
                seen.sort();
                assert_eq!(seen, [r#"{"key":"user-12"}"#, r#"{"prefix":"/users"}"#]);
                break;
            }
            assert!(Instant::now() < deadline, "the edge saw {seen:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn a_name_prefix_keeps_one_data_centres_edges_of_the_state_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(
            &path,
            r#"{"roles": [
                {"name": "us-east-edge-shield", "kind": "edge", "addrs": {"admin": "127.0.0.1:1"}},
                {"name": "us-east-edge-1", "kind": "edge", "addrs": {"admin": "127.0.0.1:2"}},
                {"name": "us-west-edge-shield", "kind": "edge", "addrs": {"admin": "127.0.0.1:3"}},
                {"name": "us-west-edge-1", "kind": "edge", "addrs": {"admin": "127.0.0.1:4"}}
            ]}"#,
        )
        .expect("write");
        let edges = |named: Option<&str>| Edges {
            fixed: Vec::new(),
            state: Some(path.clone()),
            named: named.map(String::from),
            seen: Mutex::new((None, Vec::new())),
        };
        let names = |e: Edges| -> Vec<String> { e.current().into_iter().map(|(n, _)| n).collect() };
        assert_eq!(
            names(edges(Some("us-west-edge-"))),
            ["us-west-edge-shield", "us-west-edge-1"]
        );
        assert_eq!(names(edges(None)).len(), 4);
    }
}
