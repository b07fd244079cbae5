//! The verdict of a chaos run: acknowledged writes lost (read back after the deployment is
//! healthy again), failed and wrong reads, latency percentiles (HDR histograms of the requests
//! that succeeded), each outage — a stretch of consecutive failed requests — and how long the
//! deployment took to return to full health.

use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::ChaosArgs;
use super::faults::Applied;
use super::load::{self, Acked, Outcome, Record, Session};

/// Full health: every role ready, alive and healthy; every PostgreSQL server answering, one of
/// them the primary — one per shard group when the deployment has groups; no failover in
/// progress and nothing fenced or left to rewind, in the one cluster and in every group.
pub async fn healthy(dir: &Path) -> bool {
    let Ok(report) = strata_deploy::status::collect(dir).await else {
        return false;
    };
    let roles_ok = report.running()
        && report.roles.iter().all(|r| {
            r.alive && r.healthy && r.role.state == strata_deploy::state::RolePhase::Ready
        });
    let servers = report
        .roles
        .iter()
        .filter(|r| r.role.kind == strata_deploy::roles::RoleKind::Postgres)
        .map(|r| {
            let primary = matches!(
                r.database,
                Some(strata_deploy::status::DatabaseView::Primary { .. })
            );
            (strata_deploy::groups::group_of(&r.role.name), primary)
        });
    let databases_ok = one_primary_per_cluster(servers);
    let settled = |view: &serde_json::Value| {
        let c = &view["cluster"];
        c["failover"].is_null()
            && c["fenced"].as_array().is_none_or(Vec::is_empty)
            && c["rewind"].as_array().is_none_or(Vec::is_empty)
    };
    let cluster_ok = report.control.as_ref().is_none_or(settled)
        && report.group_controls.iter().all(|(_, view)| settled(view));
    roles_ok && databases_ok && cluster_ok
}

/// Whether each database cluster — the one cluster (`None`) or each shard group — has exactly
/// one primary among its servers (`(cluster, is_primary)`); true when there are none.
fn one_primary_per_cluster<'a>(servers: impl Iterator<Item = (Option<&'a str>, bool)>) -> bool {
    let mut primaries: std::collections::BTreeMap<Option<&str>, usize> = Default::default();
    for (cluster, primary) in servers {
        *primaries.entry(cluster).or_default() += usize::from(primary);
    }
    primaries.values().all(|&n| n == 1)
}

/// Waits until the deployment is fully healthy (true), or `limit` passes (false).
pub async fn wait_for_health(dir: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if healthy(dir).await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Reads back every acknowledged write (with its commit token), 16 at a time, each retried
/// for up to 10 s while the deployment answers "not now"; returns the ones that are gone or
/// changed.
pub async fn read_back(session: &Session, acked: &[Acked]) -> Vec<String> {
    use futures_util::StreamExt as _;
    futures_util::stream::iter(acked)
        .map(|user| async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match load::read(session, user).await {
                    (200, false) => return None,
                    (200, true) | (404, _) => return Some(user.location.clone()),
                    _ if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    // Never answered: counted as lost, since it cannot be shown to be there.
                    _ => return Some(user.location.clone()),
                }
            }
        })
        .buffer_unordered(16)
        .filter_map(|lost| async move { lost })
        .collect()
        .await
}

/// A stretch of consecutive failed requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outage {
    /// Seconds from the start of the run.
    pub start_s: f64,
    pub seconds: f64,
    pub failed: usize,
}

/// The outages of a series of requests in the order they left: from the first failure after a
/// success to the next success.
pub fn outages(records: &[Record]) -> Vec<Outage> {
    let mut out = Vec::new();
    let mut open: Option<(Duration, usize)> = None;
    for r in records {
        match (&mut open, r.ok()) {
            (None, false) => open = Some((r.at, 1)),
            (Some((_, n)), false) => *n += 1,
            (Some((start, n)), true) => {
                out.push(Outage {
                    start_s: start.as_secs_f64(),
                    seconds: (r.at - *start).as_secs_f64(),
                    failed: *n,
                });
                open = None;
            }
            (None, true) => {}
        }
    }
    if let (Some((start, n)), Some(last)) = (open, records.last()) {
        out.push(Outage {
            start_s: start.as_secs_f64(),
            seconds: (last.at - start).as_secs_f64(),
            failed: n,
        });
    }
    out
}

/// Counts and latency of one kind of request.
#[derive(Debug, Clone, Serialize)]
pub struct Requests {
    pub sent: usize,
    pub ok: usize,
    pub failed: usize,
    /// Reads answered 200 with other data than was written.
    pub wrong: usize,
    /// Failed requests by status (0: no answer in time).
    pub failed_by_status: std::collections::BTreeMap<u16, usize>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub outages: Vec<Outage>,
    /// The longest outage, in seconds.
    pub longest_outage_s: f64,
}

impl Requests {
    fn of(records: &[Record]) -> Self {
        let mut histogram =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        let mut failed_by_status = std::collections::BTreeMap::new();
        for r in records {
            if r.ok() {
                let _ = histogram.record((r.latency.as_micros() as u64).max(1));
            } else {
                *failed_by_status.entry(r.status).or_insert(0) += 1;
            }
        }
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        let outages = outages(records);
        Self {
            sent: records.len(),
            ok: records.iter().filter(|r| r.ok()).count(),
            failed: records.iter().filter(|r| !r.ok()).count(),
            wrong: records.iter().filter(|r| r.wrong).count(),
            failed_by_status,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: histogram.max() as f64 / 1000.0,
            longest_outage_s: outages.iter().map(|o| o.seconds).fold(0.0, f64::max),
            outages,
        }
    }
}

