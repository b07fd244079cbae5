use std::path::Path;

use super::*;
use crate::plan::edge::SHIELD as SHIELD_NAME;
use crate::topology::{CacheEngine, CommitMode, DataEngine, LbSpec, RejoinMode, StoreKind};

fn ctx() -> PlanContext {
    PlanContext {
        dir: "/d".into(),
        public_port: 8080,
    }
}

fn compile(text: &str) -> Plan {
    let topology = Topology::parse(text, 8080).expect("valid topology");
    Plan::compile(&topology, &ctx())
}

/// Every role announces its listener on its own port, 10001, 10002, … in plan order.
fn announce_all(plan: &Plan) -> Announced {
    plan.roles
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                r.name.clone(),
                BTreeMap::from([(r.listener.to_string(), format!("127.0.0.1:{}", 10001 + i))]),
            )
        })
        .collect()
}

/// The configuration file `dns-1` is given, as `strata dns` reads it, with every role of
/// `plan` announced as [`announce_all`] does.
fn dns_config(plan: &Plan, announced: &Announced) -> strata_dns::config::DnsConfig {
    let dns = plan.role(dns::NAME).expect("dns-1");
    let files = dns
        .files(&Wiring {
            port: dns.port,
            announced,
        })
        .expect("files");
    strata_dns::config::DnsConfig::parse(&files[0].1)
        .unwrap_or_else(|e| panic!("{e}\n{}", files[0].1))
}

fn command(plan: &Plan, name: &str) -> RoleCommand {
    let announced = announce_all(plan);
    let role = plan.role(name).unwrap_or_else(|| panic!("no role {name}"));
    role.command(&Wiring {
        port: role.port,
        announced: &announced,
    })
    .expect("builds")
}

fn invocation(plan: &Plan, name: &str) -> Invocation {
    let announced = announce_all(plan);
    let role = plan.role(name).unwrap_or_else(|| panic!("no role {name}"));
    role.invocation(&Wiring {
        port: role.port,
        announced: &announced,
    })
    .expect("renders")
}

/// Topologies that between them set every key a topology has.
const EVERY_SETTING: &[&str] = &[
    "[lb]\nalgorithm = \"consistent-hash\"\nsticky_cookie = \"pin\"\ntls_port = 8443\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\nhttps_redirect = true\nconnect_timeout_ms = 250\nheader_timeout_ms = 900\ntotal_timeout_ms = 3000\nidle_timeout_ms = 5000\nclient_header_timeout_ms = 700\n[api]\ncount = 2\nports = [9001, 9002]\n[data]\nengine = \"postgres\"\nreplicas = 2\ncommit = \"async\"\nrejoin = \"manual\"\n[cache]\nengine = \"memcached\"\nnodes = 2\nmax_mib = 32\nl1_mib = 8\nl1_ttl_ms = 250\n[sessions]\nengine = \"redis\"\n",
    "[lb]\ntls_port = 0\ndev_cert = true\n[api]\ncount = 3\n[data]\nengine = \"postgres\"\nurl = \"postgresql://app:secret@db1:5432,db2:5432/strata\"\n[cache]\nengine = \"off\"\n",
    "[api]\ncount = 2\n[cache]\nengine = \"redis\"\nnodes = 3\n",
    "name = \"ha\"\n[lb]\n[api]\ncount = 2\n[data]\nengine = \"postgres\"\nreplicas = 2\n[control]\ncount = 3\nstore = \"etcd\"\ncheck_interval_ms = 250\nfailures = 4\n",
    "[api]\ncount = 1\n[data]\nengine = \"postgres\"\nreplicas = 1\n[control]\nstore = \"etcd\"\netcd = [\"http://10.0.0.5:2379\", \"http://10.0.0.6:2379\"]\n",
    "name = \"ps\"\n[lb]\n[api]\ncount = 2\n[data]\nengine = \"postgres\"\nshards = 2\nspare_shards = 1\nreplicas = 1\n[control]\ncount = 3\nstore = \"etcd\"\n",
    "[api]\ncount = 1\n[workers]\ncount = 2\nconcurrency = 3\n[queue]\nengine = \"rabbitmq\"\nurl = \"amqp://app:secret@mq:5672/%2f\"\n[blobs]\nengine = \"s3\"\nendpoint = \"https://s3.internal:8333\"\nbucket = \"team-photos\"\nca_file = \"/ca.pem\"\n",
    "[lb]\ncount = 3\n[api]\ncount = 2\n[dns]\nport = 5353\nttl_secs = 1\npolicy = \"weighted\"\nfall = 1\n",
    DATACENTRES,
    DATACENTRE_EDGES,
    "[lb]\ncount = 2\nsticky_cookie = \"pin\"\n[api]\ncount = 1\n[edge]\ncount = 2\nshield = true\ntls_port = 0\ndev_cert = true\n[blobs]\nengine = \"seaweedfs\"\nvolume_size_mib = 512\n[observe]\nprometheus = true\nretention = \"2d\"\nretention_size = \"512MB\"\nscrape_interval_secs = 5\ndashboard = true\n",
    "[api]\ncount = 1\n[observe]\nprometheus = true\nalertmanager = true\nalert_webhook = \"https://hooks.example.com/T0/B0?x=1\"\n",
    "[lb]\n[api]\ncount = 1\n[edge]\ncount = 2\nshield = true\nstatic_dir = \"/srv/docs\"\nstatic_prefix = \"/docs/\"\nstatic_max_age_secs = 60\norigin_timeout_ms = 2000\n",
];

/// Two data centres, 30 ms apart: us-east with the primary and a replica, us-west with one.
const DATACENTRES: &str = "name = \"dcs\"\n[lb]\n[api]\ncount = 2\n[data]\nengine = \"postgres\"\n[dns]\nport = 5353\n\
     [[datacenter]]\nname = \"us-east\"\ndatabases = 2\n\
     [[datacenter]]\nname = \"us-west\"\nlb = 2\napi = 1\nweight = 0\nlatitude = 37.4\nlongitude = -122.1\ncountries = [\"US\"]\n\
     [[link]]\nbetween = [\"us-east\", \"us-west\"]\none_way_ms = 30\n";

/// The same, with two edges and a shield in each data centre.
const DATACENTRE_EDGES: &str = "name = \"dcs\"\n[lb]\n[api]\ncount = 2\n[data]\nengine = \"postgres\"\n[dns]\nport = 5353\n\
     [edge]\ncount = 2\nshield = true\n\
     [[datacenter]]\nname = \"us-east\"\ndatabases = 2\n\
     [[datacenter]]\nname = \"us-west\"\n\
     [[link]]\nbetween = [\"us-east\", \"us-west\"]\none_way_ms = 30\n";

fn presets() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("deploy/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("toml"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).expect("read"),
            )
        })
        .collect();
    out.extend(
        EVERY_SETTING
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("every setting {i}"), t.to_string())),
    );
    out
}

#[test]
fn every_role_of_every_topology_renders_a_command_line_that_parses_back_to_itself() {
    for (name, text) in presets() {
        let plan = compile(&text);
        plan.check().unwrap_or_else(|e| panic!("{name}: {e}"));
        for role in &plan.roles {
            let original = command(&plan, &role.name);
            let rendered = invocation(&plan, &role.name);
            assert_eq!(
                original.kind(),
                role.kind,
                "{name}: {} runs the kind it is planned as",
                role.name
            );
            let back = argv::parse_back(&rendered).unwrap_or_else(|e| {
                panic!("{name}: {} {rendered:?} does not parse: {e}", role.name)
            });
            assert_eq!(back, original, "{name}: {} {rendered:?}", role.name);
        }
    }
}

