//! The queue test suite, written once for every engine.
//!
//! An engine's integration tests call [`run_all`] with a function that opens a fresh, empty
//! engine under a given [`QueuePolicy`] (the suite shortens leases and back-offs so that it
//! runs in seconds). Each check panics with a sentence when the contract is broken. Checks wait
//! for what must happen by polling against a deadline, never by sleeping a fixed time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Backoff, Failed, Outgoing, Priority, Queue, QueueError, QueueName, QueuePolicy};

/// How long a check waits for something that must happen.
const DEADLINE: Duration = Duration::from_secs(10);

fn name(n: &str) -> QueueName {
    QueueName::parse(n).unwrap_or_else(|e| panic!("{e}"))
}

/// Leases and back-offs short enough for tests.
pub fn quick_policy() -> QueuePolicy {
    QueuePolicy {
        visibility_timeout: Duration::from_millis(300),
        max_attempts: 3,
        backoff: Backoff {
            base: Duration::from_millis(40),
            max: Duration::from_millis(200),
        },
        ..QueuePolicy::default()
    }
}

/// Runs every check; `open` gives a fresh, empty engine with the policy asked for.
pub async fn run_all<F>(open: F)
where
    F: AsyncFn(QueuePolicy) -> Arc<dyn Queue>,
{
    a_published_message_is_delivered_once_acknowledged(&*open(quick_policy()).await).await;
    a_message_not_acknowledged_is_delivered_again_after_its_lease(&*open(quick_policy()).await)
        .await;
    a_failed_message_comes_back_after_a_back_off(&*open(quick_policy()).await).await;
    a_poison_message_is_dead_lettered_after_its_attempts(&*open(quick_policy()).await).await;
    a_message_whose_consumers_keep_dying_is_dead_lettered(&*open(quick_policy()).await).await;
    dead_letters_are_replayed_and_purged(&*open(quick_policy()).await).await;
    higher_priorities_go_first_then_oldest_first(&*open(quick_policy()).await).await;
    a_delayed_message_waits_for_its_delay(&*open(quick_policy()).await).await;
    a_released_message_returns_at_once_without_using_an_attempt(&*open(quick_policy()).await).await;
    an_extended_lease_keeps_the_message(&*open(quick_policy()).await).await;
    queues_are_independent(&*open(quick_policy()).await).await;
    oversized_messages_and_full_queues_are_refused(
        &*open(QueuePolicy {
            max_message_bytes: 100,
            max_length: 3,
            ..quick_policy()
        })
        .await,
    )
    .await;
    concurrent_consumers_never_share_a_message(open(quick_policy()).await).await;
}

/// Receives from `queue`, failing the check if nothing arrives before the deadline.
async fn must_receive(q: &dyn Queue, queue: &QueueName, what: &str) -> crate::Delivery {
    q.receive(queue, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("receive ({what}): {e}"))
        .unwrap_or_else(|| panic!("{what}: nothing was delivered within {DEADLINE:?}"))
}

async fn nothing_now(q: &dyn Queue, queue: &QueueName, what: &str) {
    let got = q
        .receive(queue, Duration::ZERO)
        .await
        .unwrap_or_else(|e| panic!("receive: {e}"));
    assert!(got.is_none(), "{what}, yet {got:?} was delivered");
}

async fn publish(q: &dyn Queue, queue: &QueueName, m: Outgoing) -> crate::MessageId {
    q.publish(queue, m)
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"))
}

async fn a_published_message_is_delivered_once_acknowledged(q: &dyn Queue) {
    let queue = name("basic");
    let id = publish(q, &queue, Outgoing::new(b"hello".to_vec())).await;
    let stats = q.stats(&queue).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((stats.ready, stats.depth()), (1, 1), "one ready: {stats:?}");
    let d = must_receive(q, &queue, "a published message").await;
    assert_eq!(d.message.id, id);
    assert_eq!(d.message.payload, b"hello");
    assert_eq!(d.message.attempt, 1, "the first delivery is attempt 1");
    let stats = q.stats(&queue).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.in_flight, 1, "leased: {stats:?}");
    nothing_now(
        q,
        &queue,
        "a leased message is not delivered to a second consumer",
    )
    .await;
    q.ack(&d).await.unwrap_or_else(|e| panic!("ack: {e}"));
    assert!(
        matches!(q.ack(&d).await, Err(QueueError::LeaseLost { .. })),
        "a second ack of the same delivery is refused"
    );
    nothing_now(q, &queue, "an acknowledged message is gone").await;
    let stats = q.stats(&queue).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats, crate::QueueStats::default(), "the queue is empty");
}

