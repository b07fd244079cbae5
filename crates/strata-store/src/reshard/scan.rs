//! Reading a group's rows of a slot range: checksums for verification, and deleting the
//! copies a group no longer owns.

use std::collections::BTreeSet;

use super::rows::{Checksum, GroupRows, RowBatch};
use crate::StoreError;
use crate::shard::{SlotRange, Strategy};

/// How to read the users of `slots`: hash slots one at a time (the index on the hash slot gives
/// each in id order, no sort); the other strategies' ranges whole (id ranges, or scans in id
/// order).
pub fn steps(strategy: Strategy, slots: SlotRange) -> Vec<SlotRange> {
    match strategy {
        Strategy::Hash => slots
            .slots()
            .filter_map(|s| SlotRange::new(s.get(), s.get()))
            .collect(),
        _ => vec![slots],
    }
}

/// Count and checksum of a group's rows in `slots` (pinned users left out).
pub async fn checksum(
    rows: &dyn GroupRows,
    strategy: Strategy,
    slots: SlotRange,
    pinned: &BTreeSet<i64>,
) -> Result<Checksum, StoreError> {
    let mut sum = Checksum::default();
    for step in steps(strategy, slots) {
        let mut after = i64::MIN;
        loop {
            let batch = rows.user_rows(strategy, step, after, 2000).await?;
            let Some(last) = batch.last() else { break };
            after = last.id;
            for r in batch.iter().filter(|r| !pinned.contains(&r.id)) {
                sum.add_user(r);
            }
            if batch.len() < 2000 {
                break;
            }
        }
    }
    for slot in slots.first().get()..=slots.last().get() {
        let mut after = String::new();
        loop {
            let batch = rows
                .email_rows(i64::from(slot), after.clone(), 2000)
                .await?;
            let Some(last) = batch.last() else { break };
            after = last.email.clone();
            for r in &batch {
                sum.add_email(r);
            }
            if batch.len() < 2000 {
                break;
            }
        }
    }
    Ok(sum)
}

/// Deletes a group's rows of `slots` (pinned users kept), in batches.
pub async fn delete_slot_rows(
    rows: &dyn GroupRows,
    strategy: Strategy,
    slots: SlotRange,
    pinned: &BTreeSet<i64>,
    batch: u32,
) -> Result<(), StoreError> {
    for step in steps(strategy, slots) {
        let mut after = i64::MIN;
        loop {
            let found = rows.user_rows(strategy, step, after, batch).await?;
            let Some(last) = found.last() else { break };
            after = last.id;
            let n = found.len();
            rows.apply(RowBatch {
                deleted_users: found
                    .iter()
                    .map(|r| r.id)
                    .filter(|id| !pinned.contains(id))
                    .collect(),
                ..RowBatch::default()
            })
            .await?;
            if n < batch as usize {
                break;
            }
        }
    }
    for slot in slots.first().get()..=slots.last().get() {
        loop {
            let found = rows
                .email_rows(i64::from(slot), String::new(), batch)
                .await?;
            if found.is_empty() {
                break;
            }
            let n = found.len();
            rows.apply(RowBatch {
                deleted_emails: found.into_iter().map(|r| r.email).collect(),
                ..RowBatch::default()
            })
            .await?;
            if n < batch as usize {
                break;
            }
        }
    }
    Ok(())
}