#[test]
fn the_etcd_role_and_the_etcd_state_store_render_command_lines_that_parse_back() {
    use strata_control::controller::ControlArgs;
    use strata_control::etcd::node::EtcdArgs;
    use strata_control::pgnode::PostgresArgs;
    use strata_control::store_options::StoreOptions;

    let endpoints = vec![
        "http://127.0.0.1:2401".to_string(),
        "http://127.0.0.1:2402".into(),
    ];
    let mut etcd = EtcdArgs::new("/d/etcd/etcd-2".into());
    etcd.name = "etcd-2".into();
    etcd.join = endpoints.clone();
    etcd.exit_on_stdin_eof = true;
    let mut store = StoreOptions::etcd(endpoints);
    store.etcd_prefix = "/strata/blue".into();
    let mut control = ControlArgs::new(
        "/d/postgres".into(),
        vec!["pg-1=127.0.0.1:5432".parse().expect("node")],
    );
    control.store = store.clone();
    let mut postgres = PostgresArgs::new("/d/postgres/pg-1".into());
    postgres.store = store;
    for original in [
        RoleCommand::Etcd(etcd),
        RoleCommand::Control(control),
        RoleCommand::Postgres(postgres),
    ] {
        let rendered = argv::render(&original).expect("renders");
        let back = argv::parse_back(&rendered)
            .unwrap_or_else(|e| panic!("{rendered:?} does not parse: {e}"));
        assert_eq!(back, original, "{rendered:?}");
    }
    let default_store =
        argv::render(&RoleCommand::Postgres(PostgresArgs::new("/d".into()))).expect("renders");
    assert!(
        !default_store
            .args
            .iter()
            .any(|a| a.contains("etcd") || a.contains("store")),
        "the file store, the default, is written as before: {default_store:?}"
    );
}

#[test]
fn a_database_url_travels_in_the_environment_never_on_the_command_line() {
    let plan = compile(EVERY_SETTING[1]);
    let api = invocation(&plan, "api-1");
    assert!(
        !api.args.iter().any(|a| a.contains("secret")),
        "{:?}",
        api.args
    );
    assert_eq!(
        api.env,
        [(
            "STRATA_POSTGRES_URL".to_string(),
            "postgresql://app:secret@db1:5432,db2:5432/strata".to_string()
        )]
    );
    assert!(
        api.env_remove.contains(&"STRATA_CACHE_MIB".to_string())
            && api
                .env_remove
                .contains(&"STRATA_SESSIONS_REDIS".to_string()),
        "a setting the plan leaves at its default is not taken from the supervisor's environment: {:?}",
        api.env_remove
    );
    let replicated = compile(EVERY_SETTING[0]);
    let api = invocation(&replicated, "api-1");
    let vars: Vec<&str> = api.env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        vars,
        [
            "STRATA_POSTGRES_URL",
            "STRATA_POSTGRES_REPLICAS",
            "STRATA_SESSIONS_REDIS"
        ]
    );
    assert!(!api.args.iter().any(|a| a.contains("postgresql://")));
}

#[test]
fn defaults_stay_off_the_command_line() {
    // 127.0.0.1:8080 is `strata lb`'s default address: it is left out too.
    let plan = compile("[lb]\n[api]\ncount = 1\n");
    let lb = invocation(&plan, "lb-1");
    assert!(lb.env_remove.contains(&"STRATA_LB_LISTEN".to_string()));
    assert_eq!(
        lb.args,
        [
            "lb",
            "--backend",
            "api-1=127.0.0.1:10001",
            "--source-addr",
            &super::BALANCER_SOURCE.to_string(),
            "--drain-file",
            "/d/lb/lb-1.drained.json",
            "--name",
            "lb-1",
            "--exit-on-stdin-eof"
        ]
    );
}

#[test]
fn the_api_servers_trust_only_their_balancers_address_to_name_clients() {
    let trusted = |plan: &Plan| {
        let RoleCommand::Api(api) = command(plan, "api-1") else {
            panic!("an api role")
        };
        api.server.auth.trusted_proxies.clone()
    };
    let balanced = compile("[lb]\n[api]\ncount = 2\n");
    assert_eq!(
        trusted(&balanced),
        [super::BALANCER_SOURCE.into()],
        "the balancer connects from its own address, and only that address is trusted"
    );
    let RoleCommand::Lb(lb) = command(&balanced, "lb-1") else {
        panic!("a balancer role")
    };
    assert_eq!(lb.source_addr, Some(super::BALANCER_SOURCE));
    // Without a balancer nobody may name the client.
    assert_eq!(trusted(&compile("[api]\ncount = 1\n")), []);
}

#[test]
fn cache_nodes_are_planned_and_the_api_servers_are_told_where_they_are() {
    let plan = compile("[cache]\nengine = \"redis\"\nnodes = 2\n[api]\ncount = 3\n");
    let names: Vec<&str> = plan.roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["cache-1", "cache-2", "api-1", "api-2", "api-3"]);
    let RoleCommand::Cache(cache) = command(&plan, "cache-2") else {
        panic!("a cache role")
    };
    assert_eq!(cache.dir, Path::new("/d/cache/cache-2"));
    assert_eq!(cache.engine, CacheEngine::Redis);
    assert_eq!(
        plan.role("api-1").map(|r| r.depends_on.clone()),
        Some(vec!["cache-1".to_string(), "cache-2".to_string()])
    );
    for api in ["api-1", "api-2", "api-3"] {
        let RoleCommand::Api(a) = command(&plan, api) else {
            panic!("an API role")
        };
        assert_eq!(
            a.server.cache.cache_redis,
            ["redis://127.0.0.1:10001", "redis://127.0.0.1:10002"]
        );
        assert_eq!(
            a.server.cache.cache_ttl_ms,
            api::COHERENT_L1_TTL_MS,
            "coherent L1s may keep entries long"
        );
    }

    let plan = compile("[cache]\nengine = \"memcached\"\n[api]\ncount = 3\n");
    let RoleCommand::Api(a) = command(&plan, "api-2") else {
        panic!("an API role")
    };
    assert_eq!(a.server.cache.cache_memcached, ["127.0.0.1:10001"]);
    assert!(a.server.cache.cache_redis.is_empty());
    assert_eq!(
        a.server.cache.cache_ttl_ms, 1000,
        "without a bus L1 keeps its short default TTL"
    );
    assert_eq!(
        a.server.cache.cache_coherence,
        strata_cache::options::L1Coherence::Watch,
        "without a bus L1s follow the database's change log by default"
    );
    let plan = compile("[cache]\ncoherence = \"ttl\"\n[api]\ncount = 3\n");
    let RoleCommand::Api(a) = command(&plan, "api-3") else {
        panic!("an API role")
    };
    assert_eq!(
        a.server.cache.cache_coherence,
        strata_cache::options::L1Coherence::Ttl
    );
    assert!(
        compile("[api]\ncount = 1\n")
            .roles
            .iter()
            .all(|r| r.kind == RoleKind::Api)
    );
}

#[test]
fn the_first_api_takes_the_public_port_unless_a_balancer_does() {
    let mut t = Topology::parse("[api]\ncount = 3\nports = [9002]\n", 8080).expect("valid");
    let plan = Plan::compile(&t, &ctx());
    let ports: Vec<(&str, u16)> = plan
        .roles
        .iter()
        .map(|r| (r.name.as_str(), r.port))
        .collect();
    assert_eq!(ports, [("api-1", 8080), ("api-2", 9002), ("api-3", 0)]);
    for (i, name) in ["api-1", "api-2", "api-3"].iter().enumerate() {
        let RoleCommand::Api(a) = command(&plan, name) else {
            panic!("an API role")
        };
        assert_eq!(a.server.node_id, i as u64 + 1, "its own Snowflake node id");
        assert_eq!(a.server.addr.port(), plan.roles[i].port);
        assert_eq!(a.server.data.data, Path::new("/d/data"));
    }
    assert!(plan.role("lb-1").is_none());

    t.lb = Some(LbSpec::default());
    let plan = Plan::compile(&t, &ctx());
    let ports: Vec<u16> = plan.roles.iter().map(|r| r.port).collect();
    assert_eq!(
        ports,
        [9002, 0, 0, 8080],
        "with a balancer no API server takes the public port"
    );
    assert_eq!(
        plan.role("lb-1").map(|r| r.depends_on.clone()),
        Some(vec!["api-1".into(), "api-2".into(), "api-3".into()])
    );
}