async fn a_message_not_acknowledged_is_delivered_again_after_its_lease(q: &dyn Queue) {
    let queue = name("lease");
    let id = publish(q, &queue, Outgoing::new(b"job".to_vec())).await;
    let first = must_receive(q, &queue, "the first delivery").await;
    // The consumer dies here: no ack, no nack.
    let started = Instant::now();
    let second = must_receive(q, &queue, "a redelivery once the lease ran out").await;
    assert_eq!(second.message.id, id, "the same message comes back");
    assert_eq!(second.message.attempt, 2, "as attempt 2");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "not before the lease ran out ({:?})",
        started.elapsed()
    );
    assert!(
        matches!(q.ack(&first).await, Err(QueueError::LeaseLost { .. })),
        "the dead consumer's late ack is refused: someone else holds the message"
    );
    q.ack(&second)
        .await
        .unwrap_or_else(|e| panic!("the new holder acks: {e}"));
}

async fn a_failed_message_comes_back_after_a_back_off(q: &dyn Queue) {
    let queue = name("retry");
    publish(q, &queue, Outgoing::new(b"flaky".to_vec())).await;
    let d = must_receive(q, &queue, "the first delivery").await;
    let failed_at = Instant::now();
    let outcome = q
        .nack(&d, "the resize failed")
        .await
        .unwrap_or_else(|e| panic!("nack: {e}"));
    let Failed::RetryAfter(delay) = outcome else {
        panic!("attempt 1 of 3 failing is retried, not {outcome:?}");
    };
    assert!(
        delay >= Duration::from_millis(20) && delay <= Duration::from_millis(40),
        "the first back-off is within the jittered first step: {delay:?}"
    );
    let stats = q.stats(&queue).await.unwrap_or_else(|e| panic!("{e}"));
    if failed_at.elapsed() < Duration::from_millis(20) {
        assert_eq!(stats.delayed, 1, "waiting out its back-off: {stats:?}");
    }
    let again = must_receive(q, &queue, "the retry").await;
    assert!(
        failed_at.elapsed() >= Duration::from_millis(20),
        "not before its back-off"
    );
    assert_eq!(again.message.attempt, 2);
    let Failed::RetryAfter(second) = q
        .nack(&again, "failed again")
        .await
        .unwrap_or_else(|e| panic!("nack: {e}"))
    else {
        panic!("attempt 2 of 3 is retried");
    };
    assert!(
        second >= Duration::from_millis(40) && second <= Duration::from_millis(80),
        "the back-off doubles: {second:?}"
    );
    let third = must_receive(q, &queue, "the second retry").await;
    q.ack(&third).await.unwrap_or_else(|e| panic!("ack: {e}"));
}

async fn a_poison_message_is_dead_lettered_after_its_attempts(q: &dyn Queue) {
    let queue = name("poison");
    let id = publish(q, &queue, Outgoing::new(b"corrupt".to_vec())).await;
    let healthy = publish(q, &queue, Outgoing::new(b"fine".to_vec())).await;
    let mut attempts = Vec::new();
    let mut acked_healthy = false;
    loop {
        let d = must_receive(q, &queue, "the poison message until it is dead").await;
        if d.message.id == healthy {
            q.ack(&d).await.unwrap_or_else(|e| panic!("ack: {e}"));
            acked_healthy = true;
            continue;
        }
        attempts.push(d.message.attempt);
        match q.nack(&d, "not a decodable image").await {
            Ok(Failed::RetryAfter(_)) => continue,
            Ok(Failed::DeadLettered) => break,
            Err(e) => panic!("nack: {e}"),
        }
    }
    assert_eq!(
        attempts,
        [1, 2, 3],
        "three attempts, then the dead-letter list"
    );
    assert!(acked_healthy, "the healthy message went through meanwhile");
    nothing_now(q, &queue, "a dead letter is not delivered").await;
    let dead = q
        .dead_letters(&queue, 10)
        .await
        .unwrap_or_else(|e| panic!("dead_letters: {e}"));
    assert_eq!(dead.len(), 1, "only the poison is dead: {dead:?}");
    assert_eq!(dead[0].message.id, id);
    assert_eq!(dead[0].message.payload, b"corrupt");
    assert_eq!(dead[0].message.attempt, 3);
    assert_eq!(
        dead[0].error, "not a decodable image",
        "its last error is kept"
    );
    let stats = q.stats(&queue).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((stats.dead, stats.depth()), (1, 0), "{stats:?}");
}

