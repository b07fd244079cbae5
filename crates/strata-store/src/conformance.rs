//! The store test suite, written once for every engine.
//!
//! Each engine's integration tests call [`run_all`] with a fresh, empty store (SQLite in a
//! temporary directory; PostgreSQL in a fresh database of a server that strata-testkit starts
//! from the installed binaries), so every engine is held to the same contract. Each check
//! panics with a sentence when the contract is broken. The account and session suites are in
//! [`crate::accounts::contract`].

use serde_json::json;
use strata_core::user::{IdField, User, UserId, UserProfile};

use crate::{CommitToken, Precondition, ReadRequirement, Store, StoreError};

fn profile(first: &str) -> UserProfile {
    let doc = json!({"firstName": first, "lastName": "Tester",
        "address": {"streetAddress": "1 Test Way", "city": "Testville", "state": "TS", "postalCode": "00501"},
        "phoneNumbers": ["555 0100"]});
    UserProfile::parse(&doc, IdField::Forbidden)
        .unwrap_or_else(|e| panic!("test profile is valid: {e:?}"))
}

fn user(id: u64, first: &str) -> User {
    User {
        id: UserId(id),
        profile: profile(first),
    }
}

/// Runs every check against an empty store.
pub async fn run_all(store: &dyn Store) {
    create_then_get_returns_the_same_user_at_version_1(store).await;
    creating_an_existing_id_is_refused(store).await;
    replace_bumps_the_version_and_checks_preconditions(store).await;
    delete_removes_and_checks_preconditions(store).await;
    commit_tokens_increase_with_every_write(store).await;
    list_pages_in_ascending_id_order(store).await;
    a_batch_with_an_existing_id_applies_nothing(store).await;
    ids_beyond_the_storable_range_are_simply_absent(store).await;
    a_read_after_a_future_commit_is_not_served_stale(store).await;
    store
        .ping()
        .await
        .unwrap_or_else(|e| panic!("ping answers: {e}"));
}

async fn create_then_get_returns_the_same_user_at_version_1(store: &dyn Store) {
    let u = user(1_000, "Ann");
    let receipt = store
        .create(&u)
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    assert_eq!(receipt.version, 1, "a new user is at version 1");
    let got = store
        .get(u.id, ReadRequirement::ANY)
        .await
        .unwrap_or_else(|e| panic!("get: {e}"));
    let got = got.unwrap_or_else(|| panic!("a created user can be read back"));
    assert_eq!(got.user, u, "the stored user is the one written");
    assert_eq!(got.version, 1);
    assert!(
        store
            .get(UserId(999_999), ReadRequirement::ANY)
            .await
            .unwrap_or_else(|e| panic!("get: {e}"))
            .is_none()
    );
}

async fn creating_an_existing_id_is_refused(store: &dyn Store) {
    let u = user(1_001, "Bob");
    store
        .create(&u)
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    match store.create(&user(1_001, "Other")).await {
        Err(StoreError::AlreadyExists(id)) => assert_eq!(id, UserId(1_001)),
        other => panic!("a second create with the same id must be AlreadyExists, got {other:?}"),
    }
    let got = store
        .get(UserId(1_001), ReadRequirement::ANY)
        .await
        .ok()
        .flatten()
        .map(|s| s.user);
    assert_eq!(got, Some(u), "the refused create changed nothing");
}

async fn replace_bumps_the_version_and_checks_preconditions(store: &dyn Store) {
    let id = UserId(1_002);
    store
        .create(&user(id.0, "Cy"))
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    let r = store
        .replace(id, &profile("Cyd"), Precondition::None)
        .await
        .unwrap_or_else(|e| panic!("replace: {e}"));
    assert_eq!(r.version, 2);
    let r = store
        .replace(id, &profile("Cyril"), Precondition::VersionIs(2))
        .await
        .unwrap_or_else(|e| panic!("replace: {e}"));
    assert_eq!(r.version, 3);
    match store
        .replace(id, &profile("Stale"), Precondition::VersionIs(2))
        .await
    {
        Err(StoreError::VersionMismatch {
            expected: 2,
            actual: 3,
            ..
        }) => {}
        other => panic!("a stale precondition must be VersionMismatch, got {other:?}"),
    }
    let got = store
        .get(id, ReadRequirement::ANY)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("user exists"));
    assert_eq!(got.user.profile.first_name.as_str(), "Cyril");
    assert_eq!(got.version, 3);
    match store
        .replace(UserId(424_242), &profile("Nobody"), Precondition::None)
        .await
    {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("replacing a missing user must be NotFound, got {other:?}"),
    }
}

