//! Receiving: the consumers of a queue's work queues on one channel with a prefetch, what
//! they delivered that no receive has taken yet, choosing the most urgent, turning a delivery
//! into a lease (or a dead letter, or another wait), and leases with their visibility timer.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use lapin::Acker;
use lapin::Channel;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use tokio::sync::Notify;

use super::topology::{self, PRIORITIES};
use super::{RabbitQueue, lease_lost, lock, now_ms};
use crate::{Delivery, Message, MessageId, Priority, QueueError, QueueName, Receipt};

/// The consumers of one queue's work queues, on one channel, and what they delivered that no
/// receive has taken yet (by rank).
pub(super) struct Intake {
    pub(super) generation: u64,
    pub(super) channel: Channel,
    pub(super) buffers: Mutex<[VecDeque<lapin::message::Delivery>; 3]>,
    pub(super) arrived: Notify,
    pub(super) closed: AtomicBool,
    pub(super) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Intake {
    fn drop(&mut self) {
        for t in lock(&self.tasks).iter() {
            t.abort();
        }
    }
}

impl Intake {
    pub(super) fn live(&self, generation: u64) -> bool {
        self.generation == generation
            && !self.closed.load(Ordering::Acquire)
            && self.channel.status().connected()
    }

    /// The most urgent delivery held, and its rank.
    pub(super) fn pop(&self) -> Option<(usize, lapin::message::Delivery)> {
        let mut b = lock(&self.buffers);
        (0..3).rev().find_map(|r| b[r].pop_front().map(|d| (r, d)))
    }

    pub(super) fn push_front(&self, rank: usize, d: lapin::message::Delivery) {
        lock(&self.buffers)[rank].push_front(d);
    }

    pub(super) fn holds_above(&self, rank: usize) -> bool {
        let b = lock(&self.buffers);
        b[rank + 1..].iter().any(|q| !q.is_empty())
    }

