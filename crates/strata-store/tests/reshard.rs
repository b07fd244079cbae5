//! Online resharding of embedded shard groups while writers keep writing: split 4 → 8 and
//! merge back, stopped in the middle and resumed, aborted before cut-over, a pin; every
//! acknowledged write is found afterwards, each row in exactly the group the map names, and
//! impossible requests are refused with nothing moved.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

mod common;
use common::{Acked, check_everything, profile, write_until};

use strata_core::user::{User, UserId};
use strata_store::embedded_shards::{FileMapPublisher, SqliteGroups, map_path};
use strata_store::open::{DataOptions, Engines};
use strata_store::reshard::journal::journal_path;
use strata_store::reshard::run::{Options, Quiet, Request, Resharder};
use strata_store::shard::source::read_map_file;
use strata_store::shard::{ShardGroup, SlotRange};
use strata_store::{Precondition, ReadRequirement, Store, StoreError};

async fn open(dir: &Path, shards: Option<u16>) -> Engines {
    let mut o = DataOptions::sqlite(dir);
    o.shards = shards;
    o.open().await.expect("open the shard groups")
}

fn resharder(dir: &Path, options: Options) -> Resharder {
    Resharder {
        publisher: Arc::new(FileMapPublisher::new(dir)),
        opener: Arc::new(SqliteGroups::new(dir)),
        journal_path: journal_path(dir),
        options,
        progress: Arc::new(Quiet),
    }
}

/// Opens a group's SQLite file directly (not through the router).
fn sqlite_group(dir: &Path) -> impl Fn(&ShardGroup) -> Arc<dyn Store> {
    let groups = SqliteGroups::new(dir);
    move |g| Arc::new(groups.open_store(g).expect("group"))
}

