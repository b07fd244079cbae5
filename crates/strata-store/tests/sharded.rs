//! The router over embedded shard groups (one SQLite file each): the store and account suites,
//! routing by the map, cross-shard listing with deadlines, stale maps and fences, read-your-
//! writes tokens that name their group, and the global email index under races.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use strata_core::email::Email;
use strata_core::user::{User, UserId, UserProfile};
use strata_store::accounts::AccountStore;
use strata_store::embedded_shards::{SqliteGroups, group_names};
use strata_store::shard::email_index::{Claim, EmailIndex, PENDING_CLAIM_GRACE_MS};
use strata_store::shard::fence::Fence;
use strata_store::shard::router::{GroupEngines, GroupOpener, RouterOptions, ShardedStore};
use strata_store::shard::source::FixedMapSource;
use strata_store::shard::{ShardGroup, ShardMap, SlotRange, Strategy};
use strata_store::sqlite::SqliteStore;
use strata_store::{
    CommitToken, Page, Precondition, ReadRequirement, Store, StoreError, StoredUser, WriteReceipt,
};

fn group(name: &str) -> ShardGroup {
    ShardGroup::parse(name).expect("valid group name")
}

fn four_groups() -> ShardMap {
    ShardMap::even(Strategy::Hash, group_names(4)).expect("valid map")
}

async fn router(dir: &Path, source: Arc<FixedMapSource>) -> ShardedStore {
    ShardedStore::open(
        source,
        Arc::new(SqliteGroups::new(dir)),
        RouterOptions::default(),
    )
    .await
    .expect("router opens")
}

fn user(id: u64) -> User {
    let mut u = User::canonical();
    u.id = UserId(id);
    u
}

fn email(text: &str) -> Email {
    Email::parse(text).expect("valid email")
}

/// The group's own file, opened directly (what a resharder or an operator sees).
fn group_store(dir: &Path, name: &str) -> SqliteStore {
    SqliteGroups::new(dir)
        .open_store(&group(name))
        .expect("group opens")
}

#[tokio::test]
async fn the_router_passes_the_store_and_account_suites_over_four_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = Arc::new(FixedMapSource::new(four_groups()));
    let store = router(dir.path(), source).await;
    strata_store::conformance::run_all(&store).await;
    strata_store::accounts::contract::accounts(&store).await;
}

#[tokio::test]
async fn every_user_lands_in_the_group_the_map_names_and_nowhere_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = four_groups();
    let store = router(dir.path(), Arc::new(FixedMapSource::new(map.clone()))).await;
    for id in 1..=400u64 {
        store.create(&user(id)).await.expect("create");
    }
    let mut per_group: BTreeMap<String, usize> = BTreeMap::new();
    for name in ["s1", "s2", "s3", "s4"] {
        let g = group_store(dir.path(), name);
        let page = g
            .list(None, 1000, ReadRequirement::ANY)
            .await
            .expect("list the group");
        for u in &page.users {
            assert_eq!(map.group_of(u.user.id).as_str(), name, "user {}", u.user.id);
        }
        per_group.insert(name.into(), page.users.len());
    }
    assert_eq!(per_group.values().sum::<usize>(), 400, "{per_group:?}");
    // An even hash map: each group has some of them.
    assert!(per_group.values().all(|&n| n > 50), "{per_group:?}");
}

#[tokio::test]
async fn listing_merges_every_group_in_id_order_across_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = router(dir.path(), Arc::new(FixedMapSource::new(four_groups()))).await;
    let ids: BTreeSet<u64> = (0..300u64).map(|i| 1000 + i * 7919 % 100_003).collect();
    for &id in &ids {
        store.create(&user(id)).await.expect("create");
    }
    let mut seen = Vec::new();
    let mut after = None;
    for _ in 0..1000 {
        let page = store
            .list(after, 7, ReadRequirement::ANY)
            .await
            .expect("list");
        assert!(page.users.len() <= 7);
        seen.extend(page.users.iter().map(|u| u.user.id.0));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let expected: Vec<u64> = ids.into_iter().collect();
    assert_eq!(seen, expected);
}

/// A group's engines that can be made to fail or to hang.
struct Flaky {
    inner: SqliteStore,
    fail: Arc<AtomicBool>,
    hang: Arc<AtomicBool>,
}

