//! The RabbitMQ engine against the shared queue suite, on a real broker that each test starts
//! (strata-engines: its own node, port mapper and loopback ports in a temporary directory),
//! plus the faults that are particular to a broker: the broker killed with SIGKILL and started
//! again under a running publisher and consumer, and a consumer whose process or connection
//! dies holding a message.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use strata_queue::conformance::{quick_policy, run_all};
use strata_queue::rabbitmq::{RabbitConfig, RabbitQueue};
use strata_queue::{Outgoing, Queue, QueueError, QueueName, QueuePolicy};
use strata_testkit::engines::Log;
use strata_testkit::engines::rabbitmq::{self, Broker, Node, Ports};

/// How long a broker may take to start (it recovers its quorum queues first when restarted).
const BROKER_START: Duration = Duration::from_secs(120);

fn name(n: &str) -> QueueName {
    QueueName::parse(n).expect("queue name")
}

/// A broker of the test's own, in a temporary directory (its log is `rabbitmq.log` there).
struct Rabbit {
    broker: Broker,
    dir: tempfile::TempDir,
}

impl Rabbit {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::File(dir.path().join("rabbitmq.log"));
        let ports = Ports::free().expect("free ports");
        let node = Node::new(dir.path().join("node"), ports);
        let broker = rabbitmq::start(node, &log, BROKER_START).unwrap_or_else(|e| {
            panic!(
                "cannot start a RabbitMQ broker for the queue tests: {e}\n\
                 (scripts/test installs it; by hand: apt-get install rabbitmq-server)"
            )
        });
        Self { broker, dir }
    }

    fn engine(&self, namespace: &str, policy: QueuePolicy) -> RabbitQueue {
        let mut config = RabbitConfig::new(self.broker.url(), policy);
        config.namespace = name(namespace);
        RabbitQueue::new(config)
    }

    fn log_tail(&self) -> String {
        Log::File(self.dir.path().join("rabbitmq.log")).tail(20)
    }

    /// Kills the broker with SIGKILL (without blocking the runtime's other tasks).
    fn kill9(&mut self) {
        tokio::task::block_in_place(|| self.broker.kill9());
    }

    /// Starts the broker again on its data and ports.
    fn restart(&mut self) {
        let outcome = tokio::task::block_in_place(|| self.broker.restart(BROKER_START));
        if let Err(e) = outcome {
            panic!("the broker starts again: {e}; its log: {}", self.log_tail());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rabbitmq_queue_passes_the_queue_suite() {
    let rabbit = Rabbit::start();
    let counter = AtomicU32::new(0);
    run_all(async |policy| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        Arc::new(rabbit.engine(&format!("suite-{n}"), policy)) as Arc<dyn Queue>
    })
    .await;
}

/// Polls `done` every 20 ms until it holds, failing with `what` after `within`.
async fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_and_restarted_under_load_loses_no_confirmed_message() {
    const MESSAGES: u32 = 300;
    let mut rabbit = Rabbit::start();
    let policy = QueuePolicy {
        visibility_timeout: Duration::from_secs(5),
        max_attempts: 50,
        ..quick_policy()
    };
    let queue = name("fault");
    let producer = rabbit.engine("fault", policy);
    let consumer = rabbit.engine("fault", policy);
    producer.declare(&queue).await.expect("declare");

    let confirmed = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let acked = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let publish_errors = Arc::new(AtomicU32::new(0));
    let (consume_errors, lost_leases) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let done = Arc::new(AtomicBool::new(false));

    let publisher = {
        let (q, queue, confirmed, errors) = (
            producer.clone(),
            queue.clone(),
            confirmed.clone(),
            publish_errors.clone(),
        );
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(180);
            for i in 0..MESSAGES {
                // Paced, so that the broker dies in the middle of the stream.
                tokio::time::sleep(Duration::from_millis(10)).await;
                loop {
                    match q
                        .publish(&queue, Outgoing::new(i.to_be_bytes().to_vec()))
                        .await
                    {
                        Ok(_) => break,
                        Err(e) if e.is_retryable() => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            assert!(Instant::now() < deadline, "publishing: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("publish {i}: {e}"),
                    }
                }
                confirmed.lock().expect("lock").insert(i);
            }
        })
    };
    let reader = {
        let (q, queue, acked, done) =
            (consumer.clone(), queue.clone(), acked.clone(), done.clone());
        let (errors, lost) = (consume_errors.clone(), lost_leases.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                match q.receive(&queue, Duration::from_millis(300)).await {
                    Ok(Some(d)) => match q.ack(&d).await {
                        Ok(()) => {
                            let n = u32::from_be_bytes(
                                d.message.payload[..4].try_into().expect("4 bytes"),
                            );
                            acked.lock().expect("lock").insert(n);
                        }
                        Err(QueueError::LeaseLost { .. }) => {
                            lost.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("ack: {e}"),
                    },
                    Ok(None) => {}
                    Err(e) => {
                        assert!(e.is_retryable(), "receive: {e}");
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        })
    };

    eventually(
        Duration::from_secs(60),
        "a third of the messages confirmed",
        || confirmed.lock().expect("lock").len() as u32 >= MESSAGES / 3,
    )
    .await;
    let killed = Instant::now();
    rabbit.kill9();
    let at_kill = confirmed.lock().expect("lock").len();
    rabbit.restart();
    let restarted_after = killed.elapsed();

    tokio::time::timeout(Duration::from_secs(180), publisher)
        .await
        .expect("the publisher finishes")
        .expect("publisher task");
    eventually(
        Duration::from_secs(120),
        "every confirmed message acknowledged",
        || *acked.lock().expect("lock") == *confirmed.lock().expect("lock"),
    )
    .await;
    done.store(true, Ordering::Relaxed);
    reader.await.expect("consumer task");

    let confirmed = confirmed.lock().expect("lock").clone();
    assert_eq!(
        confirmed.len() as u32,
        MESSAGES,
        "every message was confirmed in the end"
    );
    eprintln!(
        "{MESSAGES} confirmed ({at_kill} before the kill), all acknowledged; broker back after \
         {restarted_after:?}; publish errors {}, receive errors {}, leases lost {}",
        publish_errors.load(Ordering::Relaxed),
        consume_errors.load(Ordering::Relaxed),
        lost_leases.load(Ordering::Relaxed)
    );
    assert!(
        publish_errors.load(Ordering::Relaxed) + consume_errors.load(Ordering::Relaxed) > 0,
        "the kill was felt by the clients"
    );
    assert!(
        producer.connections() >= 2,
        "the publisher connected again by itself"
    );
    assert!(
        consumer.connections() >= 2,
        "the consumer connected again by itself"
    );
    let stats = consumer.stats(&queue).await.expect("stats");
    assert_eq!(stats.depth(), 0, "nothing left over: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_lost_its_definitions_gets_them_declared_again() {
    let mut rabbit = Rabbit::start();
    let q = rabbit.engine("redeclare", quick_policy());
    let queue = name("jobs");
    q.publish(&queue, Outgoing::new(b"before".to_vec()))
        .await
        .expect("publish");
    rabbit.kill9();
    let data = rabbit.broker.node().data_dir();
    std::fs::remove_dir_all(&data).expect("wipe the broker's data");
    rabbit.restart();
    // The engine's queues are gone from the broker; the next operation connects again and
    // declares them before it publishes (a mandatory publish to a missing queue would fail).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match q.publish(&queue, Outgoing::new(b"after".to_vec())).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "publish after the restart: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d = q
        .receive(&queue, Duration::from_secs(10))
        .await
        .expect("receive")
        .expect("the message published after the restart");
    assert_eq!(d.message.payload, b"after");
    q.ack(&d).await.expect("ack");
    assert!(q.connections() >= 2);
}

/// A dead letter placed twice — as when the broker or the connection is lost after the dead
/// letter was confirmed and before its delivery was acknowledged — is listed once, counted
/// once afterwards, and replayed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_buried_twice_is_listed_and_replayed_once() {
    use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
    use lapin::{Connection, ConnectionProperties};
    use strata_queue::Failed;
    use strata_queue::rabbitmq::topology::Names;

    let rabbit = Rabbit::start();
    let policy = QueuePolicy {
        max_attempts: 1,
        ..quick_policy()
    };
    let q = rabbit.engine("twice", policy);
    let queue = name("jobs");
    let id = q
        .publish(&queue, Outgoing::new(b"poison".to_vec()))
        .await
        .expect("publish");
    let d = q
        .receive(&queue, Duration::from_secs(10))
        .await
        .expect("receive")
        .expect("the message");
    let failed = q.nack(&d, "corrupt pixels").await.expect("nack");
    assert!(matches!(failed, Failed::DeadLettered), "{failed:?}");

    // The second copy: the dead letter's own bytes and properties, published to the dead queue.
    let dead = Names::new(&name("twice"), &queue).dead();
    let connection = Connection::connect(&rabbit.broker.url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let got = channel
        .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .expect("basic.get")
        .expect("the dead letter");
    let copy = channel
        .basic_publish(
            "".into(),
            dead.as_str().into(),
            BasicPublishOptions::default(),
            &got.delivery.data,
            got.delivery.properties.clone(),
        )
        .await
        .expect("publish the copy")
        .await
        .expect("the copy confirmed");
    assert!(copy.is_ack());
    connection
        .close(200, "done".into())
        .await
        .expect("close (the original goes back)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while q.stats(&queue).await.expect("stats").dead != 2 {
        assert!(Instant::now() < deadline, "two copies are counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let listed = q.dead_letters(&queue, 10).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].message.id, id);
    assert_eq!(listed[0].error, "corrupt pixels");
    assert_eq!(q.stats(&queue).await.expect("stats").dead, 1);
    assert_eq!(q.replay(&queue, None).await.expect("replay"), 1);
    let again = q
        .receive(&queue, Duration::from_secs(10))
        .await
        .expect("receive")
        .expect("the replayed message");
    assert_eq!(again.message.payload, b"poison");
    q.ack(&again).await.expect("ack");
    let none = q
        .receive(&queue, Duration::from_millis(500))
        .await
        .expect("receive");
    assert!(none.is_none(), "replayed twice: {none:?}");
    assert_eq!(q.stats(&queue).await.expect("stats").dead, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_connection_dies_mid_message_has_it_delivered_again() {
    let rabbit = Rabbit::start();
    let queue = name("jobs");
    let a = rabbit.engine("dies", minute_leases());
    let b = rabbit.engine("dies", minute_leases());
    let id = a
        .publish(&queue, Outgoing::new(b"resize 7".to_vec()))
        .await
        .expect("publish");
    let held = a
        .receive(&queue, Duration::from_secs(10))
        .await
        .expect("receive")
        .expect("the message");
    a.close().await;
    let again = b
        .receive(&queue, Duration::from_secs(10))
        .await
        .expect("receive")
        .expect("the message comes back when the holder's connection is gone");
    assert_eq!(again.message.id, id);
    assert_eq!(
        again.message.attempt, 2,
        "the lost delivery counted as an attempt"
    );
    assert!(
        matches!(a.ack(&held).await, Err(QueueError::LeaseLost { .. })),
        "the dead connection's lease is lost"
    );
    b.ack(&again).await.expect("ack");
}

/// Leases of a minute: a message held by the consumer process comes back because the broker
/// saw its connection close, not because a lease ran out.
fn minute_leases() -> QueuePolicy {
    QueuePolicy {
        visibility_timeout: Duration::from_secs(60),
        ..quick_policy()
    }
}

/// Set in the environment of the child process that plays a consumer: the broker's URL.
const CHILD_URL: &str = "STRATA_RABBITMQ_TEST_CONSUMER_URL";

/// Not a test by itself: the consumer process that the next test starts and kills. It
/// receives one message, says so on stdout, and works "forever".
#[tokio::test]
#[ignore = "run as a child process by a_consumer_process_killed_mid_message_has_it_delivered_again"]
async fn consumer_process_that_will_be_killed() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let mut config = RabbitConfig::new(url, minute_leases());
    config.namespace = name("killed");
    let q = RabbitQueue::new(config);
    let d = q
        .receive(&name("jobs"), Duration::from_secs(30))
        .await
        .expect("receive")
        .expect("a message");
    println!("received {}", d.message.id);
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_process_killed_mid_message_has_it_delivered_again() {
    let rabbit = Rabbit::start();
    let queue = name("jobs");
    let q = rabbit.engine("killed", minute_leases());
    let id = q
        .publish(&queue, Outgoing::new(b"resize 42".to_vec()))
        .await
        .expect("publish");

    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(&exe)
        .args([
            "--exact",
            "consumer_process_that_will_be_killed",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_URL, rabbit.broker.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the consumer process");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("received ") {
                let _ = tx.send(line);
            }
        }
    });
    let line = tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(60)))
        .unwrap_or_else(|_| panic!("the consumer process received the message within 60 s"));
    assert_eq!(line, format!("received {id}"));
    child.kill().expect("SIGKILL the consumer");
    child.wait().expect("reap the consumer");

    let started = Instant::now();
    let d = q
        .receive(&queue, Duration::from_secs(20))
        .await
        .expect("receive")
        .expect("the dead consumer's message comes back");
    assert_eq!(d.message.id, id);
    assert_eq!(
        d.message.attempt, 2,
        "the killed consumer's delivery counted"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    q.ack(&d).await.expect("ack");
}
