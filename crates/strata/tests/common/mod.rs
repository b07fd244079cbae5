//! Helpers shared by the end-to-end tests that drive the `strata` binary.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

pub const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// Runs `strata ARGS --dir DIR`.
pub fn strata(args: &[&str], dir: &Path) -> Output {
    Command::new(STRATA)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run strata")
}

/// The last `lines` lines of every role's log in a deployment directory.
pub fn logs(dir: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(entries) = std::fs::read_dir(dir.join("logs")) {
        for e in entries.flatten() {
            let log = std::fs::read_to_string(e.path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            text.push_str(&format!(
                "\n--- {}\n{}",
                e.path().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    text
}

/// Everything a failing test should show: the command's outcome and the roles' logs.
pub fn explain(what: &str, out: &Output, dir: &Path) -> String {
    format!(
        "{what}: status {:?}\n--- stdout\n{}\n--- stderr\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        logs(dir, 15)
    )
}

/// Role `name` of a `strata status --json` document.
pub fn role<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["roles"]
        .as_array()
        .and_then(|roles| roles.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no role {name} in {status:#}"))
}

/// `strata status --json` of a deployment.
pub fn status_json(dir: &Path) -> Value {
    let out = strata(&["status", "--json"], dir);
    assert!(
        out.status.success(),
        "{}",
        explain("strata status --json", &out, dir)
    );
    serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
}

/// Writes `topology` to a new temporary directory and runs `strata up -d` on it on a free
/// public port, asserting that it started. The directory is open to other users (`0755`) so
/// that PostgreSQL, run as the `postgres` user when the tests run as root, can enter it.
/// Returns the directory's holder and the deployment directory.
pub fn up_topology(topology: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let dir = tmp.path().join("deploy");
    let file = tmp.path().join("topology.toml");
    std::fs::write(&file, topology).expect("write topology");
    let out = strata(
        &["up", "-d", "--port", "0", "-f", &file.display().to_string()],
        &dir,
    );
    if !out.status.success() {
        let _ = strata(&["down"], &dir);
        panic!("{}", explain("strata up -d", &out, &dir));
    }
    (tmp, dir)
}

/// Stops a deployment left behind by a failed assertion.
/// [`up_topology`] on a blocking thread, for async tests.
pub async fn up_in_background(topology: String) -> (tempfile::TempDir, std::path::PathBuf) {
    tokio::task::spawn_blocking(move || up_topology(&topology))
        .await
        .expect("join")
}

/// The `http` addresses of roles `a` and `b`, checked to share one port: DNS answers carry
/// addresses only, so the entries it hands out differ by address.
pub fn on_one_port(
    status: &Value,
    a: &str,
    b: &str,
) -> (std::net::SocketAddr, std::net::SocketAddr) {
    let (a, b) = (addr_of(status, a, "http"), addr_of(status, b, "http"));
    assert_eq!(a.port(), b.port(), "one public port: {status:#}");
    (a, b)
}

pub struct Cleanup<'a>(pub &'a Path);
impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = strata(&["down"], self.0);
    }
}

/// The administrator the end-to-end tests create in a deployment.
pub const ADMIN_EMAIL: &str = "admin@strata.test";
pub const ADMIN_PASSWORD: &str = "admin password 1";

/// Signs up an account through `base` (`HOST:PORT` of a balancer or API server), makes it an
/// admin with `strata admin grant --dir DIR` (as an operator would), logs it in, and returns an
/// HTTP client that sends its access token with every request.
pub async fn admin_client(dir: &Path, base: &str) -> reqwest::Client {
    let anon = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client");
    let profile = serde_json::json!({"firstName": "Ada", "lastName": "Admin",
        "address": {"streetAddress": "1 Ops Way", "city": "Testville", "state": "TS", "postalCode": "00501"},
        "phoneNumbers": []});
    let r = anon
        .post(format!("http://{base}/accounts"))
        .json(&serde_json::json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "profile": profile}))
        .send()
        .await
        .expect("POST /accounts");
    assert!(
        r.status().as_u16() == 201 || r.status().as_u16() == 409,
        "sign up the admin: {}",
        r.status()
    );
    let out = strata(&["admin", "grant", ADMIN_EMAIL], dir);
    assert!(
        out.status.success(),
        "{}",
        explain("strata admin grant", &out, dir)
    );
    let login: Value = anon
        .post(format!("http://{base}/sessions"))
        .json(&serde_json::json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("POST /sessions")
        .json()
        .await
        .expect("login JSON");
    let token = login["access_token"].as_str().expect("an access token");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header value"),
    );
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .default_headers(headers)
        .build()
        .expect("client")
}

/// A photo job's document (`GET /jobs/{id}`, `job` being its `Location`) through `base`.
pub async fn job_doc(client: &reqwest::Client, base: &str, job: &str) -> Value {
    client
        .get(format!("http://{base}{job}"))
        .send()
        .await
        .expect("GET job")
        .json()
        .await
        .expect("job json")
}

/// The pid of the engine process a role runs (its child whose command name starts with
/// `comm`: `prometheus`, `prometheus-aler`, `postgres` …), for tests that kill the engine
/// rather than its role.
pub fn engine_child(role_pid: u64, comm: &str) -> i32 {
    std::fs::read_dir(format!("/proc/{role_pid}/task"))
        .expect("the role's threads")
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|name| name.trim().starts_with(comm))
        })
        .unwrap_or_else(|| panic!("no {comm} process under the role's pid {role_pid}"))
}

