//! The DNS server, tested as a client sees it: real UDP and TCP sockets to a running server,
//! real HTTP health endpoints, and a GeoIP database made for the loopback test networks.

mod fastpath;
mod fuzz;
mod geo;
mod health;
mod policies;
mod protocol;
mod support;