impl Flaky {
    async fn gate(&self) -> Result<(), StoreError> {
        if self.hang.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the group is down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for Flaky {
    async fn create(&self, user: &User) -> Result<WriteReceipt, StoreError> {
        self.gate().await?;
        self.inner.create(user).await
    }
    async fn get(
        &self,
        id: UserId,
        need: ReadRequirement,
    ) -> Result<Option<StoredUser>, StoreError> {
        self.gate().await?;
        self.inner.get(id, need).await
    }
    async fn replace(
        &self,
        id: UserId,
        profile: &UserProfile,
        pre: Precondition,
    ) -> Result<WriteReceipt, StoreError> {
        self.gate().await?;
        self.inner.replace(id, profile, pre).await
    }
    async fn delete(&self, id: UserId, pre: Precondition) -> Result<WriteReceipt, StoreError> {
        self.gate().await?;
        self.inner.delete(id, pre).await
    }
    async fn list(
        &self,
        after: Option<UserId>,
        limit: u32,
        need: ReadRequirement,
    ) -> Result<Page, StoreError> {
        self.gate().await?;
        self.inner.list(after, limit, need).await
    }
    async fn insert_batch(&self, users: Vec<User>) -> Result<CommitToken, StoreError> {
        self.gate().await?;
        self.inner.insert_batch(users).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.ping().await
    }
    fn engine(&self) -> &'static str {
        "flaky"
    }
}

struct FlakyGroups {
    dir: std::path::PathBuf,
    flaky: ShardGroup,
    fail: Arc<AtomicBool>,
    hang: Arc<AtomicBool>,
}

impl GroupOpener for FlakyGroups {
    fn open(&self, g: &ShardGroup) -> Result<GroupEngines, StoreError> {
        let sqlite = SqliteGroups::new(&self.dir).open_store(g)?;
        let store: Arc<dyn Store> = if *g == self.flaky {
            Arc::new(Flaky {
                inner: sqlite.clone(),
                fail: self.fail.clone(),
                hang: self.hang.clone(),
            })
        } else {
            Arc::new(sqlite.clone())
        };
        let sqlite = Arc::new(sqlite);
        Ok(GroupEngines {
            store,
            accounts: sqlite.clone(),
            emails: sqlite,
        })
    }
}

#[tokio::test]
async fn a_group_that_fails_or_hangs_fails_the_listing_with_its_name_never_a_short_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fail, hang) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let store = ShardedStore::open(
        Arc::new(FixedMapSource::new(four_groups())),
        Arc::new(FlakyGroups {
            dir: dir.path().into(),
            flaky: group("s3"),
            fail: fail.clone(),
            hang: hang.clone(),
        }),
        RouterOptions {
            fan_out_deadline: Duration::from_millis(300),
        },
    )
    .await
    .expect("router");
    for id in 1..=100u64 {
        store.create(&user(id)).await.expect("create");
    }
    let full = store
        .list(None, 1000, ReadRequirement::ANY)
        .await
        .expect("list");
    assert_eq!(full.users.len(), 100);

    fail.store(true, Ordering::SeqCst);
    let err = store
        .list(None, 1000, ReadRequirement::ANY)
        .await
        .expect_err("a failing group fails the page");
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("shard group s3")),
        "{err}"
    );
    fail.store(false, Ordering::SeqCst);

    hang.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let err = store
        .list(None, 1000, ReadRequirement::ANY)
        .await
        .expect_err("a hanging group fails the page");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("s3 did not answer within 300 ms")),
        "{err}"
    );
    // Point calls to the other groups do not wait for it.
    let elsewhere = (1..=100u64)
        .map(UserId)
        .find(|&id| store.map().group_of(id).as_str() != "s3")
        .expect("a user outside s3");
    assert!(
        store
            .get(elsewhere, ReadRequirement::ANY)
            .await
            .expect("get")
            .is_some()
    );
}

/// Copies the users of `slots` from one group's file to another's (what a resharder's copy
/// step does), returning how many moved.
async fn copy_slots(dir: &Path, map: &ShardMap, slots: SlotRange, from: &str, to: &str) -> usize {
    let (src, dst) = (group_store(dir, from), group_store(dir, to));
    let page = src
        .list(None, 100_000, ReadRequirement::ANY)
        .await
        .expect("list");
    let moving: Vec<User> = page
        .users
        .into_iter()
        .filter(|u| {
            let s = map.slot_of(u.user.id);
            slots.first() <= s && s <= slots.last()
        })
        .map(|u| u.user)
        .collect();
    let n = moving.len();
    dst.insert_batch(moving).await.expect("copy");
    n
}

