//! Active health checks of every data centre's balancers, and the table of verdicts the
//! answers read.
//!
//! Every `interval`, each balancer gets `GET <path>` on a fresh connection with a `timeout`;
//! a 2xx is a success. `rise` consecutive successes bring a down balancer up, `fall`
//! consecutive failures take an up one down, so one lost probe does not move traffic. The
//! first round (run before the server announces readiness) sets each verdict directly: a
//! server does not answer with balancers it has never seen alive, nor hide live ones for
//! `rise` intervals after a restart.
//!
//! The verdicts are atomics: a query reads them without a lock, and the checker never waits
//! on a query.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::config::{DataCentre, HealthSettings};

/// Each balancer's verdict, by data centre then balancer (the configuration's order).
#[derive(Debug)]
pub struct HealthTable {
    up: Vec<Vec<AtomicBool>>,
}

impl HealthTable {
    /// A table for `datacentres`, every balancer up.
    pub fn all_up(datacentres: &[DataCentre]) -> Self {
        Self {
            up: datacentres
                .iter()
                .map(|dc| dc.balancers.iter().map(|_| AtomicBool::new(true)).collect())
                .collect(),
        }
    }

    /// Whether balancer `b` of data centre `dc` is up.
    pub fn is_up(&self, dc: usize, b: usize) -> bool {
        self.up
            .get(dc)
            .and_then(|d| d.get(b))
            .is_some_and(|v| v.load(Ordering::Relaxed))
    }

    /// Whether any balancer of data centre `dc` is up.
    pub fn dc_up(&self, dc: usize) -> bool {
        self.up
            .get(dc)
            .is_some_and(|d| d.iter().any(|v| v.load(Ordering::Relaxed)))
    }

    /// Sets a verdict (the checker, and tests of the answers).
    pub fn set(&self, dc: usize, b: usize, up: bool) {
        if let Some(v) = self.up.get(dc).and_then(|d| d.get(b)) {
            v.store(up, Ordering::Relaxed);
        }
    }
}

type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

/// The checker of one configuration's balancers.
#[derive(Debug)]
pub struct Checker {
    table: Arc<HealthTable>,
    settings: HealthSettings,
    targets: Vec<Target>,
}

#[derive(Debug)]
struct Target {
    dc: usize,
    b: usize,
    name: String,
    uri: Option<http::Uri>,
    successes: u32,
    failures: u32,
}

impl Checker {
    pub fn new(table: Arc<HealthTable>, settings: HealthSettings, dcs: &[DataCentre]) -> Self {
        let mut targets = Vec::new();
        for (dc, d) in dcs.iter().enumerate() {
            for (b, addr) in d.balancers.iter().enumerate() {
                targets.push(Target {
                    dc,
                    b,
                    name: format!("{}/{addr}", d.name),
                    uri: format!("http://{addr}{}", settings.path).parse().ok(),
                    successes: 0,
                    failures: 0,
                });
            }
        }
        Self {
            table,
            settings,
            targets,
        }
    }

    fn client(&self) -> ProbeClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(self.settings.timeout));
        connector.set_nodelay(true);
        // Fresh connections for probes: a pooled connection could hide a dead listener.
        Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector)
    }

    async fn round(&self, client: &ProbeClient) -> Vec<bool> {
        let mut probes = tokio::task::JoinSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let client = client.clone();
            let uri = t.uri.clone();
            let timeout = self.settings.timeout;
            probes.spawn(async move { (i, probe(&client, uri, timeout).await) });
        }
        let mut results = vec![false; self.targets.len()];
        while let Some(joined) = probes.join_next().await {
            if let Ok((i, ok)) = joined
                && let Some(r) = results.get_mut(i)
            {
                *r = ok;
            }
        }
        results
    }

    /// Runs one round and sets every verdict from it directly (before serving).
    pub async fn first_round(&mut self) {
        let client = self.client();
        let results = self.round(&client).await;
        for (t, ok) in self.targets.iter_mut().zip(results) {
            self.table.set(t.dc, t.b, ok);
            if !ok {
                tracing::warn!(balancer = %t.name, "balancer is down at start");
            }
        }
    }

    /// Checks every interval until the task is dropped.
    pub async fn run(mut self) {
        let client = self.client();
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let results = self.round(&client).await;
            let (rise, fall) = (self.settings.rise, self.settings.fall);
            for (t, ok) in self.targets.iter_mut().zip(results) {
                let was_up = self.table.is_up(t.dc, t.b);
                if ok {
                    t.successes = t.successes.saturating_add(1);
                    t.failures = 0;
                } else {
                    t.failures = t.failures.saturating_add(1);
                    t.successes = 0;
                }
                if !was_up && t.successes >= rise {
                    self.table.set(t.dc, t.b, true);
                    tracing::info!(balancer = %t.name, "balancer is up again: answers include it");
                } else if was_up && t.failures >= fall {
                    self.table.set(t.dc, t.b, false);
                    tracing::warn!(balancer = %t.name, "balancer is down: answers leave it out");
                }
            }
        }
    }
}

async fn probe(client: &ProbeClient, uri: Option<http::Uri>, timeout: std::time::Duration) -> bool {
    let Some(uri) = uri else {
        return false;
    };
    let attempt = async {
        let resp = client.get(uri).await.ok()?;
        let ok = resp.status().is_success();
        let _ = resp.into_body().collect().await;
        Some(ok)
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}
