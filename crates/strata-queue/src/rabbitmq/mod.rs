//! The queue tier at scale: [`RabbitQueue`], the [`Queue`] contract on a RabbitMQ broker
//! (3.10 or later) through `lapin`, passing the same suite as the embedded engine.
//!
//! How the contract maps to AMQP ([`topology`] has the names and arguments):
//! - **durable publish**: quorum queues (replicated by Raft, fsynced) and publisher confirms: a
//!   publish returns once the broker confirmed it; `mandatory`, so a missing queue is an error,
//!   not a silent drop;
//! - **leases**: [`Queue::receive`] takes a delivery from consumers on the queue's three work
//!   queues, on one channel with a prefetch ([`RabbitConfig::prefetch`] per priority). The lease
//!   is the delivery tag on that live channel, with a client-side timer for the visibility
//!   timeout: when it runs out the delivery is requeued (`basic.nack`, requeue). A lost channel
//!   or connection makes every lease on it [`QueueError::LeaseLost`], and the broker redelivers;
//! - **attempts**: the count is `x-strata-attempts` (attempts before this copy was published)
//!   plus the quorum queue's `x-delivery-count` (returns of this copy) plus one. A delivery
//!   whose attempts are used up is dead-lettered by the receive that meets it, as the embedded
//!   engine does; the queue's `x-delivery-limit` is a backstop for copies returned more often
//!   than that without any receive seeing them (the broker dead-letters them, at least once);
//! - **retries**: a nack publishes a copy (confirmed) to the wait queue of a rung of the
//!   back-off ladder, then acks; the wait queue's TTL dead-letters it back to its work queue;
//! - **delays**: the same wait queues, with a not-before time in the message: a copy that comes
//!   back early (a delay beyond the highest rung) waits again;
//! - **dead letters**: a dead queue. Listing, replaying and purging one message read the dead
//!   queue with `basic.get` without acknowledging and hand back what they leave (closing the
//!   channel); purging all is `queue.purge`;
//! - **priorities**: quorum queues of 3.10 have no `x-max-priority`, so each priority has its
//!   own quorum queue and a receive takes the most urgent delivery it holds. When consumers
//!   start, the receive waits until what each work queue held has arrived, and before it hands
//!   out a less urgent delivery it checks (for 200 ms at most) that no more urgent one is ready
//!   on the broker or on its way to this client;
//! - **reconnection**: every operation checks its connection; a lost one is opened again and
//!   every queue this engine has used is declared again before anything else.
//!
//! What cannot be matched exactly:
//! - [`QueueStats::in_flight`] counts this engine's own leases (AMQP does not report other
//!   consumers' unacknowledged deliveries); messages prefetched by this engine and not yet
//!   received count as ready; [`QueueStats::oldest_ready_age_ms`] is the oldest of those (AMQP
//!   cannot look at a queue's head without taking it), 0 when there are none;
//! - the length bound counts ready and dead messages on the broker and this engine's leases,
//!   checked before publishing; the broker itself bounds each work and wait queue to the same
//!   length (`x-max-length`, publish refused). Messages in wait queues and other consumers'
//!   deliveries are not in the count, and two publishers may both pass the check;
//! - attempts count every return of a copy to its quorum queue, so a delivery prefetched by an
//!   engine whose channel closes counts as an attempt even if no receive had taken it;
//! - a released delivery is published again and acknowledged: it goes to the back of its
//!   queue, not the front;
//! - listing or replaying dead letters holds every dead letter briefly, so the dead count
//!   drops meanwhile, and two operators listing at once each see a part;
//! - an extended lease cannot outlive the broker's `consumer_timeout` (30 minutes by default):
//!   past it the broker closes the channel and the message is redelivered.

mod dead;
mod intake;
mod link;
pub mod topology;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use lapin::options::{BasicAckOptions, QueuePurgeOptions};
use lapin::types::ShortString;

use self::intake::{Intake, Lease};
use self::link::Link;
use self::topology::Stamp;
use crate::{
    DeadLetter, Delivery, Failed, Message, MessageId, Outgoing, Queue, QueueError, QueueName,
    QueuePolicy, QueueStats,
};

/// How an engine reaches its broker and what it asks of it.
#[derive(Debug, Clone)]
pub struct RabbitConfig {
    /// `amqp://user:password@host:port/vhost`.
    pub url: String,
    /// Prefix of every RabbitMQ name this engine uses (a deployment's name), so that several
    /// deployments share a broker.
    pub namespace: QueueName,
    pub policy: QueuePolicy,
    /// Deliveries the broker sends ahead per priority level: a worker's concurrency.
    pub prefetch: u16,
    /// How long one broker operation (connecting included) may take before it fails.
    pub timeout: Duration,
}

