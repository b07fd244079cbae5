//! Routes (`--route /dashboard/=IP:PORT`) over real sockets: a scripted origin, a scripted
//! second origin behind the route, and a real edge in front of both.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Origin, Reply, TestEdge, cache_status, get, metric};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn edge_with_route(origin: SocketAddr, routed: SocketAddr) -> TestEdge {
    TestEdge::start_with(origin, |c| {
        c.routes = vec![format!("/dashboard/={routed}").parse().expect("a route")];
    })
    .await
}

#[tokio::test]
async fn a_route_strips_its_prefix_stores_what_rfc_9111_allows_and_nothing_private() {
    let origin = Origin::start().await;
    let dash = Origin::start().await;
    dash.set(
        "/",
        Reply::ok("page", &[("cache-control", "no-cache"), ("etag", "\"p1\"")]),
    );
    dash.set(
        "/api/roles?all=1",
        Reply::ok("roles", &[("cache-control", "no-store")]),
    );
    // Live answers for whoever asks: the caller's own Authorization, echoed.
    dash.set(
        "/api/me",
        Reply::ok("ECHO authorization", &[("cache-control", "no-store")]),
    );
    // Storable for anyone, but not when asked with Authorization (RFC 9111 §3.5).
    dash.set(
        "/api/shared",
        Reply::ok("ECHO authorization", &[("cache-control", "max-age=60")]),
    );
    let edge = edge_with_route(origin.addr, dash.addr).await;

    // The prefix without its slash: redirected by the edge, no origin asked.
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = no_follow
        .get(edge.url("/dashboard?x=1"))
        .send()
        .await
        .expect("GET /dashboard");
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(r.headers()["location"], "/dashboard/?x=1");

    // The page: stored (no-cache, an ETag), then revalidated with a 304 from the route's origin.
    let (status, h, body) = get(&edge.url("/dashboard/"), &[]).await;
    assert_eq!((status, body.as_str()), (200, "page"));
    assert!(cache_status(&h).contains("fwd=miss; stored"), "{h:?}");
    let seen = dash.last("/").expect("the page asked for at /");
    assert_eq!(seen.headers["via"], "1.1 strata-edge");
    let (status, h, body) = get(&edge.url("/dashboard/"), &[]).await;
    assert_eq!((status, body.as_str()), (200, "page"));
    assert!(
        cache_status(&h).contains("fwd=stale; fwd-status=304"),
        "revalidated: {h:?}"
    );
    assert_eq!(
        dash.last("/").expect("asked again").headers["if-none-match"],
        "\"p1\""
    );
    assert_eq!(dash.hits("/"), 2);

    // no-store answers: the prefix stripped, the query kept, never stored.
    for _ in 0..2 {
        let (status, h, body) = get(&edge.url("/dashboard/api/roles?all=1"), &[]).await;
        assert_eq!((status, body.as_str()), (200, "roles"));
        assert_eq!(cache_status(&h), "strata-edge; fwd=miss");
    }
    assert_eq!(dash.hits("/api/roles?all=1"), 2);

    // An admin's request is never answered to someone else from the store.
    for path in ["/dashboard/api/me", "/dashboard/api/shared"] {
        let (_, _, mine) = get(&edge.url(path), &[("authorization", "Bearer admin")]).await;
        assert!(mine.ends_with("authorization=Bearer admin"), "{mine}");
        let (_, _, theirs) = get(&edge.url(path), &[]).await;
        assert!(theirs.ends_with("authorization=-"), "{path}: {theirs}");
    }
    assert_eq!(dash.hits("/api/me"), 2);
    assert_eq!(dash.hits("/api/shared"), 2);

    // Nothing under the prefix reached the edge's own origin, and the redirect is counted.
    assert_eq!(origin.hits("/dashboard/"), 0);
    assert_eq!(origin.hits("/"), 0);
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, "strata_edge_requests_total{outcome=\"redirect\"}"),
        1.0
    );
    // The edge's own origin still answers every other path.
    origin.set("/users/12", Reply::ok("john", &[]));
    let (status, _, body) = get(&edge.url("/users/12"), &[]).await;
    assert_eq!((status, body.as_str()), (200, "john"));
    assert_eq!(dash.hits("/users/12"), 0);
}

/// An origin that answers every request with an event stream that sends one event and never
/// ends.
async fn endless_event_stream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let event = "data: {\"n\":1}\n\n";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\n\
                     transfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
                    event.len()
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                // Never ends: held open until the edge lets go.
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_event_stream_is_passed_on_as_it_comes_and_never_stored() {
    let origin = Origin::start().await;
    let events = endless_event_stream().await;
    let edge = edge_with_route(origin.addr, events).await;
    for _ in 0..2 {
        let mut r = tokio::time::timeout(
            Duration::from_secs(5),
            common::client().get(edge.url("/dashboard/events")).send(),
        )
        .await
        .expect("the head arrives before the stream ends")
        .expect("GET /dashboard/events");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let chunk = tokio::time::timeout(Duration::from_secs(5), r.chunk())
            .await
            .expect("the first event arrives while the stream goes on")
            .expect("a chunk")
            .expect("not the end");
        assert_eq!(&chunk[..], b"data: {\"n\":1}\n\n");
    }
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, "strata_edge_not_stored_total{reason=\"event-stream\"}"),
        2.0
    );
}
