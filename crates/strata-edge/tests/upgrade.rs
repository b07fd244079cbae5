//! Upgrades through the edge: a WebSocket handshake is asked of the origin and, once it answers
//! `101 Switching Protocols`, the client and the origin are joined and bytes go both ways
//! (the balancer's tunnel); an upgrade the origin declines is relayed, and the client's
//! connection then closes (what follows the request may be another protocol). Nothing of
//! either is stored.

mod common;
/// The balancer's tests' upgrading echo backend, as the origin.
#[path = "../../strata-lb/tests/support/upgrading_echo.rs"]
mod upgrading_echo;

use std::net::SocketAddr;
use std::time::Duration;

use common::{TestEdge, metric};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends a WebSocket handshake for `path` and reads the answer's head, lower-cased.
async fn handshake(edge: SocketAddr, path: &str) -> (tokio::net::TcpStream, String) {
    let mut s = tokio::net::TcpStream::connect(edge).await.expect("connect");
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("head in time")
            .expect("read");
        assert_eq!(
            n,
            1,
            "connection closed during the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&head).to_ascii_lowercase())
}

#[tokio::test]
async fn a_websocket_passes_through_the_edge_both_ways() {
    let origin = upgrading_echo::upgrading_echo().await;
    let edge = TestEdge::start(origin, None).await;
    let (mut s, head) = handshake(edge.addr, "/ws").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("connection: upgrade"), "{head}");
    for msg in [&b"ping"[..], b"frames both ways", b"and again"] {
        s.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("read");
        assert_eq!(back, msg);
    }
    // Two at once, each its own tunnel.
    let (mut a, _) = handshake(edge.addr, "/ws").await;
    let (mut b, _) = handshake(edge.addr, "/ws").await;
    a.write_all(b"to a").await.expect("write");
    b.write_all(b"to b").await.expect("write");
    for (s, want) in [(&mut a, b"to a"), (&mut b, b"to b")] {
        let mut back = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("read");
        assert_eq!(&back, want);
    }
    let text = reqwest::get(format!("http://{}/metrics", edge.admin))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert_eq!(
        metric(&text, "strata_edge_stored_objects"),
        0.0,
        "nothing of an upgrade is stored"
    );
}

#[tokio::test]
async fn an_upgrade_the_origin_declines_is_relayed_and_the_connection_then_closes() {
    let origin = upgrading_echo::upgrading_echo().await;
    let edge = TestEdge::start(origin, None).await;
    let (mut s, head) = handshake(edge.addr, upgrading_echo::DECLINED).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    // The rest of the connection is not read as requests: it ends.
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the edge closes the connection");
    assert!(
        !String::from_utf8_lossy(&rest).contains("HTTP/1.1"),
        "no second answer: {:?}",
        String::from_utf8_lossy(&rest)
    );
}
