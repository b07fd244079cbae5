//! Which data centre answers a query, and with which addresses.
//!
//! - `geo`: the data centre serving the client's country, else its continent, else the nearest
//!   one by great-circle distance; then its `fallback` list; then the rest, nearest first. A
//!   client the database does not place gets the configured order.
//! - `weighted`: at random among the healthy data centres, in proportion to their weights
//!   (weight 0: only when no weighted data centre is up).
//! - `failover`: the first healthy data centre in the configured order.
//!
//! A data centre is healthy while any of its balancers is; the answer carries its healthy
//! balancers, shuffled. When no data centre is healthy, the answer carries every balancer of
//! the one the policy prefers (as gdnsd does): the checker's view may be what is broken, and
//! an empty answer is a certain outage where a stale one is only a likely one.

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

/// Chooses the data centre for one query.
pub fn select(
    config: &DnsConfig,
    health: &HealthTable,
    client: Option<&Location>,
    rng: &mut impl Rng,
) -> Selection {
    let dcs = &config.datacentres;
    match config.policy {
        Policy::Geo => first_up(&geo_order(dcs, client), health),
        Policy::Failover => first_up(&(0..dcs.len()).collect::<Vec<_>>(), health),
        Policy::Weighted => {
            let up: Vec<usize> = (0..dcs.len()).filter(|&i| health.dc_up(i)).collect();
            if let Some(dc) = by_weight(dcs, &up, rng) {
                return Selection {
                    dc,
                    all_down: false,
                };
            }
            if let Some(&dc) = up.first() {
                return Selection {
                    dc,
                    all_down: false,
                };
            }
            let all: Vec<usize> = (0..dcs.len()).collect();
            Selection {
                dc: by_weight(dcs, &all, rng).unwrap_or(0),
                all_down: true,
            }
        }
    }
}

fn first_up(order: &[usize], health: &HealthTable) -> Selection {
    match order.iter().find(|&&i| health.dc_up(i)) {
        Some(&dc) => Selection {
            dc,
            all_down: false,
        },
        None => Selection {
            dc: order.first().copied().unwrap_or(0),
            all_down: true,
        },
    }
}

/// One of `among` at random in proportion to weight; `None` when their weights are all 0.
fn by_weight(dcs: &[DataCentre], among: &[usize], rng: &mut impl Rng) -> Option<usize> {
    let total: u64 = among
        .iter()
        .map(|&i| dcs.get(i).map_or(0, |d| u64::from(d.weight)))
        .sum();
    if total == 0 {
        return None;
    }
    let mut pick = rng.random_range(0..total);
    for &i in among {
        let w = dcs.get(i).map_or(0, |d| u64::from(d.weight));
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
    let Some(dc) = config.datacentres.get(selection.dc) else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = dc
        .ips()
        .enumerate()
        .filter(|&(b, ip)| {
            ip.is_ipv6() == v6 && (selection.all_down || health.is_up(selection.dc, b))
        })
        .map(|(_, ip)| ip)
        .collect();
    out.dedup();
    out.shuffle(rng);
    out
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
