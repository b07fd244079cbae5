//! Several data centres (`[[datacenter]]`): what each one runs, what its roles are named, where
//! its balancers listen, and the delaying relays that carry its traffic to another one.
//!
//! - **Names.** A data centre's stateless roles carry its name: `us-east-lb-1`,
//!   `us-west-api-2`. The PostgreSQL servers keep the plain names of one replicated cluster,
//!   `pg-1` … numbered across the data centres in order (the first data centre's first is the
//!   primary), so the controller, `strata db rejoin` and the drills work on them unchanged;
//!   [`Layout`] says which data centre runs which.
//! - **Addresses.** DNS answers carry addresses only, so every balancer listens on one port (the
//!   public port) at an address of its own: the first data centre's first balancer on
//!   127.0.0.1 (`curl localhost:PORT` still works), balancer `i` of data centre `d` (0-based)
//!   on 127.0.(11 + d).i otherwise ([`balancer_ip`]).
//! - **Links.** Every wire the plan knows from a role of data centre B to a PostgreSQL server of
//!   data centre A goes through a relay in B (`us-west-relay-pg-1`: `strata relay` with the
//!   link's one-way delay each way), so an API server in B pays the round trip of the link on
//!   every exchange with the primary in A. Its reads go to the replicas of its own data centre.
//!   The PostgreSQL servers of B replicate through the same relays: each is given its routes
//!   to the servers of the other data centres ([`database_routes`]), which it follows its
//!   primary through, and so does the controller when it re-points a standby.
//! - **Caches.** With `[cache] engine = "redis" | "memcached"` each data centre runs its own
//!   `nodes` shared cache servers (`us-east-cache-1` …, planned by `cache.rs`), which only its
//!   own API servers use: cache traffic never crosses a link, so no relay is planned for them
//!   and [`database_wires`] knows nothing of them. [`Layout`] lists them with their data
//!   centre, so `strata datacenter kill` takes them down with it.
//! - **Edges.** With `[edge]` each data centre runs `count` edges (`us-east-edge-1` …, and
//!   `us-east-edge-shield` with `shield = true`) in front of its own first balancer, planned by
//!   `edge.rs`. They take the public entry: the first data centre's first edge listens on
//!   127.0.0.1 at the public port, every other at [`edge_ip`] on the same port, and DNS hands
//!   out a data centre's edges instead of its balancers. A write purges every edge of every
//!   data centre (the purge client reads them all from the state file).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_link::RelayArgs;

use super::{Plan, PlanContext, RoleSpec, Setup, Wiring};
use crate::roles::{RoleCommand, RoleKind};
use crate::topology::Topology;

/// The file `strata status` reads the data centres from: `DIR/datacenters.json`.
pub const LAYOUT_FILE: &str = "datacenters.json";

/// One data centre's roles, as the layout file lists them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DatacentreRoles {
    pub name: String,
    pub balancers: Vec<String>,
    pub apis: Vec<String>,
    pub databases: Vec<String>,
    pub relays: Vec<String>,
    /// Its shared cache servers (`us-east-cache-1` …; none without `[cache] engine = "redis" |
    /// "memcached"`, nor in a layout file written before data centres had them).
    #[serde(default)]
    pub caches: Vec<String>,
    /// Its edges clients reach (`us-east-edge-1` …; none without `[edge]`), in front of its
    /// shield or its first balancer: DNS hands them out instead of its balancers.
    #[serde(default)]
    pub edges: Vec<String>,
    /// Its shield edge (`us-east-edge-shield`), with `[edge] shield = true`.
    #[serde(default)]
    pub shield: Option<String>,
}

/// Which data centre runs which role, in preference order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Layout {
    pub datacenters: Vec<DatacentreRoles>,
}

