//! `[[datacenter]]` and `[[link]]`: several data centres behind the deployment's DNS, and the
//! latency between them (docs/datacenters.md).
//!
//! ```toml
//! [[datacenter]]          # in preference order: the first holds the PostgreSQL primary
//! name = "us-east"        # a DNS label: its roles are us-east-lb-1, us-east-api-1, …
//! lb = 1                  # balancers (1 to 8; default `[lb] count`)
//! api = 2                 # API servers (1 to 64; default `[api] count`)
//! databases = 1           # PostgreSQL servers (1 to 4; default 1): the primary, or replicas
//! # weight = 1            # DNS `policy = "weighted"`: share of answers (0: standby)
//! # latitude = 39.0; longitude = -77.5; countries = ["US"]; continents = ["NA"]   # for geo DNS
//!
//! [[link]]                # every pair of data centres needs one
//! between = ["us-east", "us-west"]
//! one_way_ms = 30         # each direction's bytes arrive this much later (0 to 10000)
//! ```
//!
//! `[cache] engine = "redis" | "memcached"` gives every data centre its own `nodes` shared
//! cache servers (`us-east-cache-1` …), which only its own API servers use: cache traffic never
//! crosses a link, and neither do invalidations (another data centre's caches may serve a row
//! written here until their TTLs end; the plan's `cache.rs` says how long).
//! `[sessions] engine = "redis"` is refused with data centres (sessions stay in the database),
//! and so are shard groups.
//!
//! Data centres need `[dns]` (the public entry: it answers with one data centre's balancers),
//! `[lb]` and `[data] engine = "postgres"` run by `strata up` (one replicated cluster whose
//! servers are spread over the data centres, `pg-1` … numbered across them in order). A missing
//! link is refused rather than taken as zero latency: a topology's numbers then never silently
//! assume two data centres sit side by side. Every mistake is reported with its line.

use super::reader::Section;
use super::{CommitMode, DataEngine, Topology};

/// The most data centres (each takes an address block 127.0.(10 + d).0/24 for its balancers).
pub const MAX_DATACENTRES: usize = 8;

/// The most PostgreSQL servers in one data centre.
pub const MAX_DATABASES_PER_DC: i64 = 4;

/// The most PostgreSQL servers over all data centres (a primary and its replicas).
pub const MAX_DATABASES: usize = 1 + super::MAX_REPLICAS as usize;

/// The longest one-way delay of a link, milliseconds.
pub const MAX_ONE_WAY_MS: u64 = 10_000;

/// Degrees of latitude or longitude (compared bit for bit, so a topology stays `Eq`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Degrees(pub f64);

impl Eq for Degrees {}

/// One `[[datacenter]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatacenterSpec {
    pub name: String,
    /// Balancers it runs.
    pub lb: u16,
    /// API servers it runs.
    pub api: u16,
    /// PostgreSQL servers it runs (the first data centre's first is the primary).
    pub databases: u8,
    /// Its share of answers under `[dns] policy = "weighted"`.
    pub weight: u32,
    /// Where it is (latitude, longitude), for geo DNS.
    pub location: Option<(Degrees, Degrees)>,
    /// ISO country codes it serves, for geo DNS.
    pub countries: Vec<String>,
    /// Continent codes it serves, for geo DNS.
    pub continents: Vec<String>,
}

/// One `[[link]]`: the one-way delay between two data centres.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    pub between: (String, String),
    pub one_way_ms: u64,
}

/// Whether `name` may name a data centre: a lower-case DNS label of at most 20 characters
/// (it prefixes role names).
fn is_dc_name(name: &str) -> bool {
    (1..=20).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
}

