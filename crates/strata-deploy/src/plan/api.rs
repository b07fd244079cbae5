//! The web tier's roles: `api-1` … `api-N`, stateless API servers. Each is told where the
//! data tier is (the SQLite directory, or the PostgreSQL servers' URLs — passed in the
//! environment, since a URL may hold a password), its node id for Snowflake ids, its cache
//! settings and shared cache servers, and the session store.
//!
//! With `[[datacenter]]` tables a data centre's servers (`us-east-api-1` …) are given, and
//! depend on, the shared cache servers of their own data centre only (`us-east-cache-1` …,
//! [`super::cache::names`]): a cache is never shared across a link.

use strata_api::role::{ApiArgs, ServerOptions};
use strata_cache::CacheEngine;

use super::{Plan, PlanContext, PlanError, RoleSpec, Setup, Wiring, names_of};
use crate::groups::postgres_urls;
use crate::roles::{RoleCommand, RoleKind};
use crate::state::DATA_DIR;
use crate::topology::{CacheSpec, DataEngine, SessionsEngine, Topology};

/// L1 entry life when the topology sets none and Redis's invalidation bus keeps the L1s
/// coherent (they may then keep entries long), milliseconds.
pub const COHERENT_L1_TTL_MS: u64 = 600_000;

/// The API servers. Without a balancer or edges `api-1` takes the public port; the others (all of them,
/// with a balancer) their fixed port or any free one. Node ids 1, 2, 3 … keep Snowflake ids
/// unique across servers.
pub fn plan(topology: &Topology, ctx: &PlanContext, plan: &mut Plan) {
    // The servers share one key directory: its first key is made before any of them starts,
    // so that they do not each make one at the same moment.
    let keys = ctx.path(&[DATA_DIR, "keys"]);
    plan.setup
        .push(Setup::new("prepare the token-signing keys", move || {
            strata_api::keys::KeyRing::open(&keys).map_err(anyhow::Error::msg)?;
            Ok(())
        }));
    let databases = names_of(&plan.roles, RoleKind::Postgres);
    let sessions = (topology.sessions == SessionsEngine::Redis).then_some(super::sessions::NAME);
    // What every server depends on besides the databases and its shared cache servers.
    let mut others: Vec<String> = sessions.map(String::from).into_iter().collect();
    let photos = super::queue::PhotoWiring::of(topology, ctx);
    others.extend(photos.depends_on());
    // With the control plane on etcd, PostgreSQL groups' map lives there: every router
    // follows `PREFIX/shard-map` (and the etcd members start first).
    let map_in_etcd = (!topology.postgres_groups().is_empty()
        && topology.control.store == strata_control::store_options::StoreKind::Etcd)
        .then(|| {
            let (members, builder) = super::control::store(topology, plan);
            others.extend(members);
            plan.shard_map = Some(crate::state::ShardMapInEtcd {
                endpoints: topology.control.etcd.clone(),
                prefix: super::control::deployment_prefix(topology),
            });
            builder
        });

    let has_lb = topology.lb.is_some();
    let public = !has_lb && topology.edge.is_none();
    let mut fixed = topology.api.ports.iter().copied();
    let servers = instances(topology);
    plan.roles.extend(servers.into_iter().map(|(i, name, dc)| {
        let port = if i == 1 && public {
            ctx.public_port
        } else {
            fixed.next().unwrap_or(0)
        };
        // In a data centre, the servers of the others are reached through its relays; its
        // shared cache servers are its own (`cache.rs`), never another data centre's.
        let wires = dc.map(|d| super::datacenters::database_wires(topology, d));
        // Its data centre's edges are purged again as its replica applies each change.
        let followed_edges = dc
            .filter(|_| topology.edge.is_some())
            .and_then(|d| topology.datacenters.get(d))
            .map(|spec| format!("{}-edge-", spec.name));
        let caches = super::cache::names(topology, dc);
        let mut depends_on: Vec<String> = databases
            .iter()
            .chain(&caches)
            .chain(&others)
            .cloned()
            .collect();
        depends_on.extend(
            wires
                .iter()
                .flatten()
                .filter(|(_, _, local)| !local)
                .map(|(relay, _, _)| relay.clone()),
        );
        let role_name = name.clone();
        let data_dir = ctx.path(&[DATA_DIR]);
        let data = topology.data.clone();
        let shards = topology.shards;
        let groups = topology.postgres_groups();
        let cache = topology.cache.clone();
        let edge = topology.edge.clone();
        let state_file = ctx.path(&[crate::state::STATE_FILE]);
        let databases = databases.clone();
        let photos = photos.clone();
        let map_in_etcd = map_in_etcd.clone();
        RoleSpec::new(
            RoleKind::Api,
            name,
            "http",
            depends_on,
            move |w: &Wiring| {
                let mut server = ServerOptions::new(w.listen(), data_dir.clone());
                server.node_id = u64::from(i);
                match &data {
                    DataEngine::Sqlite if shards > 1 => server.data.shards = Some(shards),
                    DataEngine::Sqlite => {}
                    DataEngine::PostgresUrl { url } => server.data.postgres = Some(url.clone()),
                    DataEngine::Postgres { .. } if !groups.is_empty() => {
                        // One URL per group, through all its servers (the primary found by
                        // `target_session_attrs`): the group's replicas are for its failover.
                        server.data.shards = Some(shards);
                        server.data.postgres_shards = groups
                            .iter()
                            .map(|g| {
                                let nodes = databases
                                    .iter()
                                    .filter(|n| crate::groups::group_of(n) == Some(g.as_str()))
                                    .map(|n| w.addr(n, super::data::LISTENER))
                                    .collect::<Result<Vec<_>, PlanError>>()?;
                                Ok(format!("{g}={}", postgres_urls(&nodes).0))
                            })
                            .collect::<Result<Vec<_>, PlanError>>()?;
                        if let Some(store) = &map_in_etcd {
                            let store = store(w)?;
                            server.data.shard_map_etcd = store.etcd;
                            server.data.shard_map_etcd_prefix = store.etcd_prefix;
                        }
                    }
                    DataEngine::Postgres { .. } if wires.is_some() => {
                        // Writes find the primary through every server (remote ones through
                        // relays); reads go to the replicas of this data centre only.
                        let wires = wires.as_deref().unwrap_or_default();
                        let nodes = wires
                            .iter()
                            .map(|(role, listener, _)| w.addr(role, listener))
                            .collect::<Result<Vec<_>, PlanError>>()?;
                        let local: Vec<_> = wires
                            .iter()
                            .zip(&nodes)
                            .filter(|((_, _, local), _)| *local)
                            .map(|(_, addr)| *addr)
                            .collect();
                        server.data.postgres = Some(postgres_urls(&nodes).0);
                        server.data.postgres_replicas = postgres_urls(&local).1;
                    }
                    DataEngine::Postgres { .. } => {
                        let nodes = databases
                            .iter()
                            .map(|n| w.addr(n, super::data::LISTENER))
                            .collect::<Result<Vec<_>, PlanError>>()?;
                        let (primary, replicas) = postgres_urls(&nodes);
                        server.data.postgres = Some(primary);
                        if nodes.len() > 1 {
                            server.data.postgres_replicas = replicas;
                        }
                    }
                }
                set_cache(&mut server, &cache, &caches, w)?;
                photos.apply(w, &mut server.photos)?;
                if let Some(edge) = &edge {
                    // The edges start after the API servers (they front them): each server
                    // follows their admin addresses in the deployment's state file.
                    server.edges.targets.purge_edges_state = Some(state_file.clone());
                    server.edges.shared_max_age_secs = edge.profile_ttl_secs;
                    server.edges.shared_stale_if_error_secs = edge.profile_stale_if_error_secs;
                    server.edges.followed_edges = followed_edges.clone();
                }
                if has_lb {
                    server.auth.trusted_proxies = vec![super::BALANCER_SOURCE.into()];
                }
                if let Some(store) = sessions {
                    let addr = w.addr(store, CacheEngine::Redis.name())?;
                    server.auth.sessions_redis = Some(format!("redis://{addr}"));
                }
                Ok(RoleCommand::Api(Box::new(ApiArgs {
                    server,
                    name: role_name.clone(),
                    exit_on_stdin_eof: true,
                })))
            },
        )
        .on_port(port)
    }));
}

