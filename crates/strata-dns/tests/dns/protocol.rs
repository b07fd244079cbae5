//! The protocol: SOA/NS, NXDOMAIN and NODATA with the SOA, REFUSED outside the zone,
//! FORMERR/NOTIMP/BADVERS for what it cannot answer, and truncation over UDP with the full
//! answer over TCP.

use std::time::Duration;

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use crate::support::*;

async fn one_dc() -> (TestDns, HealthEndpoint) {
    let b = HealthEndpoint::start("127.0.60.1").await;
    let config = format!(
        r#"
zone = "strata.test."
services = ["www", "www.eu"]
nameservers = ["ns1.strata.test.", "ns2.elsewhere.example."]
policy = "failover"
ttl_secs = 5
[glue]
"ns1" = ["127.0.0.53", "::53"]
[[datacenter]]
name = "a"
balancers = ["{}"]
"#,
        b.addr
    );
    (start_dns(&config, false).await, b)
}

fn soa_in_authority(m: &Message) -> bool {
    m.authorities.len() == 1 && matches!(m.authorities[0].data, RData::SOA(_))
}

#[tokio::test]
async fn the_apex_has_soa_and_ns_and_the_service_short_lived_addresses() {
    let (dns, _b) = one_dc().await;
    let r = udp(dns.addr, &query("strata.test.", RecordType::SOA)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert!(matches!(r.answers[..], [ref soa] if matches!(soa.data, RData::SOA(_))));

    let r = udp(dns.addr, &query("strata.test.", RecordType::NS)).await;
    let mut names: Vec<String> = r
        .answers
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::NS(ns) => Some(ns.0.to_ascii()),
            _ => None,
        })
        .collect();
    names.sort();
    assert_eq!(names, vec!["ns1.strata.test.", "ns2.elsewhere.example."]);
    assert_eq!(r.additionals.len(), 2, "the in-zone nameserver's glue");
    let r = udp(dns.addr, &query("ns1.strata.test.", RecordType::A)).await;
    assert_eq!(ips(&r), vec![ip("127.0.0.53")]);
    let r = udp(dns.addr, &query("ns1.strata.test.", RecordType::AAAA)).await;
    assert_eq!(ips(&r), vec![ip("::53")]);

    // Case does not matter, and the question is echoed as asked.
    let r = udp(dns.addr, &query("WWW.Strata.TEST.", RecordType::A)).await;
    assert_eq!(ips(&r), vec![ip("127.0.60.1")]);
    assert_eq!(r.answers[0].ttl, 5);
    assert_eq!(r.queries[0].name().to_ascii(), "WWW.Strata.TEST.");
    assert!(r.metadata.authoritative);
    assert!(!r.metadata.truncation);
}

