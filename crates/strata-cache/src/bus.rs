//! The invalidation bus that keeps every API server's L1 coherent, on Redis pub/sub.
//!
//! A writer, after its commit and its L2 update, publishes `key version` on one channel; every
//! server's subscriber marks that key stale in its L1 and acknowledges. The writer answers its
//! client once every subscriber Redis counted has acknowledged — so after a write is
//! acknowledged, no server holds the old value in L1.
//!
//! What if a subscriber is slow, cut off, or Redis itself is gone? Each server may serve from
//! its L1 only while it holds a **lease**: it publishes a heartbeat on its own channel every
//! [`BusConfig::heartbeat`] and, when the heartbeat comes back through its subscription at
//! time `sent`, may serve L1 until `sent + lease`. Redis delivers a subscriber's messages in
//! the order it processed them, so a heartbeat that comes back proves every invalidation Redis
//! had before it was applied. A writer whose acknowledgements do not all arrive within
//! [`BusConfig::ack_timeout`] (or whose publish fails) waits until `lease` has passed since its
//! publish ended: by then any server that missed the invalidation has stopped serving L1.
//! A lapsed lease empties L1; it fills again once heartbeats return.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::kv::CacheError;

/// The channel every server subscribes to for invalidations.
pub const INVALIDATION_CHANNEL: &str = "strata:cache:invalidate";

/// Timings of the bus.
#[derive(Debug, Clone, Copy)]
pub struct BusConfig {
    /// How often each server sends itself a heartbeat.
    pub heartbeat: Duration,
    /// How long after a heartbeat was sent the L1 may serve (must exceed `heartbeat` by the
    /// round trip and scheduling slack).
    pub lease: Duration,
    /// How long a writer waits for acknowledgements before falling back to waiting out the
    /// lease.
    pub ack_timeout: Duration,
    /// Deadline of each Redis call.
    pub call_timeout: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(50),
            lease: Duration::from_millis(300),
            ack_timeout: Duration::from_millis(100),
            call_timeout: Duration::from_millis(50),
        }
    }
}

/// What the bus drives: the L1 it keeps coherent.
#[async_trait]
pub trait InvalidationTarget: Send + Sync {
    /// `key` has a version `version` (or newer) that this server may not hold.
    async fn invalidated(&self, key: &str, version: u64);
    /// Everything in L1 may be stale: drop it.
    async fn clear(&self);
}

/// How a publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Every subscriber acknowledged.
    Acknowledged,
    /// Not every subscriber acknowledged in time (or Redis did not take the message); the
    /// writer waited out the lease instead.
    LeaseWaited,
}

#[derive(Default)]
struct Waiter {
    received: usize,
    expected: Option<usize>,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Waiter {
    fn settle(&mut self) {
        if self.expected.is_some_and(|e| self.received >= e)
            && let Some(done) = self.done.take()
        {
            let _ = done.send(());
        }
    }
}

struct Shared {
    node: u64,
    config: BusConfig,
    publisher: ConnectionManager,
    /// Start of the clock the lease is kept on.
    epoch: Instant,
    /// Lease end, in nanoseconds since `epoch` (0: no lease).
    lease_until: AtomicU64,
    heartbeats: Mutex<VecDeque<(u64, Instant)>>,
    waiters: Mutex<HashMap<u64, Waiter>>,
    seq: AtomicU64,
}

/// One server's end of the bus. Cheap to clone; the background tasks stop when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Bus {
    shared: Arc<Shared>,
    _tasks: Arc<TaskGuard>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("node", &self.shared.node)
            .field("lease_valid", &self.lease_valid())
            .finish_non_exhaustive()
    }
}

