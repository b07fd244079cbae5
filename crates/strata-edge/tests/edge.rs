//! The edge over real sockets: a scripted origin on a free loopback port, a real edge in
//! front of it, and an HTTP client. Each test checks one rule of docs/edge.md's table.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Origin, Reply, TestEdge, cache_status, client, eventually, get, metric};
use serde_json::json;

const CACHEABLE: &[(&str, &str)] = &[("cache-control", "max-age=60")];
/// The site's name, for tests whose edge restarts on another port.
const HOST: &[(&str, &str)] = &[("host", "cdn.test")];

#[tokio::test]
async fn a_fresh_response_is_served_from_the_cache_with_its_age() {
    let origin = Origin::start().await;
    origin.set(
        "/a",
        Reply::ok("hello", &[("cache-control", "max-age=60"), ("age", "7")]),
    );
    let edge = TestEdge::start(origin.addr, None).await;
    let (s1, h1, b1) = get(&edge.url("/a"), &[]).await;
    assert_eq!((s1, b1.as_str()), (200, "hello"));
    assert!(cache_status(&h1).contains("fwd=miss; stored"), "{h1:?}");
    assert_eq!(h1["via"], "1.1 strata-edge");
    assert_eq!(
        origin.last("/a").expect("seen").headers["via"],
        "1.1 strata-edge"
    );
    let (s2, h2, b2) = get(&edge.url("/a"), &[]).await;
    assert_eq!((s2, b2.as_str()), (200, "hello"));
    assert!(cache_status(&h2).starts_with("strata-edge; hit"), "{h2:?}");
    let age: u64 = h2["age"].to_str().expect("age").parse().expect("number");
    assert!(age >= 7, "the age counts the origin's Age too: {age}");
    assert_eq!(origin.hits("/a"), 1);
}

#[tokio::test]
async fn s_maxage_governs_the_edge_and_expires_counts_without_max_age() {
    let origin = Origin::start().await;
    origin.set(
        "/s",
        Reply::ok("s", &[("cache-control", "max-age=0, s-maxage=60")]),
    );
    origin.set(
        "/e",
        Reply::ok("e", &[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")]),
    );
    origin.set(
        "/bad",
        Reply::ok("b", &[("expires", "0"), ("etag", "\"b\"")]),
    );
    let edge = TestEdge::start(origin.addr, None).await;
    for path in ["/s", "/e", "/bad"] {
        get(&edge.url(path), &[]).await;
        get(&edge.url(path), &[]).await;
    }
    assert_eq!(origin.hits("/s"), 1, "s-maxage=60 overrides max-age=0");
    assert_eq!(origin.hits("/e"), 1, "a future Expires gives freshness");
    assert_eq!(
        origin.hits("/bad"),
        2,
        "an invalid Expires means already expired"
    );
    let (_, h, _) = get(&edge.url("/bad"), &[]).await;
    assert!(
        cache_status(&h).contains("fwd-status=304"),
        "it is revalidated: {h:?}"
    );
}

#[tokio::test]
async fn private_no_store_set_cookie_and_vary_star_are_never_stored() {
    let origin = Origin::start().await;
    origin.set(
        "/private",
        Reply::ok("mine", &[("cache-control", "private, max-age=60")]),
    );
    origin.set(
        "/no-store",
        Reply::ok("x", &[("cache-control", "no-store")]),
    );
    origin.set(
        "/cookie",
        Reply::ok(
            "x",
            &[("cache-control", "max-age=60"), ("set-cookie", "s=1")],
        ),
    );
    origin.set(
        "/star",
        Reply::ok("x", &[("cache-control", "max-age=60"), ("vary", "*")]),
    );
    origin.set(
        "/conflict",
        Reply::ok("x", &[("cache-control", "max-age=60, max-age=3600")]),
    );
    let edge = TestEdge::start(origin.addr, None).await;
    for path in ["/private", "/no-store", "/cookie", "/star", "/conflict"] {
        for _ in 0..2 {
            let (status, h, _) = get(&edge.url(path), &[]).await;
            assert_eq!(status, 200);
            assert_eq!(cache_status(&h), "strata-edge; fwd=miss", "{path}");
        }
        assert_eq!(origin.hits(path), 2, "{path} is not stored");
    }
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, "strata_edge_not_stored_total{reason=\"forbidden\"}"),
        4.0
    );
    assert_eq!(
        metric(&m, "strata_edge_not_stored_total{reason=\"set-cookie\"}"),
        2.0
    );
    assert_eq!(
        metric(&m, "strata_edge_not_stored_total{reason=\"vary-star\"}"),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "strata_edge_not_stored_total{reason=\"conflicting-freshness\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn an_authorized_request_is_stored_only_when_the_response_allows_it() {
    let origin = Origin::start().await;
    origin.set("/me", Reply::ok("me", CACHEABLE));
    origin.set(
        "/pub",
        Reply::ok("pub", &[("cache-control", "public, max-age=60")]),
    );
    let edge = TestEdge::start(origin.addr, None).await;
    let auth = [("authorization", "Bearer secret")];
    get(&edge.url("/me"), &auth).await;
    let (_, _, body) = get(&edge.url("/me"), &[]).await;
    assert_eq!(body, "me");
    assert_eq!(
        origin.hits("/me"),
        2,
        "an answer to an authorized request is not stored"
    );
    get(&edge.url("/pub"), &auth).await;
    get(&edge.url("/pub"), &[]).await;
    assert_eq!(
        origin.hits("/pub"),
        1,
        "public allows it (RFC 9111 section 3.5)"
    );
}

#[tokio::test]
async fn vary_keeps_a_variant_per_normalized_accept_encoding() {
    let origin = Origin::start().await;
    origin.set(
        "/v",
        Reply::ok(
            "v",
            &[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
        ),
    );
    let edge = TestEdge::start(origin.addr, None).await;
    get(&edge.url("/v"), &[("accept-encoding", "gzip, deflate")]).await;
    let seen = origin.last("/v").expect("seen");
    assert_eq!(
        seen.headers["accept-encoding"], "gzip",
        "the origin sees the normalized value"
    );
    let (_, h, _) = get(
        &edge.url("/v"),
        &[("accept-encoding", "deflate, GZIP;q=0.9")],
    )
    .await;
    assert!(cache_status(&h).contains("hit"), "the same variant: {h:?}");
    assert_eq!(origin.hits("/v"), 1);
    get(&edge.url("/v"), &[("accept-encoding", "br")]).await;
    get(&edge.url("/v"), &[]).await;
    assert_eq!(
        origin.hits("/v"),
        3,
        "br and identity are variants of their own"
    );
    let (_, h, _) = get(&edge.url("/v"), &[("accept-encoding", "br;q=1")]).await;
    assert!(cache_status(&h).contains("hit"));
    assert_eq!(origin.hits("/v"), 3);
}

#[tokio::test]
async fn a_stale_object_is_revalidated_and_the_304_updates_its_headers() {
    let origin = Origin::start().await;
    origin.set(
        "/r",
        Reply::ok(
            "body",
            &[
                ("cache-control", "max-age=10"),
                ("age", "100"),
                ("etag", "\"v1\""),
                ("x-version", "1"),
            ],
        ),
    );
    let edge = TestEdge::start(origin.addr, None).await;
    get(&edge.url("/r"), &[]).await;
    // The 304 will carry a new header value, a header the stored response did not have, and
    // a fresh lifetime.
    origin.set(
        "/r",
        Reply::ok(
            "ignored",
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"v1\""),
                ("x-version", "2"),
                ("x-added", "yes"),
            ],
        ),
    );
    let (status, h, body) = get(&edge.url("/r"), &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "body"),
        "the stored body, revalidated"
    );
    assert!(
        cache_status(&h).contains("fwd=stale; fwd-status=304"),
        "{h:?}"
    );
    assert_eq!(
        h["x-version"], "2",
        "the 304's headers replace the stored ones"
    );
    assert_eq!(
        h.get("x-added").map(|v| v.as_bytes()),
        Some(&b"yes"[..]),
        "and those the stored response lacked are added (RFC 9111 §3.2)"
    );
    let date = h["date"].to_str().expect("ascii");
    assert!(
        httpdate::parse_http_date(date).is_ok(),
        "an HTTP-date, not {date}"
    );
    assert_eq!(
        origin.last("/r").expect("seen").headers["if-none-match"],
        "\"v1\""
    );
    let (_, h, body) = get(&edge.url("/r"), &[]).await;
    assert_eq!(body, "body");
    assert!(
        cache_status(&h).starts_with("strata-edge; hit"),
        "fresh again: {h:?}"
    );
    assert_eq!(origin.hits("/r"), 2);
    let m = edge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "strata_edge_revalidations_total{result=\"not-modified\"}"
        ),
        1.0
    );
}

