//! Layered balancing as `strata status` shows it: the path a client takes through a deployment
//! with a DNS server — DNS (which names it answers, and with which addresses right now) → the
//! balancers it hands out (whether each is in its answers) → the API pool behind every
//! balancer; with edges, DNS hands out the edges instead: DNS → edges → the shield → the
//! balancers → the API pool. Collected by asking the DNS role itself, the way a client's resolver would.
//! With several data centres (`DIR/datacenters.json`, written by the plan) the path is shown
//! per data centre: DNS → that data centre's balancers (or its edges, shield and balancers)
//! → its own API pool, and which one holds the PostgreSQL primary.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use strata_store::postgres::StandbyLag;

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
    /// With `[edge]`: the edges clients reach, which DNS hands out instead of the balancers
    /// (whether each is in its answers), and the shield behind them, if any.
    pub edges: Vec<BalancerHop>,
    pub shield: Option<Hop>,
    pub apis: Vec<Hop>,
    /// With `[[datacenter]]` tables: the same per data centre, in preference order.
    pub datacenters: Vec<DatacentrePath>,
}

/// One data centre's part of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatacentrePath {
    pub name: String,
    /// With `[edge]`: its edges, which DNS hands out for it, and its shield.
    pub edges: Vec<BalancerHop>,
    pub shield: Option<Hop>,
    pub balancers: Vec<BalancerHop>,
    pub apis: Vec<Hop>,
    /// Its PostgreSQL servers.
    pub databases: Vec<String>,
    /// The one of them that is the primary now, if any.
    pub primary: Option<String>,
    /// For a data centre without the primary, when the primary answered: how far its servers
    /// are behind it.
    pub replication: Option<Replication>,
    /// The data centres its links to are cut (`strata datacenter cut`).
    pub cut_from: Vec<String>,
}

/// How far a data centre without the primary is behind it: what a failover to it would lose
/// under asynchronous commit if the primary's data centre failed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    /// The primary.
    pub primary: String,
    /// The data centre holding it.
    pub primary_datacenter: String,
    /// Its server furthest ahead, streaming from the primary; `None` when none of its servers
    /// streams (down, or the link cut).
    pub standby: Option<String>,
    /// WAL the primary has flushed (and may have acknowledged) that `standby` has not written.
    pub behind_bytes: u64,
    /// How long the newest WAL took to reach `standby` (PostgreSQL's `write_lag`); `None`
    /// while it is caught up.
    pub lag: Option<Duration>,
    /// Whether a failover may promote a server with acknowledged writes missing (`commit =
    /// "async"`); `None` when the controller did not say.
    pub loss_possible: Option<bool>,
}

impl Replication {
    /// `pg-2 is 1234 B (14 ms) behind pg-1: lost if us-east failed now (commit = "async")`.
    fn text(&self) -> String {
        let state = match &self.standby {
            None => format!(
                "no server here streams from {}: a failover here would lose every write since it stopped",
                self.primary
            ),
            Some(standby) => {
                let lag = self
                    .lag
                    .map(|l| format!(" ({} ms)", l.as_millis()))
                    .unwrap_or_default();
                if self.behind_bytes == 0 && self.lag.is_none() {
                    format!("{standby} is caught up with {}", self.primary)
                } else {
                    format!(
                        "{standby} is {} B{lag} behind {}: what a failure of {} now would lose",
                        self.behind_bytes, self.primary, self.primary_datacenter
                    )
                }
            }
        };
        match self.loss_possible {
            Some(true) => format!("{state} (commit = \"async\")"),
            Some(false) => format!(
                "{state} (commit waits for a standby: no failover loses an acknowledged write)"
            ),
            None => state,
        }
    }

    fn json(&self) -> Value {
        json!({
            "primary": self.primary,
            "primaryDatacenter": self.primary_datacenter,
            "standby": self.standby,
            "streaming": self.standby.is_some(),
            "behindBytes": self.behind_bytes,
            "lagMs": self.lag.map(|l| l.as_secs_f64() * 1000.0),
            "lossPossible": self.loss_possible,
        })
    }
}

/// What the data tier says right now, for the path: the primary, the standbys streaming from
/// it, and whether commit is asynchronous.
#[derive(Debug, Clone, Copy, Default)]
pub struct DataView<'a> {
    pub primary: Option<&'a str>,
    /// `None` when the primary was not asked (or did not answer).
    pub standbys: Option<&'a [StandbyLag]>,
    pub loss_possible: Option<bool>,
}