struct TaskGuard(Vec<tokio::task::AbortHandle>);
impl Drop for TaskGuard {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unavailable(e: impl std::fmt::Display) -> CacheError {
    CacheError::Unavailable(format!("invalidation bus: {e}"))
}

impl Bus {
    /// Connects to Redis at `url` and starts the subscriber and heartbeat tasks. The L1 may be
    /// used once the first heartbeat has come back ([`Bus::lease_valid`]).
    pub async fn start(
        url: &str,
        target: Arc<dyn InvalidationTarget>,
        config: BusConfig,
    ) -> Result<Self, CacheError> {
        let client = redis::Client::open(url).map_err(|e| {
            CacheError::Unavailable(format!("not a Redis URL ({e}): use redis://HOST:PORT"))
        })?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(config.call_timeout))
            .set_number_of_retries(1);
        let publisher = tokio::time::timeout(
            Duration::from_secs(2),
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await
        .map_err(|_| unavailable("no answer within 2 s"))?
        .map_err(unavailable)?;
        let shared = Arc::new(Shared {
            node: rand::random::<u64>() >> 1,
            config,
            publisher,
            epoch: Instant::now(),
            lease_until: AtomicU64::new(0),
            heartbeats: Mutex::new(VecDeque::new()),
            waiters: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
        });
        let subscriber = tokio::spawn(subscribe_loop(shared.clone(), client, target));
        let heartbeat = tokio::spawn(heartbeat_loop(shared.clone()));
        Ok(Self {
            shared,
            _tasks: Arc::new(TaskGuard(vec![
                subscriber.abort_handle(),
                heartbeat.abort_handle(),
            ])),
        })
    }

    /// May this server serve from its L1 now?
    pub fn lease_valid(&self) -> bool {
        self.shared.lease_valid()
    }

    /// Waits until this server holds a lease, up to `within`; whether it does.
    pub async fn wait_for_lease(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.lease_valid() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Tells every server that `key` is now at `version`, and returns once every one of them
    /// has dropped older values from its L1 (or, failing acknowledgements, once the lease has
    /// run out on any that did not).
    pub async fn publish(&self, key: &str, version: u64) -> Delivery {
        let s = &self.shared;
        let seq = s.seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&s.waiters).insert(
            seq,
            Waiter {
                done: Some(tx),
                ..Waiter::default()
            },
        );
        let message = format!("{key} {version} {} {seq}", s.node);
        let mut c = s.publisher.clone();
        let published = tokio::time::timeout(
            s.config.call_timeout,
            redis::cmd("PUBLISH")
                .arg(INVALIDATION_CHANNEL)
                .arg(&message)
                .query_async::<usize>(&mut c),
        )
        .await;
        let published_at = Instant::now();
        let delivered = match published {
            Ok(Ok(receivers)) => {
                if let Some(w) = lock(&s.waiters).get_mut(&seq) {
                    w.expected = Some(receivers);
                    w.settle();
                }
                tokio::time::timeout(s.config.ack_timeout, rx).await.is_ok()
            }
            _ => false,
        };
        lock(&s.waiters).remove(&seq);
        if delivered {
            metrics::counter!("strata_cache_invalidations_published_total", "delivery" => "acknowledged").increment(1);
            return Delivery::Acknowledged;
        }
        metrics::counter!("strata_cache_invalidations_published_total", "delivery" => "lease_waited").increment(1);
        tokio::time::sleep_until((published_at + s.config.lease).into()).await;
        Delivery::LeaseWaited
    }
}

impl Shared {
    fn lease_valid(&self) -> bool {
        let until = self.lease_until.load(Ordering::Acquire);
        until != 0 && (self.epoch.elapsed().as_nanos() as u64) < until
    }

    fn drop_lease(&self) {
        self.lease_until.store(0, Ordering::Release);
        metrics::gauge!("strata_cache_l1_coherent").set(0.0);
    }