impl RabbitConfig {
    /// Namespace `strata`, prefetch 1, ten-second operations.
    pub fn new(url: impl Into<String>, policy: QueuePolicy) -> Self {
        Self {
            url: url.into(),
            namespace: QueueName(String::from("strata")),
            policy,
            prefetch: 1,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The RabbitMQ engine. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct RabbitQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RabbitQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitQueue")
            .field("namespace", &self.inner.config.namespace)
            .field("policy", &self.inner.config.policy)
            .finish()
    }
}

struct Inner {
    config: RabbitConfig,
    waits: Vec<u64>,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    generation: AtomicU64,
    /// Every queue this engine has used: declared again on a new connection.
    known: Mutex<BTreeSet<QueueName>>,
    intakes: tokio::sync::Mutex<HashMap<QueueName, Arc<Intake>>>,
    leases: Arc<Mutex<HashMap<u64, Lease>>>,
    next_receipt: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn engine(what: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Engine(format!("RabbitMQ: {what}: {e}"))
}

fn lease_lost(d: &Delivery) -> QueueError {
    QueueError::LeaseLost {
        queue: d.queue.clone(),
        id: d.message.id,
    }
}

impl RabbitQueue {
    /// An engine for the broker at `config.url`. Connects on first use (and again whenever the
    /// connection is lost), so it can be built before the broker is up.
    pub fn new(config: RabbitConfig) -> Self {
        let waits = topology::waits(&config.policy);
        Self {
            inner: Arc::new(Inner {
                config,
                waits,
                link: tokio::sync::Mutex::new(None),
                generation: AtomicU64::new(0),
                known: Mutex::new(BTreeSet::new()),
                intakes: tokio::sync::Mutex::new(HashMap::new()),
                leases: Arc::new(Mutex::new(HashMap::new())),
                next_receipt: AtomicU64::new(1),
            }),
        }
    }

    /// Connects and declares `queue`'s RabbitMQ objects now, rather than on first use.
    pub async fn declare(&self, queue: &QueueName) -> Result<(), QueueError> {
        self.topology(queue).await.map(|_| ())
    }

    /// How many connections this engine has opened: more than one once it has connected again
    /// after losing the broker.
    pub fn connections(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The rules this engine applies.
    pub fn policy(&self) -> QueuePolicy {
        self.inner.config.policy
    }

    /// Closes the connection: every lease is lost and the broker delivers those messages again
    /// (a worker that stops without draining). The next operation connects again.
    pub async fn close(&self) {
        self.inner.intakes.lock().await.clear();
        lock(&self.inner.leases).clear();
        if let Some(link) = self.inner.link.lock().await.take() {
            let _ = link
                .connection
                .close(200, ShortString::from("closed"))
                .await;
        }
    }
}

#[async_trait]
impl Queue for RabbitQueue {
    async fn publish(&self, queue: &QueueName, message: Outgoing) -> Result<MessageId, QueueError> {
        let policy = self.inner.config.policy;
        if message.payload.len() > policy.max_message_bytes {
            return Err(QueueError::TooLarge {
                size: message.payload.len(),
                max: policy.max_message_bytes,
            });
        }
        let link = self.topology(queue).await?;
        let stats = self.count(queue, false).await?;
        let length = stats.ready + stats.dead + stats.in_flight;
        if length >= policy.max_length {
            return Err(QueueError::Full {
                queue: queue.clone(),
                length,
                max: policy.max_length,
            });
        }
        let now = now_ms();
        let out = Message {
            id: MessageId(rand::random_range(1..=i64::MAX as u64)),
            payload: message.payload,
            priority: message.priority,
            attempt: 0,
            published_at_ms: now,
        };
        let not_before = (!message.delay.is_zero())
            .then(|| now.saturating_add(message.delay.as_millis() as u64));
        self.place(&link, queue, &out, 0, not_before).await?;
        Ok(out.id)
    }

