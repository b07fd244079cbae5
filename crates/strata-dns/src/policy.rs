//! Which data centre answers a query, and with which addresses.
//!
//! - `geo`: the data centre serving the client's country, else its continent, else the nearest
//!   one by great-circle distance; then its `fallback` list; then the rest, nearest first. A
//!   client the database does not place gets the configured order.
//! - `weighted`: at random among the healthy data centres, in proportion to their weights
//!   (weight 0: only when no weighted data centre is up).
//! - `failover`: the first healthy data centre in the configured order — after the one holding
//!   the database primary, when the configuration names a primary file (it follows a failover).
//!
//! A data centre is healthy while any of its balancers is; the answer carries its healthy
//! balancers, shuffled. When no data centre is healthy, the answer carries every balancer of
//! the one the policy prefers (as gdnsd does): the checker's view may be what is broken, and
//! an empty answer is a certain outage where a stale one is only a likely one.
//!
//! The geo order of a client depends on its location only, and every address with one GeoIP
//! data record has one location: [`OrderCache`] keeps the order per record, so the fast path
//! neither decodes the record nor computes a distance for a client seen before. Health is not
//! in the cache: which data centre of the order is up is read per query.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use rand::Rng;
use rand::seq::SliceRandom as _;

use crate::config::{DataCentre, DnsConfig, Policy};
use crate::geoip::{Location, distance_km};
use crate::health::HealthTable;

/// The data centre chosen for one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    pub dc: usize,
    /// No data centre was healthy: answer all of this one's balancers.
    pub all_down: bool,
}

/// The data centres in the order a client at `client` prefers them (geo policy).
pub fn geo_order(dcs: &[DataCentre], client: Option<&Location>) -> Vec<usize> {
    let configured: Vec<usize> = (0..dcs.len()).collect();
    let Some(client) = client else {
        return configured;
    };
    let serves = |codes: &[String], code: &Option<String>| {
        code.as_ref().is_some_and(|c| codes.iter().any(|x| x == c))
    };
    let distance = |dc: &DataCentre| match (client.coordinates, dc.location) {
        (Some(c), Some(l)) => distance_km(c, l),
        _ => f64::INFINITY,
    };
    // Nearest first; those without a known distance keep the configured order after them.
    let mut by_distance = configured.clone();
    by_distance.sort_by(|&a, &b| distance(&dcs[a]).total_cmp(&distance(&dcs[b])));
    let primary = dcs
        .iter()
        .position(|dc| serves(&dc.countries, &client.country))
        .or_else(|| {
            dcs.iter()
                .position(|dc| serves(&dc.continents, &client.continent))
        })
        .or_else(|| by_distance.first().copied());
    let mut order = Vec::with_capacity(dcs.len());
    if let Some(p) = primary {
        order.push(p);
        order.extend(dcs[p].fallback.iter().copied());
    }
    order.extend(by_distance);
    let mut seen = vec![false; dcs.len()];
    order.retain(|&i| i < seen.len() && !std::mem::replace(&mut seen[i], true));
    order
}

/// The most records [`OrderCache`] holds; past that it starts again empty (a client mix that
/// wide costs a record decode and the distances per new record, as without a cache).
pub const MAX_CACHED_ORDERS: usize = 16_384;

/// The geo order ([`geo_order`]) by GeoIP data record offset, for one answering task.
#[derive(Debug, Default)]
pub struct OrderCache {
    orders: HashMap<usize, Box<[usize]>, BuildHasherDefault<OffsetHasher>>,
}

impl OrderCache {
    /// The order of the clients whose record is at `record`, computed by `compute` the first
    /// time.
    pub fn order(&mut self, record: usize, compute: impl FnOnce() -> Vec<usize>) -> &[usize] {
        if self.orders.len() >= MAX_CACHED_ORDERS && !self.orders.contains_key(&record) {
            self.orders.clear();
        }
        self.orders
            .entry(record)
            .or_insert_with(|| compute().into_boxed_slice())
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.orders.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }
}

/// A hasher for record offsets: they come from the database, not from clients, and the map
/// is bounded, so a multiplicative hash (no flooding resistance) is enough.
#[derive(Debug, Default)]
struct OffsetHasher(u64);

