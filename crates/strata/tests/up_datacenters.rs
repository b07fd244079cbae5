//! Two data centres behind one DNS, 30 ms apart: `us-east` holds the PostgreSQL primary,
//! `us-west` a streaming replica; each runs its own balancer in front of its own API server.
//! DNS answers `us-east`'s balancer (failover policy, in the listed order). A write through
//! `us-west`'s balancer crosses the link to the primary — through the delaying relay — and
//! costs at least a round trip of the link (2 × 30 ms) more than a local read there, and a read
//! that carries its commit token reads it back. Replication crosses the link too: a write in
//! `us-east` waits (quorum commit) for `us-west`'s replica, a round trip away. Then every stateless role of `us-east` (its
//! balancer and API server) is frozen with SIGSTOP: DNS answers only `us-west` within its health
//! interval, and a client that resolves the name through it is served there. In the second
//! test the whole of `us-east` freezes and the link is cut: `us-west`'s replica is promoted and
//! its API server, whose first host for the primary is a relay that answers nothing, writes
//! beside it; `strata status` shows each data centre's replication before and after.

mod common;
/// The MaxMind DB writer of strata-dns's tests: the geo test's database of loopback networks.
#[allow(dead_code)]
#[path = "../../strata-dns/tests/dns/support/mmdb.rs"]
mod mmdb;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{
    Cleanup, addr_of, admin_client, on_one_port, role, status_json, strata, up_in_background,
};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const ONE_WAY_MS: u64 = 30;
const TOPOLOGY: &str = "name = \"two-dcs\"\n[lb]\n[api]\ncount = 1\n[data]\nengine = \"postgres\"\n\
                        [dns]\nttl_secs = 1\ninterval_ms = 300\ntimeout_ms = 200\nrise = 2\nfall = 1\n\
                        [[datacenter]]\nname = \"us-east\"\n\
                        [[datacenter]]\nname = \"us-west\"\n\
                        [[link]]\nbetween = [\"us-east\", \"us-west\"]\none_way_ms = 30\n";
const NAME: &str = "www.strata.test.";
const INTERVAL: Duration = Duration::from_millis(300);
const CHECK_TIMEOUT: Duration = Duration::from_millis(200);
const EAST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WEST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 12, 1));

/// What the deployment's DNS answers for the service name now, sorted (`None`: no answer).
async fn resolve(dns: SocketAddr) -> Option<Vec<IpAddr>> {
    resolve_from(IpAddr::V4(Ipv4Addr::LOCALHOST), dns).await
}

/// The same, asked from the local address `from` (a client the geo policy places by it).
async fn resolve_from(from: IpAddr, dns: SocketAddr) -> Option<Vec<IpAddr>> {
    common::resolve_from(from, dns, NAME).await
}

/// Polls the DNS until it answers `want`; panics after `within`. Returns how long it took.
async fn until_answers(dns: SocketAddr, within: Duration, want: &[IpAddr]) -> Duration {
    until_answers_from(IpAddr::V4(Ipv4Addr::LOCALHOST), dns, within, want).await
}

/// [`until_answers`] for a client asking from `from`.
async fn until_answers_from(
    from: IpAddr,
    dns: SocketAddr,
    within: Duration,
    want: &[IpAddr],
) -> Duration {
    let start = Instant::now();
    loop {
        if resolve_from(from, dns).await.as_deref() == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "DNS did not answer {want:?} to {from} within {within:?} (last: {:?})",
            resolve_from(from, dns).await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Creates a user through `base`; returns its location, its commit token and how long it took.
async fn create_user(
    http: &reqwest::Client,
    base: SocketAddr,
    n: usize,
) -> (String, String, Duration) {
    let body = json!({"firstName": format!("Far{n}"), "lastName": "Away",
        "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"}});
    let start = Instant::now();
    let resp = http
        .post(format!("http://{base}/users"))
        .json(&body)
        .send()
        .await
        .expect("POST /users");
    let took = start.elapsed();
    assert_eq!(resp.status(), 201, "user {n} is created");
    let location = resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let commit = resp.headers()["strata-commit"]
        .to_str()
        .expect("commit token")
        .to_string();
    (location, commit, took)
}

/// `count` writes acknowledged through `base` (trying again while none is, up to 30 s), and
/// how long each acknowledged one took.
async fn writes_at(http: &reqwest::Client, base: SocketAddr, count: usize) -> Vec<Duration> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut writes = Vec::new();
    while writes.len() < count {
        assert!(
            Instant::now() < deadline,
            "{base} takes no writes: {writes:?}"
        );
        let body = json!({"firstName": "Local", "lastName": "Primary",
            "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"}});
        let start = Instant::now();
        match http
            .post(format!("http://{base}/users"))
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status() == 201 => writes.push(start.elapsed()),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    writes
}