fn fast() -> Options {
    Options {
        chunk_slots: 64,
        batch: 200,
        cleanup_grace: Duration::from_millis(100),
        stop_after_cuts: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn splitting_four_groups_into_eight_and_back_under_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engines = open(dir.path(), Some(4)).await;
    let (store, accounts) = (engines.store.clone(), engines.accounts.clone());
    // Some users before the resharding starts.
    let mut seed = Vec::new();
    for i in 0..3000u64 {
        seed.push(User {
            id: UserId(1_000_000 + i),
            profile: profile("Seed"),
        });
    }
    store.insert_batch(seed).await.expect("seed");
    let mut acked_seed = Acked::new();
    for i in 0..3000u64 {
        acked_seed.insert(1_000_000 + i, Some((1, "Seed".into())));
    }

    for (request, groups) in [(Request::Shards(8), 8), (Request::Shards(4), 4)] {
        let stop = Arc::new(AtomicBool::new(false));
        let next_id = Arc::new(AtomicU64::new(if groups == 8 {
            2_000_000
        } else {
            3_000_000
        }));
        let writers: Vec<_> = (0..3)
            .map(|w| {
                tokio::spawn(write_until(
                    store.clone(),
                    accounts.clone(),
                    stop.clone(),
                    next_id.clone(),
                    w + groups as u64 * 10,
                    Duration::ZERO,
                ))
            })
            .collect();
        let report = resharder(dir.path(), fast())
            .run(&request)
            .await
            .unwrap_or_else(|e| panic!("{request:?}: {e}"));
        stop.store(true, Ordering::SeqCst);
        assert!(report.finished);
        assert_eq!(report.groups, groups);
        assert!(report.cut_overs >= 16, "{report:?}");
        assert!(report.verified_users > 0, "{report:?}");
        assert!(report.pauses_ms.iter().all(|&p| p < 5000.0), "{report:?}");
        let mut failures = 0;
        for w in writers {
            let (acked, failed) = w.await.expect("writer");
            failures += failed;
            acked_seed.extend(acked);
        }
        // A write that waited out a cut-over is delayed, never refused.
        assert_eq!(failures, 0, "writes failed during {request:?}");
        check_everything(
            dir.path(),
            store.as_ref(),
            &acked_seed,
            true,
            &sqlite_group(dir.path()),
        )
        .await;
        assert!(
            !journal_path(dir.path()).exists(),
            "the journal is removed when done"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resharding_stopped_in_the_middle_resumes_and_one_not_cut_over_aborts_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engines = open(dir.path(), Some(2)).await;
    let store = engines.store.clone();
    let users: Vec<User> = (0..2000u64)
        .map(|i| User {
            id: UserId(5_000 + i),
            profile: profile("Seed"),
        })
        .collect();
    store.insert_batch(users).await.expect("seed");
    let acked: Acked = (0..2000u64)
        .map(|i| (5_000 + i, Some((1, "Seed".to_string()))))
        .collect();

    // Stopped after 3 cut-overs (as if killed): the journal says where it was.
    let stopped = resharder(
        dir.path(),
        Options {
            stop_after_cuts: Some(3),
            ..fast()
        },
    )
    .run(&Request::Shards(4))
    .await
    .expect("partial run");
    assert!(!stopped.finished);
    assert!(journal_path(dir.path()).exists());
    // Reads and writes go on meanwhile, in whichever group owns each slot now.
    check_everything(
        dir.path(),
        store.as_ref(),
        &acked,
        false,
        &sqlite_group(dir.path()),
    )
    .await;
    // Too late to abort: slots were cut over.
    let err = resharder(dir.path(), fast())
        .abort()
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("cannot be rolled back"), "{err}");
    // Another resharding is refused while this one is unfinished.
    let err = resharder(dir.path(), fast())
        .run(&Request::Shards(8))
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("a resharding is in progress"),
        "{err}"
    );
    let done = resharder(dir.path(), fast())
        .resume()
        .await
        .expect("resume");
    assert!(done.finished);
    assert_eq!(done.groups, 4);
    check_everything(
        dir.path(),
        store.as_ref(),
        &acked,
        true,
        &sqlite_group(dir.path()),
    )
    .await;

    // Copied but not cut over: an abort removes the copies and the added groups.
    let before = read_map_file(&map_path(dir.path())).expect("map");
    let partial = resharder(
        dir.path(),
        Options {
            stop_after_cuts: Some(0),
            ..fast()
        },
    )
    .run(&Request::Shards(8))
    .await
    .expect("copy only");
    assert!(!partial.finished && partial.rows_copied > 0, "{partial:?}");
    let message = resharder(dir.path(), fast()).abort().await.expect("abort");
    assert!(message.contains("nothing moved"), "{message}");
    let after = read_map_file(&map_path(dir.path())).expect("map");
    assert_eq!(after.groups(), before.groups());
    assert_eq!(after.assignments(), before.assignments());
    check_everything(
        dir.path(),
        store.as_ref(),
        &acked,
        true,
        &sqlite_group(dir.path()),
    )
    .await;
    let s5 = SqliteGroups::new(dir.path())
        .open_store(&ShardGroup::parse("s5").expect("name"))
        .expect("s5");
    assert_eq!(s5.count_users().await.expect("count"), 0, "copies removed");
}

#[tokio::test]
async fn impossible_requests_are_refused_with_the_reason_and_nothing_moves() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path(), Some(4)).await);
    let before = read_map_file(&map_path(dir.path())).expect("map");
    let cases = [
        (Request::Shards(6), "multiple of the old one"),
        (Request::Shards(3), "must divide the old one"),
        (Request::Shards(4), "already has 4 shard groups"),
        (
            Request::Move {
                slots: SlotRange::new(0, 99).expect("range"),
                to: ShardGroup::parse("nowhere").expect("name"),
            },
            "nowhere",
        ),
        (
            Request::Pin {
                user: UserId(12),
                to: ShardGroup::parse("celebrity-1").expect("name"),
            },
            "there is no shard group celebrity-1",
        ),
    ];
    for (request, reason) in cases {
        let err = resharder(dir.path(), fast())
            .run(&request)
            .await
            .expect_err("refused");
        assert!(
            matches!(&err, StoreError::Unusable(m) if m.contains(reason)),
            "{request:?}: {err}"
        );
        assert!(
            !journal_path(dir.path()).exists(),
            "{request:?} left a journal"
        );
        assert_eq!(read_map_file(&map_path(dir.path())).expect("map"), before);
    }
}

