//! Offline replay of a trace through ideal caches of a given capacity (in entries), to say how
//! far a real cache's hit ratio is from the best any cache could do:
//! - **Belady's MIN** (optimal offline: evict the entry whose next use is furthest away);
//! - **perfect LFU** (frequencies counted over the whole trace so far, evicted keys included;
//!   the cache holds the most frequent keys seen: a key is admitted only if it is now more
//!   frequent than the least frequent one held);
//! - **LRU**, for reference;
//! - **compulsory misses**: first touches of a key in the whole trace, which no cache avoids.
//!
//! Hits are counted only inside the measured windows; everything before warms the caches.

use std::collections::{BTreeSet, BinaryHeap, HashMap};

/// Hits of each policy (and first touches) within the measured windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub requests: u64,
    pub first_touches: u64,
    pub belady_hits: u64,
    pub lfu_hits: u64,
    pub lru_hits: u64,
}

fn measured(windows: &[(u64, u64)], i: u64) -> Option<usize> {
    windows
        .iter()
        .position(|&(from, to)| (from..to).contains(&i))
}

/// Replays `trace` (positions `positions[j]` of the whole stream, keys below `keys`) through
/// caches of `capacity` entries; one [`Counts`] per window `[from, to)`.
pub fn replay(
    trace: &[u32],
    positions: &[u64],
    keys: u32,
    capacity: usize,
    windows: &[(u64, u64)],
) -> Vec<Counts> {
    let mut out = vec![Counts::default(); windows.len()];
    let mut seen = vec![false; keys as usize];
    for (j, &k) in trace.iter().enumerate() {
        let w = measured(windows, positions[j]);
        if let Some(w) = w {
            out[w].requests += 1;
            if !seen[k as usize] {
                out[w].first_touches += 1;
            }
        }
        seen[k as usize] = true;
    }
    for (w, h) in belady(trace, keys, capacity)
        .into_iter()
        .zip(lfu(trace, keys, capacity))
        .zip(lru(trace, keys, capacity))
        .map(|((b, f), l)| (b, (f, l)))
        .enumerate()
        .filter_map(|(j, hit)| measured(windows, positions[j]).map(|w| (w, hit)))
    {
        out[w].belady_hits += u64::from(h.0);
        out[w].lfu_hits += u64::from(h.1.0);
        out[w].lru_hits += u64::from(h.1.1);
    }
    out
}

/// Whether each request hits under Belady's MIN.
fn belady(trace: &[u32], keys: u32, capacity: usize) -> Vec<bool> {
    let never = u64::MAX;
    let mut next_use = vec![never; trace.len()];
    let mut last = vec![never; keys as usize];
    for (j, &k) in trace.iter().enumerate().rev() {
        next_use[j] = last[k as usize];
        last[k as usize] = j as u64;
    }
    // Cached keys with the position of their next use; the heap may hold outdated pairs,
    // recognised by comparing with `held`.
    let mut held: HashMap<u32, u64> = HashMap::with_capacity(capacity + 1);
    let mut heap: BinaryHeap<(u64, u32)> = BinaryHeap::new();
    let mut hits = vec![false; trace.len()];
    for (j, &k) in trace.iter().enumerate() {
        let nu = next_use[j];
        if held.contains_key(&k) {
            hits[j] = true;
        } else if held.len() >= capacity {
            // Evict the furthest next use — unless this key's own next use is further still
            // (then the optimal choice is not to keep it at all).
            let victim = loop {
                match heap.peek() {
                    Some(&(u, v)) if held.get(&v) == Some(&u) => break Some((u, v)),
                    Some(_) => {
                        heap.pop();
                    }
                    None => break None,
                }
            };
            match victim {
                Some((u, v)) if u > nu => {
                    heap.pop();
                    held.remove(&v);
                }
                _ => continue,
            }
        }
        if capacity == 0 {
            continue;
        }
        held.insert(k, nu);
        heap.push((nu, k));
        if heap.len() > 4 * capacity + 1024 {
            heap = held.iter().map(|(&k, &u)| (u, k)).collect();
        }
    }
    hits
}

