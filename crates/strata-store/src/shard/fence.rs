//! Fences: how a shard group refuses rows it no longer owns, so a router with a stale map can
//! never write (or read) in the wrong place.
//!
//! A resharding cut-over writes a [`Fence`] into the source group's database in the same
//! transaction that ends its last write pause, and only then publishes the new map. Every
//! write (and every point read) of a row checks the fences in its own transaction and fails
//! with [`StoreError::Moved`] when one covers the row: the router refreshes its map and goes to
//! the new group. Because the check and the write share one transaction, no write can slip in
//! between "the rows were copied" and "the map changed" — the mistake a check in the router
//! alone could not rule out.

use serde::{Deserialize, Serialize};
use strata_core::user::UserId;

use super::group::ShardGroup;
use super::slot::{SlotId, SlotRange, Strategy};
use crate::StoreError;

/// Rows a shard group no longer holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// The slots that left (users by the map's strategy; email index rows by
    /// [`super::slot::slot_of_key`]).
    pub slots: SlotRange,
    /// How user ids find their slot in the map that moved them.
    pub strategy: Strategy,
    /// Set for a pin: only this user moved (`slots` is then its slot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserId>,
    /// Users of these slots that did not move: pinned to this group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<UserId>,
    /// Where the rows went.
    pub moved_to: ShardGroup,
    /// The first shard map version that sends them there.
    pub map_version: u64,
}

impl Fence {
    /// Whether this fence covers user `id`.
    pub fn covers_user(&self, id: UserId) -> bool {
        match self.user {
            Some(pinned) => pinned == id,
            None => self.covers_slot(self.strategy.slot_of(id)) && !self.except.contains(&id),
        }
    }

    /// Whether this fence covers an email index row in `slot` (pins move no index rows).
    pub fn covers_key_slot(&self, slot: SlotId) -> bool {
        self.user.is_none() && self.covers_slot(slot)
    }

    fn covers_slot(&self, slot: SlotId) -> bool {
        self.slots.first() <= slot && slot <= self.slots.last()
    }

    /// The error a covered row's call fails with.
    pub fn moved(&self, what: impl Into<String>) -> StoreError {
        StoreError::Moved {
            what: what.into(),
            to: self.moved_to.to_string(),
            map_version: self.map_version,
        }
    }
}

/// The first fence in `fences` covering user `id`, as the error to fail with.
pub fn check_user(fences: &[Fence], id: UserId) -> Result<(), StoreError> {
    match fences.iter().find(|f| f.covers_user(id)) {
        Some(f) => Err(f.moved(format!("user {id}"))),
        None => Ok(()),
    }
}

/// The first fence in `fences` covering the email index row in `slot`, as the error.
pub fn check_key_slot(fences: &[Fence], slot: SlotId) -> Result<(), StoreError> {
    match fences.iter().find(|f| f.covers_key_slot(slot)) {
        Some(f) => Err(f.moved(format!("the email index slot {slot}"))),
        None => Ok(()),
    }
}

/// `fence` without the slots of `slots` (zero, one or two fences).
pub fn subtract(fence: &Fence, slots: SlotRange) -> Vec<Fence> {
    let (a, b) = (fence.slots.first().get(), fence.slots.last().get());
    let (x, y) = (slots.first().get(), slots.last().get());
    if y < a || b < x {
        return vec![fence.clone()];
    }
    let mut out = Vec::new();
    if a < x
        && let Some(r) = SlotRange::new(a, x - 1)
    {
        out.push(Fence {
            slots: r,
            ..fence.clone()
        });
    }
    if y < b
        && let Some(r) = SlotRange::new(y + 1, b)
    {
        out.push(Fence {
            slots: r,
            ..fence.clone()
        });
    }
    out
}

/// Fences joined where one range ends right before the next and everything else but the map
/// version matches (the joined fence takes the later version).
pub fn compact(mut fences: Vec<Fence>) -> Vec<Fence> {
    fences.sort_by_key(|f| (f.user, f.slots.first()));
    let mut out: Vec<Fence> = Vec::new();
    for f in fences {
        if let Some(last) = out.last_mut()
            && last.user.is_none()
            && f.user.is_none()
            && last.moved_to == f.moved_to
            && last.strategy == f.strategy
            && last.except == f.except
            && u32::from(last.slots.last().get()) + 1 == u32::from(f.slots.first().get())
            && let Some(joined) = SlotRange::new(last.slots.first().get(), f.slots.last().get())
        {
            last.slots = joined;
            last.map_version = last.map_version.max(f.map_version);
            continue;
        }
        out.push(f);
    }
    out
}

