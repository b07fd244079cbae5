//! Purging the CDN edges when a profile changes.
//!
//! A profile's answer carries `Surrogate-Key: user-<id>`, the tag an edge files it under. When
//! `--shared-max-age-secs N` is above 0 the answer also lets CDN caches keep it N seconds
//! without asking, and serve it stale for `--shared-stale-if-error-secs S` more while the
//! origin fails (RFC 5861): `Cache-Control: no-cache` (browsers and other caches revalidate
//! every time) with `CDN-Cache-Control: public, max-age=N, stale-if-error=S` (RFC 9213: the
//! edges read it instead of `Cache-Control`). Pages of `GET /users` carry `Surrogate-Key:
//! users-list` and the same caching headers. Every write of a user — replace, patch, delete —
//! purges `user-<id>` and `users-list` from every edge once the write is acknowledged, and a
//! create (an account's sign-up too) purges `users-list`. A purged copy is gone: it is not
//! served stale either, so a deleted user does not come back during an outage. Purges go:
//!
//! - edges are purged **in order** (a shield before the edges in front of it, so that they
//!   cannot refill from it), each **retried until it confirms** (a `2xx` from its admin API's
//!   `POST /purge`), with back-off from 50 ms to 2 s, for up to `N + 30` seconds — past that
//!   the edge's copy has expired by itself, and the edge is counted as given up on;
//! - purges run in the background, up to 64 at once; the queue holds 10,000 (a write that finds
//!   it full is counted as dropped: its edges' copies are stale until they expire, N seconds at
//!   most);
//! - metrics: `strata_edge_purge_seconds` (from the write's acknowledgement until the last edge
//!   confirmed) and `strata_edge_purges_total{result="confirmed"|"gave_up"|"dropped"}`.
//!
//! Which edges: `--purge-edge ADMIN_ADDR` (repeat; in order), and/or `--purge-edges-state
//! FILE`, a deployment's `state.json` as `strata up` writes it, re-read when it changes: every
//! role of kind `edge` by its `admin` address, in the file's order (`strata up` lists the
//! shield first). Such an edge is known by its role name: each retry looks its address up
//! again, so an edge restarted on a new admin port is followed, even mid-purge.
//!
//! With N = 0 (the default) answers keep `no-cache`: edges revalidate every profile with its
//! ETag, and purges are still sent (they cost nothing an edge has to trust).

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

/// How an API server purges the edges in front of it: `strata api` flags.
#[derive(Debug, Clone, PartialEq, Eq, Default, clap::Args, serde::Serialize)]
pub struct EdgeOptions {
    /// An edge's admin address to purge when a profile changes (repeat, in order: a shield
    /// before the edges in front of it).
    #[arg(long = "purge-edge", value_name = "ADDR")]
    #[serde(serialize_with = "strata_core::args::display_all")]
    pub purge_edges: Vec<SocketAddr>,
    /// A deployment's state file (`strata up`'s DIR/state.json) whose `edge` roles to purge,
    /// re-read when it changes.
    #[arg(long, value_name = "FILE")]
    pub purge_edges_state: Option<PathBuf>,
    /// Seconds shared caches (the edges) may keep a profile without asking; 0: they revalidate
    /// every time (`no-cache`).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub shared_max_age_secs: u64,
    /// Seconds past that the edges may still answer a profile from their copy while the origin
    /// fails (`stale-if-error`, RFC 5861); 0: never. Only with `--shared-max-age-secs` above 0.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_STALE_IF_ERROR_SECS))]
    pub shared_stale_if_error_secs: u64,
}

/// The longest `stale-if-error` a profile's answer gives the edges: a week.
pub const MAX_STALE_IF_ERROR_SECS: u64 = 604_800;

/// Purges in the background at once.
const IN_FLIGHT: usize = 64;
/// Purges waiting.
const QUEUE: usize = 10_000;
/// One purge request's deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The surrogate key of a user's objects.
pub fn user_key(id: u64) -> String {
    format!("user-{id}")
}

/// The surrogate key of every page of `GET /users`: a page may list any user (up to 100, more
/// than an edge keeps keys for one object), so a change to any user purges them all.
pub const LIST_KEY: &str = "users-list";

/// The edges' purger, shared by every handler (cheap to clone).
#[derive(Clone)]
pub struct EdgePurger {
    inner: Option<Arc<Inner>>,
    /// `--shared-max-age-secs`.
    shared_max_age_secs: u64,
    /// A profile's `Cache-Control`, made once (every `GET /users/{id}` sends it).
    cache_control: http::HeaderValue,
    /// A profile's `CDN-Cache-Control`, when the edges may keep it.
    cdn_cache_control: Option<http::HeaderValue>,
}

impl Default for EdgePurger {
    fn default() -> Self {
        Self {
            inner: None,
            shared_max_age_secs: 0,
            cache_control: http::HeaderValue::from_static("no-cache"),
            cdn_cache_control: None,
        }
    }
}

/// The `CDN-Cache-Control` of a profile's answer when the edges may keep it `secs` seconds and
/// serve it stale `stale_if_error` seconds more while the origin fails; none when `secs` is 0.
fn cdn_cache_control(secs: u64, stale_if_error: u64) -> Option<http::HeaderValue> {
    let value = match (secs, stale_if_error) {
        (0, _) => return None,
        (n, 0) => format!("public, max-age={n}"),
        (n, s) => format!("public, max-age={n}, stale-if-error={s}"),
    };
    http::HeaderValue::from_str(&value).ok()
}

