//! Layered balancing as `strata status` shows it: the path a client takes through a deployment
//! with a DNS server — DNS (which names it answers, and with which addresses right now) → the
//! balancers it hands out (whether each is in its answers) → the API pool behind every
//! balancer. Collected by asking the DNS role itself, the way a client's resolver would.
//! With several data centres (`DIR/datacenters.json`, written by the plan) the path is shown
//! per data centre: DNS → that data centre's balancers → its own API pool, and which one holds
//! the PostgreSQL primary.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::roles::RoleKind;
use crate::state::DeploymentState;

/// One role on the path: its name and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub name: String,
    pub addr: String,
}

/// One balancer on the path, and whether the DNS server answers its address now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancerHop {
    pub hop: Hop,
    pub answered: bool,
}

/// DNS → balancers → API pool, as the DNS server answers now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayeredPath {
    pub dns: Hop,
    /// Each name it answers with balancers, and the addresses it answered (`None`: it did
    /// not answer).
    pub names: Vec<(String, Option<Vec<IpAddr>>)>,
    pub balancers: Vec<BalancerHop>,
    pub apis: Vec<Hop>,
    /// With `[[datacenter]]` tables: the same per data centre, in preference order.
    pub datacenters: Vec<DatacentrePath>,
}

/// One data centre's part of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatacentrePath {
    pub name: String,
    pub balancers: Vec<BalancerHop>,
    pub apis: Vec<Hop>,
    /// Its PostgreSQL servers.
    pub databases: Vec<String>,
    /// The one of them that is the primary now, if any.
    pub primary: Option<String>,
}

