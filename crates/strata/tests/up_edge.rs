//! CDN edges in a topology: `strata up` with `[edge] count = 2, shield = true` puts `edge-1` on
//! the public port and both edges in front of `edge-shield`, which alone fetches from the
//! balancer. A photo uploaded through the public entry is resized by the worker; its
//! content-addressed image, asked of both edges, costs the origin one fetch; `edge-1`, killed
//! with SIGKILL and restarted by the supervisor, answers it from its disk store without asking
//! anyone. Profiles are kept by the edges (`CDN-Cache-Control`), and a write through the API
//! purges them from every edge — here while `edge-2`, which holds a copy on disk, is down: the
//! purge is retried until it is back on its new admin port. The edges also speak HTTPS
//! (`tls_port`, `dev_cert`): edge-2 serves the image it holds over TLS. Last, `strata edge purge
//! --dir` purges the photos from the shield and both edges. The live dashboard runs too
//! (`[observe] dashboard = true`, routed by `[edge] dashboard = true`): both edges serve it at `/dashboard/`, straight from
//! `dashboard-1` (the shield never asked), its page stored and revalidated with a 304, its
//! snapshot never stored, its event stream passed on as it comes — also from edge-1 once it is
//! restarted. List pages are purged by a PATCH and by a create. Last, a photo's redirect, kept
//! by the edges, is purged by the worker that makes a new photo the user's.

mod common;

use std::time::{Duration, Instant};

use common::{
    Cleanup, addr, admin_client, edge_counter, processed_photo, role, status_json, up_topology,
};
use serde_json::Value;
use strata_photos::testdata;
use strata_photos::upload::Format;

const TOPOLOGY: &str = "name = \"edges\"\n[edge]\ncount = 2\nshield = true\nmemory_mib = 64\n\
    disk_mib = 64\ntls_port = 0\ndev_cert = true\ndashboard = true\n[lb]\n[api]\ncount = 2\n[workers]\ncount = 1\n\
    [observe]\ndashboard = true\n";

/// The name clients give the service (the `Host` of their requests), whichever edge they reach.
const SERVICE: &str = "strata.test";

