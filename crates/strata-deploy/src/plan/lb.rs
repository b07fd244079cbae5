//! The balancers' roles: `lb-1` on the public port and `lb-2` … `lb-N` on ports of their own
//! (for clients to spread over) — or, with `[dns]`, on the public port at addresses of their
//! own, which DNS hands out ([`listen_ip`]; with `[[datacenter]]` tables each data centre's
//! balancers, in front of its own API servers only, see [`super::datacenters`]) — each in
//! front of every API server, with the
//! topology's algorithm, sticky cookie, timeouts and TLS listener. With a sticky cookie they
//! share one key, made once into `DIR/lb/sticky.key` (mode 0600), so a client pinned by one
//! balancer keeps its backend through another, and through a restarted one.

use strata_lb::BackendSpec;
use strata_lb::role::LbArgs;
use strata_lb::tls::CertFiles;

use super::{Plan, PlanContext, PlanError, RoleSpec, Setup, Wiring, names_of};
use crate::roles::{RoleCommand, RoleKind};
use crate::topology::{LbSpec, Topology};

/// The first balancer's name: the one on the public port.
pub const NAME: &str = "lb-1";

/// Where the balancers' shared files are: `DIR/lb/`.
pub const LB_DIR: &str = "lb";

/// The sticky cookie's key file in [`LB_DIR`].
pub const STICKY_KEY_FILE: &str = "sticky.key";

/// The balancers, in front of the API servers planned before them.
pub fn plan(topology: &Topology, ctx: &PlanContext, plan: &mut Plan) {
    let Some(spec) = topology.lb.clone() else {
        return;
    };
    let sticky_key = spec.sticky_cookie.as_ref().map(|_| {
        let file = ctx.path(&[LB_DIR, STICKY_KEY_FILE]);
        let made = file.clone();
        plan.setup.push(Setup::new(
            "make the balancers' sticky-cookie key",
            move || strata_lb::sticky::make_key_file(&made),
        ));
        file
    });
    let apis = names_of(&plan.roles, RoleKind::Api);
    // The edges take the public entry when the topology has them.
    let public = if topology.edge.is_some() {
        0
    } else {
        ctx.public_port
    };
    if topology.has_datacentres() {
        // Each data centre's balancers, in front of its own API servers only, all on the port
        // of the first data centre's first balancer, each at an address of its own.
        let layout = super::datacenters::Layout::of(topology);
        let first = layout.datacenters[0].balancers[0].clone();
        for (d, dc) in layout.datacenters.iter().enumerate() {
            for (i, name) in (1..).zip(&dc.balancers) {
                let is_first = *name == first;
                let beside =
                    (!is_first).then(|| (super::datacenters::balancer_ip(d, i), first.clone()));
                let role = balancer(
                    ctx,
                    &spec,
                    name,
                    is_first,
                    &dc.apis,
                    sticky_key.clone(),
                    beside,
                );
                plan.roles
                    .push(role.on_port(if is_first { public } else { 0 }));
            }
        }
        return;
    }
    let own_addresses = topology.dns.is_some();
    for i in 1..=spec.count {
        let name = format!("lb-{i}");
        // With DNS in front, lb-2 … share lb-1's port, each on an address of its own.
        let beside = (own_addresses && i > 1).then(|| (listen_ip(i), NAME.to_string()));
        let role = balancer(ctx, &spec, &name, i == 1, &apis, sticky_key.clone(), beside);
        plan.roles
            .push(role.on_port(if i == 1 { public } else { 0 }));
    }
}

/// The loopback address balancer `lb-<index>` listens on when DNS hands the balancers out:
/// `lb-1` keeps 127.0.0.1 (the public entry stays where it was), `lb-N` takes 127.0.10.N.
/// A DNS answer carries addresses, not ports, so the balancers of one name must differ by
/// address and share one port; on Linux every address of 127.0.0.0/8 is on the loopback
/// interface and can be bound without setup.
pub fn listen_ip(index: u16) -> std::net::IpAddr {
    if index <= 1 {
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        let n = u8::try_from(index).unwrap_or(u8::MAX);
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 10, n))
    }
}

/// One balancer, `name`; the first takes the topology's TLS port, the others free ones. With
/// `beside` (an address and a balancer), it listens on that address at that balancer's port,
/// after it.
fn balancer(
    ctx: &PlanContext,
    spec: &LbSpec,
    name: &str,
    first: bool,
    apis: &[String],
    sticky_key: Option<std::path::PathBuf>,
    beside: Option<(std::net::IpAddr, String)>,
) -> RoleSpec {
    // Written where clients of this deployment find it to trust.
    let dev_cert = ctx.path(&[&format!("{name}-dev-cert.pem")]);
    // Drains outlive a restart of the balancer (the dashboard's drain button, or the admin API).
    let drain_file = ctx.path(&[LB_DIR, &format!("{name}.drained.json")]);
    let (backends, spec, role_name) = (apis.to_vec(), spec.clone(), name.to_string());
    let mut depends_on = apis.to_vec();
    if let Some((_, first)) = &beside {
        depends_on.push(first.clone());
    }
    RoleSpec::new(RoleKind::Lb, name, "http", depends_on, move |w: &Wiring| {
        let backends = backends
            .iter()
            .map(|name| {
                Ok(BackendSpec {
                    name: name.clone(),
                    addr: w.addr(name, "http")?,
                    weight: 1,
                })
            })
            .collect::<Result<Vec<_>, PlanError>>()?;
        let listen = match &beside {
            Some((ip, first)) => std::net::SocketAddr::new(*ip, w.addr(first, "http")?.port()),
            None => w.listen(),
        };
        let mut args = LbArgs::new(listen, backends);
        args.algorithm = spec.algorithm;
        args.sticky_cookie = spec.sticky_cookie.clone();
        args.sticky_key_file = sticky_key.clone();
        let t = &spec.timeouts;
        for (value, slot) in [
            (t.connect_ms, &mut args.connect_timeout_ms),
            (t.header_ms, &mut args.header_timeout_ms),
            (t.total_ms, &mut args.total_timeout_ms),
            (t.idle_ms, &mut args.idle_timeout_ms),
            (t.client_header_ms, &mut args.client_header_timeout_ms),
        ] {
            if let Some(ms) = value {
                *slot = ms;
            }
        }
        if let Some(tls) = &spec.tls {
            // Beside the first balancer (DNS in front), at its HTTPS port too.
            args.tls_listen = Some(match &beside {
                Some((ip, leader)) => {
                    std::net::SocketAddr::new(*ip, w.addr(leader, "https")?.port())
                }
                None => {
                    std::net::SocketAddr::from(([127, 0, 0, 1], if first { tls.port } else { 0 }))
                }
            });
            match &tls.cert_and_key {
                Some((cert, key)) => args.tls_certs.push(CertFiles {
                    name: None,
                    cert: cert.into(),
                    key: key.into(),
                }),
                None => args.dev_cert = Some(dev_cert.clone()),
            }
            args.https_redirect = tls.redirect;
        }
        args.source_addr = Some(super::BALANCER_SOURCE);
        args.drain_file = Some(drain_file.clone());
        args.name = role_name.clone();
        args.exit_on_stdin_eof = true;
        Ok(RoleCommand::Lb(Box::new(args)))
    })
}
