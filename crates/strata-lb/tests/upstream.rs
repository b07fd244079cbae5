//! A worker's backend connection pool over real sockets: connections are reused, a connection
//! whose response was abandoned mid-body is closed (never leaked, never reused), one the
//! backend closed is skipped, idle ones are reaped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use strata_lb::upstream::{OutBody, SendError, Upstream};

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    closed: AtomicUsize,
}

/// An HTTP/1.1 keep-alive backend that counts the connections it accepted and saw closed.
/// `/big` streams 4 MiB in 64 KiB chunks; anything else answers "ok". With `idle_close`, a
/// connection idle that long is closed by the backend.
async fn counting_backend(idle_close: Option<Duration>) -> (SocketAddr, Arc<Counts>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            c.accepted.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    if req.uri().path() == "/big" {
                        let chunks = (0..64).map(|_| {
                            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![7u8; 64 * 1024])))
                        });
                        let body = StreamBody::new(futures_util::stream::iter(chunks));
                        Ok::<_, Infallible>(Response::new(body.boxed()))
                    } else {
                        Ok(Response::new(Full::new(Bytes::from_static(b"ok")).boxed()))
                    }
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder.timer(TokioTimer::new());
                if let Some(idle) = idle_close {
                    // Also bounds the wait for the next request on a kept-alive connection.
                    builder.header_read_timeout(idle);
                }
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                c.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
}

fn get(addr: SocketAddr, path: &str) -> Request<OutBody> {
    Request::builder()
        .uri(path)
        .header("host", addr.to_string())
        .body(OutBody::full(Bytes::new()))
        .expect("request")
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let (addr, counts) = counting_backend(None).await;
    let upstream = Upstream::new(Duration::from_secs(1), Duration::from_secs(60), None);
    for _ in 0..50 {
        let resp = upstream.send(addr, get(addr, "/")).await.expect("send");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");
    }
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(upstream.idle_count(), 1);
    // A streamed body read to its end also gives its connection back.
    let resp = upstream.send(addr, get(addr, "/big")).await.expect("send");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body.len(), 4 * 1024 * 1024);
    let resp = upstream.send(addr, get(addr, "/")).await.expect("send");
    resp.into_body().collect().await.expect("body");
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_response_abandoned_mid_body_closes_its_connection_and_is_never_reused() {
    let (addr, counts) = counting_backend(None).await;
    let upstream = Upstream::new(Duration::from_secs(1), Duration::from_secs(60), None);
    let resp = upstream.send(addr, get(addr, "/big")).await.expect("send");
    let mut body = resp.into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    assert!(first.is_data());
    drop(body); // the client went away
    assert_eq!(upstream.idle_count(), 0);
    eventually("the backend sees the abandoned connection closed", || {
        counts.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    let resp = upstream.send(addr, get(addr, "/")).await.expect("send");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"ok");
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_the_backend_closed_while_idle_is_skipped() {
    let (addr, counts) = counting_backend(Some(Duration::from_millis(50))).await;
    let upstream = Upstream::new(Duration::from_secs(1), Duration::from_secs(60), None);
    for round in 1..=3 {
        let resp = upstream.send(addr, get(addr, "/")).await.expect("send");
        resp.into_body().collect().await.expect("body");
        eventually("the backend closes the idle connection", || {
            counts.closed.load(Ordering::SeqCst) == round
        })
        .await;
    }
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (addr, counts) = counting_backend(None).await;
    let upstream = Upstream::new(Duration::from_secs(1), Duration::from_millis(100), None);
    let resp = upstream.send(addr, get(addr, "/")).await.expect("send");
    resp.into_body().collect().await.expect("body");
    assert_eq!(upstream.idle_count(), 1);
    upstream.reap();
    assert_eq!(upstream.idle_count(), 1, "not idle for long yet");
    tokio::time::sleep(Duration::from_millis(150)).await;
    upstream.reap();
    assert_eq!(upstream.idle_count(), 0);
    eventually("the backend sees the reaped connection closed", || {
        counts.closed.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn a_backend_that_cannot_be_reached_is_a_request_never_sent() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let upstream = Upstream::new(Duration::from_millis(500), Duration::from_secs(60), None);
    let err = upstream
        .send(dead, get(dead, "/"))
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, SendError::Connect(_)), "{err:?}");
    assert!(err.never_sent());
}

#[tokio::test]
async fn connections_come_from_the_configured_source_address() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let peers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = peers.clone();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            seen.lock().expect("peers").push(peer.ip());
            tokio::spawn(async move {
                let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    for source in [None, Some("127.0.0.2".parse().expect("ip"))] {
        let upstream = Upstream::new(Duration::from_secs(1), Duration::from_secs(60), source);
        let resp = upstream.send(addr, get(addr, "/")).await.expect("send");
        resp.into_body().collect().await.expect("body");
    }
    let peers = peers.lock().expect("peers").clone();
    assert_eq!(
        peers,
        [
            "127.0.0.1".parse::<std::net::IpAddr>().expect("ip"),
            "127.0.0.2".parse().expect("ip")
        ]
    );
}
