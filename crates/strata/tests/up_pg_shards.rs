//! Shard groups on PostgreSQL, run by `strata up`: `[data] engine = "postgres"`, `shards = 2`,
//! `spare_shards = 1`, `replicas = 1` gives three groups, each a primary and a streaming
//! replica (synchronous quorum) with a controller of its own. `strata status` shows each
//! group's primary and replica; `strata reshard` finds the groups' databases in the running
//! deployment.
//!
//! The drill pairs two faults: a resharding that moves slots from s1 to the spare s3 stops
//! after three cut-overs, and while it is stopped s1's primary is stalled under three writers
//! (SIGSTOP of its whole server: it neither answers nor dies, so the group must fail over — a
//! server killed outright may instead be restarted by its role before the controller decides).
//! s1 fails over to its replica (s2 and s3 are untouched), the resharding resumes and finishes
//! on the new primary, the stalled server is fenced and rejoins as a replica, and every
//! acknowledged write reads back, in the group the map names.

mod common;
use common::{Cleanup, admin_client, explain, role, status_json, strata, up_topology};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strata_core::user::UserId;

const TOPOLOGY: &str = "name = \"pg-shards\"\n[lb]\n[api]\ncount = 2\n\
    [data]\nengine = \"postgres\"\nshards = 2\nspare_shards = 1\nreplicas = 1\n\
    [control]\ncheck_interval_ms = 200\n";

/// What one writer knows of a user: the last name a write acknowledged, and names written
/// after it whose outcome is unknown (the request failed: it may or may not have committed).
#[derive(Default, Debug)]
struct Written {
    acked: String,
    maybe: Vec<String>,
}

/// Creates and rewrites users through `lb` until `stop`, counting acknowledgements in `acks`
/// and failures by status (0: no answer).
async fn write_until(
    http: reqwest::Client,
    lb: String,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
    writer: usize,
) -> Outcome {
    let mut users: BTreeMap<u64, Written> = BTreeMap::new();
    let mut failed: BTreeMap<u16, u64> = BTreeMap::new();
    let mut round = 0usize;
    while !stop.load(Ordering::SeqCst) && round < 50_000 {
        round += 1;
        let name = format!("W{writer}R{round}");
        let body = json!({"firstName": "Sharded", "lastName": name,
            "address": {"streetAddress": "1 Slot Street", "city": "Testville", "state": "TS", "postalCode": "00501"},
            "phoneNumbers": []});
        let ids: Vec<u64> = users.keys().copied().collect();
        let rewrite = (round.is_multiple_of(3) && !ids.is_empty()).then(|| ids[round % ids.len()]);
        let request = match rewrite {
            Some(id) => http.put(format!("http://{lb}/users/{id}")).json(&body),
            None => http.post(format!("http://{lb}/users")).json(&body),
        };
        let outcome = request.send().await;
        let status = match &outcome {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        match outcome {
            Ok(r) if r.status().is_success() => {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if let Some(id) = v["id"].as_u64() {
                    users.insert(
                        id,
                        Written {
                            acked: name,
                            maybe: Vec::new(),
                        },
                    );
                    acks.fetch_add(1, Ordering::SeqCst);
                }
            }
            _ => {
                *failed.entry(status).or_default() += 1;
                if let Some(id) = rewrite
                    && let Some(w) = users.get_mut(&id)
                {
                    w.maybe.push(name);
                }
            }
        }
    }
    (users, failed)
}

/// Reads every user back through the balancer: each shows its acknowledged name, or a later
/// name whose write's outcome was unknown.
async fn read_back(admin: &reqwest::Client, lb: &str, users: &BTreeMap<u64, Written>) {
    for (id, w) in users {
        let v: Value = admin
            .get(format!("http://{lb}/users/{id}"))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        let name = v["lastName"].as_str().unwrap_or("");
        assert!(
            name == w.acked || w.maybe.iter().any(|m| m == name),
            "user {id}: read {name:?}, acknowledged {:?} (then unknown {:?})",
            w.acked,
            w.maybe
        );
    }
}

/// What the writers wrote (by user) and which of their requests failed (by status).
type Outcome = (BTreeMap<u64, Written>, BTreeMap<u16, u64>);

/// Stops the writers and gathers their outcome.
async fn stop_writers(
    stop: &AtomicBool,
    writers: Vec<tokio::task::JoinHandle<Outcome>>,
) -> Outcome {
    stop.store(true, Ordering::SeqCst);
    let mut users: BTreeMap<u64, Written> = BTreeMap::new();
    let mut failed: BTreeMap<u16, u64> = BTreeMap::new();
    for w in writers {
        let (u, f) = w.await.expect("writer");
        users.extend(u);
        for (status, n) in f {
            *failed.entry(status).or_default() += n;
        }
    }
    (users, failed)
}

/// Waits until at least `n` writes were acknowledged (60 s at most).
async fn wait_acks(acks: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acks.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} writes acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `strata reshard --resume`, repeated while the deployment settles (90 s at most).
async fn resume(dir: &Path) -> std::process::Output {
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = strata(&["reshard", "--resume", "--json"], &d);
            if out.status.success() || Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    })
    .await
    .expect("join")
}