/// How long one DNS query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// The path of the deployment in `dir`, when it runs a DNS server; `data` is what the data
/// tier answered (the primary, if any, and its standbys).
pub async fn collect(
    dir: &Path,
    state: &DeploymentState,
    data: DataView<'_>,
) -> Option<LayeredPath> {
    let primary = data.primary;
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
    let in_answers = |hop: Hop| BalancerHop {
        answered: hop
            .addr
            .parse::<SocketAddr>()
            .is_ok_and(|a| answered.contains(&a.ip())),
        hop,
    };
    let (shields, edges): (Vec<Hop>, Vec<Hop>) =
        hops(RoleKind::Edge).partition(|h| crate::plan::edge::is_shield(&h.name));
    let edges: Vec<BalancerHop> = edges.into_iter().map(in_answers).collect();
    // With edges DNS hands them out, not the balancers behind them.
    let balancers: Vec<BalancerHop> = hops(RoleKind::Lb)
        .map(|hop| match edges.is_empty() {
            true => in_answers(hop),
            false => BalancerHop {
                hop,
                answered: false,
            },
        })
        .collect();
    let apis: Vec<Hop> = hops(RoleKind::Api).collect();
    let datacenters = crate::plan::datacenters::Layout::read(dir)
        .map(|layout| {
            let primary_datacenter = primary.and_then(|p| {
                layout
                    .datacenters
                    .iter()
                    .find(|dc| dc.databases.iter().any(|d| d == p))
                    .map(|dc| dc.name.clone())
            });
            let names: Vec<String> = layout.datacenters.iter().map(|d| d.name.clone()).collect();
            layout
                .datacenters
                .into_iter()
                .map(|dc| DatacentrePath {
                    cut_from: names
                        .iter()
                        .filter(|other| {
                            **other != dc.name
                                && crate::plan::datacenters::cut_file(dir, &dc.name, other).exists()
                        })
                        .cloned()
                        .collect(),
                    replication: match (primary, &primary_datacenter, data.standbys) {
                        (Some(p), Some(home), Some(standbys)) if *home != dc.name => Some(
                            replication_of(p, home, &dc.databases, standbys, data.loss_possible),
                        ),
                        _ => None,
                    },
                    edges: edges
                        .iter()
                        .filter(|e| dc.edges.contains(&e.hop.name))
                        .cloned()
                        .collect(),
                    shield: shields
                        .iter()
                        .find(|h| dc.shield.as_ref() == Some(&h.name))
                        .cloned(),
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
        edges,
        shield: shields.into_iter().next(),
        apis,
        datacenters,
    })
}

/// How far the servers `databases` (of a data centre without the primary) are behind
/// `primary`: the one of them furthest ahead among the `standbys` streaming from it.
fn replication_of(
    primary: &str,
    primary_datacenter: &str,
    databases: &[String],
    standbys: &[StandbyLag],
    loss_possible: Option<bool>,
) -> Replication {
    let best = standbys
        .iter()
        .filter(|s| databases.contains(&s.name))
        .min_by_key(|s| s.behind_bytes);
    Replication {
        primary: primary.to_string(),
        primary_datacenter: primary_datacenter.to_string(),
        standby: best.map(|s| s.name.clone()),
        behind_bytes: best.map_or(0, |s| s.behind_bytes),
        lag: best.and_then(|s| s.lag),
        loss_possible,
    }
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
/// The path from what DNS hands out to the API pool, a line a layer, each after `indent`:
/// the edges, the shield and the balancers behind them, or the balancers DNS hands out.
fn front_text(
    indent: &str,
    edges: &[BalancerHop],
    shield: Option<&Hop>,
    balancers: &[BalancerHop],
    apis: &[Hop],
) -> String {
    let mut text = String::new();
    if edges.is_empty() {
        text.push_str(&format!(
            "{indent}→ balancers: {}\n",
            balancers_text(balancers)
        ));
    } else {
        text.push_str(&format!("{indent}→ edges: {}\n", balancers_text(edges)));
        if let Some(shield) = shield {
            text.push_str(&format!(
                "{indent}→ shield: {} {}\n",
                shield.name, shield.addr
            ));
        }
        if !balancers.is_empty() {
            let hops: Vec<Hop> = balancers.iter().map(|b| b.hop.clone()).collect();
            text.push_str(&format!("{indent}→ balancers: {}\n", hops_text(&hops)));
        }
    }
    text.push_str(&format!("{indent}→ API pool: {}\n", hops_text(apis)));
    text
}

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
            text.push_str(&front_text(
                "  ",
                &self.edges,
                self.shield.as_ref(),
                &self.balancers,
                &self.apis,
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
            text.push_str(&format!("  {}: {data}\n", dc.name));
            if let Some(replication) = &dc.replication {
                text.push_str(&format!("    replication: {}\n", replication.text()));
            }
            for other in &dc.cut_from {
                text.push_str(&format!(
                    "    link to {other}: CUT (`strata datacenter heal {} {other}` joins it)\n",
                    dc.name
                ));
            }
            text.push_str(&front_text(
                "    ",
                &dc.edges,
                dc.shield.as_ref(),
                &dc.balancers,
                &dc.apis,
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
            "edges": self.edges.iter().map(|b| json!({
                "name": b.hop.name, "addr": b.hop.addr, "answered": b.answered,
            })).collect::<Vec<_>>(),
            "shield": self.shield.as_ref().map(|s| json!({"name": s.name, "addr": s.addr})),
            "apis": self.apis.iter().map(|a| json!({"name": a.name, "addr": a.addr})).collect::<Vec<_>>(),
            "datacenters": self.datacenters.iter().map(|dc| json!({
                "name": dc.name,
                "primary": dc.primary,
                "databases": dc.databases,
                "replication": dc.replication.as_ref().map(Replication::json),
                "cutFrom": dc.cut_from,
                "edges": dc.edges.iter().map(|b| json!({
                    "name": b.hop.name, "addr": b.hop.addr, "answered": b.answered,
                })).collect::<Vec<_>>(),
                "shield": dc.shield.as_ref().map(|s| json!({"name": s.name, "addr": s.addr})),
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

    fn hop(name: &str, addr: &str) -> Hop {
        Hop {
            name: name.into(),
            addr: addr.into(),
        }
    }

    fn balancer(name: &str, addr: &str, answered: bool) -> BalancerHop {
        BalancerHop {
            hop: hop(name, addr),
            answered,
        }
    }

    #[test]
    fn the_path_reads_from_dns_to_the_api_pool() {
        let path = LayeredPath {
            dns: hop("dns-1", "127.0.0.1:5353"),
            names: vec![(
                "www.strata.test.".into(),
                Some(vec!["127.0.0.1".parse().expect("ip")]),
            )],
            balancers: vec![
                balancer("lb-1", "127.0.0.1:8080", true),
                balancer("lb-2", "127.0.10.2:8080", false),
            ],
            edges: Vec::new(),
            shield: None,
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
    fn with_edges_the_path_reads_from_dns_through_the_edges_it_answers() {
        let path = LayeredPath {
            dns: hop("dns-1", "127.0.0.1:5353"),
            names: vec![(
                "www.strata.test.".into(),
                Some(vec!["127.0.0.1".parse().expect("ip")]),
            )],
            balancers: vec![balancer("lb-1", "127.0.0.1:41000", false)],
            edges: vec![
                balancer("edge-1", "127.0.0.1:8080", true),
                balancer("edge-2", "127.0.9.2:8080", false),
            ],
            shield: Some(hop("edge-shield", "127.0.0.1:42000")),
            apis: vec![hop("api-1", "127.0.0.1:9001")],
            datacenters: Vec::new(),
        };
        assert_eq!(
            path.text(),
            "path: dns-1 127.0.0.1:5353 answers www.strata.test. with 127.0.0.1\n  \
             → edges: edge-1 127.0.0.1:8080 (answered), edge-2 127.0.9.2:8080 (not answered)\n  \
             → shield: edge-shield 127.0.0.1:42000\n  \
             → balancers: lb-1 127.0.0.1:41000\n  \
             → API pool: api-1 127.0.0.1:9001\n"
        );
        let json = path.json();
        assert_eq!(json["edges"][0]["answered"], true);
        assert_eq!(json["edges"][1]["answered"], false);
        assert_eq!(json["shield"]["name"], "edge-shield");
    }

    #[test]
    fn with_data_centres_the_path_is_shown_per_data_centre_with_the_primary() {
        let path = LayeredPath {
            dns: hop("dns-1", "127.0.0.1:5353"),
            names: vec![(
                "www.strata.test.".into(),
                Some(vec!["127.0.12.1".parse().expect("ip")]),
            )],
            balancers: Vec::new(),
            edges: Vec::new(),
            shield: None,
            apis: Vec::new(),
            datacenters: vec![
                DatacentrePath {
                    name: "us-east".into(),
                    edges: Vec::new(),
                    shield: None,
                    balancers: vec![balancer("us-east-lb-1", "127.0.0.1:8080", false)],
                    apis: vec![hop("us-east-api-1", "127.0.0.1:9001")],
                    databases: vec!["pg-1".into(), "pg-2".into()],
                    primary: Some("pg-1".into()),
                    replication: None,
                    cut_from: Vec::new(),
                },
                DatacentrePath {
                    name: "us-west".into(),
                    edges: Vec::new(),
                    shield: None,
                    balancers: vec![balancer("us-west-lb-1", "127.0.12.1:8080", true)],
                    apis: vec![hop("us-west-api-1", "127.0.0.1:9002")],
                    databases: vec!["pg-3".into()],
                    primary: None,
                    replication: Some(replication_of(
                        "pg-1",
                        "us-east",
                        &["pg-3".into()],
                        &[
                            StandbyLag {
                                name: "pg-2".into(),
                                behind_bytes: 0,
                                lag: None,
                            },
                            StandbyLag {
                                name: "pg-3".into(),
                                behind_bytes: 1234,
                                lag: Some(Duration::from_millis(14)),
                            },
                        ],
                        Some(true),
                    )),
                    cut_from: vec!["us-east".into()],
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
             replication: pg-3 is 1234 B (14 ms) behind pg-1: what a failure of us-east now \
             would lose (commit = \"async\")\n    \
             link to us-east: CUT (`strata datacenter heal us-west us-east` joins it)\n    \
             → balancers: us-west-lb-1 127.0.12.1:8080 (answered)\n    \
             → API pool: us-west-api-1 127.0.0.1:9002\n"
        );
        let json = path.json();
        assert_eq!(json["datacenters"][0]["primary"], "pg-1");
        assert_eq!(json["datacenters"][1]["balancers"][0]["answered"], true);
        assert_eq!(json["datacenters"][1]["replication"]["behindBytes"], 1234);
        assert_eq!(json["datacenters"][1]["replication"]["streaming"], true);
        assert!(json["datacenters"][0]["replication"].is_null());
        assert_eq!(json["datacenters"][1]["cutFrom"][0], "us-east");
    }

    #[test]
    fn with_edges_in_each_data_centre_dns_hands_out_each_ones_edges() {
        let dc = |name: &str, edge: &str, answered: bool| DatacentrePath {
            name: name.into(),
            edges: vec![balancer(&format!("{name}-edge-1"), edge, answered)],
            shield: Some(hop(&format!("{name}-edge-shield"), "127.0.0.1:42000")),
            balancers: vec![balancer(&format!("{name}-lb-1"), "127.0.0.1:41000", false)],
            apis: vec![hop(&format!("{name}-api-1"), "127.0.0.1:9001")],
            databases: Vec::new(),
            primary: None,
            replication: None,
            cut_from: Vec::new(),
        };
        let path = LayeredPath {
            dns: hop("dns-1", "127.0.0.1:5353"),
            names: vec![(
                "www.strata.test.".into(),
                Some(vec!["127.0.12.101".parse().expect("ip")]),
            )],
            balancers: Vec::new(),
            edges: Vec::new(),
            shield: None,
            apis: Vec::new(),
            datacenters: vec![
                dc("us-east", "127.0.0.1:8080", false),
                dc("us-west", "127.0.12.101:8080", true),
            ],
        };
        let text = path.text();
        assert!(
            text.contains(
                "  us-west: \n    \
                 → edges: us-west-edge-1 127.0.12.101:8080 (answered)\n    \
                 → shield: us-west-edge-shield 127.0.0.1:42000\n    \
                 → balancers: us-west-lb-1 127.0.0.1:41000\n    \
                 → API pool: us-west-api-1 127.0.0.1:9001\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("→ edges: us-east-edge-1 127.0.0.1:8080 (not answered)"),
            "{text}"
        );
        let json = path.json();
        assert_eq!(json["datacenters"][1]["edges"][0]["answered"], true);
        assert_eq!(
            json["datacenters"][1]["shield"]["name"],
            "us-west-edge-shield"
        );
    }

    #[test]
    fn a_data_centre_that_streams_nothing_is_said_to_lose_everything_since() {
        let cut = replication_of(
            "pg-1",
            "us-east",
            &["pg-2".into()],
            &[StandbyLag {
                name: "pg-9".into(),
                behind_bytes: 0,
                lag: None,
            }],
            Some(true),
        );
        assert_eq!(cut.standby, None);
        assert!(
            cut.text().contains("no server here streams from pg-1"),
            "{}",
            cut.text()
        );
        let caught_up = replication_of(
            "pg-1",
            "us-east",
            &["pg-2".into()],
            &[StandbyLag {
                name: "pg-2".into(),
                behind_bytes: 0,
                lag: None,
            }],
            Some(false),
        );
        assert_eq!(
            caught_up.text(),
            "pg-2 is caught up with pg-1 (commit waits for a standby: no failover loses an \
             acknowledged write)"
        );
    }
}