/// RFC 9110 §15.4.5 does not require a `304` to repeat `Last-Modified`, and some origins
/// leave out the `ETag` too: a `304` without validators, to the edge's conditional request for
/// one stored object, updates that object (as the suite at cache-tests.fyi expects). Before,
/// the edge took it for a `304` about some other response and fetched the whole object again.
#[tokio::test]
async fn a_304_without_validators_updates_the_object_it_revalidates() {
    let origin = Origin::start().await;
    let validators = [
        ("/etag", ("etag", "\"v1\"")),
        ("/lm", ("last-modified", "Wed, 01 Jan 2025 00:00:00 GMT")),
    ];
    for (path, validator) in validators {
        // It arrives stale: the next request revalidates it.
        let headers = [
            ("cache-control", "max-age=1"),
            ("age", "5"),
            ("x-version", "1"),
            validator,
        ];
        origin.set(path, Reply::ok("body", &headers));
    }
    let edge = TestEdge::start(origin.addr, None).await;
    for (path, _) in validators {
        get(&edge.url(path), &[]).await;
        let bare_304 = Reply::ok("", &[("cache-control", "max-age=60"), ("x-version", "2")]);
        origin.set(path, bare_304.status(304));
        let (status, h, body) = get(&edge.url(path), &[]).await;
        assert_eq!((status, body.as_str()), (200, "body"), "{path}");
        assert!(
            cache_status(&h).contains("fwd=stale; fwd-status=304"),
            "{path}: {h:?}"
        );
        assert_eq!(
            h.get("x-version").map(|v| v.as_bytes()),
            Some(&b"2"[..]),
            "{path}: the 304's headers are taken: {h:?}"
        );
        assert_eq!(origin.hits(path), 2, "{path}: no second fetch");
        let (_, h, _) = get(&edge.url(path), &[]).await;
        assert!(
            cache_status(&h).starts_with("strata-edge; hit"),
            "{path}: fresh again: {h:?}"
        );
    }
}

#[tokio::test]
async fn no_cache_and_last_modified_revalidate_with_if_modified_since_every_time() {
    let origin = Origin::start().await;
    let lm = "Wed, 01 Jan 2025 00:00:00 GMT";
    origin.set(
        "/nc",
        Reply::ok(
            "nc",
            &[("cache-control", "no-cache"), ("last-modified", lm)],
        ),
    );
    let edge = TestEdge::start(origin.addr, None).await;
    get(&edge.url("/nc"), &[]).await;
    for _ in 0..2 {
        let (_, h, body) = get(&edge.url("/nc"), &[]).await;
        assert_eq!(body, "nc");
        assert!(cache_status(&h).contains("fwd-status=304"), "{h:?}");
        assert_eq!(
            origin.last("/nc").expect("seen").headers["if-modified-since"],
            lm
        );
    }
    assert_eq!(origin.hits("/nc"), 3);
}

#[tokio::test]
async fn a_changed_object_replaces_the_stale_one() {
    let origin = Origin::start().await;
    origin.set(
        "/c",
        Reply::ok(
            "old",
            &[
                ("cache-control", "max-age=10"),
                ("age", "100"),
                ("etag", "\"1\""),
            ],
        ),
    );
    let edge = TestEdge::start(origin.addr, None).await;
    get(&edge.url("/c"), &[]).await;
    origin.set(
        "/c",
        Reply::ok("new", &[("cache-control", "max-age=60"), ("etag", "\"2\"")]),
    );
    let (_, _, body) = get(&edge.url("/c"), &[]).await;
    assert_eq!(body, "new");
    let (_, h, body) = get(&edge.url("/c"), &[]).await;
    assert_eq!(body, "new");
    assert!(cache_status(&h).contains("hit"));
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let origin = Origin::start().await;
    origin.set(
        "/swr",
        Reply::ok(
            "old",
            &[
                ("cache-control", "max-age=10, stale-while-revalidate=600"),
                ("age", "100"),
            ],
        ),
    );
    let edge = TestEdge::start(origin.addr, None).await;
    get(&edge.url("/swr"), &[]).await;
    // The refresh is slow; the stale answer must not wait for it.
    origin.set(
        "/swr",
        Reply::ok("new", &[("cache-control", "max-age=60")]).delay(Duration::from_millis(1500)),
    );
    let started = std::time::Instant::now();
    let (_, h, body) = get(&edge.url("/swr"), &[]).await;
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "answered without waiting"
    );
    assert_eq!(body, "old");
    assert!(cache_status(&h).contains("stale-while-revalidate"), "{h:?}");
    eventually(
        Duration::from_secs(5),
        "the background refresh stores the new object",
        || async {
            let (_, h, body) = get(&edge.url("/swr"), &[]).await;
            body == "new" && cache_status(&h).contains("hit")
        },
    )
    .await;
    assert_eq!(
        origin.hits("/swr"),
        2,
        "one refresh, however many stale answers"
    );
    // A request that asks for something fresher is not answered stale.
    origin.set(
        "/swr2",
        Reply::ok(
            "old",
            &[
                ("cache-control", "max-age=10, stale-while-revalidate=600"),
                ("age", "100"),
            ],
        ),
    );
    get(&edge.url("/swr2"), &[]).await;
    origin.set("/swr2", Reply::ok("new", CACHEABLE));
    let (_, _, body) = get(&edge.url("/swr2"), &[("cache-control", "no-cache")]).await;
    assert_eq!(body, "new");
}

