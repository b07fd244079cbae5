//! # strata-queue — the queue tier
//!
//! Tier: queue. Depends on `strata-core` and `strata-engines` (for [`broker`], the RabbitMQ
//! role `strata up` runs); no other tier crate depends on it sideways except the photo
//! pipeline that publishes and consumes jobs.
//!
//! [`Queue`] is the one interface producers and workers see. Its contract, which every engine
//! passes through the shared suite in [`conformance`]:
//! - **at-least-once**: a published message is delivered until a consumer acknowledges it;
//!   a receive hands out a *lease* ([`Delivery::receipt`]) for the queue's visibility timeout,
//!   and a lease that runs out (the consumer died, hung or forgot) makes the message
//!   deliverable again. An acknowledgement with a lease that has run out is refused
//!   ([`QueueError::LeaseLost`]): someone else may be working on the message;
//! - **retries**: a consumer that fails a message ([`Queue::nack`]) has it delivered again after
//!   an exponential back-off with jitter ([`policy::Backoff`]);
//! - **dead letters**: after [`policy::QueuePolicy::max_attempts`] deliveries (failed, or leases
//!   run out) the message moves to the queue's dead-letter list, where an operator lists,
//!   replays or purges it;
//! - **priorities**: among deliverable messages the higher [`Priority`] goes first, then the
//!   one that has waited longest;
//! - **bounds**: a message larger than the policy's limit, or a publish to a queue holding its
//!   maximum length, is refused with an error that says which bound and its value.
//!
//! [`admin`] is `strata queue stats` and `strata queue dlq list|replay|purge`.
//!
//! Engines, each passing the same suite:
//! - [`sqlite::SqliteQueue`] (embedded default): its own WAL-mode database file,
//!   `synchronous=FULL`, shared safely by several processes;
//! - [`rabbitmq::RabbitQueue`] (at scale): a RabbitMQ broker through `lapin` — quorum queues
//!   per priority, publisher confirms, consumers with a prefetch, back-off through TTL wait
//!   queues, a dead queue, reconnection with re-declaration. Its module says where AMQP cannot
//!   match the contract exactly (counts of other consumers' deliveries, the length bound).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

pub mod admin;
pub mod broker;
pub mod conformance;
pub mod policy;
pub mod rabbitmq;
pub mod sqlite;

pub use policy::{Backoff, QueuePolicy};

/// A queue's name: 1 to 64 characters of `a-z`, `0-9`, `-`, `_` and `.` — valid as a RabbitMQ
/// queue name and safe in a file name or a metric label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(String);

/// A queue name that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "queue name {0:?} is not valid: use 1 to 64 characters of lower-case letters, digits, '-', '_' and '.'"
)]
pub struct InvalidQueueName(pub String);

impl QueueName {
    /// Checks a name against the rules.
    pub fn parse(name: &str) -> Result<Self, InvalidQueueName> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            });
        if ok {
            Ok(Self(name.to_string()))
        } else {
            Err(InvalidQueueName(name.to_string()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for QueueName {
    type Err = InvalidQueueName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A message's identity within its queue, given by the queue when it is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How urgent a message is. Three levels: the RabbitMQ engine keeps one quorum queue per level
/// (quorum queues of RabbitMQ 3.10 have no priorities of their own), and more levels would
/// promise an order no engine keeps under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

impl Priority {
    /// The stored number: larger is more urgent.
    pub fn rank(self) -> u8 {
        match self {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
        }
    }

    /// The level of a stored number (anything above 2 is high).
    pub fn from_rank(rank: u8) -> Self {
        match rank {
            0 => Priority::Low,
            1 => Priority::Normal,
            _ => Priority::High,
        }
    }
}

/// What a producer publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub payload: Vec<u8>,
    pub priority: Priority,
    /// Not deliverable before this much time has passed.
    pub delay: Duration,
}

impl Outgoing {
    /// A normal-priority message deliverable at once.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Self {
            payload: payload.into(),
            priority: Priority::Normal,
            delay: Duration::ZERO,
        }
    }

    /// The same message at another priority.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// The same message, deliverable only after `delay`.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A message as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: MessageId,
    pub payload: Vec<u8>,
    pub priority: Priority,
    /// How many times it has been delivered, this delivery included (1 the first time).
    pub attempt: u32,
    /// When it was first published, in milliseconds since the Unix epoch.
    pub published_at_ms: u64,
}

/// Proof of a lease: the receipt a consumer hands back to acknowledge, fail or release the
/// message. A receipt from a lease that has run out matches nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt(pub u64);

/// One delivery of one message, leased to the consumer that received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub queue: QueueName,
    pub message: Message,
    pub receipt: Receipt,
}

