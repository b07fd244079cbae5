//! The DNS server's role, `dns-1` (`[dns]`): `strata dns` on 127.0.0.1 (UDP and TCP), after
//! every balancer, with a configuration file written into `DIR/dns/dns-1.toml` before each of
//! its starts from the addresses the balancers announced. It answers the topology's service
//! names with the healthy balancers of its one data centre ([`LOCAL_DATACENTRE`]), each
//! checked with `GET /healthz` on its public listener — which the balancer answers by asking
//! an API server, so a balancer that cannot reach the API pool leaves the answers too.
//!
//! With `[[datacenter]]` tables and `policy = "failover"` (the control plane's state in a
//! file), the configuration names the cluster file and each data centre's PostgreSQL servers:
//! DNS prefers the data centre that holds the primary, so after a failover clients stay where
//! writes do not cross a link, also once the old data centre is back.
//!
//! Layered balancing: DNS spreads clients over the balancers, each balancer spreads their
//! requests over the API servers. With `[dns]`, balancers listen on addresses of their own on
//! the same port (see [`super::lb::listen_ip`]), since an answer carries addresses only.
//!
//! With `[edge]`, the edges are the public entry, and DNS hands them out instead (each
//! checked with `GET /healthz`, which an edge passes on towards the API servers): the edges
//! clients reach, not the shield, each on an address of its own at edge-1's port
//! ([`super::edge::listen_ip`]). With data centres too, each data centre's entry is its edges
//! ([`super::datacenters::edge_ip`]), which front its own balancers.

use std::path::PathBuf;

use strata_dns::DnsArgs;

use super::{Plan, PlanContext, PlanError, RoleSpec, Wiring, names_of};
use crate::roles::{RoleCommand, RoleKind};
use crate::topology::{DatacenterSpec, DnsSpec, LOCAL_DATACENTRE, Topology};

/// The role's name.
pub const NAME: &str = "dns-1";

/// Where its configuration file is written: `DIR/dns/`.
pub const DNS_DIR: &str = "dns";

/// The path the balancers answer health checks on (proxied to an API server's `/healthz`).
pub const HEALTH_PATH: &str = "/healthz";

/// The configuration file of the role `name` in the deployment directory `dir`.
pub fn config_path(dir: &std::path::Path, name: &str) -> PathBuf {
    dir.join(DNS_DIR).join(format!("{name}.toml"))
}

/// The DNS server, after the balancers planned before it.
pub fn plan(topology: &Topology, ctx: &PlanContext, plan: &mut Plan) {
    let Some(spec) = topology.dns.clone() else {
        return;
    };
    // What it hands out: the edges clients reach (not the shield) when there are edges, else
    // the balancers.
    let edges: Vec<String> = names_of(&plan.roles, RoleKind::Edge)
        .into_iter()
        .filter(|name| !super::edge::is_shield(name))
        .collect();
    let balancers = if edges.is_empty() {
        names_of(&plan.roles, RoleKind::Lb)
    } else {
        edges
    };
    let config = config_path(&ctx.dir, NAME);
    let (written, file_spec, listed) = (config.clone(), spec.clone(), balancers.clone());
    let geoip = spec.geoip.as_ref().map(std::path::PathBuf::from);
    // One data centre per `[[datacenter]]`, in preference order, with its own balancers.
    let layout = super::datacenters::Layout::of(topology);
    let datacentres: Vec<(DatacenterSpec, Vec<String>, Vec<String>)> = topology
        .datacenters
        .iter()
        .cloned()
        .zip(layout.datacenters)
        // With edges a data centre's entry is its edges, in front of its balancers.
        .map(|(spec, dc)| {
            let entry = if dc.edges.is_empty() {
                dc.balancers
            } else {
                dc.edges
            };
            (spec, entry, dc.databases)
        })
        .collect();
    // The preference follows the primary where the cluster's state is a file DNS can read.
    let primary_file = (!datacentres.is_empty()
        && spec.policy == crate::topology::DnsPolicy::Failover
        && topology.control.store != strata_control::store_options::StoreKind::Etcd)
        .then(|| {
            ctx.path(&[
                strata_control::cluster::POSTGRES_DIR,
                strata_control::cluster::CLUSTER_FILE,
            ])
        });
    let role = RoleSpec::new(
        RoleKind::Dns,
        NAME,
        strata_dns::LISTENER,
        balancers,
        move |w: &Wiring| {
            let mut args = DnsArgs::new(config.clone());
            args.geoip = geoip.clone();
            args.listen = w.listen();
            args.name = NAME.into();
            args.exit_on_stdin_eof = true;
            Ok(RoleCommand::Dns(args))
        },
    )
    .with_files(move |w: &Wiring| {
        let addrs = |names: &[String]| {
            names
                .iter()
                .map(|lb| w.addr(lb, "http").map(|a| a.to_string()))
                .collect::<Result<Vec<_>, PlanError>>()
        };
        let entries = if datacentres.is_empty() {
            vec![Datacentre::local(addrs(&listed)?)]
        } else {
            datacentres
                .iter()
                .map(|(spec, names, databases)| {
                    Ok(Datacentre {
                        name: spec.name.clone(),
                        balancers: addrs(names)?,
                        spec: Some(spec.clone()),
                        databases: databases.clone(),
                    })
                })
                .collect::<Result<Vec<_>, PlanError>>()?
        };
        Ok(vec![(
            written.clone(),
            config_text(&file_spec, &entries, primary_file.as_deref()),
        )])
    });
    plan.roles.push(role.on_port(spec.port));
}

