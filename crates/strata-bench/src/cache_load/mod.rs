//! `strata cache-load`: the cache tier's benchmark tools.
//! - `run`: sends requests `[from, from + count)` of a fresh, seeded trace ([`trace`]) as
//!   `GET /users/{id}` to the API servers (request `i` to server `i mod n`, so each server's
//!   share of the trace is known): closed loop with `--concurrency` workers, or open loop at
//!   `--rate` requests/s (latency measured from each request's scheduled time).
//! - `simulate`: regenerates the same trace and replays it through ideal caches ([`sim`]).
//! - `stampede`: trials of many concurrent requests for a cold user, loads counted from the
//!   API servers' `/metrics` ([`stampede`]).
//!
//! Every command prints one JSON object on stdout; progress goes to stderr.

mod edge;
pub mod sim;
mod stampede;
pub mod trace;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use serde_json::json;

use trace::{Shape, Trace, Workload};

/// The cache benchmark's tools.
#[derive(Debug, Args)]
pub struct CacheLoadArgs {
    #[command(subcommand)]
    command: CacheLoadCommand,
}

#[derive(Debug, Subcommand)]
enum CacheLoadCommand {
    /// Send part of a trace to the API servers.
    Run(RunArgs),
    /// Replay a trace offline through Belady's MIN, perfect LFU and LRU.
    Simulate(SimulateArgs),
    /// Trials of concurrent requests for a new cold user each; loads per trial.
    Stampede(stampede::StampedeArgs),
    /// Replay a trace through the CDN edge's memory store, with its TinyLFU admission and with
    /// plain LRU, next to the ideal caches.
    Edge(edge::EdgeArgs),
}

/// The trace: which distribution, over how many users, from which seed.
#[derive(Debug, Clone, Args)]
pub(super) struct TraceArgs {
    #[arg(long, value_enum, default_value = "zipf")]
    workload: Shape,
    /// Zipf exponent s (P(rank r) ∝ 1/r^s).
    #[arg(long, default_value_t = 0.99)]
    exponent: f64,
    /// Moving hot set: requests between moves.
    #[arg(long, default_value_t = 1_000_000)]
    period: u64,
    /// Moving hot set: users it moves by at each move.
    #[arg(long, default_value_t = 50_000)]
    shift: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl TraceArgs {
    fn workload(&self, users: u32) -> Workload {
        Workload {
            shape: self.workload,
            users,
            exponent: self.exponent,
            period: self.period,
            shift: self.shift,
            seed: self.seed,
        }
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    trace: TraceArgs,
    /// User ids, one a line, in popularity-rank order (line r is the user of rank r); a line
    /// that begins with `/` is a path asked as it is (a photo's `/photos/{key}`), so a trace
    /// can mix profiles and other objects.
    #[arg(long)]
    ids: std::path::PathBuf,
    /// API servers, `HOST:PORT`, comma-separated; request i goes to server i mod n.
    #[arg(long, value_delimiter = ',', required = true)]
    targets: Vec<String>,
    /// First request of the trace to send.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Requests to send.
    #[arg(long)]
    count: u64,
    /// Closed loop: workers each with one request outstanding.
    #[arg(long, default_value_t = 48)]
    concurrency: usize,
    /// Open loop at this many requests/s instead (at most 10,000 in flight).
    #[arg(long)]
    rate: Option<u64>,
    /// The `Host` of every request: the one name clients give the service, whichever target
    /// (edge) they reach (default: the target's address).
    #[arg(long)]
    host: Option<String>,
    /// A request not answered within this many milliseconds counts as failed.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

#[derive(Debug, Args)]
struct SimulateArgs {
    #[command(flatten)]
    trace: TraceArgs,
    #[arg(long)]
    users: u32,
    /// Measured windows `FROM:COUNT`, comma-separated; the trace is replayed up to the last.
    #[arg(long, value_delimiter = ',', required = true)]
    windows: Vec<String>,
    /// Capacities (entries) of the ideal cache for the whole trace, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    capacity: Vec<usize>,
    /// Also replay each server's share (request i to server i mod n) with these capacities.
    #[arg(long, default_value_t = 0)]
    servers: u64,
    #[arg(long, value_delimiter = ',')]
    server_capacity: Vec<usize>,
}

pub async fn run(args: CacheLoadArgs) -> anyhow::Result<()> {
    match args.command {
        CacheLoadCommand::Run(a) => send(a).await,
        CacheLoadCommand::Simulate(a) => simulate(a),
        CacheLoadCommand::Stampede(a) => stampede::run(a).await,
        CacheLoadCommand::Edge(a) => edge::run(a).await,
    }
}

/// User ids, one a line.
fn read_ids(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the ids file {}", path.display()))?;
    let ids: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    anyhow::ensure!(!ids.is_empty(), "{} holds no ids", path.display());
    Ok(ids)
}

/// The path asked for a line of the ids file: `/users/{id}`, or the line itself when it is a
/// path.
fn path_of(line: &str) -> String {
    if line.starts_with('/') {
        line.to_string()
    } else {
        format!("/users/{line}")
    }
}

pub(crate) fn client(connections: usize) -> anyhow::Result<reqwest::Client> {
    client_with_timeout(connections, Duration::from_secs(10))
}

fn client_with_timeout(connections: usize, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(timeout)
        .build()
        .context("cannot build the HTTP client")
}

struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    latency: std::sync::Mutex<Histogram<u64>>,
}

impl Tally {
    fn record(&self, ok: bool, since: Instant) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        if let Ok(mut h) = self.latency.lock() {
            let _ = h.record(us.max(1));
        }
    }
    fn done(&self) -> u64 {
        self.ok.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

async fn get(client: &reqwest::Client, url: String, host: Option<&str>) -> bool {
    let mut request = client.get(url);
    if let Some(host) = host {
        request = request.header(reqwest::header::HOST, host);
    }
    match request.send().await {
        Ok(r) => {
            let code = r.status().as_u16();
            r.bytes().await.is_ok() && (code == 200 || code == 404)
        }
        Err(_) => false,
    }
}

async fn send(a: RunArgs) -> anyhow::Result<()> {
    let ids = read_ids(&a.ids)?;
    let users = u32::try_from(ids.len()).context("too many ids")?;
    let mut trace = Trace::new(a.trace.workload(users));
    trace.skip_to(a.from);
    let (from, count) = (a.from, a.count);
    let requests: Vec<u32> = (0..count).map(|_| trace.next_index()).collect();
    let requests = Arc::new(requests);
    let targets = Arc::new(a.targets.clone());
    let host: Option<Arc<str>> = a.host.as_deref().map(Arc::from);
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let paths: Arc<Vec<String>> = Arc::new(ids.iter().map(|line| path_of(line)).collect());
    let url = move |i: u64, index: u32| {
        let target = &targets[(i % targets.len() as u64) as usize];
        format!("http://{target}{}", paths[index as usize])
    };
    let tally = Arc::new(Tally {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latency: std::sync::Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
    });
    let started = Instant::now();
    let progress = {
        let tally = tally.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let done = tally.done();
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "    {done} of {count} requests ({:.0}%), {:.0} req/s",
                    100.0 * done as f64 / count.max(1) as f64,
                    done as f64 / secs
                );
            }
        })
    };
    let mut late = 0u64;
    match a.rate {
        None => {
            let client = client_with_timeout(a.concurrency, timeout)?;
            let workers = a.concurrency.max(1) as u64;
            let mut tasks = Vec::new();
            for w in 0..workers {
                let (client, requests, tally, url, host) = (
                    client.clone(),
                    requests.clone(),
                    tally.clone(),
                    url.clone(),
                    host.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let mut j = w;
                    while j < count {
                        let t = Instant::now();
                        let ok = get(
                            &client,
                            url(from + j, requests[j as usize]),
                            host.as_deref(),
                        )
                        .await;
                        tally.record(ok, t);
                        j += workers;
                    }
                }));
            }
            for t in tasks {
                t.await?;
            }
        }
        Some(rate) => {
            let client = client_with_timeout(256, timeout)?;
            let in_flight = Arc::new(tokio::sync::Semaphore::new(10_000));
            let mut tasks = Vec::with_capacity(count as usize);
            for j in 0..count {
                let at = started + Duration::from_secs_f64(j as f64 / rate.max(1) as f64);
                tokio::time::sleep_until(at.into()).await;
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    late += 1;
                    tally.record(false, at);
                    continue;
                };
                let (client, tally, host) = (client.clone(), tally.clone(), host.clone());
                let u = url(from + j, requests[j as usize]);
                tasks.push(tokio::spawn(async move {
                    let ok = get(&client, u, host.as_deref()).await;
                    tally.record(ok, at);
                    drop(permit);
                }));
            }
            for t in tasks {
                t.await?;
            }
        }
    }
    progress.abort();
    let took = started.elapsed().as_secs_f64();
    let h = tally
        .latency
        .lock()
        .map_err(|_| anyhow::anyhow!("latency histogram poisoned"))?
        .clone();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let out = json!({
        "from": from, "count": count, "ok": tally.ok.load(Ordering::Relaxed),
        "failed": tally.failed.load(Ordering::Relaxed), "not_sent_in_time": late,
        "seconds": took, "rps": count as f64 / took.max(1e-9),
        "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999), "max_ms": h.max() as f64 / 1000.0,
        "workload": a.trace.workload(users), "open_loop_rate": a.rate,
    });
    println!("{out}");
    Ok(())
}

