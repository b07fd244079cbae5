//! `strata queue-load`: messages per second through one queue engine — the embedded SQLite
//! queue or RabbitMQ — with publishers and consumers at once (`bench/queue_throughput.py`
//! runs both engines with the same parameters).
//!
//! For each shape `PxC`: `--messages` messages of `--payload-bytes` (a photo job's JSON, about
//! 300 bytes) published by P publishers, each publish returning only once the engine has
//! stored it (the SQLite commit; RabbitMQ's publisher confirm), while C consumers each loop
//! receive → ack. Every publisher and every consumer has an engine of its own (its own
//! SQLite connection, its own AMQP connection), as separate processes would: API servers
//! relaying their outbox, workers taking jobs. Measured: the publish rate (messages / time to
//! the last confirmed publish), the end-to-end rate (messages / time from the first publish to
//! the last acknowledgement), and each message's latency from the start of its publish to its
//! receipt by a consumer (HDR histogram, microseconds) — which, when consumers fall behind
//! publishers, is mostly the time it waited in the queue; `--rate` paces the publishers below
//! capacity to measure the engine's own latency instead. Every shape is bounded by
//! `--max-secs`: what did not finish by then is reported as missing.
//!
//! With `--engine rabbitmq` and no `--amqp-url`, a private broker is started for the run from
//! the installed `rabbitmq-server` (strata-engines: its own node and loopback ports in the
//! working directory) and stopped at the end. Prints one JSON object; progress goes to stderr.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::json;
use strata_engines::Log;
use strata_engines::rabbitmq::{self, Node, Ports};
use strata_queue::rabbitmq::{RabbitConfig, RabbitQueue};
use strata_queue::sqlite::SqliteQueue;
use strata_queue::{Outgoing, Queue, QueueName, QueuePolicy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EngineKind {
    /// `SqliteQueue`: one WAL-mode SQLite file, `synchronous=FULL`.
    Embedded,
    /// `RabbitQueue`: quorum queues and publisher confirms.
    Rabbitmq,
}

/// Publishers × consumers, written `4x4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    publishers: u32,
    consumers: u32,
}

impl std::str::FromStr for Shape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a shape: write PUBLISHERSxCONSUMERS, e.g. 4x4");
        let (p, c) = s.split_once('x').ok_or_else(bad)?;
        let (publishers, consumers) =
            (p.parse().map_err(|_| bad())?, c.parse().map_err(|_| bad())?);
        if !(1..=64).contains(&publishers) || !(1..=64).contains(&consumers) {
            return Err(format!("{s}: 1 to 64 publishers and consumers"));
        }
        Ok(Self {
            publishers,
            consumers,
        })
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.publishers, self.consumers)
    }
}

/// Messages per second through a queue engine.
#[derive(Debug, Args)]
pub struct QueueLoadArgs {
    #[arg(long, value_enum)]
    engine: EngineKind,
    /// The runs, one after another: publishers x consumers.
    #[arg(long, value_delimiter = ',', default_value = "4x4,1x1")]
    shapes: Vec<Shape>,
    /// Messages per run.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    messages: u64,
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(120..=65_536))]
    payload_bytes: u64,
    /// The most one run may take; what is not acknowledged by then is reported missing.
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
    /// Deliveries the broker sends each consumer ahead (RabbitMQ's prefetch; a worker's
    /// concurrency).
    #[arg(long, default_value_t = 1)]
    prefetch: u16,
    /// Working directory: the SQLite file, the broker's node (a temporary one when absent).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A running broker to use instead of starting one.
    #[arg(long)]
    amqp_url: Option<String>,
    /// Publish at this many messages per second in all (shared by the publishers, each
    /// message at its scheduled time) instead of as fast as confirms return: below the
    /// engine's capacity the latency is the engine's, not the time spent waiting in a backlog.
    #[arg(long)]
    rate: Option<f64>,
}

