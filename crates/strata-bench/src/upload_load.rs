//! `strata upload-load`: photo uploads at a fixed rate (open loop) into a running deployment,
//! and an account of every one of them — the queue tier's burst and fault benchmarks
//! (`bench/queue_burst.py`, `bench/queue_faults.py`).
//!
//! 1. Creates one user per upload through the API (so each upload is its user's only photo,
//!    and its job must end `done`, never `superseded`).
//! 2. Sends the uploads open loop: upload *k* leaves at *k / rate* whatever the answers do
//!    (at most [`MAX_IN_FLIGHT`] at once; past that an upload is counted as not sent). Each
//!    photo is drawn afresh from `--photos` (or made on the spot); every `--poison-every`-th is
//!    a poison file that passes the upload checks but cannot be decoded. The time to each
//!    answer is measured from when the upload was due, so a stall is not hidden
//!    (coordinated omission), into an HDR histogram.
//! 3. Samples the photos queue (`strata_queue_messages` of an API server's `/metrics`) every
//!    second, through the load and the drain.
//! 4. Drains: polls every accepted job until it is settled or `--drain-secs` have passed.
//! 5. Accounts: every accepted upload must be `done` with its photo served (a 307 to its
//!    content address), every poison `failed`, and the dead-letter count equal to the poisons.
//!    Anything else is listed as lost or unexpected. Prints a summary; `--out` keeps the JSON.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use strata_photos::testdata;
use strata_photos::upload::Format;
use tokio::sync::Mutex;

use crate::chaos::load::Session;

/// Most uploads in flight at once.
const MAX_IN_FLIGHT: usize = 1024;
/// Requests at once while creating users, polling jobs and checking photos.
const FAN_OUT: usize = 32;

/// `strata upload-load …`.
#[derive(Debug, Clone, clap::Args)]
pub struct UploadLoadArgs {
    /// Deployment directory (its balancer, API servers and account store are found there).
    #[arg(long, env = "STRATA_DIR", default_value = ".strata")]
    pub dir: PathBuf,
    /// Uploads per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// How many uploads (one user each).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub count: u64,
    /// Every Nth upload is a poison file (0: none).
    #[arg(long, default_value_t = 0)]
    pub poison_every: u64,
    /// Photos to upload (`*.jpg`, `*.png`, `*.webp`), each drawn at random per upload; without
    /// it, JPEGs of `--sizes` are made on the spot.
    #[arg(long)]
    pub photos: Option<PathBuf>,
    /// The sizes of the photos made on the spot, `WxH,WxH,…` (each at most 4096 a side).
    #[arg(long, default_value = "320x240,800x600,1280x960,1600x1200")]
    pub sizes: String,
    /// Make every upload's photo distinct (made on the spot from its index, at a size drawn
    /// from `--sizes`), so that their content addresses differ; without it the photos made on
    /// the spot are one per size. Not with `--photos`.
    #[arg(long, conflicts_with = "photos")]
    pub distinct: bool,
    /// How long to wait, after the last upload, for every job to settle.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=7200))]
    pub drain_secs: u64,
    /// Random seed (which photo each upload sends).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the full result here as JSON.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// How one upload ended.
#[derive(Debug, Clone)]
struct Sent {
    user: u64,
    poison: bool,
    /// When it was due, in seconds from the first upload.
    due_secs: f64,
    /// From when it was due.
    latency: Duration,
    /// The answer's status; 0 when none came (a transport error or the deadline).
    status: u16,
    /// Not sent: the in-flight bound was reached (counted as `shed`).
    shed: bool,
    job: Option<String>,
}

/// Runs the load and prints its account.
pub async fn run(args: UploadLoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0.0 && args.rate <= 10_000.0,
        "--rate must be above 0 and at most 10000 uploads per second, not {}",
        args.rate
    );
    let deployment = strata_deploy::state::read(&args.dir)?
        .ok_or_else(|| strata_deploy::state::no_deployment(&args.dir))?;
    let entry = deployment
        .http_entry()
        .context("the deployment has no balancer and no API server to upload to")?;
    let apis: Vec<String> = deployment
        .roles
        .iter()
        .filter(|r| r.kind == strata_deploy::roles::RoleKind::Api)
        .filter_map(|r| r.addrs.get("http").cloned())
        .collect();
    let sizes = parse_sizes(&args.sizes)?;
    let photos = Arc::new(load_photos(args.photos.as_ref(), &sizes)?);
    let session = Arc::new(
        Session::admin(
            &args.dir,
            &entry,
            &format!("uploads-{}@strata.test", args.seed),
        )
        .await?,
    );

