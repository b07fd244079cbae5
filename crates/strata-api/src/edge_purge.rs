//! Purging the CDN edges when a profile changes.
//!
//! A profile's answer carries `Surrogate-Key: user-<id>`, the tag an edge files it under. When
//! `--shared-max-age-secs N` is above 0 the answer also lets CDN caches keep it N seconds
//! without asking, and serve it stale for `--shared-stale-if-error-secs S` more while the
//! origin fails (RFC 5861): `Cache-Control: no-cache` (browsers and other caches revalidate
//! every time) with `CDN-Cache-Control: public, max-age=N, stale-if-error=S` (RFC 9213: the
//! edges read it instead of `Cache-Control`). Pages of `GET /users` carry `Surrogate-Key:
//! users-list` and the same caching headers, and so does a photo's redirect (`GET
//! /users/{id}/photo`, under the user's key). Every write of a user — replace, patch, delete —
//! purges `user-<id>` and `users-list` from every edge once the write is acknowledged, a create
//! (an account's sign-up too) purges `users-list`, and a photo's delete purges `user-<id>`; a
//! photo worker purges `user-<id>` when it makes a new photo the user's
//! (`strata_photos::role`). A purged copy is gone: it is not served stale either, so a deleted
//! user does not come back during an outage.
//!
//! How purges reach the edges — in order (a shield first), each retried until it confirms, for
//! up to `N + 30` seconds (past that the edge's copy has expired by itself), in the background
//! with a bounded queue, with metrics — is [`strata_core::edge_purge`], shared with the photo
//! workers. Which edges: `--purge-edge ADMIN_ADDR` (repeat; in order), and/or
//! `--purge-edges-state FILE`, a deployment's `state.json` as `strata up` writes it.
//!
//! With N = 0 (the default) answers keep `no-cache`: edges revalidate every profile with its
//! ETag, and purges are still sent (they cost nothing an edge has to trust).

use std::time::Duration;

pub use strata_core::edge_purge::{PurgeTargets, edges_of_state, user_key};

/// How an API server purges the edges in front of it: `strata api` flags.
#[derive(Debug, Clone, PartialEq, Eq, Default, clap::Args, serde::Serialize)]
pub struct EdgeOptions {
    #[command(flatten)]
    #[serde(flatten)]
    pub targets: PurgeTargets,
    /// Seconds shared caches (the edges) may keep a profile without asking; 0: they revalidate
    /// every time (`no-cache`).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub shared_max_age_secs: u64,
    /// Seconds past that the edges may still answer a profile from their copy while the origin
    /// fails (`stale-if-error`, RFC 5861); 0: never. Only with `--shared-max-age-secs` above 0.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_STALE_IF_ERROR_SECS))]
    pub shared_stale_if_error_secs: u64,
    /// With `--purge-edges-state` and the database's change log followed (PostgreSQL): the
    /// state file's edges named PREFIX… (this server's data centre's, `us-east-edge-`) are
    /// purged of every user the log says changed, once this server's own database has the
    /// change — so that a request an edge sent on between a write's purge and its arrival at
    /// this data centre's replica cannot keep the old profile there.
    #[arg(long, value_name = "PREFIX")]
    pub followed_edges: Option<String>,
}

/// The longest `stale-if-error` a profile's answer gives the edges: a week.
pub const MAX_STALE_IF_ERROR_SECS: u64 = 604_800;

/// The surrogate key of every page of `GET /users`: a page may list any user (up to 100, more
/// than an edge keeps keys for one object), so a change to any user purges them all.
pub const LIST_KEY: &str = "users-list";

/// The edges' purger, shared by every handler (cheap to clone).
#[derive(Clone)]
pub struct EdgePurger {
    purger: strata_core::edge_purge::EdgePurger,
    /// `--shared-max-age-secs`.
    shared_max_age_secs: u64,
    /// A profile's `Cache-Control`, made once (every `GET /users/{id}` sends it).
    cache_control: http::HeaderValue,
    /// A profile's `CDN-Cache-Control`, when the edges may keep it.
    cdn_cache_control: Option<http::HeaderValue>,
}

impl Default for EdgePurger {
    fn default() -> Self {
        Self {
            purger: strata_core::edge_purge::EdgePurger::default(),
            shared_max_age_secs: 0,
            cache_control: http::HeaderValue::from_static("no-cache"),
            cdn_cache_control: None,
        }
    }
}

/// The `CDN-Cache-Control` of a profile's answer when the edges may keep it `secs` seconds and
/// serve it stale `stale_if_error` seconds more while the origin fails; none when `secs` is 0.
fn cdn_cache_control(secs: u64, stale_if_error: u64) -> Option<http::HeaderValue> {
    let value = match (secs, stale_if_error) {
        (0, _) => return None,
        (n, 0) => format!("public, max-age={n}"),
        (n, s) => format!("public, max-age={n}, stale-if-error={s}"),
    };
    http::HeaderValue::from_str(&value).ok()
}

