//! Shard groups on PostgreSQL (real servers from the installed binaries, on free ports): the
//! router over PostgreSQL groups passes the store and account suites; sign-ups of one email
//! racing through two servers give exactly one account; and an online resharding 2 → 4 under
//! writers survives being stopped in the middle and, while stopped, the kill -9 of the server
//! holding half the groups — every acknowledged write is found afterwards, each row in the
//! group the map names and nowhere else.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

mod common;
use common::{Acked, check_everything, profile, write_until};

use strata_core::email::Email;
use strata_core::user::{User, UserId};
use strata_store::embedded_shards::{FileMapPublisher, map_path};
use strata_store::open::{DataOptions, Engines};
use strata_store::pg_shards::{PgGroups, parse_group_urls};
use strata_store::postgres::PgConfig;
use strata_store::reshard::journal::journal_path;
use strata_store::reshard::run::{Options, Quiet, Request, Resharder};
use strata_store::shard::ShardGroup;
use strata_store::shard::router::{RouterOptions, ShardedStore};
use strata_store::shard::source::{FileMapSource, read_map_file};
use strata_store::{ReadRequirement, Store, StoreError};
use strata_testkit::PgServer;

fn options(dir: &Path, urls: &[String], shards: Option<u16>) -> DataOptions {
    let mut o = DataOptions::sqlite(dir);
    o.postgres_shards = urls.to_vec();
    o.shards = shards;
    o.postgres_pool = 8;
    o
}

async fn open(dir: &Path, urls: &[String], shards: Option<u16>) -> Engines {
    options(dir, urls, shards)
        .open()
        .await
        .expect("open the PostgreSQL shard groups")
}

fn groups(urls: &[String]) -> Arc<PgGroups> {
    let parsed = parse_group_urls(urls).expect("valid");
    Arc::new(PgGroups::new(
        parsed.into_iter().map(|(g, url)| (g, PgConfig::new(url))),
    ))
}

/// Opens a group's database directly (not through the router).
fn pg_group(urls: &[String]) -> impl Fn(&ShardGroup) -> Arc<dyn Store> {
    let groups = groups(urls);
    move |g| Arc::new(groups.open_store(g).expect("group"))
}

fn resharder(dir: &Path, urls: &[String], options: Options) -> Resharder {
    Resharder {
        publisher: Arc::new(FileMapPublisher::new(dir)),
        opener: groups(urls),
        journal_path: journal_path(dir),
        options,
        progress: Arc::new(Quiet),
    }
}