/// An origin that hangs on a revalidation costs the clients of a copy `stale-if-error` allows
/// the grace, not the origin timeout: they get the stale copy, and the revalidation goes on to
/// store the new one. A copy without `stale-if-error` waits for the origin's answer.
#[tokio::test]
async fn a_hung_revalidation_answers_the_stale_copy_after_the_grace_and_then_stores_the_new() {
    let origin = Origin::start().await;
    let stale = [
        ("cache-control", "max-age=10, stale-if-error=600"),
        ("age", "100"),
        ("etag", "\"1\""),
    ];
    origin.set("/p", Reply::ok("old", &stale));
    origin.set(
        "/strict",
        Reply::ok("old", &[("cache-control", "max-age=10"), ("age", "100")]),
    );
    let edge = TestEdge::start_with(origin.addr, |c| {
        c.stale_grace = Duration::from_millis(200);
    })
    .await;
    for path in ["/p", "/strict"] {
        assert_eq!(get(&edge.url(path), &[]).await.2, "old");
    }
    let slow = Duration::from_secs(3);
    let kept = [("cache-control", "max-age=600, stale-if-error=600")];
    origin.set("/p", Reply::ok("new", &kept).delay(slow));
    origin.set(
        "/strict",
        Reply::ok("new", &[("cache-control", "max-age=600")]).delay(Duration::from_millis(600)),
    );
    // Three clients at once, and one more later: all answered the stale copy.
    let url = edge.url("/p");
    let mut clients = Vec::new();
    for _ in 0..3 {
        let url = url.clone();
        clients.push(tokio::spawn(async move { get(&url, &[]).await }));
    }
    for c in clients {
        let (status, h, body) = c.await.expect("client");
        assert_eq!((status, body.as_str()), (200, "old"));
        assert!(cache_status(&h).contains("detail=stale-grace"), "{h:?}");
    }
    let (_, h, body) = get(&url, &[]).await;
    assert_eq!(body, "old", "{h:?}");
    assert!(
        edge.stats
            .stale_grace
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 4
    );
    // One revalidation, still going on; when it ends, the new copy is stored.
    assert_eq!(origin.hits("/p"), 2, "the first fetch and one revalidation");
    eventually(Duration::from_secs(15), "the new copy is served", || {
        let url = url.clone();
        async move { get(&url, &[]).await.2 == "new" }
    })
    .await;
    assert_eq!(origin.hits("/p"), 2);
    // A copy a purge marked outdated gets no grace: the answer is the origin's, slow or not.
    let (status, _) = edge.purge(json!({"url": "/p", "soft": true})).await;
    assert_eq!(status, 200);
    origin.set(
        "/p",
        Reply::ok("newest", &kept).delay(Duration::from_millis(600)),
    );
    assert_eq!(get(&url, &[]).await.2, "newest");
    // Without stale-if-error there is no grace either.
    let (_, h, body) = get(&edge.url("/strict"), &[]).await;
    assert_eq!(body, "new", "{h:?}");
}

#[tokio::test]
async fn stale_if_error_serves_the_stale_copy_when_the_origin_fails() {
    let origin = Origin::start().await;
    let sie = [
        ("cache-control", "max-age=10, stale-if-error=600"),
        ("age", "100"),
    ];
    origin.set("/sie", Reply::ok("kept", &sie));
    origin.set(
        "/mr",
        Reply::ok(
            "kept",
            &[
                (
                    "cache-control",
                    "max-age=10, stale-if-error=600, must-revalidate",
                ),
                ("age", "100"),
            ],
        ),
    );
    origin.set(
        "/none",
        Reply::ok(
            "kept",
            &[
                ("cache-control", "max-age=10"),
                ("age", "100"),
                ("etag", "\"n\""),
            ],
        ),
    );
    let edge = TestEdge::start(origin.addr, None).await;
    for path in ["/sie", "/mr", "/none"] {
        get(&edge.url(path), &[]).await;
        origin.set(path, Reply::ok("down", &[]).status(503));
    }
    let (status, h, body) = get(&edge.url("/sie"), &[]).await;
    assert_eq!((status, body.as_str()), (200, "kept"));
    assert!(
        cache_status(&h).contains("fwd-status=503; detail=stale-if-error"),
        "{h:?}"
    );
    let (status, _, body) = get(&edge.url("/mr"), &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (503, "down"),
        "must-revalidate forbids it"
    );
    let (status, _, _) = get(&edge.url("/none"), &[]).await;
    assert_eq!(status, 503, "without stale-if-error the error passes");
    let m = edge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "strata_edge_stale_served_total{reason=\"stale-if-error\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn stale_if_error_covers_an_origin_that_cannot_be_reached() {
    let origin = Origin::start().await;
    origin.set(
        "/x",
        Reply::ok(
            "kept",
            &[
                ("cache-control", "max-age=10, stale-if-error=600"),
                ("age", "100"),
            ],
        ),
    );
    let dir = tempfile::tempdir().expect("dir");
    // The host is the site's, not the edge's address (whose port changes at the restart).
    let edge = TestEdge::start(origin.addr, Some(dir.path().into())).await;
    get(&edge.url("/x"), HOST).await;
    edge.stop().await;
    // The same store, in front of a port where nothing listens.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let edge = TestEdge::start(closed, Some(dir.path().into())).await;
    let (status, h, body) = get(&edge.url("/x"), HOST).await;
    assert_eq!((status, body.as_str()), (200, "kept"));
    assert!(cache_status(&h).contains("detail=stale-if-error"), "{h:?}");
    let (status, _, body) = get(&edge.url("/never-seen"), &[]).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("urn:strata:problem:upstream-failed"));
}

#[tokio::test]
async fn a_request_that_gave_up_waiting_for_a_collapsed_revalidation_is_answered_stale_when_the_origin_fails()
 {
    let origin = Origin::start().await;
    let kept = [
        ("cache-control", "max-age=10, stale-if-error=600"),
        ("age", "100"),
        ("etag", "\"k\""),
    ];
    origin.set("/k", Reply::ok("kept", &kept));
    // A follower waits for the leader's revalidation at most `total`; the origin is asked for
    // at most `header`: the follower gives up first, and asks the origin itself.
    let edge = TestEdge::start_with(origin.addr, |c| {
        c.timeouts.header = Duration::from_millis(1000);
        c.timeouts.total = Duration::from_millis(300);
    })
    .await;
    get(&edge.url("/k"), &[]).await;
    origin.set("/k", Reply::ok("kept", &kept).delay(Duration::from_secs(5)));
    let before = origin.hits("/k");
    let leader = tokio::spawn({
        let url = edge.url("/k");
        async move { get(&url, &[]).await }
    });
    // The leader's revalidation has reached the origin (which holds it): the next request is
    // a follower.
    eventually(
        Duration::from_secs(5),
        "the leader asks the origin",
        || async { origin.hits("/k") > before },
    )
    .await;
    let (status, h, body) = get(&edge.url("/k"), &[]).await;
    assert_eq!((status, body.as_str()), (200, "kept"), "{h:?}");
    assert!(cache_status(&h).contains("detail=stale-if-error"), "{h:?}");
    let (status, h, _) = leader.await.expect("leader");
    assert_eq!(status, 200, "{h:?}");
}

