//! # strata-api — the web tier
//!
//! Tier: web. Depends on `strata-core` (domain types), on `strata-store` and
//! `strata-cache` — the handlers see only the `Store` trait and the two-level `Tiered` cache —
//! and on `strata-photos`, `strata-blobs` and `strata-queue` for profile photos (the
//! pipeline, its keys, the queue's policy);
//! [`role`] opens them from the options each of those tiers defines
//! (`strata_store::open::DataOptions`, `strata_cache::options::CacheOptions`).
//!
//! A stateless axum server for user profiles under `/users`, accounts and sessions under
//! `/accounts` and `/sessions` (see [`auth`]), plus `/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json` and `/.well-known/jwks.json`. It keeps nothing another server would need:
//! sessions live in the shared session store, signing keys in the deployment's key directory. Guarantees:
//! - every error is RFC 9457 `application/problem+json`, naming each field or parameter at
//!   fault; no input can crash the server or leave a half-written user;
//! - a write answered 2xx has committed in the store; this server never serves a value older
//!   than one it wrote itself;
//! - every request is logged once and measured (see [`observe`]); the hottest users read are
//!   tracked by a bounded top-k sketch ([`hot_keys`]) and exported on `/metrics`;
//! - [`Application::run_until_stopped`] drains in-flight requests before returning.
//!
//! Build, then run: [`Application::build`] binds (port 0 allowed) and reports the real address.
//!
//! Modules, each depending only on those listed before it: [`edge_purge`] (purging the CDN
//! edges when a profile changes), [`problem`] (errors), [`request`]
//! (parsing requests), [`client`] (the client's address), [`keys`] and [`auth`] (tokens and
//! principals), [`observe`] (the middleware), [`state`] (what handlers share), [`idempotency`]
//! (`Idempotency-Key`: executing a write once), [`commit`] (what writes share), [`coherence`]
//! (the database's change log keeping every server's cache coherent), [`credentials`]
//! (what logging in and changing a password share), [`schema`] (the documented wire forms),
//! [`params`] and [`responses`] (the documented parameters and error responses several
//! operations share), the handlers [`users`], [`photos`], [`accounts`], [`sessions`] and [`ops`],
//! [`openapi`] (the document of them all), [`server`] (the router and the bound server) and
//! [`role`] (the server as a process, composed from each tier's options). This root only
//! declares and re-exports them.

pub mod accounts;
pub mod auth;
pub mod client;
pub mod coherence;
pub mod commit;
pub mod credentials;
pub mod edge_purge;
pub mod hot_keys;
pub mod idempotency;
pub mod keys;
pub mod observe;
pub mod openapi;
pub mod ops;
pub mod params;
pub mod photos;
pub mod problem;
pub mod request;
pub mod responses;
pub mod role;
pub mod schema;
pub mod server;
pub mod sessions;
pub mod state;
pub mod users;

pub use server::{Application, app};
pub use state::AppState;