async fn start_server() -> PgServer {
    tokio::task::spawn_blocking(PgServer::start)
        .await
        .expect("start PostgreSQL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_shard_groups_pass_the_store_and_account_suites_and_keep_users_in_their_groups() {
    let pg = start_server().await;
    let urls: Vec<String> = ["s1", "s2", "s3"]
        .iter()
        .map(|g| format!("{g}={}", pg.create_database(g)))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let engines = open(dir.path(), &urls, None).await;
    strata_store::conformance::run_all(engines.store.as_ref()).await;
    // The account suite wants one value that is both stores: a router of its own.
    let router = ShardedStore::open(
        Arc::new(FileMapSource::new(map_path(dir.path()))),
        groups(&urls),
        RouterOptions::default(),
    )
    .await
    .expect("router");
    strata_store::accounts::contract::accounts(&router).await;

    // Every user is in the group the map names, and only there.
    let ids: Vec<u64> = (0..300).map(|i| 5_000_000 + i * 7919).collect();
    for id in &ids {
        engines
            .store
            .create(&User {
                id: UserId(*id),
                profile: profile("Spread"),
            })
            .await
            .expect("create");
    }
    let map = read_map_file(&map_path(dir.path())).expect("map");
    assert_eq!(map.groups().len(), 3);
    let open_group = pg_group(&urls);
    let mut per_group = Vec::new();
    for g in map.groups() {
        let page = open_group(g)
            .list(None, 100_000, ReadRequirement::ANY)
            .await
            .expect("list a group");
        let mine = page.users.iter().filter(|u| ids.contains(&u.user.id.0));
        let mine: Vec<_> = mine.collect();
        for u in &mine {
            assert_eq!(map.group_of(u.user.id), g, "user {} misplaced", u.user.id);
        }
        per_group.push(mine.len());
    }
    assert_eq!(per_group.iter().sum::<usize>(), ids.len(), "{per_group:?}");
    assert!(
        per_group.iter().all(|&n| n > 50),
        "the hash spreads users: {per_group:?}"
    );

    // A second server opening the same deployment finds the map and the groups as they are;
    // a map naming a group without a database is refused with its name.
    let again = open(dir.path(), &urls, None).await;
    assert!(
        again.describe.contains("3 shard groups"),
        "{}",
        again.describe
    );
    let e = options(dir.path(), &urls[..2], None)
        .open()
        .await
        .expect_err("s3 has no database")
        .to_string();
    assert!(e.contains("s3") && e.contains("--postgres-shard"), "{e}");
    assert!(!e.contains(&pg.url_for("s1")), "no URL in messages: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sign_ups_of_one_email_on_postgres_groups_give_exactly_one_account() {
    let pg = start_server().await;
    let urls: Vec<String> = ["s1", "s2", "s3", "s4"]
        .iter()
        .map(|g| format!("{g}={}", pg.create_database(g)))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(dir.path(), &urls, None).await;
    let second = open(dir.path(), &urls, None).await;
    for round in 0..40u64 {
        let email = Email::parse(&format!("race{round}@example.com")).expect("email");
        // Two ids, likely in different groups, one address.
        let (a, b) = (
            User {
                id: UserId(7_000_000 + round * 2),
                profile: profile("A"),
            },
            User {
                id: UserId(7_000_001 + round * 2),
                profile: profile("B"),
            },
        );
        let (x, y) = tokio::join!(
            first.accounts.create_account(&a, &email, "$argon2id$a"),
            second.accounts.create_account(&b, &email, "$argon2id$b"),
        );
        let won = [&x, &y].iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {x:?} / {y:?}");
        for r in [&x, &y] {
            if let Err(e) = r {
                assert!(matches!(e, StoreError::EmailTaken), "round {round}: {e}");
            }
        }
        let holder = first
            .accounts
            .account_by_email(&email)
            .await
            .expect("lookup")
            .expect("one account holds it");
        let winner = if x.is_ok() { a.id } else { b.id };
        assert_eq!(holder.user_id, winner, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resharding_postgres_groups_survives_a_stop_and_a_killed_server_and_loses_no_write() {
    let (a, mut b) = tokio::join!(start_server(), start_server());
    // s1 and s3 on server a, s2 and s4 on server b; s3 and s4 start as spares.
    let urls = vec![
        format!("s1={}", a.create_database("s1")),
        format!("s2={}", b.create_database("s2")),
        format!("s3={}", a.create_database("s3")),
        format!("s4={}", b.create_database("s4")),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let engines = open(dir.path(), &urls, Some(2)).await;
    let (store, accounts) = (engines.store.clone(), engines.accounts.clone());
    let seed: Vec<User> = (0..2000u64)
        .map(|i| User {
            id: UserId(1_000_000 + i),
            profile: profile("Seed"),
        })
        .collect();
    store.insert_batch(seed).await.expect("seed");
    let mut acked: Acked = (0..2000u64)
        .map(|i| (1_000_000 + i, Some((1, "Seed".to_string()))))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(2_000_000));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            tokio::spawn(write_until(
                store.clone(),
                accounts.clone(),
                stop.clone(),
                next_id.clone(),
                w,
                Duration::from_millis(4),
            ))
        })
        .collect();
    let fast = Options {
        chunk_slots: 128,
        batch: 200,
        cleanup_grace: Duration::from_millis(100),
        stop_after_cuts: None,
    };

    // First fault: the resharder stops after three cut-overs.
    let stopped = resharder(
        dir.path(),
        &urls,
        Options {
            stop_after_cuts: Some(3),
            ..fast
        },
    )
    .run(&Request::Shards(4))
    .await
    .expect("partial run");
    assert!(!stopped.finished && stopped.cut_overs == 3, "{stopped:?}");

    // Second fault, while the first is unresolved: the server of s2 and s4 is killed. Resuming
    // now fails with the reason, and moves nothing it cannot finish.
    let mut b = tokio::task::spawn_blocking(move || {
        b.kill9();
        b
    })
    .await
    .expect("kill");
    let failed = resharder(dir.path(), &urls, fast)
        .run(&Request::Shards(4))
        .await
        .expect_err("a group's server is down");
    assert!(matches!(failed, StoreError::Unavailable(_)), "{failed}");
    let b = tokio::task::spawn_blocking(move || {
        b.restart();
        b
    })
    .await
    .expect("restart");

    // Resumed with both servers up: it finishes.
    let report = resharder(dir.path(), &urls, fast)
        .run(&Request::Shards(4))
        .await
        .expect("resumed run");
    assert!(report.finished, "{report:?}");
    assert_eq!(report.groups, 4);
    stop.store(true, Ordering::SeqCst);
    let mut failures = 0;
    for w in writers {
        let (done, failed) = w.await.expect("writer");
        failures += failed;
        acked.extend(done);
    }
    // Writes to the killed server's groups failed while it was down (never acknowledged).
    assert!(failures < acked.len() as u64, "{failures} failures");
    check_everything(dir.path(), store.as_ref(), &acked, true, &pg_group(&urls)).await;
    assert!(!journal_path(dir.path()).exists());
    let map = read_map_file(&map_path(dir.path())).expect("map");
    assert_eq!(map.groups().len(), 4);
    drop((a, b));
}
