//! `strata up` with a replicated PostgreSQL data tier, end to end: a primary and two streaming
//! replicas (synchronous quorum) created from the installed PostgreSQL binaries on free ports
//! under the deployment directory, API servers on the primary, a balancer in front. Users
//! written through the balancer reach both replicas; a replica killed with SIGKILL is restarted,
//! writes go on meanwhile (the quorum needs one replica), and it catches up; `down` leaves no
//! process behind.

mod common;
use common::{Cleanup, admin_client, explain, logs, role, status_json, strata, up_topology};

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(cmdline);
        }
    }
    found
}

async fn count_users(addr: &str) -> Result<i64, tokio_postgres::Error> {
    let url = format!("postgresql://strata@{addr}/strata");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .query_one("SELECT count(*) FROM users", &[])
        .await?
        .try_get(0)
}

async fn create_user(http: &reqwest::Client, lb: &str, n: usize) -> String {
    let body = json!({"firstName": format!("User{n}"), "lastName": "Replicated",
        "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"}});
    let resp = http
        .post(format!("http://{lb}/users"))
        .json(&body)
        .send()
        .await
        .expect("POST /users");
    assert_eq!(resp.status(), 201, "user {n} is created");
    resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_a_primary_and_two_replicas_that_survive_a_replica_kill() {
    let (_tmp, dir, status) = tokio::task::spawn_blocking(|| start_replicated(2))
        .await
        .expect("join");
    let _cleanup = Cleanup(&dir);
    assert_eq!(
        status["roles"].as_array().map(Vec::len),
        Some(7),
        "{status:#}"
    );
    assert_eq!(
        role(&status, "pg-1")["database"]["role"],
        "primary",
        "{status:#}"
    );
    for replica in ["pg-2", "pg-3"] {
        assert_eq!(
            role(&status, replica)["database"]["role"],
            "replica",
            "{status:#}"
        );
    }
    let addr = |status: &Value, name: &str, key: &str| {
        role(status, name)["addrs"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no {key} address"))
            .to_string()
    };
    let lb = addr(&status, "lb-1", "http");
    let primary = addr(&status, "pg-1", "postgres");
    let replicas = [
        addr(&status, "pg-2", "postgres"),
        addr(&status, "pg-3", "postgres"),
    ];

    // The primary streams to both replicas, in a synchronous quorum.
    {
        let url = format!("postgresql://strata@{primary}/strata");
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect to the primary");
        tokio::spawn(connection);
        let rows = client
            .query(
                "SELECT application_name, sync_state FROM pg_stat_replication ORDER BY 1",
                &[],
            )
            .await
            .expect("pg_stat_replication");
        let seen: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(
            seen,
            [
                ("pg-2".into(), "quorum".into()),
                ("pg-3".into(), "quorum".into())
            ]
        );
    }

    // Users written through the balancer are read back through it and reach both replicas.
    let http = admin_client(&dir, &lb).await;
    let mut locations = Vec::new();
    for n in 0..20 {
        locations.push(create_user(&http, &lb, n).await);
    }
    for location in &locations {
        let resp = http
            .get(format!("http://{lb}{location}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), 200, "{location} reads back");
    }
    let expected = 22; // the canonical user 12, the admin and the 20 new ones
    assert_eq!(count_users(&primary).await.expect("count"), expected);
    for replica in &replicas {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = count_users(replica).await.unwrap_or(-1);
            if n == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {replica} has {n} users, not {expected}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Read-your-writes across API servers and replicas: a PUT through one API server, then at
    // once a GET through the other with the write's token, sees the write every time.
    let apis = [
        addr(&status, "api-1", "http"),
        addr(&status, "api-2", "http"),
    ];
    let target = &locations[0];
    for i in 0..200usize {
        let (writer, reader) = (&apis[i % 2], &apis[(i + 1) % 2]);
        let first = format!("Pair{i}");
        let body = json!({"firstName": first, "lastName": "Replicated",
            "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"}});
        let put = http
            .put(format!("http://{writer}{target}"))
            .json(&body)
            .send()
            .await
            .expect("PUT");
        assert_eq!(put.status(), 200);
        let token = put.headers()["strata-commit"]
            .to_str()
            .expect("token")
            .to_string();
        let got: Value = http
            .get(format!("http://{reader}{target}"))
            .header("strata-read-after", token)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        assert_eq!(
            got["firstName"],
            first.as_str(),
            "pair {i}: a stale read after the write"
        );
    }

    // kill -9 of pg-2's server: the quorum still has pg-3, so writes go on; the role is
    // restarted and pg-2 catches up.
    let pid_file = dir.join("postgres").join("pg-2").join("postmaster.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("a pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the replica's server");
    for n in 20..25 {
        create_user(&http, &lb, n).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = status_json(&dir);
        let pg2 = role(&status, "pg-2");
        if pg2["restarts"].as_u64() >= Some(1) && pg2["healthy"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pg-2 was not restarted: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = count_users(&replicas[0]).await.unwrap_or(-1);
        if n == expected + 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted replica has {n} users"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // down stops everything, the servers included.
    let out = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || strata(&["down"], &dir)
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        explain("strata down", &out, &dir)
    );
    let needle = dir.display().to_string();
    let left = processes_mentioning(&needle);
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}

/// Starts the replicated topology in a fresh directory; returns the directory holder, the
/// deployment directory and its status.
fn start_replicated(api_count: u16) -> (tempfile::TempDir, std::path::PathBuf, Value) {
    let (tmp, dir) = up_topology(&format!(
        "name = \"replicated\"\n[lb]\ncount = 1\n[api]\ncount = {api_count}\n[data]\nengine = \"postgres\"\nreplicas = 2\n"
    ));
    let status = status_json(&dir);
    (tmp, dir, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_primary_is_failed_over_and_no_acknowledged_write_is_lost() {
    let (_tmp, dir, status) = tokio::task::spawn_blocking(|| start_replicated(2))
        .await
        .expect("join");
    let _cleanup = Cleanup(&dir);
    let lb = role(&status, "lb-1")["addrs"]["http"]
        .as_str()
        .expect("lb address")
        .to_string();
    let control = role(&status, "control-1")["addrs"]["http"]
        .as_str()
        .expect("control address")
        .to_string();
    let http = admin_client(&dir, &lb).await;

    // Open-loop writers and readers through the balancer, every request accounted for.
    let started = Instant::now();
    let run_for = Duration::from_secs(10);
    let writer = {
        let (http, lb) = (http.clone(), lb.clone());
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(25));
            while started.elapsed() < run_for {
                tick.tick().await;
                let (http, lb) = (http.clone(), lb.clone());
                let n = tasks.len();
                tasks.push(tokio::spawn(async move {
                    let body = json!({"firstName": format!("W{n}"), "lastName": "Failover",
                        "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"}});
                    let at = started.elapsed();
                    match http.post(format!("http://{lb}/users")).json(&body).send().await {
                        Ok(r) if r.status() == 201 => Ok(r.headers()["location"].to_str().expect("location").to_string()),
                        Ok(r) => Err((at, r.status().as_u16())),
                        Err(_) => Err((at, 0)),
                    }
                }));
            }
            let mut results = Vec::new();
            for t in tasks {
                results.push(t.await.expect("join"));
            }
            results
        })
    };
    let reader = {
        let (http, lb) = (http.clone(), lb.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while started.elapsed() < run_for {
                match http.get(format!("http://{lb}/users/12")).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(r.status().as_u16()),
                    Err(_) => failed.push(0),
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (ok, failed)
        })
    };

    // Stall the primary (SIGSTOP): it neither answers nor dies.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid: i32 =
        std::fs::read_to_string(dir.join("postgres").join("pg-1").join("postmaster.pid"))
            .expect("postmaster.pid")
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("a pid");
    let stalled_at = started.elapsed();
    // The whole server: the postmaster and every backend and WAL sender.
    strata_engines::process::signal_tree(pid as u32, nix::sys::signal::Signal::SIGSTOP);

    let writes = writer.await.expect("writer");
    let (reads_ok, reads_failed) = reader.await.expect("reader");
    strata_engines::process::signal_tree(pid as u32, nix::sys::signal::Signal::SIGCONT);

    // A new primary was published and promoted.
    let cluster: Value = http
        .get(format!("http://{control}/cluster"))
        .send()
        .await
        .expect("GET /cluster")
        .json()
        .await
        .expect("json");
    let primary = cluster["cluster"]["primary"]
        .as_str()
        .expect("primary")
        .to_string();
    assert_ne!(primary, "pg-1", "{cluster:#}");
    assert!(
        cluster["cluster"]["failover"].is_null(),
        "the failover is complete: {cluster:#}"
    );

    // Writes failed only for a short while after the stall, and succeeded again after it.
    let failed: Vec<&(Duration, u16)> = writes.iter().filter_map(|r| r.as_ref().err()).collect();
    let acked: Vec<&String> = writes.iter().filter_map(|r| r.as_ref().ok()).collect();
    if let Some(last) = failed.iter().map(|(at, _)| *at).max() {
        assert!(
            last < stalled_at + Duration::from_secs(5),
            "writes still failed {:?} after the stall: {failed:?}{}",
            last - stalled_at,
            logs(&dir, 25)
        );
    }
    assert!(
        failed.iter().all(|(_, status)| *status == 503),
        "a failed write is a 503 (retry later), never anything else: {failed:?}"
    );
    assert!(
        acked.len() > writes.len() / 2,
        "{} of {} writes acknowledged",
        acked.len(),
        writes.len()
    );
    assert!(
        reads_ok > 100 && reads_failed.is_empty(),
        "reads failed during the failover: {reads_failed:?}"
    );

    // Every acknowledged write is on the new primary.
    let new_primary = status_json(&dir);
    let addr = role(&new_primary, &primary)["addrs"]["postgres"]
        .as_str()
        .expect("address")
        .to_string();
    let (client, connection) = tokio_postgres::connect(
        &format!("postgresql://strata@{addr}/strata"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to the new primary");
    tokio::spawn(connection);
    let ids: std::collections::HashSet<String> = client
        .query(
            "SELECT id::text FROM users WHERE profile->>'lastName' = 'Failover'",
            &[],
        )
        .await
        .expect("query")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&&String> = acked
        .iter()
        .filter(|l| !ids.contains(l.rsplit('/').next().unwrap_or_default()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes lost in the failover: {missing:?}"
    );

    // The old primary comes back by itself, as a replica of the new one, and the cluster
    // returns to full health: nothing fenced, both standbys in the primary's quorum.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = status_json(&dir);
        let healed = &status["control"]["cluster"];
        if role(&status, "pg-1")["database"]["role"] == "replica"
            && healed["fenced"] == json!([])
            && healed["sync"].as_array().map(Vec::len) == Some(2)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pg-1 did not rejoin as a replica: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The published primary, once `strata control` has written one other than `not`.
fn wait_for_failover(dir: &std::path::Path, not: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text =
            std::fs::read_to_string(dir.join("postgres").join("cluster.json")).unwrap_or_default();
        if let Ok(cluster) = serde_json::from_str::<Value>(&text)
            && let Some(primary) = cluster["primary"].as_str()
            && primary != not
        {
            return primary.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no failover away from {not}: {}",
            logs(dir, 20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn under_manual_rejoin_a_fenced_primary_waits_for_strata_db_rejoin() {
    let (_tmp, dir) = up_topology(
        "name = \"manual\"\n[api]\ncount = 1\n[data]\nengine = \"postgres\"\nreplicas = 2\nrejoin = \"manual\"\n",
    );
    let _cleanup = Cleanup(&dir);

    // Mistakes are refused, saying why.
    for (node, says) in [
        ("pg-1", "is the primary"),
        ("pg-9", "its database roles are pg-1, pg-2, pg-3"),
        ("api-1", "not a database server"),
    ] {
        let out = strata(&["db", "rejoin", node], &dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(says),
            "{}",
            explain(&format!("strata db rejoin {node}"), &out, &dir)
        );
    }

    // Stall the primary: control fails over and fences it; its role kills the server and,
    // started again by the supervisor, keeps it stopped.
    let pid = cluster_pid(&dir, "pg-1");
    strata_engines::process::signal_tree(pid, nix::sys::signal::Signal::SIGSTOP);
    let primary = wait_for_failover(&dir, "pg-1");
    strata_engines::process::signal_tree(pid, nix::sys::signal::Signal::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = status_json(&dir);
        if role(&status, "pg-1")["database"]["role"] == "fenced" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pg-1 is not shown as fenced: {status:#}{}",
            logs(&dir, 20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // It stays that way: no server runs in its directory, which still holds a primary.
    std::thread::sleep(Duration::from_secs(2));
    let status = status_json(&dir);
    assert_eq!(role(&status, "pg-1")["database"]["role"], "fenced");
    assert_eq!(role(&status, "pg-1")["state"], "ready", "not crash-looping");
    let data = dir.join("postgres").join("pg-1");
    assert!(
        !data.join("standby.signal").exists(),
        "the fenced primary's directory is left as the failover found it"
    );
    // A server killed by fencing leaves its postmaster.pid behind; that process is gone.
    if data.join("postmaster.pid").exists() {
        let old = nix::unistd::Pid::from_raw(cluster_pid(&dir, "pg-1") as i32);
        assert!(
            nix::sys::signal::kill(old, None).is_err(),
            "no server runs in the fenced primary's directory"
        );
    }
    let table = strata(&["status"], &dir);
    assert!(
        String::from_utf8_lossy(&table.stdout)
            .contains("fenced: stopped until `strata db rejoin pg-1`"),
        "{}",
        explain("strata status", &table, &dir)
    );

    // The new primary is not a thing to rejoin.
    let out = strata(&["db", "rejoin", &primary], &dir);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is the primary"),
        "{}",
        explain("strata db rejoin PRIMARY", &out, &dir)
    );

    // Asked, it rewinds and follows the new primary.
    let out = strata(&["db", "rejoin", "pg-1"], &dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("rejoined as a replica of {primary}")),
        "{}",
        explain("strata db rejoin pg-1", &out, &dir)
    );
    let status = status_json(&dir);
    assert_eq!(
        role(&status, "pg-1")["database"]["role"],
        "replica",
        "{status:#}"
    );
    assert!(data.join("standby.signal").exists());
    // Asking again changes nothing.
    let out = strata(&["db", "rejoin", "pg-1"], &dir);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("already a replica"),
        "{}",
        explain("strata db rejoin pg-1, again", &out, &dir)
    );
}

/// The postmaster's pid of a database role.
fn cluster_pid(dir: &std::path::Path, node: &str) -> u32 {
    std::fs::read_to_string(dir.join("postgres").join(node).join("postmaster.pid"))
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("a pid")
}
