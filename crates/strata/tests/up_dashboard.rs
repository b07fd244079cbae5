//! The live dashboard in a topology: `[observe] dashboard = true` runs `dashboard-1`, which
//! serves its page, a snapshot of every role and tier, and server-sent events; the api tier's
//! requests per second follow real traffic through the balancer; an admin's token (checked by
//! an API server) kills api-2, which the supervisor brings back on a new pid, and restarts
//! worker-1, while a request without a token (401), a non-admin's (403), an unknown role (404)
//! and the dashboard itself (409) are refused; the trace view gathers one request's spans from
//! the balancer and the API server (400 for a malformed id, 404 for one no role keeps); a freeze of api-1 shows it frozen and unhealthy
//! until a resume brings the same process back, and a freeze of a frozen role or a resume of a
//! running one is a 409 naming the role parameter; a drain takes api-2 out of the balancer's
//! rotation (its request counter there stands still while api-1 serves) and shows it drained,
//! an undrain puts it back, and a drain of a worker, of the balancer or of an unknown role is
//! refused naming the role parameter; a chaos run (without faults) started from the dashboard
//! ends with its verdict in the snapshot, one run at a time. With a replicated PostgreSQL data
//! tier the snapshot shows the cluster: pg-1 the primary, pg-2 its replica and how many bytes
//! behind it is; the page draws it.

mod common;

use std::time::{Duration, Instant};

use common::{Cleanup, admin_client, role, status_json, up_topology};
use serde_json::Value;

const TOPOLOGY: &str = "name = \"watched\"\n[lb]\n[api]\ncount = 2\n[workers]\ncount = 1\n[observe]\ndashboard = true\n";

async fn snapshot(http: &reqwest::Client, dash: &str) -> Value {
    let r = http
        .get(format!("http://{dash}/api/snapshot"))
        .send()
        .await
        .expect("GET /api/snapshot");
    assert_eq!(r.status(), 200);
    r.json().await.expect("a JSON snapshot")
}

