//! The embedded SQLite queue against the shared queue suite, plus what is particular to a file
//! on disk: messages survive a reopen, a consumer process killed with SIGKILL mid-job has its
//! message delivered again, and two processes' engines on one file never share a lease.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_queue::conformance::{quick_policy, run_all};
use strata_queue::sqlite::SqliteQueue;
use strata_queue::{Outgoing, Queue, QueueName};

fn name(n: &str) -> QueueName {
    QueueName::parse(n).expect("queue name")
}

#[tokio::test]
async fn the_sqlite_queue_passes_the_queue_suite() {
    let root = tempfile::tempdir().expect("tempdir");
    let counter = std::sync::atomic::AtomicU32::new(0);
    run_all(async |policy| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = root.path().join(format!("engine-{n}"));
        Arc::new(SqliteQueue::open(&dir, policy).expect("open")) as Arc<dyn Queue>
    })
    .await;
}

#[tokio::test]
async fn published_messages_survive_closing_and_reopening_the_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = name("durable");
    {
        let q = SqliteQueue::open(dir.path(), quick_policy()).expect("open");
        q.publish(&queue, Outgoing::new(b"kept".to_vec()))
            .await
            .expect("publish");
    }
    let q = SqliteQueue::open(dir.path(), quick_policy()).expect("reopen");
    let d = q
        .receive(&queue, Duration::from_secs(5))
        .await
        .expect("receive")
        .expect("the message published before the reopen");
    assert_eq!(d.message.payload, b"kept");
    q.ack(&d).await.expect("ack");
}

/// Set in the environment of the child process that plays a consumer.
const CHILD_DIR: &str = "STRATA_QUEUE_TEST_CONSUMER_DIR";

/// Not a test by itself: the consumer process that the next test starts and kills. It
/// receives one message, says so on stdout, and works "forever".
#[tokio::test]
#[ignore = "run as a child process by a_consumer_killed_mid_job_has_its_message_delivered_again"]
async fn consumer_process_that_will_be_killed() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let q = SqliteQueue::open(std::path::Path::new(&dir), quick_policy()).expect("open");
    let d = q
        .receive(&name("jobs"), Duration::from_secs(10))
        .await
        .expect("receive")
        .expect("a message");
    println!("received {}", d.message.id);
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn a_consumer_killed_mid_job_has_its_message_delivered_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = name("jobs");
    let q = SqliteQueue::open(dir.path(), quick_policy()).expect("open");
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
        .env(CHILD_DIR, dir.path())
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
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("the consumer process received the message within 30 s"));
    assert_eq!(line, format!("received {id}"));
    child.kill().expect("SIGKILL the consumer");
    child.wait().expect("reap the consumer");

    let started = Instant::now();
    let d = q
        .receive(&queue, Duration::from_secs(10))
        .await
        .expect("receive")
        .expect("the dead consumer's message comes back once its lease runs out");
    assert_eq!(d.message.id, id);
    assert_eq!(
        d.message.attempt, 2,
        "the killed consumer's delivery counted"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    q.ack(&d).await.expect("ack");
}

#[tokio::test]
async fn two_engines_on_one_file_never_lease_one_message_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = name("shared");
    let a = Arc::new(SqliteQueue::open(dir.path(), quick_policy()).expect("open a"));
    let b = Arc::new(SqliteQueue::open(dir.path(), quick_policy()).expect("open b"));
    for i in 0..60u32 {
        a.publish(&queue, Outgoing::new(i.to_be_bytes().to_vec()))
            .await
            .expect("publish");
    }
    let mut tasks = Vec::new();
    for engine in [a.clone(), b.clone(), a, b] {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(d) = engine
                .receive(&queue, Duration::from_millis(300))
                .await
                .expect("receive")
            {
                engine.ack(&d).await.expect("ack: nobody else holds it");
                mine.push(d.message.id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let distinct: std::collections::BTreeSet<_> = all.iter().collect();
    assert_eq!(all.len(), 60, "each message consumed once");
    assert_eq!(distinct.len(), 60);
}

#[test]
fn many_openers_of_a_new_queue_file_at_once_all_succeed() {
    // API servers and workers start together and open the same new file: the switch to WAL
    // races, and SQLite answers the race with "database is locked" unless retried.
    for _ in 0..10 {
        let dir = tempfile::tempdir().expect("tempdir");
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let openers: Vec<_> = (0..8)
            .map(|_| {
                let (dir, barrier) = (dir.path().to_path_buf(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    SqliteQueue::open(&dir, quick_policy()).map(|_| ())
                })
            })
            .collect();
        for o in openers {
            o.join().expect("thread").expect("every opener succeeds");
        }
    }
}
