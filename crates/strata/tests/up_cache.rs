//! `strata up` with shared cache servers, end to end: two Redis nodes run as roles on free
//! loopback ports, three API servers reading users through L1 over them. A write through one API
//! server is seen at once by reads through the others (their L1s are kept coherent by the Redis
//! bus); a Redis node killed with SIGKILL costs no failed read and is restarted; `down` stops
//! everything.

mod common;
use common::{Cleanup, admin_client, explain, role, status_json, strata, up_topology};

use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn profile(first: &str) -> Value {
    json!({"firstName": first, "lastName": "Cached",
        "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"}})
}

async fn metric(http: &reqwest::Client, api: &str, name: &str) -> f64 {
    common::metrics_sum(http, api, name, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_stay_coherent_across_api_servers_and_survive_a_redis_kill() {
    let (_tmp, dir) = up_topology(
        "[lb]\n[api]\ncount = 3\n[cache]\nengine = \"redis\"\nnodes = 2\nmax_mib = 64\n",
    );
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    for name in ["cache-1", "cache-2"] {
        assert!(
            role(&status, name)["addrs"]["redis"].is_string(),
            "{name} announces its Redis address: {status:#}"
        );
    }
    let apis: Vec<String> = (1..=3)
        .map(|i| {
            role(&status, &format!("api-{i}"))["addrs"]["http"]
                .as_str()
                .expect("api address")
                .to_string()
        })
        .collect();
    let http = admin_client(&dir, &apis[0]).await;

    // Coherence: write through one server, read through the others at once.
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
    for round in 1..=30 {
        // Warm every server's L1 with the current version.
        for api in &apis {
            let r = http
                .get(format!("http://{api}{location}"))
                .send()
                .await
                .expect("GET");
            assert_eq!(r.status(), 200);
        }
        let writer = &apis[round % 3];
        let name = format!("v{round}");
        let put = http
            .put(format!("http://{writer}{location}"))
            .json(&profile(&name))
            .send()
            .await
            .expect("PUT");
        assert_eq!(put.status(), 200);
        for api in &apis {
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
    assert_eq!(
        stale, 0,
        "stale reads out of {reads} after acknowledged writes"
    );
    let l1_hits = metric(
        &http,
        &apis[1],
        "strata_cache_requests_total{level=\"l1\",result=\"hit\"}",
    )
    .await;
    assert!(l1_hits > 0.0, "reads were served from L1 ({l1_hits} hits)");
    assert_eq!(
        metric(&http, &apis[1], "strata_cache_l1_coherent").await,
        1.0,
        "the server holds an L1 lease"
    );

    // Kill one Redis (the server process under the cache-1 role) under a steady read load.
    let cache_role_pid = role(&status, "cache-1")["pid"].as_u64().expect("pid");
    let redis_pid = std::fs::read_to_string(format!(
        "/proc/{cache_role_pid}/task/{cache_role_pid}/children"
    ))
    .expect("children of the cache role")
    .split_whitespace()
    .next()
    .and_then(|p| p.parse::<i32>().ok())
    .expect("the redis-server pid");
    let load = {
        let (http, apis, location) = (http.clone(), apis.clone(), location.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let until = Instant::now() + Duration::from_secs(4);
            let mut i = 0usize;
            while Instant::now() < until {
                let api = &apis[i % 3];
                // A spread of users: the one written above and absent ids (cached 404s).
                let path = if i.is_multiple_of(2) {
                    location.clone()
                } else {
                    format!("/users/{}", 1000 + i % 50)
                };
                match http.get(format!("http://{api}{path}")).send().await {
                    Ok(r) if r.status() == 200 || r.status() == 404 => ok += 1,
                    Ok(r) => failed.push(format!("{path}: {}", r.status())),
                    Err(e) => failed.push(format!("{path}: {e}")),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    nix_kill(redis_pid);
    let (ok, failed) = load.await.expect("load");
    assert!(
        failed.is_empty(),
        "{} failed reads: {failed:?}",
        failed.len()
    );
    assert!(ok > 200, "the load ran ({ok} reads)");

    // The role notices, exits, and the supervisor starts it again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status_json(&dir);
        let r = role(&s, "cache-1");
        if r["restarts"].as_u64().unwrap_or(0) >= 1 && r["state"] == "ready" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cache-1 was not restarted: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // It comes back where the API servers look for it.
    assert_eq!(
        role(&status_json(&dir), "cache-1")["addrs"]["redis"],
        role(&status, "cache-1")["addrs"]["redis"],
        "a restarted cache node keeps its port"
    );

    let cache_addrs: Vec<String> = ["cache-1", "cache-2"]
        .iter()
        .map(|n| {
            role(&status_json(&dir), n)["addrs"]["redis"]
                .as_str()
                .expect("addr")
                .to_string()
        })
        .collect();
    let out = strata(&["down"], &dir);
    assert!(
        out.status.success(),
        "{}",
        explain("strata down", &out, &dir)
    );
    for addr in cache_addrs {
        assert!(
            std::net::TcpStream::connect(&addr).is_err(),
            "the Redis at {addr} stopped with the deployment"
        );
    }
}

fn nix_kill(pid: i32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -9 {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memcached_topology_serves_reads_through_its_shared_cache() {
    let (_tmp, dir) =
        up_topology("[api]\ncount = 2\n[cache]\nengine = \"memcached\"\nmax_mib = 16\n");
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let memcached = role(&status, "cache-1")["addrs"]["memcached"]
        .as_str()
        .expect("cache-1 announces its Memcached address")
        .to_string();
    let apis: Vec<String> = (1..=2)
        .map(|i| {
            role(&status, &format!("api-{i}"))["addrs"]["http"]
                .as_str()
                .expect("api address")
                .to_string()
        })
        .collect();
    let http = reqwest::Client::new();
    // The first read loads user 12 and stores it in Memcached; the other server finds it
    // there (an L2 hit) instead of reading the database.
    for api in &apis {
        let r = http
            .get(format!("http://{api}/users/12"))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200);
    }
    let l2_hits = metric(
        &http,
        &apis[1],
        "strata_cache_requests_total{level=\"l2\",result=\"hit\"}",
    )
    .await
        + metric(
            &http,
            &apis[0],
            "strata_cache_requests_total{level=\"l2\",result=\"hit\"}",
        )
        .await;
    assert!(
        l2_hits >= 1.0,
        "the second server read user 12 from Memcached"
    );
    // And the value is really in Memcached, under its key.
    use std::io::{Read as _, Write as _};
    let mut raw = std::net::TcpStream::connect(&memcached).expect("connect memcached");
    raw.write_all(b"get user:12\r\n").expect("write");
    let mut answer = vec![0u8; 4096];
    let n = raw.read(&mut answer).expect("read");
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(
        text.starts_with("VALUE user:12") && text.contains("John"),
        "{text}"
    );
    let out = strata(&["down"], &dir);
    assert!(
        out.status.success(),
        "{}",
        explain("strata down", &out, &dir)
    );
}
