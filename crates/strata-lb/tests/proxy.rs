//! The load balancer over real sockets: in-process HTTP backends on free loopback ports, a
//! real `LoadBalancer` in front, and clients speaking HTTP (and raw bytes) to it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::Value;
use strata_lb::{Algorithm, BackendSpec, LbConfig, LoadBalancer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "support/upgrading_echo.rs"]
mod upgrading_echo;

/// A backend that says who it is and echoes the headers it received.
async fn backend(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/who",
            get(move |headers: HeaderMap| async move {
                let h: HashMap<String, String> = headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                Json(serde_json::json!({"name": name, "headers": h}))
            }),
        )
        .route(
            "/echo",
            post(move |body: String| async move { format!("{name}:{body}") }),
        )
        .route(
            "/busy",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "1")],
                    "later",
                )
            }),
        )
        .route(
            "/broken",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

/// A backend that accepts connections, reads the request and closes without answering;
/// `hits` counts the POSTs it swallowed.
async fn resetting_backend(hits: Arc<AtomicUsize>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            if buf[..n].starts_with(b"POST") {
                hits.fetch_add(1, Ordering::SeqCst);
            }
            drop(s);
        }
    });
    addr
}

/// A port with nothing listening.
fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

struct Lb {
    base: String,
    admin: String,
    addr: SocketAddr,
    client: reqwest::Client,
}

async fn start_lb(backends: Vec<(&str, SocketAddr)>, tune: impl FnOnce(&mut LbConfig)) -> Lb {
    let specs = backends
        .into_iter()
        .map(|(n, a)| BackendSpec {
            name: n.into(),
            addr: a,
            weight: 1,
        })
        .collect();
    let mut config = LbConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        "127.0.0.1:0".parse().expect("addr"),
        specs,
    );
    config.health.interval = Duration::from_millis(100);
    config.health.timeout = Duration::from_millis(100);
    tune(&mut config);
    let lb = LoadBalancer::build(config).await.expect("bind");
    let addr = lb.addr().expect("addr");
    let admin = lb.admin_addr().expect("admin");
    tokio::spawn(lb.run_until_stopped(std::future::pending()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    Lb {
        base: format!("http://{addr}"),
        admin: format!("http://{admin}"),
        addr,
        client,
    }
}

impl Lb {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET")
    }
    async fn post(&self, path: &str, body: &'static str) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .body(body)
            .send()
            .await
            .expect("POST")
    }
    async fn who(&self) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}/who", self.base))
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
    async fn backends(&self) -> Value {
        self.client
            .get(format!("{}/admin/backends", self.admin))
            .send()
            .await
            .expect("admin")
            .json()
            .await
            .expect("json")
    }
}

#[tokio::test]
async fn round_robin_spreads_requests_over_every_backend() {
    let (a, _ta) = backend("a").await;
    let (b, _tb) = backend("b").await;
    let (c, _tc) = backend("c").await;
    let lb = start_lb(vec![("a", a), ("b", b), ("c", c)], |_| {}).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let (status, body) = lb.who().await;
        assert_eq!(status, 200);
        *counts
            .entry(body["name"].as_str().expect("name").to_string())
            .or_default() += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{counts:?}"
    );
}

#[tokio::test]
async fn forwarding_headers_are_added_hop_by_hop_ones_removed_and_the_request_id_kept() {
    let (a, _ta) = backend("a").await;
    let lb = start_lb(vec![("a", a)], |_| {}).await;
    let r = lb
        .client
        .get(format!("{}/who", lb.base))
        .header("x-request-id", "trace-77")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.headers()["x-request-id"], "trace-77");
    let body: Value = r.json().await.expect("json");
    let h = &body["headers"];
    assert_eq!(h["x-request-id"], "trace-77");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["forwarded"], "for=127.0.0.1;proto=http");
    assert!(
        h.get("x-hop").is_none(),
        "headers named in Connection are removed: {h}"
    );
    let r = lb
        .client
        .get(format!("{}/who", lb.base))
        .send()
        .await
        .expect("GET");
    assert!(
        r.headers()["x-request-id"].len() >= 16,
        "generated when absent"
    );
}