/// Waits (up to 60 s) until `pg-1`, the first data centre's old primary, is a replica again
/// and `us-west`'s `pg-2` the primary.
async fn until_rejoined(dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = dir.to_path_buf();
        let status = tokio::task::spawn_blocking(move || status_json(&d))
            .await
            .expect("join");
        if role(&status, "pg-1")["database"]["role"] == "replica"
            && status["path"]["datacenters"][1]["primary"] == "pg-2"
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pg-1 did not rejoin as a replica: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Once `us-east` is healthy again (its balancer answers its health check) after the primary
/// moved to `us-west`: DNS answers `us-west` only, through several health intervals — its
/// failover order follows the primary rather than the listed order.
async fn keeps_answering_the_primarys_data_centre(
    http: &reqwest::Client,
    east: SocketAddr,
    dns: SocketAddr,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let healthy = http
            .get(format!("http://{east}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if healthy {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "us-east never became healthy again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its checks pass from now on; `rise = 2` would bring it back within three intervals if
    // DNS preferred it. Watch for five.
    let watch_until = Instant::now() + INTERVAL * 5;
    while Instant::now() < watch_until {
        assert_eq!(
            resolve(dns).await,
            Some(vec![WEST]),
            "DNS answers the data centre holding the primary"
        );
        tokio::time::sleep(INTERVAL / 3).await;
    }
}

/// A running two-data-centre deployment, DNS answering `us-east`, with one user created
/// through `us-west` (its location and commit token) by an admin's client.
/// `strata ARGS --dir DIR`, run off the runtime's threads.
async fn strata_in(dir: &std::path::Path, args: &'static [&'static str]) -> std::process::Output {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || strata(args, &dir))
        .await
        .expect("join")
}

/// The same, which must succeed; what it printed.
async fn strata_ok(dir: &std::path::Path, args: &'static [&'static str]) -> String {
    let out = strata_in(dir, args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "strata {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A user's creation through `base` (in data centre `side`), given 2 s, must not be
/// acknowledged: the link it needs is cut.
async fn not_acknowledged(http: &reqwest::Client, base: SocketAddr, side: &str) {
    let body = json!({"firstName": "Split", "lastName": side,
        "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"}});
    let write = http
        .post(format!("http://{base}/users"))
        .json(&body)
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        !write.as_ref().is_ok_and(|r| r.status().is_success()),
        "a write was acknowledged in {side} across the cut link: {write:?}"
    );
}

/// A read of `location` through `base` with `commit` as its read-after token must answer 200:
/// the write is there (on the local replica, or the primary across the link). Its body.
async fn reads_after(
    http: &reqwest::Client,
    base: SocketAddr,
    location: &str,
    commit: &str,
) -> Value {
    let resp = http
        .get(format!("http://{base}{location}"))
        .header("strata-read-after", commit)
        .send()
        .await
        .expect("GET");
    assert_eq!(
        resp.status(),
        200,
        "{location} read after {commit} at {base}"
    );
    resp.json().await.expect("JSON")
}

struct Started {
    west: SocketAddr,
    east: SocketAddr,
    dns: SocketAddr,
    http: reqwest::Client,
    location: String,
    commit: String,
}

async fn started(dir: &std::path::Path, status: &Value) -> Started {
    let west = addr_of(status, "us-west-lb-1", "http");
    let east = addr_of(status, "us-east-lb-1", "http");
    let dns = addr_of(status, "dns-1", "dns");
    until_answers(dns, Duration::from_secs(10), &[EAST]).await;
    let http = admin_client(dir, &west.to_string()).await;
    let (location, commit, _) = create_user(&http, west, 1).await;
    Started {
        west,
        east,
        dns,
        http,
        location,
        commit,
    }
}

