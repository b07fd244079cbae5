//! The engine's connection to the broker: opening it (again, after a loss) and declaring every
//! queue the engine has used on it; declaring one queue's RabbitMQ objects; publishing a copy
//! of a message with a confirm; counting a queue.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use super::topology::{self, Names, PRIORITIES, Stamp};
use super::{RabbitQueue, engine, lock, now_ms};
use crate::{Message, MessageId, QueueError, QueueName, QueueStats};

/// One connection and its publishing channel (in confirm mode).
pub(super) struct Link {
    pub(super) generation: u64,
    pub(super) connection: Connection,
    pub(super) publisher: Channel,
    pub(super) declared: Mutex<BTreeSet<QueueName>>,
}

impl Link {
    pub(super) fn usable(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }
}

impl RabbitQueue {
    /// Runs one broker operation under the configured timeout.
    pub(super) async fn bounded<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = lapin::Result<T>>,
    ) -> Result<T, QueueError> {
        match tokio::time::timeout(self.inner.config.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(engine(what, e)),
            Err(_) => Err(engine(what, "the broker did not answer in time")),
        }
    }

    /// The current connection, opened again (and every known queue declared again) if lost.
    pub(super) async fn link(&self) -> Result<Arc<Link>, QueueError> {
        let mut slot = self.inner.link.lock().await;
        if let Some(link) = slot.as_ref().filter(|l| l.usable()) {
            return Ok(link.clone());
        }
        *slot = None;
        let url = &self.inner.config.url;
        let connection = self
            .bounded(
                "connecting",
                Connection::connect(url, ConnectionProperties::default()),
            )
            .await?;
        let publisher = self
            .bounded("opening a channel", connection.create_channel())
            .await?;
        self.bounded(
            "enabling publisher confirms",
            publisher.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        let generation = self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let link = Arc::new(Link {
            generation,
            connection,
            publisher,
            declared: Mutex::new(BTreeSet::new()),
        });
        let known: Vec<QueueName> = lock(&self.inner.known).iter().cloned().collect();
        for queue in &known {
            self.declare_on(&link, queue).await?;
        }
        if generation > 1 {
            tracing::info!(
                generation,
                queues = known.len(),
                "Connected to RabbitMQ again and declared this engine's queues again."
            );
        }
        *slot = Some(link.clone());
        Ok(link)
    }

    /// The connection, with `queue`'s objects declared on it.
    pub(super) async fn topology(&self, queue: &QueueName) -> Result<Arc<Link>, QueueError> {
        let link = self.link().await?;
        if !lock(&link.declared).contains(queue) {
            self.declare_on(&link, queue).await?;
            lock(&self.inner.known).insert(queue.clone());
        }
        Ok(link)
    }

    pub(super) async fn declare_on(
        &self,
        link: &Link,
        queue: &QueueName,
    ) -> Result<(), QueueError> {
        let names = self.names(queue);
        let policy = &self.inner.config.policy;
        let ch = self
            .bounded("opening a channel", link.connection.create_channel())
            .await?;
        let durable = QueueDeclareOptions::durable();
        let exchange = names.retry_exchange();
        self.bounded(
            "declaring an exchange",
            ch.exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Headers,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            ),
        )
        .await?;
        let mut queues = vec![(names.dead(), topology::dead_args())];
        for p in PRIORITIES {
            queues.push((names.work(p), topology::work_args(&names, policy)));
        }
        for &ms in &self.inner.waits {
            queues.push((names.wait(ms), topology::wait_args(&names, ms, policy)));
        }
        for (name, args) in queues {
            self.bounded(
                "declaring a queue",
                ch.queue_declare(name.as_str().into(), durable, args),
            )
            .await?;
        }
        for p in PRIORITIES {
            self.bounded(
                "binding a queue",
                ch.queue_bind(
                    names.work(p).as_str().into(),
                    exchange.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    topology::retry_binding(p),
                ),
            )
            .await?;
        }
        let _ = ch.close(200, ShortString::from("declared")).await;
        lock(&link.declared).insert(queue.clone());
        Ok(())
    }

    pub(super) fn names(&self, queue: &QueueName) -> Names {
        Names::new(&self.inner.config.namespace, queue)
    }

    /// Publishes one copy through the default exchange to `routing_key`, and waits for the
    /// broker's confirm. A nack is a full queue (the broker's `x-max-length`).
    pub(super) async fn send(
        &self,
        link: &Link,
        queue: &QueueName,
        routing_key: &str,
        id: MessageId,
        payload: &[u8],
        stamp: Stamp<'_>,
    ) -> Result<(), QueueError> {
        let properties = BasicProperties::default()
            .with_message_id(ShortString::from(id.0.to_string()))
            .with_delivery_mode(2)
            .with_headers(stamp.headers());
        let confirm = self
            .bounded(
                "publishing",
                link.publisher.basic_publish(
                    "".into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    payload,
                    properties,
                ),
            )
            .await?;
        let confirmation = self
            .bounded("waiting for the publish confirm", confirm)
            .await?;
        if confirmation.is_nack() {
            let max = self.inner.config.policy.max_length;
            return Err(QueueError::Full {
                queue: queue.clone(),
                length: max,
                max,
            });
        }
        if let Some(returned) = confirmation.take_message() {
            lock(&link.declared).remove(queue);
            return Err(engine(
                "publishing",
                format!("{routing_key} is missing ({})", returned.reply_text),
            ));
        }
        Ok(())
    }

    /// Publishes `message` for `queue` to its work queue, or to a wait queue when it is not
    /// deliverable before `not_before_ms`.
    pub(super) async fn place(
        &self,
        link: &Link,
        queue: &QueueName,
        message: &Message,
        attempts: u32,
        not_before_ms: Option<u64>,
    ) -> Result<Option<u64>, QueueError> {
        let names = self.names(queue);
        let remaining = not_before_ms.map_or(Duration::ZERO, |t| {
            Duration::from_millis(t.saturating_sub(now_ms()))
        });
        let wait = topology::delay_wait(&self.inner.waits, remaining);
        let key = wait.map_or_else(|| names.work(message.priority), |ms| names.wait(ms));
        let stamp = Stamp {
            priority: message.priority,
            attempts,
            published_ms: message.published_at_ms,
            not_before_ms: wait.and(not_before_ms),
            dead: None,
        };
        self.send(link, queue, &key, message.id, &message.payload, stamp)
            .await?;
        Ok(wait)
    }

    /// Moves a delivered copy to the dead queue (confirmed), with its last error.
    pub(super) async fn bury(
        &self,
        link: &Link,
        queue: &QueueName,
        message: &Message,
        attempts: u32,
        error: &str,
    ) -> Result<(), QueueError> {
        let stamp = Stamp {
            priority: message.priority,
            attempts,
            published_ms: message.published_at_ms,
            not_before_ms: None,
            dead: Some((error, now_ms())),
        };
        let key = self.names(queue).dead();
        self.send(link, queue, &key, message.id, &message.payload, stamp)
            .await
    }

    /// The queue's counts; `waits` includes the wait queues (one round trip each).
    pub(super) async fn count(
        &self,
        queue: &QueueName,
        waits: bool,
    ) -> Result<QueueStats, QueueError> {
        let link = self.topology(queue).await?;
        let names = self.names(queue);
        let channel = self
            .bounded("opening a channel", link.connection.create_channel())
            .await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let size = async |name: String| {
            self.bounded(
                "counting a queue",
                channel.queue_declare(name.as_str().into(), passive, FieldTable::default()),
            )
            .await
            .map(|q| u64::from(q.message_count()))
        };
        let mut stats = QueueStats::default();
        for p in PRIORITIES {
            stats.ready += size(names.work(p)).await?;
        }
        stats.dead = size(names.dead()).await?;
        for &ms in self.inner.waits.iter().filter(|_| waits) {
            stats.delayed += size(names.wait(ms)).await?;
        }
        let _ = channel.close(200, ShortString::from("counted")).await;
        if let Some(intake) = self.inner.intakes.lock().await.get(queue) {
            let (held, oldest) = intake.held();
            stats.ready += held;
            stats.oldest_ready_age_ms = oldest;
        }
        stats.in_flight = lock(&self.inner.leases)
            .values()
            .filter(|l| &l.queue == queue)
            .count() as u64;
        Ok(stats)
    }
}