/// One data centre of the configuration file.
#[derive(Debug, Clone)]
pub struct Datacentre {
    pub name: String,
    /// `IP:port` of each balancer's public listener.
    pub balancers: Vec<String>,
    /// Its `[[datacenter]]` (weight, location), when the topology has them.
    pub spec: Option<DatacenterSpec>,
    /// Its PostgreSQL servers (for the preference that follows the primary).
    pub databases: Vec<String>,
}

impl Datacentre {
    /// The one data centre of a topology without `[[datacenter]]` tables.
    pub fn local(balancers: Vec<String>) -> Self {
        Self {
            name: LOCAL_DATACENTRE.into(),
            balancers,
            spec: None,
            databases: Vec::new(),
        }
    }
}

/// `strata dns`'s configuration file (docs/dns.md) for `spec` and the data centres, in
/// preference order (after the one holding the primary `primary_file` names, if given). Zone, service and data centre names are letters, digits, dots, hyphens
/// and `@` (checked when read), and country and continent codes upper-case letters, so they
/// are quoted as they are.
pub fn config_text(
    spec: &DnsSpec,
    datacentres: &[Datacentre],
    primary_file: Option<&std::path::Path>,
) -> String {
    let quoted = |items: &[String]| {
        items
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!(
        "# Written by `strata up` from the topology's [dns] table and the balancers' addresses.\n\
         zone = \"{}\"\nservices = [{}]\nttl_secs = {}\npolicy = \"{}\"\n\n\
         [health]\npath = \"{HEALTH_PATH}\"\ninterval_ms = {}\ntimeout_ms = {}\nrise = {}\nfall = {}\n",
        spec.zone,
        quoted(&spec.services),
        spec.ttl_secs,
        spec.policy.as_str(),
        spec.interval_ms,
        spec.timeout_ms,
        spec.rise,
        spec.fall,
    );
    if let Some(file) = primary_file {
        // Before any table: a top-level key. The path is the deployment's own directory.
        text = text.replacen(
            "\n\n[health]",
            &format!(
                "\nprimary_file = {:?}\n\n[health]",
                file.display().to_string()
            ),
            1,
        );
    }
    for dc in datacentres {
        text.push_str(&format!(
            "\n[[datacenter]]\nname = \"{}\"\nbalancers = [{}]\n",
            dc.name,
            quoted(&dc.balancers)
        ));
        let Some(given) = &dc.spec else { continue };
        text.push_str(&format!("weight = {}\n", given.weight));
        if let Some((latitude, longitude)) = given.location {
            text.push_str(&format!(
                "latitude = {:?}\nlongitude = {:?}\n",
                latitude.0, longitude.0
            ));
        }
        if !given.countries.is_empty() {
            text.push_str(&format!("countries = [{}]\n", quoted(&given.countries)));
        }
        if !given.continents.is_empty() {
            text.push_str(&format!("continents = [{}]\n", quoted(&given.continents)));
        }
        if primary_file.is_some() && !dc.databases.is_empty() {
            text.push_str(&format!("databases = [{}]\n", quoted(&dc.databases)));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::DnsPolicy;

    #[test]
    fn the_configuration_file_is_one_strata_dns_accepts_as_planned() {
        let spec = DnsSpec {
            services: vec!["www".into(), "@".into(), "api.v1".into()],
            ttl_secs: 0,
            policy: DnsPolicy::Weighted,
            interval_ms: 200,
            fall: 1,
            ..DnsSpec::default()
        };
        let text = config_text(
            &spec,
            &[Datacentre::local(vec![
                "127.0.0.1:8080".into(),
                "127.0.10.2:8080".into(),
            ])],
            None,
        );
        let config =
            strata_dns::config::DnsConfig::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.zone.to_ascii(), "strata.test.");
        let services: Vec<String> = config.services.iter().map(|n| n.to_ascii()).collect();
        assert_eq!(
            services,
            ["www.strata.test.", "strata.test.", "api.v1.strata.test."]
        );
        assert_eq!(config.ttl, 0);
        assert_eq!(config.policy, strata_dns::config::Policy::Weighted);
        assert_eq!(config.health.path, HEALTH_PATH);
        assert_eq!(config.health.interval.as_millis(), 200);
        assert_eq!((config.health.rise, config.health.fall), (2, 1));
        assert_eq!(config.datacentres.len(), 1);
        assert_eq!(config.datacentres[0].name, LOCAL_DATACENTRE);
        let balancers: Vec<String> = config.datacentres[0]
            .balancers
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(balancers, ["127.0.0.1:8080", "127.0.10.2:8080"]);
    }
}
