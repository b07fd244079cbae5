//! The configuration file (`--config PATH`, TOML), parsed at the edge into [`DnsConfig`]: the
//! rest of the server never sees raw text. Every mistake in a file is reported at once, one
//! line each, so a user fixes the file in one pass.
//!
//! ```toml
//! zone = "strata.test."          # the zone this server is authoritative for
//! services = ["www", "api"]      # names under the zone answered by policy ("@" = the apex)
//! ttl_secs = 5                   # TTL of those answers (default 5)
//! negative_ttl_secs = 5          # SOA minimum: how long NXDOMAIN/NODATA is cached (default ttl_secs)
//! zone_ttl_secs = 3600           # TTL of SOA and NS (default 3600)
//! policy = "geo"                 # geo | weighted | failover
//! nameservers = ["ns1.strata.test."]   # NS names (default ns1.<zone>)
//! primary_file = "/srv/strata/postgres/cluster.json"  # failover: prefer the data centre whose
//!                                # `databases` hold the `"primary"` this JSON file names (read
//!                                # every health interval); else the listed order
//!
//! [glue]                         # addresses of in-zone nameservers (A/AAAA, and NS additionals)
//! "ns1.strata.test." = ["127.0.0.1"]
//!
//! [health]                       # active checks of every balancer (all optional)
//! path = "/healthz"
//! interval_ms = 1000
//! timeout_ms = 500
//! rise = 2
//! fall = 2
//!
//! [[datacenter]]                 # in preference order (failover, and geo with no location)
//! name = "us-east"
//! balancers = ["127.0.10.1:8080", "[::1]:8080"]   # address + port of the health endpoint
//! weight = 3                     # weighted policy (default 1; 0 = only when no weighted DC is up)
//! latitude = 39.0                # geo: the DC's location ...
//! longitude = -77.5
//! countries = ["US", "CA"]       # ... and/or the countries/continents it serves
//! continents = ["NA"]
//! fallback = ["us-west"]         # geo: where its clients go when it is down, in order
//! databases = ["pg-1"]           # failover with primary_file: the database servers it holds
//! ```

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::rr::Name;
use serde::Deserialize;

/// TTLs may be at most a day.
const MAX_TTL_SECS: u32 = 86_400;

/// How an answer's data centre is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Nearest to the client (ECS address, else source address), by country, continent or
    /// great-circle distance.
    Geo,
    /// At random, in proportion to each data centre's weight.
    Weighted,
    /// The first healthy data centre in the configured order.
    Failover,
}

/// Settings of the active health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// A point on the globe, in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coordinates {
    pub latitude: f64,
    pub longitude: f64,
}

