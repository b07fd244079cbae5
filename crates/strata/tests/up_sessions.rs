//! Stateless web tier, end to end: log in once through the balancer, make 100 authenticated
//! requests that land on all three API servers, `kill -9` two of them midway. Every request
//! succeeds (directly or by the balancer moving it on) and no one logs in again: the session
//! lives in the shared store, the signing keys in the deployment's key directory.

mod common;
use common::{Cleanup, role, status_json, up_topology};

use std::time::Duration;

use serde_json::{Value, json};

/// Requests each API server has received through the balancer, by backend name.
async fn per_backend(http: &reqwest::Client, admin: &str) -> Vec<(String, u64)> {
    let view: Value = http
        .get(format!("http://{admin}/admin/backends"))
        .send()
        .await
        .expect("GET /admin/backends")
        .json()
        .await
        .expect("json");
    view["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap_or_default().to_string(),
                b["requests"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_server_serves_any_request_and_two_dying_log_no_one_out() {
    let (_tmp, dir) = up_topology("[lb]\n[api]\ncount = 3\n");
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let lb = role(&status, "lb-1")["addrs"]["http"]
        .as_str()
        .expect("lb address")
        .to_string();
    let admin = role(&status, "lb-1")["addrs"]["admin"]
        .as_str()
        .expect("lb admin address")
        .to_string();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // Sign up and log in once, through the balancer.
    let profile = json!({"firstName": "Sam", "lastName": "Stateless",
        "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"},
        "phoneNumbers": []});
    let created = http
        .post(format!("http://{lb}/accounts"))
        .json(&json!({"email": "sam@example.com", "password": "any server will do", "profile": profile}))
        .send()
        .await
        .expect("POST /accounts");
    assert_eq!(created.status(), 201);
    let me = created.json::<Value>().await.expect("json")["id"]
        .as_u64()
        .expect("id");
    let login: Value = http
        .post(format!("http://{lb}/sessions"))
        .json(&json!({"email": "sam@example.com", "password": "any server will do"}))
        .send()
        .await
        .expect("POST /sessions")
        .json()
        .await
        .expect("json");
    let auth = format!("Bearer {}", login["access_token"].as_str().expect("token"));
    let before = per_backend(&http, &admin).await;

    let mut failures = Vec::new();
    let mut after_first_half = Vec::new();
    let mut killed: Vec<i64> = Vec::new();
    for i in 0..100 {
        if i == 50 {
            after_first_half = per_backend(&http, &admin).await;
            // Two of the three API servers die at once.
            let status = status_json(&dir);
            killed = ["api-2", "api-3"]
                .iter()
                .map(|n| role(&status, n)["pid"].as_i64().expect("pid"))
                .collect();
            for name in ["api-2", "api-3"] {
                let pid = role(&status, name)["pid"].as_i64().expect("pid") as i32;
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .expect("kill -9");
            }
        }
        // Reads of my sessions and writes of my own profile (PUT: idempotent), alternately.
        let response = if i % 2 == 0 {
            http.get(format!("http://{lb}/sessions"))
                .header("authorization", &auth)
                .send()
                .await
        } else {
            let mut mine = profile.clone();
            mine["firstName"] = json!(format!("Sam{i}"));
            http.put(format!("http://{lb}/users/{me}"))
                .header("authorization", &auth)
                .json(&mine)
                .send()
                .await
        };
        match response {
            Ok(r) if r.status() == 200 => {}
            Ok(r) => failures.push(format!(
                "request {i}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            )),
            Err(e) => failures.push(format!("request {i}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "every authenticated request succeeds without a new login: {failures:#?}{}",
        common::logs(&dir, 20)
    );
    // The two really died (the supervisor runs new processes in their place).
    let now = status_json(&dir);
    for (name, old) in ["api-2", "api-3"].iter().zip(&killed) {
        assert_ne!(
            role(&now, name)["pid"].as_i64(),
            Some(*old),
            "{name} was killed"
        );
    }
    // The first half landed on all three servers: the token was accepted by each.
    for ((name, b), (_, a)) in before.iter().zip(&after_first_half) {
        assert!(
            a > b,
            "{name} served some of the first 50 requests: {before:?} -> {after_first_half:?}"
        );
    }
    // The last write is the one that stuck.
    let got: Value = http
        .get(format!("http://{lb}/users/{me}"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(got["firstName"], "Sam99");

    // The refresh token, too, works on whichever server takes it.
    let refreshed = http
        .post(format!("http://{lb}/sessions/refresh"))
        .json(&json!({"refresh_token": login["refresh_token"]}))
        .send()
        .await
        .expect("refresh");
    assert_eq!(refreshed.status(), 200, "{}", common::logs(&dir, 20));
}

/// `KEYS pattern` on a Redis at `addr`, over RESP.
fn redis_keys(addr: &str, pattern: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to Redis");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s.write_all(format!("*2\r\n$4\r\nKEYS\r\n${}\r\n{pattern}\r\n", pattern.len()).as_bytes())
        .expect("send");
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_in_a_durable_redis_survive_its_kill() {
    let (_tmp, dir) = up_topology("[lb]\n[api]\ncount = 3\n[sessions]\nengine = \"redis\"\n");
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let lb = role(&status, "lb-1")["addrs"]["http"]
        .as_str()
        .expect("lb address")
        .to_string();
    let redis = role(&status, "sessions-1")["addrs"]["redis"]
        .as_str()
        .expect("the session Redis announces its address")
        .to_string();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let profile = json!({"firstName": "Rae", "lastName": "Dis",
        "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"}});
    let r = http
        .post(format!("http://{lb}/accounts"))
        .json(&json!({"email": "rae@example.com", "password": "kept in redis", "profile": profile}))
        .send()
        .await
        .expect("POST /accounts");
    assert_eq!(r.status(), 201);
    let login: Value = http
        .post(format!("http://{lb}/sessions"))
        .json(&json!({"email": "rae@example.com", "password": "kept in redis"}))
        .send()
        .await
        .expect("POST /sessions")
        .json()
        .await
        .expect("json");
    let sid = login["session_id"]
        .as_str()
        .expect("session id")
        .to_string();
    let auth = format!("Bearer {}", login["access_token"].as_str().expect("token"));
    assert!(
        redis_keys(&redis, "strata:session:*").contains(&sid),
        "the session is kept in the session Redis"
    );

    // kill -9 the Redis server itself (the child of the sessions-1 role).
    let role_pid = role(&status, "sessions-1")["pid"].as_i64().expect("pid");
    let children = std::fs::read_to_string(format!("/proc/{role_pid}/task/{role_pid}/children"))
        .expect("children of the sessions role");
    let redis_pid: i32 = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the redis-server pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(redis_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");

    // Once it is back (same port, its append-only file replayed), the same token works: the
    // acknowledged login was not lost, and no one logs in again.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut statuses = Vec::new();
    loop {
        let r = http
            .get(format!("http://{lb}/sessions"))
            .header("authorization", &auth)
            .send()
            .await
            .expect("GET /sessions");
        statuses.push(r.status().as_u16());
        if r.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session never came back: {statuses:?}{}",
            common::logs(&dir, 20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "while the store is down requests get 503, never a wrong answer: {statuses:?}"
    );
    let refreshed = http
        .post(format!("http://{lb}/sessions/refresh"))
        .json(&json!({"refresh_token": login["refresh_token"]}))
        .send()
        .await
        .expect("refresh");
    assert_eq!(refreshed.status(), 200, "{}", common::logs(&dir, 20));
}

/// The address of my current session, as `GET /sessions` at `base` lists it.
async fn session_ip(http: &reqwest::Client, base: &str, login: &Value) -> Value {
    let list: Value = http
        .get(format!("http://{base}/sessions"))
        .header(
            "authorization",
            format!("Bearer {}", login["access_token"].as_str().expect("token")),
        )
        .send()
        .await
        .expect("GET /sessions")
        .json()
        .await
        .expect("json");
    list["sessions"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["current"] == true))
        .map(|s| s["ip"].clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_balancer_names_the_client_to_the_api_servers() {
    let (_tmp, dir) = up_topology("[lb]\n[api]\ncount = 1\n");
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let addr = |name: &str| {
        role(&status, name)["addrs"]["http"]
            .as_str()
            .expect("address")
            .to_string()
    };
    let (lb, api) = (addr("lb-1"), addr("api-1"));
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().ok())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    };
    let profile = json!({"firstName": "Cy", "lastName": "Client",
        "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"},
        "phoneNumbers": []});
    let account =
        json!({"email": "cy@example.com", "password": "from where I am", "profile": profile});
    let created = from("127.0.0.1")
        .post(format!("http://{lb}/accounts"))
        .json(&account)
        .send()
        .await
        .expect("POST /accounts");
    assert_eq!(created.status(), 201);
    let login = |http: reqwest::Client, base: String| async move {
        let r = http
            .post(format!("http://{base}/sessions"))
            .header("x-forwarded-for", "203.0.113.7")
            .json(&json!({"email": "cy@example.com", "password": "from where I am"}))
            .send()
            .await
            .expect("POST /sessions");
        assert_eq!(r.status(), 201);
        let login: Value = r.json().await.expect("json");
        session_ip(&http, &base, &login).await
    };
    // Through the balancer, from 127.0.0.3: the API server (whose peer is the balancer) is told
    // the real client; what the client wrote in X-Forwarded-For itself is not believed.
    assert_eq!(
        login(from("127.0.0.3"), lb.clone()).await,
        json!("127.0.0.3"),
        "{}",
        common::logs(&dir, 20)
    );
    // Straight to the API port: a local process names no address but its own.
    assert_eq!(
        login(from("127.0.0.1"), api.clone()).await,
        json!("127.0.0.1")
    );
}