pub async fn run(args: QueueLoadArgs) -> anyhow::Result<()> {
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("creating a working directory")?),
    };
    let dir = args
        .dir
        .clone()
        .or_else(|| temp.as_ref().map(|t| t.path().to_path_buf()))
        .context("a working directory")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut broker = None;
    let url = match (args.engine, &args.amqp_url) {
        (EngineKind::Rabbitmq, None) => {
            eprintln!("starting a RabbitMQ broker in {}", dir.display());
            let (node_dir, log) = (dir.join("rabbitmq"), Log::File(dir.join("rabbitmq.log")));
            let started = tokio::task::spawn_blocking(move || {
                let node = Node::new(node_dir, Ports::free()?);
                rabbitmq::start(node, &log, Duration::from_secs(120)).map_err(anyhow::Error::from)
            })
            .await??;
            let url = started.url();
            broker = Some(started);
            url
        }
        (_, url) => url.clone().unwrap_or_default(),
    };
    let mut runs = Vec::new();
    for (n, shape) in args.shapes.iter().enumerate() {
        let run = one_run(&args, *shape, &dir.join(format!("run-{n}")), &url, n).await;
        match run {
            Ok(r) => runs.push(r),
            Err(e) => {
                if let Some(b) = broker.take() {
                    tokio::task::spawn_blocking(move || b.stop(Duration::from_secs(10))).await?;
                }
                return Err(e.context(format!("run {shape}")));
            }
        }
    }
    if let Some(b) = broker.take() {
        tokio::task::spawn_blocking(move || b.stop(Duration::from_secs(10))).await?;
    }
    let report = json!({
        "engine": format!("{:?}", args.engine).to_lowercase(),
        "messages": args.messages,
        "payload_bytes": args.payload_bytes,
        "prefetch": args.prefetch,
        "rate": args.rate,
        "runs": runs,
    });
    println!("{report}");
    Ok(())
}

/// One engine of the run's own: a fresh SQLite directory, or a fresh namespace on the broker.
async fn engine(
    args: &QueueLoadArgs,
    dir: &std::path::Path,
    url: &str,
    n: usize,
    queue: &QueueName,
) -> anyhow::Result<Arc<dyn Queue>> {
    let policy = QueuePolicy {
        visibility_timeout: Duration::from_secs(60),
        ..QueuePolicy::default()
    };
    Ok(match args.engine {
        EngineKind::Embedded => Arc::new(SqliteQueue::open(dir, policy)?),
        EngineKind::Rabbitmq => {
            let mut config = RabbitConfig::new(url, policy);
            config.namespace = QueueName::parse(&format!("load-{n}"))?;
            config.prefetch = args.prefetch;
            let q = RabbitQueue::new(config);
            q.declare(queue).await?;
            Arc::new(q)
        }
    })
}

/// A photo job as the outbox relay publishes it, padded to `size` bytes, carrying the time
/// its publish started (microseconds since the run began) for the latency.
fn payload(seq: u64, sent_us: u64, size: usize) -> Vec<u8> {
    let job = json!({
        "sent_us": sent_us,
        "job": format!("{:032x}", u128::from(seq).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)),
        "user": 1_000_000 + seq,
        "photo": format!("{:064x}", u128::from(seq) * 0x1000_0000_0000_0001),
        "format": "jpeg",
        "sizes": ["64", "128", "512", "original"],
        "submitted_ms": 1_764_400_000_000u64 + seq,
        "pad": "",
    });
    let mut text = job.to_string();
    let short = size.saturating_sub(text.len());
    text = text.replacen(
        "\"pad\":\"\"",
        &format!("\"pad\":\"{}\"", "x".repeat(short)),
        1,
    );
    text.into_bytes()
}

fn sent_us(payload: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()?
        .get("sent_us")?
        .as_u64()
}