#[tokio::test]
async fn existing_names_without_the_type_are_nodata_and_others_nxdomain() {
    let (dns, _b) = one_dc().await;
    for (name, qtype) in [
        ("www.strata.test.", RecordType::AAAA), // no IPv6 balancer
        ("www.strata.test.", RecordType::TXT),
        ("eu.strata.test.", RecordType::A), // an empty non-terminal
        ("ns1.strata.test.", RecordType::MX), // an in-zone nameserver's name
        ("strata.test.", RecordType::A),
    ] {
        let r = udp(dns.addr, &query(name, qtype)).await;
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::NoError,
            "{name} {qtype}"
        );
        assert!(r.answers.is_empty(), "{name} {qtype}");
        assert!(soa_in_authority(&r), "{name} {qtype}: SOA in authority");
        assert!(r.metadata.authoritative);
    }
    for name in [
        "nope.strata.test.",
        "x.www.strata.test.",
        "a.b.eu.strata.test.",
    ] {
        let r = udp(dns.addr, &query(name, RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(soa_in_authority(&r), "{name}: SOA in authority");
        assert!(r.metadata.authoritative);
        assert!(r.answers[..].is_empty());
    }
}

#[tokio::test]
async fn outside_the_zone_and_other_classes_are_refused() {
    let (dns, _b) = one_dc().await;
    for name in ["example.com.", "test.", "strata.test.example."] {
        let r = udp(dns.addr, &query(name, RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{name}");
        assert!(!r.metadata.authoritative);
    }
    let mut q = Message::query();
    let mut question = Query::query(
        Name::from_ascii("www.strata.test.").expect("name"),
        RecordType::TXT,
    );
    question.set_query_class(DNSClass::CH);
    q.add_query(question);
    assert_eq!(
        udp(dns.addr, &q).await.metadata.response_code,
        ResponseCode::Refused
    );
    let r = tcp(dns.addr, &query("strata.test.", RecordType::AXFR))
        .await
        .0;
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::Refused,
        "no zone transfers"
    );
}

#[tokio::test]
async fn malformed_and_unsupported_queries_get_formerr_notimp_or_badvers() {
    let (dns, _b) = one_dc().await;
    // Two questions.
    let mut q = query("www.strata.test.", RecordType::A);
    q.add_query(Query::query(
        Name::from_ascii("strata.test.").expect("name"),
        RecordType::SOA,
    ));
    assert_eq!(
        udp(dns.addr, &q).await.metadata.response_code,
        ResponseCode::FormErr
    );
    // No question.
    let q = Message::query();
    assert_eq!(
        udp(dns.addr, &q).await.metadata.response_code,
        ResponseCode::FormErr
    );
    // A question cut short: the header parses, the rest does not.
    let mut bytes = query("www.strata.test.", RecordType::A)
        .to_vec()
        .expect("encode");
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    bytes.truncate(20);
    let answer = udp_raw(dns.addr, "127.0.0.1", &bytes, ANSWER_WITHIN)
        .await
        .expect("FORMERR");
    let r = Message::from_vec(&answer).expect("parse");
    assert_eq!(
        (r.metadata.id, r.metadata.response_code),
        (id, ResponseCode::FormErr)
    );
    // ECS with address bits past its source prefix (10.1.2.0 is not a /20 network: RFC 7871 §6).
    let q = with_edns(
        query("www.strata.test.", RecordType::A),
        1232,
        Some("10.1.2.0/20"),
    );
    assert_eq!(
        udp(dns.addr, &q).await.metadata.response_code,
        ResponseCode::FormErr
    );
    // A header promising 65535 questions: FORMERR from the header, nothing decoded.
    let bytes = [
        0xab, 0xcd, 0x01, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0x03, b'w', b'w', b'w',
    ];
    let answer = udp_raw(dns.addr, "127.0.0.1", &bytes, ANSWER_WITHIN)
        .await
        .expect("FORMERR");
    let r = Message::from_vec(&answer).expect("parse");
    assert_eq!(
        (r.metadata.id, r.metadata.response_code),
        (0xabcd, ResponseCode::FormErr)
    );
    assert!(r.metadata.recursion_desired, "RD is copied");
    // An ECS option of an unknown address family (3): the option does not parse.
    let q = with_edns(
        query("www.strata.test.", RecordType::A),
        1232,
        Some("10.1.0.0/16"),
    );
    let mut bytes = q.to_vec().expect("encode");
    let at = bytes
        .windows(4)
        .position(|w| w == [0x00, 0x08, 0x00, 0x06])
        .expect("the ECS option: code 8, length 6");
    bytes[at + 5] = 3;
    let answer = udp_raw(dns.addr, "127.0.0.1", &bytes, ANSWER_WITHIN)
        .await
        .expect("FORMERR");
    let r = Message::from_vec(&answer).expect("parse");
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // Another opcode.
    let mut q = query("www.strata.test.", RecordType::A);
    q.metadata.op_code = OpCode::Status;
    assert_eq!(
        udp(dns.addr, &q).await.metadata.response_code,
        ResponseCode::NotImp
    );
    // EDNS version 1.
    let mut q = with_edns(query("www.strata.test.", RecordType::A), 1232, None);
    if let Some(edns) = q.edns.as_mut() {
        edns.set_version(1);
    }
    let code = udp(dns.addr, &q).await.metadata.response_code;
    // 16 is both BADVERS (in a response's OPT) and BADSIG (TSIG); the decoder names it BADSIG.
    assert_eq!(u16::from(code), u16::from(ResponseCode::BADVERS), "{code}");
    // A response is never answered.
    let mut q = query("www.strata.test.", RecordType::A);
    q.metadata.message_type = hickory_proto::op::MessageType::Response;
    let bytes = q.to_vec().expect("encode");
    assert!(
        udp_raw(dns.addr, "127.0.0.1", &bytes, Duration::from_millis(300))
            .await
            .is_none()
    );
    // Still answering.
    assert_eq!(
        ips(&udp(dns.addr, &query("www.strata.test.", RecordType::A)).await),
        vec![ip("127.0.60.1")]
    );
}

#[tokio::test]
async fn a_big_answer_is_truncated_over_udp_and_whole_over_tcp() {
    const BALANCERS: u8 = 40;
    let mut endpoints = Vec::new();
    for i in 1..=BALANCERS {
        endpoints.push(HealthEndpoint::start(&format!("127.0.70.{i}")).await);
    }
    let list: Vec<String> = endpoints
        .iter()
        .map(|e| format!("\"{}\"", e.addr))
        .collect();
    let config = format!(
        r#"
zone = "strata.test."
services = ["www"]
policy = "failover"
[[datacenter]]
name = "big"
balancers = [{}]
"#,
        list.join(", ")
    );
    let dns = start_dns(&config, false).await;
    let q = query("www.strata.test.", RecordType::A);
    let (r, size) = udp_from(dns.addr, "127.0.0.1", &q).await;
    assert!(r.metadata.truncation, "TC set");
    assert!(r.answers.is_empty());
    assert!(size <= 512, "{size} bytes");
    // A small EDNS buffer is honoured too.
    let (r, size) = udp_from(dns.addr, "127.0.0.1", &with_edns(q.clone(), 512, None)).await;
    assert!(r.metadata.truncation && size <= 512, "{size} bytes");
    // A large enough one takes the whole answer over UDP.
    let (r, size) = udp_from(dns.addr, "127.0.0.1", &with_edns(q.clone(), 4096, None)).await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), usize::from(BALANCERS));
    assert!(size <= 1232, "{size} bytes");
    // TCP: everything, with no EDNS.
    let (r, size) = tcp(dns.addr, &q).await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), usize::from(BALANCERS));
    assert!(size > 512);
    // Shuffled: over a few answers, the order changes.
    let first = tcp(dns.addr, &q).await.0.answers;
    let mut differs = false;
    for _ in 0..10 {
        differs |= tcp(dns.addr, &q).await.0.answers != first;
    }
    assert!(differs, "the order of the answers is shuffled");
}