    async fn receive(
        &self,
        queue: &QueueName,
        wait: Duration,
    ) -> Result<Option<Delivery>, QueueError> {
        let deadline = Instant::now() + wait;
        // How long a less urgent delivery waits for a more urgent one the broker is sending
        // (not past the caller's wait: a receive that cannot wait takes what is here).
        let patience = deadline.min(Instant::now() + Duration::from_millis(200));
        loop {
            let intake = match self.intake(queue).await {
                Ok(i) => i,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::debug!(queue = %queue, error = %e, "RabbitMQ is not reachable; trying again.");
                    tokio::time::sleep(Duration::from_millis(100).min(deadline - Instant::now()))
                        .await;
                    continue;
                }
            };
            let arrived = intake.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            while let Some((rank, d)) = intake.pop() {
                if rank < 2
                    && Instant::now() < patience
                    && self.more_urgent(&intake, queue, rank).await?
                {
                    intake.push_front(rank, d);
                    break;
                }
                if let Some(delivery) = self.admit(queue, d).await? {
                    return Ok(Some(delivery));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Woken by a delivery or the channel closing; the nap bounds a missed wake-up.
            let nap = Duration::from_millis(250).min(deadline - now);
            tokio::select! {
                _ = arrived => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let lease = self.take_lease(delivery)?;
        self.settle(delivery, lease).await
    }

    async fn nack(&self, delivery: &Delivery, error: &str) -> Result<Failed, QueueError> {
        let lease = self.take_lease(delivery)?;
        let policy = self.inner.config.policy;
        let error: String = error.chars().take(2_000).collect();
        let (queue, m) = (&delivery.queue, &delivery.message);
        let placed = async {
            let link = self.link().await?;
            if m.attempt >= policy.max_attempts {
                self.bury(&link, queue, m, m.attempt, &error).await?;
                return Ok(Failed::DeadLettered);
            }
            let wait =
                topology::backoff_wait(&policy, &self.inner.waits, m.attempt, &mut rand::rng());
            let names = self.names(queue);
            let key = wait.map_or_else(|| names.work(m.priority), |ms| names.wait(ms));
            let stamp = Stamp {
                priority: m.priority,
                attempts: m.attempt,
                published_ms: m.published_at_ms,
                not_before_ms: None,
                dead: None,
            };
            self.send(&link, queue, &key, m.id, &m.payload, stamp)
                .await?;
            Ok(Failed::RetryAfter(Duration::from_millis(wait.unwrap_or(0))))
        }
        .await;
        match placed {
            Ok(outcome) => self.settle(delivery, lease).await.map(|()| outcome),
            Err(e) => {
                Self::requeue(lease).await;
                Err(e)
            }
        }
    }

    async fn release(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let lease = self.take_lease(delivery)?;
        let m = &delivery.message;
        let placed = async {
            let link = self.link().await?;
            self.place(&link, &delivery.queue, m, m.attempt.saturating_sub(1), None)
                .await
        }
        .await;
        match placed {
            Ok(_) => self.settle(delivery, lease).await,
            Err(e) => {
                Self::requeue(lease).await;
                Err(e)
            }
        }
    }

    async fn extend(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let mut leases = lock(&self.inner.leases);
        match leases.get_mut(&delivery.receipt.0) {
            Some(l) if l.id == delivery.message.id && l.acker.usable() => {
                l.deadline = Instant::now() + self.inner.config.policy.visibility_timeout;
                Ok(())
            }
            _ => Err(lease_lost(delivery)),
        }
    }

    async fn stats(&self, queue: &QueueName) -> Result<QueueStats, QueueError> {
        self.count(queue, true).await
    }

    async fn dead_letters(
        &self,
        queue: &QueueName,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        self.with_dead(queue, async |_, held| {
            Ok((held.into_iter().take(limit).map(|(l, _)| l).collect(), 0))
        })
        .await
    }

    async fn replay(&self, queue: &QueueName, id: Option<MessageId>) -> Result<u64, QueueError> {
        let n = self
            .with_dead(queue, async |link, held| {
                let mut n = 0;
                for (letter, acker) in held {
                    if id.is_some_and(|id| id != letter.message.id) {
                        continue;
                    }
                    self.place(link, queue, &letter.message, 0, None).await?;
                    self.bounded("acknowledging", acker.ack(BasicAckOptions::default()))
                        .await?;
                    n += 1;
                }
                Ok((n, n))
            })
            .await?;
        match (id, n) {
            (Some(id), 0) => Err(QueueError::NoSuchDeadLetter {
                queue: queue.clone(),
                id,
            }),
            _ => Ok(n),
        }
    }

    async fn purge(&self, queue: &QueueName, id: Option<MessageId>) -> Result<u64, QueueError> {
        let Some(id) = id else {
            let link = self.topology(queue).await?;
            let dead = self.names(queue).dead();
            let n = self
                .bounded(
                    "purging dead letters",
                    link.publisher
                        .queue_purge(dead.as_str().into(), QueuePurgeOptions::default()),
                )
                .await?;
            return Ok(u64::from(n));
        };
        let n = self
            .with_dead(queue, async |_, held| {
                let mut n = 0;
                for (letter, acker) in held {
                    if letter.message.id == id {
                        self.bounded("acknowledging", acker.ack(BasicAckOptions::default()))
                            .await?;
                        n += 1;
                    }
                }
                Ok((n, n))
            })
            .await?;
        if n == 0 {
            return Err(QueueError::NoSuchDeadLetter {
                queue: queue.clone(),
                id,
            });
        }
        Ok(n)
    }
}