impl Layout {
    /// The layout of `topology` (empty without `[[datacenter]]` tables).
    pub fn of(topology: &Topology) -> Self {
        let databases = database_names(topology);
        // Named as `cache.rs` plans them (which names them with [`role_name`] too).
        let caches = topology.cache.shared.map_or(0, |(_, n)| u16::from(n));
        let datacenters = topology
            .datacenters
            .iter()
            .enumerate()
            .map(|(d, dc)| {
                let local: Vec<String> = databases
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| topology.datacentre_of_database(*k) == Some(d))
                    .map(|(_, n)| n.clone())
                    .collect();
                DatacentreRoles {
                    name: dc.name.clone(),
                    balancers: (1..=dc.lb).map(|i| role_name(&dc.name, "lb", i)).collect(),
                    apis: (1..=dc.api)
                        .map(|i| role_name(&dc.name, "api", i))
                        .collect(),
                    relays: databases
                        .iter()
                        .filter(|n| !local.contains(n))
                        .map(|n| relay_name(&dc.name, n))
                        .collect(),
                    databases: local,
                    caches: (1..=caches)
                        .map(|i| role_name(&dc.name, "cache", i))
                        .collect(),
                    edges: topology.edge.as_ref().map_or_else(Vec::new, |edge| {
                        (1..=edge.count)
                            .map(|i| role_name(&dc.name, "edge", i))
                            .collect()
                    }),
                    shield: topology
                        .edge
                        .as_ref()
                        .filter(|edge| edge.shield)
                        .map(|_| shield_name(&dc.name)),
                }
            })
            .collect();
        Layout { datacenters }
    }

    /// The layout file of the deployment in `dir`, when it has one.
    pub fn read(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(layout_path(dir)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The data centre that runs `role`.
    pub fn datacentre_of(&self, role: &str) -> Option<&DatacentreRoles> {
        self.datacenters.iter().find(|dc| {
            dc.balancers
                .iter()
                .chain(&dc.apis)
                .chain(&dc.databases)
                .chain(&dc.relays)
                .chain(&dc.caches)
                .chain(&dc.edges)
                .chain(&dc.shield)
                .any(|r| r == role)
        })
    }

    /// The two data centres relay `relay` joins: its own, and its target server's.
    pub fn link_of(&self, relay: &str) -> Option<(&DatacentreRoles, &DatacentreRoles)> {
        let (_, target) = relay.rsplit_once("-relay-")?;
        let here = self
            .datacenters
            .iter()
            .find(|dc| dc.relays.iter().any(|r| r == relay))?;
        let there = self
            .datacenters
            .iter()
            .find(|dc| dc.databases.iter().any(|d| d == target))?;
        Some((here, there))
    }

    /// The relays on the link between data centres `a` and `b`: each side's relays to the
    /// other's servers.
    pub fn relays_between(&self, a: &str, b: &str) -> Vec<&String> {
        self.datacenters
            .iter()
            .flat_map(|dc| &dc.relays)
            .filter(|relay| {
                self.link_of(relay).is_some_and(|(here, there)| {
                    (here.name == a && there.name == b) || (here.name == b && there.name == a)
                })
            })
            .collect()
    }
}

/// `DIR/datacenters.json`.
pub fn layout_path(dir: &Path) -> PathBuf {
    dir.join(LAYOUT_FILE)
}

/// A data centre's role of `kind` number `i`: `us-east-api-2`.
pub fn role_name(datacentre: &str, kind: &str, i: u16) -> String {
    format!("{datacentre}-{kind}-{i}")
}

/// A data centre's shield edge: `us-east-edge-shield`.
pub fn shield_name(datacentre: &str) -> String {
    format!("{datacentre}-edge-shield")
}

/// The directory of the cut links' files.
pub const CUT_DIR: &str = "cut";

/// The file that cuts the link between data centres `a` and `b` while it exists (either
/// order): `DIR/cut/us-east+us-west` (`+` is in no data centre's name). Every relay on that link
/// is given it.
pub fn cut_file(dir: &Path, a: &str, b: &str) -> PathBuf {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    dir.join(CUT_DIR).join(format!("{first}+{second}"))
}

/// Cuts the link whose file is `file` ([`cut_file`]): its relays hold everything from the
/// next time they look. `by` is written in the file (who cut it).
pub fn cut_link(file: &Path, by: &str) -> std::io::Result<()> {
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(file, format!("cut by {by}\n"))
}

/// Joins the link whose file is `file` again; `false` when it was not cut.
pub fn heal_link(file: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(file) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The relay in `datacentre` to the server `target` of another one: `us-west-relay-pg-1`.
pub fn relay_name(datacentre: &str, target: &str) -> String {
    format!("{datacentre}-relay-{target}")
}

/// The PostgreSQL servers' names, in plan order (`pg-1` …).
fn database_names(topology: &Topology) -> Vec<String> {
    (1..=topology.database_nodes())
        .map(|i| crate::groups::server_name(None, i))
        .collect()
}

/// Where balancer `i` (1-based) of data centre `d` (0-based) listens: 127.0.0.1 for the first
/// data centre's first (the public entry), 127.0.(11 + d).i for every other.
pub fn balancer_ip(d: usize, i: u16) -> IpAddr {
    if d == 0 && i <= 1 {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        let block = u8::try_from(11 + d).unwrap_or(u8::MAX);
        IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            block,
            u8::try_from(i).unwrap_or(u8::MAX),
        ))
    }
}