#[tokio::test]
async fn one_tcp_connection_carries_several_queries() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (dns, _b) = one_dc().await;
    let mut stream = tokio::net::TcpStream::connect(dns.addr)
        .await
        .expect("connect");
    let queries = [
        query("www.strata.test.", RecordType::A),
        query("nope.strata.test.", RecordType::A),
        query("strata.test.", RecordType::SOA),
    ];
    // Sent back to back before reading (RFC 7766 §6.2.1.1 pipelining).
    let mut framed = Vec::new();
    for q in &queries {
        let bytes = q.to_vec().expect("encode");
        framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        framed.extend_from_slice(&bytes);
    }
    stream.write_all(&framed).await.expect("write");
    let mut codes = Vec::new();
    for q in &queries {
        let mut len = [0u8; 2];
        tokio::time::timeout(ANSWER_WITHIN, stream.read_exact(&mut len))
            .await
            .expect("in time")
            .expect("length");
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut body).await.expect("body");
        let r = Message::from_vec(&body).expect("parse");
        assert_eq!(r.metadata.id, q.metadata.id);
        codes.push(r.metadata.response_code);
    }
    assert_eq!(
        codes,
        vec![
            ResponseCode::NoError,
            ResponseCode::NXDomain,
            ResponseCode::NoError
        ]
    );
}

#[tokio::test]
async fn tcp_connections_past_the_limit_are_closed_and_a_freed_slot_is_reused() {
    use strata_dns::server::MAX_TCP_CONNECTIONS;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (dns, _b) = one_dc().await;
    let q = query("www.strata.test.", RecordType::A);
    let bytes = q.to_vec().expect("encode");
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    // Asks on a new connection: whether it was answered (or closed instead).
    async fn ask(addr: std::net::SocketAddr, framed: &[u8]) -> (tokio::net::TcpStream, bool) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _ = s.write_all(framed).await;
        let mut len = [0u8; 2];
        let served = matches!(
            tokio::time::timeout(ANSWER_WITHIN, s.read_exact(&mut len)).await,
            Ok(Ok(_))
        );
        if served {
            let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut body).await.expect("body");
        }
        (s, served)
    }
    let mut open = Vec::new();
    for _ in 0..MAX_TCP_CONNECTIONS {
        let (s, served) = ask(dns.addr, &framed).await;
        assert!(served, "a connection within the limit is served");
        open.push(s);
    }
    let (_, served) = ask(dns.addr, &framed).await;
    assert!(!served, "the connection past the limit is closed");
    drop(open.pop());
    eventually(
        ANSWER_WITHIN,
        "a freed slot serves a new connection",
        async || ask(dns.addr, &framed).await.1,
    )
    .await;
}

#[tokio::test]
async fn ipv6_listens_and_answers_aaaa_with_the_ipv6_balancers() {
    let v4 = HealthEndpoint::start("127.0.90.1").await;
    let v6 = HealthEndpoint::start("::1").await;
    let config = one_data_centre(&[v4.addr, v6.addr]);
    let dns = start_dns_on(&config, false, "[::1]:0".parse().expect("addr")).await;
    assert!(dns.addr.is_ipv6());
    let (r, _) = udp_from(
        dns.addr,
        "::1",
        &query("www.strata.test.", RecordType::AAAA),
    )
    .await;
    assert_eq!(ips(&r), vec![ip("::1")]);
    let (r, _) = udp_from(dns.addr, "::1", &query("www.strata.test.", RecordType::A)).await;
    assert_eq!(ips(&r), vec![ip("127.0.90.1")]);
    let (r, _) = tcp(dns.addr, &query("www.strata.test.", RecordType::ANY)).await;
    assert_eq!(ips(&r), vec![ip("127.0.90.1"), ip("::1")]);
}
