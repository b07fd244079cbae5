//! The shard map's checks, changes and JSON form.

use std::collections::BTreeMap;

use proptest::prelude::{Just, any, prop_assert, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as Gen;
use strata_core::user::UserId;

use super::*;

fn g(name: &str) -> ShardGroup {
    ShardGroup::parse(name).expect("a group name")
}

fn groups(n: usize) -> Vec<ShardGroup> {
    (1..=n).map(|i| g(&format!("s{i}"))).collect()
}

fn range(first: u16, last: u16) -> SlotRange {
    SlotRange::new(first, last).expect("a range")
}

fn four() -> ShardMap {
    ShardMap::even(Strategy::Hash, groups(4)).expect("four groups")
}

#[test]
fn an_even_map_deals_contiguous_equal_ranges() {
    let map = four();
    assert_eq!(map.version(), 1);
    let got: Vec<(String, String)> = map
        .assignments()
        .into_iter()
        .map(|(r, g)| (r.to_string(), g.to_string()))
        .collect();
    let want = [
        ("0-1023", "s1"),
        ("1024-2047", "s2"),
        ("2048-3071", "s3"),
        ("3072-4095", "s4"),
    ]
    .map(|(r, g)| (r.to_string(), g.to_string()));
    assert_eq!(got, want);
    let three = ShardMap::even(Strategy::Hash, groups(3)).expect("three");
    let sizes: Vec<usize> = three
        .groups()
        .iter()
        .map(|g| three.slots_of(g).len())
        .collect();
    assert_eq!(sizes, [1365, 1365, 1366]);
}

#[test]
fn the_seeds_modulo_four_is_expressible() {
    let map = ShardMap::even(Strategy::Modulo(4), groups(4)).expect("modulo 4");
    for id in 0..1000u64 {
        let want = format!("s{}", id % 4 + 1);
        assert_eq!(map.group_of(UserId(id)).as_str(), want, "user {id}");
    }
}

#[test]
fn a_map_without_groups_is_refused() {
    assert_eq!(
        ShardMap::even(Strategy::Hash, vec![]),
        Err(ShardMapError::NoGroups)
    );
}

#[test]
fn a_group_named_twice_is_refused() {
    let e = ShardMap::even(Strategy::Hash, vec![g("s1"), g("s2"), g("s1")]).expect_err("refused");
    assert_eq!(e, ShardMapError::DuplicateGroup(g("s1")));
    assert!(e.to_string().contains("named twice"), "{e}");
}

#[test]
fn more_groups_than_slots_is_refused() {
    let e = ShardMap::even(Strategy::Hash, groups(4097)).expect_err("refused");
    assert_eq!(e, ShardMapError::TooManyGroups { count: 4097 });
    assert!(ShardMap::even(Strategy::Hash, groups(4096)).is_ok());
}

#[test]
fn slots_given_to_an_unknown_group_are_refused() {
    let e = ShardMap::new(
        1,
        Strategy::Hash,
        groups(1),
        vec![(SlotRange::all(), g("s9"))],
        BTreeMap::new(),
    )
    .expect_err("refused");
    assert_eq!(
        e,
        ShardMapError::SlotsToUnknownGroup {
            slots: SlotRange::all(),
            group: g("s9")
        }
    );
    assert!(
        e.to_string()
            .contains("0-4095 go to shard group s9, which the map does not list"),
        "{e}"
    );
}

#[test]
fn a_slot_given_twice_is_refused() {
    let e = ShardMap::new(
        1,
        Strategy::Hash,
        groups(2),
        vec![(range(0, 2048), g("s1")), (range(2048, 4095), g("s2"))],
        BTreeMap::new(),
    )
    .expect_err("refused");
    assert_eq!(
        e,
        ShardMapError::SlotAssignedTwice {
            slot: SlotId::new(2048).expect("valid"),
            first: g("s1"),
            second: g("s2")
        }
    );
}

#[test]
fn unassigned_slots_are_refused_and_listed() {
    let e = ShardMap::new(
        1,
        Strategy::Hash,
        groups(2),
        vec![(range(1, 99), g("s1")), (range(200, 4094), g("s2"))],
        BTreeMap::new(),
    )
    .expect_err("refused");
    assert_eq!(
        e,
        ShardMapError::Unassigned(vec![range(0, 0), range(100, 199), range(4095, 4095)])
    );
    assert_eq!(
        e.to_string(),
        "slots 0, 100-199, 4095 belong to no shard group: every slot must have one"
    );
}

#[test]
fn a_pin_to_an_unknown_group_is_refused() {
    let e = four().pin(UserId(7), g("celebrity")).expect_err("refused");
    assert_eq!(
        e,
        ShardMapError::PinToUnknownGroup {
            user: UserId(7),
            group: g("celebrity")
        }
    );
    assert!(e.to_string().contains("add the group first"), "{e}");
}

#[test]
fn modulo_zero_is_refused() {
    let e = ShardMap::even(Strategy::Modulo(0), groups(1)).expect_err("refused");
    assert_eq!(e, ShardMapError::BadModulo(0));
    assert_eq!(
        ShardMap::even(Strategy::Modulo(4097), groups(1)).expect_err("refused"),
        ShardMapError::BadModulo(4097)
    );
}

#[test]
fn a_split_to_a_count_that_is_not_a_multiple_is_refused() {
    let e = four().split(vec![g("s5")]).expect_err("refused");
    assert_eq!(e, ShardMapError::SplitNotMultiple { from: 4, to: 5 });
    assert!(e.to_string().contains("multiple"), "{e}");
    assert_eq!(
        four().split(vec![]).expect_err("refused"),
        ShardMapError::SplitNotMultiple { from: 4, to: 4 }
    );
    // New groups must have names of their own.
    assert_eq!(
        four().split(groups(4)).expect_err("refused"),
        ShardMapError::DuplicateGroup(g("s1"))
    );
}

#[test]
fn a_merge_to_a_count_that_does_not_divide_is_refused() {
    for to in [0, 3, 4, 5] {
        assert_eq!(
            four().merge(to).expect_err("refused"),
            ShardMapError::MergeNotDivisor { from: 4, to }
        );
    }
}

#[test]
fn a_merge_that_would_remove_a_pinned_users_group_is_refused() {
    let map = four().pin(UserId(1), g("s3")).expect("pin");
    assert_eq!(
        map.merge(2).expect_err("refused"),
        ShardMapError::MergeDropsPin {
            user: UserId(1),
            group: g("s3")
        }
    );
}

#[test]
fn moving_slots_to_an_unknown_group_is_refused() {
    assert_eq!(
        four()
            .move_slots(range(0, 9), &g("s9"))
            .expect_err("refused"),
        ShardMapError::SlotsToUnknownGroup {
            slots: range(0, 9),
            group: g("s9")
        }
    );
}

#[test]
fn unpinning_a_user_that_is_not_pinned_is_refused() {
    assert_eq!(
        four().unpin(UserId(3)),
        Err(ShardMapError::NotPinned(UserId(3)))
    );
}

#[test]
fn a_move_reports_the_slots_that_change_hands_and_bumps_the_version() {
    let reshard = four()
        .move_slots(range(1000, 1100), &g("s3"))
        .expect("move");
    assert_eq!(reshard.map.version(), 2);
    assert_eq!(
        reshard.moves,
        vec![
            SlotMove {
                slots: range(1000, 1023),
                from: g("s1"),
                to: g("s3")
            },
            SlotMove {
                slots: range(1024, 1100),
                from: g("s2"),
                to: g("s3")
            },
        ]
    );
    assert_eq!(reshard.slots_moved(), 101);
}

#[test]
fn splitting_four_into_eight_hands_each_group_s_second_half_to_a_new_group() {
    let reshard = four()
        .split((5..=8).map(|i| g(&format!("s{i}"))).collect())
        .expect("split");
    let moves: Vec<String> = reshard
        .moves
        .iter()
        .map(|m| format!("{} {}->{}", m.slots, m.from, m.to))
        .collect();
    assert_eq!(
        moves,
        [
            "512-1023 s1->s5",
            "1536-2047 s2->s6",
            "2560-3071 s3->s7",
            "3584-4095 s4->s8"
        ]
    );
}

#[test]
fn a_celebrity_gets_a_group_of_their_own() {
    let celebrity = UserId(1 << 40);
    let map = four().add_group(g("celebrity-1")).expect("add");
    assert!(map.slots_of(&g("celebrity-1")).is_empty());
    let pinned = map.pin(celebrity, g("celebrity-1")).expect("pin");
    assert_eq!(pinned.version(), 3);
    assert_eq!(pinned.group_of(celebrity), &g("celebrity-1"));
    let unpinned = pinned.unpin(celebrity).expect("unpin");
    assert_eq!(unpinned.version(), 4);
    assert_eq!(unpinned.group_of(celebrity), four().group_of(celebrity));
}

#[test]
fn a_document_with_an_impossible_layout_is_refused_with_the_reason() {
    let cases = [
        (
            r#"{"version":1,"strategy":"hash","groups":["s1"],"slots":[{"slots":"0-5000","group":"s1"}]}"#,
            "past the last slot",
        ),
        (
            r#"{"version":1,"strategy":"hash","groups":["s1"],"slots":[{"slots":"0-4095","group":"s2"}]}"#,
            "does not list",
        ),
        (
            r#"{"version":1,"strategy":"hash","groups":["s1"],"slots":[{"slots":"0-4095","group":"s1"}],"pins":{"5":"vip"}}"#,
            "user 5 is pinned to shard group vip",
        ),
        (
            r#"{"version":1,"strategy":"hash","groups":["S1"],"slots":[]}"#,
            "lowercase",
        ),
        (
            r#"{"version":1,"strategy":"hash","groups":["s1"],"slots":[{"slots":"0-4094","group":"s1"}]}"#,
            "slots 4095 belong to no shard group",
        ),
    ];
    for (doc, why) in cases {
        let e = serde_json::from_str::<ShardMap>(doc).expect_err("refused");
        assert!(e.to_string().contains(why), "{doc}: {e}");
    }
}

#[test]
fn the_json_form_uses_compact_slot_ranges() {
    let map = ShardMap::even(Strategy::Modulo(2), groups(2))
        .expect("map")
        .pin(UserId(42), g("s2"))
        .expect("pin");
    assert_eq!(
        serde_json::to_string(&map).expect("json"),
        r#"{"version":2,"strategy":{"modulo":2},"groups":["s1","s2"],"slots":[{"slots":"0-2047","group":"s1"},{"slots":"2048-4095","group":"s2"}],"pins":{"42":"s2"}}"#
    );
}

fn strategy() -> impl Gen<Value = Strategy> {
    prop_oneof![
        Just(Strategy::Hash),
        Just(Strategy::Range),
        (1..=SLOTS).prop_map(Strategy::Modulo),
    ]
}

/// A map of 1 to 16 groups, with a few slot moves and pins on top of an even deal.
fn shard_map() -> impl Gen<Value = ShardMap> {
    (
        strategy(),
        1usize..=16,
        proptest::collection::vec((0..SLOTS, 0..SLOTS, 0usize..16), 0..4),
        proptest::collection::vec((any::<u64>(), 0usize..16), 0..4),
    )
        .prop_map(|(strategy, n, moves, pins)| {
            let mut map = ShardMap::even(strategy, groups(n)).expect("even");
            for (a, b, to) in moves {
                let to = map.groups()[to % n].clone();
                map = map
                    .move_slots(range(a.min(b), a.max(b)), &to)
                    .expect("move")
                    .map;
            }
            for (user, to) in pins {
                let to = map.groups()[to % n].clone();
                map = map.pin(UserId(user), to).expect("pin");
            }
            map
        })
}

proptest! {
    #[test]
    fn every_id_maps_to_exactly_one_group_of_the_map(map in shard_map(), id: u64) {
        let group = map.group_of(UserId(id));
        prop_assert_eq!(map.groups().iter().filter(|g| *g == group).count(), 1);
        prop_assert_eq!(map.group_of(UserId(id)), group, "the same answer twice");
    }

    #[test]
    fn splitting_four_into_eight_moves_half_the_slots_and_no_id_changes_slot(
        strategy in strategy(),
        ids in proptest::collection::vec(any::<u64>(), 1..50),
    ) {
        let before = ShardMap::even(strategy, groups(4)).expect("four");
        let after = before.split((5..=8).map(|i| g(&format!("s{i}"))).collect()).expect("split");
        prop_assert_eq!(after.slots_moved(), usize::from(SLOTS) / 2);
        prop_assert_eq!(after.map.version(), before.version() + 1);
        for id in ids {
            let id = UserId(id);
            prop_assert_eq!(after.map.slot_of(id), before.slot_of(id));
            // A row moves only with its slot, and only from its old group to a new one.
            let (from, to) = (before.group_of(id), after.map.group_of(id));
            if from != to {
                prop_assert!(after.moves.iter().any(|m| &m.from == from && &m.to == to
                    && m.slots.slots().any(|s| s == before.slot_of(id))));
            }
        }
    }

    #[test]
    fn merge_undoes_split(map in shard_map(), k in 2usize..4) {
        let n = map.groups().len();
        let new: Vec<ShardGroup> = (0..n * (k - 1)).map(|i| g(&format!("new-{i}"))).collect();
        let split = map.split(new).expect("split");
        let merged = split.map.merge(n).expect("merge");
        prop_assert_eq!(merged.slots_moved(), split.slots_moved());
        prop_assert_eq!(merged.map.version(), map.version() + 2);
        prop_assert_eq!(merged.map.assignments(), map.assignments());
        prop_assert_eq!(merged.map.groups(), map.groups());
    }

    #[test]
    fn a_pinned_user_goes_to_its_group_whatever_its_slot(map in shard_map(), id: u64, to in 0usize..16) {
        let group = map.groups()[to % map.groups().len()].clone();
        let pinned = map.pin(UserId(id), group.clone()).expect("pin");
        prop_assert_eq!(pinned.group_of(UserId(id)), &group);
    }

    #[test]
    fn a_map_survives_json(map in shard_map()) {
        let text = serde_json::to_string(&map).expect("json");
        let back: ShardMap = serde_json::from_str(&text).expect("read back");
        prop_assert_eq!(back, map);
    }
}

#[test]
fn the_hash_spreads_sequential_snowflake_ids_evenly_over_four_groups() {
    let map = four();
    let mut counts = BTreeMap::new();
    // 100,000 ids as one node issues them: 25 a millisecond, from a start in 2026.
    let start_ms: u64 = 60_000_000_000;
    for i in 0..100_000u64 {
        let id = ((start_ms + i / 25) << 22) | (7 << 12) | (i % 25);
        *counts
            .entry(map.group_of(UserId(id)).clone())
            .or_insert(0usize) += 1;
    }
    for (group, count) in &counts {
        assert!(
            (23_750..=26_250).contains(count),
            "{group} holds {count} of 100,000 ids: {counts:?}"
        );
    }
    assert_eq!(counts.len(), 4);
}

#[test]
fn the_range_strategy_puts_all_new_users_on_the_latest_group() {
    let map = ShardMap::even(Strategy::Range, groups(4)).expect("range");
    let start_ms: u64 = 60_000_000_000;
    let first = map.group_of(UserId(start_ms << 22)).clone();
    for i in 0..10_000u64 {
        let id = ((start_ms + i) << 22) | (i % 4096);
        assert_eq!(map.group_of(UserId(id)), &first);
    }
}

#[test]
fn going_from_four_to_five_moves_four_rows_in_five_by_modulo_and_one_slot_in_five_by_slots() {
    // By modulo: a row stays only when id % 4 == id % 5.
    let moved = (0..100_000u64).filter(|id| id % 4 != id % 5).count();
    assert_eq!(moved, 80_000);
    // By slots: a fifth group takes the last fifth of each group's slots, and nothing else moves.
    let mut map = four().add_group(g("s5")).expect("add");
    let mut slots_moved = 0;
    for from in groups(4) {
        let mine = map.slots_of(&from);
        let give = &mine[mine.len() - mine.len() / 5..];
        let range = range(give[0].get(), give[give.len() - 1].get());
        let reshard = map.move_slots(range, &g("s5")).expect("move");
        slots_moved += reshard.slots_moved();
        map = reshard.map;
    }
    assert_eq!(slots_moved, 4 * 204);
    assert!((0.19..0.21).contains(&(slots_moved as f64 / f64::from(SLOTS))));
    let sizes: Vec<usize> = map.groups().iter().map(|g| map.slots_of(g).len()).collect();
    assert_eq!(sizes, [820, 820, 820, 820, 816]);
}
