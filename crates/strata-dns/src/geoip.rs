//! Where a client is: a MaxMind-format database (GeoLite2/GeoIP2 City or Country shape) read
//! with `maxminddb`. A lookup gives the client's coordinates, country and continent when the
//! database has them, and always the prefix length of the database network that matched —
//! the ECS scope of an answer that depended on the address (RFC 7871 §7.2.1).

use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

use crate::config::Coordinates;

/// What the database says about one address.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Location {
    pub coordinates: Option<Coordinates>,
    /// ISO country code, upper case.
    pub country: Option<String>,
    /// Continent code, upper case.
    pub continent: Option<String>,
}

/// A lookup's result: the location, if any, and the prefix length of the network that
/// matched (found or not: the answer is the same for the whole network).
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    pub location: Option<Location>,
    pub prefix_len: u8,
}

/// Where an address falls in the database, without decoding its record: what the fast path
/// needs per query (see [`crate::policy::OrderCache`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The offset of the address's data record, `None` when the database has none for it.
    /// Every address with one offset has one record, so one location: a cache key.
    pub record: Option<usize>,
    /// As [`Lookup::prefix_len`].
    pub prefix_len: u8,
}

/// An open database.
pub struct GeoDb {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("database_type", &self.reader.metadata().database_type)
            .finish()
    }
}

#[derive(Debug, Deserialize)]
struct Record {
    location: Option<RawLocation>,
    country: Option<Code>,
    continent: Option<Code>,
}

#[derive(Debug, Deserialize)]
struct RawLocation {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Code {
    iso_code: Option<String>,
    code: Option<String>,
}

impl GeoDb {
    /// Opens (reads into memory and checks the metadata of) the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let reader = maxminddb::Reader::open_readfile(path)
            .with_context(|| format!("cannot open the GeoIP database {}", path.display()))?;
        Ok(Self { reader })
    }

    /// Places `ip` (the tree walk alone, no record decoded). `None` exactly when
    /// [`GeoDb::lookup`] is `None`; the prefix length is the same as its.
    pub fn place(&self, ip: IpAddr) -> Option<Placement> {
        let ip = unmapped(ip);
        let result = self.reader.lookup(ip).ok()?;
        Some(Placement {
            record: result.offset(),
            prefix_len: prefix_len(&result, ip),
        })
    }

    /// Looks `ip` up. `None` when the database cannot answer for that family (an IPv6 address
    /// in an IPv4-only database) or is damaged there.
    pub fn lookup(&self, ip: IpAddr) -> Option<Lookup> {
        let ip = unmapped(ip);
        let result = match self.reader.lookup(ip) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%ip, error = %e, "GeoIP lookup failed");
                return None;
            }
        };
        let prefix_len = prefix_len(&result, ip);
        let location = match result.decode::<Record>() {
            Ok(found) => found.map(|r| Location {
                coordinates: r.location.and_then(|l| match (l.latitude, l.longitude) {
                    (Some(latitude), Some(longitude))
                        if latitude.is_finite() && longitude.is_finite() =>
                    {
                        Some(Coordinates {
                            latitude,
                            longitude,
                        })
                    }
                    _ => None,
                }),
                country: r
                    .country
                    .and_then(|c| c.iso_code)
                    .map(|c| c.to_ascii_uppercase()),
                continent: r
                    .continent
                    .and_then(|c| c.code)
                    .map(|c| c.to_ascii_uppercase()),
            }),
            Err(e) => {
                tracing::debug!(%ip, error = %e, "GeoIP record cannot be decoded");
                None
            }
        };
        Some(Lookup {
            location,
            prefix_len,
        })
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it maps.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The prefix length of the network that matched `ip`.
fn prefix_len(result: &maxminddb::LookupResult<'_, Vec<u8>>, ip: IpAddr) -> u8 {
    // A match above the IPv4 subtree is reported as an IPv6 network: for an IPv4 client it
    // covers every IPv4 address, so the scope is 0.
    match result.network() {
        Ok(net) if net.is_ipv4() == ip.is_ipv4() => net.prefix(),
        _ => 0,
    }
}

/// Great-circle distance in kilometres (haversine).
pub fn distance_km(a: Coordinates, b: Coordinates) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0;
    let (la1, la2) = (a.latitude.to_radians(), b.latitude.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.longitude - a.longitude).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_are_great_circle_kilometres() {
        let new_york = Coordinates {
            latitude: 40.71,
            longitude: -74.01,
        };
        let london = Coordinates {
            latitude: 51.51,
            longitude: -0.13,
        };
        let d = distance_km(new_york, london);
        assert!((5550.0..5600.0).contains(&d), "{d}");
        assert!(distance_km(london, london).abs() < 1e-9);
    }
}
