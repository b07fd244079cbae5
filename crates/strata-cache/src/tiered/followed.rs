//! Changes the data tier reports committed, followed by each API server from its own database
//! (on PostgreSQL, its data centre's replica): invalidation that follows replication.
//!
//! A writer updates its own data centre's L2 and L1s at once ([`Tiered::write`]). The other
//! data centres learn of the write only when their replica has applied it — and then every
//! API server there, following the log on that replica, stores the user as the replica holds
//! it in its L2 (compare-and-set by version, so however many servers do it and in whatever
//! order, the newest stays) and marks its own L1 stale. No server needs another's message, so
//! a cut link leaves each data centre's caches as consistent as its replica, never behind it.

use crate::kv::CacheError;

use super::{Entry, Tiered, now_ms};

impl<E: Send + Sync + 'static> Tiered<E> {
    /// `entry` is what this server's own database now holds for `key`, after a change it
    /// followed: stored in L2 unless a newer version is there, and this server's L1 stops
    /// serving anything older.
    pub async fn followed(&self, key: &str, entry: Entry) {
        if !self.inner.config.enabled {
            return;
        }
        let version = entry.version;
        self.invalidation_target().invalidated(key, version).await;
        let Some(cache) = &self.inner.l2 else {
            return;
        };
        let ttl = self.source_ttl(&entry);
        let held = self.held(
            entry,
            now_ms() + ttl.as_millis() as u64,
            1,
            self.generation(),
        );
        let payload = super::encode_l2(&held.entry, held.expires_ms, held.delta_ms);
        if cache
            .set_versioned(key, version, &payload, ttl)
            .await
            .is_err()
        {
            // The old value may still be in L2: remove it, now or soon.
            metrics::counter!("strata_cache_l2_write_failures_total").increment(1);
            if cache.delete(key).await.is_err() {
                self.repair_later(key);
            }
        }
    }

    /// Anything under `prefix` may have changed (the log was trimmed past this server's
    /// position, or its database is another server than before): L1 is emptied, and L2's keys
    /// under `prefix` are deleted. An error means L2 may still hold them: call again.
    pub async fn followed_everything(&self, prefix: &str) -> Result<(), CacheError> {
        if !self.inner.config.enabled {
            return Ok(());
        }
        // L2 first: a read between the two could otherwise refill L1 from L2's old copy.
        if let Some(cache) = &self.inner.l2 {
            cache.delete_prefix(prefix).await?;
        }
        self.invalidation_target().clear().await;
        Ok(())
    }
}