/// `fences` without those that send rows to `to` in map `map_version` (an aborted move).
pub fn without_move(fences: Vec<Fence>, to: &str, map_version: u64) -> Vec<Fence> {
    fences
        .into_iter()
        .filter(|f| !(f.moved_to.as_str() == to && f.map_version == map_version))
        .collect()
}

/// `fences` without what they say about `slots` (rows of them are moving back); pins kept.
pub fn without_slots(fences: &[Fence], slots: SlotRange) -> Vec<Fence> {
    fences
        .iter()
        .flat_map(|f| {
            if f.user.is_some() {
                vec![f.clone()]
            } else {
                subtract(f, slots)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence(slots: &str, user: Option<u64>) -> Fence {
        Fence {
            slots: SlotRange::parse(slots).expect("valid"),
            strategy: Strategy::Modulo(4),
            user: user.map(UserId),
            except: Vec::new(),
            moved_to: ShardGroup::parse("s5").expect("valid"),
            map_version: 7,
        }
    }

    #[test]
    fn a_fence_covers_the_users_of_its_slots_and_no_others() {
        // modulo(4): id 1 is in slot 1024, id 2 in slot 2048.
        let f = [fence("1024-2047", None)];
        let err = check_user(&f, UserId(1)).expect_err("moved");
        assert!(
            matches!(&err, StoreError::Moved { to, map_version: 7, .. } if to == "s5"),
            "{err}"
        );
        assert!(check_user(&f, UserId(2)).is_ok());
        assert!(check_user(&f, UserId(0)).is_ok());
        assert!(check_key_slot(&f, SlotId::new(1500).expect("valid")).is_err());
        assert!(check_key_slot(&f, SlotId::new(2048).expect("valid")).is_ok());
    }

    #[test]
    fn a_pin_fence_covers_only_its_user() {
        let f = [fence("1024", Some(5))];
        assert!(check_user(&f, UserId(5)).is_err());
        // User 1 shares slot 1024 with user 5, but only the pinned user moved.
        assert!(check_user(&f, UserId(1)).is_ok());
        assert!(check_key_slot(&f, SlotId::new(1024).expect("valid")).is_ok());
    }

    fn fence_to(first: u16, last: u16, to: &str, version: u64) -> Fence {
        Fence {
            slots: SlotRange::new(first, last).expect("valid"),
            strategy: Strategy::Hash,
            user: None,
            except: Vec::new(),
            moved_to: ShardGroup::parse(to).expect("valid"),
            map_version: version,
        }
    }

    #[test]
    fn adjacent_fences_to_one_group_are_joined_and_others_kept() {
        let joined = compact(vec![
            fence_to(16, 31, "s5", 3),
            fence_to(0, 15, "s5", 2),
            fence_to(32, 47, "s6", 4),
            fence_to(64, 79, "s5", 5),
        ]);
        let shown: Vec<String> = joined
            .iter()
            .map(|f| format!("{}>{}@{}", f.slots, f.moved_to, f.map_version))
            .collect();
        assert_eq!(shown, ["0-31>s5@3", "32-47>s6@4", "64-79>s5@5"]);
    }

    #[test]
    fn subtracting_slots_from_a_fence_keeps_what_lies_outside() {
        let f = Fence {
            slots: SlotRange::new(100, 199).expect("valid"),
            strategy: Strategy::Hash,
            user: None,
            except: Vec::new(),
            moved_to: ShardGroup::parse("s2").expect("valid"),
            map_version: 3,
        };
        let parts = |x, y| {
            subtract(&f, SlotRange::new(x, y).expect("valid"))
                .iter()
                .map(|f| f.slots.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(parts(0, 50), ["100-199"]);
        assert_eq!(parts(0, 4095), Vec::<String>::new());
        assert_eq!(parts(120, 130), ["100-119", "131-199"]);
        assert_eq!(parts(100, 150), ["151-199"]);
        assert_eq!(parts(150, 300), ["100-149"]);
    }
}