/// What a chaos run found.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub verdict: String,
    pub seed: u64,
    pub duration_s: u64,
    pub rate: u32,
    pub faults: Vec<Applied>,
    pub writes: Requests,
    pub reads: Requests,
    pub acknowledged: usize,
    /// Acknowledged writes that are gone or changed.
    pub lost: usize,
    pub lost_examples: Vec<String>,
    /// Seconds from the end of the last fault to full health, if it came back.
    pub back_to_full_health_s: Option<f64>,
    /// Second by second, writes and reads together: for plots of latency over the run.
    pub timeline: Vec<Second>,
}

/// One second of the load (requests that left in it).
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub t: u64,
    pub ok: usize,
    pub failed: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Per-second counts and latency of `records`.
pub fn timeline(records: &[&Record]) -> Vec<Second> {
    let mut by_second: std::collections::BTreeMap<u64, Vec<&Record>> = Default::default();
    for r in records {
        by_second.entry(r.at.as_secs()).or_default().push(r);
    }
    by_second
        .into_iter()
        .map(|(t, rs)| {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            for r in rs.iter().filter(|r| r.ok()) {
                let _ = h.record((r.latency.as_micros() as u64).max(1));
            }
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            Second {
                t,
                ok: rs.iter().filter(|r| r.ok()).count(),
                failed: rs.iter().filter(|r| !r.ok()).count(),
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
                max_ms: h.max() as f64 / 1000.0,
            }
        })
        .collect()
}

impl Verdict {
    pub fn new(
        seed: u64,
        args: &ChaosArgs,
        faults: Vec<Applied>,
        outcome: &Outcome,
        lost: Vec<String>,
        health_after: Option<f64>,
        healthy: bool,
    ) -> Self {
        let verdict = match (lost.is_empty(), healthy) {
            (true, true) => "survived: no acknowledged write lost, back to full health",
            (true, false) => "no acknowledged write lost, but not back to full health",
            (false, _) => "ACKNOWLEDGED WRITES LOST",
        };
        Self {
            verdict: verdict.into(),
            seed,
            duration_s: args.duration_secs,
            rate: args.rate,
            faults,
            writes: Requests::of(&outcome.writes),
            reads: Requests::of(&outcome.reads),
            acknowledged: outcome.acked.len(),
            lost: lost.len(),
            lost_examples: lost.into_iter().take(10).collect(),
            back_to_full_health_s: health_after,
            timeline: timeline(
                &outcome
                    .writes
                    .iter()
                    .chain(&outcome.reads)
                    .collect::<Vec<_>>(),
            ),
        }
    }

    /// The verdict for people.
    pub fn text(&self) -> String {
        let mut out = format!(
            "\nverdict: {}\nseed {} · {} s · {} writes/s and reads/s · {} faults\n\n",
            self.verdict,
            self.seed,
            self.duration_s,
            self.rate,
            self.faults.len()
        );
        out.push_str(&format!(
            "acknowledged writes: {} · lost: {}\n",
            self.acknowledged, self.lost
        ));
        for (what, r) in [("writes", &self.writes), ("reads", &self.reads)] {
            out.push_str(&format!(
                "{what}: {} sent, {} ok, {} failed {:?}{} · p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms · {} outages, longest {:.2} s\n",
                r.sent,
                r.ok,
                r.failed,
                r.failed_by_status,
                if r.wrong > 0 {
                    format!(", {} WRONG", r.wrong)
                } else {
                    String::new()
                },
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
                r.outages.len(),
                r.longest_outage_s
            ));
        }
        match self.back_to_full_health_s {
            Some(s) => out.push_str(&format!(
                "back to full health {s:.1} s after the last fault\n"
            )),
            None => out.push_str("NOT back to full health\n"),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_cluster_and_each_shard_group_needs_exactly_one_primary() {
        use super::one_primary_per_cluster as ok;
        assert!(ok([].into_iter()), "no PostgreSQL at all");
        assert!(ok([(None, true), (None, false)].into_iter()));
        assert!(
            !ok([(None, false), (None, false)].into_iter()),
            "no primary"
        );
        assert!(
            !ok([(None, true), (None, true)].into_iter()),
            "two primaries"
        );
        let groups = [
            (Some("s1"), true),
            (Some("s1"), false),
            (Some("s2"), false),
            (Some("s2"), true),
        ];
        assert!(ok(groups.into_iter()), "one primary in each group");
        let headless = [(Some("s1"), true), (Some("s2"), false), (Some("s2"), false)];
        assert!(!ok(headless.into_iter()), "s2 has no primary");
    }

    use super::*;

    fn record(at_ms: u64, status: u16) -> Record {
        Record {
            at: Duration::from_millis(at_ms),
            latency: Duration::from_millis(1),
            status,
            wrong: false,
        }
    }

    #[test]
    fn an_outage_runs_from_the_first_failure_to_the_next_success() {
        let records = [
            record(0, 201),
            record(100, 503),
            record(200, 0),
            record(300, 201),
            record(400, 201),
            record(500, 503),
        ];
        assert_eq!(
            outages(&records),
            [
                Outage {
                    start_s: 0.1,
                    seconds: 0.2,
                    failed: 2
                },
                Outage {
                    start_s: 0.5,
                    seconds: 0.0,
                    failed: 1
                }
            ]
        );
        assert!(outages(&[record(0, 200)]).is_empty());
        let r = Requests::of(&records);
        assert_eq!((r.sent, r.ok, r.failed), (6, 3, 3));
        assert_eq!(r.failed_by_status.get(&503), Some(&2));
        assert!((r.longest_outage_s - 0.2).abs() < 1e-9);
    }
}
