//! The fast path against the reference path: for many random queries — names, types, cases,
//! EDNS sizes, ECS prefixes inside and outside the database's networks, source addresses,
//! health states, the data centre failover prefers, all three policies — every response the fast path gives decodes to the same
//! message as the reference path's for the same packet (answers compared as sets, since both
//! shuffle them), with the same size. Mangled packets are checked the same way: the fast path
//! may decline anything, but what it answers must be what the reference path answers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_dns::answer::{Responder, Scratch, Transport};
use strata_dns::config::DnsConfig;
use strata_dns::geoip::GeoDb;
use strata_dns::health::HealthTable;

use crate::support::test_geoip;

/// Three data centres, IPv4 and IPv6 balancers, one IP behind two ports.
fn config(policy: &str, weights: [u32; 3]) -> DnsConfig {
    let text = format!(
        r#"
zone = "strata.test."
services = ["www", "api.eu", "@"]
policy = "{policy}"
ttl_secs = 7
[glue]
"ns1" = ["127.0.0.53"]
[[datacenter]]
name = "us-east"
balancers = ["127.0.10.1:80", "127.0.10.2:80", "[2001:db8:10::1]:80"]
weight = {}
latitude = 39.0
longitude = -77.0
fallback = ["eu-west"]
[[datacenter]]
name = "us-west"
balancers = ["127.0.20.1:80", "127.0.20.2:80", "127.0.20.2:81", "[2001:db8:20::1]:80"]
weight = {}
latitude = 37.0
longitude = -122.0
[[datacenter]]
name = "eu-west"
balancers = ["127.0.30.1:80"]
weight = {}
latitude = 53.0
longitude = -6.0
continents = ["EU"]
"#,
        weights[0], weights[1], weights[2]
    );
    DnsConfig::parse(&text).unwrap_or_else(|e| panic!("test config: {e}"))
}

struct Setup {
    responder: Responder,
    health: Arc<HealthTable>,
    balancers: Vec<usize>,
    _dir: tempfile::TempDir,
}

fn setup(policy: &str, weights: [u32; 3]) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let geo = GeoDb::open(&test_geoip(dir.path())).expect("open the test database");
    let config = config(policy, weights);
    let balancers = config
        .datacentres
        .iter()
        .map(|d| d.balancers.len())
        .collect();
    let health = Arc::new(HealthTable::all_up(&config.datacentres));
    let responder = Responder::new(
        Arc::new(config),
        health.clone(),
        Some(Arc::new(geo)),
        1_700_000_000,
    );
    Setup {
        responder,
        health,
        balancers,
        _dir: dir,
    }
}

fn random_case(rng: &mut StdRng, name: &str) -> String {
    name.chars()
        .map(|c| {
            if rng.random_bool(0.3) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// An address with every bit past `prefix` cleared.
fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & keep))
        }
        IpAddr::V6(a) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & keep))
        }
    }
}

fn random_ecs(rng: &mut StdRng) -> ClientSubnet {
    let v4 = [
        [10, 1, rng.random(), rng.random()],
        [127, 1, rng.random(), rng.random()],
        [127, 2, rng.random(), rng.random()],
        [172, 16, rng.random(), rng.random()],
        rng.random(),
    ];
    let ip = if rng.random_bool(0.7) {
        IpAddr::V4(Ipv4Addr::from(v4[rng.random_range(0..v4.len())]))
    } else if rng.random_bool(0.6) {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            rng.random(),
            rng.random(),
            0,
            0,
            0,
            1,
        ))
    } else {
        IpAddr::V6(Ipv6Addr::from(rng.random::<u128>()))
    };
    let width = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match rng.random_range(0..4) {
        0 => 0,
        1 => 24.min(width),
        2 => width,
        _ => rng.random_range(0..=width),
    };
    ClientSubnet::new(masked(ip, prefix), prefix, 0)
}

fn random_query(rng: &mut StdRng) -> Vec<u8> {
    const NAMES: [&str; 8] = [
        "www.strata.test.",
        "www.strata.test.",
        "api.eu.strata.test.",
        "strata.test.",
        "eu.strata.test.",
        "nope.strata.test.",
        "ns1.strata.test.",
        "example.com.",
    ];
    const TYPES: [RecordType; 8] = [
        RecordType::A,
        RecordType::A,
        RecordType::AAAA,
        RecordType::AAAA,
        RecordType::ANY,
        RecordType::TXT,
        RecordType::SOA,
        RecordType::NS,
    ];
    let pick = NAMES[rng.random_range(0..NAMES.len())];
    let name = random_case(rng, pick);
    let qtype = TYPES[rng.random_range(0..TYPES.len())];
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(&name).expect("name"), qtype));
    m.metadata.recursion_desired = rng.random();
    m.metadata.checking_disabled = rng.random_bool(0.2);
    if rng.random_bool(0.7) {
        let mut edns = Edns::new();
        edns.set_max_payload([0, 512, 600, 1232, 4096][rng.random_range(0..5)]);
        edns.set_dnssec_ok(rng.random_bool(0.2));
        if rng.random_bool(0.7) {
            edns.options_mut()
                .insert(EdnsOption::Subnet(random_ecs(rng)));
        }
        m.set_edns(edns);
    }
    m.to_vec().expect("encode")
}

fn random_source(rng: &mut StdRng) -> IpAddr {
    let sources = [
        "127.0.0.1",
        "127.1.2.3",
        "127.2.9.9",
        "10.1.5.5",
        "::1",
        "2001:db8::5",
        "::ffff:127.1.0.1",
    ];
    sources[rng.random_range(0..sources.len())]
        .parse()
        .expect("ip")
}

