//! The edge tier's roles: `edge-1` … `edge-N` (the first on the public port) in front of the
//! origin — the balancer, else the first API server — or, with `shield = true`, in front of
//! `edge-shield`, the one edge that talks to the origin (a miss on many edges costs one origin
//! fetch). Each edge keeps its disk store in `DIR/edge/<role>`, which survives its restarts.
//! With `static_dir`, the edges clients reach serve that directory's files themselves. With
//! `[dns]` the DNS server hands out the edges clients reach: `edge-2` … then listen on
//! addresses of their own at edge-1's port ([`listen_ip`]). With `[[datacenter]]` tables each
//! data centre runs its own (`us-east-edge-1` …, `us-east-edge-shield`) in front of its own
//! first balancer, each at an address of its own ([`super::datacenters::edge_ip`]) on the
//! port of the first data centre's first edge, and DNS hands out each data centre's edges.
//!
//! With `[edge] dashboard = true` (and the live dashboard, `[observe] dashboard = true`) the
//! edges clients reach send
//! [`DASHBOARD_PREFIX`] straight to `dashboard-1` (`--route`), not through the shield: the
//! dashboard is on the public entry. `dashboard-1` depends on no role (it reads the
//! deployment's state file), so it is planned before the edges, which depend on it and learn
//! its address from its readiness line; restarted, it keeps its port.

use strata_edge::role::{ByteSize, EdgeArgs, EdgeCommand};
use strata_edge::route::RouteSpec;
use strata_lb::tls::CertFiles;

use super::{Plan, PlanContext, RoleSpec, Setup, Wiring};
use crate::roles::{RoleCommand, RoleKind};
use crate::topology::{EdgeSpec, Topology};

/// Where the edges keep their disk stores: `DIR/edge/<role>`.
pub const EDGE_DIR: &str = "edge";

/// The shield's role name.
pub const SHIELD: &str = "edge-shield";

/// Where the edges clients reach serve the live dashboard.
pub const DASHBOARD_PREFIX: &str = "/dashboard/";

/// The edges, after the balancer or the API servers they front.
pub fn plan(topology: &Topology, ctx: &PlanContext, plan: &mut Plan) {
    let Some(spec) = topology.edge.clone() else {
        return;
    };
    // Only when asked: through the public entry, anyone could watch the deployment.
    let dashboard = plan
        .role(super::observe::DASHBOARD)
        .filter(|_| spec.dashboard)
        .map(|r| r.name.clone());
    if topology.has_datacentres() {
        // Each data centre's edges (and shield) in front of its own first balancer; every
        // edge on the port of the first data centre's first edge, at an address of its own.
        let layout = super::datacenters::Layout::of(topology);
        let Some(first) = layout.datacenters.first().and_then(|dc| dc.edges.first()) else {
            return;
        };
        let first = first.clone();
        for (d, dc) in layout.datacenters.iter().enumerate() {
            let front = match &dc.shield {
                Some(shield) => {
                    plan.roles
                        .push(edge_role(ctx, &spec, shield, &dc.balancers[0], None).on_port(0));
                    shield.clone()
                }
                None => dc.balancers[0].clone(),
            };
            for (i, name) in (1..).zip(&dc.edges) {
                let is_first = *name == first;
                let mut edge = edge_role(ctx, &spec, name, &front, edge_tls(&spec, is_first));
                if let Some(dashboard) = &dashboard {
                    route_to_dashboard(&mut edge, dashboard);
                }
                if !is_first {
                    beside(&mut edge, super::datacenters::edge_ip(d, i), &first);
                }
                plan.roles
                    .push(edge.on_port(if is_first { ctx.public_port } else { 0 }));
            }
        }
    } else {
        let origin = if topology.lb.is_some() {
            super::lb::NAME.to_string()
        } else {
            "api-1".to_string()
        };
        let front = if spec.shield {
            plan.roles
                .push(edge_role(ctx, &spec, SHIELD, &origin, None).on_port(0));
            SHIELD.to_string()
        } else {
            origin
        };
        for i in 1..=spec.count {
            let name = format!("edge-{i}");
            let port = if i == 1 { ctx.public_port } else { 0 };
            let mut edge = edge_role(ctx, &spec, &name, &front, edge_tls(&spec, i == 1));
            if let Some(dashboard) = &dashboard {
                route_to_dashboard(&mut edge, dashboard);
            }
            if topology.dns.is_some() && i > 1 {
                beside(&mut edge, listen_ip(i), "edge-1");
            }
            plan.roles.push(edge.on_port(port));
        }
    }
    if let Some(files) = &spec.static_files {
        let dir = std::path::PathBuf::from(&files.dir);
        plan.setup
            .push(Setup::new("check the edges' static directory", move || {
                anyhow::ensure!(
                    dir.is_dir(),
                    "`edge.static_dir`: {} is not a directory (a relative path starts where \
                     `strata up` runs); create it, or point static_dir at one",
                    dir.display()
                );
                Ok(())
            }));
    }
}

/// Whether the edge role `name` is a shield (`edge-shield`, or a data centre's
/// `us-east-edge-shield`): DNS never hands it out.
pub fn is_shield(name: &str) -> bool {
    name == SHIELD || name.ends_with("-edge-shield")
}