/// How long one DNS query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// The path of the deployment in `dir`, when it runs a DNS server; `primary` is the
/// PostgreSQL server that answered as the primary, if any.
pub async fn collect(
    dir: &Path,
    state: &DeploymentState,
    primary: Option<&str>,
) -> Option<LayeredPath> {
    let dns = state.roles.iter().find(|r| r.kind == RoleKind::Dns)?;
    let addr = dns.addrs.get(strata_dns::LISTENER)?.clone();
    let config =
        strata_dns::config::DnsConfig::from_file(&crate::plan::dns::config_path(dir, &dns.name))
            .ok();
    let services: Vec<String> = config
        .map(|c| c.services.iter().map(|n| n.to_ascii()).collect())
        .unwrap_or_default();
    let names: Vec<(String, Option<Vec<IpAddr>>)> = match addr.parse::<SocketAddr>() {
        Ok(server) => {
            let asked = services.clone();
            tokio::task::spawn_blocking(move || {
                asked
                    .into_iter()
                    .map(|name| {
                        let answer = strata_dns::probe::resolve(server, &name, QUERY_TIMEOUT);
                        (name, answer)
                    })
                    .collect()
            })
            .await
            .unwrap_or_default()
        }
        Err(_) => services.into_iter().map(|name| (name, None)).collect(),
    };
    let answered: Vec<IpAddr> = names
        .iter()
        .filter_map(|(_, a)| a.as_ref())
        .flatten()
        .copied()
        .collect();
    let hops = |kind: RoleKind| {
        state
            .roles
            .iter()
            .filter(move |r| r.kind == kind)
            .filter_map(|r| {
                Some(Hop {
                    name: r.name.clone(),
                    addr: r.addrs.get("http")?.clone(),
                })
            })
    };
    let balancers: Vec<BalancerHop> = hops(RoleKind::Lb)
        .map(|hop| BalancerHop {
            answered: hop
                .addr
                .parse::<SocketAddr>()
                .is_ok_and(|a| answered.contains(&a.ip())),
            hop,
        })
        .collect();
    let apis: Vec<Hop> = hops(RoleKind::Api).collect();
    let datacenters = crate::plan::datacenters::Layout::read(dir)
        .map(|layout| {
            layout
                .datacenters
                .into_iter()
                .map(|dc| DatacentrePath {
                    balancers: balancers
                        .iter()
                        .filter(|b| dc.balancers.contains(&b.hop.name))
                        .cloned()
                        .collect(),
                    apis: apis
                        .iter()
                        .filter(|a| dc.apis.contains(&a.name))
                        .cloned()
                        .collect(),
                    primary: primary
                        .filter(|p| dc.databases.iter().any(|d| d == p))
                        .map(String::from),
                    databases: dc.databases,
                    name: dc.name,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(LayeredPath {
        dns: Hop {
            name: dns.name.clone(),
            addr,
        },
        names,
        balancers,
        apis,
        datacenters,
    })
}

/// Balancers as the path shows them: `lb-1 127.0.0.1:8080 (answered)`.
fn balancers_text(balancers: &[BalancerHop]) -> String {
    balancers
        .iter()
        .map(|b| {
            format!(
                "{} {} ({})",
                b.hop.name,
                b.hop.addr,
                if b.answered {
                    "answered"
                } else {
                    "not answered"
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Roles as the path shows them: `api-1 127.0.0.1:40231`.
fn hops_text(hops: &[Hop]) -> String {
    hops.iter()
        .map(|a| format!("{} {}", a.name, a.addr))
        .collect::<Vec<_>>()
        .join(", ")
}

impl LayeredPath {
    /// The path as lines of text:
    ///
    /// ```text
    /// path: dns-1 127.0.0.1:41234 answers www.strata.test. with 127.0.0.1, 127.0.10.2
    ///   → balancers: lb-1 127.0.0.1:8080 (answered), lb-2 127.0.10.2:8080 (answered)
    ///   → API pool: api-1 127.0.0.1:40231, api-2 127.0.0.1:43807
    /// ```
    pub fn text(&self) -> String {
        let names: Vec<String> = self
            .names
            .iter()
            .map(|(name, answer)| match answer {
                Some(ips) if ips.is_empty() => format!("{name} with no address"),
                Some(ips) => format!(
                    "{name} with {}",
                    ips.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => format!("{name}: no answer"),
            })
            .collect();
        let mut text = format!(
            "path: {} {} answers {}\n",
            self.dns.name,
            self.dns.addr,
            if names.is_empty() {
                "nothing (its configuration is unreadable)".to_string()
            } else {
                names.join("; ")
            },
        );
        if self.datacenters.is_empty() {
            text.push_str(&format!(
                "  → balancers: {}\n  → API pool: {}\n",
                balancers_text(&self.balancers),
                hops_text(&self.apis)
            ));
        }
        for dc in &self.datacenters {
            let data: Vec<String> = dc
                .databases
                .iter()
                .map(|d| {
                    if dc.primary.as_ref() == Some(d) {
                        format!("{d} (primary)")
                    } else {
                        d.clone()
                    }
                })
                .collect();
            let data = data.join(", ");
            text.push_str(&format!(
                "  {}: {data}\n    → balancers: {}\n    → API pool: {}\n",
                dc.name,
                balancers_text(&dc.balancers),
                hops_text(&dc.apis)
            ));
        }
        text
    }

    /// The path as `strata status --json` shows it (`path`).
    pub fn json(&self) -> Value {
        json!({
            "dns": {
                "name": self.dns.name,
                "addr": self.dns.addr,
                "answers": self.names.iter().map(|(name, answer)| json!({
                    "name": name,
                    "addresses": answer.as_ref().map(|ips| ips.iter().map(ToString::to_string).collect::<Vec<_>>()),
                })).collect::<Vec<_>>(),
            },
            "balancers": self.balancers.iter().map(|b| json!({
                "name": b.hop.name, "addr": b.hop.addr, "answered": b.answered,
            })).collect::<Vec<_>>(),
            "apis": self.apis.iter().map(|a| json!({"name": a.name, "addr": a.addr})).collect::<Vec<_>>(),
            "datacenters": self.datacenters.iter().map(|dc| json!({
                "name": dc.name,
                "primary": dc.primary,
                "databases": dc.databases,
                "balancers": dc.balancers.iter().map(|b| json!({
                    "name": b.hop.name, "addr": b.hop.addr, "answered": b.answered,
                })).collect::<Vec<_>>(),
                "apis": dc.apis.iter().map(|a| json!({"name": a.name, "addr": a.addr})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_reads_from_dns_to_the_api_pool() {
        let hop = |name: &str, addr: &str| Hop {
            name: name.into(),
            addr: addr.into(),
        };
        let path = LayeredPath {
            dns: hop("dns-1", "127.0.0.1:5353"),
            names: vec![(
                "www.strata.test.".into(),
                Some(vec!["127.0.0.1".parse().expect("ip")]),
            )],
            balancers: vec![
                BalancerHop {
                    hop: hop("lb-1", "127.0.0.1:8080"),
                    answered: true,
                },
                BalancerHop {
                    hop: hop("lb-2", "127.0.10.2:8080"),
                    answered: false,
                },
            ],
            apis: vec![hop("api-1", "127.0.0.1:9001")],
            datacenters: Vec::new(),
        };
        assert_eq!(
            path.text(),
            "path: dns-1 127.0.0.1:5353 answers www.strata.test. with 127.0.0.1\n  \
             → balancers: lb-1 127.0.0.1:8080 (answered), lb-2 127.0.10.2:8080 (not answered)\n  \
             → API pool: api-1 127.0.0.1:9001\n"
        );
        let json = path.json();
        assert_eq!(json["balancers"][1]["answered"], false);
        assert_eq!(json["dns"]["answers"][0]["addresses"][0], "127.0.0.1");
    }

    #[test]
    fn with_data_centres_the_path_is_shown_per_data_centre_with_the_primary() {
        let hop = |name: &str, addr: &str| Hop {
            name: name.into(),
            addr: addr.into(),
        };
        let balancer = |name: &str, addr: &str, answered| BalancerHop {
            hop: hop(name, addr),
            answered,
        };
        let path = LayeredPath {
            dns: hop("dns-1", "127.0.0.1:5353"),
            names: vec![(
                "www.strata.test.".into(),
                Some(vec!["127.0.12.1".parse().expect("ip")]),
            )],
            balancers: Vec::new(),
            apis: Vec::new(),
            datacenters: vec![
                DatacentrePath {
                    name: "us-east".into(),
                    balancers: vec![balancer("us-east-lb-1", "127.0.0.1:8080", false)],
                    apis: vec![hop("us-east-api-1", "127.0.0.1:9001")],
                    databases: vec!["pg-1".into(), "pg-2".into()],
                    primary: Some("pg-1".into()),
                },
                DatacentrePath {
                    name: "us-west".into(),
                    balancers: vec![balancer("us-west-lb-1", "127.0.12.1:8080", true)],
                    apis: vec![hop("us-west-api-1", "127.0.0.1:9002")],
                    databases: vec!["pg-3".into()],
                    primary: None,
                },
            ],
        };
        assert_eq!(
            path.text(),
            "path: dns-1 127.0.0.1:5353 answers www.strata.test. with 127.0.12.1\n  \
             us-east: pg-1 (primary), pg-2\n    \
             → balancers: us-east-lb-1 127.0.0.1:8080 (not answered)\n    \
             → API pool: us-east-api-1 127.0.0.1:9001\n  \
             us-west: pg-3\n    \
             → balancers: us-west-lb-1 127.0.12.1:8080 (answered)\n    \
             → API pool: us-west-api-1 127.0.0.1:9002\n"
        );
        let json = path.json();
        assert_eq!(json["datacenters"][0]["primary"], "pg-1");
        assert_eq!(json["datacenters"][1]["balancers"][0]["answered"], true);
    }
}
