//! Balancing algorithms. Each is a [`Selector`] built, immutable, over the backends that are
//! eligible right now (healthy, not ejected, not draining); the pool rebuilds it when that set
//! changes. A selection is an ordered list of candidates, so failover is "take the next one".

use std::net::IpAddr;

/// Which algorithm a pool uses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Algorithm {
    RoundRobin,
    /// Smooth weighted round robin (as in nginx).
    WeightedRoundRobin,
    LeastConnections,
    /// Power of two random choices on outstanding requests.
    PowerOfTwo,
    IpHash,
    /// Consistent hashing (a ring with virtual nodes) on a request attribute.
    ConsistentHash {
        on: HashOn,
    },
    Random,
}

/// The name of an algorithm, as `strata lb --algorithm` and a topology's `[lb] algorithm` take
/// it. [`Algorithm`] is the same choice with its settings (what consistent hashing hashes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum AlgorithmName {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    PowerOfTwo,
    IpHash,
    ConsistentHash,
    Random,
}

impl AlgorithmName {
    /// The algorithm, hashing on `on` when it is consistent hashing.
    pub fn with(self, on: HashOn) -> Algorithm {
        match self {
            AlgorithmName::RoundRobin => Algorithm::RoundRobin,
            AlgorithmName::WeightedRoundRobin => Algorithm::WeightedRoundRobin,
            AlgorithmName::LeastConnections => Algorithm::LeastConnections,
            AlgorithmName::PowerOfTwo => Algorithm::PowerOfTwo,
            AlgorithmName::IpHash => Algorithm::IpHash,
            AlgorithmName::ConsistentHash => Algorithm::ConsistentHash { on },
            AlgorithmName::Random => Algorithm::Random,
        }
    }
}

/// What consistent hashing hashes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashOn {
    Header(String),
    Cookie(String),
    Path,
}

impl std::str::FromStr for HashOn {
    type Err = String;

    /// `header:NAME`, `cookie:NAME` or `path`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("header", name)) if !name.is_empty() => {
                Ok(HashOn::Header(name.to_ascii_lowercase()))
            }
            Some(("cookie", name)) if !name.is_empty() => Ok(HashOn::Cookie(name.to_string())),
            None if s == "path" => Ok(HashOn::Path),
            _ => Err(format!("{s:?}: use header:NAME, cookie:NAME or path")),
        }
    }
}

impl std::fmt::Display for HashOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashOn::Header(name) => write!(f, "header:{name}"),
            HashOn::Cookie(name) => write!(f, "cookie:{name}"),
            HashOn::Path => f.write_str("path"),
        }
    }
}

/// One eligible backend as a selector sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Stable identity (survives rebuilds), e.g. the backend's name.
    pub id: String,
    pub weight: u32,
}

/// What a selector may look at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestKey<'a> {
    pub client_ip: IpAddr,
    /// The value consistent hashing hashes (header, cookie or path), if present.
    pub hash_key: Option<&'a [u8]>,
}

/// Picks backends for a request.
pub trait Selector: Send + Sync {
    /// Indexes into the candidate list the selector was built from, best first, each once,
    /// covering every candidate. `load(i)` is candidate i's requests in flight.
    fn order(&self, key: &RequestKey<'_>, load: &dyn Fn(usize) -> usize) -> Vec<usize>;
}

pub mod algorithms;

pub use algorithms::build;
