//! No single balancer, with DNS in front: `[lb] count = 2` and `[dns]` run `lb-1` on
//! 127.0.0.1 and `lb-2` on 127.0.10.2, both on the public port, and `dns-1` answering
//! `www.strata.test.` with both. Clients resolve the name through the deployment's DNS
//! (honouring the TTL) and try the other address when one does not answer. `lb-1` is frozen
//! (SIGSTOP: a hung balancer, which the supervisor does not restart) under their load: not one
//! request fails, and DNS stops answering it within its health interval. The second fault
//! during the first: `dns-1` is killed with SIGKILL; restarted by its supervisor, its first
//! answers already leave the frozen balancer out. Thawed, `lb-1` is answered again. The same
//! with edges: DNS then hands out the edges, and a frozen edge leaves its answers.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Cleanup, addr_of, on_one_port, role, status_json, strata, up_in_background};
use nix::sys::signal::Signal;
use serde_json::Value;

/// Health checked every 300 ms, out after one failure (200 ms timeout), back after two
/// successes; answers live one second.
const TOPOLOGY: &str = "name = \"dns-balancers\"\n[lb]\ncount = 2\n[api]\ncount = 2\n\
                        [dns]\nttl_secs = 1\ninterval_ms = 300\ntimeout_ms = 200\nrise = 2\nfall = 1\n";
const NAME: &str = "www.strata.test.";
const INTERVAL: Duration = Duration::from_millis(300);
const CHECK_TIMEOUT: Duration = Duration::from_millis(200);
const LB1: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LB2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 10, 2));

/// What the deployment's DNS answers for the service name now, sorted (`None`: no answer).
async fn resolve(dns: SocketAddr) -> Option<Vec<IpAddr>> {
    common::resolve_from(LB1, dns, NAME).await
}

