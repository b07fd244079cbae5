//! No single balancer: `[lb] count = 2` runs `lb-1` on the public port and `lb-2` on a port of
//! its own, both in front of every API server and sharing the sticky cookie's key. A client
//! pinned by `lb-1` keeps its backend through `lb-2`; `lb-1` is killed with SIGKILL under
//! clients that try the other balancer when one does not answer (as clients given both
//! addresses by DNS do), and, while it is down, an API server too; not one of their requests
//! fails; the restarted `lb-1` still
//! honours the cookie, because the key outlives the process.

mod common;

use std::time::{Duration, Instant};

use common::{Cleanup, role, status_json, up_topology};
use serde_json::Value;

const TOPOLOGY: &str =
    "name = \"two-balancers\"\n[lb]\ncount = 2\nsticky_cookie = \"pin\"\n[api]\ncount = 2\n";

fn http(status: &Value, name: &str) -> String {
    role(status, name)["addrs"]["http"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no http address: {status:#}"))
        .to_owned()
}

/// GET /users/12 through `lb` with the cookie, if any: the status and the `Set-Cookie` value.
async fn get(
    client: &reqwest::Client,
    lb: &str,
    cookie: Option<&str>,
) -> reqwest::Result<(u16, Option<String>)> {
    let mut req = client.get(format!("http://{lb}/users/12"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await?;
    let set = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").to_owned());
    Ok((r.status().as_u16(), set))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_balancers_share_pins_and_a_client_that_tries_both_loses_nothing_when_one_dies() {
    let (_tmp, dir) = tokio::task::spawn_blocking(|| up_topology(TOPOLOGY))
        .await
        .expect("join");
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    for name in ["lb-1", "lb-2"] {
        assert_eq!(role(&status, name)["healthy"], true, "{status:#}");
    }
    let (lb1, lb2) = (http(&status, "lb-1"), http(&status, "lb-2"));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");

    // Pinned by lb-1; lb-2 honours the pin (it would set a cookie of its own otherwise).
    let (code, cookie) = get(&client, &lb1, None).await.expect("GET via lb-1");
    assert_eq!(code, 200);
    let cookie = cookie.expect("lb-1 pins the client");
    for _ in 0..10 {
        let (code, set) = get(&client, &lb2, Some(&cookie))
            .await
            .expect("GET via lb-2");
        assert_eq!((code, set), (200, None), "lb-2 keeps the pin lb-1 made");
    }

    // lb-1 killed under clients that fall back to lb-2 when lb-1 does not answer.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut clients = Vec::new();
    for k in 0..4 {
        let (client, stop, answered) = (client.clone(), stop.clone(), answered.clone());
        let order = if k % 2 == 0 {
            [lb1.clone(), lb2.clone()]
        } else {
            [lb2.clone(), lb1.clone()]
        };
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let mut answer = None;
                for lb in &order {
                    if let Ok((code, _)) = get(&client, lb, None).await {
                        answer = Some(code);
                        break;
                    }
                }
                match answer {
                    Some(200) => {
                        ok += 1;
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    other => failed.push(other),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        }));
    }
    // The kill lands while the clients are running: once they have been answered a few times.
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.load(std::sync::atomic::Ordering::Relaxed) < 20 {
        assert!(Instant::now() < deadline, "the clients were not answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = role(&status, "lb-1")["pid"].as_u64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 lb-1");
    // The second fault during the first: while lb-1 is down, the API server the cookie does
    // not name dies too (the cookie's value begins with the base64 of its backend's name:
    // "YXBpLTE" is api-1), so lb-2 alone must route around it.
    let unpinned = if cookie.contains("=YXBpLTE.") {
        "api-2"
    } else {
        "api-1"
    };
    let api_pid = role(&status, unpinned)["pid"].as_u64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(api_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the unpinned API server");
    let d = dir.clone();
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = status_json(&d);
            let back = |name: &str, old: i32| {
                let r = role(&s, name);
                r["pid"].as_u64().is_some_and(|p| p as i32 != old) && r["healthy"] == true
            };
            if back("lb-1", pid) && back(unpinned, api_pid) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "lb-1 or {unpinned} is not back: {s:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .expect("join");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for c in clients {
        let (o, f) = c.await.expect("client");
        ok += o;
        failed.extend(f);
    }
    assert!(ok > 20, "the clients ran ({ok} requests)");
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        ok as usize + failed.len()
    );

    // The restarted lb-1, on the same public port, still honours the cookie.
    assert_eq!(http(&status, "lb-1"), lb1, "the same public entry");
    let (code, set) = get(&client, &lb1, Some(&cookie))
        .await
        .expect("GET via the new lb-1");
    assert_eq!((code, set), (200, None), "the key outlived the process");
}