#[tokio::test]
async fn a_failing_origin_is_not_waited_for_again_while_stale_copies_may_be_served() {
    let origin = Origin::start().await;
    let kept = [
        ("cache-control", "max-age=10, stale-if-error=600"),
        ("age", "100"),
        ("etag", "\"k\""),
    ];
    for path in ["/k1", "/k2"] {
        origin.set(path, Reply::ok("kept", &kept));
    }
    let edge = TestEdge::start_with(origin.addr, |c| {
        c.timeouts.header = Duration::from_millis(500);
    })
    .await;
    for path in ["/k1", "/k2"] {
        get(&edge.url(path), &[]).await;
        // A frozen origin: it takes the connection and never answers in time.
        origin.set(path, Reply::ok("kept", &kept).delay(Duration::from_secs(3)));
    }
    let started = std::time::Instant::now();
    let (status, h, _) = get(&edge.url("/k1"), &[]).await;
    assert_eq!(status, 200);
    assert!(
        cache_status(&h).contains("fwd=stale; detail=stale-if-error"),
        "{h:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "it waited for the origin"
    );
    // Now the edge knows: the stale copies are answered at once, the origin not asked.
    let asked = origin.hits("/k1") + origin.hits("/k2");
    for path in ["/k1", "/k2", "/k1", "/k2"] {
        let started = std::time::Instant::now();
        let (status, h, body) = get(&edge.url(path), &[]).await;
        assert_eq!((status, body.as_str()), (200, "kept"));
        assert!(
            cache_status(&h).contains("hit; detail=stale-if-error"),
            "{h:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(origin.hits("/k1") + origin.hits("/k2"), asked);
    // The origin back: within a probe or two, objects are revalidated again.
    for path in ["/k1", "/k2"] {
        origin.set(path, Reply::ok("kept", &kept));
    }
    eventually(
        Duration::from_secs(10),
        "the origin is asked again",
        || async {
            let (_, h, _) = get(&edge.url("/k2"), &[]).await;
            cache_status(&h).contains("fwd-status=304")
        },
    )
    .await;
    let (_, h, _) = get(&edge.url("/k1"), &[]).await;
    assert!(cache_status(&h).contains("fwd-status=304"), "{h:?}");
    let m = edge.metrics().await;
    assert!(
        metric(
            &m,
            "strata_edge_stale_served_total{reason=\"stale-if-error\"}"
        ) >= 5.0,
        "{m}"
    );
}

#[tokio::test]
async fn cdn_cache_control_governs_the_edge_and_clients_keep_cache_control() {
    let origin = Origin::start().await;
    // What browsers get says revalidate every time; what the edge gets, keep a minute and
    // serve stale for ten if the origin fails.
    let profile = [
        ("cache-control", "public, max-age=0, must-revalidate"),
        ("cdn-cache-control", "max-age=60, stale-if-error=600"),
        ("age", "100"),
        ("etag", "\"p1\""),
    ];
    origin.set("/p", Reply::ok("kept", &profile));
    origin.set(
        "/fresh",
        Reply::ok(
            "f",
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
        ),
    );
    origin.set(
        "/no-store",
        Reply::ok(
            "n",
            &[
                ("cache-control", "public, max-age=60"),
                ("cdn-cache-control", "no-store"),
            ],
        ),
    );
    origin.set(
        "/private",
        Reply::ok(
            "p",
            &[
                ("cache-control", "public, max-age=60"),
                ("cdn-cache-control", "private"),
            ],
        ),
    );
    origin.set(
        "/cookie",
        Reply::ok(
            "c",
            &[("cdn-cache-control", "max-age=60"), ("set-cookie", "a=b")],
        ),
    );
    origin.set(
        "/invalid",
        Reply::ok(
            "i",
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store,"),
            ],
        ),
    );
    let edge = TestEdge::start(origin.addr, None).await;
    for path in ["/fresh", "/no-store", "/private", "/cookie", "/invalid"] {
        get(&edge.url(path), &[]).await;
        get(&edge.url(path), &[]).await;
    }
    assert_eq!(origin.hits("/fresh"), 1, "its max-age wins over no-store");
    assert_eq!(origin.hits("/no-store"), 2, "its no-store wins over public");
    assert_eq!(origin.hits("/private"), 2, "its private is honoured");
    assert_eq!(origin.hits("/cookie"), 2, "a cookie is never stored");
    assert_eq!(origin.hits("/invalid"), 1, "an invalid field is ignored");
    let (_, h, _) = get(&edge.url("/fresh"), &[]).await;
    assert!(cache_status(&h).contains("hit"), "{h:?}");
    assert_eq!(h["cache-control"], "no-store", "clients get Cache-Control");
    assert_eq!(
        h["cdn-cache-control"], "max-age=60",
        "and the field, unchanged"
    );

    // Stored already stale (Age 100 > 60): the next request revalidates, and the 304 keeps
    // the origin's headers as they were, not the edge's reading of them.
    let (status, h, body) = get(&edge.url("/p"), &[]).await;
    assert_eq!((status, body.as_str()), (200, "kept"));
    assert!(cache_status(&h).contains("stored"), "{h:?}");
    // A 304 that repeats only some fields (no Cache-Control): the stored one stays.
    origin.set("/p", Reply::ok("kept", &profile[1..]));
    let (status, h, body) = get(&edge.url("/p"), &[]).await;
    assert_eq!((status, body.as_str()), (200, "kept"));
    assert!(cache_status(&h).contains("fwd-status=304"), "{h:?}");
    assert_eq!(h["cache-control"], "public, max-age=0, must-revalidate");
    assert_eq!(h["cdn-cache-control"], "max-age=60, stale-if-error=600");
    // The origin fails: must-revalidate in Cache-Control would forbid the stale copy, but
    // the edge reads CDN-Cache-Control.
    origin.set("/p", Reply::ok("down", &[]).status(503));
    let (status, h, body) = get(&edge.url("/p"), &[]).await;
    assert_eq!((status, body.as_str()), (200, "kept"), "{h:?}");
    assert!(
        cache_status(&h).contains("fwd-status=503; detail=stale-if-error"),
        "{h:?}"
    );
    assert_eq!(h["cache-control"], "public, max-age=0, must-revalidate");
    let m = edge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "strata_edge_stale_served_total{reason=\"stale-if-error\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn only_if_cached_is_answered_from_the_store_or_with_504() {
    let origin = Origin::start().await;
    origin.set("/o", Reply::ok("o", CACHEABLE));
    let edge = TestEdge::start(origin.addr, None).await;
    let only = [("cache-control", "only-if-cached")];
    let (status, _, _) = get(&edge.url("/o"), &only).await;
    assert_eq!(status, 504);
    assert_eq!(origin.hits("/o"), 0, "nothing goes to the origin");
    get(&edge.url("/o"), &[]).await;
    let (status, _, body) = get(&edge.url("/o"), &only).await;
    assert_eq!((status, body.as_str()), (200, "o"));
    assert_eq!(origin.hits("/o"), 1);
}

#[tokio::test]
async fn concurrent_requests_for_one_url_make_one_origin_fetch() {
    let origin = Origin::start().await;
    origin.set(
        "/hot",
        Reply::ok("hot", CACHEABLE).delay(Duration::from_millis(300)),
    );
    let edge = TestEdge::start(origin.addr, None).await;
    let url = edge.url("/hot");
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url, &[]).await })
        })
        .collect();
    for r in requests {
        let (status, _, body) = r.await.expect("join");
        assert_eq!((status, body.as_str()), (200, "hot"));
    }
    assert_eq!(origin.hits("/hot"), 1);
    let m = edge.metrics().await;
    assert!(metric(&m, "strata_edge_collapsed_requests_total") >= 1.0);
}

#[tokio::test]
async fn requests_for_different_variants_do_not_wait_for_each_other() {
    let origin = Origin::start().await;
    let delay = Duration::from_millis(800);
    origin.set(
        "/lang",
        Reply::ok(
            "hi",
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
        )
        .delay(delay),
    );
    let edge = TestEdge::start(origin.addr, None).await;
    get(&edge.url("/lang"), &[("accept-language", "fr")]).await;
    let started = std::time::Instant::now();
    let requests: Vec<_> = ["de", "en"]
        .iter()
        .flat_map(|lang| std::iter::repeat_n(*lang, 8))
        .map(|lang| {
            let url = edge.url("/lang");
            tokio::spawn(async move { get(&url, &[("accept-language", lang)]).await })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.expect("join").2, "hi");
    }
    assert_eq!(origin.hits("/lang"), 3, "one fetch per variant");
    // The two new variants' fetches were at the origin together (each takes `delay` there),
    // rather than one waiting for the other: seen by the origin, not by a clock.
    assert_eq!(
        origin.most_at_once("/lang"),
        2,
        "the two variants were fetched together (in {:?})",
        started.elapsed()
    );
}