#[tokio::test]
async fn a_dead_backend_costs_no_failed_get_and_is_ejected() {
    let (a, _ta) = backend("a").await;
    let (b, tb) = backend("b").await;
    let lb = start_lb(vec![("a", a), ("b", b)], |c| {
        c.health.interval = Duration::from_secs(60)
    })
    .await;
    assert_eq!(lb.who().await.0, 200);
    tb.abort();
    let _ = tb.await;
    for _ in 0..40 {
        let (status, body) = lb.who().await;
        assert_eq!(status, 200, "every GET succeeds: {body}");
        assert_eq!(body["name"], "a");
    }
    let backends = lb.backends().await;
    let b_view = backends["backends"]
        .as_array()
        .expect("list")
        .iter()
        .find(|x| x["name"] == "b")
        .expect("b")
        .clone();
    assert_eq!(
        b_view["ejected"], true,
        "passive detection ejected b: {backends}"
    );
    assert_eq!(b_view["eligible"], false);
}

#[tokio::test]
async fn two_of_three_backends_dying_at_once_cost_no_request() {
    let (a, _ta) = backend("a").await;
    let (b, tb) = backend("b").await;
    let (c, tc) = backend("c").await;
    let lb = start_lb(vec![("a", a), ("b", b), ("c", c)], |c| {
        c.health.interval = Duration::from_secs(60)
    })
    .await;
    assert_eq!(lb.who().await.0, 200);
    for t in [tb, tc] {
        t.abort();
        let _ = t.await;
    }
    // Until passive detection has ejected both, a request may meet both dead backends before
    // the live one: connect failures move on until one accepts. POSTs too — nothing was sent.
    for i in 0..30 {
        let r = if i % 2 == 0 {
            lb.client.get(format!("{}/who", lb.base)).send().await
        } else {
            lb.client
                .post(format!("{}/echo", lb.base))
                .body("z")
                .send()
                .await
        }
        .expect("request");
        assert_eq!(r.status(), 200, "request {i} succeeds");
    }
}

#[tokio::test]
async fn a_get_moves_past_every_backend_that_drops_it_before_answering() {
    // Two backends that read each request and close without a byte of answer: what a pooled
    // keep-alive connection to a process killed with -9 looks like. Round robin sends the
    // first GET to both before the live one; it must not stop after one retry.
    let swallowed = Arc::new(AtomicUsize::new(0));
    let b = resetting_backend(swallowed.clone()).await;
    let c = resetting_backend(swallowed.clone()).await;
    let (a, _ta) = backend("a").await;
    let lb = start_lb(vec![("b", b), ("c", c), ("a", a)], |c| {
        c.health.interval = Duration::from_secs(60)
    })
    .await;
    for i in 0..6 {
        let r = lb.get("/who").await;
        assert_eq!(r.status(), 200, "GET {i} is served by the live backend");
    }
    // A POST without an Idempotency-Key that reached a backend is still never sent twice.
    let r = lb.post("/echo", "once").await;
    if r.status() == 502 {
        assert_eq!(
            swallowed.load(Ordering::SeqCst),
            1,
            "swallowed once, not retried"
        );
    } else {
        assert_eq!(r.status(), 200);
        assert_eq!(
            swallowed.load(Ordering::SeqCst),
            0,
            "it went to the live one first"
        );
    }
}