/// One data centre: its balancers and how the policies see it.
#[derive(Debug, Clone, PartialEq)]
pub struct DataCentre {
    pub name: String,
    /// Each balancer's health endpoint; its IP is what the answers carry.
    pub balancers: Vec<SocketAddr>,
    pub weight: u32,
    pub location: Option<Coordinates>,
    /// ISO 3166 country codes it serves, upper case.
    pub countries: Vec<String>,
    /// Continent codes it serves (`NA`, `EU`, …), upper case.
    pub continents: Vec<String>,
    /// Indexes into [`DnsConfig::datacentres`], in the order its clients fall back to.
    pub fallback: Vec<usize>,
    /// The database servers it holds (for [`DnsConfig::primary_file`]).
    pub databases: Vec<String>,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// The zone's apex, lower case, fully qualified.
    pub zone: Name,
    /// The names answered by policy, lower case, fully qualified, each in the zone.
    pub services: Vec<Name>,
    pub nameservers: Vec<Name>,
    /// Addresses of in-zone nameservers, answered for their names and added to NS answers.
    pub glue: Vec<(Name, Vec<IpAddr>)>,
    pub ttl: u32,
    pub negative_ttl: u32,
    pub zone_ttl: u32,
    pub policy: Policy,
    pub health: HealthSettings,
    pub datacentres: Vec<DataCentre>,
    /// Under `failover`: a JSON file whose `"primary"` names a database server; the data centre
    /// holding it is preferred (the listed order comes after it).
    pub primary_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    zone: String,
    services: Vec<String>,
    ttl_secs: Option<u32>,
    negative_ttl_secs: Option<u32>,
    zone_ttl_secs: Option<u32>,
    policy: Policy,
    nameservers: Option<Vec<String>>,
    #[serde(default)]
    glue: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    datacenter: Vec<RawDataCentre>,
    primary_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    path: Option<String>,
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    rise: Option<u32>,
    fall: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataCentre {
    name: String,
    #[serde(default)]
    balancers: Vec<String>,
    weight: Option<u32>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    #[serde(default)]
    countries: Vec<String>,
    #[serde(default)]
    continents: Vec<String>,
    #[serde(default)]
    fallback: Vec<String>,
    #[serde(default)]
    databases: Vec<String>,
}

/// Everything wrong with a configuration, one sentence per mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the DNS configuration has {} mistake(s):\n  - {}", .0.len(), .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

impl DnsConfig {
    /// Reads and validates the file at `path`.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses and validates a configuration's text.
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        let raw: RawConfig = toml_edit::de::from_str(text)
            .map_err(|e| ConfigErrors(vec![e.to_string().trim().replace('\n', " ")]))?;
        raw.validate()
    }
}

