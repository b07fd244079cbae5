//! `strata up` end to end, with the real binary: start a topology on free ports, read user 12
//! through every API process, SIGKILL one and see it restarted, stop everything and find no
//! process left; refuse a bad topology with every mistake listed; and never leave orphans
//! when the supervisor itself is killed.

mod common;
use common::{Cleanup, STRATA, explain, role, status_json, strata, up_topology};

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

fn alive(pid: u64) -> bool {
    let pid = pid as i32;
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next())
        != Some("Z")
}

fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ok()
}

fn get_user_12(addr: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /users/12 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out)
}

fn all_pids(status: &Value) -> Vec<u64> {
    let mut pids = vec![
        status["supervisor"]["pid"]
            .as_u64()
            .expect("supervisor pid"),
    ];
    pids.extend(
        status["roles"]
            .as_array()
            .expect("roles")
            .iter()
            .filter_map(|r| r["pid"].as_u64()),
    );
    pids
}

#[test]
fn up_serves_user_12_on_every_api_restarts_a_killed_one_and_down_leaves_no_process() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("deploy");
    let _cleanup = Cleanup(&dir);
    let out = strata(&["up", "-d", "--port", "0"], &dir);
    assert!(
        out.status.success(),
        "{}",
        explain("strata up -d", &out, &dir)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/users/12"),
        "the endpoint table is printed"
    );

    let status = status_json(&dir);
    let all_roles = status["roles"].as_array().expect("roles").clone();
    assert_eq!(
        all_roles.len(),
        5,
        "the default topology runs a balancer, 3 API servers and a photo worker: {status:#}"
    );
    let worker = role(&status, "worker-1");
    assert_eq!(worker["kind"], "worker", "{status:#}");
    assert_eq!(worker["healthy"], true, "{status:#}");
    let roles: Vec<Value> = all_roles
        .iter()
        .filter(|r| r["kind"] == "api")
        .cloned()
        .collect();
    assert_eq!(roles.len(), 3, "{status:#}");
    let lb = all_roles
        .iter()
        .find(|r| r["kind"] == "lb")
        .expect("a load balancer");
    let (code, body) = get_user_12(lb["addrs"]["http"].as_str().expect("lb address"));
    assert_eq!(code, 200, "user 12 through the balancer: {body}");
    for role in &roles {
        assert_eq!(role["state"], "ready", "{status:#}");
        assert_eq!(role["healthy"], true, "{status:#}");
        let addr = role["addrs"]["http"].as_str().expect("http address");
        let (code, body) = get_user_12(addr);
        assert_eq!(code, 200, "{addr}: {body}");
        assert!(body.contains(r#""firstName":"John""#), "{body}");
    }
    let before = all_pids(&status);

    // SIGKILL api-2: the supervisor restarts it, on the same port.
    let victim = roles[1]["pid"].as_u64().expect("pid");
    let victim_addr = roles[1]["addrs"]["http"]
        .as_str()
        .expect("addr")
        .to_string();
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("SIGKILL");
    let mut restarted = Value::Null;
    let back = wait_until(Duration::from_secs(20), || {
        let s = status_json(&dir);
        let r = &s["roles"][1];
        let ok = r["state"] == "ready"
            && r["restarts"] == 1
            && r["pid"].as_u64().is_some_and(|p| p != victim)
            && r["healthy"] == true;
        restarted = s;
        ok
    });
    assert!(back, "api-2 was not restarted: {restarted:#}");
    let addr = restarted["roles"][1]["addrs"]["http"]
        .as_str()
        .expect("addr")
        .to_string();
    assert_eq!(
        addr, victim_addr,
        "a restarted API comes back on its port, where the balancer expects it"
    );
    assert_eq!(
        get_user_12(&addr).0,
        200,
        "the restarted api-2 serves user 12"
    );
    assert!(!alive(victim));

    // Stop everything: no process of the deployment is left.
    let mut pids = before;
    pids.extend(all_pids(&restarted));
    let out = strata(&["down"], &dir);
    assert!(
        out.status.success(),
        "{}",
        explain("strata down", &out, &dir)
    );
    let gone = wait_until(Duration::from_secs(10), || pids.iter().all(|p| !alive(*p)));
    assert!(
        gone,
        "processes left after down: {:?}",
        pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
    assert_eq!(status_json(&dir)["running"], false);
}

#[test]
fn a_topology_with_mistakes_is_refused_with_every_mistake_listed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("bad.toml");
    std::fs::write(
        &file,
        "name = \"bad\"\n[api]\ncount = 0\nports = [9001]\n[apis]\ncount = 2\n[datacenter]\nname = \"eu\"\n",
    )
    .expect("write");
    let dir = tmp.path().join("deploy");
    let out = Command::new(STRATA)
        .args(["up", "--port", "0", "-f"])
        .arg(&file)
        .arg("--dir")
        .arg(&dir)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for expected in [
        "line 3:",
        "between 1 and 64",
        "line 5:",
        "`apis`",
        "did you mean `api`",
        "line 7:",
        "must be tables written `[[datacenter]]`",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing from:\n{stderr}"
        );
    }
    assert!(!dir.join("state.json").exists(), "nothing was started");
}

