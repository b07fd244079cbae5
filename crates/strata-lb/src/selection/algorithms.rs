//! The balancing algorithms. Each builds an immutable selector (atomics aside) over the
//! eligible candidates; `order` returns every candidate index once, best first.

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng as _;
use rand::seq::SliceRandom as _;

use super::{Algorithm, Candidate, RequestKey, Selector};

/// FNV-1a, 64-bit: a stable hash (the same on every run and every machine), so IP hashing and
/// the consistent-hash ring do not move keys when the balancer restarts.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final avalanche (from SplitMix64) so that similar inputs land far apart on the ring.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// `start, start+1, …` wrapping over `n`.
fn rotation(start: usize, n: usize) -> Vec<usize> {
    (0..n).map(|i| (start + i) % n).collect()
}

struct RoundRobin {
    n: usize,
    next: AtomicUsize,
}

impl Selector for RoundRobin {
    fn order(&self, _key: &RequestKey<'_>, _load: &dyn Fn(usize) -> usize) -> Vec<usize> {
        if self.n == 0 {
            return Vec::new();
        }
        rotation(self.next.fetch_add(1, Ordering::Relaxed) % self.n, self.n)
    }
}

/// nginx's smooth weighted round robin: every pick, each candidate's current weight grows by
/// its weight; the largest is picked and loses the total.
struct SmoothWeighted {
    weights: Vec<i64>,
    total: i64,
    current: Mutex<Vec<i64>>,
}

impl Selector for SmoothWeighted {
    fn order(&self, _key: &RequestKey<'_>, _load: &dyn Fn(usize) -> usize) -> Vec<usize> {
        if self.weights.is_empty() {
            return Vec::new();
        }
        let picked = {
            let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            let mut best = 0;
            for i in 0..current.len() {
                current[i] += self.weights[i];
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= self.total;
            best
        };
        let mut rest: Vec<usize> = (0..self.weights.len()).filter(|i| *i != picked).collect();
        rest.sort_by_key(|i| std::cmp::Reverse(self.weights[*i]));
        std::iter::once(picked).chain(rest).collect()
    }
}

struct LeastConnections {
    n: usize,
    tie_break: AtomicUsize,
}

impl Selector for LeastConnections {
    fn order(&self, _key: &RequestKey<'_>, load: &dyn Fn(usize) -> usize) -> Vec<usize> {
        if self.n == 0 {
            return Vec::new();
        }
        // Rotate first so that equal loads take turns; the sort is stable.
        let mut order = rotation(
            self.tie_break.fetch_add(1, Ordering::Relaxed) % self.n,
            self.n,
        );
        order.sort_by_key(|i| load(*i));
        order
    }
}

struct PowerOfTwo {
    n: usize,
}

impl Selector for PowerOfTwo {
    fn order(&self, _key: &RequestKey<'_>, load: &dyn Fn(usize) -> usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.n).collect();
        let mut rng = rand::rng();
        order.shuffle(&mut rng);
        if self.n >= 2 && load(order[1]) < load(order[0]) {
            order.swap(0, 1);
        }
        order
    }
}

struct IpHash {
    n: usize,
}

impl Selector for IpHash {
    fn order(&self, key: &RequestKey<'_>, _load: &dyn Fn(usize) -> usize) -> Vec<usize> {
        if self.n == 0 {
            return Vec::new();
        }
        rotation(
            (stable_hash(&ip_bytes(key.client_ip)) % self.n as u64) as usize,
            self.n,
        )
    }
}

/// Virtual nodes per unit of weight on the consistent-hash ring.
pub const VNODES_PER_WEIGHT: usize = 160;
const MAX_RING: usize = 100_000;

struct ConsistentHash {
    n: usize,
    /// (point, candidate index), sorted by point.
    ring: Vec<(u64, usize)>,
}

impl ConsistentHash {
    fn new(candidates: &[Candidate]) -> Self {
        let total_weight: usize = candidates.iter().map(|c| c.weight.max(1) as usize).sum();
        let per_weight = VNODES_PER_WEIGHT.min((MAX_RING / total_weight.max(1)).max(1));
        let mut ring = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            for v in 0..per_weight * c.weight.max(1) as usize {
                ring.push((stable_hash(format!("{}#{v}", c.id).as_bytes()), i));
            }
        }
        ring.sort_unstable();
        Self {
            n: candidates.len(),
            ring,
        }
    }
}