    pub(super) fn held(&self) -> (u64, u64) {
        let b = lock(&self.buffers);
        let oldest = b
            .iter()
            .flatten()
            .filter_map(|d| {
                topology::header_u64(d.properties.headers().as_ref(), topology::PUBLISHED_MS)
            })
            .min()
            .map_or(0, |t| now_ms().saturating_sub(t));
        (b.iter().map(|q| q.len() as u64).sum(), oldest)
    }
}

pub(super) struct Lease {
    pub(super) queue: QueueName,
    pub(super) id: MessageId,
    pub(super) rank: u8,
    pub(super) acker: Acker,
    pub(super) deadline: Instant,
}

impl RabbitQueue {
    /// The consumers of `queue`, started (and settled) if they are not running.
    pub(super) async fn intake(&self, queue: &QueueName) -> Result<Arc<Intake>, QueueError> {
        let mut intakes = self.inner.intakes.lock().await;
        let link = self.topology(queue).await?;
        if let Some(i) = intakes.get(queue).filter(|i| i.live(link.generation)) {
            return Ok(i.clone());
        }
        if let Some(old) = intakes.remove(queue) {
            // Whatever it still holds goes back to the broker.
            let _ = old.channel.close(200, ShortString::from("replaced")).await;
        }
        let names = self.names(queue);
        let channel = self
            .bounded("opening a channel", link.connection.create_channel())
            .await?;
        self.bounded(
            "setting the prefetch",
            channel.basic_qos(self.inner.config.prefetch, BasicQosOptions::default()),
        )
        .await?;
        let mut waiting = [0u64; 3];
        let mut consumers = Vec::new();
        for p in PRIORITIES {
            let name = names.work(p);
            let q = self
                .bounded(
                    "counting a queue",
                    channel.queue_declare(
                        name.as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    ),
                )
                .await?;
            waiting[usize::from(p.rank())] =
                u64::from(q.message_count()).min(u64::from(self.inner.config.prefetch));
            let consumer = self
                .bounded(
                    "starting a consumer",
                    channel.basic_consume(
                        name.as_str().into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    ),
                )
                .await?;
            consumers.push((p, consumer));
        }
        let intake = Arc::new(Intake {
            generation: link.generation,
            channel,
            buffers: Mutex::new(Default::default()),
            arrived: Notify::new(),
            closed: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
        });
        for (p, mut consumer) in consumers {
            let weak = Arc::downgrade(&intake);
            lock(&intake.tasks).push(tokio::spawn(async move {
                while let Some(Ok(d)) = consumer.next().await {
                    let Some(intake) = weak.upgrade() else { return };
                    lock(&intake.buffers)[usize::from(p.rank())].push_back(d);
                    intake.arrived.notify_waiters();
                }
                if let Some(intake) = weak.upgrade() {
                    intake.closed.store(true, Ordering::Release);
                    intake.arrived.notify_waiters();
                }
            }));
        }
        // What the work queues held when consuming started arrives before the first receive
        // chooses, so that it chooses by priority (bounded: another consumer may take some).
        let settle = Instant::now() + Duration::from_millis(500);
        while Instant::now() < settle {
            let arrived = {
                let b = lock(&intake.buffers);
                (0..3).all(|r| b[r].len() as u64 >= waiting[r])
            };
            if arrived || intake.closed.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        intakes.insert(queue.clone(), intake.clone());
        Ok(intake)
    }

    /// A delivery taken from an intake becomes a lease — or, when it is not due yet, waits
    /// again, and when its attempts are used up, becomes a dead letter. `None` then.
    pub(super) async fn admit(
        &self,
        queue: &QueueName,
        d: lapin::message::Delivery,
    ) -> Result<Option<Delivery>, QueueError> {
        let headers = d.properties.headers().as_ref();
        let num = |k: &str| topology::header_u64(headers, k);
        let before =
            num(topology::ATTEMPTS).unwrap_or(0) + num(topology::DELIVERY_COUNT).unwrap_or(0);
        let before = u32::try_from(before).unwrap_or(u32::MAX);
        let message = Message {
            id: MessageId(
                d.properties
                    .message_id()
                    .as_ref()
                    .and_then(|s| s.as_str().parse().ok())
                    .unwrap_or(0),
            ),
            priority: Priority::from_rank(num(topology::PRIORITY).unwrap_or(1).min(2) as u8),
            attempt: before.saturating_add(1),
            published_at_ms: num(topology::PUBLISHED_MS).unwrap_or_else(now_ms),
            payload: d.data,
        };
        let policy = self.inner.config.policy;
        let not_before = num(topology::NOT_BEFORE_MS).filter(|&t| t > now_ms());
        if not_before.is_some() || before >= policy.max_attempts {
            let link = self.link().await?;
            if not_before.is_some() {
                self.place(&link, queue, &message, before, not_before)
                    .await?;
            } else {
                let error = format!(
                    "the lease ran out on attempt {before} of {}: the consumer died or hung",
                    policy.max_attempts
                );
                self.bury(&link, queue, &message, before, &error).await?;
                tracing::warn!(queue = %queue, id = %message.id, attempts = before,
                    "A message whose leases kept running out was dead-lettered.");
            }
            self.bounded("acknowledging", d.acker.ack(BasicAckOptions::default()))
                .await?;
            return Ok(None);
        }
        let receipt = self.inner.next_receipt.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + policy.visibility_timeout;
        lock(&self.inner.leases).insert(
            receipt,
            Lease {
                queue: queue.clone(),
                id: message.id,
                rank: message.priority.rank(),
                acker: d.acker,
                deadline,
            },
        );
        tokio::spawn(expire(self.inner.leases.clone(), receipt, deadline));
        Ok(Some(Delivery {
            queue: queue.clone(),
            message,
            receipt: Receipt(receipt),
        }))
    }

    /// Whether a more urgent delivery than `rank` is on its way to this intake: one is held, or
    /// a more urgent work queue has ready messages (its consumer takes them next). A round trip
    /// on the intake's channel (`basic.qos`, answered after the deliveries the broker wrote
    /// before it) lets one already sent arrive first.
    pub(super) async fn more_urgent(
        &self,
        intake: &Intake,
        queue: &QueueName,
        rank: usize,
    ) -> Result<bool, QueueError> {
        let names = self.names(queue);
        for p in PRIORITIES.iter().filter(|p| usize::from(p.rank()) > rank) {
            if intake.holds_above(rank) {
                return Ok(true);
            }
            let leased = lock(&self.inner.leases)
                .values()
                .filter(|l| &l.queue == queue && l.rank == p.rank())
                .count();
            if leased >= usize::from(self.inner.config.prefetch) {
                continue; // its consumer is full: the broker sends it nothing now
            }
            let ready = self
                .bounded(
                    "counting a queue",
                    intake.channel.queue_declare(
                        names.work(*p).as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    ),
                )
                .await?
                .message_count();
            if ready > 0 {
                return Ok(true);
            }
        }
        self.bounded(
            "setting the prefetch",
            intake
                .channel
                .basic_qos(self.inner.config.prefetch, BasicQosOptions::default()),
        )
        .await?;
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(intake.holds_above(rank))
    }

    /// Takes the lease of a delivery, if it still holds one.
    pub(super) fn take_lease(&self, d: &Delivery) -> Result<Lease, QueueError> {
        let mut leases = lock(&self.inner.leases);
        match leases.get(&d.receipt.0) {
            Some(l) if l.id == d.message.id && l.queue == d.queue && l.acker.usable() => {}
            _ => return Err(lease_lost(d)),
        }
        leases.remove(&d.receipt.0).ok_or_else(|| lease_lost(d))
    }

    /// Settles a lease whose message has been placed elsewhere (or is done).
    pub(super) async fn settle(&self, d: &Delivery, lease: Lease) -> Result<(), QueueError> {
        match lease.acker.ack(BasicAckOptions::default()).await {
            Ok(true) => Ok(()),
            _ => Err(lease_lost(d)),
        }
    }

    /// Gives a lease back to the broker after a failure to place its message elsewhere.
    pub(super) async fn requeue(lease: Lease) {
        let _ = lease
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await;
    }
}

/// The visibility timeout of one lease: when it runs out (unless extended or settled first),
/// the delivery is requeued and the lease is gone.
pub(super) async fn expire(
    leases: Arc<Mutex<HashMap<u64, Lease>>>,
    receipt: u64,
    mut deadline: Instant,
) {
    loop {
        tokio::time::sleep_until(deadline.into()).await;
        let expired = {
            let mut l = lock(&leases);
            match l.get(&receipt) {
                None => return,
                Some(lease) if lease.deadline > Instant::now() => {
                    deadline = lease.deadline;
                    None
                }
                Some(_) => l.remove(&receipt),
            }
        };
        if let Some(lease) = expired {
            RabbitQueue::requeue(lease).await;
            return;
        }
    }
}
