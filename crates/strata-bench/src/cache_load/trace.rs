//! Request traces drawn fresh from a distribution, reproducibly: a trace is its [`Workload`],
//! its seed and its length, so the exact requests sent can be regenerated for an offline
//! replay instead of being stored.
//!
//! A request is a popularity *rank* mapped to a user *index* (the line of the ids file, which
//! the benchmark shuffles so popularity is independent of creation order):
//! - `zipf`: rank drawn from Zipf(s) over all users (P(r) ∝ 1/r^s), index = rank;
//! - `uniform`: every user equally likely;
//! - `moving`: Zipf(s), but every `period` requests the hot set moves by `shift` users
//!   (index = (rank + shift × ⌊i / period⌋) mod users), so yesterday's hot users go cold.

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// How requests are drawn.
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum, serde::Serialize)]
pub enum Shape {
    Zipf,
    Uniform,
    Moving,
}

/// A workload over `users` users.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Workload {
    pub shape: Shape,
    pub users: u32,
    /// Zipf exponent (zipf, moving).
    pub exponent: f64,
    /// Requests between moves of the hot set (moving).
    pub period: u64,
    /// Users the hot set moves by at each move (moving).
    pub shift: u32,
    pub seed: u64,
}

/// The requests of a workload, in order: user indexes.
pub struct Trace {
    workload: Workload,
    /// Zipf's cumulative weights (empty for uniform).
    cumulative: Vec<f64>,
    rng: StdRng,
    next: u64,
}

impl Trace {
    pub fn new(workload: Workload) -> Self {
        let mut cumulative = Vec::new();
        if workload.shape != Shape::Uniform {
            cumulative.reserve(workload.users as usize);
            let mut total = 0.0;
            for r in 1..=workload.users {
                total += 1.0 / f64::from(r).powf(workload.exponent);
                cumulative.push(total);
            }
        }
        Self {
            workload,
            cumulative,
            rng: StdRng::seed_from_u64(workload.seed),
            next: 0,
        }
    }

    /// The position of the next request.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Skips to request `to` (drawing what lies between: the trace is one stream).
    pub fn skip_to(&mut self, to: u64) {
        while self.next < to {
            self.next_index();
        }
    }

    /// The next request's user index.
    pub fn next_index(&mut self) -> u32 {
        let w = &self.workload;
        let i = self.next;
        self.next += 1;
        let users = w.users.max(1);
        let rank = match w.shape {
            Shape::Uniform => return self.rng.random_range(0..users),
            Shape::Zipf | Shape::Moving => {
                let total = self.cumulative.last().copied().unwrap_or(1.0);
                let u = self.rng.random::<f64>() * total;
                (self.cumulative.partition_point(|&c| c < u) as u32).min(users - 1)
            }
        };
        match w.shape {
            Shape::Moving => {
                let moves = i / w.period.max(1);
                let offset = (moves.wrapping_mul(u64::from(w.shift))) % u64::from(users);
                ((u64::from(rank) + offset) % u64::from(users)) as u32
            }
            _ => rank,
        }
    }

    /// The first `n` requests (for the offline replay).
    pub fn take(workload: Workload, n: u64) -> Vec<u32> {
        let mut t = Self::new(workload);
        (0..n).map(|_| t.next_index()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(shape: Shape) -> Workload {
        Workload {
            shape,
            users: 1_000,
            exponent: 0.99,
            period: 100,
            shift: 10,
            seed: 7,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_trace_and_skipping_keeps_the_stream() {
        let a = Trace::take(w(Shape::Zipf), 500);
        assert_eq!(a, Trace::take(w(Shape::Zipf), 500));
        let mut t = Trace::new(w(Shape::Zipf));
        t.skip_to(200);
        assert_eq!(t.next_index(), a[200]);
        assert!(a.iter().all(|&i| i < 1_000));
    }

    #[test]
    fn zipf_favours_low_ranks_uniform_does_not_and_the_hot_set_moves() {
        let zipf = Trace::take(w(Shape::Zipf), 20_000);
        let top = zipf.iter().filter(|&&i| i < 10).count();
        assert!(
            top > 20_000 / 5,
            "top 1% of users get >20% of Zipf reads: {top}"
        );
        let uniform = Trace::take(w(Shape::Uniform), 20_000);
        let top = uniform.iter().filter(|&&i| i < 10).count();
        assert!(top < 20_000 / 50, "uniform: about 1%: {top}");
        let moving = Trace::take(w(Shape::Moving), 1_000);
        let early = moving[..100].iter().filter(|&&i| i < 10).count();
        let late = moving[900..]
            .iter()
            .filter(|&&i| (90..100).contains(&i))
            .count();
        assert!(early > 20 && late > 20, "the hot set moved: {early} {late}");
    }
}
