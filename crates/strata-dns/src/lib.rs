//! # strata-dns — the geo-DNS tier
//!
//! Tier: geo-DNS. Depends on `strata-core` only (readiness line, shutdown, telemetry); it
//! knows the data centres' balancers by address from its own configuration file and nothing
//! of the tiers behind them.
//!
//! `strata dns` is an authoritative DNS server for one zone, over UDP and TCP on loopback. It
//! answers SOA and NS at the apex, and A/AAAA for each service name with the healthy balancers
//! of one data centre, chosen per query by policy: `geo` (the client's location, from its EDNS
//! Client Subnet or its source address, in a MaxMind-format database), `weighted` or
//! `failover`. See `docs/dns.md` for the configuration format.
//!
//! One concern per module:
//! - [`config`]: the TOML file, parsed and validated into [`config::DnsConfig`] (every mistake
//!   at once);
//! - [`geoip`]: the MaxMind database lookups and great-circle distance;
//! - [`health`]: active checks of every balancer with rise/fall, and the verdict table;
//! - [`policy`]: which data centre answers, and with which of its balancers (geo orders cached
//!   per GeoIP record);
//! - [`answer`]: one query's bytes to one response's bytes — RCODEs, ECS, truncation — with a
//!   fast path for the common query and hickory-proto's `Message` for the rest;
//! - [`server`]: the UDP and TCP loops, with their limits and timeouts;
//! - [`role`]: `strata dns` as a role process: [`DnsArgs`] and [`run`];
//! - [`probe`]: whether a DNS server answers (`strata status`).
//!
//! Guarantees: a balancer whose health checks fail `fall` times in a row leaves the answers
//! within `fall` check intervals (and comes back after `rise` good ones); UDP responses never
//! exceed 512 bytes or the client's EDNS payload size (at most 1232), and a response that does
//! not fit is sent truncated (TC) and in full over TCP; names outside the zone are REFUSED;
//! a malformed query gets FORMERR or nothing, and never stops the server.

pub mod answer;
pub mod config;
pub mod geoip;
pub mod health;
pub mod policy;
pub mod probe;
pub mod role;
pub mod server;

pub use role::{DnsArgs, LISTENER, run};
