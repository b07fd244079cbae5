//! The change log the embedded engine keeps for the API servers' in-process caches: every
//! committed change to a user is logged once, with its version, in the write's own
//! transaction; a bulk load and a fence say "anything may have changed"; the log stays
//! bounded, and a reader that fell behind its trimmed end is told so.

use strata_core::user::{IdField, User, UserId, UserProfile};
use strata_store::accounts::SessionStore;
use strata_store::changes::{ChangeFeed, UserChanges};
use strata_store::shard::fence::Fence;
use strata_store::shard::group::ShardGroup;
use strata_store::shard::slot::{SlotRange, Strategy};
use strata_store::sqlite::{CHANGES_KEPT, DB_FILE, SqliteStore};
use strata_store::{Precondition, Store};

fn open(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(dir)
        .unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
        .store
}

fn user(id: u64, first: &str) -> User {
    let doc = serde_json::json!({"firstName": first, "lastName": "Logged",
        "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"}});
    User {
        id: UserId(id),
        profile: UserProfile::parse(&doc, IdField::Forbidden).expect("a valid profile"),
    }
}

fn poll(feed: &dyn ChangeFeed) -> UserChanges {
    feed.poll().expect("poll")
}

#[tokio::test]
async fn every_committed_change_to_a_user_is_logged_once_with_its_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store.create(&user(7, "a")).await.expect("create");
    let feed = store.change_feed().expect("feed");
    assert_eq!(
        poll(&feed),
        UserChanges::Nothing,
        "a new feed starts at the end"
    );

    let v2 = store
        .replace(UserId(7), &user(7, "b").profile, Precondition::None)
        .await
        .expect("replace");
    assert_eq!(
        poll(&feed),
        UserChanges::Users(vec![(UserId(7), v2.version)])
    );
    assert_eq!(poll(&feed), UserChanges::Nothing, "seen once");

    store.create(&user(8, "c")).await.expect("create");
    let gone = store
        .delete(UserId(7), Precondition::None)
        .await
        .expect("delete");
    assert_eq!(
        poll(&feed),
        UserChanges::Users(vec![(UserId(8), 1), (UserId(7), gone.version)]),
        "in commit order; a delete at its tombstone's version"
    );

    // Writes to other tables move data_version but log nothing.
    store
        .count_failure("login:x", std::time::Duration::from_secs(60), 1_000)
        .await
        .expect("another table");
    assert_eq!(poll(&feed), UserChanges::Nothing);

    store
        .insert_batch(vec![user(100, "d"), user(101, "e")])
        .await
        .expect("bulk");
    assert_eq!(
        poll(&feed),
        UserChanges::Everything,
        "a bulk load logs one entry for the batch"
    );
    store.create(&user(9, "f")).await.expect("create");
    assert_eq!(
        poll(&feed),
        UserChanges::Users(vec![(UserId(9), 1)]),
        "and logs one by one again after it"
    );

    store
        .add_fence(Fence {
            slots: SlotRange::all(),
            strategy: Strategy::Hash,
            user: None,
            except: Vec::new(),
            moved_to: ShardGroup::parse("s2").expect("group"),
            map_version: 2,
        })
        .await
        .expect("fence");
    assert_eq!(poll(&feed), UserChanges::Everything, "rows moved away");
}

#[tokio::test]
async fn the_log_stays_bounded_and_a_reader_behind_its_trimmed_end_is_told_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store.create(&user(7, "a")).await.expect("create");
    let behind = store.change_feed().expect("feed");

    // Another connection (as another process would) commits far more changes than are kept.
    let writes = CHANGES_KEPT + 3_000;
    let raw = rusqlite::Connection::open(dir.path().join(DB_FILE)).expect("raw connection");
    raw.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    raw.execute_batch("PRAGMA synchronous = OFF; BEGIN IMMEDIATE;")
        .expect("begin");
    for _ in 0..writes {
        raw.execute("UPDATE users SET version = version + 1 WHERE id = 7", [])
            .expect("update");
    }
    raw.execute_batch("COMMIT;").expect("commit");
    let kept: u64 = raw
        .query_row("SELECT count(*) FROM cache_changes", [], |r| r.get(0))
        .expect("count");
    assert!(
        (CHANGES_KEPT..=CHANGES_KEPT + 1024).contains(&kept),
        "{kept} rows kept after {writes} changes"
    );
    drop(raw);

    assert_eq!(
        poll(&behind),
        UserChanges::Everything,
        "the rows this reader had not read were trimmed"
    );
    let v = store
        .replace(UserId(7), &user(7, "b").profile, Precondition::None)
        .await
        .expect("replace");
    assert_eq!(v.version, writes + 2);
    assert_eq!(
        poll(&behind),
        UserChanges::Users(vec![(UserId(7), v.version)]),
        "and it follows the log again from where it now is"
    );
}

/// Not a check but a measurement (BENCHMARKS.md quotes it): what one poll costs when nothing
/// changed, and when one user changed since the last poll. Run with
/// `cargo test --release -p strata-store --test changes -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, run by hand"]
async fn measure_what_a_poll_costs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store.create(&user(7, "a")).await.expect("create");
    let feed = store.change_feed().expect("feed");
    let polls = 200_000u32;
    let started = std::time::Instant::now();
    for _ in 0..polls {
        assert_eq!(poll(&feed), UserChanges::Nothing);
    }
    let unchanged = started.elapsed() / polls;
    let writes = 500u32;
    let mut changed = std::time::Duration::ZERO;
    for i in 0..writes {
        store
            .replace(
                UserId(7),
                &user(7, &format!("n{i}")).profile,
                Precondition::None,
            )
            .await
            .expect("replace");
        let started = std::time::Instant::now();
        assert!(matches!(poll(&feed), UserChanges::Users(_)));
        changed += started.elapsed();
    }
    println!(
        "poll, nothing changed: {:.2} µs; poll after one write: {:.2} µs",
        unchanged.as_secs_f64() * 1e6,
        (changed / writes).as_secs_f64() * 1e6
    );
}
