//! Every origin down behind the CDN edges: `strata up` with two edges and a shield in front of
//! a balancer and two API servers, profiles kept 1 s (`profile_ttl_secs = 1`) and served stale
//! for 10 minutes while the origin fails (`profile_stale_if_error_secs = 600`, sent as
//! `CDN-Cache-Control`, RFC 9213). Profiles and a photo are read through both edges, then the
//! balancer and every API server are frozen (SIGSTOP: the origin accepts connections and never
//! answers), and, during that first fault, the balancer is killed and stays down (its
//! supervisor frozen too: connections are refused). Through both faults every cached profile
//! and the photo are answered 200 with the body they had, marked stale (`Cache-Status: …;
//! detail=stale-if-error`, from the edge or the shield that served it), while a profile never
//! cached gets a problem answer (502 or 504) within the edge's origin timeout, not a hang. Then
//! the origin comes back, and a write is purged and its new value served.
//!
//! Without stale-if-error on profiles (as when they were sent `must-revalidate, s-maxage`),
//! the edges answer those profiles with the origin's failure.

mod common;

use std::time::{Duration, Instant};

use common::{
    Cleanup, addr, admin_client, edge_counter, processed_photo, role, status_json, up_topology,
};
use nix::sys::signal::Signal;
use serde_json::Value;
use strata_photos::testdata;
use strata_photos::upload::Format;

const TOPOLOGY: &str = "name = \"origin-down\"\n[edge]\ncount = 2\nshield = true\n\
    memory_mib = 64\ndisk_mib = 0\nprofile_ttl_secs = 1\nprofile_stale_if_error_secs = 600\n\
    [lb]\n[api]\ncount = 2\n[workers]\ncount = 1\n";

/// The name clients give the service, whichever edge they reach.
const SERVICE: &str = "strata.test";
/// Profiles read through the edges before the outage.
const PROFILES: usize = 3;
/// The longest an answer may take during the outage: the edges' origin header timeout (10 s)
/// and some.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

fn pid(status: &Value, name: &str) -> u32 {
    role(status, name)["pid"].as_u64().expect("pid") as u32
}

/// Processes frozen by the test, thawed when it ends however it ends (so `strata down` can
/// stop them).
struct Frozen(Vec<u32>);

impl Frozen {
    fn freeze(&mut self, pid: u32) {
        signal(pid, Signal::SIGSTOP);
        self.0.push(pid);
    }