async fn a_message_whose_consumers_keep_dying_is_dead_lettered(q: &dyn Queue) {
    let queue = name("dying");
    let id = publish(q, &queue, Outgoing::new(b"crashes the worker".to_vec())).await;
    for attempt in 1..=3 {
        let d = must_receive(q, &queue, "a delivery to a consumer that will die").await;
        assert_eq!(d.message.attempt, attempt);
        // The consumer dies holding the lease.
    }
    let deadline = Instant::now() + DEADLINE;
    loop {
        nothing_now(
            q,
            &queue,
            "after its last lease ran out it is not delivered",
        )
        .await;
        let dead = q
            .dead_letters(&queue, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(d) = dead.first() {
            assert_eq!(d.message.id, id);
            assert!(d.error.contains("lease ran out"), "the reason: {}", d.error);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dead-lettered within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn dead_letters_are_replayed_and_purged(q: &dyn Queue) {
    let queue = name("dlq");
    let mut ids = Vec::new();
    for payload in [b"a", b"b", b"c"] {
        ids.push(publish(q, &queue, Outgoing::new(payload.to_vec())).await);
    }
    let mut dead = 0;
    while dead < 3 {
        let d = must_receive(q, &queue, "messages to kill").await;
        if q.nack(&d, "boom").await.unwrap_or_else(|e| panic!("{e}")) == Failed::DeadLettered {
            dead += 1;
        }
    }
    let replayed = q
        .replay(&queue, Some(ids[0]))
        .await
        .unwrap_or_else(|e| panic!("replay one: {e}"));
    assert_eq!(replayed, 1);
    let back = must_receive(q, &queue, "the replayed dead letter").await;
    assert_eq!(back.message.id, ids[0]);
    assert_eq!(
        back.message.attempt, 1,
        "a replayed message gets fresh attempts"
    );
    q.ack(&back).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(
            q.replay(&queue, Some(ids[0])).await,
            Err(QueueError::NoSuchDeadLetter { .. })
        ),
        "replaying what is not dead says so"
    );
    let purged = q
        .purge(&queue, Some(ids[1]))
        .await
        .unwrap_or_else(|e| panic!("purge one: {e}"));
    assert_eq!(purged, 1);
    let left = q
        .dead_letters(&queue, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        left.iter().map(|d| d.message.id).collect::<Vec<_>>(),
        [ids[2]]
    );
    assert_eq!(
        q.purge(&queue, None)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        1
    );
    let stats = q.stats(&queue).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        stats,
        crate::QueueStats::default(),
        "nothing left: {stats:?}"
    );
}

async fn higher_priorities_go_first_then_oldest_first(q: &dyn Queue) {
    let queue = name("priorities");
    let order = [
        (b"low-1".as_slice(), Priority::Low),
        (b"normal-1", Priority::Normal),
        (b"high-1", Priority::High),
        (b"normal-2", Priority::Normal),
        (b"high-2", Priority::High),
    ];
    for (payload, priority) in order {
        publish(
            q,
            &queue,
            Outgoing::new(payload.to_vec()).with_priority(priority),
        )
        .await;
    }
    let mut got = Vec::new();
    for _ in 0..order.len() {
        let d = must_receive(q, &queue, "prioritized messages").await;
        assert_eq!(
            Some(d.message.priority),
            order
                .iter()
                .find(|(p, _)| *p == d.message.payload)
                .map(|(_, pr)| *pr)
        );
        got.push(String::from_utf8_lossy(&d.message.payload).into_owned());
        q.ack(&d).await.unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(got, ["high-1", "high-2", "normal-1", "normal-2", "low-1"]);
}

async fn a_delayed_message_waits_for_its_delay(q: &dyn Queue) {
    let queue = name("delayed");
    let published = Instant::now();
    publish(
        q,
        &queue,
        Outgoing::new(b"later".to_vec()).with_delay(Duration::from_millis(300)),
    )
    .await;
    if published.elapsed() < Duration::from_millis(250) {
        nothing_now(
            q,
            &queue,
            "a delayed message is not delivered before its delay",
        )
        .await;
    }
    let d = must_receive(q, &queue, "the delayed message").await;
    assert!(
        published.elapsed() >= Duration::from_millis(300),
        "not early"
    );
    q.ack(&d).await.unwrap_or_else(|e| panic!("{e}"));
}

async fn a_released_message_returns_at_once_without_using_an_attempt(q: &dyn Queue) {
    let queue = name("release");
    publish(q, &queue, Outgoing::new(b"handed back".to_vec())).await;
    let d = must_receive(q, &queue, "the message").await;
    q.release(&d)
        .await
        .unwrap_or_else(|e| panic!("release: {e}"));
    let again = q
        .receive(&queue, Duration::from_millis(100))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("a released message is deliverable at once"));
    assert_eq!(
        again.message.attempt, 1,
        "handing back is not a failed attempt"
    );
    assert!(
        matches!(q.ack(&d).await, Err(QueueError::LeaseLost { .. })),
        "the released lease is gone"
    );
    q.ack(&again).await.unwrap_or_else(|e| panic!("{e}"));
}

async fn an_extended_lease_keeps_the_message(q: &dyn Queue) {
    let queue = name("extend");
    publish(q, &queue, Outgoing::new(b"long job".to_vec())).await;
    let d = must_receive(q, &queue, "the message").await;
    let until = Instant::now() + Duration::from_millis(900);
    while Instant::now() < until {
        q.extend(&d).await.unwrap_or_else(|e| panic!("extend: {e}"));
        nothing_now(
            q,
            &queue,
            "a message whose lease is extended stays with its consumer",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    q.ack(&d)
        .await
        .unwrap_or_else(|e| panic!("ack after three lease lengths: {e}"));
}

async fn queues_are_independent(q: &dyn Queue) {
    let (a, b) = (name("queue-a"), name("queue-b"));
    publish(q, &a, Outgoing::new(b"for a".to_vec())).await;
    nothing_now(q, &b, "queue b does not see queue a's message").await;
    let stats = q.stats(&b).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.depth(), 0);
    let d = must_receive(q, &a, "queue a's message").await;
    q.ack(&d).await.unwrap_or_else(|e| panic!("{e}"));
}

async fn oversized_messages_and_full_queues_are_refused(q: &dyn Queue) {
    let queue = name("bounded");
    match q.publish(&queue, Outgoing::new(vec![0; 101])).await {
        Err(QueueError::TooLarge {
            size: 101,
            max: 100,
        }) => {}
        other => panic!("101 bytes over a 100-byte limit is refused, not {other:?}"),
    }
    for _ in 0..3 {
        publish(q, &queue, Outgoing::new(vec![1; 100])).await;
    }
    match q
        .publish(&queue, Outgoing::new(b"one too many".to_vec()))
        .await
    {
        Err(
            e @ QueueError::Full {
                length: 3, max: 3, ..
            },
        ) => {
            assert!(e.to_string().contains("full"), "{e}");
            assert!(e.is_retryable());
        }
        other => panic!("a fourth message in a queue of three is refused, not {other:?}"),
    }
    let d = must_receive(q, &queue, "a message").await;
    q.ack(&d).await.unwrap_or_else(|e| panic!("{e}"));
    publish(q, &queue, Outgoing::new(b"room again".to_vec())).await;
}

async fn concurrent_consumers_never_share_a_message(q: Arc<dyn Queue>) {
    let queue = name("concurrent");
    let mut published = BTreeSet::new();
    for i in 0..40u32 {
        published.insert(publish(&*q, &queue, Outgoing::new(i.to_be_bytes().to_vec())).await);
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (q, queue) = (q.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(d) = q
                .receive(&queue, Duration::from_millis(200))
                .await
                .unwrap_or_else(|e| panic!("{e}"))
            {
                q.ack(&d).await.unwrap_or_else(|e| panic!("ack: {e}"));
                mine.push(d.message.id);
            }
            mine
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap_or_else(|e| panic!("consumer task: {e}")));
    }
    let distinct: BTreeSet<_> = seen.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "no message went to two consumers"
    );
    assert_eq!(distinct, published, "every message was consumed");
}
