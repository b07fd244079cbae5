//! A backend server and what the balancer knows about it: health from active checks, passive
//! outlier ejection, draining, and counters.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// One backend. Shared (`Arc`) between the pool, requests in flight and health checks, so a
/// backend removed from the pool finishes its in-flight requests undisturbed.
#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub in_flight: AtomicUsize,
    /// Verdict of active health checks (true until a check says otherwise).
    healthy: AtomicBool,
    consecutive_ok: AtomicU32,
    consecutive_bad: AtomicU32,
    /// Passive outlier detection: consecutive failed requests.
    consecutive_failures: AtomicU32,
    ejection: Mutex<Ejection>,
    draining: AtomicBool,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    /// Metric handles for the common case (status 200), registered once instead of looked up
    /// per request.
    ok_metrics: std::sync::OnceLock<OkMetrics>,
}

/// Registered metric handles for a backend's 200 answers.
#[derive(Debug)]
pub struct OkMetrics {
    pub requests: metrics::Counter,
    pub latency: metrics::Histogram,
}

#[derive(Debug, Default)]
struct Ejection {
    until: Option<Instant>,
    /// How many times in a row this backend was ejected (drives the back-off).
    times: u32,
    total: u64,
}

/// Outlier ejection policy.
#[derive(Debug, Clone, Copy)]
pub struct OutlierPolicy {
    /// Consecutive connect failures or 5xx answers that eject a backend.
    pub consecutive_failures: u32,
    /// First ejection lasts this long; each further one doubles it, up to `max_ejection`.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(30),
        }
    }
}

/// A backend's state for the admin API.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendView {
    pub name: String,
    pub addr: String,
    pub weight: u32,
    pub healthy: bool,
    pub ejected: bool,
    pub draining: bool,
    pub eligible: bool,
    pub in_flight: usize,
    pub requests: u64,
    pub failures: u64,
    pub ejections: u64,
}

impl Backend {
    pub fn new(name: impl Into<String>, addr: SocketAddr, weight: u32) -> Self {
        Self {
            name: name.into(),
            addr,
            weight: weight.max(1),
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            consecutive_ok: AtomicU32::new(0),
            consecutive_bad: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejection: Mutex::new(Ejection::default()),
            draining: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ok_metrics: std::sync::OnceLock::new(),
        }
    }

    fn ejection(&self) -> std::sync::MutexGuard<'_, Ejection> {
        self.ejection.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handles for `strata_lb_requests_total` / `strata_lb_request_duration_seconds` with
    /// status 200 in `pool`.
    pub fn ok_metrics(&self, pool: &str) -> &OkMetrics {
        self.ok_metrics.get_or_init(|| {
            let labels = [
                ("pool", pool.to_string()),
                ("backend", self.name.clone()),
                ("status", "200".to_string()),
            ];
            OkMetrics {
                requests: metrics::counter!("strata_lb_requests_total", &labels),
                latency: metrics::histogram!("strata_lb_request_duration_seconds", &labels),
            }
        })
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub fn is_ejected(&self) -> bool {
        self.ejection().until.is_some()
    }

    /// Ejected, and its back-off has passed: time to probe it.
    pub fn due_for_probe(&self, now: Instant) -> bool {
        self.ejection().until.is_some_and(|t| now >= t)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Release);
    }

    /// May receive new requests.
    pub fn is_eligible(&self) -> bool {
        self.is_healthy() && !self.is_ejected() && !self.is_draining()
    }

    /// Records a successful request. Returns nothing to rebuild.
    pub fn record_success(&self) {
        // Read first: a store on every request would bounce the cache line between workers.
        if self.consecutive_failures.load(Ordering::Acquire) != 0 {
            self.consecutive_failures.store(0, Ordering::Release);
        }
    }

    /// Records a failed request (connect failure, reset, 5xx). True if it ejected the backend.
    pub fn record_failure(&self, policy: &OutlierPolicy) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n < policy.consecutive_failures {
            return false;
        }
        let mut e = self.ejection();
        if e.until.is_some() {
            return false;
        }
        let backoff = policy
            .base_ejection
            .saturating_mul(1 << e.times.min(16))
            .min(policy.max_ejection);
        e.until = Some(Instant::now() + backoff);
        e.times += 1;
        e.total += 1;
        true
    }

    /// A probe after ejection: success re-admits, failure ejects again for longer.
    pub fn probe_result(&self, ok: bool, policy: &OutlierPolicy) -> bool {
        let mut e = self.ejection();
        if e.until.is_none() {
            return false;
        }
        if ok {
            e.until = None;
            e.times = 0;
            self.consecutive_failures.store(0, Ordering::Release);
        } else {
            let backoff = policy
                .base_ejection
                .saturating_mul(1 << e.times.min(16))
                .min(policy.max_ejection);
            e.until = Some(Instant::now() + backoff);
            e.times += 1;
        }
        ok
    }

    /// Applies an active health check result with rise/fall thresholds. True if the verdict
    /// changed.
    pub fn health_check_result(&self, ok: bool, rise: u32, fall: u32) -> bool {
        if ok {
            self.consecutive_bad.store(0, Ordering::Release);
            let n = self.consecutive_ok.fetch_add(1, Ordering::AcqRel) + 1;
            if !self.is_healthy() && n >= rise {
                self.healthy.store(true, Ordering::Release);
                return true;
            }
        } else {
            self.consecutive_ok.store(0, Ordering::Release);
            let n = self.consecutive_bad.fetch_add(1, Ordering::AcqRel) + 1;
            if self.is_healthy() && n >= fall {
                self.healthy.store(false, Ordering::Release);
                return true;
            }
        }
        false
    }

    pub fn view(&self) -> BackendView {
        let ejections = self.ejection().total;
        BackendView {
            name: self.name.clone(),
            addr: self.addr.to_string(),
            weight: self.weight,
            healthy: self.is_healthy(),
            ejected: self.is_ejected(),
            draining: self.is_draining(),
            eligible: self.is_eligible(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            ejections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> Backend {
        Backend::new("b", "127.0.0.1:1".parse().expect("addr"), 1)
    }

    #[test]
    fn consecutive_failures_eject_and_a_good_probe_readmits() {
        let policy = OutlierPolicy {
            consecutive_failures: 3,
            base_ejection: Duration::ZERO,
            max_ejection: Duration::from_secs(1),
        };
        let b = b();
        assert!(!b.record_failure(&policy));
        b.record_success();
        assert!(!b.record_failure(&policy) && !b.record_failure(&policy));
        assert!(
            b.record_failure(&policy),
            "the third consecutive failure ejects"
        );
        assert!(!b.is_eligible());
        assert!(b.due_for_probe(Instant::now()));
        b.probe_result(false, &policy);
        assert!(b.is_ejected(), "a failed probe keeps it out");
        b.probe_result(true, &policy);
        assert!(b.is_eligible(), "a good probe re-admits");
    }

    #[test]
    fn active_checks_honour_rise_and_fall() {
        let b = b();
        assert!(!b.health_check_result(false, 2, 2));
        assert!(
            b.health_check_result(false, 2, 2),
            "the second failure marks it down"
        );
        assert!(!b.is_eligible());
        assert!(!b.health_check_result(true, 2, 2));
        assert!(
            b.health_check_result(true, 2, 2),
            "the second success brings it back"
        );
        assert!(b.is_eligible());
    }
}