struct Inner {
    queue: mpsc::Sender<(String, Instant)>,
}

impl std::fmt::Debug for EdgePurger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgePurger")
            .field("active", &self.inner.is_some())
            .field("shared_max_age_secs", &self.shared_max_age_secs)
            .finish()
    }
}

impl EdgePurger {
    /// A purger for `options`: inactive without edges; otherwise its background task runs on
    /// the current runtime.
    pub fn start(options: &EdgeOptions) -> Self {
        let mut purger = Self {
            inner: None,
            shared_max_age_secs: options.shared_max_age_secs,
            cache_control: http::HeaderValue::from_static("no-cache"),
            cdn_cache_control: cdn_cache_control(
                options.shared_max_age_secs,
                options.shared_stale_if_error_secs,
            ),
        };
        if options.purge_edges.is_empty() && options.purge_edges_state.is_none() {
            return purger;
        }
        let edges = Edges {
            fixed: options.purge_edges.clone(),
            state: options.purge_edges_state.clone(),
            seen: Mutex::new((None, Vec::new())),
        };
        let give_up_after = Duration::from_secs(options.shared_max_age_secs + 30);
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, Arc::new(edges), give_up_after));
        purger.inner = Some(Arc::new(Inner { queue: tx }));
        purger
    }

    /// After user `id` was changed or deleted: purges its own objects and every list page
    /// (which shows it) from every edge, in the background.
    pub fn purge_user(&self, id: u64) {
        self.purge(user_key(id));
        self.purge_lists();
    }

    /// After a user was created: every list page (which should now show it). Its own key has
    /// nothing to purge: what its id answered before, a 404, is an error, never stored.
    pub fn purge_lists(&self) {
        self.purge(LIST_KEY.to_string());
    }

    /// Purges `key` from every edge, in the background.
    pub fn purge(&self, key: String) {
        let Some(inner) = &self.inner else {
            return;
        };
        if inner.queue.try_send((key, Instant::now())).is_err() {
            metrics::counter!("strata_edge_purges_total", "result" => "dropped").increment(1);
            tracing::warn!(
                "the edge purge queue is full: a purge is dropped (the copies expire by themselves)"
            );
        }
    }

    /// The `Cache-Control` of a profile's answer: `no-cache`, whatever the edges may do.
    pub fn profile_cache_control(&self) -> http::HeaderValue {
        self.cache_control.clone()
    }

    /// The `CDN-Cache-Control` of a profile's answer, when the edges may keep it.
    pub fn profile_cdn_cache_control(&self) -> Option<http::HeaderValue> {
        self.cdn_cache_control.clone()
    }
}

/// Where the edges are: fixed addresses, then those of a state file (re-read on change).
struct Edges {
    fixed: Vec<SocketAddr>,
    state: Option<PathBuf>,
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
                *seen = (modified, edges_of_state(path));
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
    mut queue: mpsc::Receiver<(String, Instant)>,
    edges: Arc<Edges>,
    give_up_after: Duration,
) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CALL_TIMEOUT));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some((key, since)) = queue.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (client, edges) = (client.clone(), edges.clone());
        tokio::spawn(async move {
            let deadline = since + give_up_after;
            let mut confirmed = true;
            for (edge, _) in edges.current() {
                if !purge_one(&client, &edges, &edge, &key, deadline).await {
                    confirmed = false;
                    tracing::warn!(%edge, %key, "an edge did not confirm a purge in time: its copy expires by itself");
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

/// Purges `key` from the edge named `edge`, retrying (at its address of the moment) until it
/// confirms or `deadline` passes.
async fn purge_one(
    client: &Client<HttpConnector, Full<Bytes>>,
    edges: &Edges,
    edge: &str,
    key: &str,
    deadline: Instant,
) -> bool {
    let body = Bytes::from(serde_json::json!({ "key": key }).to_string());
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

    #[test]
    fn profiles_are_revalidated_every_time_unless_the_edges_may_keep_them() {
        let p = EdgePurger::default();
        assert_eq!(p.profile_cache_control(), "no-cache");
        assert_eq!(p.profile_cdn_cache_control(), None);
        let p = EdgePurger::start(&EdgeOptions {
            shared_stale_if_error_secs: 86_400,
            ..EdgeOptions::default()
        });
        assert_eq!(
            p.profile_cdn_cache_control(),
            None,
            "stale-if-error alone lets the edges keep nothing"
        );
        let p = EdgePurger::start(&EdgeOptions {
            shared_max_age_secs: 60,
            shared_stale_if_error_secs: 86_400,
            ..EdgeOptions::default()
        });
        assert_eq!(p.profile_cache_control(), "no-cache", "browsers revalidate");
        assert_eq!(
            p.profile_cdn_cache_control().expect("targeted"),
            "public, max-age=60, stale-if-error=86400"
        );
        let p = EdgePurger::start(&EdgeOptions {
            shared_max_age_secs: 60,
            ..EdgeOptions::default()
        });
        assert_eq!(
            p.profile_cdn_cache_control().expect("targeted"),
            "public, max-age=60"
        );
    }
}
