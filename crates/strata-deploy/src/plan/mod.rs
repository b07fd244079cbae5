//! The plan: what a topology compiles to before anything starts — a small DAG of role specs.
//!
//! Each [`RoleSpec`] has a name (`pg-2`, `api-1`, `lb-1`), a kind, the roles it depends on,
//! the port it asks for at its first start, and a builder for its typed command
//! ([`RoleCommand`]). Builders take the addresses the roles it depends on announced
//! ([`Wiring`]), because roles bind port 0 and report where they listen: a replica learns its
//! primary's port, the balancer its backends'. The supervisor starts a role once every role it
//! depends on is ready, restarts it with the same wiring on the port it got, and stops roles in
//! the reverse order.
//!
//! One file per tier builds its roles from its topology section: [`control`] (etcd members
//! and the controllers), [`data`] (PostgreSQL servers), [`cache`] (shared cache servers),
//! [`sessions`] (the session store), [`api`], [`lb`] and [`dns`] (the DNS server in front of
//! the balancers); [`datacenters`] names the roles of each data centre and plans the relays
//! between them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::argv::{self, Invocation};
use crate::roles::{RoleCommand, RoleKind};
use crate::topology::Topology;

pub mod api;
pub mod cache;
pub mod control;
pub mod data;
pub mod datacenters;
pub mod dns;
pub mod edge;
pub mod lb;
pub mod observe;
pub mod queue;
pub mod sessions;
pub mod workers;

/// The listener every PostgreSQL role announces (and its dependents look up).
pub const POSTGRES_LISTENER: &str = "postgres";

/// The address the balancer connects to the API servers from; they trust it, and only it, to
/// name the client in `X-Forwarded-For`. On Linux all of 127.0.0.0/8 is loopback, so the
/// balancer has an address of its own and a local process talking to an API port from
/// 127.0.0.1 cannot pose as it. Elsewhere (macOS configures 127.0.0.1 alone) it is 127.0.0.1.
pub const BALANCER_SOURCE: std::net::IpAddr = if cfg!(target_os = "linux") {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2))
} else {
    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
};

/// Addresses the ready roles announced: role name → listener name → `ip:port`.
pub type Announced = BTreeMap<String, BTreeMap<String, String>>;

/// What a role's builder gets: the port it listens on and what its dependencies announced.
#[derive(Debug, Clone, Copy)]
pub struct Wiring<'a> {
    /// The port this role listens on (0 = any free one).
    pub port: u16,
    pub announced: &'a Announced,
}

impl Wiring<'_> {
    /// `127.0.0.1:<port>`: where the role listens.
    pub fn listen(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The address `role` announced for `listener`.
    pub fn addr(&self, role: &str, listener: &str) -> Result<SocketAddr, PlanError> {
        self.announced
            .get(role)
            .and_then(|addrs| addrs.get(listener))
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| PlanError::NotAnnounced {
                role: role.to_string(),
                listener: listener.to_string(),
            })
    }
}

/// Why a role's command could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{role} has not announced a {listener} address")]
    NotAnnounced { role: String, listener: String },
    #[error("cannot render the command line of {role}: {source}")]
    Render {
        role: String,
        source: argv::ArgvError,
    },
}

type Builder = dyn Fn(&Wiring) -> Result<RoleCommand, PlanError> + Send + Sync;

/// Files a role reads, as (path, contents), made from the same wiring as its command.
type Files = dyn Fn(&Wiring) -> Result<Vec<(PathBuf, String)>, PlanError> + Send + Sync;

/// One role process of the plan.
#[derive(Clone)]
pub struct RoleSpec {
    pub name: String,
    pub kind: RoleKind,
    /// Roles that must be ready before this one starts (and stop after it).
    pub depends_on: Vec<String>,
    /// The port asked for at the first start (0 = any free one).
    pub port: u16,
    /// The announced listener whose port the role keeps when it is restarted, so that the
    /// roles that depend on it still find it.
    pub listener: &'static str,
    build: Arc<Builder>,
    /// Files written before every start of the role (its configuration file, when it takes
    /// one: the DNS server's lists the balancers' announced addresses).
    files: Option<Arc<Files>>,
}

impl std::fmt::Debug for RoleSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("depends_on", &self.depends_on)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl RoleSpec {
    /// A role of `kind` named `name` that announces `listener`, starts after `depends_on`, and
    /// whose command `build` makes. It listens on any free port unless [`RoleSpec::on_port`].
    pub fn new(
        kind: RoleKind,
        name: impl Into<String>,
        listener: &'static str,
        depends_on: Vec<String>,
        build: impl Fn(&Wiring) -> Result<RoleCommand, PlanError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            depends_on,
            port: 0,
            listener,
            build: Arc::new(build),
            files: None,
        }
    }

    /// The same role, with files that the supervisor writes before each of its starts.
    pub fn with_files(
        mut self,
        files: impl Fn(&Wiring) -> Result<Vec<(PathBuf, String)>, PlanError> + Send + Sync + 'static,
    ) -> Self {
        self.files = Some(Arc::new(files));
        self
    }

    /// The files to write before the role starts with `wiring`: (path, contents).
    pub fn files(&self, wiring: &Wiring) -> Result<Vec<(PathBuf, String)>, PlanError> {
        self.files.as_ref().map_or(Ok(Vec::new()), |f| f(wiring))
    }

    /// The same role on a fixed port.
    pub fn on_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Changes the command the role is started with (applied after it is built).
    pub fn map_command(&mut self, change: impl Fn(&mut RoleCommand) + Send + Sync + 'static) {
        let build = self.build.clone();
        self.build = Arc::new(move |w: &Wiring| {
            let mut command = build(w)?;
            change(&mut command);
            Ok(command)
        });
    }

    /// Changes the command the role is started with, from the same wiring (an address one
    /// of its dependencies announced).
    pub fn map_wired_command(
        &mut self,
        change: impl Fn(&Wiring, &mut RoleCommand) -> Result<(), PlanError> + Send + Sync + 'static,
    ) {
        let build = self.build.clone();
        self.build = Arc::new(move |w: &Wiring| {
            let mut command = build(w)?;
            change(w, &mut command)?;
            Ok(command)
        });
    }

    /// The role's typed command, given where its dependencies are and its own port.
    pub fn command(&self, wiring: &Wiring) -> Result<RoleCommand, PlanError> {
        (self.build)(wiring)
    }

    /// The process that runs it: `strata <kind> …`, with secrets in the environment.
    pub fn invocation(&self, wiring: &Wiring) -> Result<Invocation, PlanError> {
        let command = self.command(wiring)?;
        argv::render(&command).map_err(|source| PlanError::Render {
            role: self.name.clone(),
            source,
        })
    }
}