#[tokio::test]
async fn a_router_with_a_stale_map_is_told_moved_and_writes_in_the_new_group_never_the_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = four_groups();
    let source = Arc::new(FixedMapSource::new(v1.clone()));
    // Two API servers; the second will not have looked at the map since v1.
    let fresh = router(dir.path(), source.clone()).await;
    let stale = router(dir.path(), source.clone()).await;
    for id in 1..=200u64 {
        fresh.create(&user(id)).await.expect("create");
    }
    // Move s1's slots to s2: copy, fence s1, publish v2.
    let s1_slots = SlotRange::runs(v1.slots_of(&group("s1")));
    assert_eq!(s1_slots.len(), 1);
    let slots = s1_slots[0];
    let copied = copy_slots(dir.path(), &v1, slots, "s1", "s2").await;
    assert!(copied > 20, "{copied}");
    let v2 = v1.move_slots(slots, &group("s2")).expect("move").map;
    group_store(dir.path(), "s1")
        .add_fence(Fence {
            slots,
            strategy: v1.strategy(),
            user: None,
            except: Vec::new(),
            moved_to: group("s2"),
            map_version: v2.version(),
        })
        .await
        .expect("fence");
    source.publish(v2.clone());

    let moved_user = (1..=200u64)
        .map(UserId)
        .find(|&id| v1.group_of(id).as_str() == "s1")
        .expect("a user of s1");
    assert_eq!(stale.map().version(), v1.version());
    let mut body = User::canonical().profile.to_value();
    body["firstName"] = "Moved".into();
    let profile = UserProfile::parse(&body, strata_core::user::IdField::Forbidden).expect("valid");
    let receipt = stale
        .replace(moved_user, &profile, Precondition::VersionIs(1))
        .await
        .expect("the stale router follows the move");
    assert_eq!(receipt.version, 2);
    assert_eq!(
        stale.map().version(),
        v2.version(),
        "the stale router refreshed"
    );
    // The write is in s2; s1's leftover copy is untouched.
    let in_s2 = group_store(dir.path(), "s2")
        .get(moved_user, ReadRequirement::ANY)
        .await
        .expect("read s2")
        .expect("present");
    assert_eq!(in_s2.user.profile.first_name.as_str(), "Moved");
    let s1 = group_store(dir.path(), "s1");
    let err = s1
        .get(moved_user, ReadRequirement::ANY)
        .await
        .expect_err("s1 refuses the moved row");
    assert!(matches!(err, StoreError::Moved { .. }), "{err}");
    // Listing does not show the leftover copies twice.
    let page = fresh
        .list(None, 1000, ReadRequirement::ANY)
        .await
        .expect("list");
    assert_eq!(page.users.len(), 200);
    // A fence whose map is never published: the call gives up with 503, writing nothing.
    let s2_user = (1..=200u64)
        .map(UserId)
        .find(|&id| v2.group_of(id).as_str() == "s2" && v1.group_of(id).as_str() == "s2")
        .expect("a user of s2");
    group_store(dir.path(), "s2")
        .add_fence(Fence {
            slots: SlotRange::all(),
            strategy: v2.strategy(),
            user: None,
            except: Vec::new(),
            moved_to: group("s3"),
            map_version: v2.version() + 1,
        })
        .await
        .expect("fence");
    let err = fresh
        .replace(s2_user, &profile, Precondition::None)
        .await
        .expect_err("no map to follow");
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("not published")),
        "{err}"
    );
    let unchanged = group_store(dir.path(), "s2");
    unchanged.clear_fences().await.expect("clear");
    let row = unchanged
        .get(s2_user, ReadRequirement::ANY)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(row.version, 1, "nothing was written");
}

