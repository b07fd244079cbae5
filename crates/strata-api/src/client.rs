//! The client's address, for the per-address login limits and the sessions list: the TCP peer,
//! unless the peer is a configured proxy (the balancer) — then the address that proxy says it
//! received the request from.
//!
//! Only a trusted proxy may name the client: any other peer could name any address it likes in
//! `X-Forwarded-For` and spread its guesses over as many per-address limits as it cares to. The
//! proxies are configured (`--trusted-proxy`, an address or a CIDR block; `strata up` names its
//! balancer's source address), never inferred — a process on the balancer's host that connects
//! to an API port directly is not a proxy because it is local.
//!
//! Through trusted proxies, the client is the right-most address of `X-Forwarded-For` that is
//! not itself a trusted proxy (each proxy appends the address it received from, so everything to
//! the left of the first untrusted entry was written by the client and proves nothing). Without
//! `X-Forwarded-For`, the `for=` parameters of `Forwarded` (RFC 7239) are read the same way.
//! A trusted peer that names no usable address is taken as the client itself.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use ipnet::IpNet;

/// The proxies whose forwarding headers are believed: addresses and CIDR blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// No proxy is trusted: the client is always the peer.
    pub const NONE: TrustedProxies = TrustedProxies(Vec::new());

    pub fn new(proxies: Vec<IpNet>) -> Self {
        Self(proxies)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that arrived from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let chain = forwarded_chain(headers);
        let mut client = peer;
        for hop in chain.iter().rev() {
            // An entry that is not an address ("unknown", an obfuscated name, garbage) ends the
            // chain: nothing to its left can be placed.
            let Some(ip) = hop.map(canonical) else { break };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }
}

/// Parses one `--trusted-proxy`: an address (`127.0.0.2`, `::1`) or a block (`10.0.0.0/8`).
pub fn parse_proxy(raw: &str) -> Result<IpNet, String> {
    let raw = raw.trim();
    if let Ok(ip) = IpAddr::from_str(raw) {
        return Ok(IpNet::from(ip));
    }
    IpNet::from_str(raw).map_err(|_| {
        format!(
            "{raw:?} is not an IP address or CIDR block: write one like 127.0.0.2, ::1 or 10.0.0.0/8"
        )
    })
}

/// An IPv4 address that arrived mapped into IPv6 (`::ffff:a.b.c.d`, on a dual-stack socket) is
/// that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The hops a request names, oldest first: `X-Forwarded-For` when present, else the `for=`
/// parameters of `Forwarded`. `None` for an entry that is not an address.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let xff: Vec<Option<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(text) => text.split(',').map(|e| parse_node(e.trim())).collect(),
            Err(_) => vec![None],
        })
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    headers
        .get_all(header::FORWARDED)
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(text) => text
                .split(',')
                .filter_map(|element| {
                    element.split(';').find_map(|pair| {
                        let (name, value) = pair.trim().split_once('=')?;
                        name.trim()
                            .eq_ignore_ascii_case("for")
                            .then(|| parse_node(value.trim().trim_matches('"')))
                    })
                })
                .collect(),
            Err(_) => vec![None],
        })
        .collect()
}

/// A node as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711` or a bare `2001:db8::1`.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = IpAddr::from_str(text) {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, _) = rest.split_once(']')?;
        return IpAddr::from_str(inside).ok();
    }
    SocketAddr::from_str(text).ok().map(|s| s.ip())
}

/// The client of a request: see the module's documentation. `None` only for a request that did
/// not come over a socket (an in-process call with no peer to name).
pub fn client_ip(parts: &Parts, trusted: &TrustedProxies) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| trusted.client(c.0.ip(), &parts.headers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        h
    }

    fn balancer() -> TrustedProxies {
        TrustedProxies::new(vec![
            parse_proxy("127.0.0.2").expect("ip"),
            parse_proxy("10.0.0.0/8").expect("net"),
        ])
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let said = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.10"),
        ]);
        for trusted in [TrustedProxies::NONE, balancer()] {
            assert_eq!(trusted.client(ip("127.0.0.1"), &said), ip("127.0.0.1"));
            assert_eq!(trusted.client(ip("192.0.2.7"), &said), ip("192.0.2.7"));
        }
    }

    #[test]
    fn through_trusted_proxies_the_client_is_the_last_untrusted_hop() {
        let t = balancer();
        let client = |pairs: &[(&str, &str)]| t.client(ip("127.0.0.2"), &headers(pairs));
        assert_eq!(
            client(&[("x-forwarded-for", "198.51.100.4")]),
            ip("198.51.100.4")
        );
        // Whatever the client wrote to the left of what the balancer appended is not believed.
        assert_eq!(
            client(&[("x-forwarded-for", "1.1.1.1, 198.51.100.4")]),
            ip("198.51.100.4")
        );
        // A chain of trusted proxies is walked back to the first address outside it.
        assert_eq!(
            client(&[("x-forwarded-for", "1.1.1.1, 198.51.100.4, 10.1.2.3")]),
            ip("198.51.100.4")
        );
        assert_eq!(
            client(&[
                ("x-forwarded-for", "1.1.1.1"),
                ("x-forwarded-for", "198.51.100.4")
            ]),
            ip("198.51.100.4")
        );
        // `Forwarded` when there is no X-Forwarded-For, in each form RFC 7239 allows.
        for (value, want) in [
            ("for=198.51.100.5", "198.51.100.5"),
            ("for=1.1.1.1, for=198.51.100.5;proto=https", "198.51.100.5"),
            ("For=\"198.51.100.5:4711\"", "198.51.100.5"),
            ("for=\"[2001:db8::7]:4711\";by=10.0.0.1", "2001:db8::7"),
            ("proto=http;for=\"[2001:db8::7]\"", "2001:db8::7"),
        ] {
            assert_eq!(client(&[("forwarded", value)]), ip(want), "{value}");
        }
        // Nothing usable: the proxy itself.
        assert_eq!(client(&[]), ip("127.0.0.2"));
        assert_eq!(client(&[("x-forwarded-for", "unknown")]), ip("127.0.0.2"));
        assert_eq!(
            client(&[("x-forwarded-for", "1.1.1.1, garbage, 10.9.9.9")]),
            ip("10.9.9.9")
        );
        assert_eq!(client(&[("forwarded", "for=_hidden")]), ip("127.0.0.2"));
    }

    #[test]
    fn an_ipv4_peer_mapped_into_ipv6_is_its_ipv4_address() {
        let t = balancer();
        let said = headers(&[("x-forwarded-for", "198.51.100.4")]);
        assert_eq!(t.client(ip("::ffff:127.0.0.2"), &said), ip("198.51.100.4"));
        assert_eq!(t.client(ip("::ffff:127.0.0.1"), &said), ip("127.0.0.1"));
    }

    #[test]
    fn a_bad_proxy_setting_says_what_to_write() {
        assert_eq!(parse_proxy("::1").ok(), Some(IpNet::from(ip("::1"))));
        let why = parse_proxy("localhost").expect_err("a name");
        assert!(
            why.contains("127.0.0.2") && why.contains("10.0.0.0/8"),
            "{why}"
        );
        assert!(parse_proxy("10.0.0.0/33").is_err());
    }
}
