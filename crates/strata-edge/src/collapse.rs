//! Request collapsing: one origin fetch per URL however many clients wait for it.
//!
//! The first request that must go to the origin for an object becomes its *leader*; requests
//! for the same object that arrive meanwhile become *followers*: they wait (bounded by a
//! deadline) for the leader to finish, then look in the store again. An object is a variant
//! when the URL's `Vary` is known, else the URL. What the leader stored answers
//! them; when it stored nothing (the answer was private, or for another variant), each goes
//! on its own — and the URL is remembered as uncacheable for a while ([`Flights::pass`]), so
//! later requests for it do not queue behind each other (Varnish's "hit-for-miss").
//!
//! The map of flights holds one entry per URL being fetched, removed when the leader's guard
//! drops (on success, failure, timeout or cancellation alike): it is bounded by the requests
//! in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// How long a URL whose answer could not be stored skips collapsing.
const PASS_FOR: Duration = Duration::from_secs(10);
/// The most URLs remembered as uncacheable.
const MAX_PASS: u64 = 100_000;

/// The fetches in flight, by URL key.
pub struct Flights {
    map: Mutex<HashMap<String, watch::Receiver<bool>>>,
    pass: moka::future::Cache<String, ()>,
}

impl std::fmt::Debug for Flights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights").finish_non_exhaustive()
    }
}

/// Held by the one request fetching a URL; dropping it releases the followers.
pub struct Leader {
    flights: Arc<Flights>,
    key: String,
    done: watch::Sender<bool>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.flights
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        let _ = self.done.send(true);
    }
}

/// A request's part in a URL's fetch.
pub enum Role {
    Leader(Leader),
    /// Another request is fetching the URL: wait on this, then look again.
    Follower(watch::Receiver<bool>),
}

impl Default for Flights {
    fn default() -> Self {
        Self {
            map: Mutex::default(),
            pass: moka::future::Cache::builder()
                .max_capacity(MAX_PASS)
                .time_to_live(PASS_FOR)
                .build(),
        }
    }
}

impl Flights {
    /// Leads the fetch of `key`, or follows the one in flight.
    pub fn join(self: &Arc<Self>, key: &str) -> Role {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = map.get(key) {
            return Role::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(false);
        map.insert(key.to_string(), rx);
        Role::Leader(Leader {
            flights: self.clone(),
            key: key.to_string(),
            done: tx,
        })
    }

    /// Leads the fetch of `key` if nobody is fetching it; `None` otherwise (a background
    /// refresh that someone else is already doing).
    pub fn try_lead(self: &Arc<Self>, key: &str) -> Option<Leader> {
        match self.join(key) {
            Role::Leader(l) => Some(l),
            Role::Follower(_) => None,
        }
    }

    /// Waits until the leader is done, or `timeout` passes. True when it is done.
    pub async fn wait(mut rx: watch::Receiver<bool>, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, rx.wait_for(|done| *done))
            .await
            .is_ok_and(|r| r.is_ok())
            || rx.has_changed().is_err()
    }

    /// Remembers that `key`'s answers cannot be stored: requests for it skip collapsing.
    pub async fn mark_pass(&self, key: &str) {
        self.pass.insert(key.to_string(), ()).await;
    }

    /// Forgets that mark (the URL's answer was stored after all).
    pub async fn unmark_pass(&self, key: &str) {
        self.pass.invalidate(key).await;
    }

    /// Whether `key` was recently found uncacheable.
    pub async fn pass(&self, key: &str) -> bool {
        self.pass.contains_key(key)
    }

    /// Fetches in flight now.
    pub fn in_flight(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_per_key_and_followers_wake_when_it_drops() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(leader) = flights.join("a") else {
            panic!("the first request leads");
        };
        let Role::Follower(rx) = flights.join("a") else {
            panic!("the second follows");
        };
        assert!(matches!(flights.join("b"), Role::Leader(_)));
        let waiter = tokio::spawn(Flights::wait(rx, Duration::from_secs(10)));
        drop(leader);
        assert!(waiter.await.expect("joins"));
        assert_eq!(flights.in_flight(), 0);
        assert!(matches!(flights.join("a"), Role::Leader(_)));
    }

    #[tokio::test]
    async fn a_follower_gives_up_at_its_deadline() {
        let flights = Arc::new(Flights::default());
        let _leader = flights.try_lead("a").expect("leads");
        assert!(flights.try_lead("a").is_none());
        let Role::Follower(rx) = flights.join("a") else {
            panic!("follows");
        };
        assert!(!Flights::wait(rx, Duration::from_millis(20)).await);
    }
}
