//! Prometheus in a topology: `[observe] prometheus = true` runs `prometheus-1`, which scrapes
//! every role through the targets file the supervisor keeps, and loads the SLO alerting rules.
//! An API server killed with SIGKILL comes back on a new port, and Prometheus, killed too
//! while the API server is down, comes back and finds it there.
//! `strata status --prometheus-targets` prints the same targets for a Prometheus of one's own.

mod common;

use std::time::{Duration, Instant};

use common::{Cleanup, engine_child, role, status_json, strata, up_topology};
use serde_json::Value;

const TOPOLOGY: &str = "name = \"observed\"\n[lb]\n[api]\ncount = 2\n[workers]\ncount = 1\n\
    [observe]\nprometheus = true\nscrape_interval_secs = 1\n";

async fn prometheus_json(http: &reqwest::Client, addr: &str, path: &str) -> Value {
    http.get(format!("http://{addr}{path}"))
        .send()
        .await
        .expect("Prometheus answers")
        .json()
        .await
        .expect("JSON")
}

/// The scrape pools' active targets: (role label, scrape URL, health); none while Prometheus
/// does not answer (it is restarting).
async fn targets(http: &reqwest::Client, addr: &str) -> Vec<(String, String, String)> {
    let Ok(answer) = http
        .get(format!("http://{addr}/api/v1/targets"))
        .send()
        .await
    else {
        return Vec::new();
    };
    let doc: Value = answer.json().await.unwrap_or_default();
    doc["data"]["activeTargets"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    (
                        t["labels"]["role"].as_str().unwrap_or("").to_owned(),
                        t["scrapeUrl"].as_str().unwrap_or("").to_owned(),
                        t["health"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_role_loads_the_slo_rules_and_follows_a_restarted_role() {
    let (_tmp, dir) = tokio::task::spawn_blocking(|| up_topology(TOPOLOGY))
        .await
        .expect("join");
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    assert_eq!(role(&status, "prometheus-1")["healthy"], true, "{status:#}");
    let prom = role(&status, "prometheus-1")["addrs"]["http"]
        .as_str()
        .expect("prometheus-1's address")
        .to_owned();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");

    let expected = ["api-1", "api-2", "lb-1", "worker-1", "prometheus-1"];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ts = targets(&http, &prom).await;
        let up: Vec<&str> = ts
            .iter()
            .filter(|(_, _, h)| h == "up")
            .map(|(r, _, _)| r.as_str())
            .collect();
        if expected.iter().all(|e| up.contains(e)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every role is scraped: {ts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rules = prometheus_json(&http, &prom, "/api/v1/rules").await;
    let alerts: Vec<String> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["type"] == "alerting")
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    assert!(!alerts.is_empty(), "the SLO alerts are loaded: {rules:#}");

    // For a Prometheus of one's own: the same targets, as a file_sd file.
    let d = dir.clone();
    let out = tokio::task::spawn_blocking(move || strata(&["status", "--prometheus-targets"], &d))
        .await
        .expect("join");
    assert!(out.status.success());
    let file: Value = serde_json::from_slice(&out.stdout).expect("a targets file");
    let listed: Vec<&str> = file
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["labels"]["role"].as_str())
        .collect();
    for e in expected {
        assert!(listed.contains(&e), "{e} in {file:#}");
    }

    // api-2 killed: back on a new port, and scraped there.
    let old = role(&status, "api-2")["addrs"]["http"]
        .as_str()
        .expect("api-2")
        .to_owned();
    let pid = role(&status, "api-2")["pid"].as_u64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 api-2");
    // The second fault during the first: Prometheus itself (the process under its role) dies
    // while api-2 is down. Restarted by its role's supervisor, it must still find api-2 where
    // it comes back, from the targets file.
    let role_pid = role(&status, "prometheus-1")["pid"].as_u64().expect("pid");
    let engine = engine_child(role_pid, "prometheus");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(engine),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 prometheus");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let d = dir.clone();
        let now = tokio::task::spawn_blocking(move || status_json(&d))
            .await
            .expect("join");
        let prom = role(&now, "prometheus-1")["addrs"]["http"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let r = role(&now, "api-2");
        let addr = r["addrs"]["http"].as_str().unwrap_or("").to_owned();
        let back = r["pid"].as_u64().is_some_and(|p| p as i32 != pid)
            && r["healthy"] == true
            && role(&now, "prometheus-1")["pid"]
                .as_u64()
                .is_some_and(|p| p != role_pid);
        if back {
            let ts = targets(&http, &prom).await;
            let scraped_at_new = ts
                .iter()
                .any(|(role, url, h)| role == "api-2" && url.contains(&addr) && h == "up");
            if scraped_at_new {
                assert!(
                    addr == old
                        || !ts
                            .iter()
                            .any(|(role, url, _)| role == "api-2" && url.contains(&old)),
                    "the old address is gone: {ts:?}"
                );
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not follow api-2 to {addr}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
