//! What one Strata queue is on the broker — its RabbitMQ names and arguments, the waits a
//! delayed or failed message takes, and the headers a message carries — as pure functions, so
//! that the mapping can be read (and tested) apart from the connection handling.
//!
//! For queue `q` in namespace `ns`:
//!
//! | RabbitMQ object | what |
//! |---|---|
//! | `ns:q:p2`, `ns:q:p1`, `ns:q:p0` | quorum queues, one per [`Priority`], consumed high first |
//! | `ns:q:dead` | quorum queue: the dead letters |
//! | `ns:q:wait:<ms>` | quorum queues whose every message expires after `<ms>` and is dead-lettered (at least once) to `ns:q:retry` |
//! | `ns:q:retry` | headers exchange: a message goes to the work queue of its `strata-priority` |
//!
//! A wait queue has one TTL for all its messages, so they expire in the order they entered and
//! none waits behind a longer one (per-message TTLs expire only at the head of a queue). The
//! waits form a ladder ([`LADDER`]: every millisecond up to 8, then four steps per doubling);
//! an engine declares the rungs its back-off can pick ([`waits`]) and nothing else, so the set of
//! queues is fixed by the policy.

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use rand::Rng;

use crate::{Priority, QueueName, QueuePolicy};

/// Header: deliveries of the message that counted as attempts before this copy was published.
pub const ATTEMPTS: &str = "x-strata-attempts";
/// Header: when the message was first published (ms since the Unix epoch).
pub const PUBLISHED_MS: &str = "x-strata-published-ms";
/// Header: the priority's rank as text (`"0"`, `"1"`, `"2"`), matched by the retry exchange
/// (a headers exchange ignores headers that start with `x-`, so this one does not).
pub const PRIORITY: &str = "strata-priority";
/// Header: not deliverable before this time (ms since the Unix epoch).
pub const NOT_BEFORE_MS: &str = "x-strata-not-before-ms";
/// Header of a dead letter: the last failure.
pub const ERROR: &str = "x-strata-error";
/// Header of a dead letter: when it died (ms since the Unix epoch).
pub const DEAD_MS: &str = "x-strata-dead-ms";
/// Header set by quorum queues on a redelivery: how many times this copy was returned
/// (a consumer's channel closed, or the lease ran out and it was requeued).
pub const DELIVERY_COUNT: &str = "x-delivery-count";

/// The RabbitMQ names of one Strata queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(namespace: &QueueName, queue: &QueueName) -> Self {
        // ':' is not allowed in a queue name, so no two Strata queues share a RabbitMQ name.
        Self {
            prefix: format!("{namespace}:{queue}"),
        }
    }

    /// The work queue of a priority.
    pub fn work(&self, priority: Priority) -> String {
        format!("{}:p{}", self.prefix, priority.rank())
    }

    pub fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    pub fn wait(&self, ms: u64) -> String {
        format!("{}:wait:{ms}", self.prefix)
    }

    pub fn retry_exchange(&self) -> String {
        format!("{}:retry", self.prefix)
    }
}

/// The priorities, most urgent first: the order work queues are consumed in.
pub const PRIORITIES: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn int(v: u64) -> AMQPValue {
    AMQPValue::LongLongInt(i64::try_from(v).unwrap_or(i64::MAX))
}

fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(k), v);
    }
    t
}

/// A work queue: quorum, bounded (a publish beyond `max_length` is refused, not dropped), and a
/// copy returned more than `max_attempts` times goes to the dead queue, at least once.
pub fn work_args(names: &Names, policy: &QueuePolicy) -> FieldTable {
    table(vec![
        ("x-queue-type", text("quorum")),
        ("x-max-length", int(policy.max_length)),
        ("x-overflow", text("reject-publish")),
        ("x-delivery-limit", int(u64::from(policy.max_attempts))),
        ("x-dead-letter-exchange", text("")),
        ("x-dead-letter-routing-key", text(&names.dead())),
        ("x-dead-letter-strategy", text("at-least-once")),
    ])
}

/// The dead queue: quorum, unbounded by the broker (the engine counts dead letters into the
/// queue's bound when publishing).
pub fn dead_args() -> FieldTable {
    table(vec![("x-queue-type", text("quorum"))])
}