const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// Reads one `[[datacenter]]`; `lb` and `api` default to the counts of `[lb]` and `[api]`.
fn read_one(sec: &mut Section<'_>, lb: u16, api: u16) -> DatacenterSpec {
    let name = sec
        .string(
            "name",
            "a lower-case DNS label of at most 20 characters (letters, digits, inner hyphens; \
             starting with a letter)",
            is_dc_name,
        )
        .unwrap_or_default();
    if !sec.has("name") {
        sec.error(
            "name",
            "a `[[datacenter]]` needs a `name` (e.g. \"us-east\")",
        );
    }
    let lb = sec.int("lb", 1..=8).unwrap_or(lb);
    let api = sec.int("api", 1..=super::MAX_COUNT).unwrap_or(api);
    let databases = match sec.get("databases").and_then(toml_edit::Item::as_integer) {
        Some(0) => {
            let message = format!(
                "`{}` is 0: every data centre needs a database node (its local reads, and \
                 where the primary can move when another data centre fails)",
                sec.name("databases")
            );
            sec.error("databases", message);
            1
        }
        _ => sec.int("databases", 1..=MAX_DATABASES_PER_DC).unwrap_or(1),
    };
    let weight = sec.int("weight", 0..=1000).unwrap_or(1);
    let degrees = |sec: &mut Section<'_>, key: &'static str, limit: f64| {
        sec.typed(
            key,
            format!("a number of degrees from -{limit} to {limit}"),
            |item| {
                let v = item
                    .as_float()
                    .or_else(|| item.as_integer().map(|n| n as f64))?;
                (v.is_finite() && v.abs() <= limit).then_some(Degrees(v))
            },
        )
    };
    let latitude = degrees(sec, "latitude", 90.0);
    let longitude = degrees(sec, "longitude", 180.0);
    if sec.has("latitude") != sec.has("longitude") {
        let key = if sec.has("latitude") {
            "latitude"
        } else {
            "longitude"
        };
        let message = format!(
            "`{}`: give both `latitude` and `longitude`, or neither",
            sec.name(key)
        );
        sec.error(key, message);
    }
    let countries = sec
        .strings(
            "countries",
            "two-letter ISO country codes such as \"US\"",
            |c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()),
        )
        .unwrap_or_default();
    let continents = sec
        .strings(
            "continents",
            "continent codes (AF, AN, AS, EU, NA, OC, SA)",
            |c| CONTINENTS.contains(&c),
        )
        .unwrap_or_default();
    DatacenterSpec {
        name,
        lb,
        api,
        databases,
        weight,
        location: latitude.zip(longitude),
        countries,
        continents,
    }
}

/// Reads one `[[link]]`.
fn read_link(sec: &mut Section<'_>) -> Option<(String, String, u64)> {
    let between = sec.strings("between", "data centre names", |_| true);
    let between = match between.as_deref() {
        Some([a, b]) => Some((a.clone(), b.clone())),
        Some(_) => {
            let message = format!(
                "`{}` must name exactly two data centres, e.g. [\"us-east\", \"us-west\"]",
                sec.name("between")
            );
            sec.error("between", message);
            None
        }
        None => {
            if !sec.has("between") {
                sec.error(
                    "between",
                    "a `[[link]]` needs `between = [\"A\", \"B\"]`, the two data centres it joins",
                );
            }
            None
        }
    };
    let one_way_ms = sec.millis("one_way_ms", 0..=MAX_ONE_WAY_MS);
    if !sec.has("one_way_ms") {
        sec.error(
            "one_way_ms",
            "a `[[link]]` needs `one_way_ms`, the one-way delay between its data centres (0 for none)",
        );
    }
    let (a, b) = between?;
    Some((a, b, one_way_ms?))
}