async fn delete_removes_and_checks_preconditions(store: &dyn Store) {
    let id = UserId(1_003);
    store
        .create(&user(id.0, "Di"))
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    assert!(matches!(
        store.delete(id, Precondition::VersionIs(9)).await,
        Err(StoreError::VersionMismatch { .. })
    ));
    assert!(
        store
            .get(id, ReadRequirement::ANY)
            .await
            .ok()
            .flatten()
            .is_some(),
        "a refused delete deletes nothing"
    );
    let r = store
        .delete(id, Precondition::VersionIs(1))
        .await
        .unwrap_or_else(|e| panic!("delete: {e}"));
    assert_eq!(r.version, 2, "a delete reports the version after it");
    assert!(
        store
            .get(id, ReadRequirement::ANY)
            .await
            .ok()
            .flatten()
            .is_none()
    );
    assert!(matches!(
        store.delete(id, Precondition::None).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn commit_tokens_increase_with_every_write(store: &dyn Store) {
    let a = store
        .create(&user(1_004, "Ed"))
        .await
        .unwrap_or_else(|e| panic!("create: {e}"))
        .commit;
    let b = store
        .replace(UserId(1_004), &profile("Edd"), Precondition::None)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .commit;
    let c = store
        .delete(UserId(1_004), Precondition::None)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .commit;
    assert!(a < b && b < c, "commit tokens increase: {a:?} {b:?} {c:?}");
    // A read that asks for the latest commit is served.
    store
        .get(UserId(1_000), ReadRequirement::at_least(c))
        .await
        .unwrap_or_else(|e| panic!("read after own write: {e}"));
}

async fn list_pages_in_ascending_id_order(store: &dyn Store) {
    for id in [5_003u64, 5_001, 5_002, 5_005, 5_004] {
        store
            .create(&user(id, "Lister"))
            .await
            .unwrap_or_else(|e| panic!("create: {e}"));
    }
    let page = store
        .list(Some(UserId(5_000)), 2, ReadRequirement::ANY)
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    let ids: Vec<u64> = page.users.iter().map(|s| s.user.id.0).collect();
    assert_eq!(ids, vec![5_001, 5_002]);
    assert_eq!(
        page.next_after,
        Some(UserId(5_002)),
        "a full page says where to continue"
    );
    let page = store
        .list(Some(UserId(5_003)), 10, ReadRequirement::ANY)
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    let ids: Vec<u64> = page.users.iter().map(|s| s.user.id.0).collect();
    assert_eq!(ids, vec![5_004, 5_005]);
    assert_eq!(page.next_after, None, "a short page is the last");
    let all = store
        .list(None, 1000, ReadRequirement::ANY)
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    assert!(
        all.users.windows(2).all(|w| w[0].user.id < w[1].user.id),
        "ascending ids"
    );
}

async fn a_batch_with_an_existing_id_applies_nothing(store: &dyn Store) {
    let batch: Vec<User> = (7_000..7_100).map(|i| user(i, "Batch")).collect();
    store
        .insert_batch(batch)
        .await
        .unwrap_or_else(|e| panic!("insert_batch: {e}"));
    let page = store
        .list(Some(UserId(6_999)), 200, ReadRequirement::ANY)
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    assert_eq!(
        page.users
            .iter()
            .filter(|s| (7_000..7_100).contains(&s.user.id.0))
            .count(),
        100
    );
    let clashing: Vec<User> = (7_100..7_110)
        .chain([7_050])
        .map(|i| user(i, "Clash"))
        .collect();
    assert!(matches!(
        store.insert_batch(clashing).await,
        Err(StoreError::AlreadyExists(UserId(7_050)))
    ));
    for i in 7_100..7_110 {
        assert!(
            store
                .get(UserId(i), ReadRequirement::ANY)
                .await
                .ok()
                .flatten()
                .is_none(),
            "user {i} of a failed batch must not exist"
        );
    }
}

async fn ids_beyond_the_storable_range_are_simply_absent(store: &dyn Store) {
    let huge = UserId(u64::MAX);
    assert!(
        store
            .get(huge, ReadRequirement::ANY)
            .await
            .unwrap_or_else(|e| panic!("get: {e}"))
            .is_none()
    );
    assert!(matches!(
        store.replace(huge, &profile("X"), Precondition::None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.delete(huge, Precondition::None).await,
        Err(StoreError::NotFound(_))
    ));
    let page = store
        .list(Some(UserId(1 << 63)), 10, ReadRequirement::ANY)
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    assert!(page.users.is_empty());
}

async fn a_read_after_a_future_commit_is_not_served_stale(store: &dyn Store) {
    match store
        .get(
            UserId(1_000),
            ReadRequirement::at_least(CommitToken(u64::MAX / 2)),
        )
        .await
    {
        Err(StoreError::NotYetVisible { .. }) => {}
        other => panic!(
            "a read after a commit the store has not reached must be NotYetVisible, got {other:?}"
        ),
    }
}