/// Where edge `i` (1-based) of data centre `d` (0-based) listens: 127.0.0.1 for the first data
/// centre's first (the public entry), 127.0.(11 + d).(100 + i) for every other — beside that
/// data centre's balancers, which then listen on another port.
pub fn edge_ip(d: usize, i: u16) -> IpAddr {
    if d == 0 && i <= 1 {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        let block = u8::try_from(11 + d).unwrap_or(u8::MAX);
        let host = u8::try_from(100 + u32::from(i)).unwrap_or(u8::MAX);
        IpAddr::V4(Ipv4Addr::new(127, 0, block, host))
    }
}

/// The layout file, written before any role starts. (The relays are planned with the
/// database servers: [`plan_relays_to`].)
pub fn plan(topology: &Topology, ctx: &PlanContext, plan: &mut Plan) {
    if !topology.has_datacentres() {
        return;
    }
    let layout = Layout::of(topology);
    let (file, text) = (
        layout_path(&ctx.dir),
        serde_json::to_string_pretty(&layout).unwrap_or_default(),
    );
    plan.setup
        .push(Setup::new("write the data centres' layout", move || {
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&file, &text)?;
            Ok(())
        }));
}

/// The relays to PostgreSQL server `k` (0-based, plan order) from every other data centre,
/// each with its link's delay; planned right after the server, before the servers and roles
/// that reach it through them.
pub fn plan_relays_to(topology: &Topology, ctx: &PlanContext, k: usize, plan: &mut Plan) {
    let (Some(home), target) = (
        topology.datacentre_of_database(k),
        crate::groups::server_name(None, k + 1),
    ) else {
        return;
    };
    for (d, dc) in topology.datacenters.iter().enumerate() {
        if d == home {
            continue;
        }
        let delay = topology.one_way_ms(&dc.name, &topology.datacenters[home].name);
        let cut = cut_file(&ctx.dir, &dc.name, &topology.datacenters[home].name);
        let name = relay_name(&dc.name, &target);
        let (role_name, target) = (name.clone(), target.clone());
        plan.roles.push(RoleSpec::new(
            RoleKind::Relay,
            name,
            strata_link::LISTENER,
            vec![target.clone()],
            move |w: &Wiring| {
                let mut args = RelayArgs::new(w.addr(&target, super::POSTGRES_LISTENER)?, delay);
                args.listen = w.listen();
                args.name = role_name.clone();
                args.cut_file = Some(cut.clone());
                args.exit_on_stdin_eof = true;
                Ok(RoleCommand::Relay(args))
            },
        ));
    }
}

/// The routes of the PostgreSQL servers of one data centre to those of the others, through
/// its relays: (from, to, relay), for `strata postgres` and `strata control`.
pub fn database_routes(topology: &Topology) -> Vec<(String, String, String)> {
    let names = database_names(topology);
    let mut routes = Vec::new();
    for (s, from) in names.iter().enumerate() {
        for (p, to) in names.iter().enumerate() {
            let (Some(ds), Some(dp)) = (
                topology.datacentre_of_database(s),
                topology.datacentre_of_database(p),
            ) else {
                continue;
            };
            if ds != dp {
                let relay = relay_name(&topology.datacenters[ds].name, to);
                routes.push((from.clone(), to.clone(), relay));
            }
        }
    }
    routes
}

/// How a role of data centre `d` reaches every PostgreSQL server, in plan order: its own data
/// centre's directly, the others' through its relays. (role to wait for, listener) pairs.
pub fn database_wires(topology: &Topology, d: usize) -> Vec<(String, &'static str, bool)> {
    let dc = &topology.datacenters[d].name;
    database_names(topology)
        .into_iter()
        .enumerate()
        .map(|(k, pg)| {
            if topology.datacentre_of_database(k) == Some(d) {
                (pg, super::POSTGRES_LISTENER, true)
            } else {
                (relay_name(dc, &pg), strata_link::LISTENER, false)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balancers_of_each_data_centre_have_addresses_of_their_own() {
        assert_eq!(balancer_ip(0, 1).to_string(), "127.0.0.1");
        assert_eq!(balancer_ip(0, 2).to_string(), "127.0.11.2");
        assert_eq!(balancer_ip(1, 1).to_string(), "127.0.12.1");
        assert_eq!(balancer_ip(2, 3).to_string(), "127.0.13.3");
    }
}
