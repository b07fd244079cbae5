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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::config::{DataCentre, HealthSettings};

/// Each balancer's verdict, by data centre then balancer (the configuration's order).
#[derive(Debug)]
pub struct HealthTable {
    up: Vec<Vec<AtomicBool>>,
    /// The data centre `failover` tries first (the one holding the primary, when the
    /// configuration names a primary file; else the first listed).
    preferred: AtomicUsize,
}

impl HealthTable {
    /// A table for `datacentres`, every balancer up.
    pub fn all_up(datacentres: &[DataCentre]) -> Self {
        Self {
            up: datacentres
                .iter()
                .map(|dc| dc.balancers.iter().map(|_| AtomicBool::new(true)).collect())
                .collect(),
            preferred: AtomicUsize::new(0),
        }
    }

    /// The data centre `failover` tries first.
    pub fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Relaxed)
    }

    /// Makes data centre `dc` the one `failover` tries first.
    pub fn prefer(&self, dc: usize) {
        self.preferred.store(dc, Ordering::Relaxed);
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
    /// The primary file, and each data centre's database servers (see [`Checker::follow`]).
    primary: Option<(std::path::PathBuf, Vec<Vec<String>>)>,
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
            primary: None,
        }
    }

    /// Every round also reads `file` (JSON with a `"primary"`: a database server's name) and
    /// prefers the data centre of `dcs` whose `databases` hold it. A file that is missing, does
    /// not parse or names no known server leaves the preference as it was.
    pub fn following(mut self, file: Option<std::path::PathBuf>, dcs: &[DataCentre]) -> Self {
        self.primary = file.map(|f| {
            (
                f,
                dcs.iter()
                    .map(|dc| dc.databases.clone())
                    .collect::<Vec<_>>(),
            )
        });
        self
    }

    /// Reads the primary file once and sets the preference from it.
    fn follow(&self) {
        let Some((file, databases)) = &self.primary else {
            return;
        };
        let Ok(text) = std::fs::read(file) else {
            return;
        };
        let Ok(state) = serde_json::from_slice::<serde_json::Value>(&text) else {
            return;
        };
        let Some(primary) = state.get("primary").and_then(|p| p.as_str()) else {
            return;
        };
        if let Some(dc) = databases
            .iter()
            .position(|d| d.iter().any(|n| n == primary))
            && dc != self.table.preferred()
        {
            self.table.prefer(dc);
            tracing::info!(
                primary,
                dc,
                "the primary moved: failover answers prefer its data centre"
            );
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
        self.follow();
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
            self.follow();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DnsConfig, Policy};
    use crate::policy::{failover_order, select};

    #[test]
    fn failover_prefers_the_data_centre_the_primary_file_names_and_follows_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("cluster.json");
        let config = DnsConfig::parse(&format!(
            r#"
zone = "strata.test."
services = ["www"]
policy = "failover"
primary_file = "{}"
[[datacenter]]
name = "east"
balancers = ["127.0.10.1:80"]
databases = ["pg-1"]
[[datacenter]]
name = "west"
balancers = ["127.0.20.1:80"]
databases = ["pg-2", "pg-3"]
"#,
            file.display()
        ))
        .expect("valid");
        assert_eq!(config.policy, Policy::Failover);
        let table = Arc::new(HealthTable::all_up(&config.datacentres));
        let checker = Checker::new(table.clone(), config.health.clone(), &config.datacentres)
            .following(config.primary_file.clone(), &config.datacentres);
        let chosen = || select(&config, &table, None, &mut rand::rng()).dc;
        // No file yet: the listed order.
        checker.follow();
        assert_eq!(chosen(), 0);
        // The primary moves to west: west is answered, east only when west is down.
        std::fs::write(&file, br#"{"version": 4, "primary": "pg-3"}"#).expect("write");
        checker.follow();
        assert_eq!(chosen(), 1);
        table.set(1, 0, false);
        assert_eq!(chosen(), 0, "west down: east");
        table.set(1, 0, true);
        // A file that does not parse, or names no known server, changes nothing.
        std::fs::write(&file, b"{not json").expect("write");
        checker.follow();
        assert_eq!(chosen(), 1);
        std::fs::write(&file, br#"{"primary": "pg-9"}"#).expect("write");
        checker.follow();
        assert_eq!(chosen(), 1);
        // Back to east.
        std::fs::write(&file, br#"{"primary": "pg-1"}"#).expect("write");
        checker.follow();
        assert_eq!(chosen(), 0);
        assert_eq!(failover_order(1, 3).collect::<Vec<_>>(), [1, 0, 2]);
        assert_eq!(failover_order(7, 2).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(failover_order(0, 0).count(), 0);
    }

    #[test]
    fn a_primary_file_is_refused_where_it_cannot_be_followed() {
        let errors = DnsConfig::parse(
            r#"
zone = "strata.test."
services = ["www"]
policy = "weighted"
primary_file = "/x.json"
[[datacenter]]
name = "east"
balancers = ["127.0.10.1:80"]
"#,
        )
        .expect_err("refused");
        let text = errors.to_string();
        assert!(
            text.contains("primary_file orders the data centres of policy \"failover\""),
            "{text}"
        );
        assert!(text.contains("add databases = [...]"), "{text}");
    }
}
