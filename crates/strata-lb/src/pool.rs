//! A pool: its backends, its algorithm, and the selector built over the backends that may take
//! requests now. Read-mostly state lives behind `ArcSwap`; the selector is rebuilt only when
//! the eligible set changes (health, ejection, drain, or a new backend list).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::backend::{Backend, BackendView, OutlierPolicy};
use crate::selection::{self, Algorithm, Candidate, RequestKey, Selector};

struct Selection {
    eligible: Vec<Arc<Backend>>,
    selector: Box<dyn Selector>,
}

/// A named group of interchangeable backends.
pub struct Pool {
    pub name: String,
    pub algorithm: Algorithm,
    pub outlier: OutlierPolicy,
    backends: ArcSwap<Vec<Arc<Backend>>>,
    selection: ArcSwap<Selection>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// A backend as configured: name, address, weight.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackendSpec {
    pub name: String,
    pub addr: std::net::SocketAddr,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl std::str::FromStr for BackendSpec {
    type Err = String;

    /// `NAME=HOST:PORT` or `NAME=HOST:PORT@WEIGHT`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, rest) = s.split_once('=').ok_or_else(|| {
            format!("{s:?}: write a backend as NAME=HOST:PORT, e.g. api-1=127.0.0.1:4001")
        })?;
        let (addr, weight) = match rest.split_once('@') {
            Some((a, w)) => (
                a,
                w.parse::<u32>().map_err(|_| {
                    format!("{s:?}: the weight after @ must be a whole number from 1 to 1000")
                })?,
            ),
            None => (rest, 1),
        };
        if name.is_empty() || name.len() > 64 {
            return Err(format!(
                "{s:?}: the backend name must be 1 to 64 characters"
            ));
        }
        if !(1..=1000).contains(&weight) {
            return Err(format!("{s:?}: the weight must be from 1 to 1000"));
        }
        let addr: std::net::SocketAddr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IP:PORT address"))?;
        Ok(BackendSpec {
            name: name.to_string(),
            addr,
            weight,
        })
    }
}

impl std::fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.addr)?;
        if self.weight != 1 {
            write!(f, "@{}", self.weight)?;
        }
        Ok(())
    }
}

fn build_selection(algorithm: &Algorithm, backends: &[Arc<Backend>]) -> Selection {
    let eligible: Vec<Arc<Backend>> = backends
        .iter()
        .filter(|b| b.is_eligible())
        .cloned()
        .collect();
    let candidates: Vec<Candidate> = eligible
        .iter()
        .map(|b| Candidate {
            id: b.name.clone(),
            weight: b.weight,
        })
        .collect();
    Selection {
        selector: selection::build(algorithm, &candidates),
        eligible,
    }
}

impl Pool {
    pub fn new(
        name: impl Into<String>,
        algorithm: Algorithm,
        outlier: OutlierPolicy,
        specs: &[BackendSpec],
    ) -> Self {
        let backends: Vec<Arc<Backend>> = specs
            .iter()
            .map(|s| Arc::new(Backend::new(&s.name, s.addr, s.weight)))
            .collect();
        let selection = build_selection(&algorithm, &backends);
        Self {
            name: name.into(),
            algorithm,
            outlier,
            backends: ArcSwap::from_pointee(backends),
            selection: ArcSwap::from_pointee(selection),
        }
    }

    /// Every backend, eligible or not.
    pub fn backends(&self) -> Arc<Vec<Arc<Backend>>> {
        self.backends.load_full()
    }

    /// Rebuilds the selector from the current eligibility of every backend.
    pub fn rebuild(&self) {
        let backends = self.backends.load();
        self.selection
            .store(Arc::new(build_selection(&self.algorithm, &backends)));
    }

    /// Eligible backends for a request, best first.
    pub fn candidates(&self, key: &RequestKey<'_>) -> Vec<Arc<Backend>> {
        let selection = self.selection.load();
        let load = |i: usize| {
            selection.eligible.get(i).map_or(0, |b| {
                b.in_flight.load(std::sync::atomic::Ordering::Relaxed)
            })
        };
        selection
            .selector
            .order(key, &load)
            .into_iter()
            .filter_map(|i| selection.eligible.get(i).cloned())
            .collect()
    }

    /// Replaces the backend list. Backends whose name and address are unchanged keep their
    /// state and counters; removed ones finish their in-flight requests.
    pub fn set_backends(&self, specs: &[BackendSpec]) {
        let current: HashMap<(String, std::net::SocketAddr), Arc<Backend>> = self
            .backends
            .load()
            .iter()
            .map(|b| ((b.name.clone(), b.addr), b.clone()))
            .collect();
        let next: Vec<Arc<Backend>> = specs
            .iter()
            .map(|s| match current.get(&(s.name.clone(), s.addr)) {
                Some(b) if b.weight == s.weight.max(1) => b.clone(),
                _ => Arc::new(Backend::new(&s.name, s.addr, s.weight)),
            })
            .collect();
        self.backends.store(Arc::new(next));
        self.rebuild();
    }

    /// Stops (or resumes) sending new requests to a backend. False if there is no such backend.
    pub fn set_draining(&self, name: &str, draining: bool) -> bool {
        let found = self
            .backends
            .load()
            .iter()
            .find(|b| b.name == name)
            .cloned();
        match found {
            Some(b) => {
                b.set_draining(draining);
                self.rebuild();
                true
            }
            None => false,
        }
    }

    pub fn views(&self) -> Vec<BackendView> {
        self.backends.load().iter().map(|b| b.view()).collect()
    }

    /// The names of the backends drained now.
    pub fn drained(&self) -> Vec<String> {
        self.views()
            .into_iter()
            .filter(|v| v.draining)
            .map(|v| v.name)
            .collect()
    }
}