#[test]
fn engines_that_are_not_installed_are_named_with_their_package_among_the_other_mistakes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("needs.toml");
    std::fs::write(
        &file,
        "[api]\ncount = 2\n[cache]\nengine = \"memcached\"\nnode = 2\n[data]\nengine = \"postgres\"\n[sessions]\nengine = \"redis\"\n",
    )
    .expect("write");
    let dir = tmp.path().join("deploy");
    // No program on PATH, no PostgreSQL where STRATA_PG_BIN points: nothing is installed.
    let out = Command::new(STRATA)
        .args(["up", "--port", "0", "-f"])
        .arg(&file)
        .arg("--dir")
        .arg(&dir)
        .env("PATH", tmp.path().join("empty"))
        .env("STRATA_PG_BIN", tmp.path().join("no-postgres"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for expected in [
        "4 mistakes",
        "line 4: Memcached is not installed: install it (Debian: apt-get install memcached)",
        "line 5: unknown key `cache.node` (did you mean `nodes`?)",
        "line 7: PostgreSQL is not installed: install it (Debian: apt-get install postgresql-15)",
        "line 9: Redis is not installed: install it (Debian: apt-get install redis-server)",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing from:\n{stderr}"
        );
    }
    assert!(!dir.join("state.json").exists(), "nothing was started");
}

#[test]
fn killing_the_supervisor_leaves_no_orphan_role() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("deploy");
    let _cleanup = Cleanup(&dir);
    let file = tmp.path().join("two.toml");
    std::fs::write(&file, "name = \"two\"\n[api]\ncount = 2\n").expect("write");
    let out = Command::new(STRATA)
        .args(["up", "-d", "--port", "0", "-f"])
        .arg(&file)
        .arg("--dir")
        .arg(&dir)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        explain("strata up -d", &out, &dir)
    );
    let status = status_json(&dir);
    let supervisor = status["supervisor"]["pid"].as_u64().expect("pid");
    let roles: Vec<u64> = status["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .filter_map(|r| r["pid"].as_u64())
        .collect();
    assert_eq!(roles.len(), 2);
    kill(Pid::from_raw(supervisor as i32), Signal::SIGKILL).expect("SIGKILL supervisor");
    let gone = wait_until(Duration::from_secs(10), || roles.iter().all(|p| !alive(*p)));
    assert!(
        gone,
        "roles outlived their supervisor: {:?}",
        roles.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
}

#[test]
fn a_busy_public_port_fails_fast_with_a_hint_and_starts_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("deploy");
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = blocker.local_addr().expect("addr").port().to_string();
    let out = Command::new(STRATA)
        .args(["up", "--port", &port])
        .arg("--dir")
        .arg(&dir)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("lb-1 did not become ready") && stderr.contains("--port"),
        "{stderr}"
    );
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).expect("state"))
            .expect("json");
    assert_eq!(state["running"], false);
    for role in state["roles"].as_array().expect("roles") {
        assert!(
            role["pid"].is_null(),
            "every started role was stopped: {state:#}"
        );
    }
}

#[test]
fn gets_through_the_balancer_never_fail_when_a_backend_is_killed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("deploy");
    let _cleanup = Cleanup(&dir);
    let out = strata(&["up", "-d", "--port", "0"], &dir);
    assert!(
        out.status.success(),
        "{}",
        explain("strata up -d", &out, &dir)
    );
    let status = status_json(&dir);
    let roles = status["roles"].as_array().expect("roles");
    let lb = roles.iter().find(|r| r["kind"] == "lb").expect("lb")["addrs"]["http"]
        .as_str()
        .expect("addr")
        .to_string();
    let victim = roles.iter().find(|r| r["name"] == "api-2").expect("api-2")["pid"]
        .as_u64()
        .expect("pid");

    // Four clients, each a GET every 10 ms for 3 s; api-2 is killed after 1 s.
    let stop_at = Instant::now() + Duration::from_secs(3);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let lb = lb.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while Instant::now() < stop_at {
                    let (code, body) = get_user_12(&lb);
                    if code == 200 {
                        ok += 1
                    } else {
                        failed.push(format!("{code}: {body}"))
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("SIGKILL api-2");
    let (mut ok, mut failed) = (0, Vec::new());
    for c in clients {
        let (o, f) = c.join().expect("client");
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} GETs failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "the load ran ({ok} GETs)");
}

#[test]
fn a_topology_can_give_the_balancer_tls_and_sticky_sessions() {
    let (_tmp, dir) = up_topology(
        "[lb]\nsticky_cookie = \"pin\"\ntls_port = 0\ndev_cert = true\n[api]\ncount = 2\n",
    );
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let lb = status["roles"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "lb-1"))
        .expect("lb-1")
        .clone();
    let https = lb["addrs"]["https"].as_str().expect("an https address");
    let cert = dir.join("lb-1-dev-cert.pem");
    assert!(
        cert.exists(),
        "the dev certificate is written for clients to trust"
    );
    // curl checks the certificate against the written one (no -k).
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10", "--cacert"])
        .arg(&cert)
        .arg(format!("https://{https}/users/12"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "curl failed: {:?}", out.status);
    assert!(
        text.starts_with("HTTP/2 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    assert!(text.contains("\"firstName\":\"John\""), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("set-cookie: pin="),
        "the sticky cookie is set: {text}"
    );
}
