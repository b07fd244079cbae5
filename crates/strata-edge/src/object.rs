//! A stored response ([`Object`]): its head, its body, the policy that says when it may be
//! reused, and the keys purges find it by; and its encoding in a file of the disk store.
//!
//! On disk an object is one file: a magic line, the length of its metadata (4 bytes, big
//! endian), the metadata as JSON, then the body. Files are written whole under a temporary
//! name and renamed into place, so a crash leaves either the old object or the new one.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderMap;
use http_cache_semantics::CachePolicy;
use serde::{Deserialize, Serialize};

use crate::rules::Staleness;

/// The first bytes of every object file (the format's version is in it).
pub const MAGIC: &[u8] = b"STRATA-EDGE-OBJECT-1\n";
/// The most metadata bytes an object file may declare.
pub const MAX_META: usize = 1024 * 1024;
/// The header on the origin's responses that lists an object's surrogate keys.
pub const SURROGATE_KEY: &str = "surrogate-key";
/// The most surrogate keys kept per object, and the longest one.
const MAX_SURROGATE_KEYS: usize = 64;
const MAX_SURROGATE_KEY_LEN: usize = 256;

/// Everything about a stored response but its body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// The variant's key ([`crate::key::variant`]).
    pub key: String,
    /// The key of its URL ([`crate::key::Url::key`]).
    pub url: String,
    pub host: String,
    pub path: String,
    /// The request headers that select this variant (the response's `Vary`).
    pub vary: Vec<String>,
    pub status: u16,
    /// The response's headers, hop-by-hop ones removed.
    #[serde(with = "http_serde::header_map")]
    pub headers: HeaderMap,
    pub policy: CachePolicy,
    /// Freshness lifetime, fixed when the response (or its last revalidation) arrived.
    pub lifetime_ms: u64,
    pub staleness: Staleness,
    pub surrogate_keys: Vec<String>,
    /// Marked stale by a soft purge: it must be revalidated before it is served fresh again.
    pub invalidated: bool,
}

/// A stored response.
#[derive(Debug, Clone)]
pub struct Object {
    pub meta: Meta,
    pub body: Bytes,
}

/// How a stored object stands for a request at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Stale by this much (past its lifetime; zero when it is stale because it was purged
    /// softly or the request asked for something fresher).
    Stale(Duration),
}

impl Object {
    /// The bytes this object costs in memory, roughly: body, headers (twice: the policy
    /// keeps its own copy) and keys.
    pub fn weight(&self) -> u64 {
        let headers: usize = self
            .meta
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        (self.body.len() + 2 * headers + self.meta.key.len() * 3 + 1024) as u64
    }

    pub fn lifetime(&self) -> Duration {
        Duration::from_millis(self.meta.lifetime_ms)
    }

    /// Its age now (RFC 9111 §4.2.3).
    pub fn age(&self, now: SystemTime) -> Duration {
        self.meta.policy.age(now)
    }

    /// How far past its freshness lifetime it is now.
    pub fn staleness(&self, now: SystemTime) -> Duration {
        self.age(now).saturating_sub(self.lifetime())
    }

    /// A copy marked stale (a soft purge).
    pub fn invalidated(&self) -> Self {
        let mut copy = self.clone();
        copy.meta.invalidated = true;
        copy
    }

    /// The file form: magic, metadata length, metadata, body.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let meta = serde_json::to_vec(&self.meta)?;
        let mut out = Vec::with_capacity(MAGIC.len() + 4 + meta.len() + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.body);
        Ok(out)
    }

    /// Reads the metadata at the start of an object file; with it, how many bytes precede the
    /// body.
    pub fn decode_meta(bytes: &[u8]) -> Option<(Meta, usize)> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        if len > MAX_META {
            return None;
        }
        let meta = serde_json::from_slice(rest.get(4..4 + len)?).ok()?;
        Some((meta, MAGIC.len() + 4 + len))
    }

    /// Reads a whole object file.
    pub fn decode(bytes: Vec<u8>) -> Option<Self> {
        let (meta, start) = Self::decode_meta(&bytes)?;
        let body = Bytes::from(bytes).slice(start..);
        Some(Self { meta, body })
    }
}

/// The surrogate keys an origin gave a response: `Surrogate-Key: a b c` (space separated,
/// several lines allowed), bounded in number and length; over-long keys are dropped.
pub fn surrogate_keys(headers: &HeaderMap) -> Vec<String> {
    let mut keys: Vec<String> = headers
        .get_all(SURROGATE_KEY)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split_ascii_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|k| k.len() <= MAX_SURROGATE_KEY_LEN)
        .collect();
    keys.sort();
    keys.dedup();
    keys.truncate(MAX_SURROGATE_KEYS);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrogate_keys_are_split_deduplicated_and_bounded() {
        let mut h = HeaderMap::new();
        h.append(
            SURROGATE_KEY,
            http::HeaderValue::from_static("user-12  users"),
        );
        h.append(SURROGATE_KEY, http::HeaderValue::from_static("users"));
        assert_eq!(surrogate_keys(&h), ["user-12", "users"]);
        let many = (0..100)
            .map(|i| format!("k{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        h.insert(
            SURROGATE_KEY,
            http::HeaderValue::from_str(&many).expect("value"),
        );
        assert_eq!(surrogate_keys(&h).len(), MAX_SURROGATE_KEYS);
    }

    #[test]
    fn truncated_or_foreign_files_do_not_decode() {
        assert!(Object::decode(b"not an object".to_vec()).is_none());
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Object::decode(bytes).is_none());
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&10u32.to_be_bytes());
        bytes.extend_from_slice(b"{\"a\"");
        assert!(Object::decode(bytes).is_none());
    }
}
