//! What L1 keeps: the version rule every store into it follows, and the target that
//! invalidations (from the bus or the change log) drive.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use moka::ops::compute::Op;

use super::{Entry, Held, Inner, lock};
use crate::bus::InvalidationTarget;

/// L1's version rule: keep what is there if it is newer, or if it is the same version and
/// what arrives is only a marker. Anything from before the last clear (`generation`) counts
/// for nothing.
pub(super) async fn offer(
    l1: &moka::future::Cache<String, Held>,
    key: &str,
    held: Held,
    generation: u64,
) {
    l1.entry(key.to_string())
        .and_compute_with(|current| {
            // A marker never displaces the same version; a value displaces a marker of its
            // own version (it is what the marker announced) and refreshes an equal value.
            let keep = held.generation < generation
                || current.as_ref().is_some_and(|c| {
                    let there = c.value().entry.version;
                    c.value().generation >= generation
                        && (there > held.entry.version
                            || (there == held.entry.version && held.marker))
                });
            async move { if keep { Op::Nop } else { Op::Put(held) } }
        })
        .await;
}

pub(super) struct L1Target<E>(pub(super) std::sync::Weak<Inner<E>>);

#[async_trait]
impl<E: Send + Sync + 'static> InvalidationTarget for L1Target<E> {
    async fn invalidated(&self, key: &str, version: u64) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        // New requests must not join a fill that started before this write.
        lock(&inner.flights).remove(key);
        let generation = inner.generation.load(Ordering::Acquire);
        let marker = Held {
            entry: Entry::absent(version),
            marker: true,
            expires_ms: 0,
            delta_ms: 0,
            ttl: inner.config.l1_ttl.max(Duration::from_secs(1)),
            generation,
        };
        offer(&inner.l1, key, marker, generation).await;
    }

    async fn clear(&self) {
        if let Some(inner) = self.0.upgrade() {
            // Fills begun before now may bring back what was cleared: their generation is old.
            inner.generation.fetch_add(1, Ordering::AcqRel);
            inner.l1.invalidate_all();
            lock(&inner.flights).clear();
        }
    }
}