/// `n` writers through the balancer at `lb`: their stop flag, their acknowledgement count,
/// and their tasks.
fn start_writers(
    admin: &reqwest::Client,
    lb: &str,
    n: usize,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    Vec<tokio::task::JoinHandle<Outcome>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let writers = (0..n)
        .map(|w| {
            tokio::spawn(write_until(
                admin.clone(),
                lb.to_owned(),
                stop.clone(),
                acks.clone(),
                w,
            ))
        })
        .collect();
    (stop, acks, writers)
}

/// The spare s3 joins the map (no slots yet), and `strata reshard move --slots 0-1023 --to
/// s3` runs, stopped after three cut-overs of 16 slots.
async fn add_spare_and_stop_a_move_to_it(dir: &Path) {
    let added = strata(&["shard", "add-group", "s3"], dir);
    assert!(
        added.status.success(),
        "{}",
        explain("strata shard add-group", &added, dir)
    );
    let d = dir.to_path_buf();
    let stopped = tokio::task::spawn_blocking(move || {
        strata(
            &[
                "reshard",
                "--chunk-slots",
                "16",
                "--stop-after-cuts",
                "3",
                "--json",
                "move",
                "--slots",
                "0-1023",
                "--to",
                "s3",
            ],
            &d,
        )
    })
    .await
    .expect("join");
    assert!(
        stopped.status.success(),
        "{}",
        explain("strata reshard move (stopped)", &stopped, dir)
    );
    let report: Value = serde_json::from_slice(&stopped.stdout).expect("report");
    assert_eq!(report["finished"], false, "{report}");
    assert_eq!(report["cut_overs"], 3, "{report}");
}

/// `databaseGroups` entry of `group` in a status document.
fn group<'a>(status: &'a Value, group: &str) -> &'a Value {
    status["databaseGroups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["group"] == group))
        .unwrap_or_else(|| panic!("no database group {group} in {status:#}"))
}

