//! `[dns]`: the deployment's authoritative DNS server (`strata dns`), answering its service
//! names with the healthy balancers of the data centre it picks.
//!
//! ```toml
//! [dns]
//! zone = "strata.test."   # the zone it is authoritative for (default)
//! services = ["www"]      # names under the zone it answers with balancers ("@": the apex)
//! port = 0                # UDP and TCP on 127.0.0.1 (0: any free port, the default)
//! ttl_secs = 5            # TTL of the answers (0 to 86400)
//! policy = "failover"     # or "weighted"; or "geo", with `[[datacenter]]` tables and:
//! # geoip = "GeoLite2-City.mmdb"   # a MaxMind-format GeoIP database
//! interval_ms = 1000      # health checks of every balancer: how often,
//! timeout_ms = 500        #   how long one may take,
//! rise = 2                #   successes in a row that bring a balancer back,
//! fall = 2                #   failures in a row that take it out of the answers
//! ```
//!
//! Without `[[datacenter]]` tables a topology is one data centre, [`LOCAL_DATACENTRE`]: its
//! balancers are `[lb]`'s, each on an address of its own (answers carry addresses, not ports);
//! with `[edge]` it answers the edges clients reach instead, laid out the same way.
//! With them, DNS answers one data centre per table, each with its own balancers
//! (`datacenters.rs`); [`DnsSpec`] names the data centres' policy and leaves their list to the
//! plan. The `geo` policy needs them, with their locations, and a GeoIP database (`geoip`).

use super::reader::Section;

/// The one data centre of a topology without `[[datacenter]]` tables.
pub const LOCAL_DATACENTRE: &str = "local";

/// How the DNS server picks the data centre of an answer (`policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsPolicy {
    /// The first healthy data centre in order.
    Failover,
    /// A healthy data centre at random, in proportion to its weight.
    Weighted,
    /// The client's data centre by the GeoIP database (`geoip`): its country's, its
    /// continent's, else the nearest (with `[[datacenter]]` tables).
    Geo,
}

impl DnsPolicy {
    /// The name `strata dns`'s configuration file gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsPolicy::Failover => "failover",
            DnsPolicy::Weighted => "weighted",
            DnsPolicy::Geo => "geo",
        }
    }
}

/// `[dns]` as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSpec {
    /// The zone's apex, lower case, ending in `.`.
    pub zone: String,
    /// Names under the zone answered with balancers, relative to it (`@`: the apex).
    pub services: Vec<String>,
    /// The port of the UDP and TCP listener on 127.0.0.1 (0: any free one).
    pub port: u16,
    pub ttl_secs: u32,
    pub policy: DnsPolicy,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
    /// A MaxMind-format GeoIP database (`geoip`), for `policy = "geo"`.
    pub geoip: Option<String>,
}

impl Default for DnsSpec {
    fn default() -> Self {
        Self {
            zone: "strata.test.".into(),
            services: vec!["www".into()],
            port: 0,
            ttl_secs: 5,
            policy: DnsPolicy::Failover,
            interval_ms: 1000,
            timeout_ms: 500,
            rise: 2,
            fall: 2,
            geoip: None,
        }
    }
}

impl DnsSpec {
    /// A service's fully qualified name (`www` → `www.strata.test.`).
    pub fn fqdn(&self, service: &str) -> String {
        if service == "@" {
            self.zone.clone()
        } else {
            format!("{service}.{}", self.zone)
        }
    }
}

/// Whether `label` is a DNS label a host name may have: letters, digits and inner hyphens,
/// 1 to 63 of them.
fn is_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// Dot-separated labels (no trailing dot), at most 253 characters.
fn is_relative_name(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_label)
}