#[tokio::test]
async fn a_read_after_a_write_waits_only_for_the_group_that_took_the_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = four_groups();
    let store = router(dir.path(), Arc::new(FixedMapSource::new(map.clone()))).await;
    let a = UserId(1);
    let b = (2..1000u64)
        .map(UserId)
        .find(|&id| map.group_of(id) != map.group_of(a))
        .expect("a user in another group");
    let ra = store.create(&user(a.0)).await.expect("create a");
    store.create(&user(b.0)).await.expect("create b");
    // The token names a's group: a read of a with it is satisfied ...
    let got = store
        .get(a, ReadRequirement::at_least(ra.commit))
        .await
        .expect("read a");
    assert!(got.is_some());
    // ... and so is a read of b in another group, whose own position may be far lower.
    let many = store.create(&user(5000)).await.expect("create");
    for i in 0..50u64 {
        store.create(&user(10_000 + i)).await.expect("create");
    }
    let _ = many;
    let far = CommitToken(ra.commit.0 + 1_000_000);
    // A token from a's group far in the future: a read in a's group cannot satisfy it ...
    let err = store
        .get(a, ReadRequirement::at_least(far))
        .await
        .expect_err("not yet visible");
    assert!(matches!(err, StoreError::NotYetVisible { .. }), "{err}");
    // ... but b's group does not wait for a's group.
    assert!(
        store
            .get(b, ReadRequirement::at_least(far))
            .await
            .expect("read b")
            .is_some()
    );
}

#[tokio::test]
async fn concurrent_sign_ups_of_one_email_through_two_servers_give_exactly_one_account() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = Arc::new(FixedMapSource::new(four_groups()));
    let one = Arc::new(router(dir.path(), source.clone()).await);
    let two = Arc::new(router(dir.path(), source.clone()).await);
    const PAIRS: u64 = 400;
    let mut tasks = Vec::new();
    for i in 0..PAIRS {
        for (side, server) in [(0u64, one.clone()), (1, two.clone())] {
            tasks.push(tokio::spawn(async move {
                let id = UserId(1_000_000 + i * 2 + side);
                let address = email(&format!("racer{i}@example.com"));
                let result = server
                    .create_account(&user(id.0), &address, "$argon2id$test")
                    .await;
                (i, id, result.map(|_| ()))
            }));
        }
    }
    let mut winners: BTreeMap<u64, Vec<UserId>> = BTreeMap::new();
    for t in tasks {
        let (i, id, result) = t.await.expect("task");
        match result {
            Ok(()) => winners.entry(i).or_default().push(id),
            Err(StoreError::EmailTaken) => {}
            Err(e) => panic!("pair {i}: {e}"),
        }
    }
    for i in 0..PAIRS {
        let w = winners.get(&i).cloned().unwrap_or_default();
        assert_eq!(w.len(), 1, "pair {i}: winners {w:?}");
        let found = one
            .account_by_email(&email(&format!("racer{i}@example.com")))
            .await
            .expect("lookup")
            .expect("an account");
        assert_eq!(found.user_id, w[0]);
    }
    // Across every group's own accounts table, each address once.
    let mut owners: BTreeMap<String, usize> = BTreeMap::new();
    for name in ["s1", "s2", "s3", "s4"] {
        let g = group_store(dir.path(), name);
        for i in 0..PAIRS * 2 {
            if let Some(a) = g.account(UserId(1_000_000 + i)).await.expect("account") {
                *owners.entry(a.email.as_str().to_owned()).or_default() += 1;
            }
        }
    }
    assert_eq!(owners.len(), PAIRS as usize);
    assert!(owners.values().all(|&n| n == 1), "{owners:?}");
}

#[tokio::test]
async fn orphaned_email_claims_are_reclaimed_and_in_flight_ones_are_respected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = four_groups();
    let store = router(dir.path(), Arc::new(FixedMapSource::new(map.clone()))).await;
    let home = |address: &Email| {
        let slot = strata_store::shard::slot_of_key(address.as_str().as_bytes());
        group_store(dir.path(), map.group_of_slot(slot).as_str())
    };
    // A sign-up that claimed and then died long ago: its claim is an orphan.
    let old = email("old@example.com");
    let long_ago = strata_store::accounts::now_ms() - PENDING_CLAIM_GRACE_MS - 1000;
    assert_eq!(
        home(&old)
            .claim_email(&old, UserId(77), long_ago)
            .await
            .expect("claim"),
        Claim::Claimed
    );
    store
        .create_account(&user(78), &old, "$argon2id$test")
        .await
        .expect("the orphan is reclaimed");
    assert_eq!(
        store
            .account_by_email(&old)
            .await
            .expect("lookup")
            .map(|a| a.user_id),
        Some(UserId(78))
    );
    // A sign-up in flight right now: its claim stands.
    let busy = email("busy@example.com");
    home(&busy)
        .claim_email(&busy, UserId(88), strata_store::accounts::now_ms())
        .await
        .expect("claim");
    let err = store
        .create_account(&user(89), &busy, "$argon2id$test")
        .await
        .expect_err("in flight");
    assert!(matches!(err, StoreError::EmailTaken), "{err}");
    assert!(
        store
            .get(UserId(89), ReadRequirement::ANY)
            .await
            .expect("get")
            .is_none()
    );
    // A claim whose user exists without it (index row pointing at a user of another address)
    // does not make the address readable.
    assert!(
        store
            .account_by_email(&busy)
            .await
            .expect("lookup")
            .is_none()
    );
}

