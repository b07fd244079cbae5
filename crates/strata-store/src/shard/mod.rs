//! The shard map: which shard group (one database: a primary and its replicas) holds each
//! user. The key space of user ids is divided into [`SLOTS`] slots; the map gives each slot to
//! a group, and may pin a user to a group of its own. Resharding moves whole slots between
//! groups; a user never changes slot. See `docs/sharding.md`.
//!
//! Here, in the data tier, because both sides use it: the control plane publishes the map
//! (versioned, compare-and-set) and the router that will send each call to its group reads it.
//!
//! - [`slot`]: slots, slot ranges, the strategies (hash, range, the seeds' modulo);
//! - [`group`]: shard group names;
//! - [`map`]: the map, its checks and the changes that move slots (split, merge, move, pin);
//! - [`error`]: why a map or a change was refused;
//! - `wire`: the map as JSON with compact slot ranges.

pub mod email_index;
pub mod error;
pub mod fence;
pub mod group;
pub mod map;
pub mod router;
pub mod slot;
pub mod source;
mod wire;

pub use error::ShardMapError;
pub use group::ShardGroup;
pub use map::{Reshard, ShardMap, SlotMove};
pub use slot::{SLOTS, SlotId, SlotRange, Strategy, slot_of_key};

#[cfg(test)]
mod tests;