    fn thaw(&mut self) {
        for pid in self.0.drain(..) {
            signal(pid, Signal::SIGCONT);
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.thaw();
    }
}

/// Signals one process only (the supervisor's children are roles the test handles itself).
fn signal(pid: u32, signal: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

const STALE_IF_ERROR: &str = "strata_edge_stale_served_total{reason=\"stale-if-error\"}";

/// One answer through an edge, in time: status, headers, body.
async fn get(
    http: &reqwest::Client,
    edge: &str,
    path: &str,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let started = Instant::now();
    let r = http
        .get(format!("http://{edge}{path}"))
        .header("host", SERVICE)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} from {edge}: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.expect("body").to_vec();
    assert!(
        started.elapsed() < ANSWER_WITHIN,
        "GET {path} from {edge} took {:?}",
        started.elapsed()
    );
    (status, headers, body)
}

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Asks every edge for every cached profile and the image (all at once), until each answer is
/// a stale one; each must be 200 with the body it had before the outage. Returns how many
/// stale answers there were.
async fn all_served_stale(
    http: &reqwest::Client,
    edges: &[String],
    cached: &[(String, Vec<u8>)],
    image: &(String, Vec<u8>),
    what: &'static str,
) -> usize {
    let mut asks = Vec::new();
    for edge in edges {
        for (path, body) in cached {
            let (http, edge, path, body) = (http.clone(), edge.clone(), path.clone(), body.clone());
            asks.push(tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let (status, h, got) = get(&http, &edge, &path).await;
                    assert_eq!(
                        (status, String::from_utf8_lossy(&got)),
                        (200, String::from_utf8_lossy(&body)),
                        "{what}: {path} from {edge}: {h:?}"
                    );
                    let age: u64 = header(&h, "age").parse().unwrap_or(0);
                    // Past its 1 s of freshness and answered under stale-if-error, the
                    // origin being down: by this edge, or by the shield, whose 304 this edge
                    // took (its entry comes first in Cache-Status, RFC 9211).
                    let cache = header(&h, "cache-status");
                    if cache.contains("detail=stale-if-error") && age > 1 {
                        return;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{what}: {path} from {edge} is never answered stale: {h:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }));
        }
        let (http, edge, image) = (http.clone(), edge.clone(), image.clone());
        asks.push(tokio::spawn(async move {
            let (status, h, got) = get(&http, &edge, &image.0).await;
            assert_eq!(status, 200, "{what}: the image: {h:?}");
            assert!(got == image.1, "{what}: the image changed");
            assert!(header(&h, "cache-status").contains("hit"), "{h:?}");
        }));
    }
    let n = asks.len() - edges.len();
    for ask in asks {
        ask.await.expect("an answer through an edge");
    }
    n
}

/// A profile no edge holds: a problem answer (502 or 504), in time.
async fn uncached_is_a_problem(http: &reqwest::Client, edge: &str, path: &str, what: &str) {
    let (status, h, body) = get(http, edge, path).await;
    assert!(
        status == 502 || status == 504,
        "{what}: {path}: {status} {h:?} {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(header(&h, "content-type"), "application/problem+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_profiles_and_photos_are_served_stale_while_every_origin_is_down() {
    let (_tmp, dir) = tokio::task::spawn_blocking(|| up_topology(TOPOLOGY))
        .await
        .expect("join");
    let _cleanup = Cleanup(&dir);
    let mut frozen = Frozen(Vec::new());
    let status = status_json(&dir);
    let public = addr(&status, "edge-1", "http");
    let edges = [public.clone(), addr(&status, "edge-2", "http")];
    let admins = ["edge-shield", "edge-1", "edge-2"].map(|n| addr(&status, n, "admin"));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");

    // Profiles (one more than is read: it is never cached) and a photo.
    let admin = admin_client(&dir, &public).await;
    let mut paths = Vec::new();
    for i in 0..=PROFILES {
        let r = admin
            .post(format!("http://{public}/users"))
            .json(
                &serde_json::json!({"firstName": format!("Stale{i}"), "lastName": "Cached",
                "address": {"streetAddress": "1 Edge Way", "city": "Cachetown", "state": "CT",
                "postalCode": "06101"}, "phoneNumbers": []}),
            )
            .send()
            .await
            .expect("POST /users");
        assert_eq!(r.status().as_u16(), 201);
        paths.push(
            r.headers()["location"]
                .to_str()
                .expect("location")
                .to_owned(),
        );
    }
    let uncached = paths.pop().expect("one more");
    let photo_of = &paths[0];
    let r = admin
        .put(format!("http://{public}{photo_of}/photo"))
        .header("content-type", "image/png")
        .body(testdata::image(Format::Png, 320, 240))
        .send()
        .await
        .expect("PUT photo");
    assert_eq!(r.status().as_u16(), 202);
    let user = photo_of.trim_start_matches("/users/");
    let image_path = processed_photo(&http, &public, user, 64, &dir).await;

    // Read through both edges: each edge and the shield hold every one.
    let mut cached = Vec::new();
    for path in &paths {
        let mut bodies = Vec::new();
        for edge in &edges {
            let (status, h, body) = get(&http, edge, path).await;
            assert_eq!(status, 200);
            assert!(
                header(&h, "cdn-cache-control").contains("stale-if-error=600"),
                "{h:?}"
            );
            assert_eq!(
                header(&h, "cache-control"),
                "no-cache",
                "browsers revalidate"
            );
            bodies.push(body);
        }
        assert_eq!(bodies[0], bodies[1]);
        cached.push((path.clone(), bodies.swap_remove(0)));
    }
    let (_, _, image_body) = get(&http, &edges[0], &image_path).await;
    get(&http, &edges[1], &image_path).await;
    let image = (image_path, image_body);

    // The first fault: the balancer and every API server frozen (the supervisor too, so that
    // nothing is restarted behind the test's back).
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).expect("state.json"))
            .expect("state JSON");
    let supervisor = state["supervisor_pid"].as_u64().expect("supervisor pid") as u32;
    frozen.freeze(supervisor);
    let lb = pid(&status, "lb-1");
    frozen.freeze(lb);
    for api in ["api-1", "api-2"] {
        frozen.freeze(pid(&status, api));
    }
    let stale_before = {
        let mut n = 0;
        for a in &admins {
            n += edge_counter(&http, a, STALE_IF_ERROR, None).await;
        }
        n
    };
    let asked = all_served_stale(&http, &edges, &cached, &image, "origin frozen").await;
    uncached_is_a_problem(&http, &public, &uncached, "origin frozen").await;

    // The second fault during the first: the balancer killed, and nothing restarts it.
    signal(lb, Signal::SIGKILL);
    let asked_refused = all_served_stale(&http, &edges, &cached, &image, "origin refused").await;
    let started = Instant::now();
    uncached_is_a_problem(&http, &edges[1], &uncached, "origin refused").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a refused connection fails at once: {:?}",
        started.elapsed()
    );
    let mut stale_after = 0;
    for a in &admins {
        stale_after += edge_counter(&http, a, STALE_IF_ERROR, None).await;
    }
    assert!(
        stale_after - stale_before >= (asked + asked_refused) as u64,
        "every stale answer is counted by the edge that gave it: {} for {}",
        stale_after - stale_before,
        asked + asked_refused
    );

    // The origin back: the supervisor restarts the balancer; a write is purged from every
    // edge and its new value served.
    frozen.thaw();
    let d = dir.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = status_json(&d);
            let back = role(&s, "lb-1")["pid"]
                .as_u64()
                .is_some_and(|p| p as u32 != lb)
                && ["lb-1", "api-1", "api-2"]
                    .iter()
                    .all(|n| role(&s, n)["healthy"] == true);
            if back {
                return;
            }
            assert!(Instant::now() < deadline, "the origin is not back: {s:#}");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .expect("join");
    let (path, _) = &cached[1];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = admin
            .patch(format!("http://{public}{path}"))
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"lastName": "Written"}"#)
            .send()
            .await
            .expect("PATCH");
        if r.status().as_u16() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the write is refused after the outage: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for edge in &edges {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, _, body) = get(&http, edge, path).await;
            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
            if status == 200 && v["lastName"] == "Written" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{edge} still answers {status} {v} after the write"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (status, _, _) = get(&http, &public, &uncached).await;
    assert_eq!(status, 200, "the profile never cached is served again");
}
