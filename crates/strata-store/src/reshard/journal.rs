//! The resharding journal: what a resharding set out to do and how far it got, written
//! atomically after every step, so that a resharder killed at any point resumes where it
//! stopped (every step is idempotent: copies are upserts, the change log is replayed from a
//! recorded position, a pending cut-over is redone or found published).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_core::user::UserId;

use crate::StoreError;
use crate::shard::{ShardGroup, SlotRange};

/// One slot range changing hands, and its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveState {
    pub slots: SlotRange,
    pub from: ShardGroup,
    pub to: ShardGroup,
    /// The last slot whose rows were bulk-copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_to: Option<u16>,
    /// The last slot cut over (owned by `to` in the published map).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_to: Option<u16>,
}

impl MoveState {
    /// The slots not cut over yet.
    pub fn uncut(&self) -> Option<SlotRange> {
        let first = match self.cut_to {
            None => self.slots.first().get(),
            Some(last) if last >= self.slots.last().get() => return None,
            Some(last) => last + 1,
        };
        SlotRange::new(first, self.slots.last().get())
    }
}

/// A user moving to a group of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinState {
    pub user: UserId,
    pub from: ShardGroup,
    pub to: ShardGroup,
    /// An unpin: the user goes back to its slot's group (`to`) and its pin is dropped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unpin: bool,
}

/// A cut-over that fenced its slots and has not yet seen its map published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCut {
    pub move_index: usize,
    pub slots: SlotRange,
    pub map_version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Copying,
    CuttingOver,
    CleaningUp,
}

/// A resharding in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    /// Names the change capture in every source group.
    pub id: String,
    /// What was asked (`--shards 8`, `move 0-99 to s3`, `pin 42 to c1`).
    pub what: String,
    pub phase: Phase,
    /// The map version the plan was made from.
    pub from_version: u64,
    /// Groups added before anything moves.
    pub new_groups: Vec<ShardGroup>,
    /// A merge: the groups past this many are dropped at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_groups: Option<usize>,
    pub moves: Vec<MoveState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<PinState>,
    /// Per source group, the change-log position applied so far.
    pub capture: std::collections::BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingCut>,
    /// The write pause of every cut-over so far, milliseconds.
    #[serde(default)]
    pub pauses_ms: Vec<f64>,
    /// Where each of those pauses went, milliseconds: the final catch-up of the change log,
    /// the verification (counts and checksums on both sides), and the publication (the new
    /// group's fence lifted, the map published). A cut-over redone after a stop has none.
    #[serde(default)]
    pub pause_parts_ms: Vec<[f64; 3]>,
    /// Rows copied so far (bulk and catch-up).
    #[serde(default)]
    pub rows_copied: u64,
    /// Verified slot ranges: `(range, users, emails)` that matched on both sides.
    #[serde(default)]
    pub verified: Vec<(SlotRange, u64, u64)>,
    /// Whether any cut-over has published a map (after which `--abort` cannot undo).
    #[serde(default)]
    pub cut_any: bool,
}

/// Where the journal of a sharded data directory lives.
pub fn journal_path(data: &Path) -> PathBuf {
    data.join("reshard.json")
}

/// The journal, if a resharding is in progress.
pub fn read(path: &Path) -> Result<Option<Journal>, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            StoreError::Unusable(format!(
                "the resharding journal {} cannot be read ({e}): move it away only if no resharding is in progress",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Writes the journal atomically (temporary file, fsync, rename, fsync of the directory).
pub fn write(path: &Path, journal: &Journal) -> Result<(), StoreError> {
    let fail = |e: std::io::Error| {
        StoreError::Unavailable(format!("cannot write the journal {}: {e}", path.display()))
    };
    let text = serde_json::to_vec_pretty(journal)
        .map_err(|e| StoreError::Unavailable(format!("cannot write the journal: {e}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(".reshard.json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(&text).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(fail)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes the journal (the resharding finished or was aborted).
pub fn remove(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
    }
}