    fn on_heartbeat(&self, seq: u64) {
        let sent = {
            let mut hb = lock(&self.heartbeats);
            let sent = hb.iter().find(|(s, _)| *s == seq).map(|(_, at)| *at);
            hb.retain(|(s, _)| *s > seq);
            sent
        };
        if let Some(sent) = sent {
            let until = (sent + self.config.lease)
                .duration_since(self.epoch)
                .as_nanos() as u64;
            self.lease_until.fetch_max(until, Ordering::AcqRel);
            metrics::gauge!("strata_cache_l1_coherent").set(1.0);
        }
    }

    fn on_ack(&self, seq: u64) {
        if let Some(w) = lock(&self.waiters).get_mut(&seq) {
            w.received += 1;
            w.settle();
        }
    }

    fn heartbeat_channel(&self) -> String {
        format!("strata:cache:heartbeat:{}", self.node)
    }

    fn ack_channel(node: u64) -> String {
        format!("strata:cache:ack:{node}")
    }
}

async fn heartbeat_loop(s: Arc<Shared>) {
    let channel = s.heartbeat_channel();
    let mut tick = tokio::time::interval(s.config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tick.tick().await;
        seq += 1;
        {
            let mut hb = lock(&s.heartbeats);
            hb.push_back((seq, Instant::now()));
            while hb.len() > 64 {
                hb.pop_front();
            }
        }
        let mut c = s.publisher.clone();
        let _ = tokio::time::timeout(
            s.config.call_timeout,
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(seq)
                .query_async::<usize>(&mut c),
        )
        .await;
    }
}

async fn subscribe_loop(
    s: Arc<Shared>,
    client: redis::Client,
    target: Arc<dyn InvalidationTarget>,
) {
    let heartbeat_channel = s.heartbeat_channel();
    let ack_channel = Shared::ack_channel(s.node);
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(INVALIDATION_CHANNEL).await?;
            pubsub.subscribe(&heartbeat_channel).await?;
            pubsub.subscribe(&ack_channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(Duration::from_secs(1), subscribed).await {
            Ok(Ok(p)) => p,
            _ => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Invalidations sent while we were not subscribed are lost: start from an empty L1.
        target.clear().await;
        let mut messages = pubsub.into_on_message();
        let mut lease_was_valid = false;
        while let Some(msg) = messages.next().await {
            let channel = msg.get_channel_name();
            let payload: &[u8] = msg.get_payload_bytes();
            let Ok(text) = std::str::from_utf8(payload) else {
                continue;
            };
            if channel == INVALIDATION_CHANNEL {
                let mut parts = text.split(' ');
                let (Some(key), Some(version), Some(origin), Some(seq)) = (
                    parts.next(),
                    parts.next().and_then(|v| v.parse::<u64>().ok()),
                    parts.next().and_then(|v| v.parse::<u64>().ok()),
                    parts.next().and_then(|v| v.parse::<u64>().ok()),
                ) else {
                    continue;
                };
                target.invalidated(key, version).await;
                metrics::counter!("strata_cache_invalidations_received_total").increment(1);
                if origin == s.node {
                    s.on_ack(seq);
                } else {
                    let mut c = s.publisher.clone();
                    let timeout = s.config.call_timeout;
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            timeout,
                            redis::cmd("PUBLISH")
                                .arg(Shared::ack_channel(origin))
                                .arg(seq)
                                .query_async::<usize>(&mut c),
                        )
                        .await;
                    });
                }
            } else if channel == heartbeat_channel {
                if let Ok(seq) = text.parse::<u64>() {
                    let lapsed = !s.lease_valid();
                    if lapsed && lease_was_valid {
                        // The lease ran out while connected (Redis stalled): messages may
                        // have been held back, so start again from an empty L1.
                        target.clear().await;
                    }
                    s.on_heartbeat(seq);
                    lease_was_valid = s.lease_valid();
                }
            } else if channel == ack_channel
                && let Ok(seq) = text.parse::<u64>()
            {
                s.on_ack(seq);
            }
        }
        // The connection is gone: stop serving L1 and start again from empty.
        s.drop_lease();
        target.clear().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