#[test]
fn edges_take_the_public_port_and_fetch_through_the_shield_from_the_balancer() {
    let plan = compile(
        "[lb]\n[api]\ncount = 2\n[edge]\ncount = 2\nshield = true\nmemory_mib = 4\ndisk_mib = 64\n",
    );
    let ports: Vec<(&str, u16)> = plan
        .roles
        .iter()
        .map(|r| (r.name.as_str(), r.port))
        .collect();
    assert_eq!(
        ports,
        [
            ("api-1", 0),
            ("api-2", 0),
            ("lb-1", 0),
            ("edge-shield", 0),
            ("edge-1", 8080),
            ("edge-2", 0)
        ],
        "the first edge is the public entry"
    );
    let edge = |name: &str| match command(&plan, name) {
        RoleCommand::Edge(e) => e.args,
        other => panic!("{other:?}"),
    };
    let (shield, one) = (edge("edge-shield"), edge("edge-1"));
    assert_eq!(
        shield.origin,
        Some("127.0.0.1:10003".parse().expect("addr")),
        "lb-1"
    );
    assert_eq!(
        one.origin,
        Some("127.0.0.1:10004".parse().expect("addr")),
        "the shield"
    );
    assert_eq!(edge("edge-2").origin, one.origin);
    assert_eq!(one.cache_dir.as_deref(), Some(Path::new("/d/edge/edge-1")));
    assert_eq!(
        (one.memory.0, one.max_object.0, one.disk.0),
        (4 << 20, 2 << 20, 64 << 20)
    );
    assert_eq!(
        plan.role("edge-1").map(|r| r.depends_on.clone()),
        Some(vec![SHIELD_NAME.into()])
    );

    // No shield and no balancer: the edges fetch from the first API server; memory only.
    let plan = compile("[api]\ncount = 2\n[edge]\ndisk_mib = 0\n");
    let RoleCommand::Edge(e) = command(&plan, "edge-1") else {
        panic!("an edge")
    };
    assert_eq!(
        e.args.origin,
        Some("127.0.0.1:10001".parse().expect("addr"))
    );
    assert_eq!(e.args.cache_dir, None);
    assert_eq!(plan.role("api-1").map(|r| r.port), Some(0));
    assert_eq!(plan.role("edge-1").map(|r| r.port), Some(8080));
}

#[test]
fn the_edges_clients_reach_speak_https_and_the_shield_does_not() {
    let plan = compile(
        "[lb]\n[api]\ncount = 1\n[edge]\ncount = 2\nshield = true\ntls_port = 8443\ndev_cert = true\n",
    );
    let edge = |name: &str| match command(&plan, name) {
        RoleCommand::Edge(e) => e.args,
        other => panic!("{other:?}"),
    };
    let (shield, one, two) = (edge("edge-shield"), edge("edge-1"), edge("edge-2"));
    assert_eq!((shield.tls_listen, shield.dev_cert), (None, None));
    assert_eq!(
        one.tls_listen,
        Some("127.0.0.1:8443".parse().expect("addr")),
        "edge-1 on the topology's port"
    );
    assert_eq!(
        two.tls_listen,
        Some("127.0.0.1:0".parse().expect("addr")),
        "the others on free ports"
    );
    assert_eq!(
        (one.dev_cert.as_deref(), two.dev_cert.as_deref()),
        (
            Some(Path::new("/d/edge-1-dev-cert.pem")),
            Some(Path::new("/d/edge-2-dev-cert.pem"))
        ),
        "a certificate of its own each, where clients find it"
    );
    let plan = compile(
        "[api]\ncount = 1\n[edge]\ntls_port = 8443\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n",
    );
    let RoleCommand::Edge(e) = command(&plan, "edge-1") else {
        panic!("an edge")
    };
    assert_eq!(e.args.tls_certs.len(), 1);
    assert_eq!(e.args.tls_certs[0].cert, Path::new("/c.pem"));
    assert_eq!(e.args.dev_cert, None);
    assert!(!e.args.https_redirect, "plain HTTP is served unless asked");
}

#[test]
fn https_redirect_makes_the_edges_clients_reach_redirect_plain_http_but_not_the_shield() {
    let plan = compile(
        "[lb]
[api]
count = 1
[edge]
count = 2
shield = true
tls_port = 8443
dev_cert = true
https_redirect = true
",
    );
    let edge = |name: &str| match command(&plan, name) {
        RoleCommand::Edge(e) => e.args,
        other => panic!("{other:?}"),
    };
    assert!(edge("edge-1").https_redirect && edge("edge-2").https_redirect);
    // The edges reach the shield over plain HTTP: it must answer them, not redirect.
    assert!(!edge("edge-shield").https_redirect);
}

#[test]
fn with_dns_the_balancers_share_the_public_port_at_addresses_of_their_own_and_dns_lists_them() {
    let plan = compile("[lb]\ncount = 3\n[api]\ncount = 2\n[dns]\nport = 5353\n");
    let announced = announce_all(&plan);
    let lb1_port = announced["lb-1"]["http"]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("port");
    for (name, listen) in [
        ("lb-1", "127.0.0.1:8080".to_string()),
        ("lb-2", format!("127.0.10.2:{lb1_port}")),
        ("lb-3", format!("127.0.10.3:{lb1_port}")),
    ] {
        let RoleCommand::Lb(args) = command(&plan, name) else {
            panic!("{name} is a balancer");
        };
        assert_eq!(args.listen.to_string(), listen, "{name}");
        assert_eq!(args.backends.len(), 2, "{name} fronts every API server");
    }
    let lb2 = plan.role("lb-2").expect("lb-2");
    assert!(
        lb2.depends_on.contains(&"lb-1".to_string()),
        "lb-2 takes lb-1's port: {:?}",
        lb2.depends_on
    );
    let dns = plan.role(dns::NAME).expect("dns-1");
    assert_eq!(dns.kind, RoleKind::Dns);
    assert_eq!(dns.port, 5353);
    assert_eq!(dns.depends_on, ["lb-1", "lb-2", "lb-3"]);
    let RoleCommand::Dns(args) = command(&plan, dns::NAME) else {
        panic!("dns-1 runs strata dns");
    };
    assert_eq!(args.listen.to_string(), "127.0.0.1:5353");
    assert_eq!(args.config, Path::new("/d/dns/dns-1.toml"));
    assert!(args.exit_on_stdin_eof);
    let files = dns
        .files(&Wiring {
            port: dns.port,
            announced: &announced,
        })
        .expect("files");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, args.config);
    let config = strata_dns::config::DnsConfig::parse(&files[0].1).expect("valid");
    let balancers: Vec<String> = config.datacentres[0]
        .balancers
        .iter()
        .map(ToString::to_string)
        .collect();
    let expected: Vec<String> = ["lb-1", "lb-2", "lb-3"]
        .iter()
        .map(|lb| announced[*lb]["http"].clone())
        .collect();
    assert_eq!(balancers, expected, "every balancer, as announced");

    // Without [dns], nothing changes: lb-2 on a free port of 127.0.0.1, after the API servers only.
    let plan = compile("[lb]\ncount = 2\n[api]\ncount = 2\n");
    let RoleCommand::Lb(args) = command(&plan, "lb-2") else {
        panic!("lb-2 is a balancer");
    };
    assert_eq!(args.listen.to_string(), "127.0.0.1:0");
    assert_eq!(
        plan.role("lb-2").expect("lb-2").depends_on,
        ["api-1", "api-2"]
    );
    assert!(plan.role(dns::NAME).is_none());
}

