//! `[lb]`: the load balancers — how many (`lb-1` on the public port, the others on ports of
//! their own, for DNS or clients to spread over), their algorithm, sticky sessions, TLS
//! termination and timeouts (in the ranges `strata lb` takes, from `strata_lb::role`).

use strata_lb::role::{
    CLIENT_HEADER_TIMEOUT_MS, CONNECT_TIMEOUT_MS, HEADER_TIMEOUT_MS, IDLE_TIMEOUT_MS,
    TOTAL_TIMEOUT_MS,
};

use super::reader::Section;
use super::{AlgorithmName, LbSpec, LbTimeouts, LbTls};

/// The most balancers a topology runs.
pub const MAX_BALANCERS: i64 = 8;

/// Reads `[lb]`.
pub(super) fn read(sec: &mut Section<'_>) -> LbSpec {
    let count = sec.int("count", 1..=MAX_BALANCERS).unwrap_or(1);
    let algorithm = sec
        .choice::<AlgorithmName>("algorithm")
        .unwrap_or(AlgorithmName::RoundRobin);
    let sticky_cookie = sec.string(
        "sticky_cookie",
        "a cookie name (letters, digits, - _ .; up to 64)",
        |c| {
            !c.is_empty()
                && c.len() <= 64
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        },
    );
    let tls = tls(sec, "lb");
    let timeouts = LbTimeouts {
        connect_ms: sec.millis("connect_timeout_ms", CONNECT_TIMEOUT_MS),
        header_ms: sec.millis("header_timeout_ms", HEADER_TIMEOUT_MS),
        total_ms: sec.millis("total_timeout_ms", TOTAL_TIMEOUT_MS),
        idle_ms: sec.millis("idle_timeout_ms", IDLE_TIMEOUT_MS),
        client_header_ms: sec.millis("client_header_timeout_ms", CLIENT_HEADER_TIMEOUT_MS),
    };
    LbSpec {
        count,
        algorithm,
        sticky_cookie,
        tls,
        timeouts,
    }
}