/// The loopback address edge `edge-<index>` listens on when DNS hands the edges out: `edge-1`
/// keeps 127.0.0.1 (the public entry stays where it was), `edge-N` takes 127.0.9.N — apart from
/// the balancers' 127.0.10.N ([`super::lb::listen_ip`]) and the data centres' 127.0.11.N and up:
/// an answer carries addresses, not ports, so the edges of one name share one port.
pub fn listen_ip(index: u16) -> std::net::IpAddr {
    if index <= 1 {
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        let n = u8::try_from(index).unwrap_or(u8::MAX);
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 9, n))
    }
}

/// HTTPS on an edge clients reach, when the topology asks for it: the first edge on the
/// topology's port, the others on free ones (or beside the first, see [`beside`]).
fn edge_tls(spec: &EdgeSpec, first: bool) -> Option<EdgeTls> {
    spec.tls.as_ref().map(|tls| EdgeTls {
        port: if first { tls.port } else { 0 },
        cert_and_key: tls.cert_and_key.clone(),
        redirect_http: tls.redirect,
    })
}

/// With DNS in front, `edge` listens at `ip` on the port of the edge `first` — and, with TLS,
/// on `first`'s HTTPS port — after it.
fn beside(edge: &mut RoleSpec, ip: std::net::IpAddr, first: &str) {
    edge.depends_on.push(first.into());
    let first = first.to_string();
    edge.map_wired_command(move |w: &Wiring, command: &mut RoleCommand| {
        if let RoleCommand::Edge(edge) = command {
            edge.args.listen = std::net::SocketAddr::new(ip, w.addr(&first, "http")?.port());
            if edge.args.tls_listen.is_some() {
                let tls = w.addr(&first, "https")?.port();
                edge.args.tls_listen = Some(std::net::SocketAddr::new(ip, tls));
            }
        }
        Ok(())
    });
}

/// `edge` sends [`DASHBOARD_PREFIX`] to the role `dashboard`, once it is ready.
fn route_to_dashboard(edge: &mut RoleSpec, dashboard: &str) {
    edge.depends_on.push(dashboard.to_string());
    let dashboard = dashboard.to_string();
    edge.map_wired_command(move |w: &Wiring, command: &mut RoleCommand| {
        let origin = w.addr(&dashboard, crate::roles::DashboardArgs::LISTENER)?;
        if let RoleCommand::Edge(edge) = command {
            edge.args.routes.push(RouteSpec {
                prefix: DASHBOARD_PREFIX.into(),
                origin,
            });
        }
        Ok(())
    });
}

/// An edge's HTTPS listener.
#[derive(Debug, Clone)]
struct EdgeTls {
    /// 0: a free one.
    port: u16,
    /// The certificate and key; `None`: a self-signed certificate written to
    /// `DIR/<name>-dev-cert.pem`.
    cert_and_key: Option<(String, String)>,
    /// Plain-HTTP requests are answered with a redirect to it.
    redirect_http: bool,
}

/// One edge named `name` in front of role `origin`'s HTTP listener; with `tls`, also HTTPS.
fn edge_role(
    ctx: &PlanContext,
    spec: &EdgeSpec,
    name: &str,
    origin: &str,
    tls: Option<EdgeTls>,
) -> RoleSpec {
    let cache_dir = (spec.disk_mib > 0).then(|| ctx.path(&[EDGE_DIR, name]));
    let serves_files = !is_shield(name);
    let dev_cert = ctx.path(&[&format!("{name}-dev-cert.pem")]);
    let (role_name, origin_role, spec) = (name.to_string(), origin.to_string(), spec.clone());
    RoleSpec::new(
        RoleKind::Edge,
        name,
        "http",
        vec![origin.to_string()],
        move |w: &Wiring| {
            let mut args = EdgeArgs::new(w.listen(), w.addr(&origin_role, "http")?);
            let memory = u64::from(spec.memory_mib) << 20;
            args.memory = ByteSize(memory);
            // Objects of up to 8 MiB, and at most half the memory store.
            args.max_object = ByteSize((memory / 2).min(8 << 20));
            if let Some(dir) = &cache_dir {
                args.cache_dir = Some(dir.clone());
                args.disk = ByteSize(u64::from(spec.disk_mib) << 20);
            }
            if let Some(tls) = &tls {
                args.tls_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], tls.port)));
                args.https_redirect = tls.redirect_http;
                match &tls.cert_and_key {
                    Some((cert, key)) => args.tls_certs.push(CertFiles {
                        name: None,
                        cert: cert.into(),
                        key: key.into(),
                    }),
                    None => args.dev_cert = Some(dev_cert.clone()),
                }
            }
            // The edges clients reach serve the static files; the shield never sees their
            // paths. A relative directory is made absolute where `strata up` runs.
            if let Some(files) = spec.static_files.as_ref().filter(|_| serves_files) {
                let dir = std::path::PathBuf::from(&files.dir);
                args.static_dir = Some(std::path::absolute(&dir).unwrap_or(dir));
                args.static_prefix = files.prefix.clone();
                args.static_max_age = files.max_age_secs;
            }
            // A follower of a collapsed fetch waits `total`: never less than the head's wait.
            args.header_timeout_ms = spec.origin_timeout_ms;
            args.stale_grace_ms = spec.stale_grace_ms;
            args.total_timeout_ms = args.total_timeout_ms.max(spec.origin_timeout_ms + 5_000);
            args.name = role_name.clone();
            args.exit_on_stdin_eof = true;
            Ok(RoleCommand::Edge(Box::new(EdgeCommand::serve(args))))
        },
    )
}
