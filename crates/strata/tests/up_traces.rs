//! Traces across tiers in a running topology: a photo upload sent to the edge with a sampled
//! W3C `traceparent` is one trace, recorded by every role it crosses — the edge, the
//! balancer, the API server (with its data and cache calls as children), the outbox relay's
//! publish and the worker that processes the job — each span the child of the one before.
//! The topology samples no trace of its own (`trace_sample = 0`): the client's decision is
//! followed. A malformed `traceparent` is never propagated: a new trace starts at the edge,
//! and the malformed trace id appears in no role's log.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Cleanup, admin_client, role, status_json, up_topology};
use serde_json::Value;
use strata_photos::testdata;
use strata_photos::upload::Format;

const TOPOLOGY: &str = "name = \"traced\"\n[edge]\ncount = 1\n[lb]\n[api]\ncount = 2\n\
    [workers]\ncount = 1\n[observe]\ntrace_sample = 0\n";

/// A span as `/traces/{id}` gives it: (role, name, span id, parent id).
#[derive(Debug, Clone)]
struct Span {
    role: String,
    name: String,
    id: String,
    parent: Option<String>,
}

/// Every span of `trace` that the roles at `addrs` (role → HOST:PORT serving `/traces`) keep.
async fn spans(http: &reqwest::Client, addrs: &HashMap<String, String>, trace: &str) -> Vec<Span> {
    let mut out = Vec::new();
    for (role, addr) in addrs {
        let Ok(r) = http
            .get(format!("http://{addr}/traces/{trace}"))
            .send()
            .await
        else {
            continue;
        };
        let doc: Value = r.json().await.unwrap_or_default();
        for s in doc["spans"].as_array().into_iter().flatten() {
            assert_eq!(s["trace_id"], trace, "{s}");
            out.push(Span {
                role: role.clone(),
                name: s["name"].as_str().unwrap_or("").to_owned(),
                id: s["span_id"].as_str().unwrap_or("").to_owned(),
                parent: s["parent_id"].as_str().map(str::to_owned),
            });
        }
    }
    out
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>() | 1))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upload_is_one_trace_from_the_edge_to_the_worker_and_a_malformed_header_is_not_passed_on()
 {
    let (_tmp, dir) = tokio::task::spawn_blocking(|| up_topology(TOPOLOGY))
        .await
        .expect("join");
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let addr = |name: &str, listener: &str| {
        role(&status, name)["addrs"][listener]
            .as_str()
            .unwrap_or_else(|| panic!("{name}'s {listener} address: {status:#}"))
            .to_owned()
    };
    let edge = addr("edge-1", "http");
    let traces: HashMap<String, String> = [
        ("edge-1", addr("edge-1", "admin")),
        ("lb-1", addr("lb-1", "admin")),
        ("api-1", addr("api-1", "http")),
        ("api-2", addr("api-2", "http")),
        ("worker-1", addr("worker-1", "metrics")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let admin = admin_client(&dir, &edge).await;

    // The client's sampled trace, through every tier.
    let (trace, client_span) = (random_hex(16), random_hex(8));
    let r = admin
        .put(format!("http://{edge}/users/12/photo"))
        .header("content-type", "image/png")
        .header("traceparent", format!("00-{trace}-{client_span}-01"))
        .body(testdata::image(Format::Png, 320, 240))
        .send()
        .await
        .expect("PUT photo");
    assert_eq!(
        r.status().as_u16(),
        202,
        "{}",
        r.text().await.unwrap_or_default()
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let found = spans(&http, &traces, &trace).await;
        if found.iter().any(|s| s.name == "worker.job") {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no worker span of trace {trace} within 60 s; spans so far: {found:#?}{}",
            common::logs(&dir, 20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let one = |name: &str| -> Span {
        let of: Vec<&Span> = found.iter().filter(|s| s.name == name).collect();
        assert_eq!(of.len(), 1, "one {name} span: {found:#?}");
        of[0].clone()
    };
    let (edge_span, lb_span, api_span) = (one("edge"), one("lb"), one("api"));
    let (publish, job) = (one("queue.publish"), one("worker.job"));
    assert_eq!(edge_span.role, "edge-1");
    assert_eq!(edge_span.parent.as_deref(), Some(client_span.as_str()));
    assert_eq!(lb_span.role, "lb-1");
    assert_eq!(lb_span.parent.as_ref(), Some(&edge_span.id));
    assert!(api_span.role.starts_with("api-"), "{api_span:?}");
    assert_eq!(api_span.parent.as_ref(), Some(&lb_span.id));
    // The relay that published the job runs in an API server or the worker.
    assert_eq!(publish.parent.as_ref(), Some(&api_span.id), "{found:#?}");
    assert_eq!(job.role, "worker-1");
    assert_eq!(job.parent.as_ref(), Some(&publish.id));
    let data_calls: Vec<&Span> = found
        .iter()
        .filter(|s| s.parent.as_ref() == Some(&api_span.id))
        .filter(|s| s.name.starts_with("db.") || s.name.starts_with("cache."))
        .collect();
    assert!(
        !data_calls.is_empty(),
        "the API server's data calls are children of its span: {found:#?}"
    );
    // The logs join the trace: `strata logs --trace` finds its lines in every role it crossed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = common::strata(&["logs", "--trace", &trace], &dir);
        assert!(
            out.status.success(),
            "{}",
            common::explain("strata logs --trace", &out, &dir)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let roles: Vec<&str> = ["edge-1", "lb-1", "api-", "worker-1"]
            .into_iter()
            .filter(|r| !text.lines().any(|l| l.starts_with(r)))
            .collect();
        if roles.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "strata logs --trace {trace} has no line of {roles:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let index: Value = http
        .get(format!("http://{}/traces?limit=5", traces["lb-1"]))
        .send()
        .await
        .expect("GET /traces")
        .json()
        .await
        .expect("JSON");
    assert_eq!(index["service"], "lb");
    assert!(
        index["recent"]
            .as_array()
            .is_some_and(|r| r.iter().any(|t| t["trace_id"] == trace.as_str())),
        "{index:#}"
    );
    let bad = http
        .get(format!("http://{}/traces/not-a-trace", traces["lb-1"]))
        .send()
        .await
        .expect("GET /traces/bad");
    assert_eq!(bad.status().as_u16(), 400);

    // A malformed traceparent (its flags are not hex) is dropped at the edge.
    let malformed = random_hex(16);
    let request_id = format!("malformed-{}", random_hex(4));
    let r = http
        .get(format!("http://{edge}/users/12"))
        .header(
            "traceparent",
            format!("00-{malformed}-{}-0x", random_hex(8)),
        )
        .header("x-request-id", &request_id)
        .header("cache-control", "no-cache")
        .send()
        .await
        .expect("GET user");
    assert_eq!(r.status().as_u16(), 200);
    // The balancer logs the request with the trace the edge started instead.
    let deadline = Instant::now() + Duration::from_secs(30);
    let lb_line = loop {
        let log = std::fs::read_to_string(dir.join("logs").join("lb-1.log")).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains(&request_id)) {
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the balancer logged no request {request_id}{}",
            common::logs(&dir, 20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let line: Value = serde_json::from_str(&lb_line).expect("a JSON log line");
    let started = line["trace_id"].as_str().expect("the line's trace_id");
    assert_eq!(started.len(), 32, "{line}");
    assert_ne!(started, malformed, "{line}");
    for entry in std::fs::read_dir(dir.join("logs")).expect("logs").flatten() {
        let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(
            !log.contains(&malformed),
            "{} mentions the malformed trace id",
            entry.path().display()
        );
    }
    assert!(
        spans(&http, &traces, started).await.is_empty(),
        "the new trace was not sampled (trace_sample = 0)"
    );
}
