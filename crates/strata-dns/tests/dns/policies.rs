//! The weighted and failover policies over real sockets.

use std::collections::HashMap;

use hickory_proto::rr::RecordType;

use crate::support::*;

#[tokio::test]
async fn weighted_answers_follow_the_weights() {
    let a = HealthEndpoint::start("127.0.12.1").await;
    let b = HealthEndpoint::start("127.0.22.1").await;
    let config = format!(
        r#"
zone = "strata.test."
services = ["www"]
policy = "weighted"
[[datacenter]]
name = "a"
balancers = ["{}"]
weight = 3
[[datacenter]]
name = "b"
balancers = ["{}"]
weight = 1
"#,
        a.addr, b.addr
    );
    let dns = start_dns(&config, false).await;
    let mut counts: HashMap<std::net::IpAddr, u32> = HashMap::new();
    const QUERIES: u32 = 800;
    for _ in 0..QUERIES {
        let r = udp(dns.addr, &query("www.strata.test.", RecordType::A)).await;
        let got = ips(&r);
        assert_eq!(got.len(), 1, "{r:?}");
        *counts.entry(got[0]).or_default() += 1;
    }
    let share = f64::from(counts.get(&ip("127.0.12.1")).copied().unwrap_or(0)) / f64::from(QUERIES);
    // 3:1 is 0.75; 800 draws put the share within ±0.06 with overwhelming probability.
    assert!((0.69..=0.81).contains(&share), "{counts:?}");
}

#[tokio::test]
async fn failover_answers_the_first_healthy_data_centre_in_order() {
    let first = HealthEndpoint::start("127.0.13.1").await;
    let second = HealthEndpoint::start("127.0.23.1").await;
    let third = HealthEndpoint::start("127.0.33.1").await;
    first.set_healthy(false);
    let config = format!(
        r#"
zone = "strata.test."
services = ["www", "api"]
policy = "failover"
[[datacenter]]
name = "first"
balancers = ["{}"]
[[datacenter]]
name = "second"
balancers = ["{}"]
[[datacenter]]
name = "third"
balancers = ["{}"]
"#,
        first.addr, second.addr, third.addr
    );
    let dns = start_dns(&config, false).await;
    for name in ["www.strata.test.", "api.strata.test."] {
        for _ in 0..20 {
            let r = udp(dns.addr, &query(name, RecordType::A)).await;
            assert_eq!(ips(&r), vec![ip("127.0.23.1")]);
        }
    }
}