/// A role's `listener` address from `strata status --json`, as written there.
pub fn addr(status: &Value, name: &str, listener: &str) -> String {
    role(status, name)["addrs"][listener]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no {listener} address: {status:#}"))
        .to_owned()
}

/// The same, parsed.
pub fn addr_of(status: &Value, name: &str, listener: &str) -> std::net::SocketAddr {
    addr(status, name, listener)
        .parse()
        .unwrap_or_else(|e| panic!("{name}'s {listener} address: {e}"))
}

/// What the DNS server at `dns` answers for `name` to a client asking from `from`, sorted
/// (`None`: no answer within 500 ms).
pub async fn resolve_from(
    from: std::net::IpAddr,
    dns: std::net::SocketAddr,
    name: &'static str,
) -> Option<Vec<std::net::IpAddr>> {
    tokio::task::spawn_blocking(move || {
        strata_dns::probe::resolve_from(from, dns, name, std::time::Duration::from_millis(500)).map(
            |mut ips| {
                ips.sort();
                ips
            },
        )
    })
    .await
    .expect("join")
}

/// Where user `user`'s photo is at `size` (`64`, `128`, …) once a worker has processed it: the
/// `Location` of `GET {base}/users/{user}/photo?size=…`, polled until it redirects (60 s at
/// most). `client` must not follow redirects.
pub async fn processed_photo(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    size: u32,
    dir: &Path,
) -> String {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client
            .get(format!("http://{base}/users/{user}/photo?size={size}"))
            .send()
            .await
            .expect("GET photo");
        if r.status().as_u16() == 307 {
            return r.headers()["location"]
                .to_str()
                .expect("location")
                .to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the photo was not processed within 60 s (last answer {}){}",
            r.status(),
            logs(dir, 20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum of the samples on `addr`'s `/metrics` (an API server's, an edge's admin listener)
/// whose line starts with `line_start` (a name, or a name and its labels) and, if given,
/// contains `containing` (a label's value).
pub async fn metrics_sum(
    http: &reqwest::Client,
    addr: &str,
    line_start: &str,
    containing: Option<&str>,
) -> f64 {
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with(line_start) && containing.is_none_or(|x| l.contains(x)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// [`metrics_sum`] of an edge's counter, on its admin listener.
pub async fn edge_counter(
    http: &reqwest::Client,
    admin: &str,
    line_start: &str,
    containing: Option<&str>,
) -> u64 {
    metrics_sum(http, admin, line_start, containing).await as u64
}
