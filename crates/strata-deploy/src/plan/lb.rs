//! The balancer's role: `lb-1` on the public port, in front of every API server, with the
//! topology's algorithm, sticky cookie, timeouts and TLS listener.

use strata_lb::BackendSpec;
use strata_lb::role::LbArgs;
use strata_lb::tls::CertFiles;

use super::{Plan, PlanContext, PlanError, RoleSpec, Wiring, names_of};
use crate::roles::{RoleCommand, RoleKind};
use crate::topology::Topology;

/// The role's name.
pub const NAME: &str = "lb-1";

/// The balancer, in front of the API servers planned before it.
pub fn plan(topology: &Topology, ctx: &PlanContext, plan: &mut Plan) {
    let Some(spec) = topology.lb.clone() else {
        return;
    };
    let apis = names_of(&plan.roles, RoleKind::Api);
    // Written where clients of this deployment find it to trust.
    let dev_cert = ctx.path(&["lb-1-dev-cert.pem"]);
    let backends = apis.clone();
    plan.roles.push(
        RoleSpec::new(RoleKind::Lb, NAME, "http", apis, move |w: &Wiring| {
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
            let mut args = LbArgs::new(w.listen(), backends);
            args.algorithm = spec.algorithm;
            args.sticky_cookie = spec.sticky_cookie.clone();
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
                args.tls_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], tls.port)));
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
            args.name = NAME.into();
            args.exit_on_stdin_eof = true;
            Ok(RoleCommand::Lb(Box::new(args)))
        })
        // The edges take the public entry when the topology has them.
        .on_port(if topology.edge.is_some() {
            0
        } else {
            ctx.public_port
        }),
    );
}
