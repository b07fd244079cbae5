//! A controller that starts in the middle of a failover finishes the decision it finds: it
//! promotes the standby the published state elected, and never elects again — on real
//! PostgreSQL servers (a primary that is gone, two streaming replicas).

use std::time::{Duration, Instant};

use strata_control::cluster::{self, ClusterState, Failover};
use strata_control::controller::{self, ControlArgs, NodeAddr};
use strata_testkit::PgServer;

fn node(name: &str, server: &PgServer) -> NodeAddr {
    NodeAddr {
        name: name.into(),
        addr: format!("127.0.0.1:{}", server.port())
            .parse()
            .expect("addr"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_election_is_completed_as_published_never_decided_again() {
    let mut primary = PgServer::start();
    let pg2 = PgServer::start_replica_of(&primary);
    let pg3 = PgServer::start_replica_of(&primary);
    primary.psql("postgres", "CREATE TABLE t AS SELECT 1 AS x");
    // Both replicas have everything: were the controller to elect again, the tie would go to
    // the first by name, pg-2. The published decision is pg-3.
    let deadline = Instant::now() + Duration::from_secs(30);
    while [&pg2, &pg3].iter().any(|r| {
        r.psql(
            "postgres",
            "SELECT count(*) FROM pg_class WHERE relname = 't'",
        ) != "1"
    }) {
        assert!(Instant::now() < deadline, "the replicas did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    primary.kill9();

    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = vec![
        node("pg-1", &primary),
        node("pg-2", &pg2),
        node("pg-3", &pg3),
    ];
    let first = ClusterState::first(
        "pg-1",
        nodes
            .iter()
            .map(|n| (n.name.clone(), n.addr.to_string()))
            .collect(),
        true,
    );
    let elected = first.next(|s| {
        s.primary = Some("pg-3".into());
        s.fenced = vec!["pg-1".into()];
        s.sync = vec!["pg-2".into()];
        s.failover = Some(Failover {
            from: "pg-1".into(),
            to: Some("pg-3".into()),
            started_ms: 1,
        });
    });
    cluster::write(dir.path(), &elected).expect("publish the election");

    let mut args = ControlArgs::new(dir.path().to_path_buf(), nodes);
    args.check_interval_ms = 100;
    let running = tokio::spawn(controller::run(args));

    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        if let Ok(Some(state)) = cluster::read(dir.path())
            && state.failover.is_none()
        {
            break state;
        }
        assert!(Instant::now() < deadline, "the failover was not completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done.primary.as_deref(), Some("pg-3"));
    assert_eq!(done.version, elected.version + 1, "one step: done");
    assert_eq!(pg3.psql("postgres", "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(
        pg3.psql("postgres", "SHOW default_transaction_read_only"),
        "off",
        "the promoted server takes writes"
    );
    assert_eq!(pg2.psql("postgres", "SELECT pg_is_in_recovery()"), "t");
    assert_eq!(
        pg3.psql("postgres", "SHOW synchronous_standby_names"),
        "ANY 1 (\"pg-2\")"
    );
    // pg-2 was re-pointed and streams from the new primary.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg3.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pg-2'",
    ) != "1"
    {
        assert!(
            Instant::now() < deadline,
            "pg-2 does not stream from pg-3: {}",
            pg2.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.abort();
}
