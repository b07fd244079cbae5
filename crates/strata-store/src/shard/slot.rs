//! Slots: the fixed division of the user-id key space that the shard map assigns to shard
//! groups, and the strategies that put a user id in a slot.
//!
//! The number of slots never changes ([`SLOTS`]), so a user's slot never changes either (for a
//! given strategy): resharding moves whole slots from one group to another, never re-deals
//! rows one by one. See `docs/sharding.md`.

use std::fmt;
use std::hash::Hasher as _;

use serde::{Deserialize, Serialize};
use strata_core::user::UserId;

/// How many slots the key space is divided into (as Redis Cluster's 16,384 hash slots, or
/// Vitess's key ranges): many more than there will ever be shard groups, so that slots can be
/// dealt out evenly and moved a few at a time.
pub const SLOTS: u16 = 4096;

/// One slot, `0..SLOTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotId(u16);

impl SlotId {
    /// The slot numbered `n`, when there is one.
    pub fn new(n: u16) -> Option<Self> {
        (n < SLOTS).then_some(Self(n))
    }

    /// Its number.
    pub fn get(self) -> u16 {
        self.0
    }

    /// Every slot, in order.
    pub fn all() -> impl Iterator<Item = SlotId> {
        (0..SLOTS).map(SlotId)
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Slots `first..=last`, written `"first-last"` (or `"n"` for one slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotRange {
    first: SlotId,
    last: SlotId,
}

/// A slot range that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("slot range {text:?} does not exist: {reason}")]
pub struct BadSlotRange {
    pub text: String,
    pub reason: String,
}

impl SlotRange {
    /// Slots `first..=last`; `None` unless `first <= last < SLOTS`.
    pub fn new(first: u16, last: u16) -> Option<Self> {
        (first <= last && last < SLOTS).then_some(Self {
            first: SlotId(first),
            last: SlotId(last),
        })
    }

    /// Every slot.
    pub fn all() -> Self {
        Self {
            first: SlotId(0),
            last: SlotId(SLOTS - 1),
        }
    }

    pub fn first(self) -> SlotId {
        self.first
    }

    pub fn last(self) -> SlotId {
        self.last
    }

    /// How many slots it holds.
    pub fn len(self) -> usize {
        usize::from(self.last.0 - self.first.0) + 1
    }

    /// Never: a range holds at least one slot.
    pub fn is_empty(self) -> bool {
        false
    }

    /// Its slots, in order.
    pub fn slots(self) -> impl Iterator<Item = SlotId> {
        (self.first.0..=self.last.0).map(SlotId)
    }

    /// Reads `"first-last"` or `"n"`, refusing with the reason a range that does not exist.
    pub fn parse(text: &str) -> Result<Self, BadSlotRange> {
        let bad = |reason: String| BadSlotRange {
            text: text.to_string(),
            reason,
        };
        let number = |s: &str| -> Result<u16, BadSlotRange> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!(
                    "{s:?} is not a slot number; write \"first-last\" with slots 0 to {}",
                    SLOTS - 1
                )));
            }
            match s.parse::<u16>() {
                Ok(n) if n < SLOTS => Ok(n),
                _ => Err(bad(format!(
                    "slot {s} is past the last slot, {} (there are {SLOTS})",
                    SLOTS - 1
                ))),
            }
        };
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(text)?;
                (n, n)
            }
        };
        Self::new(first, last).ok_or_else(|| {
            bad(format!(
                "it runs backwards ({first} > {last}); write the lower slot first"
            ))
        })
    }

    /// Consecutive runs of `slots` (ascending, without repeats) as ranges.
    pub fn runs(slots: impl IntoIterator<Item = SlotId>) -> Vec<SlotRange> {
        let mut runs: Vec<SlotRange> = Vec::new();
        for slot in slots {
            match runs.last_mut() {
                Some(run) if run.last.0 + 1 == slot.0 => run.last = slot,
                _ => runs.push(SlotRange {
                    first: slot,
                    last: slot,
                }),
            }
        }
        runs
    }
}

impl fmt::Display for SlotRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl Serialize for SlotRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SlotRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SlotRange::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// How a user id finds its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The default: a stable 64-bit hash of the id's 8 bytes (SipHash-1-3 with fixed keys),
    /// its top 12 bits. Spreads sequential and time-ordered ids evenly over the slots. (Not
    /// std's `DefaultHasher`, whose output may change between Rust releases.) The keys are
    /// public, so the spread holds for ids the servers issue, not for ids chosen to collide —
    /// and clients never choose ids.
    Hash,
    /// The id's place in the id space: the top 12 bits of the 63-bit Snowflake id, i.e. its
    /// creation time in steps of 2^29 ms (about 6.2 days). Ids created together share a slot
    /// and scans by id stay within a group; but every new user lands in the latest slot — a
    /// hot group that takes all sign-ups.
    Range,
    /// The seeds' `user_id % n`, kept to show what slots replace: residue `r` goes to slot
    /// `r * SLOTS / n`, which `ShardMap::even` with `n` groups gives to the
    /// `r`-th group. Changing `n` changes almost every id's slot (4 → 5 moves 80% of rows),
    /// which is why it is not the default.
    Modulo(u16),
}