#[tokio::test]
async fn uncacheable_urls_do_not_queue_behind_each_other() {
    let origin = Origin::start().await;
    origin.set(
        "/mine",
        Reply::ok("mine", &[("cache-control", "private")]).delay(Duration::from_millis(300)),
    );
    let edge = TestEdge::start(origin.addr, None).await;
    get(&edge.url("/mine"), &[]).await;
    let started = std::time::Instant::now();
    let requests: Vec<_> = (0..5)
        .map(|_| {
            let url = edge.url("/mine");
            tokio::spawn(async move { get(&url, &[]).await })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.expect("join").2, "mine");
    }
    assert_eq!(origin.hits("/mine"), 6, "each one goes to the origin");
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "in parallel, not one after another: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn ranges_and_conditions_are_answered_from_the_stored_object() {
    let origin = Origin::start().await;
    let lm = "Wed, 01 Jan 2025 00:00:00 GMT";
    origin.set(
        "/r",
        Reply::ok(
            "0123456789",
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"abc\""),
                ("last-modified", lm),
            ],
        ),
    );
    let edge = TestEdge::start(origin.addr, None).await;
    let (status, h, body) = get(&edge.url("/r"), &[("range", "bytes=2-4")]).await;
    assert_eq!(
        (status, body.as_str()),
        (206, "234"),
        "a range on a miss too"
    );
    assert_eq!(h["content-range"], "bytes 2-4/10");
    assert!(
        !origin
            .last("/r")
            .expect("seen")
            .headers
            .contains_key("range"),
        "the edge fetches the whole object"
    );
    let (status, _, body) = get(&edge.url("/r"), &[("range", "bytes=-3")]).await;
    assert_eq!((status, body.as_str()), (206, "789"));
    let (status, h, _) = get(&edge.url("/r"), &[("range", "bytes=20-")]).await;
    assert_eq!(status, 416);
    assert_eq!(h["content-range"], "bytes */10");
    let (status, _, body) = get(&edge.url("/r"), &[("range", "bytes=0-1,5-6")]).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "0123456789"),
        "several ranges: the whole"
    );
    let (status, _, body) = get(
        &edge.url("/r"),
        &[("range", "bytes=0-1"), ("if-range", "\"old\"")],
    )
    .await;
    assert_eq!(
        (status, body.len()),
        (200, 10),
        "a stale If-Range: the whole"
    );
    let (status, _, body) = get(
        &edge.url("/r"),
        &[("range", "bytes=0-1"), ("if-range", "\"abc\"")],
    )
    .await;
    assert_eq!((status, body.as_str()), (206, "01"));
    let (status, h, body) = get(&edge.url("/r"), &[("if-none-match", "\"abc\"")]).await;
    assert_eq!((status, body.as_str()), (304, ""));
    assert_eq!(h["etag"], "\"abc\"");
    let (status, _, _) = get(&edge.url("/r"), &[("if-modified-since", lm)]).await;
    assert_eq!(status, 304);
    let (status, _, _) = get(&edge.url("/r"), &[("if-none-match", "\"other\"")]).await;
    assert_eq!(status, 200);
    assert_eq!(origin.hits("/r"), 1);
}

#[tokio::test]
async fn head_is_answered_from_a_cached_get_and_fills_the_cache() {
    let origin = Origin::start().await;
    origin.set("/h", Reply::ok("twelve bytes", CACHEABLE));
    let edge = TestEdge::start(origin.addr, None).await;
    let r = client().head(edge.url("/h")).send().await.expect("head");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-length"], "12");
    assert_eq!(origin.last("/h").expect("seen").method, "GET");
    let (_, h, body) = get(&edge.url("/h"), &[]).await;
    assert_eq!(body, "twelve bytes");
    assert!(cache_status(&h).contains("hit"));
    assert_eq!(origin.hits("/h"), 1);
}

#[tokio::test]
async fn an_unsafe_request_invalidates_its_url_and_its_location() {
    let origin = Origin::start().await;
    origin.set("/users/1", Reply::ok("one", CACHEABLE));
    origin.set("/users/2", Reply::ok("two", CACHEABLE));
    let edge = TestEdge::start(origin.addr, None).await;
    get(&edge.url("/users/1"), &[]).await;
    get(&edge.url("/users/2"), &[]).await;
    // An error answer invalidates nothing.
    origin.set("/users/1", Reply::ok("no", &[]).status(500));
    let r = client()
        .put(edge.url("/users/1"))
        .body("x")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status().as_u16(), 500);
    let (_, h, _) = get(&edge.url("/users/1"), &[]).await;
    assert!(cache_status(&h).contains("hit"), "{h:?}");
    origin.set(
        "/users/1",
        Reply::ok("changed", &[("location", "/users/2")]).status(200),
    );
    let r = client()
        .post(edge.url("/users/1"))
        .body("x")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(cache_status(r.headers()), "strata-edge; fwd=method");
    assert_eq!(origin.last("/users/1").expect("seen").method, "POST");
    origin.set("/users/1", Reply::ok("one, changed", CACHEABLE));
    let (_, _, body) = get(&edge.url("/users/1"), &[]).await;
    assert_eq!(body, "one, changed");
    get(&edge.url("/users/2"), &[]).await;
    assert_eq!(
        origin.hits("/users/2"),
        2,
        "the Location was invalidated too"
    );
}

#[tokio::test]
async fn purges_by_url_prefix_and_surrogate_key_hard_and_soft() {
    let origin = Origin::start().await;
    let tagged = |key: &'static str| {
        Reply::ok(
            key,
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"t\""),
                ("surrogate-key", key),
            ],
        )
    };
    origin.set("/static/a.css", tagged("css"));
    origin.set("/static/b.js", tagged("js"));
    origin.set("/users/12", tagged("user-12 users"));
    origin.set("/users/13", tagged("user-13 users"));
    let edge = TestEdge::start(origin.addr, None).await;
    for p in ["/static/a.css", "/static/b.js", "/users/12", "/users/13"] {
        let (_, h, _) = get(&edge.url(p), &[]).await;
        assert!(
            !h.contains_key("surrogate-key"),
            "clients never see surrogate keys"
        );
    }
    let (status, answer) = edge.purge(json!({"url": "/static/a.css"})).await;
    assert_eq!((status, answer["purged"].as_u64()), (200, Some(1)));
    get(&edge.url("/static/a.css"), &[]).await;
    assert_eq!(origin.hits("/static/a.css"), 2, "purged by URL");

    let (_, answer) = edge
        .purge(json!({"prefix": format!("http://{}/static/", edge.addr)}))
        .await;
    assert_eq!(answer["purged"], 2);
    let (_, answer) = edge.purge(json!({"key": "user-12"})).await;
    assert_eq!(answer["purged"], 1);
    get(&edge.url("/users/12"), &[]).await;
    get(&edge.url("/users/13"), &[]).await;
    assert_eq!((origin.hits("/users/12"), origin.hits("/users/13")), (2, 1));

    // Soft: kept, but revalidated before it is served again.
    let (_, answer) = edge.purge(json!({"key": "users", "soft": true})).await;
    assert_eq!(
        (answer["purged"].as_u64(), answer["mode"].as_str()),
        (Some(2), Some("soft"))
    );
    let (_, h, body) = get(&edge.url("/users/13"), &[]).await;
    assert_eq!(body, "user-13 users");
    assert!(cache_status(&h).contains("fwd-status=304"), "{h:?}");
    let (_, h, _) = get(&edge.url("/users/13"), &[]).await;
    assert!(
        cache_status(&h).contains("hit"),
        "fresh again after revalidation: {h:?}"
    );

    let (status, answer) = edge.purge(json!({"key": "nobody"})).await;
    assert_eq!(
        (status, answer["purged"].as_u64()),
        (200, Some(0)),
        "an unknown key is no error"
    );
    let (status, answer) = edge.purge(json!({"url": "/a", "key": "b"})).await;
    assert_eq!(status, 400);
    assert_eq!(answer["type"], "urn:strata:problem:invalid-purge");
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, "strata_edge_purges_total{kind=\"key\",mode=\"hard\"}"),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "strata_edge_purged_objects_total{kind=\"key\",mode=\"soft\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn the_purge_command_talks_to_the_admin_api_of_every_edge_given() {
    let origin = Origin::start().await;
    origin.set("/p", Reply::ok("p", CACHEABLE));
    let edges = [
        TestEdge::start(origin.addr, None).await,
        TestEdge::start(origin.addr, None).await,
    ];
    for edge in &edges {
        get(&edge.url("/p"), &[]).await;
    }
    let args = strata_edge::role::PurgeArgs {
        admins: edges.iter().map(|e| e.admin).collect(),
        dir: None,
        url: Some("/p".into()),
        prefix: None,
        key: None,
        soft: false,
        timeout_secs: 5,
    };
    let answers = strata_edge::role::purge(&args).await.expect("purged");
    assert_eq!(answers.len(), 2);
    for (admin, answer) in &answers {
        let answer = answer.as_ref().expect("an answer");
        assert!(answer.contains("\"purged\":1"), "{admin}: {answer}");
    }
    let bad = strata_edge::role::PurgeArgs {
        url: Some("ftp://x/".into()),
        ..args.clone()
    };
    assert!(
        strata_edge::role::purge(&bad).await.is_err(),
        "refused before any edge is asked"
    );
    let one_down = strata_edge::role::PurgeArgs {
        admins: vec!["127.0.0.1:1".parse().expect("addr"), edges[0].admin],
        ..args
    };
    let answers = strata_edge::role::purge(&one_down).await.expect("tried");
    let e = answers[0].1.as_ref().expect_err("nothing listens");
    assert!(e.to_string().contains("cannot connect"), "{e:#}");
    assert!(answers[1].1.is_ok(), "the other edges are still purged");
}

