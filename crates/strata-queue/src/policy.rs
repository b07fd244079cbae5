//! The rules a queue engine applies to every queue it holds: how long a lease lasts, how many
//! attempts a message gets, how long a failed message waits, and the bounds.

use std::time::Duration;

use rand::Rng;

/// Exponential back-off with jitter between the attempts of a failed message.
///
/// After attempt `n` failed, the next waits `min(max, base × 2^(n-1))`, of which a random half
/// is taken off ("equal jitter"): never less than half the step, so retries keep backing off,
/// yet consumers that failed together do not all come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The full step after `failed_attempt` (1-based) failed, before jitter.
    pub fn step(&self, failed_attempt: u32) -> Duration {
        let exponent = failed_attempt.saturating_sub(1).min(31);
        let factor = 1u32 << exponent;
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The wait after `failed_attempt` failed: between half the step and the whole of it.
    pub fn delay(&self, failed_attempt: u32, rng: &mut impl Rng) -> Duration {
        let step = self.step(failed_attempt);
        let half = step / 2;
        let spread = (step - half).as_micros() as u64;
        let extra = if spread == 0 {
            0
        } else {
            rng.random_range(0..=spread)
        };
        half + Duration::from_micros(extra)
    }
}

/// The rules of an engine's queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePolicy {
    /// How long a received message stays leased to its consumer before it may be delivered
    /// again.
    pub visibility_timeout: Duration,
    /// Deliveries a message gets before it becomes a dead letter.
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// The largest payload accepted.
    pub max_message_bytes: usize,
    /// The most messages one queue holds, dead letters included; a publish beyond is refused.
    pub max_length: u64,
}

impl Default for QueuePolicy {
    /// Thirty-second leases, five attempts, back-off from one second to five minutes, 64 KiB
    /// messages (a job names its data; it does not carry it), 100,000 messages per queue.
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 5,
            backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(300),
            },
            max_message_bytes: 64 * 1024,
            max_length: 100_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_step_doubles_per_attempt_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let steps: Vec<u128> = (1..=6).map(|n| b.step(n).as_millis()).collect();
        assert_eq!(steps, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.step(u32::MAX), Duration::from_secs(1), "no overflow");
    }

    #[test]
    fn jitter_stays_between_half_the_step_and_the_step_and_varies() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let delays: Vec<Duration> = (0..200).map(|_| b.delay(3, &mut rng)).collect();
        for d in &delays {
            assert!(
                *d >= Duration::from_millis(200) && *d <= Duration::from_millis(400),
                "{d:?}"
            );
        }
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 50, "jitter spreads the retries");
    }
}
