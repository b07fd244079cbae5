//! The shard map as JSON, with compact slot ranges:
//!
//! ```json
//! {"version":1,"strategy":"hash","groups":["s1","s2"],
//!  "slots":[{"slots":"0-2047","group":"s1"},{"slots":"2048-4095","group":"s2"}],
//!  "pins":{"42":"s2"}}
//! ```
//!
//! Reading goes through [`ShardMap::new`], so a document with an impossible layout is refused
//! with the same reason as a map built in code.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_core::user::UserId;

use super::group::ShardGroup;
use super::map::ShardMap;
use super::slot::{SlotRange, Strategy};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    version: u64,
    strategy: Strategy,
    groups: Vec<ShardGroup>,
    slots: Vec<Assignment>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pins: BTreeMap<UserId, ShardGroup>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Assignment {
    slots: SlotRange,
    group: ShardGroup,
}

impl Serialize for ShardMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            version: self.version(),
            strategy: self.strategy(),
            groups: self.groups().to_vec(),
            slots: self
                .assignments()
                .into_iter()
                .map(|(slots, group)| Assignment {
                    slots,
                    group: group.clone(),
                })
                .collect(),
            pins: self.pins().clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ShardMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(d)?;
        ShardMap::new(
            wire.version,
            wire.strategy,
            wire.groups,
            wire.slots.into_iter().map(|a| (a.slots, a.group)).collect(),
            wire.pins,
        )
        .map_err(serde::de::Error::custom)
    }
}