    eprintln!("creating {} users …", args.count);
    let users = create_users(&session, args.count).await?;

    let started = Instant::now();
    let depth = Arc::new(Mutex::new(Vec::<Value>::new()));
    let (stop_sampling, sampling) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(sample_queue(apis.clone(), started, depth.clone(), sampling));

    eprintln!("uploading {} photos at {}/s …", args.count, args.rate);
    let sent = send_uploads(&session, &args, &users, photos, &sizes).await;
    let load_secs = started.elapsed().as_secs_f64();

    eprintln!("draining …");
    let drain_started = Instant::now();
    let states = drain(&session, &sent, Duration::from_secs(args.drain_secs)).await;
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let _ = stop_sampling.send(true);
    let _ = sampler.await;

    let served = check_served(&session, &sent, &states).await;
    // A job is marked failed just before its message is dead-lettered: the count is read
    // until it reaches the poisons accepted (or 10 s pass).
    let poisons = sent.iter().filter(|s| s.poison && s.job.is_some()).count() as f64;
    let dead_deadline = Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let row = queue_counts(&reqwest::Client::new(), &apis, started).await;
        let dead = row.as_ref().and_then(|r| r["dead"].as_f64());
        if dead == Some(poisons) || Instant::now() >= dead_deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut doc = account(
        &args,
        &sent,
        &states,
        served,
        load_secs,
        drain_secs,
        depth.lock().await.clone(),
    );
    doc["dead_letters_at_end"] = json!(dead);
    println!("{}", summary(&doc));
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(())
}

/// `--sizes`: `WxH,WxH,…`, each side 1 to 4096 pixels.
fn parse_sizes(sizes: &str) -> anyhow::Result<Vec<(u32, u32)>> {
    sizes
        .split(',')
        .map(|s| {
            s.trim()
                .split_once('x')
                .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
                .filter(|&(w, h)| (1..=4096).contains(&w) && (1..=4096).contains(&h))
                .with_context(|| {
                    format!("--sizes: {s:?} is not WxH with sides of 1 to 4096 pixels")
                })
        })
        .collect()
}

fn load_photos(
    dir: Option<&PathBuf>,
    sizes: &[(u32, u32)],
) -> anyhow::Result<Vec<(Vec<u8>, &'static str)>> {
    let Some(dir) = dir else {
        return Ok(sizes
            .iter()
            .map(|&(w, h)| (testdata::image(Format::Jpeg, w, h), "image/jpeg"))
            .collect());
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let kind = match path.extension().and_then(|e| e.to_str()) {
            Some("jpg" | "jpeg") => "image/jpeg",
            Some("png") => "image/png",
            Some("webp") => "image/webp",
            _ => continue,
        };
        out.push((std::fs::read(&path)?, kind));
    }
    anyhow::ensure!(
        !out.is_empty(),
        "no photos (*.jpg, *.png, *.webp) in {}",
        dir.display()
    );
    Ok(out)
}

async fn create_users(session: &Arc<Session>, count: u64) -> anyhow::Result<Vec<u64>> {
    let created: Vec<anyhow::Result<u64>> = futures_util::stream::iter(0..count)
        .map(|i| {
            let session = session.clone();
            async move {
                let body = json!({"firstName": format!("U{i}"), "lastName": "Uploads",
                    "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"}});
                let (status, r) = session
                    .send(|http, base| http.post(format!("http://{base}/users")).json(&body))
                    .await;
                let r = r.filter(|_| status == 201).with_context(|| format!("creating a user answered {status}"))?;
                let doc: Value = r.json().await?;
                doc["id"]
                    .as_u64()
                    .or_else(|| doc["id"].as_str().and_then(|s| s.parse().ok()))
                    .context("no user id")
            }
        })
        .buffer_unordered(FAN_OUT)
        .collect()
        .await;
    created.into_iter().collect()
}

