//! [`ShardMap`]: which shard group holds each user — every slot given to one group, a few
//! users pinned to a group of their own — and the changes that move slots between groups,
//! each a new map one version up with the plan of what moves ([`Reshard`]).
//!
//! A map that exists is valid: the constructors refuse an impossible layout with the reason
//! ([`ShardMapError`]), and so does reading one (`wire.rs`).

use std::collections::{BTreeMap, BTreeSet};

use strata_core::user::UserId;

use super::error::ShardMapError;
use super::group::ShardGroup;
use super::slot::{SLOTS, SlotId, SlotRange, Strategy};

/// The shard map; see the module documentation and `docs/sharding.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    version: u64,
    strategy: Strategy,
    groups: Vec<ShardGroup>,
    /// For each slot, the index of its group in `groups`.
    slots: Vec<u16>,
    pins: BTreeMap<UserId, ShardGroup>,
}

/// Slots that change hands: the unit of work of a resharder (copy the slots' rows from `from`
/// to `to`, then switch the map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMove {
    pub slots: SlotRange,
    pub from: ShardGroup,
    pub to: ShardGroup,
}

/// A new map and the slots that move to get there from the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reshard {
    pub map: ShardMap,
    pub moves: Vec<SlotMove>,
}

impl Reshard {
    /// How many slots change hands.
    pub fn slots_moved(&self) -> usize {
        self.moves.iter().map(|m| m.slots.len()).sum()
    }
}

impl ShardMap {
    /// Version 1 of a map that deals the slots out to `groups` in contiguous, even ranges
    /// (group `i` gets slots `i * SLOTS / n ..` up to the next group's first).
    pub fn even(strategy: Strategy, groups: Vec<ShardGroup>) -> Result<Self, ShardMapError> {
        check_groups(&groups)?;
        let n = groups.len();
        let assignments = (0..n)
            .map(|i| {
                let first = (i * usize::from(SLOTS) / n) as u16;
                let next = ((i + 1) * usize::from(SLOTS) / n) as u16;
                (
                    SlotRange::new(first, next - 1).expect("a group gets at least one slot"),
                    groups[i].clone(),
                )
            })
            .collect();
        Self::new(1, strategy, groups, assignments, BTreeMap::new())
    }