/// The API servers: (node id, name, data centre index). Without data centres `api-1` …; with
/// them each data centre's in turn (`us-east-api-1` …), node ids counting on across them.
fn instances(topology: &Topology) -> Vec<(u16, String, Option<usize>)> {
    if !topology.has_datacentres() {
        return (1..=topology.api.count)
            .map(|i| (i, format!("api-{i}"), None))
            .collect();
    }
    let mut out = Vec::new();
    for (d, dc) in topology.datacenters.iter().enumerate() {
        for i in 1..=dc.api {
            let id = u16::try_from(out.len() + 1).unwrap_or(u16::MAX);
            out.push((
                id,
                super::datacenters::role_name(&dc.name, "api", i),
                Some(d),
            ));
        }
    }
    out
}

/// The cache settings of an API server whose shared cache servers are `caches`.
fn set_cache(
    server: &mut ServerOptions,
    spec: &CacheSpec,
    caches: &[String],
    w: &Wiring,
) -> Result<(), PlanError> {
    let options = &mut server.cache;
    options.no_cache = spec.off;
    if let Some(coherence) = spec.coherence {
        options.cache_coherence = coherence;
    }
    if let Some(mib) = spec.l1_mib {
        options.cache_mib = mib;
    }
    match (spec.l1_ttl_ms, spec.shared) {
        (Some(ms), _) => options.cache_ttl_ms = ms,
        (None, Some((CacheEngine::Redis, _))) => options.cache_ttl_ms = COHERENT_L1_TTL_MS,
        (None, _) => {}
    }
    if let Some((engine, _)) = spec.shared {
        let addrs = caches
            .iter()
            .map(|n| w.addr(n, engine.name()))
            .collect::<Result<Vec<_>, PlanError>>()?;
        match engine {
            CacheEngine::Redis => {
                options.cache_redis = addrs.iter().map(|a| format!("redis://{a}")).collect();
            }
            CacheEngine::Memcached => {
                options.cache_memcached = addrs.iter().map(ToString::to_string).collect();
            }
        }
    }
    Ok(())
}