impl Hasher for OffsetHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let h = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 29);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// Chooses the data centre for one query.
pub fn select(
    config: &DnsConfig,
    health: &HealthTable,
    client: Option<&Location>,
    rng: &mut impl Rng,
) -> Selection {
    let dcs = &config.datacentres;
    match config.policy {
        Policy::Geo => first_up(geo_order(dcs, client), health),
        Policy::Failover => first_up(failover_order(health.preferred(), dcs.len()), health),
        Policy::Weighted => weighted(dcs, health, rng),
    }
}

/// `failover`'s order: the preferred data centre (the one holding the primary, or the first
/// listed), then the others as listed.
pub fn failover_order(preferred: usize, count: usize) -> impl Iterator<Item = usize> {
    let preferred = if preferred < count { preferred } else { 0 };
    std::iter::once(preferred)
        .filter(move |_| count > 0)
        .chain((0..count).filter(move |&d| d != preferred))
}

/// The first data centre of `order` that is up; when none is, the first one, marked
/// `all_down`.
pub fn first_up(order: impl IntoIterator<Item = usize>, health: &HealthTable) -> Selection {
    let mut order = order.into_iter();
    let Some(first) = order.next() else {
        return Selection {
            dc: 0,
            all_down: true,
        };
    };
    std::iter::once(first)
        .chain(order)
        .find(|&i| health.dc_up(i))
        .map_or(
            Selection {
                dc: first,
                all_down: true,
            },
            |dc| Selection {
                dc,
                all_down: false,
            },
        )
}

/// The weighted policy: at random among the healthy data centres by weight; the first
/// healthy one when they all weigh 0; by weight among all of them when none is healthy.
fn weighted(dcs: &[DataCentre], health: &HealthTable, rng: &mut impl Rng) -> Selection {
    let up = || (0..dcs.len()).filter(|&i| health.dc_up(i));
    if let Some(dc) = by_weight(dcs, up, rng) {
        return Selection {
            dc,
            all_down: false,
        };
    }
    if let Some(dc) = up().next() {
        return Selection {
            dc,
            all_down: false,
        };
    }
    Selection {
        dc: by_weight(dcs, || 0..dcs.len(), rng).unwrap_or(0),
        all_down: true,
    }
}

/// One of `among` at random in proportion to weight; `None` when their weights are all 0.
/// `among` is walked twice (the total, then the pick), so it is a function making the walk.
fn by_weight<I: Iterator<Item = usize>>(
    dcs: &[DataCentre],
    among: impl Fn() -> I,
    rng: &mut impl Rng,
) -> Option<usize> {
    let weight = |i: usize| dcs.get(i).map_or(0, |d| u64::from(d.weight));
    let total: u64 = among().map(weight).sum();
    if total == 0 {
        return None;
    }
    let mut pick = rng.random_range(0..total);
    for i in among() {
        let w = weight(i);
        if pick < w {
            return Some(i);
        }
        pick -= w;
    }
    None
}

/// The addresses of the chosen data centre's balancers of one family (`v6`), shuffled: the
/// healthy ones, or all of them when no data centre is healthy.
pub fn addresses(
    config: &DnsConfig,
    health: &HealthTable,
    selection: Selection,
    v6: bool,
    rng: &mut impl Rng,
) -> Vec<IpAddr> {
    let mut out = Vec::new();
    addresses_into(config, health, selection, v6, rng, &mut out);
    out
}

