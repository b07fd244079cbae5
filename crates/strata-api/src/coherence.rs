//! Coherent caches on one embedded database: the data tier's log of committed user changes
//! ([`strata_store::changes::ChangeFeed`]) as the cache tier's change source
//! ([`strata_cache::watch::ChangeSource`]) — user ids become the keys [`crate::commit::cache_key`]
//! names. The two tiers know nothing of each other; this is where they meet.

use std::sync::Arc;

use strata_cache::watch::{ChangeSource, Changes};
use strata_store::changes::{ChangeFeed, ChangeFollower, Followed, UserChanges};

use crate::commit::{USER_KEY_PREFIX, cache_key};

/// The change log of the users an API server caches.
pub struct UserChangeSource(pub Arc<dyn ChangeFeed>);

impl ChangeSource for UserChangeSource {
    fn poll(&self) -> Result<Changes, String> {
        Ok(match self.0.poll().map_err(|e| e.to_string())? {
            UserChanges::Nothing => Changes::Nothing,
            UserChanges::Users(users) => Changes::Keys(
                users
                    .into_iter()
                    .map(|(id, version)| (cache_key(id), version))
                    .collect(),
            ),
            UserChanges::Everything => Changes::Everything,
        })
    }
}

/// How often an API server asks its database what was committed (PostgreSQL).
pub const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(25);

/// Follows the log of committed user changes on this server's own database — in a data
/// centre, its replica — and applies each change to this server's caches
/// ([`strata_cache::tiered::Tiered::followed`]), until the task is dropped. Every API server
/// follows for itself: no message from another server is needed, so a cut link leaves a data
/// centre's caches as consistent as its replica.
///
/// `edges` (this data centre's, `--followed-edges`) are purged of each user that changed, once
/// this server's database has the change: a request they passed on before it arrived here may
/// have put the old copy back after the writer's own purge. When the log says "anything may
/// have changed", they are purged of every user (`/users…`).
pub async fn follow_changes(
    follower: Arc<dyn ChangeFollower>,
    cache: strata_cache::tiered::Tiered<strata_store::StoreError>,
    edges: crate::edge_purge::EdgePurger,
) {
    let mut ticks = tokio::time::interval(FOLLOW_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Set when the log said "anything" and L2 could not be emptied yet: tried again first.
    let mut everything_pending = false;
    loop {
        ticks.tick().await;
        if everything_pending {
            everything_pending = forget_everything(&cache).await.is_err();
            if everything_pending {
                continue;
            }
        }
        match follower.poll().await {
            Ok(Followed::Nothing) => {}
            Ok(Followed::Users(users)) => {
                metrics::counter!("strata_cache_followed_changes_total")
                    .increment(users.len() as u64);
                for user in users {
                    let entry = match &user.current {
                        Some(stored) => crate::commit::cache_entry(stored),
                        None => strata_cache::tiered::Entry::absent(user.logged),
                    };
                    cache.followed(&cache_key(user.id), entry).await;
                    edges.purge(crate::edge_purge::user_key(user.id.0));
                }
                edges.purge_lists();
            }
            Ok(Followed::Everything) => {
                metrics::counter!("strata_cache_followed_everything_total").increment(1);
                everything_pending = forget_everything(&cache).await.is_err();
                edges.purge_every_user();
            }
            Err(e) => {
                metrics::counter!("strata_cache_follow_errors_total").increment(1);
                tracing::debug!(error = %e, "cannot follow the change log; trying again");
            }
        }
    }
}

async fn forget_everything(
    cache: &strata_cache::tiered::Tiered<strata_store::StoreError>,
) -> Result<(), strata_cache::kv::CacheError> {
    let done = cache.followed_everything(USER_KEY_PREFIX).await;
    if let Err(e) = &done {
        tracing::warn!(error = %e, "cannot empty the shared cache after the change log said anything may have changed; trying again");
    }
    done
}
