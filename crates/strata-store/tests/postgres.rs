//! The PostgreSQL engine against the shared store suite, on a real server started from the
//! installed binaries (strata-testkit), plus what is particular to a server: migrations by
//! several processes at once, foreign databases, COPY bulk loads, and a server that dies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use strata_core::user::{User, UserId};
use strata_store::postgres::{PgConfig, PgStore, SCHEMA_VERSION};
use strata_store::{Precondition, ReadRequirement, Store, StoreError};
use strata_testkit::PgServer;

async fn connect(url: &str) -> PgStore {
    PgStore::connect(&PgConfig::new(url))
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
        .store
}

fn user(id: u64) -> User {
    User {
        id: UserId(id),
        ..User::canonical()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_engine_passes_the_store_suite_and_keeps_its_promises() {
    let mut pg = tokio::task::spawn_blocking(PgServer::start)
        .await
        .expect("start");

    // The one suite every engine passes.
    let suite = pg.create_database("suite");
    let store = connect(&suite).await;
    strata_store::conformance::run_all(&store).await;
    assert_eq!(store.engine(), "postgres");
    strata_store::accounts::contract::accounts(&store).await;
    strata_store::accounts::contract::sessions(&store).await;
    strata_store::idempotency::contract::idempotency(&store).await;

    // Several servers starting at once migrate exactly once, and later opens migrate nothing.
    let fresh = pg.create_database("fresh");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = fresh.clone();
            tokio::spawn(async move { PgStore::connect(&PgConfig::new(url)).await })
        })
        .collect();
    let mut stores = Vec::new();
    let mut creators = 0;
    for open in opens {
        let opened = open.await.expect("join").expect("concurrent connect");
        creators += usize::from(opened.created);
        stores.push(opened.store);
    }
    assert_eq!(
        creators, 1,
        "exactly one of the concurrent connects created the schema"
    );
    assert!(stores[0].ensure_canonical_user().await.expect("insert"));
    assert!(
        !stores[1].ensure_canonical_user().await.expect("again"),
        "user 12 is inserted once"
    );
    let got = stores[2]
        .get(UserId(12), ReadRequirement::ANY)
        .await
        .expect("get")
        .expect("user 12");
    assert_eq!(
        got.user,
        User::canonical(),
        "the canonical profile round-trips through jsonb"
    );

    // Commit tokens are WAL positions, and a token from a write is visible at once on the
    // primary.
    let receipt = stores[3].create(&user(77)).await.expect("create");
    assert!(receipt.commit.0 > 0);
    assert!(stores[0].position().await.expect("position") >= receipt.commit);
    let seen = stores[0]
        .get(UserId(77), ReadRequirement::at_least(receipt.commit))
        .await
        .expect("read after the write");
    assert_eq!(seen.map(|s| s.version), Some(1));

    // Bulk load with COPY: all or nothing.
    let batch: Vec<User> = (1_000..6_000).map(user).collect();
    stores[0].insert_batch(batch).await.expect("copy");
    let page = stores[0]
        .list(Some(UserId(999)), 10, ReadRequirement::ANY)
        .await
        .expect("list");
    assert_eq!(page.users.len(), 10);
    assert_eq!(page.users[0].user.id, UserId(1_000));
    match stores[0].insert_batch(vec![user(9_000), user(1_500)]).await {
        Err(StoreError::AlreadyExists(id)) => assert_eq!(id, UserId(1_500), "names the duplicate"),
        other => panic!("a batch with an existing id must fail, got {other:?}"),
    }
    assert!(
        stores[0]
            .get(UserId(9_000), ReadRequirement::ANY)
            .await
            .expect("get")
            .is_none(),
        "nothing of a failed batch is applied"
    );

    // A database that holds someone else's users table is refused, with the reason.
    let foreign = pg.create_database("foreign");
    {
        let (client, conn) = tokio_postgres::connect(&foreign, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .batch_execute("CREATE TABLE users (name text)")
            .await
            .expect("create a foreign table");
    }
    match PgStore::connect(&PgConfig::new(&foreign)).await {
        Err(StoreError::Unusable(m)) => assert!(m.contains("not Strata's"), "{m}"),
        other => panic!("a foreign users table must be refused, got {other:?}"),
    }
    // A schema newer than this build is refused.
    {
        let (client, conn) = tokio_postgres::connect(&fresh, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .execute(
                "UPDATE strata_meta SET value = $1 WHERE key = 'schema_version'",
                &[&(SCHEMA_VERSION + 1).to_string()],
            )
            .await
            .expect("bump");
    }
    match PgStore::connect(&PgConfig::new(&fresh)).await {
        Err(StoreError::Unusable(m)) => assert!(m.contains("upgrade strata"), "{m}"),
        other => panic!("a newer schema must be refused, got {other:?}"),
    }

    // A URL that is not one gets a sentence that says what one looks like.
    match PgStore::connect(&PgConfig::new("postgresql://[::1")).await {
        Err(StoreError::Unusable(m)) => assert!(m.contains("postgresql://"), "{m}"),
        other => panic!("a bad URL must be refused, got {other:?}"),
    }

    // The server dies: calls fail fast with Unavailable, never hang; it comes back: calls work
    // again with the same store, and every acknowledged write is still there.
    let mut config = PgConfig::new(&suite);
    config.call_timeout = Duration::from_secs(2);
    let store = PgStore::connect(&config).await.expect("connect").store;
    let acked = store
        .create(&user(500))
        .await
        .expect("create before the kill");
    tokio::task::block_in_place(|| pg.kill9());
    let started = std::time::Instant::now();
    match store.get(UserId(500), ReadRequirement::ANY).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("a dead server must give Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(4), "no hang");
    tokio::task::block_in_place(|| pg.restart());
    let mut back = None;
    for _ in 0..50 {
        match store
            .replace(
                UserId(500),
                &User::canonical().profile,
                Precondition::VersionIs(acked.version),
            )
            .await
        {
            Ok(r) => {
                back = Some(r);
                break;
            }
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("after the restart: {e}"),
        }
    }
    let back = back.expect("the store works again once the server is back");
    assert_eq!(
        back.version, 2,
        "the write acknowledged before the kill survived it"
    );

    // A write that finds no server keeps trying to connect (it certainly has not committed)
    // and succeeds once the server is back within the call's deadline.
    let mut config = PgConfig::new(&suite);
    config.call_timeout = Duration::from_secs(8);
    // Lazily: no connection is opened before the kill (a pooled one could carry the write to a
    // dying backend, and then it would rightly not be retried).
    let patient = PgStore::connect_lazily(&config).expect("pool");
    tokio::task::block_in_place(|| pg.kill9());
    let handle = tokio::runtime::Handle::current();
    let written = std::thread::scope(|scope| {
        let pg = &mut pg;
        let restart = scope.spawn(move || {
            std::thread::sleep(Duration::from_millis(800));
            pg.restart();
        });
        let result = tokio::task::block_in_place(|| handle.block_on(patient.create(&user(501))));
        restart.join().expect("restart thread");
        result
    });
    assert!(
        written.is_ok(),
        "the write waited for the server: {written:?}"
    );
}

/// A write that meets a server that has become read-only (a demoted primary) fails with
/// `Unavailable` and drops every pooled connection, so the next write — through a multi-host
/// URL with `target_session_attrs=read-write` — reaches the server that now takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_primary_makes_the_pool_reconnect_to_the_writable_one() {
    let (a, b) = tokio::task::spawn_blocking(|| (PgServer::start(), PgServer::start()))
        .await
        .expect("start");
    a.create_database("moving");
    b.create_database("moving");
    let url = format!(
        "postgresql://{}@127.0.0.1:{},127.0.0.1:{}/moving?target_session_attrs=read-write",
        strata_testkit::PG_USER,
        a.port(),
        b.port()
    );
    // Both servers get the schema (as a new primary would have it, by replication).
    connect(&b.url_for("moving")).await;
    let store = connect(&url).await;
    store
        .create(&user(1))
        .await
        .expect("a write on the first server");
    assert_eq!(a.psql("moving", "SELECT count(*) FROM users"), "1");

    // The first server becomes read-only, as a demoted primary does.
    a.psql(
        "moving",
        "ALTER SYSTEM SET default_transaction_read_only = on",
    );
    a.psql("moving", "SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(200));
    match store.create(&user(2)).await {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("read-only"), "{m}"),
        other => panic!("a write on a read-only server must be Unavailable, got {other:?}"),
    }
    // The pool was dropped: the next write opens a connection that skips the read-only server.
    store
        .create(&user(3))
        .await
        .expect("the next write reaches the writable server");
    assert_eq!(b.psql("moving", "SELECT id FROM users ORDER BY id"), "3");
    assert_eq!(a.psql("moving", "SELECT count(*) FROM users"), "1");
}

/// A TCP relay to `to` that can be frozen: from then on it still accepts connections, and
/// forwards nothing on new or open ones — what a relay on a cut link, or a frozen server, looks
/// like to a client.
async fn freezable_relay(to: u16) -> (u16, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let frozen = Arc::new(AtomicBool::new(false));
    let flag = frozen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(forward(client_read, server_write, flag.clone()));
            tokio::spawn(forward(server_read, client_write, flag.clone()));
        }
    });
    (port, frozen)
}

