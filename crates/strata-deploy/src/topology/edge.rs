//! `[edge]`: CDN edges (`strata edge`) on the public entry, optionally behind one shield edge in
//! front of the origin.
//!
//! ```toml
//! [edge]
//! count = 2          # edges (1 to 16); edge-1 takes the public port
//! shield = true      # one more edge, edge-shield, between the edges and the origin
//! memory_mib = 256   # each edge's memory store
//! disk_mib = 1024    # each edge's disk store in DIR/edge/<role> (0: memory only)
//! profile_ttl_secs = 60  # how long edges keep a profile without asking (writes purge it at
//!                        # once); 0: they revalidate every profile with its ETag
//! profile_stale_if_error_secs = 86400  # how long past that they may still answer a profile
//!                        # while every origin fails (stale-if-error); 0: never
//! tls_port = 8443    # HTTPS on edge-1 (the other edges on free ports), with
//! tls_cert = "cert.pem"  # tls_cert + tls_key, or dev_cert = true (a self-signed certificate
//! tls_key = "key.pem"    # per edge, written to DIR/edge-N-dev-cert.pem for clients to trust)
//! static_dir = "docs"    # files the edges clients reach serve themselves (a path from where
//!                        # `strata up` runs), at static_prefix, with max-age static_max_age_secs
//! static_prefix = "/static/"
//! static_max_age_secs = 3600
//! origin_timeout_ms = 10000  # how long an edge waits for its origin's answer head before
//!                        # it counts the origin as failing (and answers stale-if-error copies)
//! stale_grace_ms = 1000  # how long a request waits for a revalidation of a copy stale-if-error
//!                        # allows before that copy is its answer (0: until the origin answers)
//! dashboard = true       # the live dashboard ([observe] dashboard = true) at /dashboard/ on
//!                        # the public entry; off by default: anyone who reaches the public
//!                        # entry could then watch the deployment (changing it still needs an
//!                        # admin's token)
//! ```

use super::LbTls;
use super::reader::Section;

/// `[edge]` as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSpec {
    /// Edges clients reach (`edge-1` … `edge-N`).
    pub count: u16,
    /// One edge between them and the origin, so a miss on many edges costs one origin fetch.
    pub shield: bool,
    /// Each edge's memory store, MiB.
    pub memory_mib: u32,
    /// Each edge's disk store, MiB (0: memory only).
    pub disk_mib: u32,
    /// Seconds edges keep a profile without asking the origin (writes purge it at once).
    pub profile_ttl_secs: u64,
    /// Seconds past that edges may still answer a profile while the origin fails
    /// (`stale-if-error`, RFC 5861; 0: never).
    pub profile_stale_if_error_secs: u64,
    /// HTTPS on the edges clients reach: edge-1 on `port`, the others on free ports; the
    /// shield speaks plain HTTP to them on loopback.
    pub tls: Option<LbTls>,
    /// Static files the edges clients reach serve themselves (the origin never sees their
    /// paths): the directory, the URL prefix, and their `max-age`.
    pub static_files: Option<StaticFiles>,
    /// How long an edge waits for its origin's answer head (the shield's, for the edges in
    /// front of it), in milliseconds.
    pub origin_timeout_ms: u64,
    /// How long a request waits for a revalidation of a copy `stale-if-error` allows before
    /// that copy is its answer, in milliseconds (0: until the origin answers or fails).
    pub stale_grace_ms: u64,
    /// The edges clients reach send `/dashboard/` to the live dashboard.
    pub dashboard: bool,
}

/// The edges' default origin timeout: `strata edge`'s own.
pub const ORIGIN_TIMEOUT_MS: u64 = 10_000;
/// The edges' default stale grace: `strata edge`'s own.
pub const STALE_GRACE_MS: u64 = 1_000;

/// `[edge] static_dir`, `static_prefix`, `static_max_age_secs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticFiles {
    /// As written: a path from the directory `strata up` runs in, or absolute.
    pub dir: String,
    /// Starts and ends with `/`.
    pub prefix: String,
    pub max_age_secs: u64,
}

/// Whether a URL prefix for static files is one: `/…/`, at most 128 characters of letters,
/// digits, `-`, `_`, `.`, `~` and `/`, with no empty or dot segment.
fn valid_prefix(p: &str) -> bool {
    p.len() <= 128
        && p.starts_with('/')
        && p.ends_with('/')
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~/".contains(c))
        && p.trim_matches('/')
            .split('/')
            .all(|seg| p == "/" || !(seg.is_empty() || seg == "." || seg == ".."))
}