    /// A map from its parts, refused with the reason when the layout is impossible: no
    /// groups, more groups than slots, a name twice, slots given to a group not listed or to
    /// two groups, a slot given to none, a pin to a group not listed, `modulo(0)`.
    pub fn new(
        version: u64,
        strategy: Strategy,
        groups: Vec<ShardGroup>,
        assignments: Vec<(SlotRange, ShardGroup)>,
        pins: BTreeMap<UserId, ShardGroup>,
    ) -> Result<Self, ShardMapError> {
        check_groups(&groups)?;
        if let Strategy::Modulo(n) = strategy
            && !(1..=SLOTS).contains(&n)
        {
            return Err(ShardMapError::BadModulo(n));
        }
        let index: BTreeMap<&ShardGroup, u16> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g, i as u16))
            .collect();
        let mut slots: Vec<Option<u16>> = vec![None; usize::from(SLOTS)];
        for (range, group) in &assignments {
            let Some(&g) = index.get(group) else {
                return Err(ShardMapError::SlotsToUnknownGroup {
                    slots: *range,
                    group: group.clone(),
                });
            };
            for slot in range.slots() {
                let at = &mut slots[usize::from(slot.get())];
                if let Some(first) = *at {
                    return Err(ShardMapError::SlotAssignedTwice {
                        slot,
                        first: groups[usize::from(first)].clone(),
                        second: group.clone(),
                    });
                }
                *at = Some(g);
            }
        }
        let unassigned =
            SlotRange::runs(SlotId::all().filter(|s| slots[usize::from(s.get())].is_none()));
        if !unassigned.is_empty() {
            return Err(ShardMapError::Unassigned(unassigned));
        }
        if let Some((user, group)) = pins.iter().find(|(_, g)| !index.contains_key(g)) {
            return Err(ShardMapError::PinToUnknownGroup {
                user: *user,
                group: group.clone(),
            });
        }
        Ok(Self {
            version,
            strategy,
            groups,
            slots: slots.into_iter().flatten().collect(),
            pins,
        })
    }

    /// Grows by one with every change.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The groups, in the order splits and merges pair them.
    pub fn groups(&self) -> &[ShardGroup] {
        &self.groups
    }

    /// Users pinned to a group whatever their slot.
    pub fn pins(&self) -> &BTreeMap<UserId, ShardGroup> {
        &self.pins
    }

    /// The slot of `user` (its pin, if any, aside).
    pub fn slot_of(&self, user: UserId) -> SlotId {
        self.strategy.slot_of(user)
    }

    /// The group holding `slot`.
    pub fn group_of_slot(&self, slot: SlotId) -> &ShardGroup {
        &self.groups[usize::from(self.slots[usize::from(slot.get())])]
    }

    /// The group holding `user`: its pin, else its slot's group.
    pub fn group_of(&self, user: UserId) -> &ShardGroup {
        self.pins
            .get(&user)
            .unwrap_or_else(|| self.group_of_slot(self.slot_of(user)))
    }

    /// Every slot range and its group, in slot order (consecutive slots of one group joined).
    pub fn assignments(&self) -> Vec<(SlotRange, &ShardGroup)> {
        let mut out: Vec<(SlotRange, &ShardGroup)> = Vec::new();
        for slot in SlotId::all() {
            let group = self.group_of_slot(slot);
            match out.last_mut() {
                Some((range, g)) if *g == group && range.last().get() + 1 == slot.get() => {
                    *range = SlotRange::new(range.first().get(), slot.get()).expect("in range");
                }
                _ => out.push((
                    SlotRange::new(slot.get(), slot.get()).expect("a slot"),
                    group,
                )),
            }
        }
        out
    }

    /// The slots of `group`, in order.
    pub fn slots_of(&self, group: &ShardGroup) -> Vec<SlotId> {
        SlotId::all()
            .filter(|s| self.group_of_slot(*s) == group)
            .collect()
    }

    /// The slot ranges that change hands from this map to `next`.
    pub fn moves_to(&self, next: &ShardMap) -> Vec<SlotMove> {
        let mut moves: Vec<SlotMove> = Vec::new();
        for slot in SlotId::all() {
            let (from, to) = (self.group_of_slot(slot), next.group_of_slot(slot));
            if from == to {
                continue;
            }
            match moves.last_mut() {
                Some(m)
                    if m.from == *from && m.to == *to && m.slots.last().get() + 1 == slot.get() =>
                {
                    m.slots = SlotRange::new(m.slots.first().get(), slot.get()).expect("in range");
                }
                _ => moves.push(SlotMove {
                    slots: SlotRange::new(slot.get(), slot.get()).expect("a slot"),
                    from: from.clone(),
                    to: to.clone(),
                }),
            }
        }
        moves
    }

    /// The next version with other groups and slots (pins kept), checked whole.
    fn next(&self, groups: Vec<ShardGroup>, slots: &[u16]) -> Result<ShardMap, ShardMapError> {
        let assignments = SlotId::all()
            .map(|s| {
                let range = SlotRange::new(s.get(), s.get()).expect("a slot");
                (
                    range,
                    groups[usize::from(slots[usize::from(s.get())])].clone(),
                )
            })
            .collect();
        Self::new(
            self.version + 1,
            self.strategy,
            groups,
            assignments,
            self.pins.clone(),
        )
    }

    fn reshard(&self, map: ShardMap) -> Reshard {
        let moves = self.moves_to(&map);
        Reshard { map, moves }
    }

    /// Splits every group into `k` (the new count over the old one): group `i` keeps the first
    /// `1/k` of its slots and hands each further `1/k` to one of `new_groups`, taken in order
    /// (group 0's share first). No user changes slot; `1 - 1/k` of the slots change hands —
    /// half of them when 4 groups become 8.
    pub fn split(&self, new_groups: Vec<ShardGroup>) -> Result<Reshard, ShardMapError> {
        let from = self.groups.len();
        let to = from + new_groups.len();
        if new_groups.is_empty() || !to.is_multiple_of(from) {
            return Err(ShardMapError::SplitNotMultiple { from, to });
        }
        let k = to / from;
        let mut slots = self.slots.clone();
        for i in 0..from {
            let mine = self.slots_of(&self.groups[i]);
            for j in 1..k {
                let share = &mine[j * mine.len() / k..(j + 1) * mine.len() / k];
                let new = (from + i * (k - 1) + (j - 1)) as u16;
                for slot in share {
                    slots[usize::from(slot.get())] = new;
                }
            }
        }
        let mut groups = self.groups.clone();
        groups.extend(new_groups);
        Ok(self.reshard(self.next(groups, &slots)?))
    }

    /// Merges the groups into `into` (which must divide their count): what [`ShardMap::split`]
    /// handed out from group `i` goes back to it, and the groups past the first `into` go.
    /// Refused when a user is pinned to a group that would go.
    pub fn merge(&self, into: usize) -> Result<Reshard, ShardMapError> {
        let from = self.groups.len();
        if into == 0 || into >= from || !from.is_multiple_of(into) {
            return Err(ShardMapError::MergeNotDivisor { from, to: into });
        }
        if let Some((user, group)) = self
            .pins
            .iter()
            .find(|(_, g)| self.groups[into..].contains(g))
        {
            return Err(ShardMapError::MergeDropsPin {
                user: *user,
                group: group.clone(),
            });
        }
        let k = from / into;
        let slots: Vec<u16> = self
            .slots
            .iter()
            .map(|&g| {
                let g = usize::from(g);
                if g < into {
                    g as u16
                } else {
                    ((g - into) / (k - 1)) as u16
                }
            })
            .collect();
        Ok(self.reshard(self.next(self.groups[..into].to_vec(), &slots)?))
    }

    /// Gives `slots` to `to`, a group the map lists.
    pub fn move_slots(&self, slots: SlotRange, to: &ShardGroup) -> Result<Reshard, ShardMapError> {
        let Some(g) = self.groups.iter().position(|g| g == to) else {
            return Err(ShardMapError::SlotsToUnknownGroup {
                slots,
                group: to.clone(),
            });
        };
        let mut next = self.slots.clone();
        for slot in slots.slots() {
            next[usize::from(slot.get())] = g as u16;
        }
        Ok(self.reshard(self.next(self.groups.clone(), &next)?))
    }

    /// Adds a group that holds no slot yet (a celebrity's own, before pinning them to it, or
    /// one to move slots to).
    pub fn add_group(&self, group: ShardGroup) -> Result<ShardMap, ShardMapError> {
        let mut groups = self.groups.clone();
        groups.push(group);
        self.next(groups, &self.slots)
    }

    /// Drops the groups past the first `keep` — the last step of a merge, once they hold no
    /// slot. Refused while one of them holds a slot or a pinned user.
    pub fn drop_groups_from(&self, keep: usize) -> Result<ShardMap, ShardMapError> {
        let keep = keep.min(self.groups.len());
        if let Some(&g) = self.slots.iter().find(|&&g| usize::from(g) >= keep) {
            let group = self.groups[usize::from(g)].clone();
            return Err(ShardMapError::MergeDropsSlots { group });
        }
        self.next(self.groups[..keep].to_vec(), &self.slots)
    }

    /// Pins `user` to `group`, whatever its slot. Its row moves from the group that held it
    /// (`self.group_of(user)`) to `group`.
    pub fn pin(&self, user: UserId, group: ShardGroup) -> Result<ShardMap, ShardMapError> {
        let mut pins = self.pins.clone();
        pins.insert(user, group);
        ShardMap::new(
            self.version + 1,
            self.strategy,
            self.groups.clone(),
            self.assignments()
                .into_iter()
                .map(|(r, g)| (r, g.clone()))
                .collect(),
            pins,
        )
    }

    /// Unpins `user`: it goes back to its slot's group.
    pub fn unpin(&self, user: UserId) -> Result<ShardMap, ShardMapError> {
        if !self.pins.contains_key(&user) {
            return Err(ShardMapError::NotPinned(user));
        }
        let mut map = self.clone();
        map.pins.remove(&user);
        map.version += 1;
        Ok(map)
    }
}

fn check_groups(groups: &[ShardGroup]) -> Result<(), ShardMapError> {
    if groups.is_empty() {
        return Err(ShardMapError::NoGroups);
    }
    if groups.len() > usize::from(SLOTS) {
        return Err(ShardMapError::TooManyGroups {
            count: groups.len(),
        });
    }
    let mut seen = BTreeSet::new();
    for g in groups {
        if !seen.insert(g) {
            return Err(ShardMapError::DuplicateGroup(g.clone()));
        }
    }
    Ok(())
}
