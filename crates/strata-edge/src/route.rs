//! Routes: path prefixes the edge sends to another origin than its own
//! (`--route /dashboard/=127.0.0.1:PORT`), so that a deployment's dashboard answers on the
//! public entry.
//!
//! A request under a route's prefix goes to the route's origin with the prefix stripped to
//! one `/` (`/dashboard/api/roles` reaches it as `/api/roles`); the prefix without its final
//! slash (`/dashboard`, with any query) is redirected to it (`308`, so no method changes).
//! Everything else is what any request gets: the same cache, keyed by the URL the client
//! asked (so `strata edge purge --prefix /dashboard/` purges a route's objects), the same
//! RFC 9111 rules, the same keep-alive connection pool, timeouts and limits — a route's origin
//! is an [`Origin::sibling`] of the edge's, with a failing state of its own. A route goes
//! straight to its origin: an edge's origin may be a shield, a route's is not asked through it.
//!
//! What a route does not do: rewrite the origin's answers. A `Location` or a link the origin
//! writes as an absolute path (`/x`) points outside the prefix; an origin meant to be routed
//! writes relative ones (the dashboard's page does).

use std::net::SocketAddr;

use http::{HeaderValue, Response, StatusCode, Uri, header};

use crate::origin::Origin;
use crate::respond::EdgeBody;

/// The longest route prefix.
const MAX_PREFIX: usize = 256;

/// One `--route PREFIX=IP:PORT`, parsed: requests under `prefix` go to `origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Starts and ends with `/`, with at least one plain segment between (`/dashboard/`).
    pub prefix: String,
    pub origin: SocketAddr,
}

impl std::str::FromStr for RouteSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let Some((prefix, addr)) = s.split_once('=') else {
            return Err(format!(
                "{s:?} is not a route: write PREFIX=IP:PORT, e.g. /dashboard/=127.0.0.1:9000"
            ));
        };
        let prefix = prefix.trim();
        if !plain_prefix(prefix) {
            return Err(format!(
                "the route prefix {prefix:?} must start and end with / and hold plain path \
                 segments between (letters, digits, -, _, ., ~), e.g. /dashboard/"
            ));
        }
        let origin = addr.trim().parse::<SocketAddr>().map_err(|_| {
            format!(
                "the route origin {addr:?} is not an address: write IP:PORT, e.g. 127.0.0.1:9000"
            )
        })?;
        Ok(Self {
            prefix: prefix.to_string(),
            origin,
        })
    }
}

impl std::fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.prefix, self.origin)
    }
}

/// `/a/b/`: starts and ends with `/`, at least one segment, each made of letters, digits,
/// `-`, `_`, `.`, `~`, none `.` or `..`.
fn plain_prefix(prefix: &str) -> bool {
    let Some(inner) = prefix
        .strip_prefix('/')
        .and_then(|p| p.strip_suffix('/'))
        .filter(|p| !p.is_empty() && prefix.len() <= MAX_PREFIX)
    else {
        return false;
    };
    inner.split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
    })
}

/// Why a set of routes (and the static files' prefix) cannot be served together: two that
/// overlap, one under the other, would leave one of them unreachable.
pub fn check(routes: &[RouteSpec], static_prefix: Option<&str>) -> Result<(), String> {
    let prefixes = routes
        .iter()
        .map(|r| ("--route", r.prefix.as_str()))
        .chain(static_prefix.map(|p| ("--static-prefix", p)));
    let prefixes: Vec<(&str, &str)> = prefixes.collect();
    for (i, (a_flag, a)) in prefixes.iter().enumerate() {
        for (b_flag, b) in &prefixes[i + 1..] {
            if a.starts_with(b) || b.starts_with(a) {
                return Err(format!(
                    "{a_flag} {a} and {b_flag} {b} overlap: give each its own prefix"
                ));
            }
        }
    }
    Ok(())
}

/// Where a request goes.
pub enum Target {
    /// To this origin, for this origin-form target.
    Origin(Origin, Uri),
    /// Nowhere: the edge answers it (a route's prefix without its final slash).
    Redirect(Response<EdgeBody>),
}

/// The edge's routes, each with its origin.
#[derive(Debug, Clone, Default)]
pub struct Routes(Vec<(String, Origin)>);

impl Routes {
    /// The routes of `specs`, each origin a sibling of the edge's `origin`.
    pub fn new(specs: &[RouteSpec], origin: &Origin) -> Self {
        Self(
            specs
                .iter()
                .map(|s| (s.prefix.clone(), origin.sibling(s.origin)))
                .collect(),
        )
    }

