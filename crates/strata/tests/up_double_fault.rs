//! Failover when a second fault comes with the first, end to end: no acknowledged write is lost.
//!
//! A primary and two replicas in a synchronous quorum (`ANY 1 (pg-2, pg-3)`). pg-2 is stopped
//! for a while, so commits are acknowledged with pg-3 alone — 40 MB of WAL, more than the
//! sockets between the servers buffer, then users written through the API; then pg-2 resumes
//! just as the primary and pg-3 freeze. pg-2 alone may lack acknowledged writes: the controller must not
//! promote it. It waits — writes get 503, `strata status` says why — and the controller itself
//! is killed with SIGKILL while it waits; the one the supervisor restarts must keep waiting too.
//! Once pg-3 answers again it is promoted, every acknowledged write is there, and the cluster
//! returns to full health by itself.

mod common;
use common::{Cleanup, admin_client, logs, role, status_json, up_topology};

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use strata_engines::process::signal_tree;

/// The postmaster of a database role (the server, not the role process).
fn server_pid(dir: &std::path::Path, node: &str) -> u32 {
    std::fs::read_to_string(dir.join("postgres").join(node).join("postmaster.pid"))
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("a pid")
}

/// What the controller shows (`GET /cluster`), wherever it listens now.
async fn control_view(http: &reqwest::Client, dir: &std::path::Path) -> Option<Value> {
    let status = status_json(dir);
    let addr = role(&status, "control-1")["addrs"]["http"]
        .as_str()?
        .to_string();
    http.get(format!("http://{addr}/cluster"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Polls `check` until it gives a value, or fails the test after `limit` saying `what`.
async fn wait_for<T>(
    dir: &std::path::Path,
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}{}",
            logs(dir, 20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Commits `rows` × 2 KiB of WAL on the primary at `addr` (a JSON string): more than the
/// sockets between the servers buffer, so a stopped replica truly falls behind.
async fn commit_wal(addr: &Value, rows: u32) {
    let addr = addr.as_str().expect("an address");
    let (db, connection) = tokio_postgres::connect(
        &format!("postgresql://strata@{addr}/strata"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to the primary");
    let driver = tokio::spawn(connection);
    db.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS wal_filler (id int, pad text);
         ALTER TABLE wal_filler ALTER COLUMN pad SET STORAGE EXTERNAL;
         INSERT INTO wal_filler SELECT g, (SELECT string_agg(md5(g::text || i::text), '')
             FROM generate_series(1, 64) i) FROM generate_series(1, {rows}) g;"
    ))
    .await
    .expect("WAL acknowledged by the replica that runs");
    drop(db);
    driver.abort();
}

async fn create(http: &reqwest::Client, lb: &str, n: usize) -> Result<String, u16> {
    let body = json!({"firstName": format!("D{n}"), "lastName": "DoubleFault",
        "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"}});
    match http
        .post(format!("http://{lb}/users"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) if r.status() == 201 => Ok(r.headers()["location"]
            .to_str()
            .expect("location")
            .to_string()),
        Ok(r) => Err(r.status().as_u16()),
        Err(_) => Err(0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_is_never_promoted_when_the_primary_and_the_up_to_date_one_fail() {
    let (_tmp, dir) = tokio::task::spawn_blocking(|| {
        up_topology(
            "name = \"double-fault\"\n[lb]\n[api]\ncount = 2\n[data]\nengine = \"postgres\"\nreplicas = 2\n",
        )
    })
    .await
    .expect("join");
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let lb = role(&status, "lb-1")["addrs"]["http"]
        .as_str()
        .expect("lb address")
        .to_string();
    let http = admin_client(&dir, &lb).await;
    let mut acked = Vec::new();
    for n in 0..20 {
        acked.push(
            create(&http, &lb, n)
                .await
                .expect("a write before any fault"),
        );
    }

    // pg-2 stops: commits are acknowledged with pg-3 alone.
    let (pg1, pg2, pg3) = (
        server_pid(&dir, "pg-1"),
        server_pid(&dir, "pg-2"),
        server_pid(&dir, "pg-3"),
    );
    signal_tree(pg2, Signal::SIGSTOP);
    commit_wal(&role(&status, "pg-1")["addrs"]["postgres"], 20_000).await;
    for n in 20..120 {
        acked.push(
            create(&http, &lb, n)
                .await
                .expect("writes go on with one replica of the quorum"),
        );
    }

    // pg-2 resumes as the primary and pg-3 freeze.
    signal_tree(pg1, Signal::SIGSTOP);
    signal_tree(pg3, Signal::SIGSTOP);
    signal_tree(pg2, Signal::SIGCONT);

    // The controller fences the primary and waits: one of the two standbys answers.
    let waiting = wait_for(
        &dir,
        Duration::from_secs(15),
        "the failover waits",
        async || {
            let view = control_view(&http, &dir).await?;
            (view["waiting"]["reachable"] == 1 && view["waiting"]["needed"] == 2).then_some(view)
        },
    )
    .await;
    assert!(waiting["cluster"]["primary"].is_null(), "{waiting:#}");
    let status = status_json(&dir);
    assert!(
        status["notes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n
                .as_str()
                .is_some_and(|n| n.starts_with("failover waiting: 1 of 2 standbys reachable")))),
        "strata status says why: {status:#}"
    );
    // Writes are refused meanwhile, with a 503 that says to retry.
    assert_eq!(create(&http, &lb, 1000).await, Err(503));

    // A second fault during the first: the controller dies while it waits. Its successor
    // (the supervisor restarts it) finds the published failover and keeps waiting.
    let controller = role(&status, "control-1")["pid"].as_u64().expect("pid") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(controller), Signal::SIGKILL)
        .expect("kill the controller");
    wait_for(
        &dir,
        Duration::from_secs(15),
        "a new controller waits",
        async || {
            let status = status_json(&dir);
            let pid = role(&status, "control-1")["pid"].as_i64()?;
            let view = control_view(&http, &dir).await?;
            (pid != i64::from(controller) && view["waiting"]["reachable"] == 1).then_some(())
        },
    )
    .await;
    // An absence cannot be polled for: watch a window of four of the controller's check
    // intervals (500 ms each) in which a wrong promotion would have happened.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let view = control_view(&http, &dir).await.expect("view");
    assert!(
        view["cluster"]["primary"].is_null(),
        "nothing was promoted while pg-3 was out of reach: {view:#}"
    );

    // pg-3 answers again: it is the most advanced (pg-2 missed tens of MB of WAL), and it is
    // promoted.
    signal_tree(pg3, Signal::SIGCONT);
    let view = wait_for(
        &dir,
        Duration::from_secs(20),
        "pg-3 is promoted",
        async || {
            let view = control_view(&http, &dir).await?;
            (view["cluster"]["primary"] == "pg-3" && view["cluster"]["failover"].is_null())
                .then_some(view)
        },
    )
    .await;
    assert!(
        view["cluster"]["fenced"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("pg-1"))),
        "{view:#}"
    );

    // Every acknowledged write is on the new primary, with what was written.
    let status = status_json(&dir);
    let pg3 = role(&status, "pg-3")["addrs"]["postgres"]
        .as_str()
        .expect("pg-3 address")
        .to_string();
    let (db, connection) = tokio_postgres::connect(
        &format!("postgresql://strata@{pg3}/strata"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to the new primary");
    let driver = tokio::spawn(connection);
    let rows = db
        .query(
            "SELECT id::text, profile->>'firstName' FROM users WHERE profile->>'lastName' = 'DoubleFault'",
            &[],
        )
        .await
        .expect("query");
    let stored: std::collections::HashMap<String, String> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for (n, location) in acked.iter().enumerate() {
        let id = location.rsplit('/').next().unwrap_or_default();
        assert_eq!(
            stored.get(id).map(String::as_str),
            Some(format!("D{n}").as_str()),
            "acknowledged write {location} is lost or changed"
        );
    }
    drop(db);
    driver.abort();
    assert!(create(&http, &lb, 2000).await.is_ok(), "writes work again");

    // Full health by itself: the old primary rewound and follows, nothing fenced, both
    // standbys back in the quorum.
    wait_for(&dir, Duration::from_secs(40), "full health", async || {
        let status = status_json(&dir);
        let cluster = &status["control"]["cluster"];
        (role(&status, "pg-1")["database"]["role"] == "replica"
            && role(&status, "pg-2")["database"]["role"] == "replica"
            && cluster["fenced"] == json!([])
            && cluster["sync"] == json!(["pg-1", "pg-2"]))
        .then_some(())
    })
    .await;
}

/// A client for controllers' views: one that is frozen must not hold a poll up.
fn prober() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .expect("client")
}

/// The role name and pid of the controller that leads now, once one does.
async fn leader(_: &reqwest::Client, dir: &std::path::Path) -> Option<(String, i32)> {
    let http = prober();
    let status = status_json(dir);
    for r in status["roles"].as_array()? {
        if r["kind"] != "control" || !r["alive"].as_bool().unwrap_or(false) {
            continue;
        }
        let Some(addr) = r["addrs"]["http"].as_str() else {
            continue;
        };
        // A frozen controller does not answer: ask the next one.
        let Ok(response) = http.get(format!("http://{addr}/cluster")).send().await else {
            continue;
        };
        let Ok(view) = response.json::<Value>().await else {
            continue;
        };
        if view["leading"] == true {
            return Some((r["name"].as_str()?.to_string(), r["pid"].as_i64()? as i32));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_the_leading_controller_killed_or_frozen_mid_failover_changes_nothing_decided() {
    let (_tmp, dir) = tokio::task::spawn_blocking(|| {
        up_topology(
            "name = \"ha\"\n[lb]\n[api]\ncount = 1\n[data]\nengine = \"postgres\"\nreplicas = 2\n\
             [control]\ncount = 3\nstore = \"etcd\"\n",
        )
    })
    .await
    .expect("join");
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let lb = role(&status, "lb-1")["addrs"]["http"]
        .as_str()
        .expect("lb address")
        .to_string();
    let http = admin_client(&dir, &lb).await;
    let (pg1, pg2, pg3) = (
        server_pid(&dir, "pg-1"),
        server_pid(&dir, "pg-2"),
        server_pid(&dir, "pg-3"),
    );

    // The double fault: pg-2 misses acknowledged writes, then comes back as pg-1 and pg-3
    // freeze. The failover waits.
    signal_tree(pg2, Signal::SIGSTOP);
    commit_wal(&role(&status, "pg-1")["addrs"]["postgres"], 20_000).await;
    let mut acked = Vec::new();
    for n in 0..60 {
        acked.push(
            create(&http, &lb, n)
                .await
                .expect("a write with pg-3 alone"),
        );
    }
    signal_tree(pg1, Signal::SIGSTOP);
    signal_tree(pg3, Signal::SIGSTOP);
    signal_tree(pg2, Signal::SIGCONT);
    let waiting = async || {
        let view = control_view_of_leader(&http, &dir).await?;
        (view["waiting"]["reachable"] == 1 && view["cluster"]["primary"].is_null()).then_some(())
    };
    wait_for(&dir, Duration::from_secs(15), "the failover waits", waiting).await;

    // The leader dies in the middle of the failover: another one leads and keeps waiting.
    let (first, first_pid) = leader(&http, &dir).await.expect("a leader");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first_pid), Signal::SIGKILL)
        .expect("kill the leader");
    let (second, second_pid) =
        wait_for(&dir, Duration::from_secs(15), "a new leader", async || {
            leader(&http, &dir)
                .await
                .filter(|(name, pid)| *name != first || *pid != first_pid)
        })
        .await;
    wait_for(
        &dir,
        Duration::from_secs(10),
        "the new leader waits",
        waiting,
    )
    .await;

    // That one freezes: a third leads, still waiting, and nothing was promoted.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(second_pid), Signal::SIGSTOP)
        .expect("freeze the leader");
    let (third, _) = wait_for(
        &dir,
        Duration::from_secs(15),
        "a third leader",
        async || {
            leader(&http, &dir)
                .await
                .filter(|(name, _)| *name != second)
        },
    )
    .await;
    wait_for(
        &dir,
        Duration::from_secs(10),
        "the third leader waits",
        waiting,
    )
    .await;

    // pg-3 answers: the leader promotes it. Then the frozen controller wakes up: it no longer
    // leads and cannot publish what it decided before.
    signal_tree(pg3, Signal::SIGCONT);
    let done = wait_for(
        &dir,
        Duration::from_secs(20),
        "pg-3 is promoted",
        async || {
            let view = control_view_of_leader(&http, &dir).await?;
            (view["cluster"]["primary"] == "pg-3" && view["cluster"]["failover"].is_null())
                .then_some(view)
        },
    )
    .await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(second_pid), Signal::SIGCONT).expect("thaw");
    // Again an absence: the woken controller gets a window of six check intervals in which
    // publishing its stale decision would show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = control_view_of_leader(&http, &dir).await.expect("a view");
    assert_eq!(after["cluster"]["primary"], "pg-3", "{after:#}");
    assert!(
        after["cluster"]["version"].as_u64() >= done["cluster"]["version"].as_u64(),
        "{after:#}"
    );
    assert_ne!(third, second);

    // Every acknowledged write is on the new primary, and writes work again.
    let status = status_json(&dir);
    let pg3_addr = role(&status, "pg-3")["addrs"]["postgres"]
        .as_str()
        .expect("pg-3 address")
        .to_string();
    let (db, connection) = tokio_postgres::connect(
        &format!("postgresql://strata@{pg3_addr}/strata"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to the new primary");
    let driver = tokio::spawn(connection);
    let rows = db
        .query(
            "SELECT id::text FROM users WHERE profile->>'lastName' = 'DoubleFault'",
            &[],
        )
        .await
        .expect("query");
    let stored: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|l| !stored.contains(l.rsplit('/').next().unwrap_or_default()))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    drop(db);
    driver.abort();
    assert!(create(&http, &lb, 5000).await.is_ok(), "writes work again");
}

/// The leading controller's view (`GET /cluster`).
async fn control_view_of_leader(_: &reqwest::Client, dir: &std::path::Path) -> Option<Value> {
    let http = prober();
    let status = status_json(dir);
    for r in status["roles"].as_array()? {
        if r["kind"] != "control" || !r["alive"].as_bool().unwrap_or(false) {
            continue;
        }
        let addr = r["addrs"]["http"].as_str()?;
        let Ok(response) = http.get(format!("http://{addr}/cluster")).send().await else {
            continue;
        };
        let Ok(view) = response.json::<Value>().await else {
            continue;
        };
        if view["leading"] == true {
            return Some(view);
        }
    }
    None
}
