//! Health checks move traffic: a failing balancer leaves the answers within fall × interval,
//! a recovered one returns after rise × interval, and a data centre with no healthy balancer
//! gives way to the next.

use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::support::*;

const INTERVAL_MS: u64 = 100;
const TIMEOUT_MS: u64 = 80;
const RISE: u64 = 3;
const FALL: u64 = 2;

/// How long a verdict may take: the checks it needs, one interval of phase, one timeout, and
/// slack for a shared machine.
fn within(checks: u64) -> Duration {
    Duration::from_millis((checks + 1) * INTERVAL_MS + TIMEOUT_MS + 800)
}

#[tokio::test]
async fn failing_balancers_leave_the_answers_and_return_when_healthy() {
    let a1 = HealthEndpoint::start("127.0.40.1").await;
    let a2 = HealthEndpoint::start("127.0.40.2").await;
    let b1 = HealthEndpoint::start("127.0.41.1").await;
    let config = format!(
        r#"
zone = "strata.test."
services = ["www"]
policy = "failover"
[health]
interval_ms = {INTERVAL_MS}
timeout_ms = {TIMEOUT_MS}
rise = {RISE}
fall = {FALL}
[[datacenter]]
name = "a"
balancers = ["{}", "{}"]
[[datacenter]]
name = "b"
balancers = ["{}"]
"#,
        a1.addr, a2.addr, b1.addr
    );
    let dns = start_dns(&config, false).await;
    let addr = dns.addr;
    let answer =
        move || async move { ips(&udp(addr, &query("www.strata.test.", RecordType::A)).await) };
    assert_eq!(answer().await, vec![ip("127.0.40.1"), ip("127.0.40.2")]);

    // One balancer of two dies: it leaves, the other stays.
    a1.set_healthy(false);
    let took = eventually(within(FALL), "the dead balancer leaves", async || {
        answer().await == vec![ip("127.0.40.2")]
    })
    .await;
    assert!(
        took >= Duration::from_millis((FALL - 1) * INTERVAL_MS),
        "left after {took:?}: one failed check must not be enough"
    );

    // The data centre's last balancer dies: the next data centre answers.
    a2.set_healthy(false);
    eventually(within(FALL), "the dead data centre leaves", async || {
        answer().await == vec![ip("127.0.41.1")]
    })
    .await;

    // Both recover: after `rise` good checks, the first data centre answers again, in full.
    a1.set_healthy(true);
    a2.set_healthy(true);
    let took = eventually(within(RISE), "the data centre returns", async || {
        answer().await == vec![ip("127.0.40.1"), ip("127.0.40.2")]
    })
    .await;
    assert!(
        took >= Duration::from_millis((RISE - 1) * INTERVAL_MS),
        "returned after {took:?}: fewer than rise checks"
    );
}

#[tokio::test]
async fn with_every_data_centre_down_the_answer_carries_all_of_the_first() {
    let a = HealthEndpoint::start("127.0.42.1").await;
    let b = HealthEndpoint::start("127.0.43.1").await;
    a.set_healthy(false);
    b.set_healthy(false);
    let config = format!(
        r#"
zone = "strata.test."
services = ["www"]
policy = "failover"
[[datacenter]]
name = "a"
balancers = ["{}"]
[[datacenter]]
name = "b"
balancers = ["{}"]
"#,
        a.addr, b.addr
    );
    let dns = start_dns(&config, false).await;
    let r = udp(dns.addr, &query("www.strata.test.", RecordType::A)).await;
    assert_eq!(ips(&r), vec![ip("127.0.42.1")]);
}

#[tokio::test]
async fn with_fall_1_a_dead_balancer_leaves_within_one_interval() {
    let a1 = HealthEndpoint::start("127.0.44.1").await;
    let a2 = HealthEndpoint::start("127.0.44.2").await;
    let config = format!(
        r#"
zone = "strata.test."
services = ["www"]
policy = "failover"
[health]
interval_ms = {INTERVAL_MS}
timeout_ms = {TIMEOUT_MS}
rise = 1
fall = 1
[[datacenter]]
name = "a"
balancers = ["{}", "{}"]
"#,
        a1.addr, a2.addr
    );
    let dns = start_dns(&config, false).await;
    let addr = dns.addr;
    let v4 =
        move || async move { ips(&udp(addr, &query("www.strata.test.", RecordType::A)).await) };
    assert_eq!(v4().await, vec![ip("127.0.44.1"), ip("127.0.44.2")]);
    a2.set_healthy(false);
    eventually(within(1), "the dead balancer leaves", async || {
        v4().await == vec![ip("127.0.44.1")]
    })
    .await;
}
