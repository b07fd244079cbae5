//! The Prometheus role's engine end to end: the installed `prometheus` started as the role
//! starts it, on a free loopback port in a temporary directory, scraping a small `/metrics`
//! server this test runs, found through the targets file — and following that file when the
//! target moves to another port. Every wait has a deadline; nothing uses port 9090.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strata_engines::Log;
use strata_observe::node::{self, PrometheusArgs};
use strata_observe::scrape::{self, Target};
use strata_observe::slo::{Objectives, rules};

/// A `/metrics` page on a free loopback port, served from a thread until dropped.
struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl MetricsServer {
    fn start(widgets: u32) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = format!(
                    "# HELP strata_test_widgets_total Widgets made.\n\
                     # TYPE strata_test_widgets_total counter\n\
                     strata_test_widgets_total{{colour=\"blue\"}} {widgets}\n"
                );
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes());
            }
        });
        Self { addr, stop }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Asks `check` every 200 ms until it gives a value or `within` passes; the failure shows the
/// last thing it saw.
fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!(
                    "{what}: not within {} s; last seen: {last}",
                    within.as_secs()
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET path` on Prometheus's API, as JSON.
fn api(prometheus: SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    let (status, body) = strata_observe::daemon::http_get(prometheus, path)
        .ok_or_else(|| format!("no answer to {path}"))?;
    if status != 200 {
        return Err(format!("{path}: {status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{path}: {e}: {body}"))
}

/// The active targets' scrape addresses and health, with their `role` and `kind` labels.
fn targets(prometheus: SocketAddr) -> Result<Vec<(String, String, String, String)>, String> {
    let v = api(prometheus, "/api/v1/targets?state=active")?;
    let list = v["data"]["activeTargets"]
        .as_array()
        .ok_or_else(|| format!("no activeTargets in {v}"))?;
    Ok(list
        .iter()
        .map(|t| {
            let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&t["labels"]["instance"]),
                s(&t["health"]),
                s(&t["labels"]["role"]),
                s(&t["labels"]["kind"]),
            )
        })
        .collect())
}

/// The value of `query` for the series whose instance is `addr`.
fn value_at(prometheus: SocketAddr, query: &str, addr: SocketAddr) -> Result<String, String> {
    let v = api(
        prometheus,
        &format!("/api/v1/query?query={}", encode(query)),
    )?;
    let results = v["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("no result in {v}"))?;
    results
        .iter()
        .find(|r| r["metric"]["instance"] == addr.to_string())
        .and_then(|r| r["value"][1].as_str().map(str::to_string))
        .ok_or_else(|| format!("no series for {addr} in {v}"))
}

#[test]
fn prometheus_scrapes_the_targets_file_and_follows_a_target_that_moves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = MetricsServer::start(7);
    let mut args = PrometheusArgs::new(dir.path().join("prometheus"));
    args.scrape_interval_secs = 1;
    args.retention = "1d".into();
    args.retention_size = "64MB".into();
    let target = |addr| Target {
        role: "api-1".into(),
        kind: "api".into(),
        addr,
    };
    std::fs::create_dir_all(args.rules_path()).expect("rules dir");
    std::fs::write(
        args.rules_path().join("slo.yml"),
        rules::rule_file(&Objectives::defaults()),
    )
    .expect("rules");
    scrape::write_targets(&args.targets_path(), &[target(first.addr)]).expect("targets");

    let log = Log::File(dir.path().join("prometheus.log"));
    let (server, addr) =
        node::start(&args, &log, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    assert!(addr.ip().is_loopback() && addr.port() != 0 && addr.port() != 9090);
    assert!(node::ready(addr));
    let within = Duration::from_secs(30);
    let fail = |what: &str| format!("{what}; log: {}", log.tail(20));

    // The target from the file is scraped, with its role and kind.
    wait_for(&fail("the first target up"), within, || {
        let t = targets(addr)?;
        t.iter()
            .any(|(i, h, r, k)| {
                *i == first.addr.to_string() && h == "up" && r == "api-1" && k == "api"
            })
            .then_some(())
            .ok_or(format!("{t:?}"))
    });
    wait_for(
        &fail("up = 1 for the first target"),
        within,
        || match value_at(addr, "up", first.addr)?.as_str() {
            "1" => Ok(()),
            other => Err(other.to_string()),
        },
    );
    wait_for(
        &fail("a series from the first page"),
        within,
        || match value_at(addr, "strata_test_widgets_total", first.addr)?.as_str() {
            "7" => Ok(()),
            other => Err(other.to_string()),
        },
    );
    // The SLO rules were loaded from the rules directory.
    let loaded = api(addr, "/api/v1/rules").unwrap_or_else(|e| panic!("{e}"));
    let mut groups: Vec<&str> = loaded["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["name"].as_str())
        .collect();
    groups.sort_unstable();
    assert_eq!(groups, ["slo-api", "slo-edge", "slo-lb", "slo-worker"]);

    // The role moves: the file is rewritten, and Prometheus follows without a restart.
    let second = MetricsServer::start(9);
    scrape::write_targets(&args.targets_path(), &[target(second.addr)]).expect("rewrite");
    wait_for(&fail("only the moved target"), within, || {
        let t = targets(addr)?;
        match t.as_slice() {
            [(i, h, _, _)] if *i == second.addr.to_string() && h == "up" => Ok(()),
            _ => Err(format!("{t:?}")),
        }
    });
    wait_for(
        &fail("a series from the moved target"),
        within,
        || match value_at(addr, "strata_test_widgets_total", second.addr)?.as_str() {
            "9" => Ok(()),
            other => Err(other.to_string()),
        },
    );

    // SIGTERM stops it within the role's grace, cleanly.
    let started = Instant::now();
    let status = server.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        fail(&format!("stopped with {status:?}"))
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!node::ready(addr), "still answering after it stopped");
}

/// The role's Prometheus (the process whose command line names `dir`) once it is ready: its
/// pid and address.
fn prometheus_in(dir: &std::path::Path) -> Result<(i32, SocketAddr), String> {
    let needle = dir.to_string_lossy().into_owned();
    let found = std::fs::read_dir("/proc")
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = String::from_utf8_lossy(&cmdline)
                .split('\0')
                .map(str::to_string)
                .collect();
            if !args.iter().any(|a| a.contains(&needle)) {
                return None;
            }
            let addr = args
                .iter()
                .find_map(|a| a.strip_prefix("--web.listen-address="))?
                .parse()
                .ok()?;
            Some((pid, addr))
        });
    match found {
        Some((pid, addr)) if node::ready(addr) => Ok((pid, addr)),
        Some((pid, addr)) => Err(format!("{pid} on {addr} not ready")),
        None => Err(format!("no prometheus for {needle} yet")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_exits_with_an_error_when_prometheus_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = PrometheusArgs::new(dir.path().join("prometheus"));
    let data = args.data_path();
    let role = tokio::spawn(node::run(args));
    let (pid, addr) = tokio::task::spawn_blocking(move || {
        wait_for(
            "the role's Prometheus ready",
            Duration::from_secs(60),
            || prometheus_in(&data),
        )
    })
    .await
    .expect("wait");
    assert_ne!(addr.port(), 9090);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let outcome = tokio::time::timeout(Duration::from_secs(10), role)
        .await
        .expect("the role noticed within 10 s")
        .expect("the role's task");
    let e = outcome.expect_err("a role whose engine died exits with an error");
    assert!(e.to_string().contains("Prometheus exited"), "{e}");
}
