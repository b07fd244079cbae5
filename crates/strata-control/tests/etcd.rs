//! The control plane's etcd cluster as `strata etcd` builds it, on real etcd members: three
//! members bootstrapped without knowing each other's ports in advance (the first starts a
//! cluster, the others join through it), the cluster state published through it, one member
//! killed — publishing still works with two of three — and the killed member restarted with its
//! data, rejoining and catching up. The shard map's etcd home is exercised on the same
//! cluster: created once by one of two racing publishers, published by version while a
//! member is down, followed by a reader whose first endpoint is the dead member.
//!
//! The members run in this process (`node::run_until`), each on a free loopback port in a
//! temporary directory; every wait polls with a deadline.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use strata_control::cluster::ClusterState;
use strata_control::etcd::node::{self, EtcdArgs};
use strata_control::etcd::{EtcdClient, EtcdStore};
use strata_control::map_home::EtcdMapHome;
use strata_control::store::{StateError, StateStore};
use strata_engines::{etcd, process};
use strata_store::map_home::MapHome as _;
use strata_store::shard::{ShardGroup, ShardMap, Strategy};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One member run by `strata etcd`'s logic in this process.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

fn member_args(dir: &Path, n: usize, port: u16, join: &[String]) -> EtcdArgs {
    let mut args = EtcdArgs::new(dir.join(format!("etcd-{n}")));
    args.name = format!("etcd-{n}");
    args.listen = format!("127.0.0.1:{port}").parse().expect("addr");
    args.join = join.to_vec();
    args
}

fn run(args: &EtcdArgs) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(node::run_until(args.clone(), async move {
        let _ = stopped.await;
    }));
    Running {
        stop: Some(stop),
        task,
    }
}

impl Running {
    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the member stops in time")
            .expect("task")
    }
}

/// Polls `check` every 100 ms until it holds; panics naming `what` after `within`.
async fn until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn healthy(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    tokio::task::spawn_blocking(move || etcd::healthy(addr))
        .await
        .unwrap_or(false)
}

fn group(name: &str) -> ShardGroup {
    ShardGroup::parse(name).expect("a group name")
}

fn client(endpoints: &[String]) -> EtcdClient {
    EtcdClient::new(endpoints.to_vec(), Duration::from_secs(1)).expect("client")
}