/// What became of a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// It will be delivered again after this back-off.
    RetryAfter(Duration),
    /// It had used its attempts and is now a dead letter.
    DeadLettered,
}

/// A message that used its attempts, with why its last attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message: Message,
    /// The last failure: the consumer's own words, or that its lease ran out.
    pub error: String,
    pub dead_at_ms: u64,
}

/// A queue's counts, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Deliverable now.
    pub ready: u64,
    /// Waiting for a delay or a back-off to pass.
    pub delayed: u64,
    /// Leased to a consumer whose lease has not run out.
    pub in_flight: u64,
    /// In the dead-letter list.
    pub dead: u64,
    /// How long the oldest deliverable message has waited, in milliseconds (0 when none).
    pub oldest_ready_age_ms: u64,
}

impl QueueStats {
    /// Messages still to be processed: ready, delayed and in flight.
    pub fn depth(&self) -> u64 {
        self.ready + self.delayed + self.in_flight
    }
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The payload is larger than the policy allows.
    #[error("message of {size} bytes is larger than the queue's limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// The queue holds as many messages as the policy allows (dead letters included).
    #[error(
        "queue {queue} is full: it holds {length} messages and its limit is {max}; consumers are behind or its dead letters need purging"
    )]
    Full {
        queue: QueueName,
        length: u64,
        max: u64,
    },
    /// The lease behind a receipt ran out (or the message was already settled): another
    /// consumer may hold it now.
    #[error(
        "the lease on message {id} of queue {queue} has run out or was settled; it may be delivered again"
    )]
    LeaseLost { queue: QueueName, id: MessageId },
    /// No dead letter with that id.
    #[error("queue {queue} has no dead letter {id}")]
    NoSuchDeadLetter { queue: QueueName, id: MessageId },
    /// The engine failed (disk, connection, corruption); the operation may be retried.
    #[error("queue engine: {0}")]
    Engine(String),
}

impl QueueError {
    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, QueueError::Engine(_) | QueueError::Full { .. })
    }
}

/// A durable queue engine holding any number of named queues, all under one
/// [`QueuePolicy`].
#[async_trait]
pub trait Queue: Send + Sync {
    /// Stores a message durably before returning its id. Refuses a payload over the size
    /// limit and a queue at its length limit.
    async fn publish(&self, queue: &QueueName, message: Outgoing) -> Result<MessageId, QueueError>;

    /// Leases the most urgent deliverable message, waiting up to `wait` for one to become
    /// deliverable; `None` if none did. A message whose last lease ran out after its final
    /// attempt is dead-lettered here rather than delivered again.
    async fn receive(
        &self,
        queue: &QueueName,
        wait: Duration,
    ) -> Result<Option<Delivery>, QueueError>;

    /// Done: the message is removed for good.
    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError>;

    /// Failed: delivered again after a back-off, or dead-lettered if that was its last
    /// attempt. `error` is kept with a dead letter.
    async fn nack(&self, delivery: &Delivery, error: &str) -> Result<Failed, QueueError>;

    /// Handed back unprocessed (a worker draining on shutdown): deliverable again at once,
    /// and this delivery does not count as an attempt.
    async fn release(&self, delivery: &Delivery) -> Result<(), QueueError>;

    /// Extends the lease by the visibility timeout from now, for a long job.
    async fn extend(&self, delivery: &Delivery) -> Result<(), QueueError>;

    /// The queue's counts.
    async fn stats(&self, queue: &QueueName) -> Result<QueueStats, QueueError>;

    /// Up to `limit` dead letters, oldest first.
    async fn dead_letters(
        &self,
        queue: &QueueName,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError>;

    /// Puts dead letters back in the queue with fresh attempts: one by id, or all of them.
    /// Returns how many.
    async fn replay(&self, queue: &QueueName, id: Option<MessageId>) -> Result<u64, QueueError>;

    /// Deletes dead letters for good: one by id, or all of them. Returns how many.
    async fn purge(&self, queue: &QueueName, id: Option<MessageId>) -> Result<u64, QueueError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_the_rules() {
        assert!(QueueName::parse("photos").is_ok());
        assert!(QueueName::parse("photos.resize-v2_a").is_ok());
        for bad in ["", "Photos", "a b", "x/y", &"a".repeat(65)] {
            assert!(QueueName::parse(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn priorities_round_trip_through_their_rank() {
        for p in [Priority::Low, Priority::Normal, Priority::High] {
            assert_eq!(Priority::from_rank(p.rank()), p);
        }
        assert!(Priority::High > Priority::Normal && Priority::Normal > Priority::Low);
    }
}