#[tokio::test]
async fn active_checks_take_a_dead_backend_out_and_bring_it_back() {
    let (a, _ta) = backend("a").await;
    let (b, tb) = backend("b").await;
    let lb = start_lb(vec![("a", a), ("b", b)], |c| {
        c.health.rise = 1;
        c.health.fall = 2;
    })
    .await;
    tb.abort();
    let _ = tb.await;
    // Two failed checks 100 ms apart, with no client traffic at all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let view = lb.backends().await;
    assert_eq!(view["backends"][1]["healthy"], false, "{view}");
    // Restart b on the same port.
    let listener = tokio::net::TcpListener::bind(b).await.expect("rebind");
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/who",
            get(|| async { Json(serde_json::json!({"name": "b"})) }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let view = lb.backends().await;
    assert_eq!(view["backends"][1]["healthy"], true, "re-admitted: {view}");
    let mut saw_b = false;
    for _ in 0..10 {
        saw_b |= lb.who().await.1["name"] == "b";
    }
    assert!(saw_b);
}

#[tokio::test]
async fn a_post_that_may_have_arrived_is_not_retried_but_one_that_never_connected_is() {
    let hits = Arc::new(AtomicUsize::new(0));
    let resetter = resetting_backend(hits.clone()).await;
    let (a, _ta) = backend("a").await;
    let lb = start_lb(vec![("r", resetter), ("a", a)], |c| {
        c.algorithm = Algorithm::LeastConnections;
        c.health.interval = Duration::from_secs(60);
    })
    .await;
    // Least connections with equal loads rotates; find a POST that lands on the resetter.
    let mut failed = 0;
    for _ in 0..4 {
        let r = lb.post("/echo", "x").await;
        if r.status() == 502 {
            failed += 1;
        }
    }
    assert!(
        hits.load(Ordering::SeqCst) >= 1,
        "some POST reached the resetting backend"
    );
    assert_eq!(
        failed,
        hits.load(Ordering::SeqCst),
        "each POST the resetter swallowed failed, none was retried"
    );
    // With an Idempotency-Key the same POST is retried on the other backend.
    let before = hits.load(Ordering::SeqCst);
    for _ in 0..4 {
        let r = lb
            .client
            .post(format!("{}/echo", lb.base))
            .header("idempotency-key", "k1")
            .body("y")
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 200, "retried elsewhere");
        assert_eq!(r.text().await.expect("text"), "a:y");
    }
    let _ = before;

    // A backend nobody listens on: the connection fails, nothing was sent, so a POST moves on.
    let (c, _tc) = backend("c").await;
    let lb = start_lb(vec![("dead", dead_addr()), ("c", c)], |c| {
        c.health.interval = Duration::from_secs(60)
    })
    .await;
    for _ in 0..4 {
        let r = lb.post("/echo", "z").await;
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn with_no_eligible_backend_the_answer_is_503_problem_at_once() {
    let lb = start_lb(vec![("dead", dead_addr())], |c| {
        c.health.interval = Duration::from_millis(50)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = std::time::Instant::now();
    let r = lb
        .client
        .get(format!("{}/who", lb.base))
        .send()
        .await
        .expect("GET");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(r.headers()["retry-after"], "1");
    let text = r.text().await.expect("text");
    assert!(
        !text.contains("127.0.0.1"),
        "no backend address leaks: {text}"
    );
}

#[tokio::test]
async fn the_admin_api_replaces_and_drains_backends_and_refuses_a_bad_set() {
    let (a, _ta) = backend("a").await;
    let (b, _tb) = backend("b").await;
    let lb = start_lb(vec![("a", a)], |_| {}).await;
    let admin = format!("{}/admin/backends", lb.admin);
    let r = lb
        .client
        .put(&admin)
        .body(r#"{"backends":[{"name":"a","addr":"127.0.0.1:1","weight":0}]}"#)
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 400);
    let r = lb
        .client
        .put(&admin)
        .body("not json")
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 400);
    assert_eq!(lb.who().await.1["name"], "a", "the old set keeps serving");
    let set = serde_json::json!({"backends": [{"name": "a", "addr": a.to_string()}, {"name": "b", "addr": b.to_string()}]});
    let r = lb.client.put(&admin).json(&set).send().await.expect("PUT");
    assert_eq!(r.status(), 200);
    let r = lb
        .client
        .post(format!("{admin}/a/drain"))
        .send()
        .await
        .expect("drain");
    assert_eq!(r.status(), 200);
    for _ in 0..10 {
        assert_eq!(
            lb.who().await.1["name"],
            "b",
            "a drained backend gets no new requests"
        );
    }
    let metrics = lb
        .client
        .get(format!("{}/metrics", lb.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("strata_lb_requests_total{"), "{metrics}");
}

#[tokio::test]
async fn a_drain_kept_in_the_drain_file_holds_in_a_balancer_started_again() {
    let (a, _ta) = backend("a").await;
    let (b, _tb) = backend("b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("lb").join("lb-1.drained.json");
    let with_file = |c: &mut LbConfig| c.drain_file = Some(file.clone());
    let first = start_lb(vec![("a", a), ("b", b)], with_file).await;
    let r = first
        .client
        .post(format!("{}/admin/backends/a/drain", first.admin))
        .send()
        .await
        .expect("drain");
    assert_eq!(r.status(), 200);
    // The balancer's successor (a restart, on the same file) drains `a` before its first
    // request, and an undrain there is kept too.
    let second = start_lb(vec![("a", a), ("b", b)], with_file).await;
    for _ in 0..10 {
        assert_eq!(second.who().await.1["name"], "b", "a stays drained");
    }
    let r = second
        .client
        .post(format!("{}/admin/backends/a/undrain", second.admin))
        .send()
        .await
        .expect("undrain");
    assert_eq!(r.status(), 200);
    let third = start_lb(vec![("a", a), ("b", b)], with_file).await;
    let mut names = std::collections::HashSet::new();
    for _ in 0..10 {
        names.insert(third.who().await.1["name"].as_str().map(str::to_owned));
    }
    assert!(names.contains(&Some("a".into())), "a is back: {names:?}");
    // A broken file is reported and ignored: every backend serves.
    std::fs::write(&file, "{not json").expect("write");
    let fourth = start_lb(vec![("a", a), ("b", b)], with_file).await;
    let mut names = std::collections::HashSet::new();
    for _ in 0..10 {
        names.insert(fourth.who().await.1["name"].as_str().map(str::to_owned));
    }
    assert_eq!(names.len(), 2, "{names:?}");
}

/// Sends raw bytes; returns what came back and whether the server closed the connection.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[tokio::test]
async fn smuggling_attempts_are_answered_400_and_the_connection_closed() {
    let (a, _ta) = backend("a").await;
    let lb = start_lb(vec![("a", a)], |_| {}).await;
    // Content-Length together with Transfer-Encoding, in either order: 400, and the
    // connection closed, so no second request can hide in the body.
    for head in [
        &b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    ] {
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(b"0\r\n\r\nGET /who HTTP/1.1\r\nHost: x\r\n\r\n");
        let (answer, closed) = raw(lb.addr, &bytes).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
        assert!(closed, "the connection is closed: {answer:?}");
        assert_eq!(
            answer.matches("HTTP/1.1").count(),
            1,
            "the smuggled second request is never served: {answer:?}"
        );
    }
    // A good request pipelined before it is answered first, in order.
    let (answer, closed) = raw(lb.addr, b"GET /who HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.contains("HTTP/1.1 400"), "{answer:?}");
    assert!(closed, "{answer:?}");

    let cases: [&[u8]; 3] = [
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"GET /who HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
    ];
    for case in cases {
        let (answer, closed) = raw(lb.addr, case).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{:?} -> {answer:?}",
            String::from_utf8_lossy(case)
        );
        assert!(
            closed,
            "the connection is closed after {:?}",
            String::from_utf8_lossy(case)
        );
    }
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_nothing_reaches_a_backend() {
    let (a, _ta) = backend("a").await;
    let lb = start_lb(vec![("a", a)], |c| c.rate_limit = Some((1.0, 5))).await;
    let mut codes = Vec::new();
    for _ in 0..8 {
        let r = lb
            .client
            .get(format!("{}/who", lb.base))
            .send()
            .await
            .expect("GET");
        if r.status() == 429 {
            assert_eq!(r.headers()["retry-after"], "1");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
        }
        codes.push(r.status().as_u16());
    }
    assert_eq!(
        codes,
        vec![200, 200, 200, 200, 200, 429, 429, 429],
        "a burst of 5, then limited"
    );
    let view = lb.backends().await;
    assert_eq!(
        view["backends"][0]["requests"], 5,
        "limited requests never reach a backend: {view}"
    );
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_on_accept() {
    let (a, _ta) = backend("a").await;
    let lb = start_lb(vec![("a", a)], |c| c.max_connections = 1).await;
    let mut first = tokio::net::TcpStream::connect(lb.addr)
        .await
        .expect("connect");
    first
        .write_all(b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 12];
    first.read_exact(&mut buf).await.expect("first answered");
    assert_eq!(&buf, b"HTTP/1.1 200");
    // The first connection stays open (keep-alive): a second one is over the limit.
    let (answer, closed) = raw(lb.addr, b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        closed && answer.is_empty(),
        "closed without an answer: {answer:?}"
    );
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (answer, _) = raw(
        lb.addr,
        b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "served again once the first closed: {answer:?}"
    );
}

#[tokio::test]
async fn websocket_upgrades_pass_through_both_ways() {
    let backend = upgrading_echo::upgrading_echo().await;
    let lb = start_lb(vec![("ws", backend)], |_| {}).await;
    let mut s = tokio::net::TcpStream::connect(lb.addr)
        .await
        .expect("connect");
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("head in time")
            .expect("read");
        assert_eq!(
            n,
            1,
            "connection closed during the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"ping"[..], b"frames both ways"] {
        s.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("read");
        assert_eq!(back, msg);
    }
}

#[tokio::test]
async fn sticky_sessions_keep_a_client_on_its_backend_and_move_it_when_that_one_dies() {
    let (a, ta) = backend("a").await;
    let (b, tb) = backend("b").await;
    let lb = start_lb(vec![("a", a), ("b", b)], |c| {
        c.sticky = Some(strata_lb::sticky::Sticky::with_key("srv", [3; 32]));
        c.health.interval = Duration::from_secs(60);
    })
    .await;
    let url = format!("{}/who", lb.base);
    let first = lb.client.get(&url).send().await.expect("GET");
    let cookie = first.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        cookie.starts_with("srv=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("127.0.0.1"),
        "the cookie never holds an address: {cookie}"
    );
    let pinned_to = first.json::<Value>().await.expect("json")["name"]
        .as_str()
        .expect("name")
        .to_string();
    let value = cookie.split(';').next().expect("pair").to_string();
    for _ in 0..10 {
        let r = lb
            .client
            .get(&url)
            .header("cookie", &value)
            .send()
            .await
            .expect("GET");
        assert!(
            r.headers().get("set-cookie").is_none(),
            "no renewal while the backend is fine"
        );
        assert_eq!(
            r.json::<Value>().await.expect("json")["name"],
            pinned_to.as_str()
        );
    }
    // A tampered cookie is ignored (and replaced).
    let r = lb
        .client
        .get(&url)
        .header("cookie", "srv=YQ.AAAA")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    // The pinned backend dies: the request goes elsewhere and the cookie is renewed.
    let (dead, _alive) = if pinned_to == "a" { (ta, tb) } else { (tb, ta) };
    dead.abort();
    let _ = dead.await;
    let r = lb
        .client
        .get(&url)
        .header("cookie", &value)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    let renewed = r.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_ne!(
        renewed.split(';').next(),
        Some(value.as_str()),
        "renewed to name the new backend"
    );
    assert_ne!(
        r.json::<Value>().await.expect("json")["name"],
        pinned_to.as_str()
    );
}

#[tokio::test]
async fn a_503_with_retry_after_is_passed_on_without_ejecting_the_backend_but_500s_eject() {
    let (a, _ta) = backend("a").await;
    let lb = start_lb(vec![("a", a)], |c| {
        c.outlier.consecutive_failures = 3;
        c.health.interval = Duration::from_secs(3600);
    })
    .await;
    for _ in 0..10 {
        let r = lb.get("/busy").await;
        assert_eq!(r.status(), 503);
        assert_eq!(
            r.headers()["retry-after"],
            "1",
            "the backend's answer is passed on"
        );
    }
    let (status, body) = lb.who().await;
    assert_eq!(
        (status, body["name"].as_str()),
        (200, Some("a")),
        "a is still in rotation"
    );
    for _ in 0..3 {
        assert_eq!(lb.get("/broken").await.status(), 500);
    }
    let (status, _) = lb.who().await;
    assert_eq!(status, 503, "three 500s in a row eject the only backend");
}

#[tokio::test]
async fn a_request_body_that_stalls_is_answered_408_within_the_total_timeout() {
    let hits = Arc::new(AtomicUsize::new(0));
    let swallow = resetting_backend(hits.clone()).await;
    let lb = start_lb(vec![("a", swallow)], |c| {
        c.timeouts.total = Duration::from_millis(300);
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(lb.addr)
        .await
        .expect("connect");
    // Ten bytes promised, two sent, then nothing.
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut out))
        .await
        .expect("answered, not left hanging")
        .expect("read");
    let answer = String::from_utf8_lossy(&out[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body-timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing half-read was sent on"
    );
}

/// A backend written by hand (hyper's server cannot send `1xx`): `103 Early Hints` with a
/// `Link`, then `200 OK`, for every request on its connection.
async fn hinting_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let answer = "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n\
                                      HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_early_hint_from_a_backend_reaches_an_http_1_1_client_ahead_of_the_answer() {
    let lb = start_lb(vec![("b1", hinting_backend().await)], |_| {}).await;
    let (out, closed) = raw(
        lb.addr,
        b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(closed, "{out}");
    let hint = out.find("HTTP/1.1 103 Early Hints\r\n").expect("the hint");
    let answer = out.find("HTTP/1.1 200 OK\r\n").expect("the answer");
    assert!(hint < answer, "{out}");
    assert!(
        out[hint..answer].contains("link: </s.css>; rel=preload\r\n"),
        "{out}"
    );
    assert!(out.ends_with("\r\n\r\nok"), "{out}");
    // An HTTP/1.0 client is sent none (RFC 9110 §15.2).
    let (old, _) = raw(lb.addr, b"GET /page HTTP/1.0\r\nHost: x\r\n\r\n").await;
    assert!(
        old.starts_with("HTTP/1.0 200 OK\r\n") && !old.contains(" 103 "),
        "{old}"
    );
}
