//! Checks across sections, once every table has been read: fixed ports that clash, more API
//! ports than servers that need one, engines the topology needs that are not installed, and
//! `[dns]` without the balancers it answers with.
//! Their mistakes join those of the sections, on the line of the key concerned.

use std::collections::BTreeMap;
use std::path::PathBuf;

use strata_engines::{Engine, NotInstalled};

use super::reader::Document;
use super::{
    BlobsSpec, CacheEngine, DataEngine, QueueSpec, SessionsEngine, StoreKind, Topology,
    TopologyError,
};

/// Every fixed port — the API servers' `ports` and the `tls_port` of the balancer and of the
/// edges — must differ from the public port and from each other; `api.ports` must not list more
/// ports than there are API servers off the public port.
pub(super) fn ports(
    t: &Topology,
    doc: &Document<'_>,
    public_port: u16,
    errors: &mut Vec<TopologyError>,
) {
    let ports_line = doc.line_of("api", "ports");
    // Without a balancer, api-1 takes the public port and needs none of its own.
    let on_public = usize::from(t.lb.is_none() && t.api.count > 0);
    let need_one = usize::from(t.api.count) - on_public;
    if t.api.count > 0 && t.api.ports.len() > need_one {
        errors.push(TopologyError {
            line: ports_line,
            message: format!(
                "`api.ports` lists {} ports but only {need_one} API servers need one (those not \
                 on the public port)",
                t.api.ports.len()
            ),
        });
    }

    let mut fixed: Vec<(String, u16, Option<usize>)> = Vec::new();
    for (i, port) in t.api.ports.iter().enumerate() {
        // 0: a bad entry, reported already.
        if *port != 0 {
            let line = doc.line_of_entry("api", "ports", i);
            fixed.push((format!("api-{}", i + 1 + on_public), *port, line));
        }
    }
    if let Some(tls) = t.lb.as_ref().and_then(|lb| lb.tls.as_ref())
        && tls.port != 0
    {
        fixed.push((
            "the balancer's TLS listener (`lb.tls_port`)".to_string(),
            tls.port,
            doc.line_of("lb", "tls_port"),
        ));
    }
    if let Some(tls) = t.edge.as_ref().and_then(|edge| edge.tls.as_ref())
        && tls.port != 0
    {
        fixed.push((
            "edge-1's TLS listener (`edge.tls_port`)".to_string(),
            tls.port,
            doc.line_of("edge", "tls_port"),
        ));
    }
    if let Some(dns) = &t.dns
        && dns.port != 0
    {
        fixed.push((
            "the DNS server (`dns.port`)".to_string(),
            dns.port,
            doc.line_of("dns", "port"),
        ));
    }
    for (i, (owner, port, line)) in fixed.iter().enumerate() {
        if public_port != 0 && *port == public_port {
            errors.push(TopologyError {
                line: *line,
                message: format!(
                    "port {port} of {owner} clashes with the public port {public_port} (see --port)"
                ),
            });
        }
        if let Some((other, ..)) = fixed[..i].iter().find(|(_, p, _)| p == port) {
            errors.push(TopologyError {
                line: *line,
                message: format!("port {port} of {owner} clashes with port {port} of {other}"),
            });
        }
    }
}

/// Every engine the topology needs `strata up` to run must be installed: PostgreSQL for
/// `[data] engine = "postgres"` without `url`, Redis for a Redis cache or sessions, Memcached
/// for a Memcached cache. A missing one is reported once, on the line of the first key that
/// asked for it, with the package that installs it.
pub(super) fn engines(
    t: &Topology,
    doc: &Document<'_>,
    locate: &dyn Fn(Engine) -> Result<PathBuf, NotInstalled>,
    errors: &mut Vec<TopologyError>,
) {
    let mut needed: Vec<(Engine, &str, &str)> = Vec::new();
    if matches!(t.data, DataEngine::Postgres { .. }) {
        needed.push((Engine::Postgres, "data", "engine"));
    }
    match t.cache.shared {
        Some((CacheEngine::Redis, _)) => needed.push((Engine::Redis, "cache", "engine")),
        Some((CacheEngine::Memcached, _)) => needed.push((Engine::Memcached, "cache", "engine")),
        None => {}
    }
    if t.sessions == SessionsEngine::Redis {
        needed.push((Engine::Redis, "sessions", "engine"));
    }
    if t.etcd_members() > 0 {
        needed.push((Engine::Etcd, "control", "store"));
    }
    if t.queue == QueueSpec::RabbitMq {
        needed.push((Engine::RabbitMq, "queue", "engine"));
    }
    if matches!(t.blobs, BlobsSpec::SeaweedFs { .. }) {
        needed.push((Engine::SeaweedFs, "blobs", "engine"));
    }
    if t.observe.prometheus {
        needed.push((Engine::Prometheus, "observe", "prometheus"));
    }
    if t.observe.alertmanager {
        needed.push((Engine::Alertmanager, "observe", "alertmanager"));
    }
    let mut first: BTreeMap<Engine, Option<usize>> = BTreeMap::new();
    for (engine, section, key) in needed {
        first
            .entry(engine)
            .or_insert_with(|| doc.line_of(section, key));
    }
    for (engine, line) in first {
        if let Err(missing) = locate(engine) {
            errors.push(TopologyError {
                line,
                message: missing.to_string(),
            });
        }
    }
}

