//! `strata queue` as an operator runs it on a deployment's data directory: the counts, and the
//! dead letters listed, replayed and purged; mistakes answered with exit 1 and a sentence.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use strata_queue::sqlite::SqliteQueue;
use strata_queue::{Failed, Outgoing, Queue, QueueName, QueuePolicy};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn queue_cmd(data: &Path, args: &[&str]) -> Output {
    Command::new(STRATA)
        .arg("queue")
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .expect("run strata queue")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn an_operator_sees_the_counts_and_lists_replays_and_purges_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let policy = QueuePolicy {
        max_attempts: 1,
        ..QueuePolicy::default()
    };
    let q = SqliteQueue::open(&data.join("queue"), policy).expect("open");
    let photos = QueueName::parse("photos").expect("name");
    let mut ids = Vec::new();
    for payload in ["photo-job 1", "photo-job 2"] {
        ids.push(
            q.publish(&photos, Outgoing::new(payload))
                .await
                .expect("publish"),
        );
        let d = q
            .receive(&photos, Duration::from_secs(5))
            .await
            .expect("receive")
            .expect("a message");
        assert_eq!(
            q.nack(&d, "not a decodable image").await.expect("nack"),
            Failed::DeadLettered
        );
    }

    let stats: serde_json::Value =
        serde_json::from_str(&stdout(&queue_cmd(data, &["stats", "--json"]))).expect("JSON");
    assert_eq!(stats[0]["queue"], "photos", "{stats}");
    assert_eq!(stats[0]["dead"], 2, "{stats}");
    assert!(stdout(&queue_cmd(data, &["stats"])).contains("photos"));

    let list = stdout(&queue_cmd(data, &["dlq", "list"]));
    for id in &ids {
        assert!(list.contains(&format!("{id}  attempts 1")), "{list}");
    }
    assert!(list.contains("not a decodable image"), "{list}");

    let first = ids[0].to_string();
    assert!(
        stdout(&queue_cmd(data, &["dlq", "replay", &first])).contains("replayed 1 dead letter")
    );
    let back = q
        .receive(&photos, Duration::from_secs(5))
        .await
        .expect("receive")
        .expect("the replayed message");
    assert_eq!((back.message.id, back.message.attempt), (ids[0], 1));

    assert!(stdout(&queue_cmd(data, &["dlq", "purge", "--all"])).contains("purged 1 dead letter"));
    assert!(stdout(&queue_cmd(data, &["dlq", "list"])).contains("no dead letters in photos"));

    let missing = queue_cmd(data, &["dlq", "replay", "999"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("has no dead letter 999"));
    let nowhere = queue_cmd(&data.join("nothing-here"), &["stats"]);
    assert_eq!(nowhere.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("there is no queue in"));
    let usage = queue_cmd(data, &["dlq", "replay"]);
    assert_eq!(usage.status.code(), Some(2), "an id or --all is required");
}
