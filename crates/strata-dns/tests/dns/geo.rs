//! The geo policy: by source address, and by EDNS Client Subnet with its scope.

use hickory_proto::rr::RecordType;

use crate::support::*;

/// Three data centres: US east, US west and Ireland, each with its own balancer address.
async fn geo_setup() -> (TestDns, Vec<HealthEndpoint>) {
    let east = HealthEndpoint::start("127.0.10.1").await;
    let west = HealthEndpoint::start("127.0.20.1").await;
    let eu = HealthEndpoint::start("127.0.30.1").await;
    let config = format!(
        r#"
zone = "strata.test."
services = ["www"]
policy = "geo"
[[datacenter]]
name = "us-east"
balancers = ["{}"]
latitude = 39.0
longitude = -77.0
[[datacenter]]
name = "us-west"
balancers = ["{}"]
latitude = 37.0
longitude = -122.0
[[datacenter]]
name = "eu-west"
balancers = ["{}"]
latitude = 53.0
longitude = -6.0
"#,
        east.addr, west.addr, eu.addr
    );
    (start_dns(&config, true).await, vec![east, west, eu])
}

#[tokio::test]
async fn clients_get_the_nearest_data_centre_by_source_address() {
    let (dns, _endpoints) = geo_setup().await;
    let q = query("www.strata.test.", RecordType::A);
    let (east, _) = udp_from(dns.addr, "127.1.0.7", &q).await;
    assert_eq!(ips(&east), vec![ip("127.0.10.1")]);
    let (west, _) = udp_from(dns.addr, "127.2.3.4", &q).await;
    assert_eq!(ips(&west), vec![ip("127.0.20.1")]);
    // Not in the database: the first data centre in the configured order.
    let (unknown, _) = udp_from(dns.addr, "127.0.0.1", &q).await;
    assert_eq!(ips(&unknown), vec![ip("127.0.10.1")]);
    assert!(unknown.metadata.authoritative);
    assert!(ecs(&unknown).is_none(), "no ECS asked, none answered");
}

#[tokio::test]
async fn ecs_decides_over_the_source_address_and_sets_the_scope() {
    let (dns, _endpoints) = geo_setup().await;
    // A resolver in US east asks for a client in Ireland.
    let q = with_edns(
        query("www.strata.test.", RecordType::A),
        1232,
        Some("10.1.2.0/24"),
    );
    let (r, _) = udp_from(dns.addr, "127.1.0.7", &q).await;
    assert_eq!(ips(&r), vec![ip("127.0.30.1")]);
    let subnet = ecs(&r).expect("ECS echoed");
    assert_eq!(subnet.addr(), ip("10.1.2.0"));
    assert_eq!(subnet.source_prefix(), 24);
    assert_eq!(
        subnet.scope_prefix(),
        16,
        "the database network that matched"
    );

    let q = with_edns(
        query("www.strata.test.", RecordType::A),
        1232,
        Some("2001:db8:1::/48"),
    );
    let (r, _) = tcp(dns.addr, &q).await;
    assert_eq!(ips(&r), vec![ip("127.0.20.1")]);
    let subnet = ecs(&r).expect("ECS echoed");
    assert_eq!((subnet.source_prefix(), subnet.scope_prefix()), (48, 32));

    // A source prefix of 0: the client asks that its address not be used.
    let q = with_edns(
        query("www.strata.test.", RecordType::A),
        1232,
        Some("0.0.0.0/0"),
    );
    let (r, _) = udp_from(dns.addr, "127.2.0.1", &q).await;
    assert_eq!(ips(&r), vec![ip("127.0.20.1")], "by source address");
    assert_eq!(ecs(&r).expect("echoed").scope_prefix(), 0);

    // An answer that does not depend on the address has scope 0.
    let q = with_edns(
        query("strata.test.", RecordType::SOA),
        1232,
        Some("10.1.0.0/16"),
    );
    let (r, _) = udp_from(dns.addr, "127.1.0.7", &q).await;
    assert_eq!(ecs(&r).expect("echoed").scope_prefix(), 0);
    let q = with_edns(
        query("nope.strata.test.", RecordType::A),
        1232,
        Some("10.1.0.0/16"),
    );
    let (r, _) = udp_from(dns.addr, "127.1.0.7", &q).await;
    assert_eq!(ecs(&r).expect("echoed").scope_prefix(), 0);
}

#[tokio::test]
async fn a_down_data_centre_sends_its_clients_to_its_fallback_before_the_nearest() {
    let east = HealthEndpoint::start("127.0.11.1").await;
    let west = HealthEndpoint::start("127.0.21.1").await;
    let eu = HealthEndpoint::start("127.0.31.1").await;
    west.set_healthy(false);
    let config = format!(
        r#"
zone = "strata.test."
services = ["www"]
policy = "geo"
[[datacenter]]
name = "us-east"
balancers = ["{}"]
latitude = 39.0
longitude = -77.0
[[datacenter]]
name = "eu-west"
balancers = ["{}"]
latitude = 53.0
longitude = -6.0
[[datacenter]]
name = "us-west"
balancers = ["{}"]
latitude = 37.0
longitude = -122.0
fallback = ["eu-west"]
"#,
        east.addr, eu.addr, west.addr
    );
    let dns = start_dns(&config, true).await;
    // us-west is down from the first check; its fallback list says eu-west, not the nearer east.
    let (r, _) = udp_from(
        dns.addr,
        "127.2.0.1",
        &query("www.strata.test.", RecordType::A),
    )
    .await;
    assert_eq!(ips(&r), vec![ip("127.0.31.1")]);
}
