//! `strata seed` loads exactly the users asked for, all valid, and refuses nonsense.

use std::process::Command;

use strata_store::sqlite::SqliteStore;
use strata_store::{ReadRequirement, Store};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

#[tokio::test]
async fn seeding_2000_users_loads_2000_valid_users_besides_user_12() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(STRATA)
        .args(["seed", "--users", "2000", "--batch-size", "300", "--data"])
        .arg(dir.path())
        .output()
        .expect("run strata seed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "seed failed:\n{stderr}");
    assert!(stderr.contains("seeded 2000 users"), "{stderr}");
    let store = SqliteStore::open(dir.path()).expect("open").store;
    let mut count = 0;
    let mut after = None;
    loop {
        // Every row parses back through the domain parser, or this fails with Corrupt.
        let page = store
            .list(after, 500, ReadRequirement::ANY)
            .await
            .expect("list");
        count += page.users.len();
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(count, 2001, "2000 seeded users and the canonical user 12");
}

#[test]
fn seeding_zero_users_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(STRATA)
        .args(["seed", "--users", "0", "--data"])
        .arg(dir.path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--users must be between 1 and"), "{stderr}");
}

#[test]
fn seeding_a_directory_that_holds_no_deployment_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(STRATA)
        .args(["seed", "--users", "10", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is not a running deployment") && stderr.contains("strata up --dir"),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(dir.path()).expect("dir").next().is_none(),
        "nothing was written"
    );
}