/// A TLS listener (of `[lb]` or `[edge]`, named by `table` in errors): `tls_port` with
/// `tls_cert` + `tls_key`, or with `dev_cert = true`.
pub(super) fn tls(sec: &mut Section<'_>, table: &str) -> Option<LbTls> {
    let port = sec.port("tls_port");
    let cert = sec.path("tls_cert");
    let key = sec.path("tls_key");
    let dev_cert = sec.bool("dev_cert").unwrap_or(false);
    let redirect = sec.bool("https_redirect").unwrap_or(false);
    match (port, cert, key, dev_cert) {
        (None, None, None, false) => {
            // (A bad `tls_port` has been reported already.)
            if redirect && !sec.has("tls_port") {
                sec.error(
                    "https_redirect",
                    format!("`{table}.https_redirect` needs TLS: set `tls_port`"),
                );
            }
            None
        }
        (Some(port), Some(c), Some(k), false) => Some(LbTls {
            port,
            cert_and_key: Some((c, k)),
            redirect,
        }),
        (Some(port), None, None, true) => Some(LbTls {
            port,
            cert_and_key: None,
            redirect,
        }),
        (None, ..) => {
            // A bad `tls_port` has been reported already.
            if !sec.has("tls_port") {
                sec.error(
                    "tls_port",
                    format!("TLS settings need `{table}.tls_port` (0 picks a free port)"),
                );
            }
            None
        }
        (Some(_), _, _, true) => {
            sec.error(
                "dev_cert",
                format!(
                    "`{table}.dev_cert = true` cannot go with `tls_cert`/`tls_key`: choose one"
                ),
            );
            None
        }
        (Some(_), ..) => {
            sec.error(
                "tls_port",
                format!(
                    "`{table}.tls_port` needs `tls_cert` and `tls_key` (PEM files), or \
                     `dev_cert = true` for a self-signed certificate"
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::super::*;

    #[test]
    fn the_balancer_takes_sticky_sessions_and_tls_and_refuses_what_does_not_fit() {
        let t = Topology::parse(
            "[lb]\nsticky_cookie = \"pin\"\ntls_port = 8443\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nhttps_redirect = true\n[api]\ncount = 1\n",
            8080,
        )
        .expect("valid");
        let lb = t.lb.expect("lb");
        assert_eq!(lb.sticky_cookie.as_deref(), Some("pin"));
        assert_eq!(
            lb.tls,
            Some(LbTls {
                port: 8443,
                cert_and_key: Some(("c.pem".into(), "k.pem".into())),
                redirect: true
            })
        );
        let t = Topology::parse(
            "[lb]\ntls_port = 0\ndev_cert = true\n[api]\ncount = 1\n",
            8080,
        )
        .expect("valid");
        assert_eq!(t.lb.and_then(|l| l.tls).map(|t| t.cert_and_key), Some(None));
        let t = Topology::parse(
            "[lb]\nconnect_timeout_ms = 250\nidle_timeout_ms = 5000\n[api]\ncount = 1\n",
            8080,
        )
        .expect("valid");
        assert_eq!(
            t.lb.map(|l| l.timeouts),
            Some(LbTimeouts {
                connect_ms: Some(250),
                idle_ms: Some(5000),
                ..LbTimeouts::default()
            })
        );

        for (bad, says) in [
            ("tls_port = 8443\n", "needs `tls_cert` and `tls_key`"),
            (
                "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
                "need `lb.tls_port`",
            ),
            (
                "tls_port = 8443\ndev_cert = true\ntls_cert = \"c\"\ntls_key = \"k\"\n",
                "choose one",
            ),
            ("https_redirect = true\n", "needs TLS"),
            (
                "tls_port = 8080\ndev_cert = true\n",
                "clashes with the public port",
            ),
            ("sticky_cookie = \"a b\"\n", "cookie name"),
            ("tls_port = 70000\ndev_cert = true\n", "0 to 65535"),
            ("idle_timeout_ms = 5\n", "milliseconds from 100 to 3600000"),
            (
                "total_timeout_ms = \"15s\"\n",
                "`lb.total_timeout_ms` must be a number",
            ),
        ] {
            let e = errors(&format!("[lb]\n{bad}[api]\ncount = 1\n"));
            assert!(
                e.iter()
                    .any(|e| e.message.contains(says) && e.line.is_some()),
                "{bad:?} should say {says:?}: {e:?}"
            );
            assert_eq!(e.len(), 1, "{bad:?}: one mistake, one error: {e:?}");
        }
    }

    #[test]
    fn timeouts_take_the_ranges_of_strata_lb() {
        let range = strata_lb::role::CLIENT_HEADER_TIMEOUT_MS;
        let (min, max) = (*range.start(), *range.end());
        assert!(
            Topology::parse(
                &format!("[lb]\nclient_header_timeout_ms = {min}\n[api]\ncount = 1\n"),
                8080
            )
            .is_ok()
        );
        let e = errors(&format!(
            "[lb]\nclient_header_timeout_ms = {}\n[api]\ncount = 1\n",
            max + 1
        ));
        assert_eq!(
            e[0].message,
            format!(
                "`lb.client_header_timeout_ms` must be a number of milliseconds from {min} to {max}, not {}",
                max + 1
            )
        );
    }

    #[test]
    fn a_load_balancer_takes_the_public_port_and_its_settings_are_checked() {
        let t = Topology::parse(
            "[lb]\nalgorithm = \"least-connections\"\n[api]\ncount = 2\nports = [9001, 9002]\n",
            8080,
        )
        .expect("valid");
        assert_eq!(
            t.lb,
            Some(LbSpec {
                algorithm: AlgorithmName::LeastConnections,
                ..LbSpec::default()
            })
        );
        assert_eq!(t.instance_count(), 3);
        let t = Topology::parse("[lb]\ncount = 3\n[api]\ncount = 2\n", 8080).expect("valid");
        assert_eq!(t.lb.as_ref().map(|lb| lb.count), Some(3));
        assert_eq!(t.instance_count(), 5, "3 balancers and 2 API servers");
        let e = errors("[lb]\ncount = 9\nalgorithm = \"round-robbin\"\n[api]\ncount = 1\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].message.contains("between 1 and 8"), "{e:?}");
        assert!(e[1].message.contains("did you mean `round-robin`"), "{e:?}");
    }
}