/// Where a deployment lives and which port it answers on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanContext {
    /// The deployment directory (state, logs, data).
    pub dir: PathBuf,
    /// The public entry port on 127.0.0.1 (0 = any free port).
    pub public_port: u16,
}

impl PlanContext {
    /// A directory inside the deployment directory.
    pub fn path(&self, parts: &[&str]) -> PathBuf {
        parts.iter().fold(self.dir.clone(), |p, part| p.join(part))
    }
}

/// Work done once before any role starts (e.g. the API servers' first signing key, which
/// they would otherwise each create at the same moment).
#[derive(Clone)]
pub struct Setup {
    /// What it does, for error messages ("prepare the token-signing keys").
    pub what: &'static str,
    run: Arc<dyn Fn() -> anyhow::Result<()> + Send + Sync>,
}

impl Setup {
    pub fn new(
        what: &'static str,
        run: impl Fn() -> anyhow::Result<()> + Send + Sync + 'static,
    ) -> Self {
        Self {
            what,
            run: Arc::new(run),
        }
    }

    /// Does it.
    pub fn run(&self) -> anyhow::Result<()> {
        (self.run)()
    }
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup").field("what", &self.what).finish()
    }
}

/// Every role of a deployment, each after the roles it depends on, and what to do before the
/// first of them starts.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub roles: Vec<RoleSpec>,
    pub setup: Vec<Setup>,
    /// Where the PostgreSQL groups' shard map is published, when not in DIR/data.
    pub shard_map: Option<crate::state::ShardMapInEtcd>,
    /// How to make more photo workers (`strata scale workers`), when the deployment has a web
    /// tier for them to work for.
    pub workers: Option<workers::WorkerTemplate>,
}

impl Plan {
    /// Compiles a (valid) topology into its roles: database servers and their controller,
    /// shared caches, the session store, API servers, the balancer.
    pub fn compile(topology: &Topology, ctx: &PlanContext) -> Plan {
        let mut plan = Plan::default();
        control::plan_members(topology, ctx, &mut plan);
        data::plan(topology, ctx, &mut plan);
        control::plan(topology, ctx, &mut plan);
        datacenters::plan(topology, ctx, &mut plan);
        cache::plan(topology, ctx, &mut plan);
        sessions::plan(topology, ctx, &mut plan);
        queue::plan(topology, ctx, &mut plan);
        api::plan(topology, ctx, &mut plan);
        lb::plan(topology, ctx, &mut plan);
        workers::plan(topology, ctx, &mut plan);
        observe::plan(topology, ctx, &mut plan);
        // Before the edges, which send /dashboard/ to it.
        observe::plan_dashboard(topology, ctx, &mut plan);
        edge::plan(topology, ctx, &mut plan);
        // After what it hands out: the edges, else the balancers.
        dns::plan(topology, ctx, &mut plan);
        observe::plan_tracing(topology, &mut plan);
        debug_assert!(plan.check().is_ok(), "{:?}", plan.check());
        plan
    }

    /// The role named `name`.
    pub fn role(&self, name: &str) -> Option<&RoleSpec> {
        self.roles.iter().find(|r| r.name == name)
    }

    /// Names are unique and every dependency comes earlier in the list (so the graph has no
    /// cycle).
    pub fn check(&self) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for role in &self.roles {
            for dep in &role.depends_on {
                if !seen.contains(dep.as_str()) {
                    return Err(format!(
                        "{} depends on {dep}, which does not come before it",
                        role.name
                    ));
                }
            }
            if !seen.insert(role.name.as_str()) {
                return Err(format!("two roles are named {}", role.name));
            }
        }
        Ok(())
    }

    /// The roles that depend on `name`.
    pub fn dependents(&self, name: &str) -> impl Iterator<Item = &RoleSpec> {
        self.roles
            .iter()
            .filter(move |r| r.depends_on.iter().any(|d| d == name))
    }
}

/// The names of the roles of `kind` planned so far.
pub(crate) fn names_of(roles: &[RoleSpec], kind: RoleKind) -> Vec<String> {
    roles
        .iter()
        .filter(|r| r.kind == kind)
        .map(|r| r.name.clone())
        .collect()
}

#[cfg(test)]
mod tests;