/// [`addresses`] into `out` (cleared first), so a caller can reuse one buffer.
pub fn addresses_into(
    config: &DnsConfig,
    health: &HealthTable,
    selection: Selection,
    v6: bool,
    rng: &mut impl Rng,
    out: &mut Vec<IpAddr>,
) {
    out.clear();
    let Some(dc) = config.datacentres.get(selection.dc) else {
        return;
    };
    out.extend(
        dc.ips()
            .enumerate()
            .filter(|&(b, ip)| {
                ip.is_ipv6() == v6 && (selection.all_down || health.is_up(selection.dc, b))
            })
            .map(|(_, ip)| ip),
    );
    out.dedup();
    out.shuffle(rng);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Coordinates;

    fn config(policy: &str) -> DnsConfig {
        DnsConfig::parse(&format!(
            r#"
zone = "strata.test."
services = ["www"]
policy = "{policy}"
[[datacenter]]
name = "east"
balancers = ["127.0.10.1:80", "127.0.10.2:80"]
weight = 3
latitude = 39.0
longitude = -77.5
countries = ["US"]
fallback = ["eu"]
[[datacenter]]
name = "west"
balancers = ["127.0.20.1:80"]
weight = 1
latitude = 37.4
longitude = -122.1
[[datacenter]]
name = "eu"
balancers = ["127.0.30.1:80"]
weight = 0
latitude = 53.3
longitude = -6.3
continents = ["EU"]
"#
        ))
        .expect("valid")
    }

    fn at(lat: f64, lon: f64) -> Location {
        Location {
            coordinates: Some(Coordinates {
                latitude: lat,
                longitude: lon,
            }),
            country: None,
            continent: None,
        }
    }

    #[test]
    fn geo_prefers_country_then_continent_then_distance_then_fallback() {
        let c = config("geo");
        let dcs = &c.datacentres;
        let mut us_west_coast = at(37.0, -121.0);
        assert_eq!(geo_order(dcs, Some(&us_west_coast))[0], 1);
        us_west_coast.country = Some("US".into());
        assert_eq!(geo_order(dcs, Some(&us_west_coast)), vec![0, 2, 1]);
        let mut paris = at(48.8, 2.3);
        paris.continent = Some("EU".into());
        assert_eq!(geo_order(dcs, Some(&paris))[0], 2);
        assert_eq!(geo_order(dcs, None), vec![0, 1, 2]);
    }

    #[test]
    fn an_unhealthy_choice_falls_back_and_all_down_answers_the_preferred_one() {
        let c = config("geo");
        let health = HealthTable::all_up(&c.datacentres);
        let mut rng = rand::rng();
        let mut client = at(37.0, -121.0);
        client.country = Some("US".into());
        assert_eq!(select(&c, &health, Some(&client), &mut rng).dc, 0);
        health.set(0, 0, false);
        let s = select(&c, &health, Some(&client), &mut rng);
        assert_eq!(s.dc, 0, "one balancer of two is still up");
        assert_eq!(
            addresses(&c, &health, s, false, &mut rng),
            vec!["127.0.10.2".parse::<IpAddr>().expect("ip")]
        );
        health.set(0, 1, false);
        assert_eq!(
            select(&c, &health, Some(&client), &mut rng).dc,
            2,
            "its fallback"
        );
        for dc in 0..3 {
            for b in 0..2 {
                health.set(dc, b, false);
            }
        }
        let s = select(&c, &health, Some(&client), &mut rng);
        assert_eq!((s.dc, s.all_down), (0, true));
        assert_eq!(addresses(&c, &health, s, false, &mut rng).len(), 2);
        assert!(addresses(&c, &health, s, true, &mut rng).is_empty());
    }

    #[test]
    fn weighted_follows_the_weights_and_failover_the_order() {
        let c = config("weighted");
        let health = HealthTable::all_up(&c.datacentres);
        let mut rng = rand::rng();
        let mut counts = [0u32; 3];
        for _ in 0..4000 {
            counts[select(&c, &health, None, &mut rng).dc] += 1;
        }
        assert_eq!(counts[2], 0, "weight 0 is a standby");
        let east_share = f64::from(counts[0]) / 4000.0;
        assert!((0.70..0.80).contains(&east_share), "{counts:?}");
        health.set(0, 0, false);
        health.set(0, 1, false);
        health.set(1, 0, false);
        assert_eq!(select(&c, &health, None, &mut rng).dc, 2, "the standby");

        let c = config("failover");
        let health = HealthTable::all_up(&c.datacentres);
        assert_eq!(select(&c, &health, None, &mut rng).dc, 0);
        health.set(0, 0, false);
        health.set(0, 1, false);
        assert_eq!(select(&c, &health, None, &mut rng).dc, 1);
    }
}