async fn one_run(
    args: &QueueLoadArgs,
    shape: Shape,
    dir: &std::path::Path,
    url: &str,
    n: usize,
) -> anyhow::Result<serde_json::Value> {
    let queue = QueueName::parse("jobs")?;
    let total = args.messages;
    let mut publishers = Vec::new();
    for _ in 0..shape.publishers {
        publishers.push(engine(args, dir, url, n, &queue).await?);
    }
    let mut consumers = Vec::new();
    for _ in 0..shape.consumers {
        consumers.push(engine(args, dir, url, n, &queue).await?);
    }
    eprintln!(
        "{:?} {shape}: {total} messages of {} bytes",
        args.engine, args.payload_bytes
    );
    let deadline = Duration::from_secs(args.max_secs);
    let started = Instant::now();
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Vec<AtomicBool>> = Arc::new((0..total).map(|_| AtomicBool::new(false)).collect());

    let mut publishing = Vec::new();
    for (p, q) in publishers.into_iter().enumerate() {
        let (queue, stop, size) = (queue.clone(), stop.clone(), args.payload_bytes as usize);
        let mine: Vec<u64> = (p as u64..total)
            .step_by(shape.publishers as usize)
            .collect();
        let rate = args.rate.filter(|r| *r > 0.0);
        publishing.push(tokio::spawn(async move {
            let (mut published, mut errors) = (0u64, 0u64);
            for seq in mine {
                if let Some(rate) = rate {
                    // Message `seq` of the whole run is due at seq / rate.
                    let due = Duration::from_secs_f64(seq as f64 / rate);
                    tokio::time::sleep_until((started + due).into()).await;
                }
                if stop.load(Ordering::Relaxed) || started.elapsed() > deadline {
                    break;
                }
                let body = payload(seq, started.elapsed().as_micros() as u64, size);
                match q.publish(&queue, Outgoing::new(body)).await {
                    Ok(_) => published += 1,
                    Err(_) => errors += 1,
                }
            }
            (published, errors, started.elapsed())
        }));
    }
    let mut consuming = Vec::new();
    for q in consumers {
        let (queue, stop, acked, seen) = (queue.clone(), stop.clone(), acked.clone(), seen.clone());
        consuming.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).expect("a histogram"));
            let (mut duplicates, mut redelivered, mut errors) = (0u64, 0u64, 0u64);
            let mut last_ack = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < deadline {
                let delivery = match q.receive(&queue, Duration::from_millis(200)).await {
                    Ok(Some(d)) => d,
                    Ok(None) => continue,
                    Err(_) => {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let received = started.elapsed().as_micros() as u64;
                let body = &delivery.message.payload;
                if let Some(sent) = sent_us(body) {
                    let _ = latency.record(received.saturating_sub(sent).max(1));
                }
                if delivery.message.attempt > 1 {
                    redelivered += 1;
                }
                let seq = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("user")?.as_u64())
                    .map(|u| u - 1_000_000);
                match q.ack(&delivery).await {
                    Ok(()) => {
                        if let Some(flag) = seq.and_then(|s| seen.get(s as usize))
                            && flag.swap(true, Ordering::Relaxed)
                        {
                            duplicates += 1;
                        }
                        last_ack = started.elapsed();
                        if acked.fetch_add(1, Ordering::Relaxed) + 1 >= total {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (latency, duplicates, redelivered, errors, last_ack)
        }));
    }
    // Progress every 2 s until the consumers are done.
    let progress = {
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(2)).await;
                eprintln!(
                    "  {:.0} s: {} acknowledged",
                    started.elapsed().as_secs_f64(),
                    acked.load(Ordering::Relaxed)
                );
            }
        })
    };
    let (mut published, mut publish_errors, mut publish_done) = (0u64, 0u64, Duration::ZERO);
    for p in publishing {
        let (ok, errors, done) = p.await?;
        published += ok;
        publish_errors += errors;
        publish_done = publish_done.max(done);
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (mut duplicates, mut redelivered, mut consume_errors, mut last_ack) =
        (0u64, 0u64, 0u64, Duration::ZERO);
    for c in consuming {
        let (h, d, r, e, last) = c.await?;
        latency.add(&h)?;
        duplicates += d;
        redelivered += r;
        consume_errors += e;
        last_ack = last_ack.max(last);
    }
    stop.store(true, Ordering::Relaxed);
    progress.abort();
    let acked = acked.load(Ordering::Relaxed);
    let unique = seen.iter().filter(|f| f.load(Ordering::Relaxed)).count() as u64;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let rate = |count: u64, d: Duration| count as f64 / d.as_secs_f64().max(1e-9);
    eprintln!(
        "  done: {:.0} published/s, {:.0} end-to-end/s, p50 {:.1} ms, p99 {:.1} ms",
        rate(published, publish_done),
        rate(unique, last_ack),
        ms(0.5),
        ms(0.99)
    );
    Ok(json!({
        "shape": shape.to_string(),
        "publishers": shape.publishers,
        "consumers": shape.consumers,
        "published": published,
        "publish_errors": publish_errors,
        "acked": acked,
        "unique_acked": unique,
        "missing": total - unique,
        "duplicates": duplicates,
        "redelivered": redelivered,
        "consume_errors": consume_errors,
        "publish_secs": publish_done.as_secs_f64(),
        "end_to_end_secs": last_ack.as_secs_f64(),
        "publish_per_sec": rate(published, publish_done),
        "end_to_end_per_sec": rate(unique, last_ack),
        "latency_ms": {
            "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999),
            "max": latency.max() as f64 / 1000.0, "count": latency.len(),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_has_its_size_and_carries_its_send_time() {
        let p = payload(42, 1234, 300);
        assert_eq!(p.len(), 300);
        assert_eq!(sent_us(&p), Some(1234));
        let v: serde_json::Value = serde_json::from_slice(&p).expect("JSON");
        assert_eq!(v["user"], 1_000_042);
    }

    #[test]
    fn shapes_read_as_publishers_by_consumers() {
        let s: Shape = "4x2".parse().expect("shape");
        assert_eq!((s.publishers, s.consumers), (4, 2));
        assert_eq!(s.to_string(), "4x2");
        for bad in ["4", "x4", "0x1", "4x65", "ax1"] {
            assert!(bad.parse::<Shape>().is_err(), "{bad}");
        }
    }
}