fn snap_role<'a>(snap: &'a Value, name: &str) -> &'a Value {
    snap["roles"]
        .as_array()
        .and_then(|roles| roles.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {snap:#}"))
}

/// A tier's latest requests per second in a snapshot.
fn tier_rps(snap: &Value, tier: &str) -> f64 {
    snap["tiers"]
        .as_array()
        .and_then(|tiers| tiers.iter().find(|t| t["tier"] == tier))
        .and_then(|t| t["series"].as_array())
        .and_then(|s| s.iter().rev().find_map(|p| p["rps"].as_f64()))
        .unwrap_or(0.0)
}

/// An access token from the dashboard's `POST /api/login`.
async fn login(http: &reqwest::Client, dash: &str, email: &str, password: &str) -> String {
    let r = http
        .post(format!("http://{dash}/api/login"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .expect("POST /api/login");
    let status = r.status();
    let doc: Value = r.json().await.expect("login JSON");
    assert!(status.is_success(), "{status}: {doc:#}");
    doc["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("an access token: {doc:#}"))
        .to_owned()
}

/// The chaos run of the dashboard's snapshot once it is no longer running; panics after
/// `within`.
async fn chaos_over(http: &reqwest::Client, dash: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let snap = snapshot(http, dash).await;
        if snap["chaos"]["state"] != "running" {
            return snap["chaos"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the chaos run is still running after {within:?}: {:#}",
            snap["chaos"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_role_and_tier_and_lets_only_an_admin_kill_a_role() {
    let (_tmp, dir) = tokio::task::spawn_blocking(|| up_topology(TOPOLOGY))
        .await
        .expect("join");
    let _cleanup = Cleanup(&dir);
    let d = dir.clone();
    let status = tokio::task::spawn_blocking(move || status_json(&d))
        .await
        .expect("join");
    assert_eq!(role(&status, "dashboard-1")["healthy"], true, "{status:#}");
    let dash = role(&status, "dashboard-1")["addrs"]["http"]
        .as_str()
        .expect("dashboard-1's address")
        .to_owned();
    let lb = role(&status, "lb-1")["addrs"]["http"]
        .as_str()
        .expect("lb-1's address")
        .to_owned();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // The page: one self-contained HTML document.
    let page = http
        .get(format!("http://{dash}/"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/html"))
    );
    let html = page.text().await.expect("the page");
    assert!(
        html.contains("<title>Strata live dashboard</title>"),
        "{html}"
    );
    assert!(
        !html.contains("<script src") && !html.contains("<link") && !html.contains("https://"),
        "nothing fetched from elsewhere"
    );

    // Every role, with its health.
    let names = ["lb-1", "api-1", "api-2", "worker-1", "dashboard-1"];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let snap = snapshot(&http, &dash).await;
        let ready = names.iter().all(|n| {
            snap["roles"].as_array().is_some_and(|roles| {
                roles
                    .iter()
                    .any(|r| r["name"] == *n && r["health"] == "ready")
            })
        });
        if ready {
            assert_eq!(snap["topology"], "watched");
            assert_eq!(snap["dashboard"], "dashboard-1");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every role is ready: {snap:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Traffic through the balancer shows as the balancer's and the api tier's requests/s.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for _ in 0..20 {
            let _ = http.get(format!("http://{lb}/users?limit=1")).send().await;
        }
        let snap = snapshot(&http, &dash).await;
        // The balancer's own counter, and the API servers' without their probes and scrapes.
        if tier_rps(&snap, "api") > 0.0 && tier_rps(&snap, "lb") > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the api tier shows no traffic: {snap:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // No Prometheus in this topology: no alerts panel; one SQLite file: no data tier to draw.
    let snap = snapshot(&http, &dash).await;
    assert!(snap["alerts"].is_null(), "{:#}", snap["alerts"]);
    assert!(snap["data"].is_null(), "{:#}", snap["data"]);

    // One request with a sampled trace of its own: the trace view gathers its spans from the
    // balancer and the API server that served it.
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let r = http
        .get(format!("http://{lb}/users?limit=1"))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .send()
        .await
        .expect("a traced request");
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let found: Value = loop {
        let r = http
            .get(format!("http://{dash}/api/traces/{trace_id}"))
            .send()
            .await
            .expect("GET /api/traces/{id}");
        let status = r.status();
        let doc: Value = r.json().await.expect("JSON");
        let roles: std::collections::BTreeSet<&str> = doc["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["role"].as_str())
            .collect();
        if status == 200 && roles.contains("lb-1") && roles.iter().any(|r| r.starts_with("api-")) {
            break doc;
        }
        assert!(
            Instant::now() < deadline,
            "the trace's spans across roles: {status} {doc:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(found["trace_id"], trace_id);
    let spans = found["spans"].as_array().expect("spans");
    let starts: Vec<u64> = spans
        .iter()
        .filter_map(|s| s["start_unix_nanos"].as_u64())
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] <= w[1]),
        "earliest first: {found:#}"
    );
    let lb_span = spans
        .iter()
        .find(|s| s["role"] == "lb-1")
        .expect("lb-1's span");
    assert!(
        spans
            .iter()
            .any(|s| s["role"] != "lb-1" && s["parent_id"] == lb_span["span_id"]),
        "the API server's first span is the balancer's child: {found:#}"
    );
    for (id, status, kind) in [
        ("not-a-trace", 400, "invalid-parameter"),
        ("ffffffffffffffffffffffffffffffff", 404, "trace-not-found"),
    ] {
        let r = http
            .get(format!("http://{dash}/api/traces/{id}"))
            .send()
            .await
            .expect("GET /api/traces/{id}");
        assert_eq!(r.status(), status, "{id}");
        let problem: Value = r.json().await.expect("problem json");
        assert_eq!(
            problem["type"],
            format!("urn:strata:problem:{kind}"),
            "{problem:#}"
        );
        assert_eq!(problem["errors"][0]["parameter"], "trace_id", "{problem:#}");
    }

    // Server-sent events: at least two snapshots.
    let mut events = http
        .get(format!("http://{dash}/events"))
        .send()
        .await
        .expect("GET /events");
    assert_eq!(events.status(), 200);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/event-stream"))
    );
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while text.matches("data: ").count() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, events.chunk())
            .await
            .unwrap_or_else(|_| panic!("fewer than two events in 15 s: {text}"))
            .expect("the event stream");
        let Some(chunk) = chunk else {
            panic!("the event stream ended: {text}")
        };
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let first = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    let doc: Value = serde_json::from_str(first).expect("each event is a JSON snapshot");
    assert!(doc["roles"].is_array(), "{doc:#}");
    drop(events);

    // Without a token: 401, and api-2 untouched.
    let before = snapshot(&http, &dash).await;
    let pid = snap_role(&before, "api-2")["pid"]
        .as_u64()
        .expect("api-2's pid");
    let r = http
        .post(format!("http://{dash}/api/roles/api-2/kill"))
        .send()
        .await
        .expect("POST kill");
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c == "application/problem+json")
    );
    let r = http
        .post(format!("http://{dash}/api/roles/api-2/kill"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .expect("POST kill");
    assert_eq!(r.status(), 401, "a token the API server does not accept");
    let d = dir.clone();
    let now = tokio::task::spawn_blocking(move || status_json(&d))
        .await
        .expect("join");
    assert_eq!(
        role(&now, "api-2")["pid"].as_u64(),
        Some(pid),
        "nothing changed"
    );
    assert_eq!(role(&now, "api-2")["healthy"], true);

    // Someone who is not an admin, logged in through the dashboard's own login route: 403.
    let profile = serde_json::json!({"firstName": "Una", "lastName": "User",
        "address": {"streetAddress": "2 Main St", "city": "Testville", "state": "TS", "postalCode": "00501"},
        "phoneNumbers": []});
    let r = http
        .post(format!("http://{lb}/accounts"))
        .json(&serde_json::json!({"email": "user@strata.test", "password": "user password 1", "profile": profile}))
        .send()
        .await
        .expect("POST /accounts");
    assert_eq!(r.status(), 201);
    let user = login(&http, &dash, "user@strata.test", "user password 1").await;
    let r = http
        .post(format!("http://{dash}/api/roles/api-2/kill"))
        .bearer_auth(&user)
        .send()
        .await
        .expect("POST kill");
    assert_eq!(r.status(), 403, "not an admin");

    // An admin.
    let _ = admin_client(&dir, &lb).await;
    let token = login(&http, &dash, common::ADMIN_EMAIL, common::ADMIN_PASSWORD).await;

    let r = http
        .post(format!("http://{dash}/api/roles/nope-9/kill"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("POST kill");
    assert_eq!(r.status(), 404);
    let problem: Value = r.json().await.expect("problem json");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("nope-9")),
        "{problem:#}"
    );
    let r = http
        .post(format!("http://{dash}/api/roles/dashboard-1/kill"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("POST kill");
    assert_eq!(r.status(), 409, "the dashboard does not kill itself");

    let r = http
        .post(format!("http://{dash}/api/roles/api-2/kill"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("POST kill");
    assert!(r.status().is_success(), "{}", r.status());
    let done: Value = r.json().await.expect("json");
    assert_eq!(done["pid"].as_u64(), Some(pid), "{done:#}");
    assert_eq!(done["signal"], "SIGKILL");

    // The snapshot shows api-2 gone, then back on a new pid.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut saw_down = false;
    loop {
        let snap = snapshot(&http, &dash).await;
        let api2 = snap_role(&snap, "api-2");
        let new_pid = api2["pid"].as_u64().is_some_and(|p| p != pid);
        saw_down |= api2["health"] != "ready" || new_pid;
        if saw_down && new_pid && api2["health"] == "ready" {
            assert!(
                api2["restarts"].as_u64().is_some_and(|r| r >= 1),
                "{api2:#}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "api-2 did not come back: {snap:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Restart: SIGTERM to worker-1, which the supervisor starts again.
    let before = snapshot(&http, &dash).await;
    let worker = snap_role(&before, "worker-1")["pid"]
        .as_u64()
        .expect("worker-1's pid");
    let r = http
        .post(format!("http://{dash}/api/roles/worker-1/restart"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("POST restart");
    assert!(r.status().is_success(), "{}", r.status());
    let done: Value = r.json().await.expect("json");
    assert_eq!(done["signal"], "SIGTERM", "{done:#}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let snap = snapshot(&http, &dash).await;
        let w = snap_role(&snap, "worker-1");
        if w["pid"].as_u64().is_some_and(|p| p != worker) && w["health"] == "ready" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker-1 did not come back: {snap:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Freeze: SIGSTOP to api-1, which then neither answers nor dies; the supervisor leaves it.
    let before = snapshot(&http, &dash).await;
    let api1 = snap_role(&before, "api-1")["pid"]
        .as_u64()
        .expect("api-1's pid");
    let post = |name: &str, action: &str| {
        http.post(format!("http://{dash}/api/roles/{name}/{action}"))
            .bearer_auth(&token)
            .send()
    };
    let r = post("api-1", "freeze").await.expect("POST freeze");
    assert_eq!(r.status(), 202);
    let done: Value = r.json().await.expect("json");
    assert_eq!(done["signal"], "SIGSTOP", "{done:#}");
    assert_eq!(done["pid"].as_u64(), Some(api1));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snap = snapshot(&http, &dash).await;
        if snap_role(&snap, "api-1")["health"] == "frozen" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "api-1 not shown frozen: {snap:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = dir.clone();
    let now = tokio::task::spawn_blocking(move || status_json(&d))
        .await
        .expect("join");
    assert_eq!(role(&now, "api-1")["healthy"], false, "{now:#}");

    // Refusals name the role parameter (the token is checked by api-2 while api-1 is frozen).
    for (name, action, status, kind) in [
        ("api-1", "freeze", 409, "role-frozen"),
        ("api-2", "resume", 409, "role-not-frozen"),
        ("nope-9", "freeze", 404, "role-not-found"),
    ] {
        let r = post(name, action).await.expect("POST");
        assert_eq!(r.status(), status, "{action} {name}");
        let problem: Value = r.json().await.expect("problem json");
        assert_eq!(
            problem["type"],
            format!("urn:strata:problem:{kind}"),
            "{problem:#}"
        );
        assert_eq!(problem["errors"][0]["parameter"], "name", "{problem:#}");
    }

    let r = post("api-1", "explode").await.expect("POST explode");
    assert_eq!(r.status(), 404, "no such action");
    let problem: Value = r.json().await.expect("problem json");
    assert_eq!(problem["errors"][0]["parameter"], "action", "{problem:#}");

    // Resume: api-1 goes on with the same pid, healthy again, never restarted.
    let r = post("api-1", "resume").await.expect("POST resume");
    assert_eq!(r.status(), 202);
    let done: Value = r.json().await.expect("json");
    assert_eq!(done["signal"], "SIGCONT", "{done:#}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = dir.clone();
        let now = tokio::task::spawn_blocking(move || status_json(&d))
            .await
            .expect("join");
        let snap = snapshot(&http, &dash).await;
        let a = snap_role(&snap, "api-1");
        if a["health"] == "ready" && role(&now, "api-1")["healthy"] == true {
            assert_eq!(a["pid"].as_u64(), Some(api1), "the same process: {a:#}");
            assert_eq!(a["restarts"], 0, "{a:#}");
            break;
        }
        assert!(Instant::now() < deadline, "api-1 did not resume: {snap:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Drain: api-2 leaves lb-1's rotation (its counter there stands still while api-1 serves),
    // the snapshot shows it drained, and an undrain brings it back.
    let lb_admin = std::sync::Mutex::new(
        role(&status, "lb-1")["addrs"]["admin"]
            .as_str()
            .expect("lb-1's admin address")
            .to_owned(),
    );
    let backends = || async {
        let admin = lb_admin.lock().expect("lock").clone();
        let doc: Value = http
            .get(format!("http://{admin}/admin/backends"))
            .send()
            .await
            .expect("GET /admin/backends")
            .json()
            .await
            .expect("json");
        let find = |name: &str| {
            doc["backends"]
                .as_array()
                .and_then(|b| b.iter().find(|b| b["name"] == name).cloned())
                .unwrap_or_else(|| panic!("{name} in {doc:#}"))
        };
        (find("api-1"), find("api-2"))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while backends().await.0["eligible"] != true {
        assert!(Instant::now() < deadline, "lb-1 never took api-1 back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = post("api-2", "drain").await.expect("POST drain");
    assert_eq!(r.status(), 200);
    let done: Value = r.json().await.expect("json");
    assert_eq!(done["balancers"][0]["balancer"], "lb-1", "{done:#}");
    assert_eq!(done["balancers"][0]["draining"], true, "{done:#}");
    let (one, two) = backends().await;
    assert_eq!(two["draining"], true, "{two:#}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let snap = snapshot(&http, &dash).await;
        let api2 = snap_role(&snap, "api-2");
        if api2["health"] == "drained" {
            assert_eq!(api2["drained_by"][0], "lb-1", "{api2:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "api-2 not shown drained: {api2:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut served = 0;
    for _ in 0..30 {
        let r = http
            .get(format!("http://{lb}/users?limit=1"))
            .send()
            .await
            .expect("GET through lb-1");
        served += u64::from(r.status().is_success());
    }
    let (one_after, two_after) = backends().await;
    assert_eq!(
        two_after["requests"], two["requests"],
        "a drained api-2 got new requests: {two_after:#}"
    );
    assert!(served > 0, "api-1 served nothing while api-2 was drained");
    assert!(
        one_after["requests"].as_u64() >= Some(one["requests"].as_u64().unwrap_or(0) + served),
        "{one_after:#}"
    );
    // lb-1 killed with SIGKILL while it drains api-2: restarted (its admin API on a new port),
    // it drains api-2 again before its first request, from its drain file.
    let lb_pid = role(&status, "lb-1")["pid"].as_u64().expect("lb-1's pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(lb_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 lb-1");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = dir.clone();
        let now = tokio::task::spawn_blocking(move || status_json(&d))
            .await
            .expect("join");
        let lb1 = role(&now, "lb-1");
        if lb1["healthy"] == true && lb1["pid"].as_u64().is_some_and(|p| p != lb_pid) {
            *lb_admin.lock().expect("lock") =
                lb1["addrs"]["admin"].as_str().expect("admin").to_owned();
            break;
        }
        assert!(Instant::now() < deadline, "lb-1 did not come back: {now:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, two_restarted) = backends().await;
    assert_eq!(
        two_restarted["draining"], true,
        "a restarted lb-1 forgot the drain: {two_restarted:#}"
    );
    let two_after = two_restarted;

    // Only an API server behind a balancer drains; an unknown role is not found.
    for (name, status, kind) in [
        ("worker-1", 409, "role-not-balanced"),
        ("lb-1", 409, "role-not-balanced"),
        ("nope-9", 404, "role-not-found"),
    ] {
        let r = post(name, "drain").await.expect("POST drain");
        assert_eq!(r.status(), status, "drain {name}");
        let problem: Value = r.json().await.expect("problem json");
        assert_eq!(problem["type"], format!("urn:strata:problem:{kind}"));
        assert_eq!(problem["errors"][0]["parameter"], "name", "{problem:#}");
    }
    let r = post("api-2", "undrain").await.expect("POST undrain");
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let snap = snapshot(&http, &dash).await;
        let api2 = snap_role(&snap, "api-2");
        if api2["health"] == "ready" {
            assert!(api2.get("drained_by").is_none(), "{api2:#}");
            break;
        }
        assert!(Instant::now() < deadline, "api-2 still drained: {api2:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for _ in 0..10 {
            let _ = http.get(format!("http://{lb}/users?limit=1")).send().await;
        }
        let (_, two_now) = backends().await;
        if two_now["requests"].as_u64() > two_after["requests"].as_u64() {
            assert_eq!(two_now["draining"], false);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an undrained api-2 gets no requests: {two_now:#}"
        );
    }

    // Chaos: one bounded `strata chaos` run at a time, an admin's only, its verdict in the
    // snapshot.
    let chaos = |body: Value, token: Option<&str>| {
        let r = http.post(format!("http://{dash}/api/chaos")).json(&body);
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
        .send()
    };
    let quiet = serde_json::json!({"duration_secs": 5, "rate": 5, "faults": false});
    let r = chaos(quiet.clone(), None).await.expect("POST /api/chaos");
    assert_eq!(r.status(), 401);
    let r = chaos(serde_json::json!({"duration_secs": 1}), Some(&token))
        .await
        .expect("POST /api/chaos");
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.expect("problem json");
    assert_eq!(
        problem["errors"][0]["parameter"], "duration_secs",
        "{problem:#}"
    );
    let r = chaos(quiet.clone(), Some(&token))
        .await
        .expect("POST /api/chaos");
    assert_eq!(r.status(), 202);
    let run: Value = r.json().await.expect("json");
    assert_eq!(run["state"], "running", "{run:#}");
    let r = chaos(quiet, Some(&token)).await.expect("POST /api/chaos");
    assert_eq!(r.status(), 409, "one at a time");
    let problem: Value = r.json().await.expect("problem json");
    assert_eq!(problem["type"], "urn:strata:problem:chaos-running");
    let ended = chaos_over(&http, &dash, Duration::from_secs(120)).await;
    assert_eq!(ended["state"], "passed", "{ended:#}");
    assert_eq!(ended["verdict"]["lost"], 0, "{ended:#}");
    assert!(
        ended["verdict"]["writes"]["ok"].as_u64() > Some(0),
        "{ended:#}"
    );
    // A stop: only an admin's, only of a running run; the run ends `stopped`, well before
    // its 300 s.
    let stop = |token: Option<&str>| {
        let r = http.delete(format!("http://{dash}/api/chaos"));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
        .send()
    };
    let r = stop(Some(&token)).await.expect("DELETE /api/chaos");
    assert_eq!(r.status(), 409, "nothing runs");
    let problem: Value = r.json().await.expect("problem json");
    assert_eq!(problem["type"], "urn:strata:problem:chaos-not-running");
    let long = serde_json::json!({"duration_secs": 300, "rate": 5, "faults": false});
    let r = chaos(long, Some(&token)).await.expect("POST /api/chaos");
    assert_eq!(r.status(), 202);
    let r = stop(None).await.expect("DELETE /api/chaos");
    assert_eq!(r.status(), 401, "an anonymous stop");
    let r = stop(Some(&token)).await.expect("DELETE /api/chaos");
    assert_eq!(r.status(), 202);
    let stopped = chaos_over(&http, &dash, Duration::from_secs(30)).await;
    assert_eq!(stopped["state"], "stopped", "{stopped:#}");
    assert!(stopped["elapsed_s"].as_f64() < Some(60.0), "{stopped:#}");
    let pid = stopped["pid"].as_u64().expect("pid") as u32;
    assert!(!strata_engines::process::is_alive(pid), "the run exited");

    // A role left frozen does not hold `strata down` up: the supervisor continues it so that
    // it acts on its SIGTERM (it would otherwise be killed after the 10 s grace).
    let snap = snapshot(&http, &dash).await;
    let worker = snap_role(&snap, "worker-1")["pid"]
        .as_u64()
        .expect("worker-1's pid");
    let r = post("worker-1", "freeze").await.expect("POST freeze");
    assert_eq!(r.status(), 202);
    let d = dir.clone();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || common::strata(&["down"], &d))
        .await
        .expect("join");
    assert!(
        out.status.success(),
        "{}",
        common::explain("strata down", &out, &dir)
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "strata down waited out the grace for the frozen worker: {:?}",
        started.elapsed()
    );
    assert!(
        !strata_engines::process::is_alive(worker as u32),
        "worker-1 is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_primary_and_its_replica_with_its_lag() {
    let (_tmp, dir) = tokio::task::spawn_blocking(|| {
        up_topology(
            "name = \"replicated-watch\"\n[api]\ncount = 1\n[data]\nengine = \"postgres\"\nreplicas = 1\n[observe]\ndashboard = true\n",
        )
    })
    .await
    .expect("join");
    let _cleanup = Cleanup(&dir);
    let d = dir.clone();
    let status = tokio::task::spawn_blocking(move || status_json(&d))
        .await
        .expect("join");
    let dash = role(&status, "dashboard-1")["addrs"]["http"]
        .as_str()
        .expect("dashboard-1's address")
        .to_owned();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // The data tier is read every few seconds: poll until the cluster shows.
    let deadline = Instant::now() + Duration::from_secs(60);
    let cluster = loop {
        let snap = snapshot(&http, &dash).await;
        let cluster = &snap["data"]["clusters"][0];
        let replica = &cluster["replicas"][0];
        if cluster["primary"] == "pg-1" && replica["name"] == "pg-2" {
            break cluster.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no primary pg-1 with its replica pg-2: {:#}",
            snap["data"]
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(cluster["group"].is_null(), "the one cluster: {cluster:#}");
    let replica = &cluster["replicas"][0];
    let lag = replica["lag_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("a lag in bytes: {cluster:#}"));
    assert!(
        replica["lag"].as_str().is_some_and(|l| l.ends_with('B')),
        "{cluster:#}"
    );
    assert_eq!(
        replica["far_behind"],
        lag >= 16 * 1024 * 1024,
        "{cluster:#}"
    );
    assert_eq!(cluster["replicas"].as_array().map(Vec::len), Some(1));
    assert!(
        cluster["down"].as_array().is_some_and(Vec::is_empty),
        "{cluster:#}"
    );

    // The page draws each replica's arrow from the snapshot.
    let html = http
        .get(format!("http://{dash}/"))
        .send()
        .await
        .expect("GET /")
        .text()
        .await
        .expect("the page");
    assert!(
        html.contains("data-replica") && html.contains("data-lag-bytes"),
        "the page draws the replication"
    );
}