/// Polls the DNS until `done` holds for its answer; panics after `within`.
async fn until(
    dns: SocketAddr,
    within: Duration,
    what: &str,
    done: impl Fn(&[IpAddr]) -> bool,
) -> (Duration, Vec<IpAddr>) {
    let start = Instant::now();
    loop {
        if let Some(ips) = resolve(dns).await
            && done(&ips)
        {
            return (start.elapsed(), ips);
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Tallies of the clients.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    retried: AtomicU64,
}

/// A client loop: resolves through `dns` when its answer's TTL (1 s) is over — keeping the
/// last answer while DNS does not answer — and sends `GET /users/12` to one address after
/// another (starting at a different one each time) until one answers. Returns the requests
/// that failed on every address.
async fn client(
    k: usize,
    dns: SocketAddr,
    port: u16,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<String> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(1))
        .build()
        .expect("client");
    let (mut cached, mut expires) = (Vec::<IpAddr>::new(), Instant::now());
    let mut failed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut n = k;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if Instant::now() >= expires || cached.is_empty() {
            if let Some(ips) = resolve(dns).await.filter(|ips| !ips.is_empty()) {
                cached = ips;
            }
            expires = Instant::now() + Duration::from_secs(1);
        }
        n += 1;
        let mut errors = Vec::new();
        for i in 0..cached.len() {
            let ip = cached[(n + i) % cached.len()];
            match http
                .get(format!("http://{}/users/12", SocketAddr::new(ip, port)))
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => break,
                Ok(r) => errors.push(format!("{ip}: {}", r.status())),
                Err(e) => errors.push(format!("{ip}: {e}")),
            }
        }
        if errors.len() == cached.len() {
            failed.push(errors.join("; "));
        } else {
            tally.ok.fetch_add(1, Ordering::Relaxed);
            if !errors.is_empty() {
                tally.retried.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    failed
}

/// Waits until the clients have been answered `more` times again.
async fn answered(tally: &Tally, more: u64) {
    let target = tally.ok.load(Ordering::Relaxed) + more;
    let deadline = Instant::now() + Duration::from_secs(30);
    while tally.ok.load(Ordering::Relaxed) < target {
        assert!(Instant::now() < deadline, "the clients were not answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts four client loops on `port`, resolving through `dns`.
fn start_clients(
    dns: SocketAddr,
    port: u16,
) -> (
    Arc<AtomicBool>,
    Arc<Tally>,
    Vec<tokio::task::JoinHandle<Vec<String>>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients = (0..4)
        .map(|k| tokio::spawn(client(k, dns, port, stop.clone(), tally.clone())))
        .collect();
    (stop, tally, clients)
}

/// Stops the clients and checks that not one of their requests failed on every address.
async fn no_request_failed(
    stop: &AtomicBool,
    tally: &Tally,
    clients: Vec<tokio::task::JoinHandle<Vec<String>>>,
    through: &str,
) {
    stop.store(true, Ordering::Relaxed);
    let mut failed = Vec::new();
    for c in clients {
        failed.extend(c.await.expect("client"));
    }
    let (ok, retried) = (
        tally.ok.load(Ordering::Relaxed),
        tally.retried.load(Ordering::Relaxed),
    );
    eprintln!(
        "{ok} requests answered through the {through}, {retried} after trying another address"
    );
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        ok as usize + failed.len()
    );
}

/// The drill both tests run, under the clients of `tally`: `victim` (a role, and its address
/// in the answers) is frozen and DNS must stop answering it within its health interval; the
/// second fault during the first: `dns-1` is killed with SIGKILL, and its supervisor restarts
/// it on the same port, whose first answers already leave the victim out. Thawed, the victim
/// is answered again after `rise` good checks; `all` is every address DNS hands out.
async fn hang_one_and_kill_dns(
    dir: &std::path::Path,
    status: &Value,
    dns: SocketAddr,
    tally: &Tally,
    (victim, victim_ip): (&str, IpAddr),
    all: [IpAddr; 2],
) {
    let rest: Vec<IpAddr> = all.into_iter().filter(|ip| *ip != victim_ip).collect();
    let pid = role(status, victim)["pid"].as_u64().expect("pid") as u32;
    strata_engines::process::signal_all(pid, Signal::SIGSTOP);
    let _thaw = Thaw(pid);
    let bound = INTERVAL * 2 + CHECK_TIMEOUT + Duration::from_secs(2);
    let (gone_after, ips) = until(dns, bound, &format!("{victim} out of the answers"), |ips| {
        ips == rest
    })
    .await;
    eprintln!("DNS stopped answering the frozen {victim} after {gone_after:?}: {ips:?}");
    answered(tally, 40).await;

    let dns_pid = role(status, "dns-1")["pid"].as_u64().expect("pid") as u32;
    strata_engines::process::signal(dns_pid, Signal::SIGKILL);
    let (back_after, ips) = until(dns, Duration::from_secs(30), "DNS answers again", |ips| {
        !ips.is_empty()
    })
    .await;
    assert_eq!(
        ips, rest,
        "the restarted DNS server answers without {victim}"
    );
    eprintln!("DNS answered again {back_after:?} after SIGKILL: {ips:?}");
    let d = dir.to_path_buf();
    let restarted = tokio::task::spawn_blocking(move || status_json(&d))
        .await
        .expect("join");
    assert_ne!(
        role(&restarted, "dns-1")["pid"].as_u64(),
        Some(u64::from(dns_pid)),
        "{restarted:#}"
    );
    assert_eq!(addr_of(&restarted, "dns-1", "dns"), dns, "the same port");
    answered(tally, 40).await;

    strata_engines::process::signal_all(pid, Signal::SIGCONT);
    until(
        dns,
        Duration::from_secs(10),
        &format!("{victim} back in the answers"),
        |ips| ips == all,
    )
    .await;
    answered(tally, 20).await;
}

/// Thaws a frozen role when the test ends, whatever happens.
struct Thaw(u32);
impl Drop for Thaw {
    fn drop(&mut self) {
        strata_engines::process::signal_all(self.0, Signal::SIGCONT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_stops_answering_a_frozen_balancer_and_clients_that_retry_lose_nothing() {
    let (_tmp, dir) = up_in_background(TOPOLOGY.to_string()).await;
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let (lb1, lb2) = on_one_port(&status, "lb-1", "lb-2");
    assert_eq!((lb1.ip(), lb2.ip()), (LB1, LB2), "{status:#}");
    let dns = addr_of(&status, "dns-1", "dns");
    assert_eq!(role(&status, "dns-1")["healthy"], true, "{status:#}");

    // The layered path, as `strata status` shows it.
    let path = &status["path"];
    assert_eq!(path["dns"]["name"], "dns-1", "{status:#}");
    assert_eq!(path["dns"]["answers"][0]["name"], NAME, "{status:#}");
    let answered_lbs: Vec<&Value> = path["balancers"]
        .as_array()
        .expect("balancers")
        .iter()
        .filter(|b| b["answered"] == true)
        .collect();
    assert_eq!(answered_lbs.len(), 2, "both balancers answered: {status:#}");
    assert_eq!(path["apis"].as_array().map(Vec::len), Some(2), "{status:#}");
    let out = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || strata(&["status"], &dir)
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("path: dns-1 {dns} answers {NAME} with"))
            && text.contains(&format!(
                "→ balancers: lb-1 {lb1} (answered), lb-2 {lb2} (answered)"
            ))
            && text.contains("→ API pool: api-1 "),
        "{text}"
    );

    // Both balancers, by a real query.
    assert_eq!(resolve(dns).await, Some(vec![LB1, LB2]));

    let (stop, tally, clients) = start_clients(dns, lb1.port());
    answered(&tally, 40).await;

    // lb-1 hangs: frozen, it neither answers nor dies, so the supervisor leaves it be; then
    // the DNS server itself is killed while it hangs.
    hang_one_and_kill_dns(&dir, &status, dns, &tally, ("lb-1", LB1), [LB1, LB2]).await;

    no_request_failed(&stop, &tally, clients, "balancers").await;
}

/// With edges, DNS hands out the edges clients reach: `edge-1` on 127.0.0.1 and `edge-2` on
/// 127.0.9.2 at one port (and one HTTPS port), in front of `edge-shield`. `edge-2` is frozen
/// under DNS-resolving, retrying clients: DNS stops answering it within its interval and not
/// one request fails; the DNS server is killed during the freeze and comes back without it;
/// thawed, it is answered again. Last, the origin behind the edges hangs: every edge fails its
/// health check, DNS answers them all rather than none, and they answer from what they hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_hands_out_the_edges_and_drops_a_frozen_one_while_clients_lose_nothing() {
    const EDGE2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 9, 2));
    let topology = "name = \"dns-edges\"\n[lb]\n[api]\ncount = 2\n\
                    [edge]\ncount = 2\nshield = true\nmemory_mib = 16\ndisk_mib = 0\n\
                    tls_port = 0\ndev_cert = true\n\
                    [dns]\nttl_secs = 1\ninterval_ms = 300\ntimeout_ms = 200\nrise = 2\nfall = 1\n";
    let (_tmp, dir) = up_in_background(topology.to_string()).await;
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let (edge1, edge2) = on_one_port(&status, "edge-1", "edge-2");
    assert_eq!((edge1.ip(), edge2.ip()), (LB1, EDGE2), "{status:#}");
    let dns = addr_of(&status, "dns-1", "dns");

    // The path: DNS → the edges → the shield → the balancer → the API pool.
    let path = &status["path"];
    let answered_edges = path["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .filter(|e| e["answered"] == true)
        .count();
    assert_eq!(answered_edges, 2, "both edges answered: {status:#}");
    assert_eq!(path["shield"]["name"], "edge-shield", "{status:#}");
    let out = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || strata(&["status"], &dir)
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "→ edges: edge-1 {edge1} (answered), edge-2 {edge2} (answered)"
        )) && text.contains("→ shield: edge-shield ")
            && text.contains("→ balancers: lb-1 "),
        "{text}"
    );
    assert_eq!(resolve(dns).await, Some(vec![LB1, EDGE2]));
    // HTTPS the same way: edge-2 at its own address on edge-1's HTTPS port.
    let (tls1, tls2) = (
        addr_of(&status, "edge-1", "https"),
        addr_of(&status, "edge-2", "https"),
    );
    assert_eq!((tls1.ip(), tls2.ip()), (LB1, EDGE2), "{status:#}");
    assert_eq!(tls1.port(), tls2.port(), "one HTTPS port: {status:#}");
    let pem = std::fs::read(dir.join("edge-2-dev-cert.pem")).expect("edge-2's certificate");
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
        .resolve("localhost", tls2)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("TLS client");
    let r = https
        .get(format!("https://localhost:{}/users/12", tls2.port()))
        .send()
        .await
        .expect("GET over HTTPS from edge-2");
    assert_eq!(r.status().as_u16(), 200);

    let (stop, tally, clients) = start_clients(dns, edge1.port());
    answered(&tally, 40).await;

    // edge-2 hangs; then the DNS server is killed while it hangs.
    hang_one_and_kill_dns(&dir, &status, dns, &tally, ("edge-2", EDGE2), [LB1, EDGE2]).await;

    // The origin hangs too (the balancer behind the shield): every edge fails its health check
    // (it is passed on towards the API servers), and DNS, with nothing healthy, answers every
    // edge rather than none — the edges answer from what they hold, and no request fails.
    let log = dir.join("logs").join("dns-1.log");
    let downs = |edge: SocketAddr| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("balancer is down") && l.contains(&format!("local/{edge}")))
            .count()
    };
    let before = (downs(edge1), downs(edge2));
    let lb_pid = role(&status, "lb-1")["pid"].as_u64().expect("pid") as u32;
    strata_engines::process::signal_all(lb_pid, Signal::SIGSTOP);
    let _thaw_lb = Thaw(lb_pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while downs(edge1) == before.0 || downs(edge2) == before.1 {
        assert!(
            Instant::now() < deadline,
            "DNS did not find both edges down with the origin frozen{}",
            common::logs(&dir, 20)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        resolve(dns).await,
        Some(vec![LB1, EDGE2]),
        "nothing healthy: every edge answered"
    );
    answered(&tally, 40).await;
    strata_engines::process::signal_all(lb_pid, Signal::SIGCONT);

    no_request_failed(&stop, &tally, clients, "edges").await;
}