/// Publishes `next` over version `expected`, as a controller does when a member fails under
/// it: campaigning again if it lost the lead meanwhile, retrying while etcd elects a leader.
async fn publish(store: &EtcdStore, expected: u64, next: &ClusterState) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let outcome = store.publish(Some(expected), next).await;
        match outcome {
            Ok(()) => return,
            // An earlier attempt went through, its answer lost with the member.
            Err(StateError::Conflict { found: Some(v) }) if v == next.version => return,
            Err(StateError::NotLeader) => {
                tokio::time::timeout(Duration::from_secs(10), store.lead("control-1"))
                    .await
                    .expect("leads again in time")
                    .expect("leads");
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot publish: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The version the members at `endpoints` answer with.
async fn version_at(endpoints: &[String]) -> Option<u64> {
    let store = EtcdStore::new(client(endpoints), "/strata");
    store.load().await.ok().flatten().map(|s| s.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_bootstrap_survive_a_killed_one_and_take_it_back_with_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<u16> = (0..3).map(|_| strata_testkit::free_port()).collect();
    let endpoints: Vec<String> = ports.iter().map(|p| etcd::url(*p)).collect();

    // The first member starts a cluster of its own; the others join through it.
    let first = member_args(dir.path(), 1, ports[0], &[]);
    let mut members = vec![run(&first)];
    until(
        "the first member is healthy",
        Duration::from_secs(30),
        || healthy(ports[0]),
    )
    .await;
    let joiners: Vec<EtcdArgs> = (1..3)
        .map(|i| member_args(dir.path(), i + 1, ports[i], &endpoints[..1]))
        .collect();
    members.extend(joiners.iter().map(run));
    let all = client(&endpoints);
    // etcd adds a member only once the last one added has been up a few seconds. A member
    // whose role stopped (its etcd failed to start or to join) fails the wait at once; its
    // etcd's own log is above in the test's output.
    until(
        "three started members, all healthy",
        Duration::from_secs(90),
        || async {
            if let Some(n) = members.iter().position(|m| m.task.is_finished()) {
                panic!("etcd-{} stopped while the cluster was forming", n + 1);
            }
            let started = all
                .members()
                .await
                .is_ok_and(|m| m.len() == 3 && m.iter().all(|m| !m.name.is_empty()));
            started && healthy(ports[1]).await && healthy(ports[2]).await
        },
    )
    .await;
    let names: Vec<String> = all
        .members()
        .await
        .expect("members")
        .into_iter()
        .map(|m| m.name)
        .collect();
    for n in 1..=3 {
        assert!(names.contains(&format!("etcd-{n}")), "{names:?}");
    }

    // A controller publishes through all three endpoints.
    let store = EtcdStore::new(client(&endpoints), "/strata");
    tokio::time::timeout(Duration::from_secs(10), store.lead("control-1"))
        .await
        .expect("leads in time")
        .expect("leads");
    let first_state = ClusterState::first(
        "pg-1",
        [("pg-1".to_string(), "127.0.0.1:1".to_string())].into(),
        true,
    );
    store.publish(None, &first_state).await.expect("publishes");

    // The shard map's home: two publishers race to create the first map; one wins, and both
    // then read the winner's.
    let resharder = EtcdMapHome::new(endpoints.clone(), "/strata").expect("home");
    let router =
        EtcdMapHome::new(endpoints.iter().rev().cloned().collect(), "/strata/").expect("home");
    let two = ShardMap::even(Strategy::Hash, vec![group("s1"), group("s2")]).expect("map");
    let three =
        ShardMap::even(Strategy::Hash, vec![group("s1"), group("s2"), group("s3")]).expect("map");
    let (a, b) = tokio::join!(resharder.create(&two), router.create(&three));
    assert!(
        a.expect("create") ^ b.expect("create"),
        "exactly one first map"
    );
    let first_map = router.load().await.expect("load").expect("a map");
    assert_eq!(
        resharder.load().await.expect("load"),
        Some(first_map.clone())
    );

    // Member 1 — the one the others joined through — is killed.
    let pid: u32 = std::fs::read_to_string(first.data.join("etcd.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    process::signal(pid, Signal::SIGKILL);
    let died = tokio::time::timeout(Duration::from_secs(10), members.remove(0).task)
        .await
        .expect("the role notices in time")
        .expect("task");
    let e = died.expect_err("the role fails when etcd dies");
    assert!(e.to_string().contains("etcd exited"), "{e:#}");

    // Two of three still make a quorum: the map is published over its version, a router
    // (whose first endpoint is the dead member) follows it, and a stale publisher is refused.
    let v = first_map.version();
    let next_map = first_map.add_group(group("s9")).expect("add");
    let mut attempts = 0;
    while let Err(e) = resharder.publish(v, &next_map).await {
        attempts += 1;
        assert!(attempts < 100, "cannot publish the shard map: {e}");
        if router.load().await.ok().flatten().map(|m| m.version()) == Some(v + 1) {
            break; // an attempt went through, its answer lost with the member
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        router.load().await.expect("load").map(|m| m.version()),
        Some(v + 1)
    );
    let stale = resharder
        .publish(v, &next_map)
        .await
        .expect_err("version v again");
    assert!(
        stale.to_string().contains("changed under this resharding"),
        "{stale}"
    );

    let second = first_state.next(|s| s.primary = None);
    publish(&store, 1, &second).await;
    until("the others read version 2", Duration::from_secs(10), || {
        let rest = endpoints[1..].to_vec();
        async move { version_at(&rest).await == Some(2) }
    })
    .await;

    // Restarted with its data, it rejoins (no --join needed) and catches up.
    members.insert(0, run(&first));
    until(
        "the restarted member serves version 2",
        Duration::from_secs(30),
        || {
            let (own, port) = (endpoints[..1].to_vec(), ports[0]);
            async move { healthy(port).await && version_at(&own).await == Some(2) }
        },
    )
    .await;
    assert_eq!(
        all.members().await.expect("members").len(),
        3,
        "no member added twice"
    );
    let third = second.next(|s| s.primary = Some("pg-1".into()));
    publish(&store, 2, &third).await;

    for member in members {
        member.stop().await.expect("a clean stop");
    }
    assert!(!healthy(ports[0]).await, "stopped");
    assert!(
        !first.data.join("etcd.pid").exists(),
        "a stopped member leaves no pid file"
    );
}