#[tokio::test]
async fn the_disk_cache_survives_a_restart() {
    let origin = Origin::start().await;
    origin.set(
        "/d",
        Reply::ok(
            "on disk",
            &[
                ("cache-control", "max-age=600"),
                ("vary", "Accept-Language"),
            ],
        ),
    );
    let dir = tempfile::tempdir().expect("dir");
    let edge = TestEdge::start(origin.addr, Some(dir.path().into())).await;
    get(&edge.url("/d"), &[("accept-language", "fr"), HOST[0]]).await;
    get(&edge.url("/d"), &[("accept-language", "de"), HOST[0]]).await;
    edge.stop().await;
    let edge = TestEdge::start(origin.addr, Some(dir.path().into())).await;
    for lang in ["fr", "de"] {
        let (_, h, body) = get(&edge.url("/d"), &[("accept-language", lang), HOST[0]]).await;
        assert_eq!(body, "on disk");
        assert!(cache_status(&h).contains("hit"), "{lang}: {h:?}");
    }
    assert_eq!(origin.hits("/d"), 2);
    let m = edge.metrics().await;
    assert_eq!(metric(&m, "strata_edge_disk_objects"), 2.0);
    // A soft purge survives a restart too.
    edge.purge(json!({"url": "http://cdn.test/d", "soft": true}))
        .await;
    edge.stop().await;
    let edge = TestEdge::start(origin.addr, Some(dir.path().into())).await;
    let (_, h, _) = get(&edge.url("/d"), &[("accept-language", "fr"), HOST[0]]).await;
    assert!(
        !cache_status(&h).contains("hit"),
        "still stale after the restart: {h:?}"
    );
}

#[tokio::test]
async fn the_disk_store_stays_within_its_budget_and_drops_broken_files() {
    let origin = Origin::start().await;
    let body = "x".repeat(10 * 1024);
    for i in 0..10 {
        origin.set(&format!("/o{i}"), Reply::ok(&body, CACHEABLE));
    }
    let dir = tempfile::tempdir().expect("dir");
    let budget = 48 * 1024;
    let edge = TestEdge::start_with(origin.addr, |c| {
        c.store.disk = Some((dir.path().into(), budget))
    })
    .await;
    for i in 0..10 {
        get(&edge.url(&format!("/o{i}")), &[]).await;
    }
    let m = edge.metrics().await;
    let bytes = metric(&m, "strata_edge_disk_bytes");
    assert!(bytes <= budget as f64 && bytes > 0.0, "{bytes}");
    assert!(metric(&m, "strata_edge_disk_objects") < 10.0);
    edge.stop().await;
    let on_disk: u64 = std::fs::read_dir(dir.path().join("objects"))
        .expect("dir")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    assert!(on_disk <= budget, "{on_disk} bytes of files");
    // A file cut short by a crash, and a stray temporary file, are removed at start.
    let objects = dir.path().join("objects");
    let victim = std::fs::read_dir(&objects)
        .expect("dir")
        .next()
        .expect("a file")
        .expect("entry")
        .path();
    std::fs::write(&victim, b"STRATA-EDGE-OBJECT-1\n\0\0").expect("truncate");
    std::fs::write(objects.join("abc.tmp"), b"half").expect("tmp");
    let edge = TestEdge::start_with(origin.addr, |c| {
        c.store.disk = Some((dir.path().into(), budget))
    })
    .await;
    assert!(!victim.exists() && !objects.join("abc.tmp").exists());
    let (status, _, _) = get(&edge.url("/o9"), &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_failing_disk_costs_the_disk_cache_not_the_request() {
    let origin = Origin::start().await;
    origin.set("/f", Reply::ok("fine", CACHEABLE));
    let dir = tempfile::tempdir().expect("dir");
    let edge = TestEdge::start(origin.addr, Some(dir.path().into())).await;
    // The objects directory disappears under the edge (as a full or failed disk would refuse
    // writes): every write now fails.
    let objects = dir.path().join("objects");
    std::fs::remove_dir_all(&objects).expect("rm");
    std::fs::write(&objects, b"not a directory").expect("file");
    let (status, _, body) = get(&edge.url("/f"), &[]).await;
    assert_eq!((status, body.as_str()), (200, "fine"));
    let (_, h, _) = get(&edge.url("/f"), &[]).await;
    assert!(cache_status(&h).contains("hit"), "kept in memory: {h:?}");
    let m = edge.metrics().await;
    assert!(metric(&m, "strata_edge_disk_errors_total") >= 1.0);
}

#[tokio::test]
async fn oversized_responses_stream_through_uncached() {
    let origin = Origin::start().await;
    let big = "y".repeat(300 * 1024);
    origin.set("/big", Reply::ok(&big, CACHEABLE));
    let edge = TestEdge::start_with(origin.addr, |c| c.store.max_object = 100 * 1024).await;
    for _ in 0..2 {
        let (status, h, body) = get(&edge.url("/big"), &[]).await;
        assert_eq!((status, body.len()), (200, big.len()));
        assert_eq!(cache_status(&h), "strata-edge; fwd=miss");
    }
    assert_eq!(origin.hits("/big"), 2);
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, "strata_edge_not_stored_total{reason=\"too-large\"}"),
        2.0
    );
}

#[tokio::test]
async fn a_chunked_response_larger_than_an_object_streams_through_whole() {
    // A raw origin that answers with a chunked body of 200 KiB, no Content-Length.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = s.read(&mut buf).await;
                let mut out = b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                for _ in 0..50 {
                    out.extend_from_slice(format!("{:x}\r\n", 4096).as_bytes());
                    out.extend_from_slice(&[b'z'; 4096]);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
                let _ = s.write_all(&out).await;
            });
        }
    });
    let edge = TestEdge::start_with(addr, |c| c.store.max_object = 64 * 1024).await;
    let (status, _, body) = get(&edge.url("/chunked"), &[]).await;
    assert_eq!((status, body.len()), (200, 50 * 4096));
    assert!(body.bytes().all(|b| b == b'z'));
}

/// An origin that answers every request with `answer` and closes.
async fn raw_origin(answer: &'static [u8]) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn malformed_or_missing_origin_answers_are_502_and_slow_ones_504() {
    for answer in [
        &b"garbage\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
        b"",
    ] {
        let addr = raw_origin(answer).await;
        let edge = TestEdge::start(addr, None).await;
        let (status, h, body) = get(&edge.url("/m"), &[]).await;
        assert_eq!(status, 502, "{:?}: {body}", String::from_utf8_lossy(answer));
        assert_eq!(h["content-type"], "application/problem+json");
    }
    let origin = Origin::start().await;
    origin.set(
        "/slow",
        Reply::ok("late", CACHEABLE).delay(Duration::from_secs(3)),
    );
    let edge = TestEdge::start_with(origin.addr, |c| {
        c.timeouts.header = Duration::from_millis(200)
    })
    .await;
    let (status, _, body) = get(&edge.url("/slow"), &[]).await;
    assert_eq!(status, 504, "{body}");
}

