//! Coherent caches on one embedded database: the data tier's log of committed user changes
//! ([`strata_store::changes::ChangeFeed`]) as the cache tier's change source
//! ([`strata_cache::watch::ChangeSource`]) — user ids become the keys [`crate::commit::cache_key`]
//! names. The two tiers know nothing of each other; this is where they meet.

use std::sync::Arc;

use strata_cache::watch::{ChangeSource, Changes};
use strata_store::changes::{ChangeFeed, UserChanges};

use crate::commit::cache_key;

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