/// SipHash-1-3 keys. Fixed forever: changing them would move every user to another slot.
const HASH_KEYS: (u64, u64) = (0x5354_5241_5441_2d73, 0x6861_7264_2d6d_6170);

impl Strategy {
    /// The slot of `user` under this strategy. `Modulo(0)` is refused when a map is built; here
    /// it is taken as `Modulo(1)`.
    pub fn slot_of(self, user: UserId) -> SlotId {
        let id = user.0;
        let slot = match self {
            Strategy::Hash => {
                let mut h = siphasher::sip::SipHasher13::new_with_keys(HASH_KEYS.0, HASH_KEYS.1);
                h.write(&id.to_le_bytes());
                (h.finish() >> 52) as u16
            }
            // Snowflake ids keep the top bit zero; an id with it set goes to the last slot.
            Strategy::Range => (id >> 51).min(u64::from(SLOTS - 1)) as u16,
            Strategy::Modulo(n) => {
                let n = u64::from(n.max(1));
                ((id % n) * u64::from(SLOTS) / n) as u16
            }
        };
        SlotId(slot)
    }
}

/// The slot of a key that is not a user id — an email address in the global email index,
/// which is always placed by hash (whatever the map's strategy for user ids): the top 12 bits
/// of SipHash-1-3 with the same fixed keys over the key's bytes.
pub fn slot_of_key(key: &[u8]) -> SlotId {
    let mut h = siphasher::sip::SipHasher13::new_with_keys(HASH_KEYS.0, HASH_KEYS.1);
    h.write(key);
    SlotId((h.finish() >> 52) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_hash_is_stable_across_builds() {
        // Pinned: a change here strands every email index row in the wrong group.
        let slots =
            ["ann@example.com", "bob@example.com", ""].map(|k| slot_of_key(k.as_bytes()).get());
        assert_eq!(slots, PINNED_KEY_SLOTS);
    }

    const PINNED_KEY_SLOTS: [u16; 3] = [3711, 4067, 3858];

    #[test]
    fn slot_ranges_read_and_write_back() {
        assert_eq!(
            SlotRange::parse("0-1023"),
            Ok(SlotRange::new(0, 1023).expect("valid"))
        );
        assert_eq!(SlotRange::parse("7").expect("valid").to_string(), "7");
        assert_eq!(SlotRange::parse("0-4095"), Ok(SlotRange::all()));
        assert_eq!(SlotRange::all().len(), 4096);
    }

    #[test]
    fn a_slot_range_that_does_not_exist_is_refused_with_the_reason() {
        let past = SlotRange::parse("4000-5000").expect_err("refused");
        assert!(
            past.to_string().contains("past the last slot, 4095"),
            "{past}"
        );
        let backwards = SlotRange::parse("10-5").expect_err("refused");
        assert!(
            backwards.to_string().contains("runs backwards"),
            "{backwards}"
        );
        let junk = SlotRange::parse("a-b").expect_err("refused");
        assert!(junk.to_string().contains("not a slot number"), "{junk}");
    }

    #[test]
    fn runs_join_consecutive_slots() {
        let slots = [0, 1, 2, 5, 6, 9].map(|n| SlotId::new(n).expect("valid"));
        let runs: Vec<String> = SlotRange::runs(slots)
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(runs, ["0-2", "5-6", "9"]);
    }

    #[test]
    fn the_hash_is_stable_across_builds() {
        // Pinned values: a change here moves users to other slots in every deployment.
        let slots: Vec<u16> = [0u64, 1, 42, 1 << 40]
            .map(|id| Strategy::Hash.slot_of(UserId(id)).get())
            .to_vec();
        assert_eq!(slots, PINNED_HASH_SLOTS);
    }

    const PINNED_HASH_SLOTS: [u16; 4] = [282, 1662, 1101, 886];

    #[test]
    fn the_range_strategy_puts_time_ordered_ids_in_slot_order() {
        let at = |ms: u64| UserId(ms << 22);
        assert_eq!(Strategy::Range.slot_of(at(0)).get(), 0);
        assert_eq!(Strategy::Range.slot_of(at((1 << 29) - 1)).get(), 0);
        assert_eq!(Strategy::Range.slot_of(at(1 << 29)).get(), 1);
        assert_eq!(Strategy::Range.slot_of(UserId(u64::MAX)).get(), SLOTS - 1);
    }

    #[test]
    fn modulo_four_puts_each_residue_at_the_start_of_a_quarter() {
        let slots: Vec<u16> = (0..4)
            .map(|id| Strategy::Modulo(4).slot_of(UserId(id)).get())
            .collect();
        assert_eq!(slots, [0, 1024, 2048, 3072]);
    }
}