#[test]
fn several_balancers_front_every_api_server_and_share_one_sticky_key() {
    let plan = compile(
        "[lb]\ncount = 3\nsticky_cookie = \"pin\"\ntls_port = 8443\ndev_cert = true\n[api]\ncount = 2\n",
    );
    let lb = |name: &str| match command(&plan, name) {
        RoleCommand::Lb(lb) => *lb,
        other => panic!("{other:?}"),
    };
    let ports: Vec<(String, u16)> = plan
        .roles
        .iter()
        .filter(|r| r.kind == RoleKind::Lb)
        .map(|r| (r.name.clone(), r.port))
        .collect();
    assert_eq!(
        ports,
        [
            ("lb-1".into(), 8080),
            ("lb-2".into(), 0),
            ("lb-3".into(), 0)
        ],
        "lb-1 on the public port, the others on free ones"
    );
    for name in ["lb-1", "lb-2", "lb-3"] {
        let args = lb(name);
        assert_eq!(args.backends.len(), 2, "{name} fronts every API server");
        assert_eq!(
            args.sticky_key_file.as_deref(),
            Some(Path::new("/d/lb/sticky.key")),
            "{name} shares the key"
        );
        assert_eq!(
            args.dev_cert,
            Some(std::path::PathBuf::from(format!("/d/{name}-dev-cert.pem")))
        );
    }
    assert_eq!(
        lb("lb-1").tls_listen,
        Some("127.0.0.1:8443".parse().expect("addr"))
    );
    assert_eq!(
        lb("lb-2").tls_listen,
        Some("127.0.0.1:0".parse().expect("addr"))
    );
    assert!(
        plan.setup
            .iter()
            .any(|s| s.what.contains("sticky-cookie key")),
        "the key is made once, before any balancer starts"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("lb/sticky.key");
    strata_lb::sticky::make_key_file(&key).expect("made");
    let first = std::fs::read_to_string(&key).expect("read");
    assert_eq!(first.len(), 64);
    strata_lb::sticky::make_key_file(&key).expect("kept");
    assert_eq!(
        std::fs::read_to_string(&key).expect("read"),
        first,
        "kept across restarts"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&key).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        compile("[lb]\ncount = 2\n[api]\ncount = 1\n")
            .setup
            .iter()
            .all(|s| !s.what.contains("sticky")),
        "no key without a sticky cookie"
    );
}

#[test]
fn the_balancer_gets_its_backends_algorithm_tls_and_timeouts() {
    let plan = compile(EVERY_SETTING[0]);
    let RoleCommand::Lb(lb) = command(&plan, "lb-1") else {
        panic!("a balancer")
    };
    let backends: Vec<String> = lb.backends.iter().map(ToString::to_string).collect();
    let api_1 = plan
        .roles
        .iter()
        .position(|r| r.name == "api-1")
        .expect("api-1")
        + 10001;
    assert_eq!(
        backends,
        [
            format!("api-1=127.0.0.1:{api_1}"),
            format!("api-2=127.0.0.1:{}", api_1 + 1)
        ]
    );
    assert_eq!(lb.listen.port(), 8080);
    assert_eq!(lb.algorithm, strata_lb::AlgorithmName::ConsistentHash);
    assert_eq!(lb.sticky_cookie.as_deref(), Some("pin"));
    assert_eq!(lb.tls_listen.map(|a| a.port()), Some(8443));
    assert_eq!(lb.tls_certs.len(), 1);
    assert!(lb.https_redirect);
    assert_eq!(
        (
            lb.connect_timeout_ms,
            lb.header_timeout_ms,
            lb.total_timeout_ms,
            lb.idle_timeout_ms,
            lb.client_header_timeout_ms
        ),
        (250, 900, 3000, 5000, 700)
    );
    let plan = compile(EVERY_SETTING[1]);
    let RoleCommand::Lb(lb) = command(&plan, "lb-1") else {
        panic!("a balancer")
    };
    assert_eq!(
        lb.dev_cert.as_deref(),
        Some(Path::new("/d/lb-1-dev-cert.pem"))
    );
}

#[test]
fn a_postgres_topology_plans_a_primary_its_replicas_a_controller_and_apis_on_the_primary() {
    let plan = compile(
        "[api]\ncount = 2\n[data]\nengine = \"postgres\"\nreplicas = 2\nrejoin = \"manual\"\n",
    );
    let names: Vec<&str> = plan.roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["pg-1", "pg-2", "pg-3", "control-1", "api-1", "api-2"]
    );
    let RoleCommand::Postgres(primary) = command(&plan, "pg-1") else {
        panic!("a database role")
    };
    assert_eq!(primary.standbys, ["pg-2", "pg-3"]);
    assert_eq!(primary.commit, CommitMode::Quorum);
    assert_eq!(primary.replica_of, None);
    assert_eq!(primary.data, Path::new("/d/postgres/pg-1"));
    for replica in ["pg-2", "pg-3"] {
        let RoleCommand::Postgres(r) = command(&plan, replica) else {
            panic!("a database role")
        };
        assert_eq!(r.replica_of, Some("127.0.0.1:10001".parse().expect("addr")));
        assert_eq!(
            r.rejoin,
            RejoinMode::Manual,
            "every server may be a fenced primary one day: each is told how to rejoin"
        );
        assert_eq!(
            plan.role(replica).map(|r| r.depends_on.clone()),
            Some(vec!["pg-1".into()])
        );
    }
    let RoleCommand::Control(control) = command(&plan, "control-1") else {
        panic!("a controller")
    };
    let nodes: Vec<String> = control.nodes.iter().map(ToString::to_string).collect();
    assert_eq!(
        nodes,
        [
            "pg-1=127.0.0.1:10001",
            "pg-2=127.0.0.1:10002",
            "pg-3=127.0.0.1:10003"
        ]
    );
    assert_eq!(control.postgres_dir, Path::new("/d/postgres"));
    let RoleCommand::Api(api) = command(&plan, "api-2") else {
        panic!("an API role")
    };
    assert_eq!(
        api.server.data.postgres.as_deref(),
        Some(
            "postgresql://strata@127.0.0.1:10001,127.0.0.1:10002,127.0.0.1:10003/strata?target_session_attrs=read-write"
        )
    );
    assert_eq!(api.server.data.postgres_replicas.len(), 3);

    let single = compile("[api]\ncount = 1\n[data]\nengine = \"postgres\"\n");
    assert!(
        single.role("control-1").is_none(),
        "nothing to fail over to"
    );
    let RoleCommand::Api(api) = command(&single, "api-1") else {
        panic!("an API role")
    };
    assert!(api.server.data.postgres_replicas.is_empty());
    assert_eq!(
        Topology::parse("[api]\ncount = 1\n", 8080)
            .map(|t| t.data)
            .ok(),
        Some(DataEngine::Sqlite)
    );
}

#[test]
fn an_etcd_control_plane_plans_members_that_join_one_by_one_and_everyone_reads_the_state_there() {
    let plan = compile(EVERY_SETTING[3]);
    let names: Vec<&str> = plan.roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "etcd-1",
            "etcd-2",
            "etcd-3",
            "pg-1",
            "pg-2",
            "pg-3",
            "control-1",
            "control-2",
            "control-3",
            "api-1",
            "api-2",
            "lb-1"
        ]
    );
    let deps = |name: &str| {
        plan.role(name)
            .map(|r| r.depends_on.clone())
            .unwrap_or_default()
    };
    assert_eq!(deps("etcd-3"), ["etcd-1", "etcd-2"]);
    assert_eq!(deps("pg-1"), ["etcd-1", "etcd-2", "etcd-3"]);
    assert!(deps("control-2").contains(&"pg-3".to_string()));
    let RoleCommand::Etcd(member) = command(&plan, "etcd-3") else {
        panic!("an etcd member")
    };
    assert_eq!(
        member.join,
        ["http://127.0.0.1:10001", "http://127.0.0.1:10002"]
    );
    assert_eq!(member.data, Path::new("/d/etcd/etcd-3"));
    let endpoints = [
        "http://127.0.0.1:10001",
        "http://127.0.0.1:10002",
        "http://127.0.0.1:10003",
    ];
    for name in ["pg-2", "control-3"] {
        let store = match command(&plan, name) {
            RoleCommand::Postgres(a) => a.store,
            RoleCommand::Control(a) => a.store,
            other => panic!("{other:?}"),
        };
        assert_eq!(store.state_store, StoreKind::Etcd, "{name}");
        assert_eq!(store.etcd, endpoints, "{name}");
        assert_eq!(
            store.etcd_prefix, "/strata/ha",
            "{name}: one prefix per deployment"
        );
    }

    // An etcd of one's own: no member to run, its endpoints given to everyone.
    let own = compile(EVERY_SETTING[4]);
    assert!(own.roles.iter().all(|r| r.kind != RoleKind::Etcd));
    let RoleCommand::Control(control) = command(&own, "control-1") else {
        panic!("a controller")
    };
    assert_eq!(
        control.store.etcd,
        ["http://10.0.0.5:2379", "http://10.0.0.6:2379"]
    );
}

