//! Stampede trials: each trial sends `--concurrency` requests at once for one user nobody has
//! read (a new one per trial) through `--target` (the balancer), and counts the database loads
//! they caused as the change in `strata_cache_loads_total` summed over the API servers'
//! `/metrics`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

#[derive(Debug, Args)]
pub struct StampedeArgs {
    /// Where the requests go (`HOST:PORT` of the balancer, or of one API server).
    #[arg(long)]
    target: String,
    /// The API servers whose `/metrics` count the loads, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    apis: Vec<String>,
    /// Cold user ids, one a line: trial k reads line k.
    #[arg(long)]
    cold: PathBuf,
    #[arg(long, default_value_t = 100)]
    trials: usize,
    /// Requests at once per trial.
    #[arg(long, default_value_t = 1_000)]
    concurrency: usize,
}

/// Sum of `strata_cache_loads_total` over the API servers.
async fn loads(client: &reqwest::Client, apis: &[String]) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for api in apis {
        let text = client
            .get(format!("http://{api}/metrics"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("cannot read {api}/metrics"))?
            .text()
            .await?;
        total += text
            .lines()
            .filter(|l| l.starts_with("strata_cache_loads_total"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>();
    }
    Ok(total)
}

pub async fn run(a: StampedeArgs) -> anyhow::Result<()> {
    let cold = super::read_ids(&a.cold)?;
    anyhow::ensure!(
        cold.len() >= a.trials,
        "{} cold ids for {} trials",
        cold.len(),
        a.trials
    );
    let metrics_client = super::client(4)?;
    let mut per_trial = Vec::new();
    let mut failed_total = 0u64;
    for (k, user) in cold.iter().take(a.trials).enumerate() {
        let before = loads(&metrics_client, &a.apis).await?;
        // A fresh client per trial: every request opens its own connection, so the balancer
        // spreads them over all API servers.
        let client = super::client(a.concurrency)?;
        let url = format!("http://{}/users/{user}", a.target);
        let started = Instant::now();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(a.concurrency));
        let tasks: Vec<_> = (0..a.concurrency)
            .map(|_| {
                let (client, url, barrier) = (client.clone(), url.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    match client.get(url).send().await {
                        Ok(r) => r.status().as_u16() == 200 && r.bytes().await.is_ok(),
                        Err(_) => false,
                    }
                })
            })
            .collect();
        let mut failed = 0u64;
        for t in tasks {
            if !t.await? {
                failed += 1;
            }
        }
        let took = started.elapsed();
        let after = loads(&metrics_client, &a.apis).await?;
        let n = (after - before).round() as i64;
        failed_total += failed;
        eprintln!(
            "    trial {}: {n} load(s), {failed} failed, {} ms",
            k + 1,
            took.as_millis()
        );
        per_trial.push(
            json!({"user": user, "loads": n, "failed": failed, "ms": took.as_millis() as u64}),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ones = per_trial.iter().filter(|t| t["loads"] == 1).count();
    println!(
        "{}",
        json!({"trials": a.trials, "concurrency": a.concurrency, "trials_with_one_load": ones,
               "failed": failed_total, "per_trial": per_trial})
    );
    Ok(())
}