/// `[control]` fails over between PostgreSQL servers that `strata up` runs: it needs
/// `[data] engine = "postgres"` with replicas. An etcd of one's own must answer.
pub(super) fn control(
    t: &Topology,
    doc: &Document<'_>,
    answers: &dyn Fn(&str) -> bool,
    errors: &mut Vec<TopologyError>,
) {
    let Some(line) = doc.line_of_table("control") else {
        return;
    };
    if !t.has_control() {
        errors.push(TopologyError {
            line: Some(line),
            message: "`[control]` runs the controllers that fail over between PostgreSQL servers: \
                      it needs `[data] engine = \"postgres\"` with `replicas` (1 to 4)"
                .into(),
        });
        return;
    }
    if t.control.store == StoreKind::Etcd
        && !t.control.etcd.is_empty()
        && !t.control.etcd.iter().any(|e| answers(e))
    {
        errors.push(TopologyError {
            line: doc.line_of("control", "etcd").or(Some(line)),
            message: format!(
                "no etcd endpoint of `control.etcd` answers ({}): start that etcd cluster, or \
                 leave out `etcd` to let strata up run one",
                t.control.etcd.join(", ")
            ),
        });
    }
}

/// `[edge] dashboard = true` needs the dashboard itself.
pub(super) fn edge(t: &Topology, doc: &Document<'_>, errors: &mut Vec<TopologyError>) {
    if t.edge.as_ref().is_some_and(|e| e.dashboard) && !t.observe.dashboard {
        errors.push(TopologyError {
            line: doc.line_of("edge", "dashboard"),
            message: "`edge.dashboard = true` routes the live dashboard through the edges: add `[observe] dashboard = true`, or remove it"
                .into(),
        });
    }
}

