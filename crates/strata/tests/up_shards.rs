//! Shard groups end to end: `strata up` with `[data] shards = 4` on the embedded engine (one
//! SQLite file per group). `strata status` shows each group and its slots; the canonical user
//! is served; sign-ups of one email through two different API servers at once give exactly one
//! account per address; `GET /users` merges every group in id order, and every user is counted
//! once across the groups.

mod common;
use common::{Cleanup, role, status_json, up_topology};

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

const PAIRS: usize = 60;

fn profile(i: usize) -> Value {
    json!({"firstName": "Shard", "lastName": format!("Racer{i}"),
        "address": {"streetAddress": "1 Slot Street", "city": "Testville", "state": "TS", "postalCode": "00501"},
        "phoneNumbers": []})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_spread_over_four_shard_groups_and_each_email_is_won_once() {
    let (_tmp, dir) = up_topology("[lb]\n[api]\ncount = 2\n[data]\nshards = 4\n");
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let groups = status["shards"]["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("status shows shard groups: {status:#}"));
    assert_eq!(groups.len(), 4, "{status:#}");
    for (i, g) in groups.iter().enumerate() {
        assert_eq!(g["group"], format!("s{}", i + 1));
        assert_eq!(g["slot_count"], 1024);
    }
    let addr = |name: &str| {
        role(&status, name)["addrs"]["http"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} address"))
            .to_owned()
    };
    let (lb, api1, api2) = (addr("lb-1"), addr("api-1"), addr("api-2"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");

    let john: Value = http
        .get(format!("http://{lb}/users/12"))
        .send()
        .await
        .expect("GET /users/12")
        .json()
        .await
        .expect("json");
    assert_eq!(john["firstName"], "John", "{john}");

    // Each address signed up twice at once, through the two servers; a few addresses at a
    // time (password hashing is deliberately expensive, and bounded per server).
    let mut created = vec![0; PAIRS];
    for batch in (0..PAIRS).collect::<Vec<_>>().chunks(4) {
        let mut tasks = Vec::new();
        for &i in batch {
            for server in [api1.clone(), api2.clone()] {
                let http = http.clone();
                tasks.push(tokio::spawn(async move {
                    let r = http
                        .post(format!("http://{server}/accounts"))
                        .json(&json!({"email": format!("racer{i}@example.com"),
                            "password": "a long enough password", "profile": profile(i)}))
                        .send()
                        .await
                        .expect("POST /accounts");
                    let status = r.status().as_u16();
                    (i, status, r.text().await.unwrap_or_default())
                }));
            }
        }
        for t in tasks {
            let (i, status, body) = t.await.expect("task");
            match status {
                201 => created[i] += 1,
                409 => {}
                other => panic!(
                    "pair {i}: unexpected status {other}: {body}\n{}",
                    common::logs(&dir, 30)
                ),
            }
        }
    }
    assert!(created.iter().all(|&n| n == 1), "{created:?}");

    // Every page in id order, every user once.
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            Some(c) => format!("http://{lb}/users?limit=7&cursor={c}"),
            None => format!("http://{lb}/users?limit=7"),
        };
        let page: Value = http
            .get(url)
            .send()
            .await
            .expect("GET /users")
            .json()
            .await
            .expect("page");
        ids.extend(
            page["users"]
                .as_array()
                .expect("users")
                .iter()
                .map(|u| u["id"].as_u64().expect("id")),
        );
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in order: {ids:?}");
    assert_eq!(ids.len(), 1 + PAIRS, "John and one user per address");
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len());

    // The groups' own counts add up to the same users, spread over more than one group.
    let status = status_json(&dir);
    let counts: Vec<u64> = status["shards"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["users"].as_u64().expect("a count"))
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), ids.len() as u64, "{counts:?}");
    assert!(counts.iter().filter(|&&n| n > 0).count() >= 3, "{counts:?}");
}

/// Writes through the balancer until `stop`: creates and rewrites users, recording each
/// acknowledged write (id → last name) and counting the rest by status.
async fn write_until(
    http: reqwest::Client,
    lb: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    writer: usize,
) -> (
    std::collections::BTreeMap<u64, String>,
    std::collections::BTreeMap<u16, u64>,
) {
    use std::sync::atomic::Ordering;
    let mut acked = std::collections::BTreeMap::new();
    let mut failed: std::collections::BTreeMap<u16, u64> = std::collections::BTreeMap::new();
    let mut round = 0usize;
    while !stop.load(Ordering::SeqCst) && round < 20_000 {
        round += 1;
        let name = format!("W{writer}R{round}");
        let body = json!({"firstName": "Reshard", "lastName": name,
            "address": {"streetAddress": "1 Slot Street", "city": "Testville", "state": "TS", "postalCode": "00501"},
            "phoneNumbers": []});
        let existing: Vec<u64> = acked.keys().copied().collect();
        let request = if round.is_multiple_of(3) && !existing.is_empty() {
            let id = existing[round % existing.len()];
            http.put(format!("http://{lb}/users/{id}")).json(&body)
        } else {
            http.post(format!("http://{lb}/users")).json(&body)
        };
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if let Some(id) = v["id"].as_u64() {
                    acked.insert(id, name);
                }
            }
            Ok(r) => *failed.entry(r.status().as_u16()).or_default() += 1,
            Err(_) => *failed.entry(0).or_default() += 1,
        }
    }
    (acked, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resharder_killed_mid_cut_over_resumes_and_no_acknowledged_write_is_lost() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (_tmp, dir) = up_topology("[lb]\n[api]\ncount = 2\n[data]\nshards = 2\n");
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let lb = role(&status, "lb-1")["addrs"]["http"]
        .as_str()
        .expect("lb address")
        .to_owned();
    let data = dir.join("data");
    let seeded = std::process::Command::new(common::STRATA)
        .args(["seed", "--users", "4000", "--data"])
        .arg(&data)
        .output()
        .expect("seed");
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let admin = common::admin_client(&dir, &lb).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| tokio::spawn(write_until(admin.clone(), lb.clone(), stop.clone(), w)))
        .collect();
    // The resharder, killed -9 once it has cut some slots over.
    let mut resharder = std::process::Command::new(common::STRATA)
        .args(["reshard", "--shards", "4", "--chunk-slots", "8", "--dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the resharder");
    let journal = data.join("reshard.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        let j: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if j["pauses_ms"].as_array().is_some_and(|p| p.len() >= 3) {
            break;
        }
        assert!(
            resharder.try_wait().expect("poll").is_none(),
            "the resharder finished before it could be killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no cut-over within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    resharder.kill().expect("kill -9 the resharder");
    let _ = resharder.wait();
    assert!(journal.exists(), "the journal outlives the resharder");

    let resumed = common::strata(&["reshard", "--resume", "--json"], &dir);
    assert!(
        resumed.status.success(),
        "{}",
        common::explain("strata reshard --resume", &resumed, &dir)
    );
    let report: Value = serde_json::from_slice(&resumed.stdout).expect("report");
    assert_eq!(report["finished"], true, "{report}");
    assert_eq!(report["groups"], 4, "{report}");
    stop.store(true, Ordering::SeqCst);

    let mut acked = std::collections::BTreeMap::new();
    let mut failed: std::collections::BTreeMap<u16, u64> = std::collections::BTreeMap::new();
    for w in writers {
        let (a, f) = w.await.expect("writer");
        acked.extend(a);
        for (status, n) in f {
            *failed.entry(status).or_default() += n;
        }
    }
    assert!(
        acked.len() > 50,
        "the writers wrote ({} acknowledged)",
        acked.len()
    );
    // A write that met the killed resharder's fence waited and then may have been refused
    // with 503 (never acknowledged); nothing else fails.
    assert!(failed.keys().all(|&s| s == 503), "{failed:?}");
    for (id, name) in &acked {
        let v: Value = admin
            .get(format!("http://{lb}/users/{id}"))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        assert_eq!(v["lastName"], name.as_str(), "user {id}");
    }
    let status = status_json(&dir);
    let groups = status["shards"]["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 4);

    // Impossible requests: refused with the reason, a non-zero exit, nothing moved.
    let map_before = std::fs::read_to_string(data.join("shard-map.json")).expect("map");
    for (args, reason) in [
        (
            &["reshard", "--shards", "3"][..],
            "cannot merge 4 shard groups into 3",
        ),
        (
            &["reshard", "move", "--slots", "4000-5000", "--to", "s1"][..],
            "slot 5000 is past the last slot",
        ),
        (
            &["shard", "pin", "12", "--group", "nowhere"][..],
            "there is no shard group nowhere",
        ),
        (&["reshard", "--abort"][..], "no resharding is in progress"),
    ] {
        let out = common::strata(args, &dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
    let map_after = std::fs::read_to_string(data.join("shard-map.json")).expect("map");
    assert_eq!(map_before, map_after, "a refused request changed the map");
    let total: u64 = groups
        .iter()
        .map(|g| g["users"].as_u64().expect("count"))
        .sum();
    // John, the seeded users, the admin, and each acknowledged create once.
    let created = acked.len() as u64;
    assert_eq!(total, 1 + 4000 + 1 + created, "{groups:#?}");
}