#[tokio::test]
async fn request_smuggling_is_refused_before_the_cache() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start().await;
    let edge = TestEdge::start(origin.addr, None).await;
    let mut s = tokio::net::TcpStream::connect(edge.addr)
        .await
        .expect("connect");
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        out.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(origin.hits("/a"), 0);
}

#[tokio::test]
async fn metrics_count_hits_misses_and_bytes() {
    let origin = Origin::start().await;
    origin.set("/m", Reply::ok("12345", CACHEABLE));
    let edge = TestEdge::start(origin.addr, None).await;
    for _ in 0..3 {
        get(&edge.url("/m"), &[]).await;
    }
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, "strata_edge_requests_total{outcome=\"miss\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "strata_edge_requests_total{outcome=\"hit\"}"),
        2.0
    );
    assert_eq!(metric(&m, "strata_edge_origin_bytes_total"), 5.0);
    assert_eq!(metric(&m, "strata_edge_cache_bytes_total"), 10.0);
    assert_eq!(metric(&m, "strata_edge_stored_objects"), 1.0);
    assert!(metric(&m, "strata_edge_stored_bytes") > 5.0);
    assert_eq!(edge.stats.requests(strata_edge::stats::Outcome::Hit), 2);
}

/// An edge terminating TLS with a fresh self-signed certificate (written to `dir`), plain
/// HTTP redirected to it when `redirect_http`.
async fn tls_edge(origin: SocketAddr, dir: &std::path::Path, redirect_http: bool) -> TestEdge {
    let cert = strata_lb::tls::dev_cert(&dir.join("dev.pem")).expect("dev cert");
    let server = strata_lb::tls::server_config(vec![cert]).expect("tls config");
    TestEdge::start_with(origin, |c| {
        c.tls = Some(strata_lb::TlsListen {
            listen: "127.0.0.1:0".parse().expect("addr"),
            config: server,
            redirect_http,
        })
    })
    .await
}

