//! The engines really start through this crate's API: PostgreSQL (initdb, postgres, pg_isready,
//! psql), Redis, Memcached and RabbitMQ, each in a temporary directory on a free loopback port.

use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::Signal;
use strata_engines::daemon::free_port;
use strata_engines::postgres::{self, InitOptions, Postgres};
use strata_engines::{Log, memcached, redis};

#[test]
fn postgres_is_created_started_queried_and_stopped() {
    let pg = Postgres::find().expect("PostgreSQL is installed");
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let sock = root.path().join("sock");
    pg.prepare_data_dir(&data, 1).expect("data directory");
    pg.prepare_data_dir(&sock, 1).expect("socket directory");
    let log = Log::File(root.path().join("postgres.log"));
    let options = InitOptions {
        checksums: true,
        no_sync: true,
    };
    pg.initdb(&data, options, &log).expect("initdb");
    let port = free_port().expect("free port");
    let settings = [
        ("listen_addresses", "127.0.0.1".to_string()),
        ("unix_socket_directories", sock.display().to_string()),
        ("fsync", "off".to_string()),
    ];
    let server = pg
        .start(&data, port, &settings, &log, Duration::from_secs(60))
        .expect("postgres starts");
    assert!(pg.is_ready(port));
    assert_eq!(postgres::running_postmaster(&data), Some(server.pid()));
    // A postmaster.pid that names another process (a pid reused after the server died) is
    // never taken for the server.
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    std::fs::write(
        elsewhere.join("postmaster.pid"),
        format!("{}\n", std::process::id()),
    )
    .expect("write");
    assert_eq!(postgres::running_postmaster(&elsewhere), None);
    assert!(!postgres::is_server_of(server.pid(), &elsewhere));
    let addr = format!("127.0.0.1:{port}");
    assert_eq!(pg.psql(&addr, "postgres", "SELECT 1").expect("psql"), "1");
    assert_eq!(
        pg.psql_session(
            &addr,
            "postgres",
            &["SET application_name = 'kit'", "SHOW application_name"]
        )
        .expect("session"),
        "SET\nkit",
        "a session's settings hold for its next statements"
    );
    let e = pg
        .psql(&addr, "postgres", "SELECT nonsense")
        .expect_err("bad SQL");
    assert!(e.to_string().contains("nonsense"), "{e}");
    let status = server
        .stop(Signal::SIGINT, Duration::from_secs(30))
        .expect("reaped");
    assert!(status.success(), "fast shutdown: {status}");
    assert!(!pg.is_ready(port));
    assert_eq!(postgres::running_postmaster(&data), None);
}

#[test]
fn a_postgres_that_cannot_start_is_explained_with_its_log() {
    let pg = Postgres::find().expect("PostgreSQL is installed");
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    pg.prepare_data_dir(&data, 1).expect("data directory");
    let log = Log::File(root.path().join("postgres.log"));
    // No initdb: the server exits at once.
    let port = free_port().expect("free port");
    let e = pg
        .start::<&str, &str>(&data, port, &[], &log, Duration::from_secs(30))
        .expect_err("no cluster");
    let e = e.to_string();
    assert!(
        e.starts_with("postgres exited") && e.contains("postgresql.conf"),
        "{e}"
    );
}

#[test]
fn redis_answers_in_each_mode_and_dies_with_its_handle() {
    let dir = tempfile::tempdir().expect("tempdir");
    for mode in [
        redis::Mode::Plain,
        redis::Mode::Cache { max_mib: 16 },
        redis::Mode::Durable { max_mib: 16 },
    ] {
        let port = free_port().expect("free port");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = Log::File(dir.path().join("redis.log"));
        let server = redis::start(port, dir.path(), mode, &log, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert!(redis::PROBE.answers(addr));
        server.pause();
        assert!(
            !redis::PROBE.answers(addr),
            "a paused server does not answer"
        );
        server.resume();
        assert!(redis::PROBE.answers(addr));
        drop(server);
        assert!(!redis::PROBE.answers(addr), "killed on drop");
    }
}

#[test]
fn memcached_answers_and_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().expect("free port");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = Log::File(dir.path().join("memcached.log"));
    let server = memcached::start(
        port,
        dir.path(),
        memcached::Mode::Cache { max_mib: 16 },
        &log,
        Duration::from_secs(15),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(memcached::PROBE.answers(addr));
    server.stop(Signal::SIGTERM, Duration::from_secs(5));
    assert!(!memcached::PROBE.answers(addr));
}

#[test]
fn a_rabbitmq_node_starts_on_its_own_ports_survives_kill_9_and_stops() {
    use strata_engines::rabbitmq::{self, Node, PROBE, Ports};
    let root = tempfile::tempdir().expect("tempdir");
    let log = Log::File(root.path().join("rabbitmq.log"));
    let ports = Ports::free().expect("free ports");
    let node = Node::new(root.path().join("node"), ports);
    let mut broker = rabbitmq::start(node, &log, Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("RabbitMQ starts: {e}"));
    let addr = broker.node().addr();
    assert!(PROBE.answers(addr), "it answers AMQP on {addr}");
    let pid = broker.pid().expect("running");
    let tree = strata_engines::process::descendants(pid);
    assert!(!tree.is_empty(), "the VM runs under the start script");

    broker.kill9();
    assert!(
        !strata_engines::process::is_alive(pid),
        "the script is gone"
    );
    for p in &tree {
        assert!(
            strata_engines::process::wait_gone(*p, Duration::from_secs(5)),
            "the VM and its helpers are gone"
        );
    }
    assert!(!PROBE.answers(addr), "nothing answers once killed");

    broker
        .restart(Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("RabbitMQ starts again on its data: {e}"));
    assert!(PROBE.answers(addr), "it answers again on the same port");
    let pid = broker.pid().expect("running");
    let tree = strata_engines::process::descendants(pid);
    broker.stop(Duration::from_secs(30));
    for p in tree.iter().chain([&pid]) {
        assert!(!strata_engines::process::is_alive(*p), "stopped");
    }
    let text = std::fs::read_to_string(root.path().join("rabbitmq.log")).unwrap_or_default();
    // As a port (`:4369`, `port 4369`): the digits alone also occur in Erlang pids
    // (`<0.4369.0>`) and in other ports (43691).
    let standalone = [":4369", "port 4369", "port: 4369"].iter().any(|p| {
        text.match_indices(p).any(|(at, _)| {
            !text
                .as_bytes()
                .get(at + p.len())
                .is_some_and(u8::is_ascii_digit)
        })
    });
    assert!(!standalone, "the machine's port mapper is never used");
}
