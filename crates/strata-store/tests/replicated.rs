//! Read/write split on a real primary with two real streaming replicas (strata-testkit):
//! reads spread over the replicas, a lagging replica is skipped, a killed replica costs no
//! failed read and rejoins once back, and reads with a commit token are never stale.

use std::time::{Duration, Instant};

use strata_core::user::{IdField, User, UserId, UserProfile};
use strata_store::postgres::{PgConfig, PgStore};
use strata_store::replicated::{ReadNode, ReplicaPolicy, ReplicatedStore};
use strata_store::{Precondition, ReadRequirement, Store};
use strata_testkit::PgServer;

fn user(id: u64) -> User {
    User {
        id: UserId(id),
        ..User::canonical()
    }
}

fn changed(id: u64) -> UserProfile {
    let doc = serde_json::json!({"firstName": format!("Changed{id}"), "lastName": "Smith",
        "address": {"streetAddress": "1 Elm St", "city": "Boston", "state": "MA", "postalCode": "02134"}});
    UserProfile::parse(&doc, IdField::Forbidden).expect("valid profile")
}

async fn wait_for(what: &str, limit: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok().await {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_use_healthy_replicas_and_never_go_stale() {
    let (primary, replicas) = tokio::task::spawn_blocking(|| {
        let primary = PgServer::start();
        primary.create_database("app");
        let replicas = [
            PgServer::start_replica_of(&primary),
            PgServer::start_replica_of(&primary),
        ];
        (primary, replicas)
    })
    .await
    .expect("start servers");
    let [replica_1, mut replica_2] = replicas;
    let writer = PgStore::connect(&PgConfig::new(primary.url_for("app")))
        .await
        .expect("connect primary")
        .store;
    let policy = ReplicaPolicy {
        max_lag_bytes: 8 * 1024,
        max_lag: Duration::from_secs(2),
        probe_interval: Duration::from_millis(50),
    };
    let replica_config = |server: &PgServer| {
        let mut c = PgConfig::new(server.url_for("app"));
        c.call_timeout = Duration::from_secs(2);
        c.connect_timeout = Duration::from_millis(500);
        c.reconnect_for = Duration::ZERO;
        c
    };
    let store = ReplicatedStore::new(
        writer,
        &[replica_config(&replica_1), replica_config(&replica_2)],
        policy,
    );
    store.create(&user(1)).await.expect("create");

    // Reads without a token are spread over both replicas once they are caught up.
    let mut served = std::collections::BTreeMap::new();
    wait_for(
        "both replicas serve reads",
        Duration::from_secs(10),
        async || {
            let (found, node) = store
                .get_from(UserId(1), ReadRequirement::ANY)
                .await
                .expect("read");
            if found.is_some() {
                *served.entry(format!("{node:?}")).or_insert(0) += 1;
            }
            served.keys().filter(|k| k.starts_with("Replica")).count() == 2
        },
    )
    .await;

    // Read-your-writes: every read with the write's token sees that write (and its version),
    // wherever it is served.
    for i in 0..300u64 {
        let id = 10_000 + i;
        let receipt = store.create(&user(id)).await.expect("create");
        assert_eq!(receipt.version, 1);
        let receipt = store
            .replace(UserId(id), &changed(id), Precondition::VersionIs(1))
            .await
            .expect("replace");
        assert_eq!(receipt.version, 2);
        let (found, _) = store
            .get_from(UserId(id), ReadRequirement::at_least(receipt.commit))
            .await
            .expect("read after the write");
        assert_eq!(
            found.map(|s| s.version),
            Some(receipt.version),
            "user {id}: a read with the write's token saw an older state"
        );
    }

    // A paused replica falls behind and is skipped; reads go on from the other.
    replica_1.psql("app", "SELECT pg_wal_replay_pause()");
    for i in 0..200u64 {
        store.create(&user(20_000 + i)).await.expect("create");
    }
    store.probe().await;
    for i in 0..50u64 {
        let (found, node) = store
            .get_from(UserId(20_000 + i), ReadRequirement::ANY)
            .await
            .expect("read");
        assert_ne!(
            node,
            ReadNode::Replica("replica-1".into()),
            "the lagging replica is skipped"
        );
        if node == ReadNode::Primary {
            assert!(found.is_some(), "user {} is on the primary", 20_000 + i);
        }
    }
    replica_1.psql("app", "SELECT pg_wal_replay_resume()");

    // kill -9 of a replica: not one read fails; once it is back it serves again.
    tokio::task::block_in_place(|| replica_2.kill9());
    for i in 0..100u64 {
        let (found, _) = store
            .get_from(UserId(20_000 + i % 200), ReadRequirement::ANY)
            .await
            .unwrap_or_else(|e| panic!("read {i} failed while a replica was dead: {e}"));
        assert!(found.is_some());
    }
    tokio::task::block_in_place(|| replica_2.restart());
    let mut back = false;
    wait_for(
        "the restarted replica serves reads again",
        Duration::from_secs(15),
        async || {
            let (_, node) = store
                .get_from(UserId(1), ReadRequirement::ANY)
                .await
                .expect("read");
            back |= node == ReadNode::Replica("replica-2".into());
            back
        },
    )
    .await;
    drop(primary);
}
