//! What the resharding tests share, whatever the engine: writers that record every
//! acknowledged write, and the check that each one is found afterwards in the group the map
//! names and nowhere else.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use strata_core::email::Email;
use strata_core::user::{IdField, User, UserId, UserProfile};
use strata_store::accounts::AccountStore;
use strata_store::embedded_shards::map_path;
use strata_store::shard::ShardGroup;
use strata_store::shard::source::read_map_file;
use strata_store::{Precondition, ReadRequirement, Store};

pub fn profile(first: &str) -> UserProfile {
    let mut body = User::canonical().profile.to_value();
    body["firstName"] = first.into();
    UserProfile::parse(&body, IdField::Forbidden).expect("valid profile")
}

/// A write that failed in a way that may still have committed: its row may or may not be
/// there, at any version (real versions start at 1).
pub const UNKNOWN: Option<(u64, String)> = Some((0, String::new()));

/// What the writers were told succeeded: per user, its version and first name, or deleted
/// (or [`UNKNOWN`]).
pub type Acked = BTreeMap<u64, Option<(u64, String)>>;

/// Writers that create, replace and delete users (and sign up accounts) until told to stop,
/// recording every acknowledged write.
pub async fn write_until(
    store: Arc<dyn Store>,
    accounts: Arc<dyn AccountStore>,
    stop: Arc<AtomicBool>,
    next_id: Arc<AtomicU64>,
    writer: u64,
    pace: std::time::Duration,
) -> (Acked, u64) {
    let mut acked = Acked::new();
    let mut failures = 0;
    let mut round = 0u64;
    // The users this writer may rewrite (live, outcome known).
    let mut live: Vec<u64> = Vec::new();
    while !stop.load(Ordering::SeqCst) && round < 200_000 {
        round += 1;
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
        let id = next_id.fetch_add(1, Ordering::SeqCst);
        let u = User {
            id: UserId(id),
            profile: profile("Fresh"),
        };
        let created = if round.is_multiple_of(5) {
            let email = Email::parse(&format!("w{writer}-{round}@example.com")).expect("email");
            accounts.create_account(&u, &email, "$argon2id$test").await
        } else {
            store.create(&u).await
        };
        match created {
            Ok(r) => {
                acked.insert(id, Some((r.version, "Fresh".into())));
                live.push(id);
            }
            Err(_) => {
                failures += 1;
                acked.insert(id, UNKNOWN);
            }
        }
        // Rewrite an earlier user of this writer, and now and then delete one.
        let at = (round as usize * 7919) % live.len().max(1);
        if let Some(&target) = live.get(at) {
            let name = format!("Edit{round}");
            let outcome = if round.is_multiple_of(11) {
                live.swap_remove(at);
                store
                    .delete(UserId(target), Precondition::None)
                    .await
                    .map(|_| None)
            } else {
                store
                    .replace(UserId(target), &profile(&name), Precondition::None)
                    .await
                    .map(|r| Some((r.version, name)))
            };
            match outcome {
                Ok(v) => {
                    acked.insert(target, v);
                }
                Err(_) => {
                    // A failed write may still have committed (the answer was lost).
                    failures += 1;
                    acked.insert(target, UNKNOWN);
                    live.retain(|&u| u != target);
                }
            }
        }
    }
    (acked, failures)
}

/// Every acknowledged write is what the router reads back, and (once no resharding is in
/// progress, `settled`) every group holds only the rows the map gives it.
pub async fn check_everything(
    dir: &Path,
    store: &dyn Store,
    acked: &Acked,
    settled: bool,
    open_group: &dyn Fn(&ShardGroup) -> Arc<dyn Store>,
) {
    for (id, want) in acked {
        if *want == UNKNOWN {
            continue;
        }
        let got = store
            .get(UserId(*id), ReadRequirement::ANY)
            .await
            .unwrap_or_else(|e| panic!("read user {id}: {e}"));
        match (want, got) {
            (None, None) => {}
            (Some((version, name)), Some(row)) => {
                assert_eq!(row.version, *version, "user {id}");
                assert_eq!(row.user.profile.first_name.as_str(), name, "user {id}");
            }
            (want, got) => panic!("user {id}: acknowledged {want:?}, found {got:?}"),
        }
    }
    let listed = store
        .list(None, 1_000_000, ReadRequirement::ANY)
        .await
        .expect("list");
    let mut seen = std::collections::BTreeSet::new();
    for u in &listed.users {
        let id = u.user.id.0;
        assert!(seen.insert(id), "user {id} listed twice");
        match acked.get(&id) {
            Some(Some(_)) => {}
            None if id == 12 => {} // John Smith
            other => panic!("user {id} is listed but was {other:?}"),
        }
    }
    for (id, want) in acked {
        if want.is_some() && *want != UNKNOWN {
            assert!(
                seen.contains(id),
                "live user {id} is missing from the listing"
            );
        }
    }
    let live = listed.users.len();
    if !settled {
        return;
    }
    let map = read_map_file(&map_path(dir)).expect("map");
    let mut total = 0;
    for g in map.groups() {
        let s = open_group(g);
        let page = s
            .list(None, 1_000_000, ReadRequirement::ANY)
            .await
            .expect("list");
        for u in &page.users {
            assert_eq!(map.group_of(u.user.id), g, "user {} left behind", u.user.id);
        }
        total += page.users.len();
    }
    assert_eq!(total, live, "every live user once");
}