/// Reads `[dns]`.
pub(super) fn read(sec: &mut Section<'_>) -> DnsSpec {
    let defaults = DnsSpec::default();
    let zone = sec
        .string(
            "zone",
            "a domain name such as \"strata.test.\" (letters, digits, hyphens; not the root)",
            |z| is_relative_name(z.strip_suffix('.').unwrap_or(z)),
        )
        .map(|z| {
            let z = z.to_ascii_lowercase();
            if z.ends_with('.') { z } else { format!("{z}.") }
        });
    let zone = zone.unwrap_or(defaults.zone);
    let services = sec.strings(
        "services",
        "names under the zone such as \"www\" (or \"@\" for the apex)",
        |s| s == "@" || is_relative_name(s),
    );
    let given_none = sec
        .get("services")
        .and_then(|item| item.as_array())
        .is_some_and(|a| a.is_empty());
    let services = match services {
        Some(_) if given_none => {
            sec.error(
                "services",
                "`dns.services` is empty: name at least one (e.g. [\"www\"])",
            );
            defaults.services
        }
        Some(list) => {
            let mut seen: Vec<String> = Vec::new();
            for s in list.iter().map(|s| s.to_ascii_lowercase()) {
                if seen.contains(&s) {
                    sec.error("services", format!("`dns.services` lists {s:?} twice"));
                } else {
                    seen.push(s);
                }
            }
            if seen.is_empty() {
                defaults.services
            } else {
                seen
            }
        }
        None => defaults.services,
    };
    for service in &services {
        let name = if service == "@" {
            zone.clone()
        } else {
            format!("{service}.{zone}")
        };
        if name.len() > 254 {
            sec.error(
                "services",
                format!("`dns.services`: {service:?} under the zone is longer than 253 characters"),
            );
        }
    }
    let port = sec.port("port").unwrap_or(0);
    let ttl_secs = sec.int("ttl_secs", 0..=86_400).unwrap_or(defaults.ttl_secs);
    let geoip = sec.path("geoip");
    let policy = if sec.get("policy").and_then(|p| p.as_str()) == Some("geo") && geoip.is_none() {
        sec.error(
            "policy",
            "`dns.policy = \"geo\"` needs a GeoIP database: give its path in `dns.geoip` (a \
             MaxMind-format .mmdb), and `[[datacenter]]` tables with their locations",
        );
        None
    } else {
        sec.one_of(
            "policy",
            vec![
                ("failover".to_string(), DnsPolicy::Failover),
                ("weighted".to_string(), DnsPolicy::Weighted),
                ("geo".to_string(), DnsPolicy::Geo),
            ],
        )
    };
    let interval_ms = sec.millis("interval_ms", 10..=600_000);
    let timeout_ms = sec.millis("timeout_ms", 10..=60_000);
    let rise = sec.int("rise", 1..=100);
    let fall = sec.int("fall", 1..=100);
    DnsSpec {
        zone,
        services,
        port,
        ttl_secs,
        policy: policy.unwrap_or(defaults.policy),
        interval_ms: interval_ms.unwrap_or(defaults.interval_ms),
        timeout_ms: timeout_ms.unwrap_or(defaults.timeout_ms),
        rise: rise.unwrap_or(defaults.rise),
        fall: fall.unwrap_or(defaults.fall),
        geoip,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::super::*;
    use super::{DnsPolicy, DnsSpec};

    #[test]
    fn dns_takes_its_settings_and_defaults_in_front_of_the_balancers() {
        let t = Topology::parse("[lb]\ncount = 2\n[api]\ncount = 1\n[dns]\n", 8080).expect("valid");
        assert_eq!(t.dns, Some(DnsSpec::default()));
        assert_eq!(t.instance_count(), 4, "2 balancers, an API server, dns-1");
        let t = Topology::parse(
            "[lb]\ncount = 2\n[api]\ncount = 1\n[dns]\nzone = \"Example.Test\"\nservices = [\"www\", \"api.v1\", \"@\"]\nport = 5353\nttl_secs = 0\npolicy = \"weighted\"\ninterval_ms = 200\ntimeout_ms = 100\nrise = 1\nfall = 1\n",
            8080,
        )
        .expect("valid");
        let dns = t.dns.expect("dns");
        assert_eq!(dns.zone, "example.test.");
        assert_eq!(dns.services, ["www", "api.v1", "@"]);
        assert_eq!(dns.fqdn("www"), "www.example.test.");
        assert_eq!(dns.fqdn("@"), "example.test.");
        assert_eq!(
            (dns.port, dns.ttl_secs, dns.policy),
            (5353, 0, DnsPolicy::Weighted)
        );
        assert_eq!(
            (dns.interval_ms, dns.timeout_ms, dns.rise, dns.fall),
            (200, 100, 1, 1)
        );
    }

    #[test]
    fn every_mistake_in_dns_is_reported_with_its_line() {
        let e = errors(
            "[lb]\ncount = 2\n[api]\ncount = 1\n[dns]\nzone = \"bad zone\"\nservices = [\"www\", \"-x\"]\nport = 70000\nttl_secs = 90000\npolicy = \"geo\"\ninterval_ms = 5\ntimeout_ms = 0\nrise = 0\nfall = 101\ncount = 1\n",
        );
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        let lines: Vec<Option<usize>> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, (6..=15).map(Some).collect::<Vec<_>>(), "{shown:#?}");
        for (i, says) in [
            "`dns.zone` must be a domain name",
            "`dns.services` entries must be names under the zone",
            "`dns.port` must be a port number",
            "`dns.ttl_secs` must be between 0 and 86400",
            "needs a GeoIP database: give its path in `dns.geoip`",
            "`dns.interval_ms` must be a number of milliseconds from 10 to 600000",
            "`dns.timeout_ms` must be a number of milliseconds from 10 to 60000",
            "`dns.rise` must be between 1 and 100",
            "`dns.fall` must be between 1 and 100",
            "unknown key `dns.count`",
        ]
        .iter()
        .enumerate()
        {
            assert!(shown[i].contains(says), "{says:?} in {shown:#?}");
        }
        let e = errors("[lb]\n[api]\ncount = 1\n[dns]\nservices = []\npolicy = \"nearest\"\n");
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e[0].message.contains("is empty"), "{e:#?}");
        assert!(
            e[1].message
                .contains("must be one of \"failover\", \"weighted\" or \"geo\""),
            "{e:#?}"
        );
        let long = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(60),
        ]
        .join(".");
        let e = errors(&format!(
            "[lb]\n[api]\ncount = 1\n[dns]\nservices = [\"{long}\"]\n"
        ));
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].message.contains("longer than 253"), "{e:#?}");
        let e = errors("[lb]\n[api]\ncount = 1\n[dns]\nservices = [\"www\", \"WWW\"]\n");
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].message.contains("\"www\" twice"), "{e:#?}");
    }

    #[test]
    fn dns_hands_out_the_balancers_or_the_edges_also_per_data_centre() {
        let e = errors("[api]\ncount = 1\n[dns]\n");
        assert_eq!(e.len(), 1, "{e:#?}");
        assert_eq!(e[0].line, Some(3), "{e:#?}");
        assert!(e[0].message.contains("add `[lb]`"), "{e:#?}");
        // With edges, DNS hands them out: no balancer is needed for it.
        for valid in [
            "[api]\ncount = 1\n[edge]\ncount = 2\n[dns]\n",
            "[lb]\n[api]\ncount = 1\n[edge]\ncount = 2\nshield = true\n[dns]\n",
        ] {
            Topology::parse(valid, 8080).expect(valid);
        }
        // Each data centre's edges, in front of its own balancers.
        let per_datacentre = "[lb]\n[api]\ncount = 2\n[edge]\ncount = 2\nshield = true\n\
             [data]\nengine = \"postgres\"\n[dns]\n\
             [[datacenter]]\nname = \"us-east\"\n[[datacenter]]\nname = \"us-west\"\n\
             [[link]]\nbetween = [\"us-west\", \"us-east\"]\none_way_ms = 30\n";
        Topology::parse(per_datacentre, 8080).expect(per_datacentre);
        let e = errors("[lb]\n[api]\ncount = 1\n[dns]\n[[datacenter]]\nname = \"eu\"\n");
        assert_eq!(e.len(), 1, "{e:#?}");
        assert_eq!(e[0].line, Some(5), "{e:#?}");
        assert!(
            e[0].message
                .contains("`[[datacenter]]` tables need `[data] engine = \"postgres\"`"),
            "{e:#?}"
        );
        let e = errors("[lb]\n[api]\ncount = 1\n[dns]\nport = 8080\n");
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].message.contains("clashes with the public port"),
            "{e:#?}"
        );
    }
}
