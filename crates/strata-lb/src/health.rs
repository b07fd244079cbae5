//! Active health checks, and the probes that re-admit ejected backends.
//!
//! Every `interval`, each backend gets `GET <path>` with a `timeout`; `rise` consecutive
//! successes mark a down backend up, `fall` consecutive failures mark an up backend down. An
//! ejected backend (passive outlier detection) whose back-off has passed is probed the same
//! way: a success re-admits it, a failure ejects it again for twice as long.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::Pool;
use crate::backend::Backend;

/// Active health check settings.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            path: "/healthz".into(),
            interval: Duration::from_millis(1000),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
        }
    }
}

type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

async fn probe(client: &ProbeClient, backend: &Backend, cfg: &HealthConfig) -> bool {
    let Ok(uri) = format!("http://{}{}", backend.addr, cfg.path).parse::<http::Uri>() else {
        return false;
    };
    let attempt = async {
        let resp = client.get(uri).await.ok()?;
        let ok = resp.status().is_success();
        let _ = resp.into_body().collect().await;
        Some(ok)
    };
    matches!(
        tokio::time::timeout(cfg.timeout, attempt).await,
        Ok(Some(true))
    )
}

/// Runs the checks of one pool until the task is dropped.
pub async fn run(pool: Arc<Pool>, cfg: HealthConfig) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(cfg.timeout));
    // Fresh connections for probes: a pooled connection could hide a dead listener.
    let client: ProbeClient = Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    // Ejected backends are probed on a finer tick than the check interval, so a re-admission
    // waits for the back-off, not for the next full interval.
    let tick = cfg
        .interval
        .min(Duration::from_millis(250))
        .max(Duration::from_millis(10));
    let mut next_check = Instant::now();
    loop {
        let now = Instant::now();
        let full_check = now >= next_check;
        if full_check {
            next_check = now + cfg.interval;
        }
        let backends = pool.backends();
        let mut changed = false;
        let mut probes = tokio::task::JoinSet::new();
        for backend in backends.iter().cloned() {
            let due = backend.due_for_probe(now);
            if !full_check && !due {
                continue;
            }
            let client = client.clone();
            let cfg = cfg.clone();
            probes.spawn(async move {
                let ok = probe(&client, &backend, &cfg).await;
                (backend, ok, due, full_check)
            });
        }
        while let Some(Ok((backend, ok, due, full_check))) = probes.join_next().await {
            if full_check && backend.health_check_result(ok, cfg.rise, cfg.fall) {
                tracing::warn!(backend = %backend.name, healthy = ok, "active health check changed the verdict");
                changed = true;
            }
            if due && backend.probe_result(ok, &pool.outlier) {
                tracing::info!(backend = %backend.name, "re-admitted after a successful probe");
                changed = true;
            }
        }
        if changed {
            pool.rebuild();
        }
        tokio::time::sleep(tick).await;
    }
}