fn fqdn(text: &str) -> Result<Name, String> {
    let mut name =
        Name::from_ascii(text).map_err(|e| format!("{text:?} is not a domain name: {e}"))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

impl RawConfig {
    fn validate(self) -> Result<DnsConfig, ConfigErrors> {
        let mut errors = Vec::new();
        let zone = match fqdn(&self.zone) {
            Ok(z) if !z.is_root() => z,
            Ok(_) => {
                errors.push("zone must not be the root".to_string());
                Name::root()
            }
            Err(e) => {
                errors.push(format!("zone: {e}"));
                Name::root()
            }
        };
        let mut services = Vec::new();
        if self.services.is_empty() {
            errors.push("services is empty: name at least one (e.g. [\"www\"])".into());
        }
        for s in &self.services {
            match under(&zone, s) {
                Ok(name) if services.contains(&name) => {
                    errors.push(format!("service {s:?} is listed twice"))
                }
                Ok(name) => services.push(name),
                Err(e) => errors.push(format!("service {s:?}: {e}")),
            }
        }
        let nameservers = match &self.nameservers {
            None => match Name::from_ascii("ns1").map(|n| n.append_domain(&zone)) {
                Ok(Ok(n)) => vec![n],
                _ => Vec::new(),
            },
            Some(list) if list.is_empty() => {
                errors.push("nameservers is empty: name at least one".into());
                Vec::new()
            }
            Some(list) => list
                .iter()
                .filter_map(|n| {
                    fqdn(n)
                        .map_err(|e| errors.push(format!("nameserver: {e}")))
                        .ok()
                })
                .collect(),
        };
        let mut glue = Vec::new();
        for (name, addrs) in &self.glue {
            let Ok(owner) = under(&zone, name) else {
                errors.push(format!("glue {name:?} is not a name in the zone {zone}"));
                continue;
            };
            if services.contains(&owner) {
                errors.push(format!("glue {name:?} is also a service"));
            }
            if !nameservers.contains(&owner) {
                errors.push(format!("glue {name:?} is not one of the nameservers"));
            }
            if addrs.is_empty() {
                errors.push(format!("glue {name:?} has no addresses"));
            }
            let mut ips = Vec::new();
            for a in addrs {
                match a.parse::<IpAddr>() {
                    Ok(ip) => ips.push(ip),
                    Err(_) => errors.push(format!("glue {name:?}: {a:?} is not an IP address")),
                }
            }
            glue.push((owner, ips));
        }
        let ttl = self.ttl_secs.unwrap_or(5);
        let negative_ttl = self.negative_ttl_secs.unwrap_or(ttl);
        let zone_ttl = self.zone_ttl_secs.unwrap_or(3600);
        for (what, v) in [
            ("ttl_secs", ttl),
            ("negative_ttl_secs", negative_ttl),
            ("zone_ttl_secs", zone_ttl),
        ] {
            if v > MAX_TTL_SECS {
                errors.push(format!("{what} must be at most {MAX_TTL_SECS} (got {v})"));
            }
        }
        let health = self.health.validate(&mut errors);
        let datacentres = validate_datacentres(self.datacenter, self.policy, &mut errors);
        let primary_file = self.primary_file.map(std::path::PathBuf::from);
        if primary_file.is_some() && self.policy != Policy::Failover {
            errors.push(
                "primary_file orders the data centres of policy \"failover\": remove it, or use that policy"
                    .into(),
            );
        }
        if primary_file.is_some() && datacentres.iter().all(|dc| dc.databases.is_empty()) {
            errors.push(
                "primary_file needs the database servers of each data centre: add databases = [...] to the [[datacenter]] tables"
                    .into(),
            );
        }
        if errors.is_empty() {
            Ok(DnsConfig {
                zone,
                services,
                nameservers,
                glue,
                ttl,
                negative_ttl,
                zone_ttl,
                policy: self.policy,
                health,
                datacentres,
                primary_file,
            })
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

/// `label` (relative to the zone, or "@") or an absolute name inside the zone.
fn under(zone: &Name, text: &str) -> Result<Name, String> {
    if text == "@" {
        return Ok(zone.clone());
    }
    let name = if text.ends_with('.') {
        fqdn(text)?
    } else {
        let relative = Name::from_ascii(text).map_err(|e| format!("not a domain name: {e}"))?;
        relative
            .append_domain(zone)
            .map_err(|e| format!("too long under the zone: {e}"))?
            .to_lowercase()
    };
    if !zone.zone_of(&name) {
        return Err(format!("{name} is not in the zone {zone}"));
    }
    Ok(name)
}

impl RawHealth {
    fn validate(self, errors: &mut Vec<String>) -> HealthSettings {
        let path = self.path.unwrap_or_else(|| "/healthz".into());
        if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_whitespace() || b < 0x20) {
            errors.push(format!(
                "health.path must start with '/' and have no spaces (got {path:?})"
            ));
        }
        let interval_ms = self.interval_ms.unwrap_or(1000);
        let timeout_ms = self.timeout_ms.unwrap_or(500);
        if !(10..=600_000).contains(&interval_ms) {
            errors.push(format!(
                "health.interval_ms must be 10 to 600000 (got {interval_ms})"
            ));
        }
        if !(10..=60_000).contains(&timeout_ms) {
            errors.push(format!(
                "health.timeout_ms must be 10 to 60000 (got {timeout_ms})"
            ));
        }
        let rise = self.rise.unwrap_or(2);
        let fall = self.fall.unwrap_or(2);
        for (what, v) in [("rise", rise), ("fall", fall)] {
            if !(1..=100).contains(&v) {
                errors.push(format!("health.{what} must be 1 to 100 (got {v})"));
            }
        }
        HealthSettings {
            path,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            rise,
            fall,
        }
    }
}

fn validate_datacentres(
    raw: Vec<RawDataCentre>,
    policy: Policy,
    errors: &mut Vec<String>,
) -> Vec<DataCentre> {
    if raw.is_empty() {
        errors.push("no [[datacenter]]: configure at least one".into());
    }
    let mut index = HashMap::new();
    for (i, dc) in raw.iter().enumerate() {
        if dc.name.is_empty() {
            errors.push(format!("datacenter #{} has an empty name", i + 1));
        } else if index.insert(dc.name.clone(), i).is_some() {
            errors.push(format!("two datacenters are named {:?}", dc.name));
        }
    }
    let mut seen_balancers: HashMap<SocketAddr, String> = HashMap::new();
    let mut out = Vec::new();
    for dc in raw {
        let name = dc.name;
        let mut balancers = Vec::new();
        if dc.balancers.is_empty() {
            errors.push(format!("datacenter {name:?} has no balancers"));
        }
        for b in &dc.balancers {
            match b.parse::<SocketAddr>() {
                Ok(addr) if addr.port() == 0 || addr.ip().is_unspecified() => errors.push(format!(
                    "datacenter {name:?}: balancer {b:?} needs a real address and a port"
                )),
                Ok(addr) => {
                    if let Some(other) = seen_balancers.insert(addr, name.clone()) {
                        errors.push(format!(
                            "balancer {addr} is listed twice (in {other:?} and {name:?})"
                        ));
                    }
                    balancers.push(addr);
                }
                Err(_) => errors.push(format!(
                    "datacenter {name:?}: balancer {b:?} is not IP:PORT (IPv6 as [::1]:8080)"
                )),
            }
        }
        let location = match (dc.latitude, dc.longitude) {
            (Some(latitude), Some(longitude)) => {
                if !(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude) {
                    errors.push(format!(
                        "datacenter {name:?}: latitude must be -90 to 90 and longitude -180 to 180"
                    ));
                }
                Some(Coordinates {
                    latitude,
                    longitude,
                })
            }
            (None, None) => None,
            _ => {
                errors.push(format!(
                    "datacenter {name:?}: give both latitude and longitude, or neither"
                ));
                None
            }
        };
        let codes = |list: Vec<String>, what: &str, errors: &mut Vec<String>| {
            list.into_iter()
                .filter_map(|c| {
                    if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) {
                        Some(c.to_ascii_uppercase())
                    } else {
                        errors.push(format!(
                            "datacenter {name:?}: {what} code {c:?} is not two letters"
                        ));
                        None
                    }
                })
                .collect::<Vec<_>>()
        };
        let countries = codes(dc.countries, "country", errors);
        let continents = codes(dc.continents, "continent", errors);
        let mut fallback = Vec::new();
        let mut fallback_seen = HashSet::new();
        for f in &dc.fallback {
            match index.get(f) {
                None => errors.push(format!(
                    "datacenter {name:?}: fallback {f:?} is not a configured datacenter"
                )),
                Some(_) if *f == name => {
                    errors.push(format!("datacenter {name:?} lists itself as its fallback"))
                }
                Some(&i) => {
                    if fallback_seen.insert(i) {
                        fallback.push(i);
                    } else {
                        errors.push(format!(
                            "datacenter {name:?}: fallback {f:?} is listed twice"
                        ));
                    }
                }
            }
        }
        if policy == Policy::Geo
            && location.is_none()
            && countries.is_empty()
            && continents.is_empty()
        {
            errors.push(format!(
                "datacenter {name:?}: policy \"geo\" needs its latitude/longitude, or the countries or continents it serves"
            ));
        }
        let weight = dc.weight.unwrap_or(1);
        if weight > 10_000 {
            errors.push(format!(
                "datacenter {name:?}: weight must be 0 to 10000 (got {weight})"
            ));
        }
        out.push(DataCentre {
            name,
            balancers,
            weight,
            location,
            countries,
            continents,
            fallback,
            databases: dc.databases,
        });
    }
    if policy == Policy::Weighted && !out.is_empty() && out.iter().all(|dc| dc.weight == 0) {
        errors
            .push("policy \"weighted\" needs at least one datacenter with a weight above 0".into());
    }
    // Two DCs claiming one country (or continent) would make the geo answer depend on order.
    for (what, pick) in [
        (
            "country",
            (|dc: &DataCentre| &dc.countries) as fn(&DataCentre) -> &Vec<String>,
        ),
        ("continent", |dc: &DataCentre| &dc.continents),
    ] {
        let mut owner: HashMap<&str, &str> = HashMap::new();
        for dc in &out {
            for code in pick(dc) {
                if let Some(other) = owner.insert(code, &dc.name) {
                    errors.push(format!(
                        "{what} {code} is served by both {other:?} and {:?}",
                        dc.name
                    ));
                }
            }
        }
    }
    out
}

impl DataCentre {
    /// The IPs its answers carry: each balancer's address.
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.balancers.iter().map(SocketAddr::ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
zone = "Strata.Test."
services = ["www", "@"]
policy = "geo"
[[datacenter]]
name = "east"
balancers = ["127.0.10.1:8080", "[::1]:8081"]
latitude = 39.0
longitude = -77.5
fallback = ["west"]
[[datacenter]]
name = "west"
balancers = ["127.0.20.1:8080"]
countries = ["us"]
"#;

    #[test]
    fn a_good_file_is_parsed_with_its_defaults() {
        let c = DnsConfig::parse(GOOD).expect("valid");
        assert_eq!(c.zone.to_ascii(), "strata.test.");
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.services[0].to_ascii(), "www.strata.test.");
        assert_eq!(c.services[1], c.zone);
        assert_eq!(c.nameservers[0].to_ascii(), "ns1.strata.test.");
        assert_eq!((c.ttl, c.negative_ttl, c.zone_ttl), (5, 5, 3600));
        assert_eq!(c.health.rise, 2);
        assert_eq!(c.datacentres[0].fallback, vec![1]);
        assert_eq!(c.datacentres[1].countries, vec!["US".to_string()]);
    }

    #[test]
    fn every_mistake_is_reported_at_once() {
        let text = r#"
zone = "strata.test."
services = ["www", "www", "other.example."]
policy = "geo"
ttl_secs = 100000
[health]
rise = 0
[[datacenter]]
name = "east"
balancers = []
fallback = ["nowhere", "east"]
[[datacenter]]
name = "east"
balancers = ["nonsense", "127.0.0.1:0"]
latitude = 1.0
"#;
        let errors = DnsConfig::parse(text).expect_err("invalid").0;
        let all = errors.join("\n");
        for needle in [
            "listed twice",
            "not in the zone",
            "ttl_secs must be at most",
            "health.rise",
            "has no balancers",
            "fallback \"nowhere\" is not a configured datacenter",
            "lists itself",
            "two datacenters are named",
            "is not IP:PORT",
            "needs a real address",
            "both latitude and longitude",
            "policy \"geo\" needs",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn glue_must_belong_to_an_in_zone_nameserver() {
        let ok = DnsConfig::parse(&GOOD.replace(
            "policy = \"geo\"",
            "policy = \"geo\"\n[glue]\n\"ns1\" = [\"127.0.0.53\"]",
        ))
        .expect("valid glue");
        assert_eq!(ok.glue[0].0.to_ascii(), "ns1.strata.test.");
        let e = DnsConfig::parse(&GOOD.replace(
            "policy = \"geo\"",
            "policy = \"geo\"\n[glue]\n\"ns9\" = [\"nope\"]\n\"x.example.\" = []",
        ))
        .expect_err("bad glue")
        .to_string();
        for needle in [
            "not one of the nameservers",
            "not an IP address",
            "not a name in the zone",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in {e}");
        }
    }

    #[test]
    fn unknown_keys_and_policies_are_refused() {
        let e = DnsConfig::parse("zone = \"a.\"\nservices = [\"www\"]\npolicy = \"random\"\n")
            .expect_err("bad policy");
        assert!(e.to_string().contains("random"), "{e}");
        let e = DnsConfig::parse(&format!("{GOOD}\nextra = 1\n")).expect_err("unknown key");
        assert!(e.to_string().contains("extra"), "{e}");
    }
}