/// The whole answer to `request`, sent over TLS to `addr` trusting `dir`'s certificate.
async fn tls_exchange(addr: SocketAddr, dir: &std::path::Path, request: &str) -> String {
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(dir.join("dev.pem")).expect("pem") {
        roots.add(cert.expect("cert")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn https_is_terminated_with_the_balancers_tls_and_shares_the_cache() {
    let origin = Origin::start().await;
    origin.set("/t", Reply::ok("over tls", CACHEABLE));
    let dir = tempfile::tempdir().expect("dir");
    let edge = tls_edge(origin.addr, dir.path(), false).await;
    let answer = tls_exchange(
        edge.tls.expect("a TLS listener"),
        dir.path(),
        "GET /t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("over tls"), "{answer}");
    let seen = origin.last("/t").expect("seen");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    // The same object over plain HTTP: one cache for both schemes.
    let (_, h, body) = get(&edge.url("/t"), &[("host", "localhost")]).await;
    assert_eq!(body, "over tls");
    assert!(cache_status(&h).contains("hit"), "{h:?}");
    assert_eq!(origin.hits("/t"), 1);
}

#[tokio::test]
async fn plain_http_is_redirected_to_https_and_never_reaches_the_origin() {
    let origin = Origin::start().await;
    origin.set("/users/12", Reply::ok("john", CACHEABLE));
    let dir = tempfile::tempdir().expect("dir");
    let edge = tls_edge(origin.addr, dir.path(), true).await;
    let tls = edge.tls.expect("a TLS listener");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = no_redirects
        .get(edge.url("/users/12?fields=name"))
        .header("host", "shop.example:8080")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://shop.example:{}/users/12?fields=name", tls.port()).as_str()
    );
    // A write is redirected too (308 keeps the method and body), not passed on.
    let r = no_redirects
        .post(edge.url("/users"))
        .header("host", "under_score.example")
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://localhost:{}/users", tls.port()).as_str(),
        "a Host that is not a plain name is not echoed"
    );
    assert_eq!(origin.hits("/users/12"), 0);
    assert_eq!(origin.hits("/users"), 0);
    // Over TLS the same path is served.
    let answer = tls_exchange(
        tls,
        dir.path(),
        "GET /users/12 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("john"), "{answer}");
}

#[tokio::test]
async fn a_shields_stale_answer_is_named_in_the_cache_status_an_edge_sends_on() {
    let origin = Origin::start().await;
    let kept = [
        ("cache-control", "max-age=10, stale-if-error=600"),
        ("age", "100"),
        ("etag", "\"c\""),
    ];
    origin.set("/c", Reply::ok("kept", &kept));
    let shield = TestEdge::start(origin.addr, None).await;
    let edge = TestEdge::start(shield.addr, None).await;
    get(&edge.url("/c"), HOST).await;
    origin.set("/c", Reply::ok("down", &[]).status(503));
    let (status, h, body) = get(&edge.url("/c"), HOST).await;
    assert_eq!((status, body.as_str()), (200, "kept"));
    assert_eq!(
        cache_status(&h),
        "strata-edge; fwd=stale; fwd-status=503; detail=stale-if-error, \
         strata-edge; fwd=stale; fwd-status=304",
        "the shield answered its stale copy (a 304 to the edge's revalidation)"
    );
}

#[tokio::test]
async fn edges_in_front_of_a_shield_edge_send_one_miss_to_the_origin() {
    let origin = Origin::start().await;
    origin.set(
        "/s",
        Reply::ok(
            "shielded",
            &[("cache-control", "max-age=60"), ("surrogate-key", "s")],
        ),
    );
    let shield = TestEdge::start(origin.addr, None).await;
    let edges = [
        TestEdge::start(shield.addr, None).await,
        TestEdge::start(shield.addr, None).await,
    ];
    for (i, edge) in edges.iter().enumerate() {
        let (status, h, body) = get(&edge.url("/s"), HOST).await;
        assert_eq!((status, body.as_str()), (200, "shielded"));
        assert!(cache_status(&h).ends_with("fwd=miss; stored"), "{h:?}");
        // RFC 9211: the shield's entry first, then the edge's.
        let shield_said = if i == 0 {
            "fwd=miss; stored, "
        } else {
            "hit; ttl="
        };
        assert!(
            cache_status(&h).starts_with(&format!("strata-edge; {shield_said}")),
            "{h:?}"
        );
        assert_eq!(
            h.get_all("via").iter().count(),
            2,
            "both hops say so: {h:?}"
        );
        assert!(
            !h.contains_key("surrogate-key"),
            "clients never see surrogate keys"
        );
    }
    assert_eq!(
        origin.hits("/s"),
        1,
        "the second edge's miss is the shield's hit"
    );
    let m = shield.metrics().await;
    assert_eq!(
        metric(&m, "strata_edge_requests_total{outcome=\"hit\"}"),
        1.0
    );
    // The shield passed the surrogate keys on to the edges, so they purge by them too.
    for edge in &edges {
        let (_, answer) = edge.purge(json!({"key": "s"})).await;
        assert_eq!(answer["purged"], 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_concurrent_requests_and_purges_every_answer_is_the_right_variant() {
    let origin = Origin::start().await;
    let paths: Vec<String> = (0..20).map(|i| format!("/c/{i}")).collect();
    for (i, p) in paths.iter().enumerate() {
        let cc = if i % 3 == 0 {
            "max-age=60, stale-while-revalidate=60"
        } else {
            "max-age=60"
        };
        let mut reply = Reply::ok(
            "ECHO accept-language",
            &[("vary", "Accept-Language"), ("etag", "\"e\"")],
        );
        reply.headers.push(("cache-control".into(), cc.into()));
        reply
            .headers
            .push(("surrogate-key".into(), format!("k{}", i % 4)));
        origin.set(p, reply);
    }
    let dir = tempfile::tempdir().expect("dir");
    let edge = TestEdge::start_with(origin.addr, |c| {
        c.store.disk = Some((dir.path().into(), 256 * 1024));
        c.store.memory_bytes = 2 * 1024 * 1024;
    })
    .await;
    let langs = ["fr", "de", "en"];
    // Counted, not timed: the clients read until the purger has made its purges (and each at
    // least 10 times), however slow the machine.
    const PURGES: usize = 30;
    let purging = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut clients = Vec::new();
    for worker in 0..6usize {
        let (paths, url, purging) = (paths.clone(), edge.url(""), purging.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0usize;
            while (purging.load(std::sync::atomic::Ordering::SeqCst) || n < 10) && n < 100_000 {
                let path = &paths[(worker * 7 + n * 13) % paths.len()];
                let lang = langs[(worker + n) % langs.len()];
                let (status, _, body) =
                    get(&format!("{url}{path}"), &[("accept-language", lang)]).await;
                assert_eq!(status, 200, "{path} {lang}: {body}");
                assert_eq!(
                    body,
                    format!("{path} accept-language={lang}"),
                    "the variant asked for"
                );
                n += 1;
            }
            n
        }));
    }
    let purger = {
        let (admin, purging) = (edge.admin, purging.clone());
        tokio::spawn(async move {
            let mut purges = 0;
            while purges < PURGES {
                let body = match purges % 4 {
                    0 => json!({"prefix": "/c/1"}),
                    1 => json!({"key": "k2", "soft": true}),
                    2 => json!({"url": "/c/3"}),
                    _ => json!({"key": "k0"}),
                };
                let r = client()
                    .post(format!("http://{admin}/purge"))
                    .json(&body)
                    .send()
                    .await
                    .expect("purge");
                assert_eq!(r.status().as_u16(), 200);
                purges += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            purging.store(false, std::sync::atomic::Ordering::SeqCst);
            purges
        })
    };
    let mut answered = 0;
    for c in clients {
        answered += c.await.expect("a client panicked");
    }
    assert_eq!(purger.await.expect("the purger panicked"), PURGES);
    assert!(answered >= 60, "only {answered} answers");
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, "strata_edge_requests_total{outcome=\"error\"}"),
        0.0
    );
    assert!(metric(&m, "strata_edge_disk_bytes") <= (256 * 1024) as f64);
}

#[tokio::test]
async fn static_files_are_served_by_the_edge_and_nothing_outside_their_directory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start().await;
    origin.set("/api", Reply::ok("from the origin", CACHEABLE));
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("site");
    std::fs::create_dir_all(root.join("css")).expect("mkdir");
    std::fs::write(root.join("css/app.css"), "body{color:red}").expect("write");
    std::fs::write(root.join(".env"), "SECRET=1").expect("write");
    std::fs::write(dir.path().join("outside.txt"), "outside").expect("write");
    std::os::unix::fs::symlink(dir.path().join("outside.txt"), root.join("escape.txt"))
        .expect("symlink");
    let files = strata_edge::files::StaticFiles {
        dir: root.clone(),
        prefix: "/static/".into(),
        max_age: 600,
    };
    let edge = TestEdge::start_with(origin.addr, |c| c.files = Some(files)).await;
    let (status, h, body) = get(&edge.url("/static/css/app.css"), &[]).await;
    assert_eq!((status, body.as_str()), (200, "body{color:red}"));
    assert_eq!(h["content-type"], "text/css; charset=utf-8");
    assert_eq!(h["cache-control"], "public, max-age=600");
    assert_eq!(cache_status(&h), "strata-edge; hit; detail=static");
    let etag = h["etag"].to_str().expect("etag").to_string();
    let (status, _, _) = get(
        &edge.url("/static/css/app.css"),
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(status, 304);
    let (status, _, body) = get(&edge.url("/static/css/app.css"), &[("range", "bytes=0-3")]).await;
    assert_eq!((status, body.as_str()), (206, "body"));
    for bad in [
        "/static/../outside.txt",
        "/static/css/../../outside.txt",
        "/static/%2e%2e/outside.txt",
        "/static/.env",
        "/static/escape.txt",
        "/static/css",
        "/static/missing.css",
    ] {
        // Raw bytes: an HTTP client library would normalize the dot segments away.
        let mut s = tokio::net::TcpStream::connect(edge.addr)
            .await
            .expect("connect");
        let request = format!("GET {bad} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let answer = String::from_utf8_lossy(&out);
        assert!(answer.starts_with("HTTP/1.1 404"), "{bad}: {answer}");
        assert!(
            !answer.contains("outside") && !answer.contains("SECRET"),
            "{bad}: {answer}"
        );
    }
    let r = client()
        .post(edge.url("/static/css/app.css"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    let (_, _, body) = get(&edge.url("/api"), &[]).await;
    assert_eq!(
        body, "from the origin",
        "other paths still go to the origin"
    );
    assert_eq!(origin.hits("/static/css/app.css"), 0);
    assert_eq!(
        origin.hits("/outside.txt"),
        0,
        "nothing under the prefix reaches the origin"
    );
    let m = edge.metrics().await;
    assert!(metric(&m, "strata_edge_requests_total{outcome=\"static\"}") >= 10.0);
}

#[tokio::test]
async fn h2c_clients_are_served_from_the_same_cache() {
    use http_body_util::BodyExt;

    let origin = Origin::start().await;
    origin.set("/h2", Reply::ok("over h2", CACHEABLE));
    let edge = TestEdge::start(origin.addr, None).await;
    get(&edge.url("/h2"), &[("host", "cdn.test")]).await;
    let tcp = tokio::net::TcpStream::connect(edge.addr)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(connection);
    let req = http::Request::get("http://cdn.test/h2")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        cache_status(resp.headers()).contains("hit"),
        "{:?}",
        resp.headers()
    );
    assert_eq!(resp.headers()["via"], "2 strata-edge");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"over h2");
    assert_eq!(origin.hits("/h2"), 1);
}

#[tokio::test]
async fn absurd_ages_and_lifetimes_from_the_origin_are_survived() {
    let origin = Origin::start().await;
    origin.set(
        "/old",
        Reply::ok(
            "old",
            &[
                ("cache-control", "max-age=60"),
                ("age", "18446744073709551615"),
            ],
        ),
    );
    origin.set(
        "/bad-age",
        Reply::ok("bad", &[("cache-control", "max-age=60"), ("age", "soon")]),
    );
    origin.set(
        "/forever",
        Reply::ok(
            "forever",
            &[(
                "cache-control",
                "max-age=18446744073709551615, stale-if-error=18446744073709551615",
            )],
        ),
    );
    let edge = TestEdge::start(origin.addr, None).await;
    for _ in 0..2 {
        let (status, h, body) = get(&edge.url("/old"), &[]).await;
        assert_eq!((status, body.as_str()), (200, "old"));
        assert_eq!(h["age"], "2147483648", "clamped (RFC 9111 section 5.1)");
        let (status, _, body) = get(&edge.url("/bad-age"), &[]).await;
        assert_eq!((status, body.as_str()), (200, "bad"));
        let (status, _, body) = get(&edge.url("/forever"), &[]).await;
        assert_eq!((status, body.as_str()), (200, "forever"));
    }
    assert_eq!(
        origin.hits("/bad-age"),
        1,
        "an invalid Age is ignored, the response stored"
    );
    assert_eq!(origin.hits("/forever"), 1);
}