impl Selector for ConsistentHash {
    fn order(&self, key: &RequestKey<'_>, _load: &dyn Fn(usize) -> usize) -> Vec<usize> {
        if self.n == 0 {
            return Vec::new();
        }
        let point = match key.hash_key {
            Some(k) => stable_hash(k),
            None => stable_hash(&ip_bytes(key.client_ip)),
        };
        let start = self.ring.partition_point(|(p, _)| *p < point);
        let mut seen = vec![false; self.n];
        let mut order = Vec::with_capacity(self.n);
        for step in 0..self.ring.len() {
            let (_, i) = self.ring[(start + step) % self.ring.len()];
            if !seen[i] {
                seen[i] = true;
                order.push(i);
                if order.len() == self.n {
                    break;
                }
            }
        }
        order
    }
}

struct Random {
    n: usize,
}

impl Selector for Random {
    fn order(&self, _key: &RequestKey<'_>, _load: &dyn Fn(usize) -> usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.n).collect();
        order.shuffle(&mut rand::rng());
        order
    }
}

/// Builds the selector for `algorithm` over `candidates`.
pub fn build(algorithm: &Algorithm, candidates: &[Candidate]) -> Box<dyn Selector> {
    let n = candidates.len();
    match algorithm {
        Algorithm::RoundRobin => Box::new(RoundRobin {
            n,
            next: AtomicUsize::new(rand::rng().random_range(0..n.max(1))),
        }),
        Algorithm::WeightedRoundRobin => {
            let weights: Vec<i64> = candidates
                .iter()
                .map(|c| i64::from(c.weight.max(1)))
                .collect();
            Box::new(SmoothWeighted {
                total: weights.iter().sum(),
                current: Mutex::new(vec![0; n]),
                weights,
            })
        }
        Algorithm::LeastConnections => Box::new(LeastConnections {
            n,
            tie_break: AtomicUsize::new(0),
        }),
        Algorithm::PowerOfTwo => Box::new(PowerOfTwo { n }),
        Algorithm::IpHash => Box::new(IpHash { n }),
        Algorithm::ConsistentHash { .. } => Box::new(ConsistentHash::new(candidates)),
        Algorithm::Random => Box::new(Random { n }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::HashOn;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn cands(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Candidate {
                id: format!("b{i}"),
                weight: *w,
            })
            .collect()
    }

    fn key(ip: [u8; 4], hash: Option<&[u8]>) -> RequestKey<'_> {
        RequestKey {
            client_ip: IpAddr::from(ip),
            hash_key: hash,
        }
    }

    fn all_algorithms() -> Vec<Algorithm> {
        vec![
            Algorithm::RoundRobin,
            Algorithm::WeightedRoundRobin,
            Algorithm::LeastConnections,
            Algorithm::PowerOfTwo,
            Algorithm::IpHash,
            Algorithm::ConsistentHash { on: HashOn::Path },
            Algorithm::Random,
        ]
    }

    proptest! {
        #[test]
        fn every_algorithm_orders_every_candidate_exactly_once(
            weights in proptest::collection::vec(1u32..5, 0..8),
            loads in proptest::collection::vec(0usize..10, 8),
            ip in any::<[u8; 4]>(),
            hash in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            for algorithm in all_algorithms() {
                let s = build(&algorithm, &cands(&weights));
                for _ in 0..3 {
                    let mut order = s.order(&key(ip, Some(&hash)), &|i| loads[i]);
                    order.sort_unstable();
                    prop_assert_eq!(&order, &(0..weights.len()).collect::<Vec<_>>(), "{:?}", algorithm);
                }
            }
        }
    }

    fn first_counts(
        s: &dyn Selector,
        picks: usize,
        load: &dyn Fn(usize) -> usize,
    ) -> HashMap<usize, usize> {
        let mut counts = HashMap::new();
        for i in 0..picks {
            let ip = [10, 0, (i / 256) as u8, (i % 256) as u8];
            *counts.entry(s.order(&key(ip, None), load)[0]).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn round_robin_takes_every_backend_in_turn() {
        let s = build(&Algorithm::RoundRobin, &cands(&[1, 1, 1]));
        let counts = first_counts(s.as_ref(), 9, &|_| 0);
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![3, 3, 3]);
    }

    #[test]
    fn smooth_weighted_round_robin_gives_nginxs_sequence() {
        let s = build(&Algorithm::WeightedRoundRobin, &cands(&[5, 1, 1]));
        let seq: Vec<usize> = (0..7)
            .map(|_| s.order(&key([1, 1, 1, 1], None), &|_| 0)[0])
            .collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
        let counts = first_counts(s.as_ref(), 700, &|_| 0);
        assert_eq!((counts[&0], counts[&1], counts[&2]), (500, 100, 100));
    }

    #[test]
    fn least_connections_picks_the_least_loaded_and_rotates_ties() {
        let s = build(&Algorithm::LeastConnections, &cands(&[1, 1, 1]));
        let loads = [5, 1, 3];
        assert_eq!(
            s.order(&key([1, 1, 1, 1], None), &|i| loads[i]),
            vec![1, 2, 0]
        );
        let counts = first_counts(s.as_ref(), 30, &|_| 0);
        assert_eq!(counts.len(), 3, "equal loads take turns: {counts:?}");
    }

    #[test]
    fn power_of_two_never_prefers_the_busier_of_its_two_choices() {
        let s = build(&Algorithm::PowerOfTwo, &cands(&[1, 1]));
        let loads = [7, 2];
        for _ in 0..200 {
            assert_eq!(s.order(&key([1, 1, 1, 1], None), &|i| loads[i])[0], 1);
        }
        let s = build(&Algorithm::PowerOfTwo, &cands(&[1, 1, 1, 1]));
        let loads = [9, 0, 0, 0];
        let counts = first_counts(s.as_ref(), 1000, &|i| loads[i]);
        assert!(
            counts.get(&0).copied().unwrap_or(0) == 0,
            "the most loaded of 4 can never win a pair: {counts:?}"
        );
    }

    #[test]
    fn ip_hash_is_stable_per_client_and_spreads_clients() {
        let s = build(&Algorithm::IpHash, &cands(&[1, 1, 1, 1]));
        let k = key([192, 168, 7, 9], None);
        let first = s.order(&k, &|_| 0)[0];
        assert!((0..50).all(|_| s.order(&k, &|_| 0)[0] == first));
        let counts = first_counts(s.as_ref(), 1000, &|_| 0);
        assert!(
            counts.values().all(|c| (125..=375).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn consistent_hashing_remaps_only_the_departed_backends_keys() {
        let five = cands(&[1, 1, 1, 1, 1]);
        let four: Vec<Candidate> = five.iter().filter(|c| c.id != "b2").cloned().collect();
        let on = Algorithm::ConsistentHash {
            on: HashOn::Header("x-user".into()),
        };
        let (before, after) = (build(&on, &five), build(&on, &four));
        let mut counts = HashMap::new();
        let mut moved_to = HashMap::new();
        for k in 0..10_000 {
            let kb = format!("user-{k}");
            let key = key([1, 1, 1, 1], Some(kb.as_bytes()));
            let b = &five[before.order(&key, &|_| 0)[0]].id;
            let a = &four[after.order(&key, &|_| 0)[0]].id;
            *counts.entry(b.clone()).or_insert(0usize) += 1;
            if b == "b2" {
                *moved_to.entry(a.clone()).or_insert(0usize) += 1;
            } else {
                assert_eq!(a, b, "key {kb} moved although its backend stayed");
            }
            assert_eq!(
                before.order(&key, &|_| 0)[0],
                before.order(&key, &|_| 0)[0],
                "stable"
            );
        }
        assert!(
            counts.values().all(|c| (1300..=2700).contains(c)),
            "even within ±35%: {counts:?}"
        );
        assert_eq!(
            moved_to.len(),
            4,
            "the departed backend's keys spread over the others: {moved_to:?}"
        );
    }

    #[test]
    fn random_reaches_every_backend() {
        let s = build(&Algorithm::Random, &cands(&[1, 1, 1, 1]));
        assert_eq!(first_counts(s.as_ref(), 200, &|_| 0).len(), 4);
    }
}