/// The most edges a topology runs on one machine.
pub const MAX_EDGES: i64 = 16;
/// The longest `profile_stale_if_error_secs`: a week (`strata api`'s bound).
const MAX_STALE_IF_ERROR_SECS: i64 = 604_800;

/// Reads `[edge]`.
pub(super) fn read(sec: &mut Section<'_>) -> EdgeSpec {
    let count = sec.int("count", 1..=MAX_EDGES).unwrap_or(1);
    let shield = sec.bool("shield").unwrap_or(false);
    let memory_mib = sec.int("memory_mib", 1..=65_536).unwrap_or(256);
    let disk_mib = sec.int("disk_mib", 0..=1_048_576).unwrap_or(1024);
    let profile_ttl_secs = sec.int("profile_ttl_secs", 0..=86_400).unwrap_or(60);
    let profile_stale_if_error_secs = sec
        .int("profile_stale_if_error_secs", 0..=MAX_STALE_IF_ERROR_SECS)
        .unwrap_or(86_400);
    let tls = super::lb::tls(sec, "edge");
    let static_dir = sec.string("static_dir", "a directory's path", |s| {
        !s.trim().is_empty() && !s.contains('\0')
    });
    let static_prefix = sec.string(
        "static_prefix",
        "a URL path that starts and ends with / (e.g. \"/static/\")",
        valid_prefix,
    );
    let static_max_age = sec.int("static_max_age_secs", 0..=31_536_000);
    let origin_timeout_ms = sec
        .int("origin_timeout_ms", 100..=60_000)
        .unwrap_or(ORIGIN_TIMEOUT_MS);
    let stale_grace_ms = sec
        .int("stale_grace_ms", 0..=60_000)
        .unwrap_or(STALE_GRACE_MS);
    let dashboard = sec.bool("dashboard").unwrap_or(false);
    if static_dir.is_none() {
        for key in ["static_prefix", "static_max_age_secs"] {
            if sec.has(key) {
                sec.error(
                    key,
                    format!("`edge.{key}` is about static files: add `static_dir`"),
                );
            }
        }
    }
    let static_files = static_dir.map(|dir| StaticFiles {
        dir,
        prefix: static_prefix.unwrap_or_else(|| "/static/".into()),
        max_age_secs: static_max_age.unwrap_or(3600),
    });
    if memory_mib < 2 {
        sec.error(
            "memory_mib",
            "`edge.memory_mib` must be at least 2: an edge stores objects of up to half its \
             memory",
        );
    }
    EdgeSpec {
        count,
        shield,
        memory_mib,
        disk_mib,
        profile_ttl_secs,
        profile_stale_if_error_secs,
        tls,
        static_files,
        origin_timeout_ms,
        stale_grace_ms,
        dashboard,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::super::*;

    #[test]
    fn edges_are_counted_bounded_and_sized() {
        let t = Topology::parse(
            "[api]\ncount = 1\n[edge]\ncount = 3\nshield = true\nmemory_mib = 64\ndisk_mib = 0\nprofile_ttl_secs = 0\nprofile_stale_if_error_secs = 0\n",
            8080,
        )
        .expect("valid");
        assert_eq!(
            t.edge,
            Some(EdgeSpec {
                count: 3,
                shield: true,
                memory_mib: 64,
                disk_mib: 0,
                profile_ttl_secs: 0,
                profile_stale_if_error_secs: 0,
                tls: None,
                static_files: None,
                origin_timeout_ms: super::ORIGIN_TIMEOUT_MS,
                stale_grace_ms: super::STALE_GRACE_MS,
                dashboard: false,
            })
        );
        assert_eq!(
            t.instance_count(),
            1 + 3 + 1,
            "an API server, 3 edges and the shield"
        );
        let t = Topology::parse("[api]\ncount = 1\n[edge]\n", 8080).expect("valid");
        assert_eq!(
            t.edge,
            Some(EdgeSpec {
                count: 1,
                shield: false,
                memory_mib: 256,
                disk_mib: 1024,
                profile_ttl_secs: 60,
                profile_stale_if_error_secs: 86_400,
                tls: None,
                static_files: None,
                origin_timeout_ms: super::ORIGIN_TIMEOUT_MS,
                stale_grace_ms: super::STALE_GRACE_MS,
                dashboard: false,
            })
        );
        assert_eq!(
            Topology::parse("[api]\ncount = 1\n", 8080)
                .expect("valid")
                .edge,
            None
        );
        let e = errors(
            "[api]\ncount = 1\n[edge]\ncount = 17\nshield = \"yes\"\nmemory_mib = 1\ncache = 2\nprofile_stale_if_error_secs = 604801\n",
        );
        assert_eq!(e.len(), 5, "{e:#?}");
        assert_eq!(
            e[0].message,
            "`edge.count` must be between 1 and 16, not 17"
        );
        assert_eq!(e[0].line, Some(4));
        assert!(e[1].message.contains("edge.shield"), "{e:#?}");
        assert!(e[2].message.contains("at least 2"), "{e:#?}");
        assert!(e[3].message.contains("unknown key `edge.cache`"), "{e:#?}");
        assert_eq!(
            e[4].message,
            "`edge.profile_stale_if_error_secs` must be between 0 and 604800, not 604801"
        );
    }

    #[test]
    fn edges_take_tls_as_the_balancer_does_and_refuse_what_does_not_fit() {
        let t = Topology::parse(
            "[api]\ncount = 1\n[edge]\ncount = 2\ntls_port = 8443\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
            8080,
        )
        .expect("valid");
        assert_eq!(
            t.edge.expect("edge").tls,
            Some(LbTls {
                port: 8443,
                cert_and_key: Some(("c.pem".into(), "k.pem".into())),
                redirect: false
            })
        );
        for (text, expect) in [
            (
                "[edge]\ntls_port = 8443\n",
                "`edge.tls_port` needs `tls_cert` and `tls_key`",
            ),
            (
                "[edge]\nhttps_redirect = true\n",
                "`edge.https_redirect` needs TLS: set `tls_port`",
            ),
            (
                "[edge]\ntls_port = 8080\ndev_cert = true\n",
                "edge-1's TLS listener (`edge.tls_port`) clashes with the public port 8080",
            ),
            (
                "[lb]\ntls_port = 8443\ndev_cert = true\n[edge]\ntls_port = 8443\ndev_cert = true\n",
                "clashes with port 8443 of the balancer's TLS listener",
            ),
        ] {
            let e = errors(&format!("[api]\ncount = 1\n{text}"));
            assert_eq!(e.len(), 1, "{text}: {e:#?}");
            assert!(e[0].message.contains(expect), "{text}: {e:#?}");
        }
    }

    #[test]
    fn static_files_take_a_directory_a_prefix_and_a_max_age() {
        let t = Topology::parse(
            "[api]\ncount = 1\n[edge]\nstatic_dir = \"docs\"\nstatic_prefix = \"/docs/\"\nstatic_max_age_secs = 60\n",
            8080,
        )
        .expect("valid");
        assert_eq!(
            t.edge.and_then(|e| e.static_files),
            Some(StaticFiles {
                dir: "docs".into(),
                prefix: "/docs/".into(),
                max_age_secs: 60,
            })
        );
        let t = Topology::parse(
            "[api]\ncount = 1\n[edge]\nstatic_dir = \"/srv/www\"\n",
            8080,
        )
        .expect("valid");
        let files = t.edge.and_then(|e| e.static_files).expect("static files");
        assert_eq!(
            (files.prefix.as_str(), files.max_age_secs),
            ("/static/", 3600)
        );
        for (bad, line) in [
            ("static_dir = \"\"\n", 4),
            ("static_dir = \"d\"\nstatic_prefix = \"static\"\n", 5),
            ("static_dir = \"d\"\nstatic_prefix = \"/a/../b/\"\n", 5),
            ("static_dir = \"d\"\nstatic_prefix = \"/a b/\"\n", 5),
            ("static_dir = \"d\"\nstatic_max_age_secs = -1\n", 5),
            ("static_prefix = \"/s/\"\n", 4),
        ] {
            let e = errors(&format!("[api]\ncount = 1\n[edge]\n{bad}"));
            assert_eq!(e.len(), 1, "{bad}: {e:#?}");
            assert_eq!(e[0].line, Some(line), "{bad}: {e:#?}");
        }
    }

    #[test]
    fn the_origin_timeout_and_the_stale_grace_are_bounded() {
        let t = Topology::parse(
            "[api]\ncount = 1\n[edge]\norigin_timeout_ms = 2000\nstale_grace_ms = 0\n",
            8080,
        )
        .expect("valid");
        assert_eq!(
            t.edge.map(|e| (e.origin_timeout_ms, e.stale_grace_ms)),
            Some((2000, 0))
        );
        for (key, bad) in [
            ("origin_timeout_ms", "50"),
            ("origin_timeout_ms", "60001"),
            ("origin_timeout_ms", "\"2s\""),
            ("stale_grace_ms", "-1"),
            ("stale_grace_ms", "60001"),
        ] {
            let e = errors(&format!("[api]\ncount = 1\n[edge]\n{key} = {bad}\n"));
            assert_eq!(e.len(), 1, "{key} = {bad}: {e:#?}");
            assert_eq!(e[0].line, Some(4), "{key} = {bad}: {e:#?}");
        }
    }
}