async fn send_uploads(
    session: &Arc<Session>,
    args: &UploadLoadArgs,
    users: &[u64],
    photos: Arc<Vec<(Vec<u8>, &'static str)>>,
    sizes: &[(u32, u32)],
) -> Vec<Sent> {
    let poison = Arc::new(testdata::poison_png(256, 256));
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let gauge = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(users.len());
    for (k, &user) in users.iter().enumerate() {
        let due = start + Duration::from_secs_f64(k as f64 / args.rate);
        tokio::time::sleep_until(due.into()).await;
        let is_poison = args.poison_every > 0 && (k as u64 + 1).is_multiple_of(args.poison_every);
        let (body, kind) = if is_poison {
            (poison.as_ref().clone(), "image/png")
        } else {
            if args.distinct {
                let (w, h) = sizes[rng.random_range(0..sizes.len())];
                let seed = u32::try_from(k).unwrap_or(u32::MAX);
                (
                    testdata::image_seeded(Format::Jpeg, w, h, seed),
                    "image/jpeg",
                )
            } else {
                let (b, k) = &photos[rng.random_range(0..photos.len())];
                (b.clone(), *k)
            }
        };
        let Ok(permit) = gauge.clone().try_acquire_owned() else {
            let due_secs = (due - start).as_secs_f64();
            tasks.push(tokio::spawn(async move {
                Sent {
                    user,
                    poison: is_poison,
                    due_secs,
                    latency: Duration::ZERO,
                    status: 0,
                    shed: true,
                    job: None,
                }
            }));
            continue;
        };
        let session = session.clone();
        tasks.push(tokio::spawn(async move {
            let (status, r) = session
                .send(|http, base| {
                    http.put(format!("http://{base}/users/{user}/photo"))
                        .header("content-type", kind)
                        .body(body.clone())
                })
                .await;
            let latency = due.elapsed();
            drop(permit);
            let job = r.filter(|_| status == 202).and_then(|r| {
                r.headers()
                    .get("location")?
                    .to_str()
                    .ok()
                    .map(str::to_string)
            });
            Sent {
                user,
                poison: is_poison,
                due_secs: (due - start).as_secs_f64(),
                latency,
                status,
                shed: false,
                job,
            }
        }));
        if (k + 1) % 500 == 0 {
            eprintln!("  {} sent, {:.0} s", k + 1, start.elapsed().as_secs_f64());
        }
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(s) = t.await {
            out.push(s);
        }
    }
    out
}

async fn sample_queue(
    apis: Vec<String>,
    started: Instant,
    depth: Arc<Mutex<Vec<Value>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        if let Some(row) = queue_counts(&http, &apis, started).await {
            depth.lock().await.push(row);
        }
    }
}

/// The photos queue's counts from the first API server that answers.
async fn queue_counts(http: &reqwest::Client, apis: &[String], started: Instant) -> Option<Value> {
    for api in apis {
        let Ok(r) = http.get(format!("http://{api}/metrics")).send().await else {
            continue;
        };
        let Ok(text) = r.text().await else { continue };
        let mut row = json!({"t": started.elapsed().as_secs_f64()});
        for line in text
            .lines()
            .filter(|l| l.starts_with("strata_queue_messages{"))
        {
            let state = line
                .split("state=\"")
                .nth(1)
                .and_then(|s| s.split('"').next());
            let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            if let (Some(state), Some(value)) = (state, value) {
                row[state] = json!(value);
            }
        }
        return Some(row);
    }
    None
}

async fn job_state(session: &Session, job: &str) -> Option<String> {
    let (status, r) = session
        .send(|http, base| http.get(format!("http://{base}{job}")))
        .await;
    let doc: Value = r.filter(|_| status == 200)?.json().await.ok()?;
    doc["state"].as_str().map(str::to_string)
}