/// A wait queue: every message expires after `ms` and moves, at least once, to the retry
/// exchange.
pub fn wait_args(names: &Names, ms: u64, policy: &QueuePolicy) -> FieldTable {
    table(vec![
        ("x-queue-type", text("quorum")),
        ("x-message-ttl", int(ms)),
        ("x-max-length", int(policy.max_length)),
        ("x-overflow", text("reject-publish")),
        ("x-dead-letter-exchange", text(&names.retry_exchange())),
        ("x-dead-letter-strategy", text("at-least-once")),
    ])
}

/// The binding of a work queue to the retry exchange.
pub fn retry_binding(priority: Priority) -> FieldTable {
    table(vec![
        ("x-match", text("all")),
        (PRIORITY, text(&priority.rank().to_string())),
    ])
}

/// Every rung of the ladder of waits, in ms: 1 to 8, then 2^k × {1, 1.25, 1.5, 1.75} — never
/// more than 25 % apart, so every back-off interval `[step/2, step]` holds at least one.
pub fn ladder() -> impl Iterator<Item = u64> {
    let small = 1..8u64;
    let large = (3..40u32).flat_map(|k| [8u64, 10, 12, 14].map(move |m| (m << k) >> 3));
    small.chain(large)
}

/// The ladder as a constant description, for the docs.
pub const LADDER: &str = "1..8 ms, then four rungs per doubling";

/// The waits an engine declares for a queue: the rungs from half the back-off's base to its
/// cap (at least one).
pub fn waits(policy: &QueuePolicy) -> Vec<u64> {
    let low = ms_ceil(policy.backoff.base / 2).max(1);
    let high = ms_floor(policy.backoff.max).max(low);
    let rungs: Vec<u64> = ladder()
        .skip_while(|&r| r < low)
        .take_while(|&r| r <= high)
        .collect();
    if rungs.is_empty() {
        ladder().skip_while(|&r| r < low).take(1).collect()
    } else {
        rungs
    }
}

fn ms_ceil(d: Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}

