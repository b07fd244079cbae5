//! # strata-core — the shared kernel
//!
//! Tier: none (every tier may depend on it; it depends on no other Strata crate).
//!
//! Holds what more than one tier must agree on and nothing else:
//! - [`user`]: the user domain types, parsed once at the edge ("parse, don't validate"),
//!   with every field limit in one place;
//! - [`email`]: email addresses, checked and normalized once at the edge (trimmed, lower case);
//! - [`id`]: the Snowflake id generator (41-bit milliseconds, 10-bit node, 12-bit sequence);
//! - [`ready`]: the one-line JSON readiness protocol every role process prints;
//! - [`request_id`]: the `X-Request-Id` rules shared by the balancer and the API servers;
//! - [`telemetry`]: logging setup shared by every role;
//! - [`trace`]: W3C trace context, sampling, and the spans each role keeps and exports;
//! - [`shutdown`]: when a role process stops (SIGTERM, Ctrl-C, its supervisor gone);
//! - [`args`]: helpers for role arguments that are parsed and rendered as command lines;
//! - [`edge_purge`]: the client of the CDN edges' purge API, for every role whose writes change
//!   what the edges keep (API servers, photo workers).

pub mod args;
pub mod edge_purge;
pub mod email;
pub mod id;
pub mod ready;
pub mod request_id;
pub mod shutdown;
pub mod telemetry;
pub mod trace;
pub mod user;