/// Reads `[[datacenter]]` and `[[link]]` from the top level and checks them against the rest of
/// the topology `t` (read before): every mistake is recorded on its line. Sets the totals the
/// rest of the topology counts with — API servers, balancers, and the PostgreSQL replicas
/// (every database server but the primary).
pub(super) fn read(root: &mut Section<'_>, t: &mut Topology) {
    let api_default = t.api.count.max(1);
    let lb_default = t.lb.as_ref().map_or(1, |lb| lb.count);
    let data_has_replicas = root
        .get("data")
        .and_then(toml_edit::Item::as_table_like)
        .is_some_and(|d| d.contains_key("replicas"));
    let dcs = root
        .tables("datacenter", |sec, line| {
            (read_one(sec, lb_default, api_default), line)
        })
        .unwrap_or_default();
    let links = root.tables("link", |sec, line| (read_link(sec), line));
    let links = links.unwrap_or_default();
    if dcs.is_empty() {
        if let Some((_, line)) = links.first() {
            root.error_at(
                *line,
                "a `[[link]]` joins data centres: add `[[datacenter]]` tables",
            );
        }
        return;
    }
    let first_line = dcs[0].1;
    if dcs.len() > MAX_DATACENTRES {
        root.error_at(
            dcs[MAX_DATACENTRES].1,
            format!(
                "at most {MAX_DATACENTRES} `[[datacenter]]` tables, not {}",
                dcs.len()
            ),
        );
    }
    let mut needs = Vec::new();
    if t.dns.is_none() {
        needs.push("`[dns]` (the public entry: it answers with a data centre's balancers)");
    }
    if t.lb.is_none() {
        needs.push("`[lb]` (each data centre's balancers)");
    }
    if !matches!(t.data, DataEngine::Postgres { .. }) {
        needs.push("`[data] engine = \"postgres\"` run by strata up (no `url`)");
    }
    if !needs.is_empty() {
        root.error_at(
            first_line,
            format!("`[[datacenter]]` tables need {}", needs.join(", ")),
        );
    }
    if data_has_replicas {
        root.error_at(
            root.line_of_in("data", "replicas"),
            "`data.replicas` does not go with `[[datacenter]]`: each data centre says how many \
             PostgreSQL servers it runs with `databases` (the first data centre's first is the \
             primary)",
        );
    }
    if t.shards > 1 || t.spare_shards > 0 {
        root.error_at(
            first_line,
            "`[[datacenter]]` with shard groups is not available yet: use one shard group",
        );
    }
    // A shared cache (`[cache] engine = "redis" | "memcached"`) goes with data centres: each
    // runs its own `nodes` servers (the plan's `cache.rs`). A session store does not (yet):
    // sessions must be one store every data centre sees, and its Redis is no replicated one.
    if t.sessions == super::SessionsEngine::Redis {
        root.error_at(
            root.line_of_in("sessions", "engine").or(first_line),
            "`[[datacenter]]` with sessions in Redis (`[sessions]`) is not available yet: keep \
             sessions in the database",
        );
    }
    // Names: unique.
    let mut names: Vec<&str> = Vec::new();
    for (dc, line) in &dcs {
        if dc.name.is_empty() {
            continue;
        }
        if names.contains(&dc.name.as_str()) {
            root.error_at(*line, format!("two data centres are named {:?}", dc.name));
        } else {
            names.push(&dc.name);
        }
    }
    // What `strata dns` would refuse at its start: a country or continent served twice (its
    // geo answer would depend on order), and weights that leave nothing to answer.
    for (what, pick) in [
        (
            "country",
            (|dc: &DatacenterSpec| &dc.countries) as fn(&DatacenterSpec) -> &Vec<String>,
        ),
        ("continent", |dc: &DatacenterSpec| &dc.continents),
    ] {
        let mut owner: Vec<(&str, &str)> = Vec::new();
        for (dc, line) in &dcs {
            for code in pick(dc) {
                match owner.iter().find(|(c, _)| c == code) {
                    Some((_, other)) => root.error_at(
                        *line,
                        format!(
                            "{what} {code} is served by both {other:?} and {:?}",
                            dc.name
                        ),
                    ),
                    None => owner.push((code, &dc.name)),
                }
            }
        }
    }
    if t.dns
        .as_ref()
        .is_some_and(|d| d.policy == super::DnsPolicy::Weighted)
        && dcs.iter().all(|(dc, _)| dc.weight == 0)
    {
        root.error_at(
            first_line,
            "`[dns] policy = \"weighted\"` needs a data centre with a `weight` above 0",
        );
    }
    let total: usize = dcs.iter().map(|(dc, _)| usize::from(dc.databases)).sum();
    let quorum = matches!(
        t.data,
        DataEngine::Postgres {
            commit: CommitMode::Quorum,
            ..
        }
    );
    if quorum && total < 2 {
        root.error_at(
            root.line_of_in("data", "commit").or(first_line),
            "`data.commit = \"quorum\"` needs a replica: the data centres run one PostgreSQL \
             server in all (give a data centre `databases = 2`, add one, or `commit = \"async\"`)",
        );
    }
    if total > MAX_DATABASES {
        root.error_at(
            first_line,
            format!(
                "the data centres run {total} PostgreSQL servers (`databases`): at most \
                 {MAX_DATABASES} in all (a primary and {} replicas)",
                MAX_DATABASES - 1
            ),
        );
    }
    // Links: known data centres, no pair twice, every pair joined.
    let mut joined: Vec<((String, String), u64)> = Vec::new();
    for (link, line) in &links {
        let Some((a, b, ms)) = link else { continue };
        let mut ok = true;
        for end in [a, b] {
            if !names.contains(&end.as_str()) {
                root.error_at(
                    *line,
                    format!(
                        "`[[link]]` names {end:?}, which is not a data centre (they are: {})",
                        names.join(", ")
                    ),
                );
                ok = false;
            }
        }
        if a == b {
            root.error_at(*line, format!("`[[link]]` joins {a:?} to itself"));
            ok = false;
        }
        let pair = if a < b {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        };
        if ok && joined.iter().any(|(p, _)| *p == pair) {
            root.error_at(
                *line,
                format!("the link between {a:?} and {b:?} is listed twice"),
            );
            ok = false;
        }
        if ok {
            joined.push((pair, *ms));
        }
    }
    for (i, (dc, line)) in dcs.iter().enumerate() {
        for (earlier, _) in &dcs[..i] {
            let (a, b) = (earlier.name.as_str(), dc.name.as_str());
            if a.is_empty() || b.is_empty() || a == b {
                continue;
            }
            let pair = if a < b { (a, b) } else { (b, a) };
            if !joined.iter().any(|(p, _)| p.0 == pair.0 && p.1 == pair.1) {
                root.error_at(
                    *line,
                    format!(
                        "no `[[link]]` between {a:?} and {b:?}: add one with `between = [{a:?}, \
                         {b:?}]` and `one_way_ms` (0 if they are side by side)"
                    ),
                );
            }
        }
    }
    t.datacenters = dcs.into_iter().map(|(dc, _)| dc).collect();
    t.links = joined
        .into_iter()
        .map(|(between, one_way_ms)| LinkSpec {
            between,
            one_way_ms,
        })
        .collect();
    t.api.count = t.datacenters.iter().map(|dc| dc.api).sum();
    if let Some(lb) = &mut t.lb {
        lb.count = t.datacenters.iter().map(|dc| dc.lb).sum();
    }
    if let DataEngine::Postgres { replicas, .. } = &mut t.data {
        let total: usize = t
            .datacenters
            .iter()
            .map(|dc| usize::from(dc.databases))
            .sum();
        *replicas = u8::try_from(total.saturating_sub(1)).unwrap_or(u8::MAX);
    }
}