fn ms_floor(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The wait after `failed_attempt` failed: the back-off's jittered delay taken down to a rung of
/// `waits` that is still at least half the step (or up to the lowest such rung). `None` for no
/// wait at all (a zero back-off).
pub fn backoff_wait(
    policy: &QueuePolicy,
    waits: &[u64],
    failed_attempt: u32,
    rng: &mut impl Rng,
) -> Option<u64> {
    let step = policy.backoff.step(failed_attempt);
    if step.is_zero() {
        return None;
    }
    let jittered = ms_floor(policy.backoff.delay(failed_attempt, rng));
    let half = ms_ceil(step / 2);
    let below = waits.iter().rev().find(|&&w| w <= jittered && w >= half);
    let above = waits.iter().find(|&&w| w >= half);
    below.or(above).or(waits.last()).copied()
}

/// The wait for a message not deliverable for `remaining`: the lowest rung that is enough, or
/// the highest there is (the rest is waited again when the message comes back early).
pub fn delay_wait(waits: &[u64], remaining: Duration) -> Option<u64> {
    let need = ms_ceil(remaining);
    if need == 0 {
        return None;
    }
    waits.iter().find(|&&w| w >= need).or(waits.last()).copied()
}

/// A header as a non-negative integer, whatever integer type the broker or a client chose.
pub fn header_u64(headers: Option<&FieldTable>, key: &str) -> Option<u64> {
    let value = headers?.inner().get(key)?;
    let n: i128 = match value {
        AMQPValue::ShortShortInt(v) => (*v).into(),
        AMQPValue::ShortShortUInt(v) => (*v).into(),
        AMQPValue::ShortInt(v) => (*v).into(),
        AMQPValue::ShortUInt(v) => (*v).into(),
        AMQPValue::LongInt(v) => (*v).into(),
        AMQPValue::LongUInt(v) => (*v).into(),
        AMQPValue::LongLongInt(v) => (*v).into(),
        AMQPValue::Timestamp(v) => (*v).into(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok()?,
        _ => return None,
    };
    u64::try_from(n).ok()
}

/// A header as text.
pub fn header_text(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    match headers?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Why the broker dead-lettered a message, from the first entry of its `x-death` header
/// (`delivery_limit`, `expired`, `maxlen`, `rejected`) and when, in ms.
pub fn death(headers: Option<&FieldTable>) -> Option<(String, u64)> {
    let AMQPValue::FieldArray(deaths) = headers?.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    let reason = header_text(Some(first), "reason").unwrap_or_default();
    let at_ms = header_u64(Some(first), "time")
        .unwrap_or(0)
        .saturating_mul(1000);
    Some((reason, at_ms))
}

/// Headers of a message copy.
pub struct Stamp<'a> {
    pub priority: Priority,
    pub attempts: u32,
    pub published_ms: u64,
    pub not_before_ms: Option<u64>,
    /// A dead letter's last error and time of death.
    pub dead: Option<(&'a str, u64)>,
}

impl Stamp<'_> {
    pub fn headers(&self) -> FieldTable {
        let mut entries = vec![
            (PRIORITY, text(&self.priority.rank().to_string())),
            (ATTEMPTS, int(u64::from(self.attempts))),
            (PUBLISHED_MS, int(self.published_ms)),
        ];
        if let Some(at) = self.not_before_ms {
            entries.push((NOT_BEFORE_MS, int(at)));
        }
        if let Some((error, at)) = self.dead {
            entries.push((ERROR, text(error)));
            entries.push((DEAD_MS, int(at)));
        }
        table(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backoff;
    use rand::SeedableRng;

    fn policy(base_ms: u64, max_ms: u64) -> QueuePolicy {
        QueuePolicy {
            backoff: Backoff {
                base: Duration::from_millis(base_ms),
                max: Duration::from_millis(max_ms),
            },
            ..QueuePolicy::default()
        }
    }

    #[test]
    fn the_ladder_climbs_at_most_a_quarter_per_rung() {
        let rungs: Vec<u64> = ladder().take(14).collect();
        assert_eq!(rungs, [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24]);
        let all: Vec<u64> = ladder().collect();
        for pair in all.windows(2).skip(7) {
            assert!(pair[1] > pair[0] && pair[1] * 4 <= pair[0] * 5, "{pair:?}");
        }
    }

    #[test]
    fn an_engine_declares_the_rungs_its_back_off_can_pick() {
        assert_eq!(
            waits(&policy(40, 200)),
            [20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192]
        );
        assert_eq!(waits(&QueuePolicy::default()).len(), 37, "1 s to 5 min");
        assert_eq!(waits(&policy(0, 0)), [1]);
    }

    #[test]
    fn back_off_waits_stay_in_the_jittered_interval_and_vary() {
        let p = policy(40, 200);
        let w = waits(&p);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for attempt in 1..=6 {
            let step = ms_floor(p.backoff.step(attempt));
            let picked: std::collections::BTreeSet<u64> = (0..200)
                .map(|_| backoff_wait(&p, &w, attempt, &mut rng).unwrap_or(0))
                .collect();
            for ms in &picked {
                assert!(
                    *ms * 2 >= step && *ms <= step,
                    "attempt {attempt}: {ms} of {step}"
                );
            }
            assert!(picked.len() >= 3, "jitter spreads them: {picked:?}");
        }
        assert_eq!(backoff_wait(&policy(0, 0), &[1], 1, &mut rng), None);
    }

    #[test]
    fn delays_round_up_to_a_rung_or_wait_again() {
        let w = waits(&policy(40, 200));
        assert_eq!(delay_wait(&w, Duration::from_millis(21)), Some(24));
        assert_eq!(delay_wait(&w, Duration::from_millis(300)), Some(192));
        assert_eq!(delay_wait(&w, Duration::from_micros(1)), Some(20));
        assert_eq!(delay_wait(&w, Duration::ZERO), None);
    }

    #[test]
    fn names_keep_queues_apart() {
        let ns = QueueName::parse("strata").expect("name");
        let n = Names::new(&ns, &QueueName::parse("photos").expect("name"));
        assert_eq!(n.work(Priority::High), "strata:photos:p2");
        assert_eq!(n.dead(), "strata:photos:dead");
        assert_eq!(n.wait(40), "strata:photos:wait:40");
        assert_eq!(n.retry_exchange(), "strata:photos:retry");
    }

    #[test]
    fn headers_round_trip() {
        let h = Stamp {
            priority: Priority::Low,
            attempts: 2,
            published_ms: 7,
            not_before_ms: Some(9),
            dead: Some(("boom", 11)),
        }
        .headers();
        assert_eq!(header_u64(Some(&h), ATTEMPTS), Some(2));
        assert_eq!(header_u64(Some(&h), PRIORITY), Some(0));
        assert_eq!(header_u64(Some(&h), NOT_BEFORE_MS), Some(9));
        assert_eq!(header_text(Some(&h), ERROR).as_deref(), Some("boom"));
        assert_eq!(header_u64(Some(&h), DELIVERY_COUNT), None);
    }
}