impl std::fmt::Debug for EdgePurger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgePurger")
            .field("active", &self.purger.is_active())
            .field("shared_max_age_secs", &self.shared_max_age_secs)
            .finish()
    }
}

impl EdgePurger {
    /// A purger for `options`: inactive without edges; otherwise its background task runs on
    /// the current runtime.
    pub fn start(options: &EdgeOptions) -> Self {
        Self {
            purger: strata_core::edge_purge::EdgePurger::start(
                &options.targets,
                Duration::from_secs(options.shared_max_age_secs + 30),
            ),
            shared_max_age_secs: options.shared_max_age_secs,
            cache_control: http::HeaderValue::from_static("no-cache"),
            cdn_cache_control: cdn_cache_control(
                options.shared_max_age_secs,
                options.shared_stale_if_error_secs,
            ),
        }
    }

    /// The purger of the edges named `--followed-edges` (inactive without it), with the same
    /// caching settings.
    pub fn followed(options: &EdgeOptions) -> Self {
        let Some(prefix) = &options.followed_edges else {
            return Self::default();
        };
        let Some(state) = &options.targets.purge_edges_state else {
            return Self::default();
        };
        let targets = PurgeTargets {
            purge_edges: Vec::new(),
            purge_edges_state: Some(state.clone()),
            named: Some(prefix.clone()),
        };
        Self::start(&EdgeOptions {
            targets,
            ..options.clone()
        })
    }

    /// After user `id` was changed or deleted: purges its own objects and every list page
    /// (which shows it) from every edge, in the background.
    pub fn purge_user(&self, id: u64) {
        self.purge(user_key(id));
        self.purge_lists();
    }

    /// After a user was created: every list page (which should now show it). Its own key has
    /// nothing to purge: what its id answered before, a 404, is an error, never stored.
    /// Every user's objects and every list page, from every edge, in the background: for when
    /// which users changed is not known (a change-log follower that lost the log).
    pub fn purge_every_user(&self) {
        self.purger.purge_prefix("/users".to_string());
    }

    pub fn purge_lists(&self) {
        self.purge(LIST_KEY.to_string());
    }

    /// Purges `key` from every edge, in the background.
    pub fn purge(&self, key: String) {
        self.purger.purge(key);
    }

    /// Marks an answer the edges may keep, filed under `key` (`Surrogate-Key`): `Cache-Control:
    /// no-cache` for browsers and other caches, and `CDN-Cache-Control` when the edges may keep
    /// it (a profile, a list page, a photo's redirect).
    pub fn tag(&self, headers: &mut http::HeaderMap, key: &str) {
        if let Ok(v) = http::HeaderValue::from_str(key) {
            headers.insert("surrogate-key", v);
        }
        headers.insert(http::header::CACHE_CONTROL, self.cache_control.clone());
        if let Some(targeted) = &self.cdn_cache_control {
            headers.insert("cdn-cache-control", targeted.clone());
        }
    }

    /// The purger itself, for a photo worker in this process.
    pub fn purger(&self) -> strata_core::edge_purge::EdgePurger {
        self.purger.clone()
    }

    /// The `Cache-Control` of a profile's answer: `no-cache`, whatever the edges may do.
    pub fn profile_cache_control(&self) -> http::HeaderValue {
        self.cache_control.clone()
    }

    /// The `CDN-Cache-Control` of a profile's answer, when the edges may keep it.
    pub fn profile_cdn_cache_control(&self) -> Option<http::HeaderValue> {
        self.cdn_cache_control.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_revalidated_every_time_unless_the_edges_may_keep_them() {
        let p = EdgePurger::default();
        assert_eq!(p.profile_cache_control(), "no-cache");
        assert_eq!(p.profile_cdn_cache_control(), None);
        let p = EdgePurger::start(&EdgeOptions {
            shared_stale_if_error_secs: 86_400,
            ..EdgeOptions::default()
        });
        assert_eq!(
            p.profile_cdn_cache_control(),
            None,
            "stale-if-error alone lets the edges keep nothing"
        );
        let p = EdgePurger::start(&EdgeOptions {
            shared_max_age_secs: 60,
            shared_stale_if_error_secs: 86_400,
            ..EdgeOptions::default()
        });
        assert_eq!(p.profile_cache_control(), "no-cache", "browsers revalidate");
        assert_eq!(
            p.profile_cdn_cache_control().expect("targeted"),
            "public, max-age=60, stale-if-error=86400"
        );
        let p = EdgePurger::start(&EdgeOptions {
            shared_max_age_secs: 60,
            ..EdgeOptions::default()
        });
        assert_eq!(
            p.profile_cdn_cache_control().expect("targeted"),
            "public, max-age=60"
        );
    }
}