#[tokio::test]
async fn a_deleted_account_frees_its_email_for_a_new_sign_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = router(dir.path(), Arc::new(FixedMapSource::new(four_groups()))).await;
    let address = email("again@example.com");
    store
        .create_account(&user(5), &address, "$argon2id$test")
        .await
        .expect("first");
    let err = store
        .create_account(&user(6), &address, "$argon2id$test")
        .await
        .expect_err("taken");
    assert!(matches!(err, StoreError::EmailTaken), "{err}");
    store
        .delete(UserId(5), Precondition::None)
        .await
        .expect("delete");
    store
        .create_account(&user(6), &address, "$argon2id$test")
        .await
        .expect("free again");
    assert_eq!(
        store
            .account_by_email(&address)
            .await
            .expect("lookup")
            .map(|a| a.user_id),
        Some(UserId(6))
    );
}

#[tokio::test]
async fn an_embedded_data_directory_keeps_its_shard_count_and_refuses_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = |shards| {
        let mut o = strata_store::open::DataOptions::sqlite(dir.path());
        o.shards = shards;
        o
    };
    let engines = opts(Some(4)).open().await.expect("open 4 groups");
    assert_eq!(engines.store.engine(), "sharded");
    // The canonical user 12 was created through the router.
    assert!(
        engines
            .store
            .get(UserId(12), ReadRequirement::ANY)
            .await
            .expect("get")
            .is_some()
    );
    drop(engines);
    for n in 1..=4 {
        assert!(dir.path().join(format!("shards/s{n}/strata.db")).exists());
    }
    // Reopened without a count: as the map says.
    let again = opts(None).open().await.expect("reopen");
    assert_eq!(again.store.engine(), "sharded");
    drop(again);
    let err = opts(Some(2))
        .open()
        .await
        .expect_err("another count is refused");
    let text = format!("{err:#}");
    assert!(text.contains("holds 4 shard groups, not 2"), "{text}");
    assert!(text.contains("strata reshard --shards 2"), "{text}");

    // An unsharded directory is not silently split.
    let plain = tempfile::tempdir().expect("tempdir");
    let mut o = strata_store::open::DataOptions::sqlite(plain.path());
    drop(o.open().await.expect("unsharded"));
    o.shards = Some(4);
    let err = o.open().await.expect_err("refused");
    assert!(
        format!("{err:#}").contains("holds an unsharded database"),
        "{err:#}"
    );
}

/// A source that counts its reads and takes a while to answer (as etcd over the network).
struct SlowCountingSource {
    inner: FixedMapSource,
    reads: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl strata_store::shard::source::ShardMapSource for SlowCountingSource {
    async fn current(&self) -> Result<ShardMap, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.inner.current().await
    }
}

#[tokio::test]
async fn refreshes_asked_at_once_share_one_read_of_the_map_and_each_sees_the_newest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = Arc::new(SlowCountingSource {
        inner: FixedMapSource::new(four_groups()),
        reads: Default::default(),
    });
    let store = Arc::new(
        ShardedStore::open(
            source.clone(),
            Arc::new(SqliteGroups::new(dir.path())),
            RouterOptions::default(),
        )
        .await
        .expect("router"),
    );
    let v = store.map().version();
    let next = four_groups().add_group(group("s5")).expect("add");
    source.inner.publish(next);
    source.reads.store(0, Ordering::SeqCst);
    // 64 writes paused by a cut-over all ask for the next map at the same moment.
    let versions = futures_util::future::join_all((0..64).map(|_| {
        let store = store.clone();
        async move { store.refresh().await.expect("refresh") }
    }))
    .await;
    assert!(versions.iter().all(|&got| got == v + 1), "{versions:?}");
    let reads = source.reads.load(Ordering::SeqCst);
    assert!(
        reads <= 2,
        "{reads} reads of the map for 64 refreshes at once"
    );
}
