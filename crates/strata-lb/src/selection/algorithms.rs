//! Placeholder: the algorithm implementations are being written.

use super::{Algorithm, Candidate, RequestKey, Selector};

struct InOrder(usize);

impl Selector for InOrder {
    fn order(&self, _key: &RequestKey<'_>, _load: &dyn Fn(usize) -> usize) -> Vec<usize> {
        (0..self.0).collect()
    }
}

/// Builds the selector for `algorithm` over `candidates`.
pub fn build(_algorithm: &Algorithm, candidates: &[Candidate]) -> Box<dyn Selector> {
    Box::new(InOrder(candidates.len()))
}
