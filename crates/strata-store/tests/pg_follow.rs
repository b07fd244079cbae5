//! The PostgreSQL log of committed user changes, followed from a real streaming replica
//! (strata-testkit): every change is delivered once with the user as the replica holds it,
//! in commit order whatever order the log numbered them, a transaction still open at one poll
//! is delivered by a later one, a bulk load logs nothing, and a follower the trimmed log left
//! behind — or whose server restarted — is told that anything may have changed.

use std::time::{Duration, Instant};

use strata_core::user::{IdField, User, UserId, UserProfile};
use strata_store::changes::{ChangeFollower, Followed, FollowedUser};
use strata_store::postgres::{PgChangeFollower, PgConfig, PgStore};
use strata_store::{Precondition, Store};
use strata_testkit::PgServer;

fn user(id: u64, first: &str) -> User {
    let doc = serde_json::json!({"firstName": first, "lastName": "Followed",
        "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"}});
    User {
        id: UserId(id),
        profile: UserProfile::parse(&doc, IdField::Forbidden).expect("a valid profile"),
    }
}

/// Polls until something is delivered (or `limit` passes): the replica applies the primary's
/// commits a moment later.
async fn next(follower: &dyn ChangeFollower, limit: Duration) -> Followed {
    let deadline = Instant::now() + limit;
    loop {
        match follower.poll().await {
            Ok(Followed::Nothing) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(followed) => return followed,
            Err(e) if Instant::now() < deadline => {
                eprintln!("poll: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("poll: {e}"),
        }
    }
}

fn summary(followed: &Followed) -> Vec<(u64, u64, Option<u64>)> {
    match followed {
        Followed::Users(users) => users
            .iter()
            .map(
                |FollowedUser {
                     id,
                     logged,
                     current,
                 }| { (id.0, *logged, current.as_ref().map(|c| c.version)) },
            )
            .collect(),
        other => panic!("expected users, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_on_a_replica_gets_every_commit_once_in_any_numbering_and_knows_when_it_fell_behind()
 {
    let (primary, mut replica) = tokio::task::spawn_blocking(|| {
        let primary = PgServer::start();
        primary.create_database("follow");
        let replica = PgServer::start_replica_of(&primary);
        (primary, replica)
    })
    .await
    .expect("start a primary and its replica");
    let writer = PgStore::connect(&PgConfig::new(primary.url_for("follow")))
        .await
        .expect("connect to the primary")
        .store;
    let mut config = PgConfig::new(replica.url_for("follow"));
    config.call_timeout = Duration::from_secs(1);
    config.reconnect_for = Duration::ZERO;
    let follower = PgChangeFollower::open(&config).expect("a follower");
    for id in [1, 2, 3] {
        writer.create(&user(id, "First")).await.expect("create");
    }
    // The first poll sets the starting point (once the replica has the schema).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match follower.poll().await {
            Ok(first) => {
                assert_eq!(first, Followed::Nothing, "the first poll delivers nothing");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "first poll: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A create, an update and a delete: each user once, as the replica now holds it.
    writer.create(&user(4, "New")).await.expect("create 4");
    writer
        .replace(UserId(2), &user(2, "Changed").profile, Precondition::None)
        .await
        .expect("update 2");
    writer
        .replace(UserId(2), &user(2, "Again").profile, Precondition::None)
        .await
        .expect("update 2 again");
    let deleted = writer
        .delete(UserId(3), Precondition::None)
        .await
        .expect("delete 3");
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(summary(&next(&follower, Duration::from_secs(10)).await));
    }
    got.sort();
    assert_eq!(
        got,
        vec![(2, 3, Some(3)), (3, deleted.version, None), (4, 1, Some(1))]
    );
    let Followed::Nothing = follower.poll().await.expect("poll") else {
        panic!("a change delivered twice")
    };

    // Numbered first, committed last: a transaction that logs a change and stays open while a
    // later-numbered one commits is delivered when it commits, not skipped.
    let (client, connection) =
        tokio_postgres::connect(&primary.url_for("follow"), tokio_postgres::NoTls)
            .await
            .expect("a raw connection to the primary");
    tokio::spawn(connection);
    client
        .batch_execute("BEGIN; UPDATE users SET version = version + 1 WHERE id = 1;")
        .await
        .expect("an open transaction");
    writer
        .replace(UserId(4), &user(4, "Later").profile, Precondition::None)
        .await
        .expect("update 4");
    assert_eq!(
        summary(&next(&follower, Duration::from_secs(10)).await),
        vec![(4, 2, Some(2))],
        "only what committed"
    );
    client.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(
        summary(&next(&follower, Duration::from_secs(10)).await),
        vec![(1, 2, Some(2))],
        "the earlier-numbered change, once it committed"
    );

    // A bulk load logs nothing.
    writer
        .insert_batch((100..200).map(|id| user(id, "Bulk")).collect())
        .await
        .expect("bulk load");
    writer
        .create(&user(5, "AfterBulk"))
        .await
        .expect("create 5");
    assert_eq!(
        summary(&next(&follower, Duration::from_secs(10)).await),
        vec![(5, 1, Some(1))],
        "the bulk load's users are not in the log"
    );

    // Trimmed past the follower: 10 transactions of 1,000 changes each while it does not
    // poll, so the trigger trims rows it never read.
    let thousand =
        "UPDATE users SET version = version + 1 WHERE id BETWEEN 100 AND 199; ".repeat(10);
    for _ in 0..10 {
        primary.psql("follow", &thousand);
    }
    let kept: u64 = primary
        .psql("follow", "SELECT count(*) FROM cache_changes")
        .parse()
        .expect("a count");
    assert!(kept < 10_000, "the log is trimmed: {kept} rows");
    assert_eq!(
        next(&follower, Duration::from_secs(10)).await,
        Followed::Everything,
        "a follower the trim left behind"
    );
    // From there on, changes again.
    writer
        .create(&user(6, "AfterTrim"))
        .await
        .expect("create 6");
    assert_eq!(
        summary(&next(&follower, Duration::from_secs(10)).await),
        vec![(6, 1, Some(1))]
    );

    // The replica restarted: another server as far as transaction ids go.
    let replica = tokio::task::spawn_blocking(move || {
        replica.restart();
        replica
    })
    .await
    .expect("restart the replica");
    assert_eq!(
        next(&follower, Duration::from_secs(20)).await,
        Followed::Everything,
        "a restarted server"
    );
    drop((primary, replica));
}
