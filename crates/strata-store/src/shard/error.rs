//! Why a shard map, or a change to one, was refused: each message says what is wrong and how
//! to put it right.

use strata_core::user::UserId;

use super::group::{BadGroupName, ShardGroup};
use super::slot::{BadSlotRange, SLOTS, SlotId, SlotRange};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardMapError {
    #[error("the shard map has no shard groups: name at least one")]
    NoGroups,
    #[error(
        "the shard map has {count} shard groups, more than its {SLOTS} slots: every group must be able to hold a slot"
    )]
    TooManyGroups { count: usize },
    #[error("shard group {0} is named twice: give each group its own name")]
    DuplicateGroup(ShardGroup),
    #[error(transparent)]
    BadGroupName(#[from] BadGroupName),
    #[error(transparent)]
    BadSlotRange(#[from] BadSlotRange),
    #[error(
        "slots {slots} go to shard group {group}, which the map does not list: add it to the groups or give the slots to one it lists"
    )]
    SlotsToUnknownGroup { slots: SlotRange, group: ShardGroup },
    #[error(
        "user {user} is pinned to shard group {group}, which the map does not list: add the group first, or pin the user to a group it lists"
    )]
    PinToUnknownGroup { user: UserId, group: ShardGroup },
    #[error("slot {slot} is given to both {first} and {second}: a slot belongs to one group")]
    SlotAssignedTwice {
        slot: SlotId,
        first: ShardGroup,
        second: ShardGroup,
    },
    #[error("slots {ranges} belong to no shard group: every slot must have one", ranges = list(.0))]
    Unassigned(Vec<SlotRange>),
    #[error("the strategy modulo({0}) is impossible: the divisor must be between 1 and {SLOTS}")]
    BadModulo(u16),
    #[error(
        "cannot split {from} shard groups into {to}: the new count must be a multiple of the old one (2, 3, … times as many), with a name for each new group"
    )]
    SplitNotMultiple { from: usize, to: usize },
    #[error("cannot merge {from} shard groups into {to}: the new count must divide the old one")]
    MergeNotDivisor { from: usize, to: usize },
    #[error(
        "merging would remove shard group {group}, to which user {user} is pinned: unpin the user or pin it to a group that stays first"
    )]
    MergeDropsPin { user: UserId, group: ShardGroup },
    #[error("user {0} is not pinned")]
    NotPinned(UserId),
    #[error("shard group {group} still holds slots: move them to another group before dropping it")]
    MergeDropsSlots { group: ShardGroup },
}

fn list(ranges: &[SlotRange]) -> String {
    ranges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
