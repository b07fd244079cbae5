//! Snowflake ids: 64-bit, roughly time-ordered, issued without coordination.
//!
//! Layout (most significant first): 1 zero bit, 41 bits of milliseconds since [`EPOCH_MS`],
//! 10 bits of node id, 12 bits of sequence. Ids therefore fit in a signed 64-bit column, sort
//! by creation time, and two nodes with different node ids can never issue the same id.
//!
//! The generator refuses to issue ids while the clock runs backwards (after an NTP step, say):
//! issuing then could repeat an id already handed out. Callers turn that refusal into a
//! retryable error (HTTP 503) rather than waiting inside the generator.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The custom epoch: 2024-01-01T00:00:00Z in Unix milliseconds. 41 bits of milliseconds
/// from here last until the year 2093.
pub const EPOCH_MS: u64 = 1_704_067_200_000;
/// Bits of the node id field.
pub const NODE_BITS: u32 = 10;
/// Bits of the per-millisecond sequence field.
pub const SEQUENCE_BITS: u32 = 12;
/// The largest node id (1023).
pub const MAX_NODE_ID: u16 = (1 << NODE_BITS) - 1;
const MAX_SEQUENCE: u64 = (1 << SEQUENCE_BITS) - 1;
const MAX_TIMESTAMP: u64 = (1 << 41) - 1;

/// Why no id was issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The clock reads earlier than the last id issued; retry once it has caught up.
    #[error(
        "the system clock moved backwards by {behind_ms} ms; refusing to issue ids until it catches up"
    )]
    ClockMovedBackwards { behind_ms: u64 },
    /// The clock reads before the custom epoch or past the 41-bit range.
    #[error("the system clock reads {now_ms} ms since the Unix epoch, outside the id range")]
    ClockOutOfRange { now_ms: u64 },
}

/// A node id outside 0..=1023.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node id {0} is out of range: it must be between 0 and {MAX_NODE_ID}")]
pub struct NodeIdOutOfRange(pub u64);

/// Where the generator reads the time; swapped in tests to make the clock run backwards.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

#[derive(Debug, Default)]
struct State {
    last_ms: u64,
    sequence: u64,
}

/// Issues Snowflake ids for one node. Cheap to share behind an `Arc`.
pub struct SnowflakeGenerator {
    node_id: u16,
    clock: Box<dyn Clock>,
    state: Mutex<State>,
}

impl std::fmt::Debug for SnowflakeGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnowflakeGenerator")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// The three fields of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdParts {
    /// Unix milliseconds at which the id was issued.
    pub unix_ms: u64,
    pub node_id: u16,
    pub sequence: u16,
}

impl SnowflakeGenerator {
    /// A generator on the system clock.
    pub fn new(node_id: u64) -> Result<Self, NodeIdOutOfRange> {
        Self::with_clock(node_id, Box::new(SystemClock))
    }

    /// A generator on a given clock.
    pub fn with_clock(node_id: u64, clock: Box<dyn Clock>) -> Result<Self, NodeIdOutOfRange> {
        if node_id > u64::from(MAX_NODE_ID) {
            return Err(NodeIdOutOfRange(node_id));
        }
        Ok(Self {
            node_id: node_id as u16,
            clock,
            state: Mutex::new(State::default()),
        })
    }

    pub fn node_id(&self) -> u16 {
        self.node_id
    }

    /// The next id. Within one millisecond up to 4096 ids are issued; the 4097th waits for the
    /// next millisecond (a busy wait of under a millisecond).
    pub fn next_id(&self) -> Result<u64, IdError> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut now = self.timestamp()?;
        if now < state.last_ms {
            return Err(IdError::ClockMovedBackwards {
                behind_ms: state.last_ms - now,
            });
        }
        if now == state.last_ms {
            if state.sequence == MAX_SEQUENCE {
                while now <= state.last_ms {
                    std::hint::spin_loop();
                    now = self.timestamp()?;
                    if now < state.last_ms {
                        return Err(IdError::ClockMovedBackwards {
                            behind_ms: state.last_ms - now,
                        });
                    }
                }
                state.sequence = 0;
            } else {
                state.sequence += 1;
            }
        } else {
            state.sequence = 0;
        }
        state.last_ms = now;
        Ok((now << (NODE_BITS + SEQUENCE_BITS))
            | (u64::from(self.node_id) << SEQUENCE_BITS)
            | state.sequence)
    }

    fn timestamp(&self) -> Result<u64, IdError> {
        let now_ms = self.clock.now_ms();
        match now_ms.checked_sub(EPOCH_MS) {
            Some(t) if t <= MAX_TIMESTAMP => Ok(t),
            _ => Err(IdError::ClockOutOfRange { now_ms }),
        }
    }
}

/// Splits an id into its fields.
pub fn decompose(id: u64) -> IdParts {
    IdParts {
        unix_ms: (id >> (NODE_BITS + SEQUENCE_BITS)) + EPOCH_MS,
        node_id: ((id >> SEQUENCE_BITS) & u64::from(MAX_NODE_ID)) as u16,
        sequence: (id & MAX_SEQUENCE) as u16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Clone)]
    struct ManualClock(Arc<AtomicU64>);
    impl Clock for ManualClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn manual(start: u64) -> (SnowflakeGenerator, Arc<AtomicU64>) {
        let t = Arc::new(AtomicU64::new(start));
        let g = SnowflakeGenerator::with_clock(5, Box::new(ManualClock(t.clone()))).expect("node");
        (g, t)
    }

    #[test]
    fn ids_carry_time_node_and_sequence_in_the_snowflake_layout() {
        let (g, _t) = manual(EPOCH_MS + 1000);
        let a = g.next_id().expect("id");
        let b = g.next_id().expect("id");
        assert_eq!(a, (1000 << 22) | (5 << 12));
        assert_eq!(
            decompose(b),
            IdParts {
                unix_ms: EPOCH_MS + 1000,
                node_id: 5,
                sequence: 1
            }
        );
        assert!(a < (1 << 63), "ids fit a signed 64-bit column");
    }

    #[test]
    fn a_clock_running_backwards_is_refused_until_it_catches_up() {
        let (g, t) = manual(EPOCH_MS + 5000);
        let first = g.next_id().expect("id");
        t.store(EPOCH_MS + 4990, Ordering::SeqCst);
        assert_eq!(
            g.next_id(),
            Err(IdError::ClockMovedBackwards { behind_ms: 10 })
        );
        t.store(EPOCH_MS + 5000, Ordering::SeqCst);
        let again = g.next_id().expect("caught up");
        assert!(again > first);
    }

    #[test]
    fn node_ids_above_1023_are_refused() {
        assert_eq!(
            SnowflakeGenerator::new(1024).err(),
            Some(NodeIdOutOfRange(1024))
        );
        assert!(SnowflakeGenerator::new(1023).is_ok());
    }

    #[test]
    fn ids_from_one_generator_are_unique_and_increasing_across_threads() {
        let g = Arc::new(SnowflakeGenerator::new(7).expect("node"));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    (0..20_000)
                        .map(|_| g.next_id().expect("id"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            let ids = h.join().expect("thread");
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "increasing within a thread"
            );
            all.extend(ids);
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "no duplicates");
    }
}
