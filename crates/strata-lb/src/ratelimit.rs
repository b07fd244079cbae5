//! Per-client-IP rate limiting: a token bucket per address.
//!
//! Each client IP may make `rate` requests per second on average, in bursts of up to `burst`.
//! A request over the limit is answered 429 with `Retry-After` (whole seconds until a token is
//! back). The table of buckets is bounded: when it holds [`MAX_CLIENTS`] addresses, buckets
//! that have refilled completely (clients that went quiet) are dropped first, and if none has,
//! the table starts over — a limiter never grows without bound under a flood of source
//! addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most client addresses tracked at once.
pub const MAX_CLIENTS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A token bucket per client IP.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// `rate` requests per second per client, bursts of `burst` (at least 1).
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate: rate.max(0.001),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `ip` at `now`; `Err(wait)` when there is none.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&ip) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * rate < burst
            });
            if buckets.len() >= MAX_CLIENTS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_the_rate_and_others_are_unaffected() {
        let l = RateLimiter::new(2.0, 3);
        let (a, b): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        let t = Instant::now();
        for _ in 0..3 {
            assert!(l.check(a, t).is_ok());
        }
        let wait = l.check(a, t).expect_err("burst spent");
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
        assert!(l.check(b, t).is_ok(), "another client has its own bucket");
        assert!(
            l.check(a, t + Duration::from_millis(500)).is_ok(),
            "a token comes back after 1/rate"
        );
        assert!(l.check(a, t + Duration::from_millis(500)).is_err());
    }
}
