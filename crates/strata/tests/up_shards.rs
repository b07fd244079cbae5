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

    // Each address signed up twice at once, through the two servers.
    let mut tasks = Vec::new();
    for i in 0..PAIRS {
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
    let mut created = vec![0; PAIRS];
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
