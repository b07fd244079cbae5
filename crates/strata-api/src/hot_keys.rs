//! The hottest users this server reads: a bounded top-k sketch, exported on `/metrics`, so an
//! operator sees a celebrity before its shard group melts (and can give it a group of its own
//! with `strata shard pin`).
//!
//! The sketch is Space-Saving (Metwally, Agrawal and El Abbadi, 2005): `CAPACITY` counters; a
//! key already counted is incremented; a new key takes the place of the smallest counter and
//! inherits its count (plus one), which it records as its possible overcount. Any key read more
//! than `1/CAPACITY` of the time is guaranteed to be in the sketch, and its count is exact to
//! within its recorded error. Memory is bounded whatever the traffic. Counts cover windows of
//! `WINDOW`; `/metrics` shows the last complete window, so the list follows what is hot now.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counters kept per window.
pub const CAPACITY: usize = 64;
/// Keys exported.
pub const TOP: usize = 10;
/// Length of one counting window.
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Clone)]
struct Sketch {
    /// key → (count, possible overcount)
    counters: HashMap<u64, (u64, u64)>,
    total: u64,
}

impl Sketch {
    fn record(&mut self, key: u64) {
        self.total += 1;
        if let Some(c) = self.counters.get_mut(&key) {
            c.0 += 1;
            return;
        }
        if self.counters.len() < CAPACITY {
            self.counters.insert(key, (1, 0));
            return;
        }
        let Some((&victim, &(min, _))) = self.counters.iter().min_by_key(|(_, (c, _))| *c) else {
            return;
        };
        self.counters.remove(&victim);
        self.counters.insert(key, (min + 1, min));
    }

    /// The `n` largest counters: (key, count, possible overcount), largest first.
    fn top(&self, n: usize) -> Vec<(u64, u64, u64)> {
        let mut all: Vec<(u64, u64, u64)> = self
            .counters
            .iter()
            .map(|(&k, &(c, e))| (k, c, e))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

/// The hot-key sketch of one API server.
#[derive(Debug)]
pub struct HotKeys {
    inner: Mutex<Windows>,
}

#[derive(Debug)]
struct Windows {
    started: Instant,
    current: Sketch,
    last: Sketch,
}

impl Default for HotKeys {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Windows {
                started: Instant::now(),
                current: Sketch::default(),
                last: Sketch::default(),
            }),
        }
    }
}

impl HotKeys {
    /// Counts one read of `user`.
    pub fn record(&self, user: u64) {
        self.record_at(user, Instant::now());
    }

    fn record_at(&self, user: u64, now: Instant) {
        let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        w.rotate(now);
        w.current.record(user);
    }

    /// The last complete window's hottest users: (user, reads, possible overcount).
    pub fn top(&self) -> (u64, Vec<(u64, u64, u64)>) {
        let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        w.rotate(Instant::now());
        (w.last.total, w.last.top(TOP))
    }

    /// The Prometheus text for `/metrics`.
    pub fn render(&self) -> String {
        let (total, top) = self.top();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP strata_hot_key_reads Reads of the hottest users in the last complete {} s window (Space-Saving top-{TOP} of {CAPACITY} counters; overcount at most the error).",
            WINDOW.as_secs()
        );
        let _ = writeln!(out, "# TYPE strata_hot_key_reads gauge");
        for (rank, (user, count, _)) in top.iter().enumerate() {
            let _ = writeln!(
                out,
                "strata_hot_key_reads{{rank=\"{}\",user=\"{user}\"}} {count}",
                rank + 1
            );
        }
        let _ = writeln!(
            out,
            "# HELP strata_hot_key_error Possible overcount of each hot user's reads."
        );
        let _ = writeln!(out, "# TYPE strata_hot_key_error gauge");
        for (rank, (user, _, error)) in top.iter().enumerate() {
            let _ = writeln!(
                out,
                "strata_hot_key_error{{rank=\"{}\",user=\"{user}\"}} {error}",
                rank + 1
            );
        }
        let _ = writeln!(
            out,
            "# HELP strata_hot_key_window_reads Reads counted in that window."
        );
        let _ = writeln!(out, "# TYPE strata_hot_key_window_reads gauge");
        let _ = writeln!(out, "strata_hot_key_window_reads {total}");
        out
    }
}

impl Windows {
    fn rotate(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed < WINDOW {
            return;
        }
        // A window with no reads after it leaves an empty "last" one.
        self.last = if elapsed < WINDOW * 2 {
            std::mem::take(&mut self.current)
        } else {
            self.current = Sketch::default();
            Sketch::default()
        };
        self.started = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_celebrity_among_many_once_read_users_is_found_with_its_count() {
        let mut s = Sketch::default();
        // 100,000 reads: user 42 takes 5%, user 7 takes 2%, the rest are read once each.
        let mut once = 1_000_000u64;
        for i in 0..100_000u64 {
            if i % 20 == 0 {
                s.record(42);
            } else if i % 50 == 1 {
                s.record(7);
            } else {
                once += 1;
                s.record(once);
            }
        }
        let top = s.top(2);
        assert_eq!(top[0].0, 42);
        assert_eq!(top[1].0, 7);
        // Exact to within the recorded error, never under.
        let (_, count, error) = top[0];
        assert!(count >= 5_000 && count - error <= 5_000, "{top:?}");
        assert!(s.counters.len() <= CAPACITY);
    }

    #[test]
    fn metrics_show_the_last_complete_window() {
        let hot = HotKeys::default();
        let start = Instant::now();
        for _ in 0..30 {
            hot.record_at(12, start);
        }
        hot.record_at(5, start);
        // Nothing complete yet.
        assert!(!hot.render().contains("user=\"12\""));
        // The next window begins: the first one is shown.
        hot.record_at(5, start + WINDOW + Duration::from_millis(1));
        let (total, top) = {
            let w = hot.inner.lock().expect("lock");
            (w.last.total, w.last.top(TOP))
        };
        assert_eq!(total, 31);
        assert_eq!(top[0], (12, 30, 0));
        let text = hot.render();
        assert!(
            text.contains("strata_hot_key_reads{rank=\"1\",user=\"12\"} 30"),
            "{text}"
        );
    }
}
