//! The dead queue as a list: every dead letter held (taken without acknowledgement) on a
//! channel of its own, sorted, and handed back when the channel closes.
//!
//! A message can be dead-lettered twice: placing the dead letter is confirmed before the
//! delivery is acknowledged, and a broker or connection lost between the two redelivers it,
//! to be buried again (or the broker's `x-delivery-limit` buries the returned copy). Copies
//! share the message id, drawn at random when the message was first published, so whoever
//! holds the list next keeps the first and acknowledges the others: an operator lists the
//! message once and a replay runs it once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use lapin::Acker;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::ShortString;

use super::topology;
use super::{Link, RabbitQueue};
use crate::{DeadLetter, Message, MessageId, Priority, QueueError, QueueName};

impl RabbitQueue {
    /// Every dead letter of `queue`, held (unacknowledged) on `channel` until it is closed.
    pub(super) async fn hold_dead(
        &self,
        channel: &Channel,
        queue: &QueueName,
    ) -> Result<Vec<(DeadLetter, Acker)>, QueueError> {
        let dead = self.names(queue).dead();
        let mut held = Vec::new();
        while let Some(got) = self
            .bounded(
                "reading dead letters",
                channel.basic_get(dead.as_str().into(), BasicGetOptions { no_ack: false }),
            )
            .await?
        {
            let d = got.delivery;
            let headers = d.properties.headers().as_ref();
            let num = |k: &str| topology::header_u64(headers, k);
            let death = topology::death(headers);
            let error = topology::header_text(headers, topology::ERROR).unwrap_or_else(|| {
                format!(
                    "the lease ran out too many times: the broker dead-lettered it ({})",
                    death
                        .as_ref()
                        .map_or("no reason given", |(r, _)| r.as_str())
                )
            });
            let attempts = num(topology::ATTEMPTS).unwrap_or(0)
                + if headers.is_some_and(|h| h.contains_key(topology::ERROR)) {
                    0
                } else {
                    num(topology::DELIVERY_COUNT).unwrap_or(0) + 1
                };
            let letter = DeadLetter {
                message: Message {
                    id: MessageId(
                        d.properties
                            .message_id()
                            .as_ref()
                            .and_then(|s| s.as_str().parse().ok())
                            .unwrap_or(0),
                    ),
                    payload: d.data,
                    priority: Priority::from_rank(num(topology::PRIORITY).unwrap_or(1).min(2) as u8),
                    attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
                    published_at_ms: num(topology::PUBLISHED_MS).unwrap_or(0),
                },
                error,
                dead_at_ms: num(topology::DEAD_MS)
                    .or(death.map(|(_, at)| at))
                    .unwrap_or(0),
            };
            held.push((letter, d.acker));
            if held.len() as u64 > self.inner.config.policy.max_length.saturating_mul(2) {
                break;
            }
        }
        held.sort_by_key(|(l, _)| (l.dead_at_ms, l.message.id));
        Ok(held)
    }

    /// Runs `f` over the held dead letters of `queue` on a channel of its own, closed
    /// afterwards (handing back whatever `f` did not acknowledge; `f` says how many it did).
    /// Returns once the broker counts the handed-back letters again, so that what the caller
    /// does next sees them.
    pub(super) async fn with_dead<T>(
        &self,
        queue: &QueueName,
        f: impl AsyncFnOnce(&Link, Vec<(DeadLetter, Acker)>) -> Result<(T, u64), QueueError>,
    ) -> Result<T, QueueError> {
        let link = self.topology(queue).await?;
        let channel = self
            .bounded("opening a channel", link.connection.create_channel())
            .await?;
        let held = match self.hold_dead(&channel, queue).await {
            Ok(held) => self.drop_copies(queue, held).await,
            Err(e) => Err(e),
        };
        let (outcome, back) = match held {
            Ok(held) => {
                let n = held.len() as u64;
                match f(&link, held).await {
                    Ok((v, settled)) => (Ok(v), n.saturating_sub(settled)),
                    Err(e) => (Err(e), 0),
                }
            }
            Err(e) => (Err(e), 0),
        };
        let _ = channel.close(200, ShortString::from("done")).await;
        let until = Instant::now() + Duration::from_secs(2);
        while back > 0 && Instant::now() < until {
            match self.count(queue, false).await {
                Ok(s) if s.dead >= back => break,
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(_) => break,
            }
        }
        outcome
    }

    /// Acknowledges (deletes) every later copy of a dead letter held twice or more, keeping
    /// the first: `held` is sorted by death time.
    async fn drop_copies(
        &self,
        queue: &QueueName,
        held: Vec<(DeadLetter, Acker)>,
    ) -> Result<Vec<(DeadLetter, Acker)>, QueueError> {
        let mut seen = HashSet::new();
        let mut kept = Vec::with_capacity(held.len());
        for (letter, acker) in held {
            let id = letter.message.id;
            if id.0 == 0 || seen.insert(id) {
                kept.push((letter, acker));
                continue;
            }
            self.bounded(
                "deleting a copy of a dead letter",
                acker.ack(BasicAckOptions::default()),
            )
            .await?;
            tracing::info!(queue = %queue, id = %id, "A second copy of a dead letter was deleted.");
        }
        Ok(kept)
    }
}