#[tokio::test]
async fn a_pinned_user_moves_alone_to_its_group_and_back_when_unpinned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engines = open(dir.path(), Some(2)).await;
    let store = engines.store.clone();
    // A group of its own for the celebrity.
    let map = read_map_file(&map_path(dir.path())).expect("map");
    let celebrity = ShardGroup::parse("celebrity-1").expect("name");
    let with_group = map.add_group(celebrity.clone()).expect("add");
    strata_store::embedded_shards::publish_map(dir.path(), map.version(), &with_group)
        .expect("publish");
    let report = resharder(dir.path(), fast())
        .run(&Request::Pin {
            user: UserId(12),
            to: celebrity.clone(),
        })
        .await
        .expect("pin");
    assert_eq!(report.cut_overs, 1);
    let map = read_map_file(&map_path(dir.path())).expect("map");
    assert_eq!(map.group_of(UserId(12)), &celebrity);
    let john = store
        .get(UserId(12), ReadRequirement::ANY)
        .await
        .expect("read")
        .expect("John is still there");
    assert_eq!(john.user.profile.first_name.as_str(), "John");
    let in_celebrity = SqliteGroups::new(dir.path())
        .open_store(&celebrity)
        .expect("group");
    assert_eq!(in_celebrity.count_users().await.expect("count"), 1);
    // Writes to the pinned user land in its group.
    store
        .replace(UserId(12), &profile("Johnny"), Precondition::None)
        .await
        .expect("write");
    let row = in_celebrity
        .get(UserId(12), ReadRequirement::ANY)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(row.user.profile.first_name.as_str(), "Johnny");

    // Unpinned: back to its slot's group with its latest write, and writes land there again.
    let report = resharder(dir.path(), fast())
        .run(&Request::Unpin { user: UserId(12) })
        .await
        .expect("unpin");
    assert_eq!(report.cut_overs, 1);
    let map = read_map_file(&map_path(dir.path())).expect("map");
    assert!(map.pins().is_empty());
    let home = map.group_of_slot(map.slot_of(UserId(12))).clone();
    assert_eq!(map.group_of(UserId(12)), &home);
    assert_eq!(in_celebrity.count_users().await.expect("count"), 0);
    store
        .replace(UserId(12), &profile("Jon"), Precondition::None)
        .await
        .expect("write after the unpin");
    let in_home = SqliteGroups::new(dir.path())
        .open_store(&home)
        .expect("group");
    let row = in_home
        .get(UserId(12), ReadRequirement::ANY)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(row.user.profile.first_name.as_str(), "Jon");
    let err = resharder(dir.path(), fast())
        .run(&Request::Unpin { user: UserId(12) })
        .await
        .expect_err("not pinned any more");
    assert!(err.to_string().contains("is not pinned"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resharder_killed_inside_a_write_pause_leaves_the_chunk_paused_until_resumed() {
    use strata_store::reshard::journal::{self, PendingCut};
    use strata_store::shard::fence::Fence;
    let dir = tempfile::tempdir().expect("tempdir");
    let engines = open(dir.path(), Some(2)).await;
    let store = engines.store.clone();
    let users: Vec<User> = (0..2000u64)
        .map(|i| User {
            id: UserId(9_000 + i),
            profile: profile("Seed"),
        })
        .collect();
    store.insert_batch(users).await.expect("seed");
    let mut acked: Acked = (0..2000u64)
        .map(|i| (9_000 + i, Some((1, "Seed".to_string()))))
        .collect();
    let stopped = resharder(
        dir.path(),
        Options {
            stop_after_cuts: Some(2),
            ..fast()
        },
    )
    .run(&Request::Shards(4))
    .await
    .expect("partial run");
    assert!(!stopped.finished);

    // What a kill right after the next cut-over's fence committed leaves behind: the fence in
    // the source group, the journal's pending cut, the map not yet published.
    let path = journal_path(dir.path());
    let mut j = journal::read(&path).expect("read").expect("a journal");
    let (i, m) = j
        .moves
        .iter()
        .enumerate()
        .find(|(_, m)| m.uncut().is_some())
        .map(|(i, m)| (i, m.clone()))
        .expect("a move with slots left");
    let uncut = m.uncut().expect("uncut");
    let chunk = SlotRange::new(uncut.first().get(), uncut.first().get() + 63).expect("chunk");
    let map = read_map_file(&map_path(dir.path())).expect("map");
    let groups = SqliteGroups::new(dir.path());
    groups
        .open_store(&m.from)
        .expect("source")
        .add_fence(Fence {
            slots: chunk,
            strategy: map.strategy(),
            user: None,
            except: Vec::new(),
            moved_to: m.to.clone(),
            map_version: map.version() + 1,
        })
        .await
        .expect("fence");
    j.pending = Some(PendingCut {
        move_index: i,
        slots: chunk,
        map_version: map.version() + 1,
    });
    journal::write(&path, &j).expect("journal");

    // A write to the paused chunk waits, then is refused — not acknowledged, not applied.
    let paused = acked
        .keys()
        .map(|&id| UserId(id))
        .find(|&id| {
            let s = map.slot_of(id);
            chunk.first() <= s && s <= chunk.last()
        })
        .expect("a user in the chunk");
    let err = store
        .replace(paused, &profile("Paused"), Precondition::None)
        .await
        .expect_err("paused");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");

    // Resumed with another chunk size: the pending cut-over is redone all the same.
    let done = resharder(
        dir.path(),
        Options {
            chunk_slots: 16,
            ..fast()
        },
    )
    .resume()
    .await
    .expect("resume");
    assert!(done.finished);
    check_everything(
        dir.path(),
        store.as_ref(),
        &acked,
        true,
        &sqlite_group(dir.path()),
    )
    .await;
    let r = store
        .replace(paused, &profile("Resumed"), Precondition::None)
        .await
        .expect("the chunk takes writes again");
    acked.insert(paused.0, Some((r.version, "Resumed".into())));
    check_everything(
        dir.path(),
        store.as_ref(),
        &acked,
        true,
        &sqlite_group(dir.path()),
    )
    .await;
}
