//! Random and malformed bytes thrown at the UDP port: the server answers what it can within
//! the size it is allowed, drops the rest, and still answers correctly afterwards.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;

use crate::support::*;

/// The largest response a packet may get: 512 bytes, or its EDNS size capped at 1232.
fn allowed(packet: &[u8]) -> usize {
    match Message::from_vec(packet) {
        Ok(m) => m
            .edns
            .map_or(512, |e| usize::from(e.max_payload().clamp(512, 1232))),
        Err(_) => 512,
    }
}

fn packets(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let valid = with_edns(
        query("www.strata.test.", RecordType::A),
        1232,
        Some("10.1.0.0/16"),
    )
    .to_vec()
    .expect("encode");
    let mut out = Vec::new();
    // Pure noise, of every small length and some large ones.
    for len in 0..40 {
        out.push((0..len).map(|_| rng.random()).collect());
    }
    for _ in 0..150 {
        let len = rng.random_range(12..700);
        let mut p: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        p[2] &= 0x7f; // a query, so the server parses further
        out.push(p);
    }
    // A valid query cut at every length.
    for len in 0..valid.len() {
        out.push(valid[..len].to_vec());
    }
    // A valid query with bytes flipped.
    for _ in 0..200 {
        let mut p = valid.clone();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..p.len());
            p[i] = rng.random();
        }
        out.push(p);
    }
    // Compression pointers: to itself, in a loop of two, forward past the end.
    let header = [0x12, 0x34, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    for name in [
        vec![0xc0, 0x0c],
        vec![0x01, b'a', 0xc0, 0x0c],
        vec![0xc0, 0x0e, 0xc0, 0x0c],
        vec![0xc0, 0xff],
        vec![0x3f],
        vec![0x40, b'a'],
    ] {
        let mut p = header.to_vec();
        p.extend(name);
        p.extend([0, 1, 0, 1]);
        out.push(p);
    }
    // Counts that promise more records than there are.
    let mut p = valid.clone();
    p[6] = 0xff;
    p[7] = 0xff;
    out.push(p);
    out
}

#[tokio::test]
async fn garbage_never_stops_the_server_nor_gets_an_oversized_answer() {
    let b = HealthEndpoint::start("127.0.80.1").await;
    let dns = start_dns(&one_data_centre(&[b.addr]), false).await;
    let mut rng = StdRng::seed_from_u64(7871);
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut limit_by_id: HashMap<u16, usize> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let mut answered = 0;
    let all = packets(&mut rng);
    for (n, packet) in all.iter().enumerate() {
        if packet.len() >= 2 {
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            let entry = limit_by_id.entry(id).or_insert(0);
            *entry = (*entry).max(allowed(packet));
        }
        socket.send_to(packet, dns.addr).await.expect("send");
        // After each, a real query must be answered correctly.
        let probe = query("www.strata.test.", RecordType::A);
        let probe_id = probe.metadata.id;
        socket
            .send_to(&probe.to_vec().expect("encode"), dns.addr)
            .await
            .expect("send");
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (len, _) = tokio::time::timeout(left, socket.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| {
                    panic!("no answer to the probe after packet #{n}: {packet:02x?}")
                })
                .expect("recv");
            let response = &buf[..len];
            let id = u16::from_be_bytes([response[0], response[1]]);
            let parsed = Message::from_vec(response).expect("every response is well formed");
            if id == probe_id && parsed.queries.len() == 1 && parsed.answers.len() == 1 {
                assert_eq!(ips(&parsed), vec![ip("127.0.80.1")]);
                break;
            }
            let limit = limit_by_id.get(&id).copied().unwrap_or(512);
            assert!(
                len <= limit,
                "a {len}-byte answer to packet #{n} (limit {limit})"
            );
            assert!(parsed.metadata.message_type == hickory_proto::op::MessageType::Response);
            answered += 1;
        }
    }
    // Most garbage with a query header gets FORMERR; some valid-looking mutations get answers.
    assert!(answered > 0, "some malformed packets were answered");
}
