//! The SQLite engine against the shared store suite, plus what is particular to a file on disk:
//! several processes on one file, migrations, and data directories that cannot be used.

use strata_core::email::Email;
use strata_core::user::{User, UserId};
use strata_store::accounts::AccountStore;
use strata_store::sqlite::{DB_FILE, SCHEMA_VERSION, SqliteStore};
use strata_store::{Precondition, ReadRequirement, Store, StoreError};

fn open(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(dir)
        .unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
        .store
}

#[tokio::test]
async fn the_sqlite_engine_passes_the_store_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    strata_store::conformance::run_all(&store).await;
}

#[tokio::test]
async fn the_sqlite_engine_passes_the_account_and_session_suites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    strata_store::accounts::contract::accounts(&store).await;
    strata_store::accounts::contract::sessions(&store).await;
    strata_store::idempotency::contract::idempotency(&store).await;
}

#[tokio::test]
async fn the_first_open_creates_the_database_and_later_opens_migrate_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = SqliteStore::open(dir.path()).expect("open");
    assert!(first.created);
    assert!(first.store.ensure_canonical_user().await.expect("insert"));
    assert!(
        !first
            .store
            .ensure_canonical_user()
            .await
            .expect("second call"),
        "user 12 is inserted once"
    );
    let again = SqliteStore::open(dir.path()).expect("reopen");
    assert!(!again.created);
    let got = again
        .store
        .get(UserId(12), ReadRequirement::ANY)
        .await
        .expect("get")
        .expect("user 12");
    assert_eq!(got.user, User::canonical());
}

#[tokio::test]
async fn two_stores_on_one_directory_see_each_others_writes_in_commit_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(dir.path());
    let b = open(dir.path());
    let ra = a
        .create(&User {
            id: UserId(1),
            ..User::canonical()
        })
        .await
        .expect("create via a");
    let rb = b
        .create(&User {
            id: UserId(2),
            ..User::canonical()
        })
        .await
        .expect("create via b");
    assert!(
        rb.commit > ra.commit,
        "commit tokens are ordered across connections"
    );
    assert!(
        b.get(UserId(1), ReadRequirement::at_least(ra.commit))
            .await
            .expect("get")
            .is_some()
    );
    assert!(
        a.get(UserId(2), ReadRequirement::at_least(rb.commit))
            .await
            .expect("get")
            .is_some()
    );
    // Concurrent writers on both handles: every write lands exactly once.
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            s.create(&User {
                id: UserId(100 + i),
                ..User::canonical()
            })
            .await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("create");
    }
    let page = a
        .list(Some(UserId(99)), 100, ReadRequirement::ANY)
        .await
        .expect("list");
    assert_eq!(page.users.len(), 50);
}

#[tokio::test]
async fn concurrent_conditional_replaces_let_exactly_one_win() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store.ensure_canonical_user().await.expect("user 12");
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.replace(
                UserId(12),
                &User::canonical().profile,
                Precondition::VersionIs(1),
            )
            .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => wins += 1,
            Err(StoreError::VersionMismatch { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins, 1);
}

fn unusable_message(dir: &std::path::Path) -> String {
    match SqliteStore::open(dir) {
        Err(StoreError::Unusable(m)) => m,
        Err(e) => panic!("expected Unusable, got {e}"),
        Ok(_) => panic!("opening {} must fail", dir.display()),
    }
}

#[test]
fn a_file_of_garbage_is_refused_as_not_a_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(DB_FILE), vec![0x5a; 4096]).expect("write");
    let m = unusable_message(dir.path());
    assert!(m.contains("not a database") && m.contains(DB_FILE), "{m}");
}

#[test]
fn another_applications_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).expect("sqlite");
    conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL);")
        .expect("create");
    drop(conn);
    let m = unusable_message(dir.path());
    assert!(m.contains("another application"), "{m}");
}

#[test]
fn a_database_from_a_newer_strata_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()));
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).expect("sqlite");
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("pragma");
    drop(conn);
    let m = unusable_message(dir.path());
    assert!(m.contains("upgrade strata"), "{m}");
}

#[test]
fn a_file_where_the_directory_should_be_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").expect("write");
    let m = unusable_message(&file);
    assert!(m.contains("not a directory"), "{m}");
}

#[tokio::test]
async fn a_corrupt_profile_row_is_reported_and_never_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store.ensure_canonical_user().await.expect("user 12");
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).expect("sqlite");
    conn.execute(
        "UPDATE users SET profile = '{\"firstName\": 5}' WHERE id = 12",
        [],
    )
    .expect("corrupt");
    drop(conn);
    match store.get(UserId(12), ReadRequirement::ANY).await {
        Err(StoreError::Corrupt { id, .. }) => assert_eq!(id, UserId(12)),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn an_account_whose_stored_email_is_not_an_email_is_reported_and_never_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let user = User {
        id: UserId(7_000_100),
        ..User::canonical()
    };
    let email = Email::parse("ann@example.com").expect("email");
    store
        .create_account(&user, &email, "$argon2id$hash")
        .await
        .expect("account");
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).expect("sqlite");
    conn.execute(
        "UPDATE accounts SET email = 'not an email' WHERE user_id = 7000100",
        [],
    )
    .expect("corrupt");
    drop(conn);
    match store.account(user.id).await {
        Err(StoreError::Corrupt { id, .. }) => assert_eq!(id, user.id),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn many_openers_of_a_new_directory_at_once_all_succeed_and_one_creates_it() {
    // As `strata up` starts several API servers on one new data directory: they race to
    // create the file, switch it to WAL and migrate it.
    for round in 0..10 {
        let dir = tempfile::tempdir().expect("tempdir");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
        let openers: Vec<_> = (0..6)
            .map(|_| {
                let (path, barrier) = (dir.path().to_path_buf(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    SqliteStore::open(&path).map(|o| o.created)
                })
            })
            .collect();
        let mut created = 0;
        for opener in openers {
            match opener.join().expect("join") {
                Ok(c) => created += usize::from(c),
                Err(e) => panic!("round {round}: a concurrent open failed: {e}"),
            }
        }
        assert_eq!(
            created, 1,
            "round {round}: exactly one opener creates the schema"
        );
    }
}