fn window(s: &str) -> anyhow::Result<(u64, u64)> {
    let (from, count) = s
        .split_once(':')
        .with_context(|| format!("window {s:?}: expected FROM:COUNT"))?;
    let from: u64 = from.parse().with_context(|| format!("window {s:?}"))?;
    let count: u64 = count.parse().with_context(|| format!("window {s:?}"))?;
    Ok((from, from + count))
}

fn simulate(a: SimulateArgs) -> anyhow::Result<()> {
    let windows = a
        .windows
        .iter()
        .map(|s| window(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let end = windows.iter().map(|w| w.1).max().unwrap_or(0);
    let workload = a.trace.workload(a.users);
    let started = Instant::now();
    let trace = Trace::take(workload, end);
    eprintln!(
        "    drew {end} requests in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let positions: Vec<u64> = (0..end).collect();
    let mut whole = Vec::new();
    for &c in &a.capacity {
        whole.push(json!({"capacity": c, "windows": sim::replay(&trace, &positions, a.users, c, &windows)}));
        eprintln!(
            "    capacity {c}: done at {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let mut per_server = Vec::new();
    for s in 0..a.servers {
        let positions: Vec<u64> = (s..end).step_by(a.servers as usize).collect();
        let share: Vec<u32> = positions.iter().map(|&i| trace[i as usize]).collect();
        for &c in &a.server_capacity {
            per_server.push(json!({"server": s, "capacity": c,
                "windows": sim::replay(&share, &positions, a.users, c, &windows)}));
        }
        eprintln!(
            "    server {s}: done at {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let out =
        json!({"workload": workload, "windows": windows, "whole": whole, "per_server": per_server});
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::path_of;

    #[test]
    fn a_line_is_a_user_id_or_a_path() {
        assert_eq!(path_of("12"), "/users/12");
        assert_eq!(path_of("/photos/abc"), "/photos/abc");
    }
}
