//! Alertmanager in a topology: `[observe] alertmanager = true` runs `alertmanager-1` before
//! `prometheus-1`, which sends it the alerts that fire. The always-firing `StrataWatchdog`
//! proves the whole path: it reaches Alertmanager, and Alertmanager posts it to the topology's
//! webhook (a listener of this test). Then Alertmanager is killed with SIGKILL, and while it is
//! down Prometheus is killed too: both come back (on their ports) and the watchdog is in
//! Alertmanager again.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cleanup, engine_child, role, status_json, up_topology};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A webhook receiver: every request body it is sent, answered 200.
async fn webhook() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Read the head, then the body its Content-Length announces (bounded).
                let body = loop {
                    let Ok(n) = conn.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 || buf.len() > (1 << 20) {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break body.to_string();
                    }
                };
                seen.lock().expect("lock").push(body);
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (format!("http://{addr}/hook"), bodies)
}

/// The names of the alerts Alertmanager holds; none while it does not answer.
async fn alerts_in(http: &reqwest::Client, addr: &str) -> Vec<String> {
    let Ok(answer) = http
        .get(format!("http://{addr}/api/v2/alerts"))
        .send()
        .await
    else {
        return Vec::new();
    };
    let doc: Value = answer.json().await.unwrap_or_default();
    doc.as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
        .collect()
}

fn kill9(pid: i32, what: &str) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap_or_else(|e| panic!("kill -9 {what}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_alertmanager_and_its_webhook_and_come_back_after_both_are_killed() {
    let (hook, bodies) = webhook().await;
    let topology = format!(
        "name = \"alerted\"\n[api]\ncount = 1\n[observe]\nprometheus = true\n\
         scrape_interval_secs = 1\nalertmanager = true\nalert_webhook = \"{hook}\"\n"
    );
    let (_tmp, dir) = tokio::task::spawn_blocking(move || up_topology(&topology))
        .await
        .expect("join");
    let _cleanup = Cleanup(&dir);
    let d = dir.clone();
    let status = tokio::task::spawn_blocking(move || status_json(&d))
        .await
        .expect("join");
    let am = role(&status, "alertmanager-1");
    assert_eq!(am["healthy"], true, "{status:#}");
    let am_addr = am["addrs"]["http"].as_str().expect("address").to_owned();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");

    // Prometheus → Alertmanager → the webhook (after Alertmanager's group wait, 10 s).
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let names = alerts_in(&http, &am_addr).await;
        let posted = bodies.lock().expect("lock").iter().any(|b| {
            serde_json::from_str::<Value>(b).is_ok_and(|doc| {
                doc["status"] == "firing"
                    && doc["alerts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|a| a["labels"]["alertname"] == "StrataWatchdog")
            })
        });
        if names.iter().any(|n| n == "StrataWatchdog") && posted {
            eprintln!(
                "the watchdog reached the webhook in {:?}",
                started.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watchdog did not get through: Alertmanager holds {names:?}, the webhook got {:?}",
            bodies.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Alertmanager killed, and Prometheus killed while it is down.
    let am_role_pid = am["pid"].as_u64().expect("pid");
    let prom_role_pid = role(&status, "prometheus-1")["pid"].as_u64().expect("pid");
    kill9(engine_child(am_role_pid, "prometheus-aler"), "alertmanager");
    kill9(engine_child(prom_role_pid, "prometheus"), "prometheus");
    let killed = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let d = dir.clone();
        let now = tokio::task::spawn_blocking(move || status_json(&d))
            .await
            .expect("join");
        let restarted = |name: &str, old: u64| {
            let r = role(&now, name);
            r["healthy"] == true && r["pid"].as_u64().is_some_and(|p| p != old)
        };
        let back =
            restarted("alertmanager-1", am_role_pid) && restarted("prometheus-1", prom_role_pid);
        let addr = role(&now, "alertmanager-1")["addrs"]["http"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if back
            && alerts_in(&http, &addr)
                .await
                .iter()
                .any(|n| n == "StrataWatchdog")
        {
            assert_eq!(
                addr, am_addr,
                "restarted on its port, where Prometheus sends"
            );
            eprintln!(
                "the watchdog was back {:?} after the kills",
                killed.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watchdog is not back in Alertmanager: {now:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
