//! Routes between PostgreSQL servers: how one server reaches another when not at the address
//! the cluster state publishes — through the relay of an emulated link between data centres
//! (docs/datacenters.md). `pg-3:pg-1=127.0.0.1:40745` says that `pg-3` reaches `pg-1` at
//! `127.0.0.1:40745`. The PostgreSQL role follows its primary through its routes, and the
//! controller re-points a standby at the new primary through the standby's route.

use std::net::SocketAddr;

/// `FROM:TO=HOST:PORT`: server `from` reaches server `to` at `addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub from: String,
    pub to: String,
    pub addr: SocketAddr,
}

/// Whether `name` is a role name: letters, digits, dashes.
fn is_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl std::str::FromStr for Route {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (pair, addr) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}` is not FROM:TO=HOST:PORT"))?;
        let (from, to) = pair
            .split_once(':')
            .ok_or_else(|| format!("`{pair}` is not FROM:TO (two role names)"))?;
        for name in [from, to] {
            if !is_name(name) {
                return Err(format!(
                    "`{name}` is not a role name (letters, digits, dashes)"
                ));
            }
        }
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not HOST:PORT (an IP address and a port)"))?;
        Ok(Route {
            from: from.to_string(),
            to: to.to_string(),
            addr,
        })
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}={}", self.from, self.to, self.addr)
    }
}

/// Where `from` reaches `to` by `routes`, if a route says.
pub fn via(routes: &[Route], from: &str, to: &str) -> Option<SocketAddr> {
    routes
        .iter()
        .find(|r| r.from == from && r.to == to)
        .map(|r| r.addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_reads_and_writes_as_from_to_equals_address() {
        let r: Route = "pg-3:pg-1=127.0.0.1:4000".parse().expect("route");
        assert_eq!((r.from.as_str(), r.to.as_str()), ("pg-3", "pg-1"));
        assert_eq!(r.to_string(), "pg-3:pg-1=127.0.0.1:4000");
        assert_eq!(via(std::slice::from_ref(&r), "pg-3", "pg-1"), Some(r.addr));
        assert_eq!(via(&[r], "pg-1", "pg-3"), None);
        for bad in [
            "pg-3=127.0.0.1:1",
            "pg 3:pg-1=127.0.0.1:1",
            "a:b=host:1",
            "a:b",
        ] {
            assert!(bad.parse::<Route>().is_err(), "{bad}");
        }
    }
}