fn shuffle_health(rng: &mut StdRng, s: &Setup) {
    let p_up = [0.0, 0.5, 0.8, 1.0][rng.random_range(0..4)];
    for (dc, &n) in s.balancers.iter().enumerate() {
        for b in 0..n {
            s.health.set(dc, b, rng.random_bool(p_up));
        }
    }
    // The data centre failover prefers (where the primary is, when a primary file says).
    s.health.prefer(rng.random_range(0..s.balancers.len()));
}

/// A decoded response with its answers in a fixed order.
fn normalized(bytes: &[u8]) -> Message {
    let mut m = Message::from_vec(bytes).expect("a well-formed response");
    m.answers.sort_by_key(|r| r.to_string());
    m
}

/// Whether the fast path answered `packet`; panics when its answer differs from the
/// reference path's.
fn check(s: &Setup, scratch: &mut Scratch, packet: &[u8], source: IpAddr, t: Transport) -> bool {
    let mut out = Vec::new();
    if !s
        .responder
        .respond_fast(packet, source, t, scratch, &mut out)
    {
        return false;
    }
    let reference = s
        .responder
        .respond_reference(packet, source, t)
        .unwrap_or_else(|| {
            panic!("the fast path answered what the reference drops: {packet:02x?}")
        });
    assert_eq!(
        normalized(&out),
        normalized(&reference),
        "the paths differ for {packet:02x?} from {source}"
    );
    assert_eq!(out.len(), reference.len(), "sizes differ for {packet:02x?}");
    true
}

#[test]
fn the_fast_path_answers_as_the_reference_path_does() {
    for (policy, weights) in [
        ("geo", [1, 1, 1]),
        ("failover", [1, 1, 1]),
        // Deterministic weighted: only us-east weighs, so the choice does not depend on chance.
        ("weighted", [1, 0, 0]),
    ] {
        let s = setup(policy, weights);
        let mut rng = StdRng::seed_from_u64(7871);
        let mut scratch = Scratch::new();
        let (mut total, mut fast) = (0, 0);
        for i in 0..6000 {
            if i % 40 == 0 {
                shuffle_health(&mut rng, &s);
            }
            let packet = random_query(&mut rng);
            let source = random_source(&mut rng);
            let t = if rng.random_bool(0.9) {
                Transport::Udp
            } else {
                Transport::Tcp
            };
            total += 1;
            fast += usize::from(check(&s, &mut scratch, &packet, source, t));
        }
        assert!(
            fast * 6 > total,
            "{policy}: the fast path took only {fast} of {total} queries"
        );
        if policy == "geo" {
            assert!(scratch.cached_orders() > 0, "geo orders are cached");
        }
    }
}

#[test]
fn mangled_packets_are_declined_or_answered_as_the_reference_path_does() {
    let s = setup("geo", [1, 1, 1]);
    let mut rng = StdRng::seed_from_u64(1035);
    let mut scratch = Scratch::new();
    let mut fast = 0;
    for _ in 0..20_000 {
        let mut packet = random_query(&mut rng);
        match rng.random_range(0..4) {
            0 => packet.truncate(rng.random_range(0..packet.len())),
            1 => packet.push(rng.random()),
            _ => {
                for _ in 0..rng.random_range(1..3) {
                    let i = rng.random_range(0..packet.len());
                    packet[i] = rng.random();
                }
            }
        }
        fast += usize::from(check(
            &s,
            &mut scratch,
            &packet,
            random_source(&mut rng),
            Transport::Udp,
        ));
    }
    assert!(fast > 0, "some mangled packets are still common queries");
}

/// Times the two paths on the benchmark's query mix (`bench/dns.py`: an A query with EDNS and
/// an ECS /24, 30 % in each placed network, 10 % unplaced). Run with
/// `cargo test --release -p strata-dns --test dns fast_path_speed -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn fast_path_speed() {
    let s = setup("geo", [1, 1, 1]);
    let mut rng = StdRng::seed_from_u64(7);
    let packets: Vec<Vec<u8>> = (0..100_000)
        .map(|_| {
            let net: [u8; 2] = match rng.random_range(0..10) {
                0..3 => [127, 1],
                3..6 => [127, 2],
                6..9 => [10, 1],
                _ => [172, 16 + rng.random_range(0..16)],
            };
            let subnet = format!("{}.{}.{}.0/24", net[0], net[1], rng.random::<u8>());
            let mut m = Message::query();
            m.add_query(Query::query(
                Name::from_ascii("www.strata.test.").expect("name"),
                RecordType::A,
            ));
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            edns.options_mut()
                .insert(EdnsOption::Subnet(subnet.parse().expect("subnet")));
            m.set_edns(edns);
            m.to_vec().expect("encode")
        })
        .collect();
    let source: IpAddr = "127.0.0.1".parse().expect("ip");
    let rounds = 5;
    let n = packets.len() * rounds;
    let start = Instant::now();
    let mut bytes = 0;
    for _ in 0..rounds {
        for p in &packets {
            bytes += s
                .responder
                .respond_reference(p, source, Transport::Udp)
                .map_or(0, |r| r.len());
        }
    }
    let reference = start.elapsed();
    let mut scratch = Scratch::new();
    let mut out = Vec::with_capacity(1232);
    let start = Instant::now();
    for _ in 0..rounds {
        for p in &packets {
            assert!(
                s.responder
                    .respond_into(p, source, Transport::Udp, &mut scratch, &mut out)
            );
            bytes += out.len();
        }
    }
    let fast = start.elapsed();
    let per = |d: std::time::Duration| d.as_nanos() as f64 / n as f64;
    println!(
        "reference path: {:.0} ns/query; fast path: {:.0} ns/query ({:.1}x); {bytes} bytes",
        per(reference),
        per(fast),
        per(reference) / per(fast)
    );
}
