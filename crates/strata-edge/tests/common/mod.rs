//! A scripted origin on a free loopback port, and an edge in front of it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use strata_edge::{Edge, EdgeConfig};

/// What the origin answers for one path.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: &str, headers: &[(&str, &str)]) -> Self {
        Self {
            status: 200,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A request the origin received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
}

#[derive(Default)]
struct Script {
    replies: HashMap<String, Reply>,
    seen: Vec<Seen>,
    /// Per path: requests being answered now, and the most there ever were at once.
    in_flight: HashMap<String, (usize, usize)>,
}

/// An origin whose answers the test sets per path (path and query). It answers `304` when
/// the request's `If-None-Match` names its `ETag`, or its `If-Modified-Since` equals its
/// `Last-Modified`; 404 for paths it has no answer for.
#[derive(Clone)]
pub struct Origin {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl Origin {
    pub async fn start() -> Self {
        let script: Arc<Mutex<Script>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = script.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, _body: Bytes| {
                let state = state.clone();
                async move { answer(state, method, uri, headers).await }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, script }
    }

    pub fn set(&self, path: &str, reply: Reply) {
        self.lock().replies.insert(path.to_string(), reply);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().expect("script")
    }

    /// The most requests for `path` the origin was answering at one moment.
    pub fn most_at_once(&self, path: &str) -> usize {
        self.lock().in_flight.get(path).map_or(0, |(_, most)| *most)
    }

    /// Requests received for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.lock().seen.iter().filter(|s| s.path == path).count()
    }

    /// The last request received for `path`.
    pub fn last(&self, path: &str) -> Option<Seen> {
        self.lock()
            .seen
            .iter()
            .rev()
            .find(|s| s.path == path)
            .cloned()
    }
}

async fn answer(
    state: Arc<Mutex<Script>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    let reply = {
        let mut s = state.lock().expect("script");
        s.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            headers: headers.clone(),
        });
        s.replies.get(&path).cloned()
    };
    let Some(reply) = reply else {
        return (StatusCode::NOT_FOUND, "no such thing").into_response();
    };
    if !reply.delay.is_zero() {
        {
            let mut s = state.lock().expect("script");
            let (now, most) = s.in_flight.entry(path.clone()).or_default();
            *now += 1;
            *most = (*most).max(*now);
        }
        tokio::time::sleep(reply.delay).await;
        if let Some((now, _)) = state.lock().expect("script").in_flight.get_mut(&path) {
            *now -= 1;
        }
    }
    let etag_matches = match (headers.get("if-none-match"), reply.header("etag")) {
        (Some(inm), Some(etag)) => inm.to_str().unwrap_or("").contains(etag),
        _ => false,
    };
    let date_matches = match (
        headers.get("if-modified-since"),
        reply.header("last-modified"),
    ) {
        (Some(ims), Some(lm)) => ims.to_str().unwrap_or("") == lm,
        _ => false,
    };
    let not_modified = reply.status == 200 && (etag_matches || date_matches);
    let status = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::from_u16(reply.status).expect("status")
    };
    // A body of `ECHO accept-language` answers with that request header's value.
    let body = match reply.body.strip_prefix(b"ECHO ") {
        Some(name) => {
            let name = String::from_utf8_lossy(name).into_owned();
            let value = headers.get(name.as_str()).map_or("-".to_string(), |v| {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            });
            format!("{path} {name}={value}").into_bytes()
        }
        None => reply.body.clone(),
    };
    let mut response = if not_modified {
        status.into_response()
    } else {
        (status, body).into_response()
    };
    for (n, v) in &reply.headers {
        response.headers_mut().append(
            axum::http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    response
}

/// An edge serving in this process until dropped or stopped.
pub struct TestEdge {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The TLS listener, when the configuration has one.
    pub tls: Option<SocketAddr>,
    pub stats: Arc<strata_edge::stats::Stats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestEdge {
    pub async fn start(origin: SocketAddr, dir: Option<PathBuf>) -> Self {
        Self::start_with(origin, |c| {
            if let Some(dir) = dir {
                c.store.disk = Some((dir, 64 * 1024 * 1024));
            }
        })
        .await
    }

    pub async fn start_with(origin: SocketAddr, tweak: impl FnOnce(&mut EdgeConfig)) -> Self {
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = EdgeConfig::new(local, local, origin);
        config.store.memory_bytes = 16 * 1024 * 1024;
        config.store.max_object = 1024 * 1024;
        config.timeouts.header = Duration::from_secs(5);
        config.timeouts.total = Duration::from_secs(5);
        tweak(&mut config);
        let edge = Edge::build(config).await.expect("edge");
        let addr = edge.addr().expect("addr");
        let admin = edge.admin_addr().expect("admin");
        let tls = edge.tls_addr();
        let stats = edge.stats();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let _ = edge
                .run_until_stopped(async {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            addr,
            admin,
            tls,
            stats,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the edge and waits until it has let go of its store.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("the edge stops within 15 s")
                .expect("the edge's task");
        }
    }

    pub async fn purge(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = client()
            .post(format!("http://{}/purge", self.admin))
            .json(&body)
            .send()
            .await
            .expect("purge");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json"))
    }

    pub async fn metrics(&self) -> String {
        client()
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A client that keeps no idle connections (so an edge can stop at once).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// A GET with headers; status, headers and body.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, String) {
    let mut req = client().get(url);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.expect("body"))
}

/// The `Cache-Status` of an answer.
pub fn cache_status(headers: &HeaderMap) -> String {
    headers
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Polls `check` every 20 ms until it holds or `deadline` passes.
pub async fn eventually<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A sample from `/metrics` text: the value of the line that starts with `name`.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}