/// Jobs polled per round while draining.
const POLL_WINDOW: usize = 64;

/// Polls the accepted jobs until each is settled (`done` or `failed`) or `within` has passed.
/// Jobs settle roughly in the order they were accepted, so each round polls the oldest
/// [`POLL_WINDOW`] still pending, and waits a second when some of them are not settled: the
/// polling costs the API servers (and the workers beside them) a few requests a second, not a
/// round of every pending job.
async fn drain(
    session: &Arc<Session>,
    sent: &[Sent],
    within: Duration,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + within;
    let mut states: BTreeMap<String, String> = BTreeMap::new();
    let mut pending: std::collections::VecDeque<String> =
        sent.iter().filter_map(|s| s.job.clone()).collect();
    while !pending.is_empty() {
        let window: Vec<String> = pending.iter().take(POLL_WINDOW).cloned().collect();
        let polled: Vec<(String, Option<String>)> = futures_util::stream::iter(window)
            .map(|job| {
                let session = session.clone();
                async move {
                    let state = job_state(&session, &job).await;
                    (job, state)
                }
            })
            .buffer_unordered(FAN_OUT)
            .collect()
            .await;
        let mut unsettled = false;
        for (job, state) in polled {
            match state.as_deref() {
                Some("done" | "failed" | "superseded") => pending.retain(|j| j != &job),
                _ => unsettled = true,
            }
            states.insert(job, state.unwrap_or_else(|| "unknown".into()));
        }
        if Instant::now() >= deadline {
            break;
        }
        if unsettled {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    // What was never polled before the deadline is recorded as such.
    for job in pending {
        states.entry(job).or_insert_with(|| "unknown".into());
    }
    states
}

/// Users whose done job's photo is served (a 307 to its content address).
async fn check_served(
    session: &Arc<Session>,
    sent: &[Sent],
    states: &BTreeMap<String, String>,
) -> u64 {
    let users: Vec<u64> = sent
        .iter()
        .filter(|s| {
            s.job
                .as_ref()
                .and_then(|j| states.get(j))
                .map(String::as_str)
                == Some("done")
        })
        .map(|s| s.user)
        .collect();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let base = session.base().to_string();
    futures_util::stream::iter(users)
        .map(|user| {
            let (http, base) = (no_redirects.clone(), base.clone());
            async move {
                http.get(format!("http://{base}/users/{user}/photo?size=64"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 307)
            }
        })
        .buffer_unordered(FAN_OUT)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await as u64
}

fn account(
    args: &UploadLoadArgs,
    sent: &[Sent],
    states: &BTreeMap<String, String>,
    served: u64,
    load_secs: f64,
    drain_secs: f64,
    depth: Vec<Value>,
) -> Value {
    let mut latency =
        Histogram::<u64>::new(3).unwrap_or_else(|_| Histogram::new(2).expect("a histogram"));
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let (mut done, mut poison_failed, mut lost, mut unexpected) =
        (0u64, 0u64, Vec::new(), Vec::new());
    // Per second of the load (by when each upload was due): its answers and slowest 202, so a
    // failure can be put beside the fault that was going on at that moment.
    let mut timeline: BTreeMap<u64, (BTreeMap<String, u64>, f64)> = BTreeMap::new();
    for s in sent {
        let answer = if s.shed {
            "shed".to_string()
        } else {
            s.status.to_string()
        };
        let second = timeline.entry(s.due_secs as u64).or_default();
        *second.0.entry(answer.clone()).or_default() += 1;
        if s.status == 202 {
            second.1 = second.1.max(s.latency.as_secs_f64() * 1000.0);
        }
        *statuses.entry(answer).or_default() += 1;
        if s.status == 202 {
            let _ = latency.record(
                u64::try_from(s.latency.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1),
            );
        }
        let Some(job) = &s.job else { continue };
        match (states.get(job).map(String::as_str), s.poison) {
            (Some("done"), false) => done += 1,
            (Some("failed"), true) => poison_failed += 1,
            (Some("queued" | "processing" | "unknown") | None, _) => lost.push(job.clone()),
            (other, _) => unexpected.push(json!({"job": job, "state": other, "poison": s.poison})),
        }
    }
    let accepted = sent.iter().filter(|s| s.job.is_some()).count() as u64;
    let poisons = sent.iter().filter(|s| s.poison && s.job.is_some()).count() as u64;
    let q = |p: f64| latency.value_at_quantile(p) as f64 / 1000.0;
    json!({
        "rate": args.rate, "count": args.count, "poison_every": args.poison_every,
        "load_secs": load_secs, "drain_secs": drain_secs,
        "statuses": statuses, "accepted": accepted, "done": done, "served": served,
        "poisons_accepted": poisons, "poisons_failed": poison_failed,
        "dead_letters_at_end": null,
        "lost": lost, "unexpected": unexpected,
        "accept_latency_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999), "max": latency.max() as f64 / 1000.0},
        "queue_depth": depth,
        "timeline": timeline
            .into_iter()
            .map(|(second, (answers, slowest))| json!({"second": second, "answers": answers, "slowest_202_ms": slowest}))
            .collect::<Vec<_>>(),
    })
}

fn summary(doc: &Value) -> String {
    let l = &doc["accept_latency_ms"];
    format!(
        "uploads: {} sent at {}/s over {:.1} s; answers {}\n202 latency (from when due): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n\
         accepted {}: done {} (photo served {}), poison failed {} of {}; dead letters at the end {}; lost {}; unexpected {}\ndrained in {:.1} s",
        doc["count"],
        doc["rate"],
        doc["load_secs"].as_f64().unwrap_or(0.0),
        doc["statuses"],
        l["p50"].as_f64().unwrap_or(0.0),
        l["p90"].as_f64().unwrap_or(0.0),
        l["p99"].as_f64().unwrap_or(0.0),
        l["max"].as_f64().unwrap_or(0.0),
        doc["accepted"],
        doc["done"],
        doc["served"],
        doc["poisons_failed"],
        doc["poisons_accepted"],
        doc["dead_letters_at_end"],
        doc["lost"].as_array().map_or(0, Vec::len),
        doc["unexpected"].as_array().map_or(0, Vec::len),
        doc["drain_secs"].as_f64().unwrap_or(0.0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: UploadLoadArgs,
    }

    fn sent(due_secs: f64, status: u16, shed: bool, job: Option<&str>, ms: u64) -> Sent {
        Sent {
            user: 1,
            poison: false,
            due_secs,
            latency: Duration::from_millis(ms),
            status,
            shed,
            job: job.map(str::to_string),
        }
    }

    #[test]
    fn the_account_puts_every_answer_in_the_second_it_was_due_and_tells_shed_from_unanswered() {
        let args = Cli::parse_from(["upload-load"]).args;
        let uploads = [
            sent(0.1, 202, false, Some("/jobs/a"), 12),
            sent(0.9, 202, false, Some("/jobs/b"), 30),
            sent(1.5, 0, false, None, 5_000),
            sent(1.6, 0, true, None, 0),
            sent(2.0, 503, false, None, 3),
        ];
        let states = BTreeMap::from([
            ("/jobs/a".to_string(), "done".to_string()),
            ("/jobs/b".to_string(), "queued".to_string()),
        ]);
        let doc = account(&args, &uploads, &states, 1, 3.0, 1.0, Vec::new());
        assert_eq!(
            doc["statuses"],
            json!({"0": 1, "202": 2, "503": 1, "shed": 1})
        );
        assert_eq!(doc["done"], 1);
        assert_eq!(doc["lost"], json!(["/jobs/b"]));
        assert_eq!(
            doc["timeline"],
            json!([
                {"second": 0, "answers": {"202": 2}, "slowest_202_ms": 30.0},
                {"second": 1, "answers": {"0": 1, "shed": 1}, "slowest_202_ms": 0.0},
                {"second": 2, "answers": {"503": 1}, "slowest_202_ms": 0.0},
            ])
        );
    }
}
