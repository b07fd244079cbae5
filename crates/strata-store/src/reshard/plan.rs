//! What to reshard, and the plan (the journal) for it: refused with the reason when it is
//! impossible, before anything moves.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_core::user::UserId;

use super::journal::{Journal, MoveState, Phase, PinState};
use crate::StoreError;
use crate::shard::{ShardGroup, ShardMap, SlotRange};

/// What to reshard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Split into or merge down to this many groups.
    Shards(usize),
    /// Move one slot range to a group.
    Move { slots: SlotRange, to: ShardGroup },
    /// Move a user to a group of its own (which must be in the map).
    Pin { user: UserId, to: ShardGroup },
    /// Move a pinned user back to its slot's group, and drop the pin.
    Unpin { user: UserId },
}

impl Request {
    pub fn describe(&self) -> String {
        match self {
            Request::Shards(n) => format!("--shards {n}"),
            Request::Move { slots, to } => format!("move {slots} to {to}"),
            Request::Pin { user, to } => format!("pin {user} to {to}"),
            Request::Unpin { user } => format!("unpin {user}"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Slots cut over together (one write pause each).
    pub chunk_slots: u16,
    /// Rows per copy batch.
    pub batch: u32,
    /// Wait before deleting the old copies (listings begun on the old map finish first).
    pub cleanup_grace: Duration,
    /// Stop after this many cut-overs (a drill's "kill it in the middle"); `None`: finish.
    pub stop_after_cuts: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            chunk_slots: 8,
            batch: 500,
            cleanup_grace: Duration::from_secs(2),
            stop_after_cuts: None,
        }
    }
}

/// What a finished resharding did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub what: String,
    pub finished: bool,
    pub map_version: u64,
    pub groups: usize,
    pub slots_moved: usize,
    pub rows_copied: u64,
    pub cut_overs: usize,
    pub pauses_ms: Vec<f64>,
    /// Each pause's parts: final catch-up, verification, publication (milliseconds).
    pub pause_parts_ms: Vec<[f64; 3]>,
    pub verified_users: u64,
    pub verified_emails: u64,
    pub seconds: f64,
}

/// Makes the journal for `request` against `map`; refuses an impossible request with the
/// reason, before anything moves.
pub fn plan(map: &ShardMap, request: &Request, id: String) -> Result<Journal, StoreError> {
    let refuse = |e: crate::shard::ShardMapError| StoreError::Unusable(e.to_string());
    let mut journal = Journal {
        id,
        what: request.describe(),
        phase: Phase::Copying,
        from_version: map.version(),
        new_groups: Vec::new(),
        keep_groups: None,
        moves: Vec::new(),
        pin: None,
        capture: BTreeMap::new(),
        pending: None,
        pauses_ms: Vec::new(),
        pause_parts_ms: Vec::new(),
        rows_copied: 0,
        verified: Vec::new(),
        cut_any: false,
    };
    let moves = match request {
        Request::Shards(n) => {
            let from = map.groups().len();
            if *n == from {
                return Err(StoreError::Unusable(format!(
                    "the map already has {from} shard groups: nothing to do"
                )));
            }
            if *n > from {
                let new = fresh_names(map, n - from);
                journal.new_groups = new.clone();
                map.split(new).map_err(refuse)?.moves
            } else {
                journal.keep_groups = Some(*n);
                map.merge(*n).map_err(refuse)?.moves
            }
        }
        Request::Move { slots, to } => map.move_slots(*slots, to).map_err(refuse)?.moves,
        Request::Pin { user, to } => {
            if !map.groups().contains(to) {
                return Err(StoreError::Unusable(format!(
                    "there is no shard group {to}: the map has {}; add it first (`strata shard add-group {to}`)",
                    names(map)
                )));
            }
            let from = map.group_of(*user).clone();
            if from == *to {
                return Err(StoreError::Unusable(format!(
                    "user {user} is already in shard group {to}"
                )));
            }
            journal.pin = Some(PinState {
                user: *user,
                from,
                to: to.clone(),
                unpin: false,
            });
            Vec::new()
        }
        Request::Unpin { user } => {
            let Some(from) = map.pins().get(user).cloned() else {
                return Err(StoreError::Unusable(format!(
                    "user {user} is not pinned: it is in its slot's group {}",
                    map.group_of(*user)
                )));
            };
            let to = map.group_of_slot(map.slot_of(*user)).clone();
            journal.pin = Some(PinState {
                user: *user,
                from,
                to,
                unpin: true,
            });
            Vec::new()
        }
    };
    if moves.is_empty() && journal.pin.is_none() {
        return Err(StoreError::Unusable(
            "nothing would move: the slots are already in that group".into(),
        ));
    }
    journal.moves = moves
        .into_iter()
        .map(|m| MoveState {
            slots: m.slots,
            from: m.from,
            to: m.to,
            copied_to: None,
            cut_to: None,
        })
        .collect();
    Ok(journal)
}

fn names(map: &ShardMap) -> String {
    map.groups()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `n` names `sK` not in the map, lowest first.
fn fresh_names(map: &ShardMap, n: usize) -> Vec<ShardGroup> {
    (1..)
        .filter_map(|i| ShardGroup::parse(&format!("s{i}")).ok())
        .filter(|g| !map.groups().contains(g))
        .take(n)
        .collect()
}