/// Thaws frozen roles when the test ends, whatever happens.
struct Thaw(Vec<u32>);
impl Drop for Thaw {
    fn drop(&mut self) {
        for pid in &self.0 {
            strata_engines::process::signal_all(*pid, Signal::SIGCONT);
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_data_centre_writes_across_the_delayed_link_and_takes_over_when_the_first_freezes()
{
    let (_tmp, dir) = up_in_background(TOPOLOGY.to_string()).await;
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let (east, west) = on_one_port(&status, "us-east-lb-1", "us-west-lb-1");
    assert_eq!((east.ip(), west.ip()), (EAST, WEST), "{status:#}");
    let dns = addr_of(&status, "dns-1", "dns");
    assert_eq!(
        role(&status, "us-west-relay-pg-1")["kind"],
        "relay",
        "{status:#}"
    );

    // The layered path, per data centre, with the primary in us-east.
    let dcs = &status["path"]["datacenters"];
    assert_eq!(dcs[0]["name"], "us-east", "{status:#}");
    assert_eq!(dcs[0]["primary"], "pg-1", "{status:#}");
    assert_eq!(dcs[1]["name"], "us-west", "{status:#}");
    assert_eq!(dcs[1]["primary"], Value::Null, "{status:#}");
    assert_eq!(dcs[1]["apis"][0]["name"], "us-west-api-1", "{status:#}");
    let out = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || strata(&["status"], &dir)
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("us-east: pg-1 (primary)\n")
            && text.contains("us-west: pg-2\n")
            && text.contains("→ API pool: us-west-api-1 "),
        "{text}"
    );

    // DNS prefers the first data centre.
    until_answers(dns, Duration::from_secs(10), &[EAST]).await;

    // A write in us-west crosses the link; a local read there does not.
    let http = admin_client(&dir, &west.to_string()).await;
    let mut writes = Vec::new();
    let mut last = None;
    for n in 0..5 {
        let (location, commit, took) = create_user(&http, west, n).await;
        writes.push(took);
        last = Some((location, commit));
    }
    let (location, commit) = last.expect("a user");
    // Read-your-writes in us-west: the commit token brings the write back.
    let user = reads_after(&http, west, &location, &commit).await;
    assert_eq!(user["firstName"], "Far4");
    let mut reads = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        let resp = http
            .get(format!("http://{west}{location}"))
            .send()
            .await
            .expect("GET");
        reads.push(start.elapsed());
        assert_eq!(resp.status(), 200);
    }
    let (fastest_write, read) = (*writes.iter().min().expect("writes"), median(reads));
    eprintln!("us-west: writes {writes:?}, a local read {read:?} (median)");
    let mut east_writes = Vec::new();
    for n in 10..13 {
        east_writes.push(create_user(&http, east, n).await.2);
    }
    eprintln!("us-east, beside the primary: writes {east_writes:?}");
    // Under quorum commit the primary waits for us-west's replica, whose stream crosses the
    // link through its relay too: a commit in us-east costs a round trip of the link.
    assert!(
        *east_writes.iter().min().expect("writes") >= Duration::from_millis(2 * ONE_WAY_MS),
        "replication crosses the link: {east_writes:?}"
    );
    assert!(
        fastest_write >= read + Duration::from_millis(2 * ONE_WAY_MS),
        "a write crosses the link at least once each way: fastest write {fastest_write:?}, \
         local read {read:?}"
    );

    // us-east's stateless roles freeze: DNS answers us-west within its health interval.
    let pids: Vec<u32> = ["us-east-lb-1", "us-east-api-1"]
        .iter()
        .map(|name| role(&status, name)["pid"].as_u64().expect("pid") as u32)
        .collect();
    let _thaw = Thaw(pids.clone());
    for pid in &pids {
        strata_engines::process::signal_all(*pid, Signal::SIGSTOP);
    }
    let bound = INTERVAL * 2 + CHECK_TIMEOUT + Duration::from_secs(2);
    let after = until_answers(dns, bound, &[WEST]).await;
    eprintln!("DNS answered only us-west {after:?} after us-east froze");

    // A client that resolves the name is served in us-west, reads and writes alike.
    let ips = resolve(dns).await.expect("an answer");
    let base = SocketAddr::new(ips[0], west.port());
    let resp = http
        .get(format!("http://{base}{location}"))
        .send()
        .await
        .expect("GET through the answered address");
    assert_eq!(resp.status(), 200);
    let (_, _, took) = create_user(&http, base, 99).await;
    eprintln!("a write in us-west while us-east's stateless roles are frozen took {took:?}");

    // Thawed, us-east is answered again.
    for pid in &pids {
        strata_engines::process::signal_all(*pid, Signal::SIGCONT);
    }
    until_answers(dns, Duration::from_secs(10), &[EAST]).await;
}

/// The published primary once it is not `not` (the cluster state in `DIR/postgres`).
async fn failed_over(dir: &std::path::Path, not: &str, within: Duration) -> (String, Duration) {
    let start = Instant::now();
    loop {
        let text =
            std::fs::read_to_string(dir.join("postgres").join("cluster.json")).unwrap_or_default();
        if let Ok(cluster) = serde_json::from_str::<Value>(&text)
            && let Some(primary) = cluster["primary"].as_str()
            && primary != not
        {
            return (primary.to_string(), start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "no failover away from {not} within {within:?}: {}",
            common::logs(dir, 20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_whole_first_data_centre_freezes_the_second_takes_the_primary_and_the_first_rejoins_as_secondary()
 {
    let (_tmp, dir) = up_in_background(TOPOLOGY.to_string()).await;
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let Started {
        west,
        east,
        dns,
        http,
        location,
        commit,
    } = started(&dir, &status).await;
    // `strata status` shows how far us-west is behind the primary, and that under quorum
    // commit a failover loses nothing.
    let replication = &status_json(&dir)["path"]["datacenters"][1]["replication"];
    assert_eq!(replication["primary"], "pg-1", "{replication:#}");
    assert_eq!(replication["standby"], "pg-2", "{replication:#}");
    assert_eq!(replication["streaming"], true, "{replication:#}");
    assert_eq!(replication["lossPossible"], false, "{replication:#}");
    assert!(replication["behindBytes"].is_u64(), "{replication:#}");

    // The link is cut (`strata datacenter cut`): us-west's relay to pg-1 holds every byte and
    // still accepts connections, so what us-west's API server tries first for the primary
    // answers nothing. And every process of us-east stops — balancer, API server, relay and
    // PostgreSQL primary.
    strata_ok(&dir, &["datacenter", "cut", "us-west", "us-east"]).await;
    let shown = status_json(&dir);
    for (dc, other) in [(0, "us-west"), (1, "us-east")] {
        assert_eq!(
            shown["path"]["datacenters"][dc]["cutFrom"],
            json!([other]),
            "strata status shows the cut: {shown:#}"
        );
    }
    // Cut, the link carries no WAL to us-west's replica: a write in us-east, which quorum
    // commit acknowledges only once that replica has it, is not acknowledged.
    not_acknowledged(&http, east, "us-east").await;
    let east_roles = [
        "us-east-lb-1",
        "us-east-api-1",
        "us-east-relay-pg-2",
        "pg-1",
    ];
    let pids: Vec<u32> = east_roles
        .iter()
        .map(|name| role(&status, name)["pid"].as_u64().expect("pid") as u32)
        .collect();
    let _thaw = Thaw(pids.clone());
    for pid in &pids {
        strata_engines::process::signal_all(*pid, Signal::SIGSTOP);
    }
    let bound = INTERVAL * 2 + CHECK_TIMEOUT + Duration::from_secs(2);
    let after = until_answers(dns, bound, &[WEST]).await;
    eprintln!("DNS answered only us-west {after:?} after us-east froze");
    let (primary, took) = failed_over(&dir, "pg-1", Duration::from_secs(30)).await;
    assert_eq!(primary, "pg-2", "us-west's replica is promoted");
    eprintln!("pg-2 in us-west was promoted {took:?} after us-east froze");
    // Now us-east is the data centre without the primary (once pg-2 answers as one: the
    // cluster file names it as its promotion begins), and nothing there streams from it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = dir.clone();
        let status = tokio::task::spawn_blocking(move || status_json(&d))
            .await
            .expect("join");
        let replication = &status["path"]["datacenters"][0]["replication"];
        if replication["primary"] == "pg-2" {
            assert_eq!(replication["streaming"], false, "{status:#}");
            break;
        }
        assert!(Instant::now() < deadline, "{status:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The acknowledged write is there, and us-west now writes beside its own primary.
    reads_after(&http, west, &location, &commit).await;
    let writes = writes_at(&http, west, 3).await;
    eprintln!("us-west writes beside its new primary, the link cut: {writes:?}");
    assert!(
        *writes.iter().min().expect("writes") < Duration::from_millis(2 * ONE_WAY_MS),
        "a write no longer crosses the link: {writes:?}"
    );

    // Bad input: a link needs two different data centres, both known.
    for (args, says) in [
        (
            &["datacenter", "cut", "us-east"][..],
            "needs the data centres at both ends",
        ),
        (
            &["datacenter", "heal", "us-east", "us-east"][..],
            "is named twice",
        ),
        (
            &["datacenter", "cut", "us-east", "eu-central"][..],
            "no data centre is named \"eu-central\"",
        ),
        (
            &["datacenter", "kill", "us-east", "us-west"][..],
            "takes one data centre",
        ),
    ] {
        let out = strata_in(&dir, args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }

    // us-east returns and the link is joined again: its old primary rejoins as a replica of
    // pg-2; DNS keeps answering us-west, which holds the primary now, though us-east is
    // healthy again.
    for pid in &pids {
        strata_engines::process::signal_all(*pid, Signal::SIGCONT);
    }
    let healed = strata_ok(&dir, &["datacenter", "heal", "us-east", "us-west"]).await;
    assert!(healed.contains("whole again"), "{healed}");
    assert_eq!(
        status_json(&dir)["path"]["datacenters"][1]["cutFrom"],
        json!([])
    );
    until_rejoined(&dir).await;
    keeps_answering_the_primarys_data_centre(&http, east, dns).await;
}

/// The link cut alone (`strata datacenter cut`), both data centres up: a partition, not a
/// failure. Nothing is promoted — the controller still reaches the primary — so there is never
/// a second primary; no write is acknowledged on either side (quorum commit needs us-west's
/// replica; us-west's writes need the primary), while us-west keeps answering reads from its
/// own replica. Healed, writes are acknowledged on both sides again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_alone_promotes_nothing_acknowledges_no_write_and_keeps_local_reads() {
    let (_tmp, dir) = up_in_background(TOPOLOGY.to_string()).await;
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let Started {
        west,
        east,
        http,
        location,
        commit,
        ..
    } = started(&dir, &status).await;
    // us-west's replica has the user before the cut.
    reads_after(&http, west, &location, &commit).await;
    strata_ok(&dir, &["datacenter", "cut", "us-east", "us-west"]).await;
    let cut_at = Instant::now();
    for (side, base) in [("us-east", east), ("us-west", west)] {
        not_acknowledged(&http, base, side).await;
    }
    let resp = http
        .get(format!("http://{west}{location}"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("a local read in us-west during the cut");
    assert_eq!(resp.status(), 200, "us-west reads from its own replica");
    // A failover takes under 2 s here once the primary is unreachable (the freeze test): for
    // twice that since the cut, the primary is still pg-1.
    while cut_at.elapsed() < Duration::from_secs(4) {
        let text =
            std::fs::read_to_string(dir.join("postgres").join("cluster.json")).unwrap_or_default();
        let cluster: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(
            cluster["primary"].is_null() || cluster["primary"] == "pg-1",
            "promoted during a partition: {cluster}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    strata_ok(&dir, &["datacenter", "heal", "us-west", "us-east"]).await;
    let east_writes = writes_at(&http, east, 1).await;
    let west_writes = writes_at(&http, west, 1).await;
    eprintln!("after the heal: a write in us-east {east_writes:?}, in us-west {west_writes:?}");
}

/// `strata chaos --targets link`: the link between the data centres cut under load (for
/// longer than a request's 5 s deadline) and healed: writes fail while it is cut — quorum
/// commit needs the other side — and none acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_cuts_the_link_under_load_and_loses_no_acknowledged_write() {
    let (_tmp, dir) = up_in_background(TOPOLOGY.to_string()).await;
    let _cleanup = Cleanup(&dir);
    let out = strata_in(
        &dir,
        &[
            "chaos",
            "--duration-secs",
            "14",
            "--rate",
            "10",
            "--seed",
            "5",
            "--targets",
            "link",
            "--faults",
            "stop",
            "--min-gap-secs",
            "2",
            "--max-gap-secs",
            "3",
            "--stop-secs",
            "7",
            "--json",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        common::explain("strata chaos", &out, &dir)
    );
    let verdict: Value = serde_json::from_slice(&out.stdout).expect("a JSON verdict");
    assert_eq!(verdict["lost"], 0, "{verdict:#}");
    let faults = verdict["faults"].as_array().expect("faults");
    assert!(
        !faults.is_empty()
            && faults.iter().all(|f| f["detail"]
                .as_str()
                .is_some_and(|d| d.contains("the link between us-"))),
        "every fault cut the link: {verdict:#}"
    );
    assert!(
        verdict["writes"]["failed"].as_u64().is_some_and(|n| n > 0),
        "writes fail while the link is cut: {verdict:#}"
    );
    assert_eq!(
        verdict["acknowledged"], verdict["writes"]["ok"],
        "{verdict:#}"
    );
    // Healed when the run ends.
    assert_eq!(
        status_json(&dir)["path"]["datacenters"][0]["cutFrom"],
        json!([]),
        "the link is whole again"
    );
}

/// `strata datacenter kill us-east`: every process of `us-east` killed (SIGKILL) and held down
/// — the supervisor does not restart it — and, during that outage, `us-west`'s API server
/// killed too (its supervisor restarts it). DNS answers only `us-west`, `pg-2` is promoted, the
/// acknowledged write reads back and `us-west` takes writes, while `us-east`'s roles stay down
/// (`held` in `strata status`). `strata datacenter start us-east` brings them back: `pg-1`
/// rejoins as a replica of `pg-2`, and DNS keeps answering `us-west`, where the primary is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_centre_killed_outright_stays_down_until_started_and_rejoins_as_secondary() {
    let (_tmp, dir) = up_in_background(TOPOLOGY.to_string()).await;
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let Started {
        west,
        east,
        dns,
        http,
        location,
        commit,
    } = started(&dir, &status).await;

    strata_ok(&dir, &["datacenter", "kill", "us-east"]).await;
    let east_roles = [
        "pg-1",
        "us-east-relay-pg-2",
        "us-east-api-1",
        "us-east-lb-1",
    ];
    let east_pids: Vec<u32> = east_roles
        .iter()
        .map(|name| role(&status, name)["pid"].as_u64().expect("pid") as u32)
        .collect();
    // The second fault, during the first: us-west's own API server dies too.
    let west_api = role(&status, "us-west-api-1")["pid"].as_u64().expect("pid") as u32;
    strata_engines::process::signal_all(west_api, Signal::SIGKILL);

    // us-west answers again once its API server is back (restarted by the supervisor) and
    // its balancer's checks pass twice (`rise = 2`): while neither data centre is healthy DNS
    // still answers the first. The bound is generous for a loaded machine; how fast DNS drops
    // a dead data centre is held by the other tests.
    until_answers(dns, Duration::from_secs(30), &[WEST]).await;
    let (primary, took) = failed_over(&dir, "pg-1", Duration::from_secs(30)).await;
    assert_eq!(primary, "pg-2", "us-west's replica is promoted");
    eprintln!("pg-2 in us-west was promoted {took:?} after us-east was killed");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = http
            .get(format!("http://{west}{location}"))
            .header("strata-read-after", &commit)
            .send()
            .await;
        if resp.as_ref().is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the acknowledged write does not read back in us-west: {resp:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writes = writes_at(&http, west, 3).await;
    eprintln!("us-west writes beside its new primary: {writes:?}");

    // us-east stayed down: held, none of its processes alive, none restarted.
    let d = dir.clone();
    let status = tokio::task::spawn_blocking(move || status_json(&d))
        .await
        .expect("join");
    for name in east_roles {
        assert_eq!(role(&status, name)["state"], "held", "{status:#}");
    }
    for pid in east_pids {
        assert!(
            !strata_engines::process::is_alive(pid),
            "a process of us-east survived the kill: {pid}"
        );
    }

    strata_ok(&dir, &["datacenter", "start", "us-east"]).await;
    until_rejoined(&dir).await;
    keeps_answering_the_primarys_data_centre(&http, east, dns).await;
    // Bad input: a data centre that does not exist is named as such, with the ones that do.
    let out = strata_in(&dir, &["datacenter", "kill", "eu-central"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no data centre is named \"eu-central\"") && err.contains("us-east, us-west"),
        "{err}"
    );
}

/// [`TOPOLOGY`] with geo DNS: 127.1.0.0/16 is in Virginia (us-east), 127.2.0.0/16 in
/// California (us-west), as the GeoIP database written into the returned directory says.
fn geo_topology() -> (tempfile::TempDir, String) {
    let geo = tempfile::tempdir().expect("tempdir");
    let geoip = geo.path().join("test.mmdb");
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    std::fs::write(
        &geoip,
        mmdb::build(&[
            (ip("127.1.0.0"), 16, mmdb::city(39.0, -77.5, "US", "NA")),
            (ip("127.2.0.0"), 16, mmdb::city(37.4, -122.1, "US", "NA")),
        ]),
    )
    .expect("write the GeoIP database");
    let topology = TOPOLOGY
        .replace(
            "[dns]\n",
            &format!("[dns]\npolicy = \"geo\"\ngeoip = \"{}\"\n", geoip.display()),
        )
        .replace(
            "name = \"us-east\"\n",
            "name = \"us-east\"\nlatitude = 39.0\nlongitude = -77.5\n",
        )
        .replace(
            "name = \"us-west\"\n",
            "name = \"us-west\"\nlatitude = 37.4\nlongitude = -122.1\n",
        );
    (geo, topology)
}

/// A client in Virginia and one in California, as the geo database places them.
const VIRGINIA: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 1, 0, 1));
const CALIFORNIA: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 2, 0, 1));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_dns_answers_each_client_its_nearest_data_centre_and_the_other_when_that_one_freezes() {
    let (_geo, topology) = geo_topology();
    let (_tmp, dir) = up_in_background(topology.to_string()).await;
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let dns = addr_of(&status, "dns-1", "dns");
    let (virginia, california) = (VIRGINIA, CALIFORNIA);
    let within = Duration::from_secs(10);
    until_answers_from(virginia, dns, within, &[EAST]).await;
    until_answers_from(california, dns, within, &[WEST]).await;

    // us-west's stateless roles freeze: its clients go to us-east within the health interval.
    let pids: Vec<u32> = ["us-west-lb-1", "us-west-api-1"]
        .iter()
        .map(|name| role(&status, name)["pid"].as_u64().expect("pid") as u32)
        .collect();
    let _thaw = Thaw(pids.clone());
    for pid in &pids {
        strata_engines::process::signal_all(*pid, Signal::SIGSTOP);
    }
    let bound = INTERVAL * 2 + CHECK_TIMEOUT + Duration::from_secs(2);
    let after = until_answers_from(california, dns, bound, &[EAST]).await;
    eprintln!("California's clients were sent to us-east {after:?} after us-west froze");
    until_answers_from(virginia, dns, within, &[EAST]).await;
    for pid in &pids {
        strata_engines::process::signal_all(*pid, Signal::SIGCONT);
    }
    until_answers_from(california, dns, within, &[WEST]).await;
}

/// With `[edge]` each data centre runs its own edge in front of its own balancer, and geo DNS
/// hands each client its nearest data centre's edge. A profile both edges hold changes in
/// us-east: the write purges every edge of both data centres, so us-west's serves the new
/// profile at once, not after the 300 s its copy would keep. With the link cut (asynchronous
/// commit, so us-east still writes), a second write's purge reaches us-west's edge, which then
/// fetches the old profile again from us-west's replica and keeps it; once the link heals,
/// us-west's API servers purge their edges again as their replica applies the write, and the
/// edge serves it. Then us-west's balancer freezes:
/// its edge still answers the profile from its store, but fails DNS's health check (which it
/// passes on towards the API servers), so California's clients are sent to us-east's edge;
/// us-west's edge freezing too (the second fault) changes nothing for them; thawed, they are
/// sent back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_dns_hands_out_each_data_centres_edges_and_a_write_purges_them_all() {
    let (_geo, topology) = geo_topology();
    let topology = topology.replace(
        "engine = \"postgres\"\n",
        "engine = \"postgres\"\ncommit = \"async\"\n",
    ) + "[edge]\nprofile_ttl_secs = 300\nprofile_stale_if_error_secs = 300\n";
    let (_tmp, dir) = up_in_background(topology.to_string()).await;
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let dns = addr_of(&status, "dns-1", "dns");
    let (east, west) = on_one_port(&status, "us-east-edge-1", "us-west-edge-1");
    let west_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 12, 101));
    assert_eq!(
        (east.ip(), west.ip()),
        (EAST, west_ip),
        "the edges' addresses"
    );
    let within = Duration::from_secs(10);
    until_answers_from(VIRGINIA, dns, within, &[EAST]).await;
    until_answers_from(CALIFORNIA, dns, within, &[west_ip]).await;

    let http = admin_client(&dir, &east.to_string()).await;
    let (location, commit, _) = create_user(&http, east, 1).await;
    reads_after(&http, west, &location, &commit).await;
    // Both edges hold the profile: the second read at each is a hit.
    for base in [east, west] {
        assert_eq!(first_name_at(&http, base, &location).await, "Far1");
        let hit = http
            .get(format!("http://{base}{location}"))
            .send()
            .await
            .expect("GET");
        let cache = hit.headers()["cache-status"]
            .to_str()
            .unwrap_or_default()
            .to_string();
        assert!(cache.contains("hit"), "{base}: {cache}");
    }
    rename(&http, east, &location, "Renamed").await;
    let took = until_first_name(&http, west, &location, "Renamed", Duration::from_secs(10)).await;
    eprintln!("us-west's edge served the us-east write after {took:?}");
    assert_eq!(first_name_at(&http, east, &location).await, "Renamed");

    // The link cut: the purge of a write in us-east reaches us-west's edge, whose refetch
    // finds us-west's replica without the write; the heal brings it, and a purge with it.
    strata_ok(&dir, &["datacenter", "cut", "us-east", "us-west"]).await;
    rename(&http, east, &location, "DuringCut").await;
    serves_for(&http, west, &location, "Renamed", Duration::from_secs(1)).await;
    strata_ok(&dir, &["datacenter", "heal", "us-west", "us-east"]).await;
    let took = until_first_name(&http, west, &location, "DuringCut", Duration::from_secs(15)).await;
    eprintln!("after the heal, us-west's edge served the write made during the cut after {took:?}");

    // us-west's balancer freezes, then its edge too.
    let pid = |name: &str| role(&status, name)["pid"].as_u64().expect("pid") as u32;
    let (west_lb, west_edge) = (pid("us-west-lb-1"), pid("us-west-edge-1"));
    let _thaw = Thaw(vec![west_lb, west_edge]);
    strata_engines::process::signal_all(west_lb, Signal::SIGSTOP);
    assert_eq!(
        first_name_at(&http, west, &location).await,
        "DuringCut",
        "us-west's edge answers from its store while its balancer is frozen"
    );
    let bound = INTERVAL * 2 + CHECK_TIMEOUT + Duration::from_secs(2);
    let after = until_answers_from(CALIFORNIA, dns, bound, &[EAST]).await;
    eprintln!(
        "California's clients were sent to us-east's edge {after:?} after us-west's balancer froze"
    );
    strata_engines::process::signal_all(west_edge, Signal::SIGSTOP);
    let frozen = Instant::now();
    while frozen.elapsed() < bound {
        assert_eq!(
            resolve_from(CALIFORNIA, dns).await.as_deref(),
            Some(&[EAST][..])
        );
        assert_eq!(first_name_at(&http, east, &location).await, "DuringCut");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for pid in [west_lb, west_edge] {
        strata_engines::process::signal_all(pid, Signal::SIGCONT);
    }
    until_answers_from(CALIFORNIA, dns, within, &[west_ip]).await;
}

/// A user's first name as `base` serves it now (no read-after token: what its caches hold).
async fn first_name_at(http: &reqwest::Client, base: SocketAddr, location: &str) -> String {
    let resp = http
        .get(format!("http://{base}{location}"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200, "GET {location} at {base}");
    let body: Value = resp.json().await.expect("json");
    body["firstName"].as_str().unwrap_or_default().to_string()
}

/// Polls `base` until it serves `want` as the first name, within `limit`; how long it took.
async fn until_first_name(
    http: &reqwest::Client,
    base: SocketAddr,
    location: &str,
    want: &str,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = first_name_at(http, base, location).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{base} still serves {got:?}, not {want:?}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks, every 100 ms for `during`, that `base` keeps serving `want` as the first name (what
/// its data centre's replica holds while the link is cut).
async fn serves_for(
    http: &reqwest::Client,
    base: SocketAddr,
    location: &str,
    want: &str,
    during: Duration,
) {
    let start = Instant::now();
    while start.elapsed() < during {
        assert_eq!(
            first_name_at(http, base, location).await,
            want,
            "{base} serves what its data centre's replica holds"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn rename(http: &reqwest::Client, base: SocketAddr, location: &str, first: &str) {
    let body = json!({"firstName": first, "lastName": "Away",
        "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"}});
    let put = http
        .put(format!("http://{base}{location}"))
        .json(&body)
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status(), 200, "rename to {first} through {base}");
}

/// Each data centre runs its own Redis, and its caches follow its own replica: a write made in
/// us-east reaches us-west's caches once us-west's replica has applied it — nothing is
/// published across the link. With the link cut (asynchronous commit, so us-east still
/// writes), us-west keeps serving what its replica holds; its cache server killed during the
/// cut (the second fault) comes back empty, and once the link heals us-west serves the write
/// made during the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_data_centres_cache_follows_its_own_replica_through_a_cut_link() {
    let topology = TOPOLOGY.replace(
        "engine = \"postgres\"\n",
        "engine = \"postgres\"\ncommit = \"async\"\n",
    ) + "[cache]\nengine = \"redis\"\nnodes = 1\n";
    let (_tmp, dir) = up_in_background(topology.to_string()).await;
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    for cache in ["us-east-cache-1", "us-west-cache-1"] {
        assert_eq!(role(&status, cache)["state"], "ready", "{cache}");
    }
    let Started {
        west,
        east,
        http,
        location,
        commit,
        ..
    } = started(&dir, &status).await;
    // us-west's replica has the user; both data centres cache it.
    reads_after(&http, west, &location, &commit).await;
    for base in [west, east, west, east] {
        assert_eq!(first_name_at(&http, base, &location).await, "Far1");
    }

    // A write in us-east: us-west's caches hear nothing from us-east, yet serve it once its
    // replica has it (its L1 alone would keep the old copy for 10 minutes).
    rename(&http, east, &location, "Renamed").await;
    let took = until_first_name(&http, west, &location, "Renamed", Duration::from_secs(5)).await;
    eprintln!("us-west served the us-east write after {took:?}");
    assert_eq!(first_name_at(&http, east, &location).await, "Renamed");

    // The link cut: us-east writes (asynchronous commit), us-west keeps its replica's value.
    strata_ok(&dir, &["datacenter", "cut", "us-east", "us-west"]).await;
    rename(&http, east, &location, "DuringCut").await;
    let west_cache = role(&status, "us-west-cache-1")["pid"]
        .as_u64()
        .expect("pid") as u32;
    strata_engines::process::signal_all(west_cache, Signal::SIGKILL);
    serves_for(&http, west, &location, "Renamed", Duration::from_secs(2)).await;
    strata_ok(&dir, &["datacenter", "heal", "us-west", "us-east"]).await;
    let took = until_first_name(&http, west, &location, "DuringCut", Duration::from_secs(10)).await;
    eprintln!("after the heal, us-west served the write made during the cut after {took:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = status_json(&dir);
        let cache = role(&status, "us-west-cache-1");
        if cache["state"] == "ready" && cache["pid"].as_u64() != Some(u64::from(west_cache)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed cache server was not restarted: {cache}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
