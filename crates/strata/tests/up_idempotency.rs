//! Idempotency keys end to end: 60 `POST /users`, each with its own `Idempotency-Key`, go
//! through the balancer to two API servers, eight at a time, and one server is `kill -9`ed while
//! they are in flight (the balancer moves a request that got no answer byte to the other server,
//! which finds the dead server's claim). Then every key is sent again, as a client that never saw
//! its answer would, until it is answered 201. Every key ends with exactly one user: none lost,
//! none created twice.

mod common;
use common::{Cleanup, admin_client, role, status_json, up_topology};

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const KEYS: usize = 60;
const IN_FLIGHT: usize = 8;

fn profile(i: usize) -> Value {
    json!({"firstName": "Idem", "lastName": format!("Key{i}"),
        "address": {"streetAddress": "1 Retry Road", "city": "Testville", "state": "TS", "postalCode": "00501"},
        "phoneNumbers": []})
}

/// One attempt: the status and, for a 201, the created id.
async fn send(http: &reqwest::Client, lb: &str, i: usize) -> Result<(u16, Option<u64>), String> {
    let r = http
        .post(format!("http://{lb}/users"))
        .header("idempotency-key", format!("\"e2e-{i}\""))
        .json(&profile(i))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    Ok((status, body["id"].as_u64()))
}

/// Users per last name (`Key<i>`), over every page (bounded).
async fn users_by_key(http: &reqwest::Client, lb: &str) -> BTreeMap<String, Vec<u64>> {
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let url = match &cursor {
            Some(c) => format!("http://{lb}/users?limit=100&cursor={c}"),
            None => format!("http://{lb}/users?limit=100"),
        };
        let page: Value = http
            .get(url)
            .send()
            .await
            .expect("GET /users")
            .json()
            .await
            .expect("page");
        for u in page["users"].as_array().expect("users") {
            if u["firstName"] == "Idem" {
                let key = u["lastName"].as_str().unwrap_or_default().to_owned();
                by_key
                    .entry(key)
                    .or_default()
                    .push(u["id"].as_u64().unwrap_or(0));
            }
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return by_key,
        }
    }
    panic!("more than 1000 pages of users");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_posts_through_the_balancer_create_each_user_once_when_a_server_dies() {
    let (_tmp, dir) = up_topology("[lb]\n[api]\ncount = 2\n");
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let lb = role(&status, "lb-1")["addrs"]["http"]
        .as_str()
        .expect("lb address")
        .to_string();
    let victim = role(&status, "api-2")["pid"].as_i64().expect("pid") as i32;
    let http = admin_client(&dir, &lb).await;

    // First pass: eight requests in flight at a time; api-2 dies after the first sixteen start.
    let mut first: BTreeMap<usize, Result<(u16, Option<u64>), String>> = BTreeMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0;
    let mut killed = false;
    while first.len() < KEYS {
        while tasks.len() < IN_FLIGHT && next < KEYS {
            let (http, lb) = (http.clone(), lb.clone());
            let i = next;
            tasks.spawn(async move { (i, send(&http, &lb, i).await) });
            next += 1;
        }
        if next >= 16 && !killed {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(victim),
                nix::sys::signal::Signal::SIGKILL,
            )
            .expect("kill -9 api-2");
            killed = true;
        }
        match tasks.join_next().await {
            Some(Ok((i, outcome))) => {
                first.insert(i, outcome);
            }
            Some(Err(e)) => panic!("a request task failed: {e}"),
            None => break,
        }
    }
    let first_created = first.values().filter(|o| matches!(o, Ok((201, _)))).count();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for o in first.values() {
        let what = match o {
            Ok((status, _)) => status.to_string(),
            Err(_) => "no answer".to_owned(),
        };
        *seen.entry(what).or_default() += 1;
    }
    eprintln!("first pass, answers by status: {seen:?}");

    // Second pass: every key again, as a client that did not see (or trust) its answer would,
    // until each is answered 201 (409 while a claim lives, 5xx or no answer while a server is
    // down). The dead server's claims lapse after 15 s.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut answers: BTreeMap<usize, u64> = BTreeMap::new();
    let mut last: BTreeMap<usize, String> = BTreeMap::new();
    for _round in 0..400 {
        let pending: Vec<usize> = (0..KEYS).filter(|i| !answers.contains_key(i)).collect();
        for i in pending {
            match send(&http, &lb, i).await {
                Ok((201, Some(id))) => {
                    answers.insert(i, id);
                }
                Ok((status, _)) if status == 409 || status >= 500 => {
                    last.insert(i, status.to_string());
                }
                Ok((status, _)) => panic!("key {i}: a repeat must not get {status}"),
                Err(e) => {
                    last.insert(i, e);
                }
            }
        }
        if answers.len() == KEYS || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        answers.len(),
        KEYS,
        "every key is answered 201 in the end; still failing: {last:?}{}",
        common::logs(&dir, 30)
    );

    // Each key created exactly one user, the one its answers name.
    let by_key = users_by_key(&http, &lb).await;
    let mut faults = Vec::new();
    for (i, id) in &answers {
        match by_key.get(&format!("Key{i}")) {
            Some(ids) if ids == &vec![*id] => {}
            other => faults.push(format!("key {i}: answered {id}, stored {other:?}")),
        }
    }
    assert!(faults.is_empty(), "one user per key: {faults:#?}");
    assert_eq!(by_key.len(), KEYS, "no user without a key's answer");
    let distinct: HashSet<u64> = answers.values().copied().collect();
    assert_eq!(distinct.len(), KEYS, "every key its own user");
    // A 201 in the first pass named the same user as every later answer for its key.
    for (i, o) in &first {
        if let Ok((201, id)) = o {
            assert_eq!(*id, answers.get(i).copied(), "key {i}: answers differ");
        }
    }
    assert!(first_created > 0, "the first pass created users: {first:?}");
    let now = status_json(&dir);
    assert_ne!(
        role(&now, "api-2")["pid"].as_i64(),
        Some(i64::from(victim)),
        "api-2 was killed"
    );
}