/// Copies `from` to `into` until either ends, holding every byte once `frozen` is set.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut into: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if into.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The primary's side of a cut link: the first host of a multi-host URL (a relay to the
/// primary) still accepts connections but answers nothing. A call on a pooled connection
/// through it is abandoned by its caller; the calls after it must reach the writable second
/// host — neither reusing the silent connection nor waiting on the silent host for every new
/// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_goes_silent_is_passed_over_for_the_next_one() {
    let (a, b) = tokio::task::spawn_blocking(|| (PgServer::start(), PgServer::start()))
        .await
        .expect("start");
    a.create_database("cut");
    b.create_database("cut");
    connect(&b.url_for("cut")).await;
    let (relay, frozen) = freezable_relay(a.port()).await;
    let url = format!(
        "postgresql://{}@127.0.0.1:{relay},127.0.0.1:{}/cut?target_session_attrs=read-write",
        strata_testkit::PG_USER,
        b.port()
    );
    let mut config = PgConfig::new(&url);
    config.connect_timeout = Duration::from_millis(500);
    config.call_timeout = Duration::from_millis(1500);
    config.reconnect_for = Duration::from_millis(1500);
    let store = PgStore::connect(&config).await.expect("connect").store;
    store
        .create(&user(1))
        .await
        .expect("a write through the relay");
    assert_eq!(a.psql("cut", "SELECT count(*) FROM users"), "1");

    frozen.store(true, Ordering::SeqCst);
    // The pooled connection leads to the silent relay: a call on it is not answered, and its
    // caller goes away first (a client that gave up), before the call's own deadline.
    let gave_up = tokio::time::timeout(Duration::from_millis(300), store.create(&user(2))).await;
    assert!(
        gave_up.is_err(),
        "a write through a silent relay: {gave_up:?}"
    );
    // The next ones reach the second host: the first waits for the silent host at most the
    // stagger (500 ms), the later ones go straight to the host that answered.
    store
        .create(&user(3))
        .await
        .expect("the write after the abandoned one reaches the second host");
    let started = std::time::Instant::now();
    for id in 4..8 {
        store.create(&user(id)).await.expect("later writes");
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "later writes waited on the silent host: {:?}",
        started.elapsed()
    );
    assert_eq!(
        b.psql(
            "cut",
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM users"
        ),
        "3,4,5,6,7"
    );
    // Thawed, the relay delivers what it held: the write that timed out may commit on the old
    // server (its outcome was unknown, as the error said), nothing later can.
    frozen.store(false, Ordering::SeqCst);
    let on_a = a.psql(
        "cut",
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM users",
    );
    assert!(on_a == "1" || on_a == "1,2", "{on_a}");
}
