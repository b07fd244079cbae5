//! A k-way merge: many sequences, each in its own order, into one ordered by a key, holding one
//! item per sequence (memory bounded by the number of files, not their size).
//!
//! Stable: items with equal keys come in the order of their sequences, and each sequence's
//! items keep their order among themselves even where its keys go backwards.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Calls `emit(sequence index, item)` for every item of every sequence, smallest key first.
/// Stops at the first error of a sequence or of `emit`.
pub fn merge<T, K, E, I>(
    sources: Vec<I>,
    key: impl Fn(&T) -> K,
    mut emit: impl FnMut(usize, T) -> Result<(), E>,
) -> Result<(), E>
where
    K: Ord,
    I: Iterator<Item = Result<T, E>>,
{
    let mut sources = sources;
    let mut heads: Vec<Option<T>> = Vec::with_capacity(sources.len());
    let mut heap = BinaryHeap::with_capacity(sources.len());
    for (i, source) in sources.iter_mut().enumerate() {
        let head = source.next().transpose()?;
        if let Some(item) = &head {
            heap.push(Reverse((key(item), i)));
        }
        heads.push(head);
    }
    while let Some(Reverse((_, i))) = heap.pop() {
        let Some(item) = heads[i].take() else {
            continue;
        };
        emit(i, item)?;
        if let Some(next) = sources[i].next().transpose()? {
            heap.push(Reverse((key(&next), i)));
            heads[i] = Some(next);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: Vec<Vec<(Option<u32>, &'static str)>>) -> Vec<(usize, &'static str)> {
        let sources = seqs
            .into_iter()
            .map(|s| s.into_iter().map(Ok::<_, ()>))
            .collect();
        let mut out = Vec::new();
        merge(
            sources,
            |(k, _)| *k,
            |i, (_, v)| {
                out.push((i, v));
                Ok(())
            },
        )
        .expect("no error");
        out
    }

    #[test]
    fn items_come_in_key_order_ties_by_sequence_and_each_sequence_in_its_own_order() {
        let out = run(vec![
            vec![
                (None, "a0"),
                (Some(1), "a1"),
                (Some(3), "a3"),
                (Some(3), "a3b"),
            ],
            vec![(Some(2), "b2"), (Some(3), "b3"), (Some(1), "b1-late")],
            vec![],
            vec![(None, "d0"), (Some(0), "d-first")],
        ]);
        let values: Vec<_> = out.iter().map(|(_, v)| *v).collect();
        assert_eq!(
            values,
            [
                "a0", "d0", "d-first", "a1", "b2", "a3", "a3b", "b3", "b1-late"
            ]
        );
        assert_eq!(out[1].0, 3);
    }

    #[test]
    fn an_error_from_a_sequence_stops_the_merge() {
        let sources: Vec<Box<dyn Iterator<Item = Result<u32, &str>>>> = vec![
            Box::new([Ok(1), Err("disk"), Ok(5)].into_iter()),
            Box::new([Ok(2), Ok(3)].into_iter()),
        ];
        let mut seen = Vec::new();
        let result = merge(
            sources,
            |k| *k,
            |_, v| {
                seen.push(v);
                Ok(())
            },
        );
        assert_eq!(result, Err("disk"));
        assert_eq!(seen, [1]);
    }
}