    /// Where a request for `uri` goes: a route's origin with its prefix stripped, a redirect
    /// to a route's prefix, or `origin` with the target as asked.
    pub fn target(&self, origin: &Origin, uri: &Uri) -> Target {
        let path = uri.path();
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        for (prefix, routed) in &self.0 {
            if let Some(rest) = path.strip_prefix(prefix.as_str()) {
                let target = format!("/{rest}{query}");
                if let Ok(uri) = target.parse::<Uri>() {
                    return Target::Origin(routed.clone(), uri);
                }
            }
            if Some(path) == prefix.strip_suffix('/') {
                return Target::Redirect(redirect(&format!("{prefix}{query}")));
            }
        }
        let asked = uri
            .path_and_query()
            .map_or(Uri::from_static("/"), |p| Uri::from(p.clone()));
        Target::Origin(origin.clone(), asked)
    }
}

/// `308 Permanent Redirect` to `location`.
fn redirect(location: &str) -> Response<EdgeBody> {
    let mut response = Response::new(EdgeBody::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        let origin = Origin::new(
            "127.0.0.1:1".parse().expect("addr"),
            strata_lb::Timeouts::default(),
            std::time::Duration::from_secs(1),
        );
        let spec: RouteSpec = "/dashboard/=127.0.0.1:2".parse().expect("route");
        Routes::new(&[spec], &origin)
    }

    fn origin_of(routes: &Routes, target: &str) -> (SocketAddr, String) {
        let origin = Origin::new(
            "127.0.0.1:1".parse().expect("addr"),
            strata_lb::Timeouts::default(),
            std::time::Duration::from_secs(1),
        );
        match routes.target(&origin, &target.parse().expect("uri")) {
            Target::Origin(o, uri) => (o.addr, uri.to_string()),
            Target::Redirect(r) => panic!("a redirect to {:?}", r.headers()["location"]),
        }
    }

    #[test]
    fn a_routed_request_loses_its_prefix_and_keeps_its_query() {
        let r = routes();
        let two: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        let one: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert_eq!(origin_of(&r, "/dashboard/"), (two, "/".into()));
        assert_eq!(
            origin_of(&r, "/dashboard/api/roles?x=1"),
            (two, "/api/roles?x=1".into())
        );
        assert_eq!(origin_of(&r, "/dashboards/"), (one, "/dashboards/".into()));
        assert_eq!(origin_of(&r, "/users/12?a"), (one, "/users/12?a".into()));
        let origin = Origin::new(one, strata_lb::Timeouts::default(), Default::default());
        match r.target(&origin, &"/dashboard?x=1".parse().expect("uri")) {
            Target::Redirect(resp) => {
                assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
                assert_eq!(resp.headers()["location"], "/dashboard/?x=1");
            }
            Target::Origin(..) => panic!("a redirect"),
        }
    }

    #[test]
    fn a_bad_route_is_refused_with_the_reason() {
        for (bad, why) in [
            ("/dashboard/", "PREFIX=IP:PORT"),
            ("dashboard/=127.0.0.1:1", "start and end with /"),
            ("/dashboard=127.0.0.1:1", "start and end with /"),
            ("/=127.0.0.1:1", "start and end with /"),
            ("/a//b/=127.0.0.1:1", "plain"),
            ("/../=127.0.0.1:1", "plain"),
            ("/a%2e/=127.0.0.1:1", "plain"),
            ("/dashboard/=localhost:9000", "not an address"),
            ("/dashboard/=127.0.0.1", "not an address"),
        ] {
            let e = bad.parse::<RouteSpec>().expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        let ok: RouteSpec = " /a/b-c/ = 127.0.0.1:9 ".parse().expect("a route");
        assert_eq!(ok.to_string(), "/a/b-c/=127.0.0.1:9");
        assert_eq!(ok.to_string().parse::<RouteSpec>(), Ok(ok));
    }

    #[test]
    fn overlapping_prefixes_are_refused() {
        let r = |s: &str| s.parse::<RouteSpec>().expect("route");
        assert!(
            check(
                &[r("/a/=127.0.0.1:1"), r("/b/=127.0.0.1:1")],
                Some("/static/")
            )
            .is_ok()
        );
        let e = check(&[r("/a/=127.0.0.1:1"), r("/a/b/=127.0.0.1:1")], None).expect_err("nested");
        assert!(e.contains("overlap"), "{e}");
        let e = check(&[r("/docs/=127.0.0.1:1")], Some("/docs/")).expect_err("the same");
        assert!(e.contains("--static-prefix"), "{e}");
    }
}