/// The dashboard's snapshot through an edge, once it holds the roles (polled until a
/// deadline); its `Cache-Status` must say it was not stored.
async fn dashboard_snapshot(http: &reqwest::Client, edge: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http
            .get(format!("http://{edge}/dashboard/api/snapshot"))
            .send()
            .await
            .expect("GET /dashboard/api/snapshot");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["cache-control"], "no-store");
        let cache = r.headers()["cache-status"]
            .to_str()
            .unwrap_or("")
            .to_owned();
        assert_eq!(cache, "strata-edge; fwd=miss", "never stored");
        let snap: Value = r.json().await.expect("snapshot json");
        if snap["roles"].as_array().is_some_and(|r| !r.is_empty()) {
            return snap;
        }
        assert!(
            Instant::now() < deadline,
            "no roles in the snapshot: {snap}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The dashboard's first server-sent event through an edge, within a deadline.
async fn dashboard_event(http: &reqwest::Client, edge: &str) -> String {
    let first = async {
        let mut r = http
            .get(format!("http://{edge}/dashboard/events"))
            .send()
            .await
            .expect("GET /dashboard/events");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let chunk = r
            .chunk()
            .await
            .expect("a chunk")
            .expect("the stream goes on");
        String::from_utf8_lossy(&chunk).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("the first event arrives while the stream goes on")
}

/// The deployment's status once `name`, whose process was `old_pid`, runs again and is healthy.
async fn restarted(dir: &std::path::Path, name: &'static str, old_pid: i32) -> Value {
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = status_json(&d);
            let r = role(&s, name);
            if r["pid"].as_u64().is_some_and(|p| p as i32 != old_pid) && r["healthy"] == true {
                return s;
            }
            assert!(Instant::now() < deadline, "{name} is not back: {s:#}");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .expect("join")
}

/// A `200` JSON answer of the service through `edge`, with its `Cache-Status`.
async fn json_through(plain: &reqwest::Client, edge: &str, path: &str) -> (Value, String) {
    let r = plain
        .get(format!("http://{edge}{path}"))
        .header("host", SERVICE)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(r.status().as_u16(), 200, "GET {path}");
    let cache = r.headers()["cache-status"]
        .to_str()
        .unwrap_or("")
        .to_owned();
    (r.json().await.expect("json"), cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_behind_a_shield_cost_one_origin_fetch_survive_a_kill_and_are_purged_by_writes() {
    // The repository's documentation, served by the edges themselves at /docs/.
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let topology = TOPOLOGY.replacen(
        "[edge]\n",
        &format!(
            "[edge]\nstatic_dir = \"{}\"\nstatic_prefix = \"/docs/\"\n",
            docs.display()
        ),
        1,
    );
    let (_tmp, dir) = tokio::task::spawn_blocking(move || up_topology(&topology))
        .await
        .expect("join");
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    for name in ["edge-shield", "edge-1", "edge-2"] {
        assert_eq!(role(&status, name)["kind"], "edge", "{status:#}");
        assert_eq!(role(&status, name)["healthy"], true, "{status:#}");
    }
    let public = addr(&status, "edge-1", "http");
    let edge2 = addr(&status, "edge-2", "http");
    let admins = ["edge-shield", "edge-1", "edge-2"].map(|n| addr(&status, n, "admin"));
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");

    // Static files: answered by each edge clients reach, the shield (and the origin) never
    // asked.
    let fetched = edge_counter(&plain, &admins[0], "strata_edge_origin_fetches_total", None).await;
    for edge in [&public, &edge2] {
        let r = plain
            .get(format!("http://{edge}/docs/edge.md"))
            .send()
            .await
            .expect("GET /docs/edge.md");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.headers()["cache-control"].to_str().ok(),
            Some("public, max-age=3600")
        );
        let text = r.text().await.expect("body");
        assert!(
            text.starts_with("# CDN edge"),
            "{}",
            &text[..text.len().min(80)]
        );
    }
    assert_eq!(
        edge_counter(&plain, &admins[0], "strata_edge_origin_fetches_total", None).await,
        fetched,
        "the shield fetched nothing for static files"
    );

    // The live dashboard on the public entry, and on edge-2: straight from dashboard-1.
    assert_eq!(
        status["dashboard"]["public"][0],
        format!("http://{public}/dashboard/"),
        "strata status says where: {status:#}"
    );
    let r = plain
        .get(format!("http://{public}/dashboard"))
        .send()
        .await
        .expect("GET /dashboard");
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(r.headers()["location"], "/dashboard/");
    for (edge, admin) in [(&public, &admins[1]), (&edge2, &admins[2])] {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let r = plain
                .get(format!("http://{edge}/dashboard/"))
                .send()
                .await
                .expect("GET /dashboard/");
            assert_eq!(r.status().as_u16(), 200);
            assert_eq!(r.headers()["cache-control"], "no-cache");
            assert!(r.headers().contains_key("etag"));
            seen.push(
                r.headers()["cache-status"]
                    .to_str()
                    .unwrap_or("")
                    .to_owned(),
            );
            let page = r.text().await.expect("page");
            assert!(
                page.contains("EventSource(\"events\")"),
                "the page, relative URLs"
            );
        }
        assert!(seen[0].contains("fwd=miss; stored"), "{edge}: {seen:?}");
        assert!(
            seen[1].contains("fwd=stale; fwd-status=304"),
            "revalidated: {seen:?}"
        );
        let snap = dashboard_snapshot(&plain, edge).await;
        assert!(
            snap["roles"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["name"] == "edge-shield")),
            "{snap}"
        );
        let event = dashboard_event(&plain, edge).await;
        assert!(event.starts_with("data: "), "{event}");
        assert_eq!(
            edge_counter(
                &plain,
                admin,
                "strata_edge_not_stored_total",
                Some("event-stream")
            )
            .await,
            1,
            "the event stream passed on, not stored"
        );
    }
    assert_eq!(
        edge_counter(&plain, &admins[0], "strata_edge_origin_fetches_total", None).await,
        fetched,
        "the shield was not asked for the dashboard"
    );

    // The whole path through the public entry: accounts, the upload, the worker.
    let admin = admin_client(&dir, &public).await;
    let r = admin
        .put(format!("http://{public}/users/12/photo"))
        .header("content-type", "image/png")
        .body(testdata::image(Format::Png, 640, 480))
        .send()
        .await
        .expect("PUT photo");
    assert_eq!(
        r.status().as_u16(),
        202,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let image = processed_photo(&plain, &public, "12", 128, &dir).await;
    assert!(image.starts_with("/photos/"), "{image}");

    // Asked of edge-1 twice and of edge-2 once, by the one name clients use for the service
    // (as DNS would send them to either edge): one fetch from the origin, by the shield.
    let origin_before =
        edge_counter(&plain, &admins[0], "strata_edge_origin_fetches_total", None).await;
    let mut bodies = Vec::new();
    for edge in [&public, &public, &edge2] {
        let r = plain
            .get(format!("http://{edge}{image}"))
            .header("host", SERVICE)
            .send()
            .await
            .expect("GET image");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        bodies.push(r.bytes().await.expect("bytes"));
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "one image everywhere"
    );
    let decoded = testdata::decode(&bodies[0]);
    assert_eq!((decoded.width(), decoded.height()), (128, 96));
    let origin_after =
        edge_counter(&plain, &admins[0], "strata_edge_origin_fetches_total", None).await;
    assert_eq!(
        origin_after - origin_before,
        1,
        "a miss on both edges costs the origin one fetch"
    );
    assert_eq!(
        edge_counter(
            &plain,
            &admins[1],
            "strata_edge_requests_total",
            Some("\"hit\"")
        )
        .await,
        1,
        "edge-1's second request was a hit"
    );

    // The same image over HTTPS from edge-2, trusting the certificate it wrote for clients: a
    // hit on the copy it holds, with no fetch.
    let pem = std::fs::read(dir.join("edge-2-dev-cert.pem")).expect("edge-2's certificate");
    let tls = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("TLS client");
    let https = addr(&status, "edge-2", "https");
    let edge2_fetches =
        edge_counter(&plain, &admins[2], "strata_edge_origin_fetches_total", None).await;
    let r = tls
        .get(format!("https://{https}{image}"))
        .header("host", SERVICE)
        .send()
        .await
        .expect("GET image over HTTPS");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.bytes().await.expect("bytes"), bodies[0]);
    assert_eq!(
        edge_counter(&plain, &admins[2], "strata_edge_origin_fetches_total", None).await,
        edge2_fetches,
        "served from edge-2's copy, not fetched from the shield"
    );
    assert_eq!(
        edge_counter(&plain, &admins[0], "strata_edge_origin_fetches_total", None).await,
        origin_after,
        "and nothing from the origin"
    );

    // edge-1 killed outright: the supervisor restarts it on the public port, and it answers
    // from its disk store without a fetch.
    let pid = role(&status, "edge-1")["pid"].as_u64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 edge-1");
    let status = restarted(&dir, "edge-1", pid).await;
    assert_eq!(
        addr(&status, "edge-1", "http"),
        public,
        "the same public entry"
    );
    let admin1 = addr(&status, "edge-1", "admin");
    let shield_before =
        edge_counter(&plain, &admins[0], "strata_edge_origin_fetches_total", None).await;
    let r = plain
        .get(format!("http://{public}{image}"))
        .header("host", SERVICE)
        .send()
        .await
        .expect("GET image after the restart");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.bytes().await.expect("bytes"), bodies[0]);
    assert_eq!(
        edge_counter(&plain, &admin1, "strata_edge_origin_fetches_total", None).await,
        0,
        "answered from the disk store"
    );
    assert_eq!(
        edge_counter(&plain, &admins[0], "strata_edge_origin_fetches_total", None).await,
        shield_before
    );
    // The restarted edge-1 still routes the dashboard.
    dashboard_snapshot(&plain, &public).await;

    // Profiles: the edges keep them (CDN-Cache-Control), and a write purges them from every edge —
    // here while edge-2, which holds a copy, is down: the purge is retried until it is back.
    let get_profile = |edge: String| {
        let plain = plain.clone();
        async move {
            let (v, cache) = json_through(&plain, &edge, "/users/12").await;
            (v["lastName"].as_str().unwrap_or("").to_owned(), cache)
        }
    };
    for edge in [&public, &edge2] {
        get_profile(edge.clone()).await;
        let (name, cache) = get_profile(edge.clone()).await;
        assert_eq!(name, "Smith");
        assert!(cache.contains("hit"), "kept by the edge: {cache}");
    }
    // A page of `GET /users` is kept too (tagged `users-list`), and any user's write purges it.
    let list_page = |edge: String| {
        let plain = plain.clone();
        async move {
            let (v, cache) = json_through(&plain, &edge, "/users?limit=5").await;
            let twelve = v["users"]
                .as_array()
                .and_then(|users| users.iter().find(|u| u["id"] == 12))
                .map(|u| u["lastName"].as_str().unwrap_or("").to_owned());
            (twelve, cache)
        }
    };
    list_page(public.clone()).await;
    let (twelve, cache) = list_page(public.clone()).await;
    assert_eq!(
        twelve.as_deref(),
        Some("Smith"),
        "user 12 is on the first page"
    );
    assert!(
        cache.contains("hit"),
        "the page is kept by the edge: {cache}"
    );
    let pid2 = role(&status, "edge-2")["pid"].as_u64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid2),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 edge-2");
    let r = admin
        .patch(format!("http://{public}/users/12"))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"lastName": "Purged"}"#)
        .send()
        .await
        .expect("PATCH");
    assert_eq!(
        r.status().as_u16(),
        200,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let written = Instant::now();
    let status = restarted(&dir, "edge-2", pid2).await;
    let edge2 = addr(&status, "edge-2", "http");
    let admin2 = addr(&status, "edge-2", "admin");
    for edge in [public.clone(), edge2.clone()] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (name, _) = get_profile(edge.clone()).await;
            if name == "Purged" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{edge} still answers {name:?} {:?} after the write (the copy would keep 60 s)",
                written.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (twelve, _) = list_page(public.clone()).await;
        if twelve.as_deref() == Some("Purged") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the list page still shows {twelve:?} {:?} after the write",
            written.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        written.elapsed() < Duration::from_secs(40),
        "purged, not expired"
    );
    assert!(
        edge_counter(&plain, &admin2, "strata_edge_purges_total", None).await >= 1,
        "the restarted edge-2 was purged"
    );

    // A create purges the list pages too: a page that holds every user shows the new one at
    // once, not after the page's 60 s.
    let everyone = || {
        let plain = plain.clone();
        let public = public.clone();
        async move {
            let (v, cache) = json_through(&plain, &public, "/users?limit=100").await;
            let ids: Vec<Value> = v["users"]
                .as_array()
                .map(|users| users.iter().map(|u| u["id"].clone()).collect())
                .unwrap_or_default();
            (ids, cache)
        }
    };
    everyone().await;
    let (before, cache) = everyone().await;
    assert!(cache.contains("hit"), "the page is kept: {cache}");
    assert!(before.len() < 100, "one page holds every user: {before:?}");
    let r = admin
        .post(format!("http://{public}/users"))
        .json(
            &serde_json::json!({"firstName": "Newly", "lastName": "Created",
            "address": {"streetAddress": "1 Edge St", "city": "Cachetown", "state": "TS",
                "postalCode": "00501"},
            "phoneNumbers": []}),
        )
        .send()
        .await
        .expect("POST /users");
    assert_eq!(r.status().as_u16(), 201);
    let created: Value = r.json().await.expect("the new user");
    let created_at = Instant::now();
    let deadline = created_at + Duration::from_secs(20);
    loop {
        let (ids, _) = everyone().await;
        if ids.contains(&created["id"]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page still lacks user {} {:?} after its creation",
            created["id"],
            created_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An operator's purge of the whole deployment, by its directory: the photo leaves the
    // shield and both edges (each answers with what it purged), so edge-1 fetches it again.
    let d = dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        common::strata(&["edge", "purge", "--prefix", "/photos/"], &d)
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        common::explain("purge --dir", &out, &dir)
    );
    let answers = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        answers.lines().count(),
        3,
        "the shield and two edges: {answers}"
    );
    let fetches = edge_counter(&plain, &admin1, "strata_edge_origin_fetches_total", None).await;
    let r = plain
        .get(format!("http://{public}{image}"))
        .header("host", SERVICE)
        .send()
        .await
        .expect("GET image after the purge");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        edge_counter(&plain, &admin1, "strata_edge_origin_fetches_total", None).await,
        fetches + 1,
        "purged from edge-1: fetched again"
    );

    // A photo's redirect is kept by the edges too, under the user's key: the worker that makes
    // a new photo the user's purges it, so the edge points at the new image at once, not after
    // the 60 s it may keep it.
    let redirect = || {
        let plain = plain.clone();
        let public = public.clone();
        async move {
            let r = plain
                .get(format!("http://{public}/users/12/photo?size=128"))
                .header("host", SERVICE)
                .send()
                .await
                .expect("GET photo redirect");
            assert_eq!(r.status().as_u16(), 307);
            let header = |name: &str| {
                r.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            (header("location"), header("cache-status"))
        }
    };
    redirect().await;
    let (location, cache) = redirect().await;
    assert_eq!(location, image);
    assert!(cache.contains("hit"), "the redirect is kept: {cache}");
    let r = admin
        .put(format!("http://{public}/users/12/photo"))
        .header("content-type", "image/png")
        .body(testdata::image(Format::Png, 300, 300))
        .send()
        .await
        .expect("PUT a new photo");
    assert_eq!(r.status().as_u16(), 202);
    let uploaded = Instant::now();
    let deadline = uploaded + Duration::from_secs(20);
    let moved = loop {
        let (location, _) = redirect().await;
        if location != image {
            break location;
        }
        assert!(
            Instant::now() < deadline,
            "edge-1 still points at the old image {:?} after the upload (its copy would keep 60 s)",
            uploaded.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let r = plain
        .get(format!("http://{public}{moved}"))
        .header("host", SERVICE)
        .send()
        .await
        .expect("GET the new image");
    assert_eq!(r.status().as_u16(), 200);
    let decoded = testdata::decode(&r.bytes().await.expect("bytes"));
    assert_eq!((decoded.width(), decoded.height()), (128, 128));
}