#[test]
fn postgres_shard_groups_are_clusters_of_their_own_and_the_apis_get_one_url_per_group() {
    let plan = compile(EVERY_SETTING[5]);
    let names: Vec<&str> = plan.roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "etcd-1",
            "etcd-2",
            "etcd-3",
            "pg-s1-1",
            "pg-s1-2",
            "pg-s2-1",
            "pg-s2-2",
            "pg-s3-1",
            "pg-s3-2",
            "control-s1-1",
            "control-s1-2",
            "control-s1-3",
            "control-s2-1",
            "control-s2-2",
            "control-s2-3",
            "control-s3-1",
            "control-s3-2",
            "control-s3-3",
            "api-1",
            "api-2",
            "lb-1"
        ],
        "the etcd members are shared; each group has its servers and controllers"
    );
    let RoleCommand::Postgres(primary) = command(&plan, "pg-s2-1") else {
        panic!("a database role")
    };
    assert_eq!(primary.standbys, ["pg-s2-2"]);
    assert_eq!(primary.data, Path::new("/d/postgres/s2/pg-s2-1"));
    assert_eq!(primary.store.etcd_prefix, "/strata/ps/s2");
    let RoleCommand::Postgres(replica) = command(&plan, "pg-s2-2") else {
        panic!("a database role")
    };
    assert_eq!(
        replica.replica_of,
        Some("127.0.0.1:10006".parse().expect("addr")),
        "a replica follows its own group's primary"
    );
    assert_eq!(
        plan.role("pg-s2-2").map(|r| r.depends_on.clone()),
        Some(vec![
            "etcd-1".into(),
            "etcd-2".into(),
            "etcd-3".into(),
            "pg-s2-1".into()
        ])
    );
    let RoleCommand::Control(control) = command(&plan, "control-s3-2") else {
        panic!("a controller")
    };
    let nodes: Vec<String> = control.nodes.iter().map(ToString::to_string).collect();
    assert_eq!(
        nodes,
        ["pg-s3-1=127.0.0.1:10008", "pg-s3-2=127.0.0.1:10009"]
    );
    assert_eq!(control.primary, "pg-s3-1");
    assert_eq!(control.postgres_dir, Path::new("/d/postgres/s3"));
    assert_eq!(control.store.etcd_prefix, "/strata/ps/s3");
    let RoleCommand::Api(api) = command(&plan, "api-1") else {
        panic!("an API role")
    };
    assert_eq!(
        api.server.data.shards,
        Some(2),
        "the spare gets no slots at first"
    );
    assert_eq!(api.server.data.postgres, None);
    assert_eq!(
        api.server.data.postgres_shards,
        [
            "s1=postgresql://strata@127.0.0.1:10004,127.0.0.1:10005/strata?target_session_attrs=read-write",
            "s2=postgresql://strata@127.0.0.1:10006,127.0.0.1:10007/strata?target_session_attrs=read-write",
            "s3=postgresql://strata@127.0.0.1:10008,127.0.0.1:10009/strata?target_session_attrs=read-write",
        ]
    );
    // The URLs travel in the environment, `;`-separated (a URL lists its hosts with commas).
    let inv = invocation(&plan, "api-1");
    let shards = inv
        .env
        .iter()
        .find(|(k, _)| k == "STRATA_POSTGRES_SHARDS")
        .map(|(_, v)| v.clone())
        .expect("the groups' URLs in the environment");
    assert_eq!(shards.split(';').count(), 3, "{shards}");
    assert!(
        inv.args.iter().all(|a| !a.contains("postgresql://")),
        "{:?}",
        inv.args
    );
}

#[test]
fn a_command_needs_the_addresses_of_what_it_depends_on() {
    let plan = compile("[lb]\n[api]\ncount = 2\n");
    let announced = Announced::new();
    let lb = plan.role("lb-1").expect("lb");
    let e = lb
        .command(&Wiring {
            port: 8080,
            announced: &announced,
        })
        .expect_err("no backend has announced");
    assert_eq!(e.to_string(), "api-1 has not announced a http address");
    assert_eq!(
        plan.dependents("api-2")
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["lb-1"]
    );
}

