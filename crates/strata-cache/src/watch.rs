//! Coherent L1s without Redis: before L1 serves a read, the cache asks a [`ChangeSource`] —
//! the data tier's own log of committed changes — what changed since it last asked, and drops
//! those keys from L1 first.
//!
//! The embedded topology runs several API processes on one SQLite file and no Redis, so there
//! is no bus to wait for. But every process can see the file: SQLite's `PRAGMA data_version`
//! changes on a connection whenever any other connection has committed, and each write logs
//! the keys it changed in the same transaction. So a read that begins after a write was
//! acknowledged — on any process — finds the log entry and drops the old value before it
//! could be served. Nothing waits on the writer's side.
//!
//! Cost: one poll per L1 read, a few microseconds when nothing changed. Reads that arrive
//! while a poll is running wait for the next one instead of each running their own: a poll
//! counts for a read only if it began after the read arrived (otherwise it could miss a write
//! acknowledged just before the read), so a burst of concurrent reads shares one poll after
//! the one in flight.
//!
//! A source that cannot be read (the database busy past its short timeout) makes that read
//! skip L1 and load from the data tier; nothing is lost, since the source's position only
//! advances on success.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::bus::InvalidationTarget;

/// What has been committed since the previous poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Nothing the cache holds.
    Nothing,
    /// These keys are now at (at least) these versions; a deleted key's version is its
    /// tombstone's.
    Keys(Vec<(String, u64)>),
    /// Anything may have changed (the log was trimmed past this reader's position, a bulk
    /// load, rows moved between shard groups): drop everything.
    Everything,
}

/// The committed changes to the data an L1 caches, in commit order, as the data tier logs them.
pub trait ChangeSource: Send + Sync {
    /// The changes committed since the previous call (the first call: since the source was
    /// opened). It runs before every L1 read and blocks the calling thread meanwhile, so it
    /// must take microseconds when nothing changed. An error leaves the position where it was.
    fn poll(&self) -> Result<Changes, String>;
}

/// A [`ChangeSource`] applied to one L1 (its [`InvalidationTarget`]).
pub struct Watch {
    source: Arc<dyn ChangeSource>,
    target: Arc<dyn InvalidationTarget>,
    /// Polls begun (each poll's number is this counter after it began).
    begun: AtomicU64,
    /// The last finished poll: its number × 2, plus 1 if it succeeded.
    finished: AtomicU64,
    turn: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("polls", &self.begun.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Watch {
    pub fn new(source: Arc<dyn ChangeSource>, target: Arc<dyn InvalidationTarget>) -> Self {
        Self {
            source,
            target,
            begun: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Applies to L1 every change committed before this call. `false` when the source could
    /// not be read: L1 must not serve this read.
    pub async fn catch_up(&self) -> bool {
        let arrived = self.begun.load(Ordering::Acquire);
        let _turn = self.turn.lock().await;
        let finished = self.finished.load(Ordering::Acquire);
        if finished >> 1 > arrived {
            // A poll that began after this read arrived has finished meanwhile.
            return finished & 1 == 1;
        }
        let number = self.begun.fetch_add(1, Ordering::AcqRel) + 1;
        let ok = match self.source.poll() {
            Ok(Changes::Nothing) => true,
            Ok(Changes::Keys(keys)) => {
                for (key, version) in &keys {
                    self.target.invalidated(key, *version).await;
                }
                metrics::counter!("strata_cache_invalidations_received_total")
                    .increment(keys.len() as u64);
                true
            }
            Ok(Changes::Everything) => {
                self.target.clear().await;
                metrics::counter!("strata_cache_l1_clears_total").increment(1);
                true
            }
            Err(e) => {
                metrics::counter!("strata_cache_watch_errors_total").increment(1);
                tracing::debug!(error = %e, "cannot read the change log: this read skips L1");
                false
            }
        };
        if finished == 0 || ok != (finished & 1 == 1) {
            metrics::gauge!("strata_cache_l1_coherent").set(if ok { 1.0 } else { 0.0 });
        }
        self.finished
            .store(number << 1 | u64::from(ok), Ordering::Release);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Log {
        pending: Mutex<Vec<Changes>>,
        polls: AtomicU64,
    }
    impl ChangeSource for Log {
        fn poll(&self) -> Result<Changes, String> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            let mut p = self.pending.lock().map_err(|e| e.to_string())?;
            Ok(if p.is_empty() {
                Changes::Nothing
            } else {
                p.remove(0)
            })
        }
    }
    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);
    #[async_trait::async_trait]
    impl InvalidationTarget for Seen {
        async fn invalidated(&self, key: &str, version: u64) {
            if let Ok(mut s) = self.0.lock() {
                s.push(format!("{key}@{version}"));
            }
        }
        async fn clear(&self) {
            if let Ok(mut s) = self.0.lock() {
                s.push("*".into());
            }
        }
    }

    #[tokio::test]
    async fn every_read_applies_what_was_logged_before_it_and_concurrent_reads_share_polls() {
        let log = Arc::new(Log::default());
        let seen = Arc::new(Seen::default());
        let watch = Arc::new(Watch::new(log.clone(), seen.clone()));
        log.pending
            .lock()
            .expect("lock")
            .push(Changes::Keys(vec![("user:1".into(), 2)]));
        assert!(watch.catch_up().await);
        log.pending.lock().expect("lock").push(Changes::Everything);
        assert!(watch.catch_up().await);
        assert_eq!(*seen.0.lock().expect("lock"), ["user:1@2", "*"]);

        let before = log.polls.load(Ordering::SeqCst);
        let reads: Vec<_> = (0..200)
            .map(|_| {
                let w = watch.clone();
                tokio::spawn(async move { w.catch_up().await })
            })
            .collect();
        for r in reads {
            assert!(r.await.expect("join"));
        }
        let polls = log.polls.load(Ordering::SeqCst) - before;
        assert!((1..=200).contains(&polls), "{polls} polls for 200 reads");
    }
}