/// Whether each request hits under perfect LFU.
fn lfu(trace: &[u32], keys: u32, capacity: usize) -> Vec<bool> {
    let mut count = vec![0u64; keys as usize];
    let mut cached = vec![false; keys as usize];
    // (count, key) of every cached key.
    let mut by_count: BTreeSet<(u64, u32)> = BTreeSet::new();
    let mut hits = vec![false; trace.len()];
    for (j, &k) in trace.iter().enumerate() {
        let ku = k as usize;
        let c = count[ku];
        count[ku] = c + 1;
        if cached[ku] {
            hits[j] = true;
            by_count.remove(&(c, k));
            by_count.insert((c + 1, k));
            continue;
        }
        if capacity == 0 {
            continue;
        }
        if by_count.len() >= capacity {
            match by_count.first().copied() {
                Some((least, v)) if least < c + 1 => {
                    by_count.pop_first();
                    cached[v as usize] = false;
                }
                _ => continue,
            }
        }
        by_count.insert((c + 1, k));
        cached[ku] = true;
    }
    hits
}

/// Whether each request hits under LRU.
fn lru(trace: &[u32], keys: u32, capacity: usize) -> Vec<bool> {
    let mut stamp = vec![u64::MAX; keys as usize];
    // (last use, key) of every cached key.
    let mut by_age: BTreeSet<(u64, u32)> = BTreeSet::new();
    let mut hits = vec![false; trace.len()];
    for (j, &k) in trace.iter().enumerate() {
        let ku = k as usize;
        let now = j as u64;
        if stamp[ku] != u64::MAX {
            hits[j] = true;
            by_age.remove(&(stamp[ku], k));
        } else if capacity == 0 {
            continue;
        } else if by_age.len() >= capacity
            && let Some((_, v)) = by_age.pop_first()
        {
            stamp[v as usize] = u64::MAX;
        }
        stamp[ku] = now;
        by_age.insert((now, k));
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(trace: &[u32], capacity: usize) -> Counts {
        let positions: Vec<u64> = (0..trace.len() as u64).collect();
        replay(trace, &positions, 10, capacity, &[(0, trace.len() as u64)])[0]
    }

    #[test]
    fn belady_beats_lru_on_a_loop_larger_than_the_cache() {
        // 0 1 2 0 1 2 …, capacity 2: LRU always misses; MIN keeps one of them.
        let trace: Vec<u32> = (0..30).map(|i| i % 3).collect();
        let c = run(&trace, 2);
        assert_eq!(c.first_touches, 3);
        assert_eq!(c.lru_hits, 0);
        assert!(c.belady_hits >= 13, "{c:?}");
        assert!(c.belady_hits >= c.lfu_hits);
    }

    #[test]
    fn everything_fits_so_only_first_touches_miss() {
        let trace = [1, 2, 3, 1, 2, 3, 4, 1];
        let c = run(&trace, 10);
        assert_eq!(
            (c.first_touches, c.belady_hits, c.lfu_hits, c.lru_hits),
            (4, 4, 4, 4)
        );
    }

    #[test]
    fn perfect_lfu_keeps_the_frequent_key_through_a_scan() {
        // Key 0 is hot; a scan of 1..9 passes by; capacity 1.
        let mut trace = vec![0, 0, 0];
        trace.extend(1..9);
        trace.extend([0, 0]);
        let c = run(&trace, 1);
        assert_eq!(c.lfu_hits, 4, "{c:?}");
        assert_eq!(c.lru_hits, 3, "LRU loses key 0 to the scan: {c:?}");
        assert!(c.belady_hits >= c.lfu_hits);
    }

    #[test]
    fn only_the_measured_window_counts() {
        let trace = [1, 1, 1, 1];
        let positions = [0, 1, 2, 3];
        let c = replay(&trace, &positions, 10, 5, &[(2, 4)]);
        assert_eq!(c[0].requests, 2);
        assert_eq!(c[0].first_touches, 0);
        assert_eq!(c[0].belady_hits, 2);
    }
}