#[test]
fn a_broker_and_an_object_store_start_first_and_the_pipeline_is_pointed_at_them() {
    let plan = compile(
        "[lb]\n[api]\ncount = 2\n[workers]\ncount = 2\nconcurrency = 3\n[queue]\nengine = \"rabbitmq\"\n[blobs]\nengine = \"seaweedfs\"\n",
    );
    plan.check().expect("valid plan");
    let announced = announce_all(&plan);
    let amqp = &announced["rabbitmq-1"]["amqp"];
    let s3 = &announced["s3-1"]["s3"];
    assert!(
        matches!(command(&plan, "rabbitmq-1"), RoleCommand::Rabbitmq(a) if a.dir == Path::new("/d/rabbitmq/rabbitmq-1"))
    );
    assert!(
        matches!(command(&plan, "s3-1"), RoleCommand::S3(a) if a.dir == Path::new("/d/s3/s3-1"))
    );
    for name in ["api-1", "api-2", "worker-1", "worker-2"] {
        let role = plan.role(name).expect("role");
        assert!(
            role.depends_on.contains(&"rabbitmq-1".to_string())
                && role.depends_on.contains(&"s3-1".to_string()),
            "{name} starts after the broker and the object store: {:?}",
            role.depends_on
        );
        let photos = match command(&plan, name) {
            RoleCommand::Api(a) => a.server.photos.clone(),
            RoleCommand::Worker(w) => {
                assert_eq!(w.concurrency, 3);
                w.photos.clone()
            }
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(
            photos.queue_url.as_deref(),
            Some(format!("amqp://guest:guest@{amqp}/%2f").as_str())
        );
        assert_eq!(photos.s3_endpoint, Some(format!("http://{s3}")));
        assert_eq!(
            photos.s3_credentials_file.as_deref(),
            Some(Path::new("/d/s3/s3-1/credentials"))
        );
        // The broker's URL holds a password: it travels in the environment.
        let rendered = invocation(&plan, name);
        assert!(
            !rendered.args.iter().any(|a| a.contains("amqp://")),
            "{rendered:?}"
        );
        assert!(
            rendered
                .env
                .iter()
                .any(|(k, v)| k == "STRATA_QUEUE_URL" && v.starts_with("amqp://"))
        );
    }
    // The embedded defaults run neither, and point nothing anywhere.
    let plain = compile("[api]\ncount = 1\n[workers]\ncount = 1\n");
    assert!(plain.role("rabbitmq-1").is_none() && plain.role("s3-1").is_none());
    match command(&plain, "worker-1") {
        RoleCommand::Worker(w) => {
            assert_eq!(w.photos, strata_photos::role::PhotoOptions::default());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn alertmanager_starts_before_prometheus_which_sends_it_the_alerts() {
    let plan = compile(
        "[api]\ncount = 1\n[observe]\nprometheus = true\nalertmanager = true\nalert_webhook = \"http://127.0.0.1:9/hook\"\n",
    );
    let order: Vec<&str> = plan.roles.iter().map(|r| r.name.as_str()).collect();
    let at = |n: &str| order.iter().position(|r| *r == n).expect(n);
    assert!(at("alertmanager-1") < at("prometheus-1"), "{order:?}");
    let announced = announce_all(&plan);
    let am: std::net::SocketAddr = announced["alertmanager-1"]["http"]
        .parse()
        .expect("alertmanager-1 announced");
    match command(&plan, "prometheus-1") {
        RoleCommand::Prometheus(args) => {
            assert_eq!(args.alertmanager, Some(am));
            assert_eq!(args.alert_resend_delay_secs, 60, "4 × 15 s");
        }
        other => panic!("{other:?}"),
    }
    match command(&plan, "alertmanager-1") {
        RoleCommand::Alertmanager(args) => {
            assert_eq!(args.webhook.as_deref(), Some("http://127.0.0.1:9/hook"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(observe::resend_delay_secs(1), 5);
    assert_eq!(observe::resend_delay_secs(3), 12);
    assert_eq!(observe::resend_delay_secs(600), 60);
    let without = compile("[api]\ncount = 1\n[observe]\nprometheus = true\n");
    assert!(without.role("alertmanager-1").is_none());
    match command(&without, "prometheus-1") {
        RoleCommand::Prometheus(args) => assert_eq!(args.alertmanager, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn each_data_centre_runs_its_balancers_before_its_own_api_servers_which_reach_the_others_through_relays()
 {
    let plan = compile(DATACENTRES);
    let names: Vec<&str> = plan.roles.iter().map(|r| r.name.as_str()).collect();
    for name in [
        "pg-1",
        "pg-2",
        "pg-3",
        "control-1",
        "us-east-relay-pg-3",
        "us-west-relay-pg-1",
        "us-west-relay-pg-2",
        "us-east-api-1",
        "us-east-api-2",
        "us-west-api-1",
        "us-east-lb-1",
        "us-west-lb-1",
        "us-west-lb-2",
        "dns-1",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert_eq!(plan.roles.len(), 14, "{names:?}");
    let announced = announce_all(&plan);
    let at = |name: &str, listener: &str| announced[name][listener].clone();
    let RoleCommand::Relay(relay) = command(&plan, "us-west-relay-pg-1") else {
        panic!("a relay")
    };
    assert_eq!(relay.to.to_string(), at("pg-1", "postgres"));
    assert_eq!(relay.delay_ms, 30);
    // Every relay on a link watches that link's file (`strata datacenter cut`).
    for name in ["us-west-relay-pg-1", "us-east-relay-pg-3"] {
        let RoleCommand::Relay(relay) = command(&plan, name) else {
            panic!("a relay")
        };
        assert_eq!(
            relay.cut_file.as_deref(),
            Some(Path::new("/d/cut/us-east+us-west")),
            "{name}"
        );
    }
    // us-west's API server: the primary through every server (us-east's through relays), its
    // reads on its own data centre's replica only.
    let RoleCommand::Api(api) = command(&plan, "us-west-api-1") else {
        panic!("an API server")
    };
    let primary = api.server.data.postgres.clone().expect("primary URL");
    for via in [
        at("us-west-relay-pg-1", "relay"),
        at("us-west-relay-pg-2", "relay"),
        at("pg-3", "postgres"),
    ] {
        assert!(primary.contains(&via), "{via} in {primary}");
    }
    assert!(!primary.contains(&at("pg-1", "postgres")), "{primary}");
    assert_eq!(api.server.data.postgres_replicas.len(), 1);
    assert!(api.server.data.postgres_replicas[0].contains(&at("pg-3", "postgres")));
    assert_eq!(
        api.server.node_id, 3,
        "node ids count on across data centres"
    );
    let west_api = plan.role("us-west-api-1").expect("role");
    assert!(
        west_api
            .depends_on
            .contains(&"us-west-relay-pg-1".to_string())
    );
    let RoleCommand::Api(east) = command(&plan, "us-east-api-1") else {
        panic!("an API server")
    };
    assert_eq!(east.server.data.postgres_replicas.len(), 2, "pg-1 and pg-2");
    // Balancers: each in front of its own data centre's API servers, on the first one's port.
    let RoleCommand::Lb(first) = command(&plan, "us-east-lb-1") else {
        panic!("a balancer")
    };
    assert_eq!(first.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(first.backends.len(), 2);
    let port = at("us-east-lb-1", "http")
        .rsplit(':')
        .next()
        .expect("port")
        .to_string();
    for (name, ip) in [
        ("us-west-lb-1", "127.0.12.1"),
        ("us-west-lb-2", "127.0.12.2"),
    ] {
        let RoleCommand::Lb(lb) = command(&plan, name) else {
            panic!("a balancer")
        };
        assert_eq!(lb.listen.to_string(), format!("{ip}:{port}"));
        let backends: Vec<&str> = lb.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(backends, ["us-west-api-1"]);
    }
    // DNS: one data centre per table, in order, with its own balancers and settings.
    let config = dns_config(&plan, &announced);
    let dcs: Vec<(String, Vec<String>)> = config
        .datacentres
        .iter()
        .map(|dc| {
            (
                dc.name.clone(),
                dc.balancers.iter().map(ToString::to_string).collect(),
            )
        })
        .collect();
    assert_eq!(
        dcs,
        [
            ("us-east".to_string(), vec![at("us-east-lb-1", "http")]),
            (
                "us-west".to_string(),
                vec![at("us-west-lb-1", "http"), at("us-west-lb-2", "http")]
            ),
        ]
    );
    assert_eq!(config.datacentres[1].weight, 0);
    // Failover (the default policy) follows the primary: DNS reads the cluster file and knows
    // each data centre's servers.
    assert_eq!(
        config.primary_file.as_deref(),
        Some(Path::new("/d/postgres/cluster.json"))
    );
    assert_eq!(config.datacentres[0].databases, ["pg-1", "pg-2"]);
    assert_eq!(config.datacentres[1].databases, ["pg-3"]);
    // Replication crosses the link too: us-west's server copies and follows the primary
    // through its relay, and has a route to each server of us-east; the controller re-points
    // standbys through the same routes.
    let RoleCommand::Postgres(west_pg) = command(&plan, "pg-3") else {
        panic!("a PostgreSQL server")
    };
    assert_eq!(
        west_pg.replica_of.map(|a| a.to_string()),
        Some(at("us-west-relay-pg-1", "relay"))
    );
    let routes: Vec<String> = west_pg.routes.iter().map(ToString::to_string).collect();
    assert_eq!(
        routes,
        [
            format!("pg-3:pg-1={}", at("us-west-relay-pg-1", "relay")),
            format!("pg-3:pg-2={}", at("us-west-relay-pg-2", "relay")),
        ]
    );
    assert!(
        plan.role("pg-3")
            .expect("pg-3")
            .depends_on
            .contains(&"us-west-relay-pg-1".to_string())
    );
    let RoleCommand::Postgres(east_replica) = command(&plan, "pg-2") else {
        panic!("a PostgreSQL server")
    };
    assert_eq!(
        east_replica.replica_of.map(|a| a.to_string()),
        Some(at("pg-1", "postgres")),
        "within a data centre, directly"
    );
    let RoleCommand::Control(control) = command(&plan, "control-1") else {
        panic!("a controller")
    };
    let routes: Vec<String> = control.routes.iter().map(ToString::to_string).collect();
    assert_eq!(routes.len(), 4, "{routes:?}");
    assert!(routes.contains(&format!("pg-1:pg-3={}", at("us-east-relay-pg-3", "relay"))));
    // Photo workers go with data centres (they are in none).
    let with_workers = compile(&format!("{DATACENTRES}[workers]\ncount = 1\n"));
    assert!(with_workers.role("worker-1").is_some());
    // The layout `strata status` reads.
    let layout = datacenters::Layout::of(&Topology::parse(DATACENTRES, 8080).expect("valid"));
    assert_eq!(layout.datacenters[1].databases, ["pg-3"]);
    assert_eq!(
        layout.datacenters[1].relays,
        ["us-west-relay-pg-1", "us-west-relay-pg-2"]
    );
}

#[test]
fn each_data_centre_runs_its_own_cache_servers_and_only_its_api_servers_use_them() {
    let cases: [(CacheEngine, u8, &[&str]); 2] = [
        (
            CacheEngine::Redis,
            2,
            &[
                "us-east-cache-1",
                "us-east-cache-2",
                "us-west-cache-1",
                "us-west-cache-2",
            ],
        ),
        (
            CacheEngine::Memcached,
            1,
            &["us-east-cache-1", "us-west-cache-1"],
        ),
    ];
    for (engine, nodes, want) in cases {
        let text = format!(
            "{DATACENTRES}[cache]\nengine = \"{}\"\nnodes = {nodes}\n",
            engine.name()
        );
        let plan = compile(&text);
        plan.check().unwrap_or_else(|e| panic!("{engine:?}: {e}"));
        let caches: Vec<&str> = plan
            .roles
            .iter()
            .filter(|r| r.kind == RoleKind::Cache)
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(caches, want, "{engine:?}");
        assert_eq!(
            plan.roles.len(),
            14 + want.len(),
            "{engine:?}: the cache servers and nothing more (no relay to a cache server)"
        );
        for name in want {
            let RoleCommand::Cache(args) = command(&plan, name) else {
                panic!("{name}: a cache role")
            };
            assert_eq!(args.engine, engine, "{name}");
            assert_eq!(args.name, *name);
            assert_eq!(args.dir, Path::new("/d/cache").join(name), "{name}");
            let back = argv::parse_back(&invocation(&plan, name)).expect("parses back");
            assert_eq!(back, RoleCommand::Cache(args), "{name}");
        }
        let announced = announce_all(&plan);
        for (dc, apis, other) in [
            (
                "us-east",
                &["us-east-api-1", "us-east-api-2"][..],
                "us-west",
            ),
            ("us-west", &["us-west-api-1"][..], "us-east"),
        ] {
            let own: Vec<String> = want
                .iter()
                .filter(|n| n.starts_with(&format!("{dc}-cache-")))
                .map(ToString::to_string)
                .collect();
            assert_eq!(own.len(), usize::from(nodes), "{dc}");
            let addrs: Vec<String> = own
                .iter()
                .map(|n| announced[n][engine.name()].clone())
                .collect();
            for api in apis {
                let RoleCommand::Api(a) = command(&plan, api) else {
                    panic!("{api}: an API server")
                };
                let (got, none) = match engine {
                    CacheEngine::Redis => {
                        (&a.server.cache.cache_redis, &a.server.cache.cache_memcached)
                    }
                    CacheEngine::Memcached => {
                        (&a.server.cache.cache_memcached, &a.server.cache.cache_redis)
                    }
                };
                let expected: Vec<String> = match engine {
                    CacheEngine::Redis => addrs.iter().map(|a| format!("redis://{a}")).collect(),
                    CacheEngine::Memcached => addrs.clone(),
                };
                assert_eq!(*got, expected, "{api}: exactly {dc}'s cache servers");
                assert!(none.is_empty(), "{api}: {none:?}");
                let depends_on = &plan.role(api).expect("role").depends_on;
                for cache in &own {
                    assert!(
                        depends_on.contains(cache),
                        "{api} on {cache}: {depends_on:?}"
                    );
                }
                assert!(
                    !depends_on
                        .iter()
                        .any(|d| d.starts_with(&format!("{other}-cache-"))),
                    "{api} does not wait for {other}'s caches: {depends_on:?}"
                );
            }
        }
        // The layout lists each data centre's cache servers (`strata datacenter kill` takes
        // them down with it).
        let layout = datacenters::Layout::of(&Topology::parse(&text, 8080).expect("valid"));
        let listed: Vec<&str> = layout
            .datacenters
            .iter()
            .flat_map(|dc| dc.caches.iter().map(String::as_str))
            .collect();
        assert_eq!(listed, want, "{engine:?}");
        for name in want {
            let home = layout.datacentre_of(name).map(|dc| dc.name.as_str());
            assert_eq!(home, name.get(..7), "{name}");
        }
    }
    // A layout file written before data centres had cache servers still reads.
    let old = r#"{"datacenters":[{"name":"a","balancers":["a-lb-1"],"apis":["a-api-1"],"databases":["pg-1"],"relays":[]}]}"#;
    let layout: datacenters::Layout = serde_json::from_str(old).expect("an older layout");
    assert!(layout.datacenters[0].caches.is_empty());
    // Without data centres nothing changes.
    let plan = compile("[lb]\n[api]\ncount = 2\n[cache]\nengine = \"memcached\"\nnodes = 2\n");
    let caches = names_of(&plan.roles, RoleKind::Cache);
    assert_eq!(caches, ["cache-1", "cache-2"]);
    assert_eq!(
        plan.role("api-2").map(|r| r.depends_on.clone()),
        Some(caches)
    );
}

#[test]
fn the_edges_clients_reach_serve_the_static_files_and_the_shield_does_not() {
    let plan = compile(
        "[lb]\n[api]\ncount = 1\n[edge]\ncount = 2\nshield = true\nstatic_dir = \"docs\"\nstatic_prefix = \"/docs/\"\n",
    );
    let served = |name: &str| match command(&plan, name) {
        RoleCommand::Edge(edge) => {
            let args = edge.args;
            args.static_dir
                .map(|d| (d, args.static_prefix, args.static_max_age))
        }
        other => panic!("{other:?}"),
    };
    for edge in ["edge-1", "edge-2"] {
        let (dir, prefix, max_age) = served(edge).expect("static files");
        assert!(dir.is_absolute() && dir.ends_with("docs"), "{dir:?}");
        assert_eq!((prefix.as_str(), max_age), ("/docs/", 3600));
    }
    assert_eq!(
        served(SHIELD_NAME),
        None,
        "the shield never sees those paths"
    );
    assert!(
        plan.setup
            .iter()
            .any(|s| s.what.contains("static directory")),
        "strata up checks the directory before anything starts"
    );
}

#[test]
fn the_edges_origin_timeout_and_stale_grace_reach_every_edge_and_bound_the_collapsed_wait() {
    let plan = compile(
        "[lb]\n[api]\ncount = 1\n[edge]\nshield = true\norigin_timeout_ms = 2000\nstale_grace_ms = 250\n",
    );
    for name in ["edge-1", SHIELD_NAME] {
        match command(&plan, name) {
            RoleCommand::Edge(edge) => {
                assert_eq!(edge.args.header_timeout_ms, 2000, "{name}");
                assert_eq!(edge.args.stale_grace_ms, 250, "{name}");
                assert_eq!(
                    edge.args.total_timeout_ms, 15_000,
                    "{name}: the default stays"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    let plan = compile("[api]\ncount = 1\n[edge]\norigin_timeout_ms = 30000\n");
    match command(&plan, "edge-1") {
        RoleCommand::Edge(edge) => assert_eq!(edge.args.total_timeout_ms, 35_000),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_edges_clients_reach_send_the_dashboard_prefix_straight_to_the_dashboard() {
    let plan = compile(
        "[lb]\n[api]\ncount = 1\n[edge]\ncount = 2\nshield = true\ndashboard = true\n[observe]\ndashboard = true\n",
    );
    assert!(plan.check().is_ok(), "{:?}", plan.check());
    let announced = announce_all(&plan);
    let dashboard = &announced[crate::plan::observe::DASHBOARD]["http"];
    let routes = |plan: &Plan, name: &str| match command(plan, name) {
        RoleCommand::Edge(edge) => edge
            .args
            .routes
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    for edge in ["edge-1", "edge-2"] {
        assert_eq!(
            routes(&plan, edge),
            [format!("/dashboard/={dashboard}")],
            "{edge}"
        );
        let role = plan.role(edge).expect("edge");
        assert!(
            role.depends_on.iter().any(|d| d == "dashboard-1"),
            "{edge} starts once the dashboard's address is known: {:?}",
            role.depends_on
        );
        assert!(
            invocation(&plan, edge)
                .args
                .windows(2)
                .any(|w| w[0] == "--route" && w[1] == format!("/dashboard/={dashboard}")),
            "on its command line"
        );
    }
    assert!(
        routes(&plan, SHIELD_NAME).is_empty(),
        "the shield is not asked"
    );
    assert!(
        plan.role("dashboard-1")
            .expect("dashboard")
            .depends_on
            .is_empty(),
        "the dashboard depends on nothing: no cycle"
    );
    // Without the dashboard, without edges, or without `[edge] dashboard = true` (the
    // default: the public entry does not show the deployment), no route.
    let plan = compile("[lb]\n[api]\ncount = 1\n[edge]\n");
    assert!(routes(&plan, "edge-1").is_empty());
    let plan = compile("[lb]\n[api]\ncount = 1\n[edge]\n[observe]\ndashboard = true\n");
    assert!(routes(&plan, "edge-1").is_empty());
    let errors = crate::topology::Topology::parse(
        "[lb]\n[api]\ncount = 1\n[edge]\ndashboard = true\n",
        8080,
    )
    .expect_err("no dashboard to route to");
    assert!(
        errors
            .0
            .iter()
            .any(|e| e.message.contains("add `[observe] dashboard = true`")),
        "{errors}"
    );
    let plan = compile("[lb]\n[api]\ncount = 1\n[observe]\ndashboard = true\n");
    assert!(plan.role("edge-1").is_none() && plan.role("dashboard-1").is_some());
}

#[test]
fn with_edges_the_api_servers_and_workers_purge_them_through_the_state_file() {
    let plan = compile(
        "[lb]\n[api]\ncount = 1\n[workers]\ncount = 1\n[edge]\ncount = 2\nprofile_ttl_secs = 45\n",
    );
    let state = Some(Path::new("/d").join(crate::state::STATE_FILE));
    match command(&plan, "api-1") {
        RoleCommand::Api(a) => {
            assert_eq!(a.server.edges.targets.purge_edges_state, state);
            assert_eq!(a.server.edges.shared_max_age_secs, 45);
        }
        other => panic!("{other:?}"),
    }
    match command(&plan, "worker-1") {
        RoleCommand::Worker(w) => {
            assert_eq!(w.edges.purge_edges_state, state);
            assert_eq!(w.shared_max_age_secs, 45, "retried as long as the API's");
        }
        other => panic!("{other:?}"),
    }
    let rendered = invocation(&plan, "worker-1");
    assert!(
        rendered.args.iter().any(|a| a == "--purge-edges-state"),
        "{rendered:?}"
    );
    // Without edges, no purges.
    let plan = compile("[api]\ncount = 1\n[workers]\ncount = 1\n");
    match command(&plan, "worker-1") {
        RoleCommand::Worker(w) => assert!(w.edges.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn with_dns_and_edges_dns_hands_out_the_edges_clients_reach_each_at_an_address_of_its_own() {
    let plan =
        compile("[lb]\n[api]\ncount = 2\n[edge]\ncount = 3\nshield = true\n[dns]\nport = 5353\n");
    let announced = announce_all(&plan);
    let edge1_port = announced["edge-1"]["http"]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("port");
    for (name, listen) in [
        ("edge-1", "127.0.0.1:8080".to_string()),
        ("edge-2", format!("127.0.9.2:{edge1_port}")),
        ("edge-3", format!("127.0.9.3:{edge1_port}")),
    ] {
        let RoleCommand::Edge(e) = command(&plan, name) else {
            panic!("{name} is an edge");
        };
        assert_eq!(e.args.listen.to_string(), listen, "{name}");
    }
    assert!(
        plan.role("edge-3")
            .expect("edge-3")
            .depends_on
            .contains(&"edge-1".to_string()),
        "edge-3 takes edge-1's port"
    );
    let RoleCommand::Edge(shield) = command(&plan, SHIELD_NAME) else {
        panic!("the shield is an edge");
    };
    assert_eq!(shield.args.listen.ip().to_string(), "127.0.0.1");
    let dns = plan.role(dns::NAME).expect("dns-1");
    assert_eq!(
        dns.depends_on,
        ["edge-1", "edge-2", "edge-3"],
        "the edges clients reach, not the shield nor the balancer"
    );
    let config = dns_config(&plan, &announced);
    let listed: Vec<String> = config.datacentres[0]
        .balancers
        .iter()
        .map(ToString::to_string)
        .collect();
    let expected: Vec<String> = ["edge-1", "edge-2", "edge-3"]
        .iter()
        .map(|e| announced[*e]["http"].clone())
        .collect();
    assert_eq!(listed, expected, "every edge clients reach, as announced");
    // Without [dns], edge-2 keeps a free port of 127.0.0.1.
    let plan = compile("[lb]\n[api]\ncount = 1\n[edge]\ncount = 2\n");
    let RoleCommand::Edge(e) = command(&plan, "edge-2") else {
        panic!("edge-2 is an edge");
    };
    assert_eq!(e.args.listen.to_string(), "127.0.0.1:0");
}

#[test]
fn with_dns_the_edges_and_balancers_beside_the_first_take_its_https_port_too() {
    let plan =
        compile("[lb]\ncount = 2\ntls_port = 8443\ndev_cert = true\n[api]\ncount = 1\n[dns]\n");
    let mut announced = announce_all(&plan);
    let with_https = |announced: &mut Announced, name: &str| {
        announced
            .get_mut(name)
            .expect("announced")
            .insert("https".into(), "127.0.0.1:9443".into());
    };
    with_https(&mut announced, "lb-1");
    let built = |plan: &Plan, announced: &Announced, name: &str| {
        let role = plan.role(name).expect("role");
        role.command(&Wiring {
            port: role.port,
            announced,
        })
        .expect("builds")
    };
    let RoleCommand::Lb(lb2) = built(&plan, &announced, "lb-2") else {
        panic!("lb-2 is a balancer");
    };
    assert_eq!(
        lb2.tls_listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.10.2:9443")
    );

    let plan =
        compile("[api]\ncount = 1\n[edge]\ncount = 2\ntls_port = 8443\ndev_cert = true\n[dns]\n");
    let mut announced = announce_all(&plan);
    with_https(&mut announced, "edge-1");
    let RoleCommand::Edge(edge2) = built(&plan, &announced, "edge-2") else {
        panic!("edge-2 is an edge");
    };
    assert_eq!(
        edge2.args.tls_listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.9.2:9443")
    );
    let RoleCommand::Edge(edge1) = built(&plan, &announced, "edge-1") else {
        panic!("edge-1 is an edge");
    };
    assert_eq!(
        edge1.args.tls_listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:8443"),
        "edge-1 keeps the topology's HTTPS port"
    );
}

#[test]
fn with_data_centres_each_runs_its_edges_in_front_of_its_own_balancer_and_dns_hands_them_out() {
    let plan = compile(&format!("{DATACENTRES}[edge]\ncount = 2\nshield = true\n"));
    let announced = announce_all(&plan);
    let addr =
        |name: &str| -> std::net::SocketAddr { announced[name]["http"].parse().expect("addr") };
    let edge = |name: &str| match command(&plan, name) {
        RoleCommand::Edge(e) => e.args,
        other => panic!("{other:?}"),
    };
    let port = addr("us-east-edge-1").port();
    for (name, listen, origin) in [
        (
            "us-east-edge-1",
            "127.0.0.1:8080".to_string(),
            "us-east-edge-shield",
        ),
        (
            "us-east-edge-2",
            format!("127.0.11.102:{port}"),
            "us-east-edge-shield",
        ),
        (
            "us-west-edge-1",
            format!("127.0.12.101:{port}"),
            "us-west-edge-shield",
        ),
        (
            "us-west-edge-2",
            format!("127.0.12.102:{port}"),
            "us-west-edge-shield",
        ),
        (
            "us-east-edge-shield",
            "127.0.0.1:0".to_string(),
            "us-east-lb-1",
        ),
        (
            "us-west-edge-shield",
            "127.0.0.1:0".to_string(),
            "us-west-lb-1",
        ),
    ] {
        let args = edge(name);
        assert_eq!(args.listen.to_string(), listen, "{name}");
        assert_eq!(
            args.origin,
            Some(addr(origin)),
            "{name} fetches from {origin}"
        );
    }
    assert_eq!(
        plan.role("us-east-lb-1").map(|r| r.port),
        Some(0),
        "the edges take the public entry"
    );
    // Each data centre's API servers purge their own edges again as their replica applies a
    // change (and every edge at once when they write).
    for (api, prefix) in [
        ("us-east-api-1", "us-east-edge-"),
        ("us-west-api-1", "us-west-edge-"),
    ] {
        let RoleCommand::Api(args) = command(&plan, api) else {
            panic!("{api} is an API server");
        };
        assert_eq!(args.server.edges.followed_edges.as_deref(), Some(prefix));
        assert!(args.server.edges.targets.purge_edges_state.is_some());
    }
    let config = dns_config(&plan, &announced);
    let listed: Vec<Vec<String>> = config
        .datacentres
        .iter()
        .map(|dc| dc.balancers.iter().map(ToString::to_string).collect())
        .collect();
    assert_eq!(
        listed,
        [
            [
                announced["us-east-edge-1"]["http"].clone(),
                announced["us-east-edge-2"]["http"].clone()
            ],
            [
                announced["us-west-edge-1"]["http"].clone(),
                announced["us-west-edge-2"]["http"].clone()
            ],
        ],
        "each data centre's entry is its edges clients reach, not its shield or balancers"
    );
    let layout = datacenters::Layout::of(
        &Topology::parse(&format!("{DATACENTRES}[edge]\nshield = true\n"), 8080).expect("valid"),
    );
    assert_eq!(layout.datacenters[1].edges, ["us-west-edge-1"]);
    assert_eq!(
        layout.datacenters[1].shield.as_deref(),
        Some("us-west-edge-shield")
    );
    assert_eq!(
        layout
            .datacentre_of("us-west-edge-shield")
            .map(|dc| dc.name.as_str()),
        Some("us-west"),
        "`strata datacenter kill us-west` takes its edges down with it"
    );
}