impl Topology {
    /// Whether the topology has `[[datacenter]]` tables.
    pub fn has_datacentres(&self) -> bool {
        !self.datacenters.is_empty()
    }

    /// The one-way delay between data centres `a` and `b` (0 within one).
    pub fn one_way_ms(&self, a: &str, b: &str) -> u64 {
        self.links
            .iter()
            .find(|l| {
                (l.between.0 == a && l.between.1 == b) || (l.between.0 == b && l.between.1 == a)
            })
            .map_or(0, |l| l.one_way_ms)
    }

    /// The index of the data centre that runs PostgreSQL server `i` (0-based, in plan order:
    /// each data centre's servers in turn).
    pub fn datacentre_of_database(&self, i: usize) -> Option<usize> {
        let mut end = 0;
        for (d, dc) in self.datacenters.iter().enumerate() {
            end += usize::from(dc.databases);
            if i < end {
                return Some(d);
            }
        }
        None
    }

    /// Delaying relays `strata up` runs: in each data centre, one for each PostgreSQL server
    /// of the others.
    pub fn relays(&self) -> usize {
        let total: usize = self
            .datacenters
            .iter()
            .map(|dc| usize::from(dc.databases))
            .sum();
        self.datacenters
            .iter()
            .map(|dc| total - usize::from(dc.databases))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::super::*;

    const TWO: &str = "[lb]\n[api]\ncount = 2\n[data]\nengine = \"postgres\"\n[dns]\n\
                       [[datacenter]]\nname = \"us-east\"\ndatabases = 2\n\
                       [[datacenter]]\nname = \"us-west\"\napi = 1\nlb = 2\nweight = 0\nlatitude = 37.4\nlongitude = -122\ncountries = [\"US\"]\ncontinents = [\"NA\"]\n\
                       [[link]]\nbetween = [\"us-west\", \"us-east\"]\none_way_ms = 30\n";

    #[test]
    fn two_data_centres_take_their_counts_and_the_link_between_them() {
        let t = Topology::parse(TWO, 8080).expect("valid");
        assert_eq!(t.datacenters.len(), 2);
        let (east, west) = (&t.datacenters[0], &t.datacenters[1]);
        assert_eq!(
            (east.lb, east.api, east.databases, east.weight),
            (1, 2, 2, 1)
        );
        assert_eq!(
            (west.lb, west.api, west.databases, west.weight),
            (2, 1, 1, 0)
        );
        assert_eq!(west.location, Some((Degrees(37.4), Degrees(-122.0))));
        assert_eq!(
            (west.countries.as_slice(), west.continents.as_slice()),
            (&["US".to_string()][..], &["NA".to_string()][..])
        );
        assert_eq!(t.one_way_ms("us-east", "us-west"), 30);
        assert_eq!(t.one_way_ms("us-west", "us-east"), 30);
        assert_eq!(t.api.count, 3, "the total of the data centres");
        assert_eq!(t.lb.as_ref().map(|lb| lb.count), Some(3));
        assert!(matches!(t.data, DataEngine::Postgres { replicas: 2, .. }));
        assert_eq!(
            (0..4)
                .map(|i| t.datacentre_of_database(i))
                .collect::<Vec<_>>(),
            [Some(0), Some(0), Some(1), None]
        );
        assert_eq!(t.relays(), 3, "us-east reaches pg-3, us-west pg-1 and pg-2");
        // 3 balancers, 3 API servers, 3 databases, control-1, dns-1, 3 relays.
        assert_eq!(t.instance_count(), 14);
    }

    #[test]
    fn a_shared_cache_goes_with_data_centres_and_sessions_in_redis_do_not() {
        for (engine, want) in [
            ("redis", CacheEngine::Redis),
            ("memcached", CacheEngine::Memcached),
        ] {
            let text = format!("{TWO}[cache]\nengine = \"{engine}\"\nnodes = 2\n");
            let t = Topology::parse(&text, 8080)
                .unwrap_or_else(|e| panic!("{engine}: a cache in each data centre: {e}"));
            assert_eq!(t.cache.shared, Some((want, 2)), "{engine}");
            assert_eq!(
                t.cache_nodes(),
                4,
                "{engine}: 2 in each of the 2 data centres"
            );
            assert_eq!(t.instance_count(), 14 + 4, "{engine}");
        }
        // Sessions in Redis are still refused, on the line of `sessions.engine`, even beside a
        // shared cache (which is not named).
        let text = format!("{TWO}[cache]\nengine = \"redis\"\n[sessions]\nengine = \"redis\"\n");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:#?}");
        assert_eq!(e[0].line, Some(TWO.lines().count() + 4), "{e:#?}");
        assert_eq!(
            e[0].message,
            "`[[datacenter]]` with sessions in Redis (`[sessions]`) is not available yet: keep \
             sessions in the database"
        );
    }

    #[test]
    fn every_mistake_in_the_data_centres_is_reported_with_its_line() {
        let text = "[lb]\n[api]\ncount = 1\n[data]\nengine = \"postgres\"\nreplicas = 1\n[dns]\n\
                    [[datacenter]]\nname = \"us-east\"\n\
                    [[datacenter]]\nname = \"us-east\"\n\
                    [[datacenter]]\nname = \"eu\"\ndatabases = 0\nlatitude = 1.0\napi = 65\n\
                    [[datacenter]]\nname = \"Bad_Name\"\n\
                    [[link]]\nbetween = [\"us-east\", \"mars\"]\none_way_ms = 5\n\
                    [[link]]\nbetween = [\"eu\", \"us-east\"]\none_way_ms = 5\n\
                    [[link]]\nbetween = [\"us-east\", \"eu\"]\none_way_ms = 7\n\
                    [[link]]\nbetween = [\"eu\"]\n";
        let e = errors(text);
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        for says in [
            "line 6: `data.replicas` does not go with `[[datacenter]]`",
            "line 10: two data centres are named \"us-east\"",
            "line 14: `datacenter[3].databases` is 0: every data centre needs a database node",
            "line 15: `datacenter[3].latitude`: give both `latitude` and `longitude`",
            "line 16: `datacenter[3].api` must be between 1 and 64, not 65",
            "line 18: `datacenter[4].name` must be a lower-case DNS label",
            "line 19: `[[link]]` names \"mars\", which is not a data centre",
            "line 25: the link between \"us-east\" and \"eu\" is listed twice",
            "line 29: `link[4].between` must name exactly two data centres",
            "line 28: a `[[link]]` needs `one_way_ms`",
        ] {
            assert!(
                shown.iter().any(|s| s.starts_with(says)),
                "{says:?} in {shown:#?}"
            );
        }
        assert!(
            !shown
                .iter()
                .any(|s| s.contains("no `[[link]]` between \"us-east\" and \"eu\"")),
            "{shown:#?}"
        );
        let e = errors(
            "[api]\ncount = 1\n[[datacenter]]\nname = \"a\"\n[[datacenter]]\nname = \"b\"\n",
        );
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 2, "{shown:#?}");
        assert!(
            shown[0].starts_with("line 3: `[[datacenter]]` tables need `[dns]`"),
            "{shown:#?}"
        );
        assert!(
            shown[0].contains("`[lb]`") && shown[0].contains("engine = \\\"postgres\\\"")
                || shown[0].contains("engine = \"postgres\""),
            "{shown:#?}"
        );
        assert_eq!(
            shown[1],
            "line 5: no `[[link]]` between \"a\" and \"b\": add one with `between = [\"a\", \"b\"]` \
             and `one_way_ms` (0 if they are side by side)"
        );
        let e = errors("[api]\ncount = 1\n[[link]]\nbetween = [\"a\", \"b\"]\none_way_ms = 1\n");
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].message.contains("add `[[datacenter]]` tables"),
            "{e:#?}"
        );
    }

    #[test]
    fn what_strata_dns_would_refuse_is_refused_with_the_topology() {
        let text = TWO
            .replace("[dns]\n", "[dns]\npolicy = \"weighted\"\n")
            .replace(
                "name = \"us-east\"\n",
                "name = \"us-east\"\nweight = 0\ncountries = [\"US\"]\n",
            );
        let e = errors(&text);
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 2, "{shown:#?}");
        assert!(
            shown[0].contains("needs a data centre with a `weight` above 0"),
            "{shown:#?}"
        );
        assert!(
            shown[1].contains("country US is served by both \"us-east\" and \"us-west\""),
            "{shown:#?}"
        );
    }

    #[test]
    fn geo_dns_needs_a_geoip_database_and_every_data_centre_placed() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let path = file.path().display().to_string();
        let text = TWO.replace(
            "[dns]\n",
            &format!("[dns]\npolicy = \"geo\"\ngeoip = \"{path}\"\n"),
        );
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].message
                .contains("needs data centre \"us-east\"'s `latitude`"),
            "{e:#?}"
        );
        let placed = text.replace(
            "name = \"us-east\"\n",
            "name = \"us-east\"\ncontinents = [\"EU\"]\n",
        );
        let t = Topology::parse(&placed, 8080).expect("valid");
        let dns = t.dns.expect("dns");
        assert_eq!(dns.policy, DnsPolicy::Geo);
        assert_eq!(dns.geoip.as_deref(), Some(path.as_str()));
        let e = errors(&placed.replace(&path, "/no/such.mmdb"));
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].message.contains("/no/such.mmdb is not a file"),
            "{e:#?}"
        );
        let e = errors(&TWO.replace("[dns]\n", "[dns]\npolicy = \"geo\"\n"));
        assert!(
            e[0].message.contains("give its path in `dns.geoip`"),
            "{e:#?}"
        );
    }

    #[test]
    fn too_many_database_servers_in_all_are_refused() {
        let text = TWO
            .replace("databases = 2", "databases = 4\napi = 1")
            .replace("api = 1\nlb = 2", "databases = 2\nlb = 2");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].message.contains("run 6 PostgreSQL servers"), "{e:#?}");
    }

    #[test]
    fn quorum_commit_is_judged_with_the_data_centres_databases() {
        let quorum = TWO.replace(
            "engine = \"postgres\"\n",
            "engine = \"postgres\"\ncommit = \"quorum\"\n",
        );
        let t =
            Topology::parse(&quorum, 8080).expect("quorum written out, with replicas in the DCs");
        assert!(matches!(
            t.data,
            DataEngine::Postgres {
                commit: CommitMode::Quorum,
                replicas: 2,
                ..
            }
        ));
        let one_server = "[lb]\n[api]\ncount = 1\n[data]\nengine = \"postgres\"\ncommit = \"quorum\"\n[dns]\n\
                          [[datacenter]]\nname = \"solo\"\n";
        let e = errors(one_server);
        assert!(
            e.iter()
                .any(|e| e.line == Some(6) && e.message.contains("needs a replica")),
            "{e:#?}"
        );
    }

    #[test]
    fn data_centres_and_links_may_be_written_as_inline_tables() {
        let text = "datacenter = [{ name = \"a\" }, { name = \"b\", api = 2 }]\n\
                    link = [{ between = [\"a\", \"b\"], one_way_ms = 5 }]\n\
                    [lb]\n[api]\ncount = 1\n[data]\nengine = \"postgres\"\n[dns]\n";
        let t = Topology::parse(text, 8080).expect("valid");
        let names: Vec<&str> = t.datacenters.iter().map(|dc| dc.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(t.datacenters[1].api, 2);
        assert_eq!(t.one_way_ms("a", "b"), 5);
        let e = errors(
            "datacenter = \"a\"\n[lb]\n[api]\ncount = 1\n[data]\nengine = \"postgres\"\n[dns]\n",
        );
        assert_eq!(e.len(), 1, "{e:#?}");
        assert_eq!(e[0].line, Some(1));
        assert!(
            e[0].message
                .contains("must be tables written `[[datacenter]]`, not"),
            "{e:#?}"
        );
    }
}