/// Polls `strata status` until `check` holds, or fails after `seconds` with the last status.
fn wait_for_status(dir: &Path, seconds: u64, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let status = status_json(dir);
        if check(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {seconds} s\n{status:#}\n{}",
            common::logs(dir, 20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Each shard group of a status document with its slot count, in the map's order.
fn slots_of(status: &Value) -> Vec<(String, u64)> {
    status["shards"]["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("shard groups in status: {status:#}"))
        .iter()
        .map(|g| {
            (
                g["group"].as_str().unwrap_or("").to_owned(),
                g["slot_count"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The postmaster pid of a server of a shard group.
fn postmaster(dir: &Path, group: &str, node: &str) -> i32 {
    let pid = dir
        .join("postgres")
        .join(group)
        .join(node)
        .join("postmaster.pid");
    std::fs::read_to_string(&pid)
        .unwrap_or_else(|e| panic!("{}: {e}", pid.display()))
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("a pid on the first line")
}

/// The ids among `ids` stored in the database at `addr`.
async fn ids_in(addr: &str, ids: &[i64]) -> Vec<i64> {
    let url = format!("postgresql://strata@{addr}/strata");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to a primary");
    tokio::spawn(connection);
    client
        .query("SELECT id FROM users WHERE id = ANY($1)", &[&ids])
        .await
        .expect("SELECT")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The two deployments of this file run one after the other (each is a dozen processes).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_primary_killed_mid_resharding_fails_over_alone_and_nothing_acknowledged_is_lost() {
    let _serial = SERIAL.lock().await;
    let (_tmp, dir) = tokio::task::spawn_blocking(|| up_topology(TOPOLOGY))
        .await
        .expect("join");
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    assert_eq!(
        status["roles"].as_array().map(Vec::len),
        Some(1 + 2 + 6 + 3),
        "a balancer, 2 API servers, 3 groups of 2 servers, a controller per group: {status:#}"
    );
    for g in ["s1", "s2", "s3"] {
        let view = group(&status, g);
        assert_eq!(view["primary"], format!("pg-{g}-1"), "{status:#}");
        assert_eq!(
            view["replicas"][0]["name"],
            format!("pg-{g}-2"),
            "{status:#}"
        );
    }
    assert_eq!(
        slots_of(&status),
        [("s1".to_owned(), 2048), ("s2".to_owned(), 2048)],
        "the spare holds no slots yet"
    );
    let lb = role(&status, "lb-1")["addrs"]["http"]
        .as_str()
        .expect("lb address")
        .to_owned();
    let admin = admin_client(&dir, &lb).await;
    let john: Value = admin
        .get(format!("http://{lb}/users/12"))
        .send()
        .await
        .expect("GET /users/12")
        .json()
        .await
        .expect("json");
    assert_eq!(john["firstName"], "John", "{john}");

    // `strata seed --dir` loads into the deployment's groups, each user in its mapped group.
    let users_in = |status: &Value| -> u64 {
        status["shards"]["groups"]
            .as_array()
            .map(|gs| gs.iter().filter_map(|g| g["users"].as_u64()).sum())
            .unwrap_or(0)
    };
    let before = users_in(&status_json(&dir)); // the admin's account is a user too
    let seeded = strata(&["seed", "--users", "300", "--batch-size", "100"], &dir);
    assert!(
        seeded.status.success(),
        "{}",
        explain("strata seed --dir", &seeded, &dir)
    );
    let status = status_json(&dir);
    assert_eq!(users_in(&status), before + 300, "{status:#}");
    let per_group: Vec<u64> = status["shards"]["groups"]
        .as_array()
        .map(|gs| gs.iter().filter_map(|g| g["users"].as_u64()).collect())
        .unwrap_or_default();
    assert!(
        per_group.len() == 2 && per_group.iter().all(|&n| n > 100),
        "300 users hashed over 2 groups: {per_group:?}"
    );

    let (stop, acks, writers) = start_writers(&admin, &lb, 3);
    wait_acks(&acks, 60).await;

    // The spare joins the map (no slots yet), then fault 1: a resharding s1 → s3 stopped
    // after three cut-overs.
    add_spare_and_stop_a_move_to_it(&dir).await;

    // Fault 2, during the first: s1's primary stalled, the postmaster and every backend.
    let s2_primary_pid = postmaster(&dir, "s2", "pg-s2-1");
    let at = acks.load(Ordering::SeqCst);
    let stalled = postmaster(&dir, "s1", "pg-s1-1") as u32;
    strata_engines::process::signal_tree(stalled, nix::sys::signal::Signal::SIGSTOP);
    let d = dir.clone();
    tokio::task::spawn_blocking(move || {
        wait_for_status(&d, 60, "s1 fails over to pg-s1-2", |s| {
            group(s, "s1")["primary"] == "pg-s1-2"
        })
    })
    .await
    .expect("join");
    // Fenced, its role kills it; let whatever is left of it run again.
    strata_engines::process::signal_tree(stalled, nix::sys::signal::Signal::SIGCONT);
    wait_acks(&acks, at + 60).await;

    // The resharding resumes on s1's new primary (retried while the group settles).
    let resumed = resume(&dir).await;
    assert!(
        resumed.status.success(),
        "{}",
        explain("strata reshard --resume", &resumed, &dir)
    );
    let report: Value = serde_json::from_slice(&resumed.stdout).expect("report");
    assert_eq!(report["finished"], true, "{report}");
    wait_acks(&acks, acks.load(Ordering::SeqCst) + 30).await;
    let (users, failed) = stop_writers(&stop, writers).await;
    eprintln!(
        "{} users written, failed requests by status {failed:?}",
        users.len()
    );
    // Writes that met the failover or a cut-over's fence are refused with 503, never
    // acknowledged; nothing else fails.
    assert!(failed.keys().all(|&s| s == 503), "{failed:?}");

    // The killed server rejoins as a replica; the other groups never moved.
    let d = dir.clone();
    let status = tokio::task::spawn_blocking(move || {
        wait_for_status(&d, 120, "pg-s1-1 rejoins s1 as a replica", |s| {
            group(s, "s1")["replicas"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["name"] == "pg-s1-1"))
        })
    })
    .await
    .expect("join");
    for g in ["s2", "s3"] {
        assert_eq!(
            group(&status, g)["primary"],
            format!("pg-{g}-1"),
            "{status:#}"
        );
    }
    assert_eq!(
        postmaster(&dir, "s2", "pg-s2-1"),
        s2_primary_pid,
        "s2's primary was never restarted"
    );
    assert_eq!(
        slots_of(&status),
        [
            ("s1".to_owned(), 1024),
            ("s2".to_owned(), 2048),
            ("s3".to_owned(), 1024)
        ],
        "{status:#}"
    );

    // Every acknowledged write reads back (a later write of unknown outcome may have won).
    assert!(
        users.len() > 100,
        "the writers wrote ({} users)",
        users.len()
    );
    read_back(&admin, &lb, &users).await;
    // … and each is in the group the map names, on that group's primary.
    let map = strata_store::shard::source::read_map_file(&dir.join("data").join("shard-map.json"))
        .expect("the shard map");
    for g in ["s1", "s2", "s3"] {
        let primary = group(&status, g)["primary"]
            .as_str()
            .expect("a primary")
            .to_owned();
        let addr = role(&status, &primary)["addrs"]["postgres"]
            .as_str()
            .expect("postgres address")
            .to_owned();
        let expected: Vec<i64> = users
            .keys()
            .filter(|id| map.group_of(UserId(**id)).to_string() == g)
            .map(|id| *id as i64)
            .collect();
        let found = ids_in(&addr, &expected).await;
        assert_eq!(
            found.len(),
            expected.len(),
            "group {g} holds {} of its {} acknowledged users",
            found.len(),
            expected.len()
        );
    }
}

/// The control plane on etcd (one member, so that killing it takes the map away entirely).
const ETCD_TOPOLOGY: &str = "name = \"pg-shards-etcd\"\n[lb]\n[api]\ncount = 2\n\
    [data]\nengine = \"postgres\"\nshards = 2\nspare_shards = 1\nreplicas = 1\n\
    [control]\nstore = \"etcd\"\ncount = 1\ncheck_interval_ms = 200\n";

/// With `[control] store = "etcd"` the shard map lives in etcd (`/strata/NAME/shard-map`), not
/// in the data directory: `strata seed`, `status`, `shard` and `reshard` find it there, and
/// every router follows it. The second fault during the first: while a resharding is stopped
/// after three cut-overs, the control plane's only etcd member is killed with SIGKILL under
/// two writers; its role restarts it with its data, the resharding resumes and finishes, and
/// every acknowledged write reads back through the balancer — after the clean-up deleted the
/// moved rows from s1, which a router still on an old map would have read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_control_plane_on_etcd_the_map_lives_there_and_routers_follow_it_through_a_killed_member()
 {
    let _serial = SERIAL.lock().await;
    let (_tmp, dir) = tokio::task::spawn_blocking(|| up_topology(ETCD_TOPOLOGY))
        .await
        .expect("join");
    let _cleanup = Cleanup(&dir);
    let map_file = dir.join("data").join("shard-map.json");
    assert!(!map_file.exists(), "the map is in etcd, not in DIR/data");
    let status = status_json(&dir);
    assert_eq!(
        slots_of(&status),
        [("s1".to_owned(), 2048), ("s2".to_owned(), 2048)],
        "status reads the map from etcd: {status:#}"
    );
    let seeded = strata(&["seed", "--users", "200", "--batch-size", "100"], &dir);
    assert!(
        seeded.status.success(),
        "{}",
        explain("strata seed --dir", &seeded, &dir)
    );

    let lb = role(&status, "lb-1")["addrs"]["http"]
        .as_str()
        .expect("lb address")
        .to_owned();
    let admin = admin_client(&dir, &lb).await;
    let (stop, acks, writers) = start_writers(&admin, &lb, 2);
    wait_acks(&acks, 40).await;
    add_spare_and_stop_a_move_to_it(&dir).await;

    // Fault 2, during the first: the etcd server killed outright; its role restarts it.
    let pid_file = dir.join("etcd").join("etcd-1").join("etcd.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
        .trim()
        .parse()
        .expect("a pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill etcd");
    let at = acks.load(Ordering::SeqCst);
    wait_acks(&acks, at + 40).await;
    let resumed = resume(&dir).await;
    assert!(
        resumed.status.success(),
        "{}",
        explain("strata reshard --resume", &resumed, &dir)
    );
    let report: Value = serde_json::from_slice(&resumed.stdout).expect("report");
    assert_eq!(report["finished"], true, "{report}");
    wait_acks(&acks, acks.load(Ordering::SeqCst) + 30).await;
    let (users, failed) = stop_writers(&stop, writers).await;
    eprintln!(
        "{} users written, failed requests by status {failed:?}",
        users.len()
    );
    assert!(failed.keys().all(|&s| s == 503), "{failed:?}");

    let status = status_json(&dir);
    assert_eq!(
        slots_of(&status),
        [
            ("s1".to_owned(), 1024),
            ("s2".to_owned(), 2048),
            ("s3".to_owned(), 1024)
        ],
        "{status:#}"
    );
    assert!(
        role(&status, "etcd-1")["restarts"].as_u64() >= Some(1),
        "{status:#}"
    );
    assert!(!map_file.exists(), "still no map file");
    assert!(
        users.len() > 50,
        "the writers wrote ({} users)",
        users.len()
    );
    read_back(&admin, &lb, &users).await;
}