/// `[dns]` answers with the public entry's addresses: the edges when the topology has them,
/// else the balancers (so it needs `[lb]`); each of them on a loopback address of its own at
/// one port (all of 127.0.0.0/8 is bindable on Linux only).
pub(super) fn dns(t: &Topology, doc: &Document<'_>, errors: &mut Vec<TopologyError>) {
    if t.dns.is_none() {
        return;
    }
    let line = doc.line_of_table("dns");
    let mut refuse = |message: String| {
        errors.push(TopologyError { line, message });
    };
    // With data centres, every data centre's entry is on addresses of its own anyway.
    if let Some(edge) = &t.edge
        && t.datacenters.is_empty()
        && edge.count > 1
        && !cfg!(target_os = "linux")
    {
        refuse(format!(
            "`[dns]` with {} edges needs Linux: each listens on a loopback address of its \
             own (127.0.9.N), which other systems do not configure",
            edge.count
        ));
    }
    match &t.lb {
        _ if t.edge.is_some() => {}
        None => refuse(
            "`[dns]` answers with the balancers' addresses (or the edges', with `[edge]`): add \
             `[lb]` (with `count = 2` or more so that one balancer is not the only way in)"
                .into(),
        ),
        Some(lb) if lb.count > 1 && !cfg!(target_os = "linux") => refuse(format!(
            "`[dns]` with {} balancers needs Linux: each listens on a loopback address of its \
             own (127.0.10.N), which other systems do not configure",
            lb.count
        )),
        Some(_) => {}
    }
    let Some(dns) = &t.dns else { return };
    let line = doc.line_of("dns", "policy");
    let mut refuse = |message: String| {
        errors.push(TopologyError { line, message });
    };
    if dns.policy == super::DnsPolicy::Geo {
        if t.datacenters.is_empty() {
            refuse(
                "`dns.policy = \"geo\"` picks among data centres: add `[[datacenter]]` tables \
                 with their locations"
                    .into(),
            );
        }
        for dc in &t.datacenters {
            if dc.location.is_none() && dc.countries.is_empty() && dc.continents.is_empty() {
                refuse(format!(
                    "`dns.policy = \"geo\"` needs data centre {:?}'s `latitude` and \
                     `longitude`, or the `countries` or `continents` it serves",
                    dc.name
                ));
            }
        }
    }
    if let Some(path) = &dns.geoip
        && !std::path::Path::new(path).is_file()
    {
        errors.push(TopologyError {
            line: doc.line_of("dns", "geoip"),
            message: format!("`dns.geoip`: {path} is not a file"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use strata_engines::{Engine, NotInstalled};

    fn errors(text: &str) -> Vec<TopologyError> {
        Topology::parse(text, 8080).expect_err("invalid").0
    }

    #[test]
    fn fixed_ports_that_clash_are_refused() {
        let t = Topology::parse("[api]\ncount = 3\nports = [9001, 9002]\n", 8080).expect("valid");
        assert_eq!(t.api.ports, vec![9001, 9002]);
        let e = errors("[api]\ncount = 3\nports = [9001, 9001]\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].message.contains("clashes with port 9001 of api-2"),
            "{e:?}"
        );
        let e = errors("[api]\ncount = 3\nports = [8080, 70000]\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e.iter().any(|x| x.message.contains("public port 8080")),
            "{e:?}"
        );
        // Each entry on its own line, a bad one keeping its place (api-3's): api-4 and api-5 clash.
        let e = errors("[api]\ncount = 5\nports = [\n  9001,\n  0,\n  9003,\n  9003,\n]\n");
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "line 5: `api.ports` entries must be port numbers from 1 to 65535, not 0",
                "line 7: port 9003 of api-5 clashes with port 9003 of api-4",
            ]
        );
        let e = errors("[api]\ncount = 2\nports = [9001, 9002]\n");
        assert!(
            e[0].message.contains("only 1 API servers need one"),
            "{e:?}"
        );
        assert_eq!(e[0].line, Some(3));
    }

    #[test]
    fn the_balancers_tls_port_must_not_clash_with_the_public_port_or_an_api_port() {
        let e = errors("[lb]\ntls_port = 8080\ndev_cert = true\n[api]\ncount = 1\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, Some(2));
        assert_eq!(
            e[0].message,
            "port 8080 of the balancer's TLS listener (`lb.tls_port`) clashes with the public \
             port 8080 (see --port)"
        );
        let e = errors(
            "[lb]\ntls_port = 9002\ndev_cert = true\n[api]\ncount = 2\nports = [9001, 9002]\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, Some(2));
        assert!(
            e[0].message.contains("clashes with port 9002 of api-2"),
            "{e:?}"
        );
        // Port 0 is any free port: it clashes with nothing.
        assert!(
            Topology::parse("[lb]\ntls_port = 0\ndev_cert = true\n[api]\ncount = 1\n", 0).is_ok()
        );
    }

    #[test]
    fn a_missing_engine_is_reported_on_the_line_that_needs_it_with_the_other_mistakes() {
        let text = "[api]\ncount = 0\n\n[cache]\nengine = \"redis\"\n\n[sessions]\nengine = \"redis\"\n\n[data]\nengine = \"postgres\"\n";
        let no_redis = |engine: Engine| match engine {
            Engine::Redis => Err(NotInstalled { engine }),
            _ => Ok(std::path::PathBuf::from("/usr/bin/true")),
        };
        let e = Topology::compile(
            text,
            8080,
            &super::super::Environment {
                locate: &no_redis,
                answers: &|_| true,
            },
        )
        .expect_err("invalid")
        .0;
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].line, Some(2), "{e:?}");
        assert!(e[0].message.contains("`api.count`"), "{e:?}");
        assert_eq!(e[1].line, Some(5), "{e:?}");
        assert!(
            e[1].message.contains("apt-get install redis-server"),
            "{e:?}"
        );
        assert_eq!(
            e[1].message,
            NotInstalled {
                engine: Engine::Redis
            }
            .to_string()
        );

        // Every engine missing: each reported once, on its first key; `parse` finds them all.
        let nothing = |engine: Engine| Err(NotInstalled { engine });
        let text = "[api]\ncount = 1\n[cache]\nengine = \"memcached\"\n[data]\nengine = \"postgres\"\n[sessions]\nengine = \"redis\"\n";
        let e = Topology::compile(
            text,
            8080,
            &super::super::Environment {
                locate: &nothing,
                answers: &|_| true,
            },
        )
        .expect_err("invalid")
        .0;
        let lines: Vec<Option<usize>> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, [Some(4), Some(6), Some(8)], "{e:?}");
        assert!(Topology::parse(text, 8080).is_ok());
        // Existing servers by URL, SQLite and the in-process cache need nothing installed.
        let text = "[api]\ncount = 1\n[data]\nengine = \"postgres\"\nurl = \"postgresql://h/d\"\n";
        assert!(
            Topology::compile(
                text,
                8080,
                &super::super::Environment {
                    locate: &nothing,
                    answers: &|_| true
                }
            )
            .is_ok()
        );
        assert!(
            Topology::compile(
                DEFAULT_TOPOLOGY,
                8080,
                &super::super::Environment {
                    locate: &nothing,
                    answers: &|_| true
                }
            )
            .is_ok()
        );
        // A bad URL is one mistake: it does not also ask for PostgreSQL.
        let text = "[api]\ncount = 1\n[data]\nengine = \"postgres\"\nurl = \"db1\"\n";
        let e = Topology::compile(
            text,
            8080,
            &super::super::Environment {
                locate: &nothing,
                answers: &|_| true,
            },
        )
        .expect_err("invalid")
        .0;
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].message.starts_with("`data.url` must be"), "{e:?}");
    }
}
