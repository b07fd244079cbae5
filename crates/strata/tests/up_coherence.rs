//! The default topology of `strata up` (three API servers on one embedded SQLite database, no
//! Redis), end to end: a write acknowledged through one API server is read through each of the
//! others at once, without a read-your-writes token — their in-process caches follow the
//! database's change log. With `[cache] coherence = "ttl"` they do not, which is what the
//! switch is for (and shows this test can fail).

mod common;
use common::{Cleanup, admin_client, role, status_json, up_topology};

use serde_json::{Value, json};

/// The default preset, as `strata up` without `-f` runs it.
const DEFAULT_TOPOLOGY: &str = include_str!("../../../deploy/03-load-balancer.toml");

fn profile(first: &str) -> Value {
    json!({"firstName": first, "lastName": "Coherent",
        "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"}})
}

async fn metric(http: &reqwest::Client, api: &str, name: &str) -> f64 {
    common::metrics_sum(http, api, name, None).await
}

/// Writes through one API server, then reads through each of the others at once, `rounds`
/// times (every server's L1 warmed with the current version first): the stale reads, of how
/// many.
async fn stale_reads(topology: &str, rounds: usize) -> (usize, usize, f64) {
    let (_tmp, dir) = up_topology(topology);
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let apis: Vec<String> = (1..=3)
        .map(|i| {
            role(&status, &format!("api-{i}"))["addrs"]["http"]
                .as_str()
                .expect("api address")
                .to_string()
        })
        .collect();
    let http = admin_client(&dir, &apis[0]).await;
    let created = http
        .post(format!("http://{}/users", apis[0]))
        .json(&profile("v0"))
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let (mut stale, mut reads) = (0, 0);
    for round in 1..=rounds {
        for api in &apis {
            let r = http
                .get(format!("http://{api}{location}"))
                .send()
                .await
                .expect("GET");
            assert_eq!(r.status(), 200);
        }
        let writer = round % 3;
        let name = format!("v{round}");
        let put = http
            .put(format!("http://{}{location}", apis[writer]))
            .json(&profile(&name))
            .send()
            .await
            .expect("PUT");
        assert_eq!(put.status(), 200);
        for (i, api) in apis.iter().enumerate() {
            if i == writer {
                continue;
            }
            // A plain GET: no Strata-Read-After, no cookie (this client keeps none).
            let body: Value = http
                .get(format!("http://{api}{location}"))
                .send()
                .await
                .expect("GET")
                .json()
                .await
                .expect("json");
            reads += 1;
            if body["firstName"] != name.as_str() {
                stale += 1;
            }
        }
    }
    let mut l1_hits = 0.0;
    for api in &apis {
        l1_hits += metric(
            &http,
            api,
            "strata_cache_requests_total{level=\"l1\",result=\"hit\"}",
        )
        .await;
    }
    (stale, reads, l1_hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_topology_serves_no_stale_read_after_a_write_through_another_server() {
    let (stale, reads, l1_hits) = stale_reads(DEFAULT_TOPOLOGY, 200).await;
    assert_eq!(reads, 400);
    assert_eq!(
        stale, 0,
        "stale reads out of {reads} right after acknowledged writes through another API server"
    );
    assert!(
        l1_hits >= 400.0,
        "the warm-up reads were served from L1 ({l1_hits} hits), so the cache was in play"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_coherence_ttl_the_other_servers_serve_their_cached_copy() {
    let topology = format!("{DEFAULT_TOPOLOGY}\n[cache]\ncoherence = \"ttl\"\n");
    let (stale, reads, _) = stale_reads(&topology, 20).await;
    assert!(
        stale > 0,
        "with the change log off, some of {reads} reads come from a stale L1"
    );
}
